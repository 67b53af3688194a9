"""ptb_tokenize == pycocoevalcap's Java PTBTokenizer (CoreNLP 3.4.1) + punctuation removal.

The Java tokenizer runs once per module on every caption (real files + synthetic + quirk lines).
"""
from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from common.metrics import PUNCTUATIONS, ptb_tokenize
from common.metrics.meteor import pycocoevalcap_dir
from common.metrics.synthetic import QUIRKS, caption_sets
from common.metrics.tokenizer import ptb_tokenize_line

CAPTION_FILES = ["abstract48S.json", "abstract_candsB.json", "abstract_candsC.json",
                 "spot_total_change_captions_reformat.json"]

# (input line, what the Java tokenizer + coco-caption filter gives), checked against Java by test_pinned_vs_java
PINNED = [
    ("Don't you see? I can't, won't.", "do n't you see i ca n't wo n't"),
    ("He's there; they're here & we've gone. I'd I'll I'm", "he 's there they 're here & we 've gone i 'd i 'll i 'm"),
    ("\"Quoted\" text 'single' ``latex''", "quoted text single latex"),
    ("(paren) [bracket] {brace} <angle>", "-lrb- paren -rrb- -lsb- bracket -rsb- -lcb- brace -rcb- <angle>"),
    ("AT&T and R&D; a &amp; b", "at&t and r&d a & b"),
    ("well-known x - y -- z --- w ----- v", "well-known x y z w ----- v"),
    ("$1,000.50 and 3.14 and 10:30 and 3 1/2", "$ 1,000.50 and 3.14 and 10:30 and 3\u00a01/2"),
    ("Wait... what.... ok . . . end..", "wait what ok end"),
    ("and/or a/b/c/d foo*bar", "and/or a/b/c / d foo * bar"),
    ("gonna wanna gotta cannot 'tis 'twas y'all", "gon na wan na got ta can not 't is 't was y' all"),
    ("the U.S. The U.S. is. U.S. He said", "the u.s. the u.s. is u.s. he said"),
    ("rock 'n' roll 'em '90s 80's", "rock 'n' roll 'em '90s 80 's"),
    ("Café naïve — “smart” ‘quotes’ … ½ € £", "café naïve smart quotes 1/2 $ #"),
    ("MIKE AND JENNY'S DOG. THE DOG'S TOY.", "mike and jenny 's dog the dog 's toy"),
    ("two cats,three dogs.four birds", "two cats three dogs.four birds"),
    ("555-123-4567 (555) 123-4567 :) ;-)", "555-123-4567 -lrb-555-rrb-\u00a0123-4567 :-rrb- ;--rrb-"),
    ("a dog runs , fast ; ok : yes ! no ? fine .", "a dog runs fast ok yes no fine"),
    ("x - y -- z --- w ---- v ----- u", "x y z w v ----- u"),
    ("x-ray well-known x--y x- y -x pro- anti-", "x-ray well-known x y x y x pro- anti-"),
    ("a & b AT&T a&b x &amp; y", "a & b at&t a & b x & y"),
    ("The end. . . And then!! more?! . ok", "the end and then !! more ?! ok"),
    ("soft\u00adhyphen ^_^ ✓ 12/25/2014 #tag10 1,000", "softhyphen ^_^ ✓ 12/25/2014 #tag 10 1,000"),
    ("", ""),
]


def java_tokenize(captions: list[str]) -> list[str]:
    """pycocoevalcap's PTBTokenizer on a flat caption list (same command, same post-processing)."""
    jar_dir = pycocoevalcap_dir() / "tokenizer"
    text = "\n".join(c.replace("\n", " ") for c in captions)
    fd, path = tempfile.mkstemp(suffix=".txt")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(text.encode())
        out = subprocess.run(
            ["java", "-cp", str(jar_dir / "stanford-corenlp-3.4.1.jar"), "edu.stanford.nlp.process.PTBTokenizer",
             "-preserveLines", "-lowerCase", path],
            capture_output=True, check=True,
        ).stdout.decode()
    finally:
        os.remove(path)
    lines = out.split("\n")
    return [" ".join(w for w in line.rstrip().split(" ") if w not in PUNCTUATIONS) for line in lines[: len(captions)]]


