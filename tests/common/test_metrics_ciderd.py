"""CiderD (SCST reward): spec golden values, the coco-train-idxs.p pickle format, vectorised == reference loop."""
from __future__ import annotations

import math
import pickle
import random
import struct
from collections import defaultdict

import numpy as np
import pytest
from pycocoevalcap.cider.cider import Cider

from common.errors import InputError
from common.metrics import CiderD, document_frequency

GOLDEN_REFS = {0: ["1 2 3 0", "1 2 4 0"], 1: ["5 6 0", "5 7 6 0"]}
GOLDEN_CANDS = [(0, "1 2 3 0"), (1, "5 6 0"), (0, "5 6 0")]


def test_spec_golden_values():
    """specs/spatial_captioning.md 10.3: df from the refs per 3.4, ref_len 2 -> [6.25, 5.25981514, 0.0]."""
    scorer = CiderD.from_references([GOLDEN_REFS[0], GOLDEN_REFS[1]])
    mean, scores = scorer.compute_score([c for _, c in GOLDEN_CANDS], [GOLDEN_REFS[0], GOLDEN_REFS[1]],
                                        image_index=[i for i, _ in GOLDEN_CANDS])
    np.testing.assert_allclose(scores, [6.25, 5.25981514, 0.0], rtol=0, atol=1e-8)
    assert mean == pytest.approx(3.836605045150833, abs=1e-15)
    # same result with one reference list per candidate
    mean2, scores2 = scorer.compute_score([c for _, c in GOLDEN_CANDS], [GOLDEN_REFS[i] for i, _ in GOLDEN_CANDS])
    assert mean2 == mean and np.array_equal(scores, scores2)


class Py2Pickler(pickle._Pickler):
    """Writes str as py2 byte strings (SHORT_BINSTRING/BINSTRING), like prepro_ngrams.py under Python 2."""

    def save_str(self, obj):
        data = obj.encode("latin1")
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch = dict(pickle._Pickler.dispatch)
    dispatch[str] = save_str


def _write_idxs(path, py2: bool) -> None:
    df = document_frequency([GOLDEN_REFS[0], GOLDEN_REFS[1]])
    assert isinstance(df, defaultdict) and df[("1", "2", "3", "0")] == 1.0 and df[("0",)] == 2.0
    obj = {"document_frequency": df, "ref_len": 2}
    with open(path, "wb") as f:
        if py2:
            Py2Pickler(f, protocol=2).dump(obj)
        else:
            pickle.dump(obj, f, protocol=2)


@pytest.mark.parametrize("py2", [False, True])
def test_pickle_round_trip_full_path_and_name(tmp_path, monkeypatch, py2):
    (tmp_path / "data").mkdir()
    path = tmp_path / "data" / "coco-train-idxs.p"
    _write_idxs(path, py2)
    raw = path.read_bytes()
    assert raw[:2] == b"\x80\x02" and b"collections\ndefaultdict" in raw and b"__builtin__\nfloat" in raw
    cands, refs = [c for _, c in GOLDEN_CANDS], [GOLDEN_REFS[i] for i, _ in GOLDEN_CANDS]
    by_path = CiderD.from_pickle(path)
    assert isinstance(by_path.df, defaultdict)
    monkeypatch.chdir(tmp_path)
    by_name = CiderD.from_pickle("coco-train-idxs")  # original: os.path.join('data', cached_tokens + '.p')
    like_original = CiderD(n=4, sigma=6.0, df="coco-train-idxs")
    for scorer in (by_path, by_name, like_original):
        mean, scores = scorer.compute_score(cands, refs)
        np.testing.assert_allclose(scores, [6.25, 5.25981514, 0.0], rtol=0, atol=1e-8)
    out = tmp_path / "again.p"
    by_path.save_pickle(out, n_images=2)
    with open(out, "rb") as f:
        again = pickle.load(f, encoding="latin1")
    assert again["ref_len"] == 2 and isinstance(again["document_frequency"], defaultdict)
    assert dict(again["document_frequency"]) == dict(by_path.df)


def test_pickle_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        CiderD.from_pickle(tmp_path / "missing.p")
    bad = tmp_path / "bad.p"
    bad.write_bytes(pickle.dumps({"ref_len": 3}, protocol=2))
    with pytest.raises(InputError, match="document_frequency"):
        CiderD.from_pickle(bad)


def reference_cider_d(cands, refs_per_cand, df, ref_len, n=4, sigma=6.0):
    """Direct transcription of ruotianluo/cider's CiderScorer loops (dict based), for comparison."""

    def counts(s):
        w = s.split()
        c = defaultdict(int)
        for k in range(1, n + 1):
            for i in range(len(w) - k + 1):
                c[tuple(w[i:i + k])] += 1
        return c

    def vec(cnts):
        v = [defaultdict(float) for _ in range(n)]
        norm = [0.0] * n
        length = 0
        for g, tf in cnts.items():
            k = len(g) - 1
            v[k][g] = float(tf) * (ref_len - np.log(max(1.0, df.get(g, 0.0))))
            norm[k] += v[k][g] ** 2
            if k == 1:
                length += tf
        return v, [np.sqrt(x) for x in norm], length

    out = []
    for cand, refs in zip(cands, refs_per_cand):
        vh, nh, lh = vec(counts(cand))
        score = np.zeros(n)
        for ref in refs:
            vr, nr, lr = vec(counts(ref))
            val = np.zeros(n)
            for k in range(n):
                for g in vh[k]:
                    val[k] += min(vh[k][g], vr[k][g]) * vr[k][g]
                if nh[k] != 0 and nr[k] != 0:
                    val[k] /= nh[k] * nr[k]
                val[k] *= np.e ** (-(float(lh - lr) ** 2) / (2 * sigma**2))
            score += val
        out.append(np.mean(score) / len(refs) * 10.0)
    return np.array(out)


def _token_id_data(seed: int, images: int = 40, per_image: int = 5, samples: int = 5):
    rng = random.Random(seed)

    def sent():
        words = " ".join(str(rng.randint(1, 30)) for _ in range(rng.randint(1, 16)))
        return words + (" 0" if rng.random() < 0.8 else "")

    refs = [[sent() for _ in range(per_image)] for _ in range(images)]
    cands, index = [], []
    for i in range(images):
        for _ in range(samples):  # several samples per image, some copying a reference
            cands.append(rng.choice(refs[i]) if rng.random() < 0.2 else sent())
            index.append(i)
    cands.append("")  # an empty sample
    index.append(0)
    return refs, cands, index


def test_vectorised_equals_reference_loop_with_training_df():
    train_refs, _, _ = _token_id_data(11, images=60)
    scorer = CiderD.from_references(train_refs)
    refs, cands, index = _token_id_data(12)
    mean, scores = scorer.compute_score(cands, refs, image_index=index)
    expected = reference_cider_d(cands, [refs[i] for i in index], scorer.df, math.log(60.0))
    np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-9)
    assert mean == pytest.approx(float(np.mean(expected)), abs=1e-9)


def test_corpus_mode_equals_pycocoevalcap_cider():
    refs, cands, index = _token_id_data(13, samples=1)
    cands, index = cands[:-1], index[:-1]
    _, scores = CiderD(df="corpus").compute_score(cands, refs, image_index=index)
    score, theirs = Cider().compute_score({i: refs[i] for i in index}, {i: [c] for i, c in zip(index, cands)})
    np.testing.assert_allclose(scores, theirs, rtol=0, atol=1e-9)


def test_corpus_mode_counts_each_candidate():
    """ruotianluo df='corpus': crefs holds one entry per candidate, so 5 samples of an image count 5 times."""
    refs, cands, index = _token_id_data(14)
    _, scores = CiderD().compute_score(cands, refs, image_index=index)
    per_cand_refs = [refs[i] for i in index]
    df = document_frequency(per_cand_refs)
    expected = reference_cider_d(cands, per_cand_refs, df, math.log(len(cands)))
    np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-9)


def test_bad_arguments():
    scorer = CiderD.from_references([GOLDEN_REFS[0]])
    with pytest.raises(ValueError, match="does not exist"):
        scorer.compute_score(["1 2"], [GOLDEN_REFS[0]], image_index=[3])
    with pytest.raises(ValueError, match="at least one reference"):
        scorer.compute_score(["1 2"], [[]])