def _captions(path: Path) -> list[str]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(data, dict):
        data = data["annotations"]
    return [rec["caption"] for rec in data]


@pytest.fixture(scope="module")
def real_groups(shared_data_dir) -> dict[str, list[str]]:
    return {name: _captions(shared_data_dir / "captions" / name) for name in CAPTION_FILES}


@pytest.fixture(scope="module")
def synthetic_groups() -> dict[str, list[str]]:
    syn = [r["caption"] for r in caption_sets(60, 12, seed=3)]
    return {"synthetic": syn, "quirks": list(QUIRKS) * 2, "pinned": [p for p, _ in PINNED], "context": CONTEXT}


def _java_by_group(java: str, groups: dict[str, list[str]]) -> dict[str, list[str]]:
    # each group is its own tokenizer call in coco-caption; run them as separate JVM invocations
    return {name: java_tokenize(caps) for name, caps in groups.items()}


@pytest.fixture(scope="module")
def java_real(java, real_groups) -> dict[str, list[str]]:
    return _java_by_group(java, real_groups)


@pytest.fixture(scope="module")
def java_synthetic(java, synthetic_groups) -> dict[str, list[str]]:
    return _java_by_group(java, synthetic_groups)


def _diffs(captions: list[str], expected: list[str]) -> list[tuple[str, str, str]]:
    ours = ptb_tokenize(captions)
    assert len(ours) == len(captions) == len(expected)
    return [(c, e, o) for c, e, o in zip(captions, expected, ours) if e != o]


@pytest.mark.java
@pytest.mark.shared_data
@pytest.mark.parametrize("name", CAPTION_FILES)
def test_real_captions_identical_to_java(name, real_groups, java_real):
    diffs = _diffs(real_groups[name], java_real[name])
    assert diffs == [], f"{len(diffs)} captions differ, first: {diffs[:3]}"


@pytest.mark.java
@pytest.mark.parametrize("name", ["synthetic", "quirks", "pinned", "context"])
def test_synthetic_captions_identical_to_java(name, synthetic_groups, java_synthetic):
    diffs = _diffs(synthetic_groups[name], java_synthetic[name])
    assert diffs == [], f"{len(diffs)} captions differ, first: {diffs[:3]}"


@pytest.mark.java
def test_pinned_vs_java(java_synthetic):
    """The pinned expectations below are what Java really gives (so the pure-Python pin is trustworthy)."""
    assert java_synthetic["pinned"] == [e for _, e in PINNED]


def test_pinned_quirks():
    """Runs without Java: contractions, quotes, brackets (-lrb- survives), dashes, numbers, fractions...

    One call, like the Java run they are checked against (the last line sees the end of input: there ";-)"
    is not a smiley, as in Java).
    """
    assert ptb_tokenize([p for p, _ in PINNED]) == [e for _, e in PINNED]
    assert ptb_tokenize(["x :) ;-)"]) == ["x :-rrb- -rrb-"]


CONTEXT = ["Plan A.", "The end", "Plan A.", "the end", "x U.S.", "He went", "x U.S.", "he went", "x etc.", "", "ok"]


def test_sentence_end_lookahead_crosses_captions():
    """Like the Java lexer on the joined file, the rules after a final period look at the NEXT caption."""
    assert ptb_tokenize(CONTEXT) == ["plan a", "the end", "plan a.", "the end", "x u.s.", "he went", "x u.s.",
                                     "he went", "x etc.", "", "ok"]
    assert ptb_tokenize_line("He is from Calif.", "Mike is here") == "he is from calif. ."
    assert ptb_tokenize_line("He is from Calif.", "mike is here") == "he is from calif."
    assert ptb_tokenize_line("x etc.", None) == "x etc. ."


@pytest.mark.java
def test_context_vs_java(java_synthetic):
    assert java_synthetic["context"] == ptb_tokenize(CONTEXT)


def test_empty_and_newlines():
    assert ptb_tokenize([]) == []
    assert ptb_tokenize(["", "A\nB", "   "]) == ["", "a b", ""]
