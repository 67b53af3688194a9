"""VisualCOMET tokenizer: GPT-2 byte-level BPE with the transformers 2.4.1 special-token behaviour (spec 4.1).

transformers 2.4.1 splits the text on every special/added token, ``.strip()``-s each remaining piece and BPE-encodes
it without a prefix space; added tokens are decoded as separate words joined by single spaces. Modern tokenizers do
neither, which changes the token ids (and therefore the released checkpoint's behaviour) and the generated strings.
Both are reproduced here on top of a plain byte-level BPE from the ``tokenizers`` library (pitfalls 1 and 2, K).
"""
from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers

from common.errors import InputError

EOT = "<|endoftext|>"
STRUCTURAL_TOKENS = [
    "<|b_img|>", "<|e_img|>", "<|b_ev|>", "<|e_ev|>", "<|b_pl|>", "<|e_pl|>", "<|e_in|>",
    "<|before|>", "<|intent|>", "<|after|>",
]
NUM_PERSON_TAGS = 50
PERSON_TAGS = [f"<|det{i}|>" for i in range(NUM_PERSON_TAGS)]
ADDED_TOKENS = STRUCTURAL_TOKENS + PERSON_TAGS
RELATION_TOKENS = {"intent": "<|intent|>", "before": "<|before|>", "after": "<|after|>"}
# Removed by VisualCometTokenizer.decode(skip_special_tokens=True); <|b_pl|> and <|detN|> are not (pitfall 2, K).
DECODE_REMOVED = [
    "<|b_img|>", "<|e_img|>", "<|b_ev|>", "<|e_ev|>", "<|e_pl|>", "<|e_in|>", EOT,
    "<|before|>", "<|intent|>", "<|after|>",
]
TOKENIZER_FILES = ("vocab.json", "merges.txt", "added_tokens.json", "special_tokens_map.json", "tokenizer_config.json")


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable unicode character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def clean_up_tokenization(text: str) -> str:
    """transformers 2.4.1 ``clean_up_tokenization``: re-attach punctuation and common English contractions."""
    return (
        text.replace(" .", ".").replace(" ?", "?").replace(" !", "!").replace(" ,", ",").replace(" ' ", "'")
        .replace(" n't", "n't").replace(" 'm", "'m").replace(" do not", " don't").replace(" 's", "'s")
        .replace(" 've", "'ve").replace(" 're", "'re")
    )


class VisualCometTokenizer:
    """Byte-level BPE + the 60 VisualCOMET added tokens, encoding and decoding like transformers 2.4.1."""

    def __init__(self, vocab: dict[str, int], merges: list[tuple[str, str]], do_lower_case: bool = False,
                 added_tokens: dict[str, int] | None = None):
        if EOT not in vocab:
            raise ValueError(f"the BPE vocabulary has no {EOT} token")
        self.encoder = dict(vocab)
        self.merges = list(merges)
        self.do_lower_case = do_lower_case
        self.decoder = {i: t for t, i in self.encoder.items()}
        if added_tokens is None:
            added_tokens = {tok: len(self.encoder) + i for i, tok in enumerate(ADDED_TOKENS)}
        expected = {tok: len(self.encoder) + i for i, tok in enumerate(ADDED_TOKENS)}
        if added_tokens != expected:
            raise ValueError("added tokens must be the 60 VisualCOMET tokens appended in order after the vocabulary")
        self.added_tokens_encoder = dict(added_tokens)
        self.added_tokens_decoder = {i: t for t, i in added_tokens.items()}
        self.eot_id = self.encoder[EOT]
        self._bpe = Tokenizer(models.BPE(vocab=self.encoder, merges=self.merges, unk_token=None, fuse_unk=False))
        self._bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        self._bpe.decoder = decoders.ByteLevel()
        specials = sorted(set(ADDED_TOKENS) | {EOT}, key=len, reverse=True)
        self._split_re = re.compile("(" + "|".join(re.escape(s) for s in specials) + ")")
        self._byte_decoder = {c: b for b, c in bytes_to_unicode().items()}

    # ------------------------------------------------------------------ loading / saving
    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "VisualCometTokenizer":
        """Read vocab.json + merges.txt (+ added_tokens.json, tokenizer_config.json) from a model directory."""
        directory = Path(directory)
        vocab_file, merges_file = directory / "vocab.json", directory / "merges.txt"
        for f in (vocab_file, merges_file):
            if not f.is_file():
                raise InputError(f, "missing tokenizer file (a GPT-2 style directory needs vocab.json and merges.txt)")
        try:
            vocab = json.loads(vocab_file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise InputError(vocab_file, f"not valid JSON: {err}") from None
        merges = []
        for lineno, line in enumerate(merges_file.read_text(encoding="utf-8").split("\n"), start=1):
            if not line or line.startswith("#version"):
                continue
            parts = line.split(" ")
            if len(parts) != 2:
                raise InputError(merges_file, "a merge line must hold two symbols separated by one space", record=lineno)
            merges.append((parts[0], parts[1]))
        added = None
        added_file = directory / "added_tokens.json"
        if added_file.is_file():
            added = json.loads(added_file.read_text(encoding="utf-8"))
        config_file = directory / "tokenizer_config.json"
        lower = False
        if config_file.is_file():
            lower = bool(json.loads(config_file.read_text(encoding="utf-8")).get("do_lower_case", False))
        try:
            return cls(vocab, merges, do_lower_case=lower, added_tokens=added)
        except ValueError as err:
            raise InputError(directory, str(err)) from None

    def save_pretrained(self, directory: str | Path) -> list[Path]:
        """Write the five tokenizer files of a transformers 2.4.1 checkpoint directory."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        paths = [directory / name for name in TOKENIZER_FILES]
        paths[0].write_text(json.dumps(self.encoder, ensure_ascii=False), encoding="utf-8")
        paths[1].write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in self.merges), encoding="utf-8")
        paths[2].write_text(json.dumps(self.added_tokens_encoder, ensure_ascii=False), encoding="utf-8")
        special = {"bos_token": EOT, "eos_token": EOT, "unk_token": EOT, "additional_special_tokens": ADDED_TOKENS}
        paths[3].write_text(json.dumps(special), encoding="utf-8")
        paths[4].write_text(json.dumps({"do_lower_case": self.do_lower_case}), encoding="utf-8")
        return paths

    # ------------------------------------------------------------------ sizes and lookups
    def __len__(self) -> int:
        return len(self.encoder) + len(self.added_tokens_encoder)

    @property
    def max_len_single_sentence(self) -> int:
        """1024 for the GPT-2 vocabulary (as the hub tokenizer); local directories are unbounded in 2.4.1."""
        return 1024

    def convert_tokens_to_ids(self, tokens: str | list[str]) -> int | list[int]:
        """Token string(s) -> id(s); unknown strings give the unk id (= <|endoftext|>) like GPT-2."""
        if isinstance(tokens, str):
            return self.added_tokens_encoder.get(tokens, self.encoder.get(tokens, self.eot_id))
        return [self.convert_tokens_to_ids(t) for t in tokens]

    def convert_ids_to_tokens(self, ids: int | list[int]) -> str | list[str]:
        """Id(s) -> token string(s) (byte-level unicode form for BPE tokens)."""
        if isinstance(ids, int):
            return self.added_tokens_decoder.get(ids) or self.decoder[ids]
        return [self.convert_ids_to_tokens(int(i)) for i in ids]

    # ------------------------------------------------------------------ encoding
    def _split_pieces(self, text: str) -> list[str]:
        """2.4.1 ``split_on_tokens``: special tokens stand alone, other pieces are stripped, empty ones dropped."""
        if self.do_lower_case:
            text = "".join(p if self._split_re.fullmatch(p) else p.lower() for p in self._split_re.split(text))
        pieces = []
        for part in self._split_re.split(text):
            part = part if self._split_re.fullmatch(part) else part.strip()
            if part:
                pieces.append(part)
        return pieces

    def tokenize(self, text: str) -> list[str]:
        """Token strings as transformers 2.4.1 ``GPT2Tokenizer.tokenize`` with added special tokens."""
        out: list[str] = []
        for piece in self._split_pieces(text):
            if piece in self.added_tokens_encoder or piece == EOT:
                out.append(piece)
            else:
                out.extend(self._bpe.encode(piece, add_special_tokens=False).tokens)
        return out

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (no BOS/EOS added, like 2.4.1 ``encode`` for GPT-2)."""
        return [self.convert_tokens_to_ids(t) for t in self.tokenize(text)]

    # ------------------------------------------------------------------ decoding
    def _bytes_to_text(self, tokens: list[str]) -> str:
        data = bytearray(self._byte_decoder[c] for c in "".join(tokens))
        return data.decode("utf-8", errors="replace")

    def decode_base(self, ids: list[int], clean_up_tokenization_spaces: bool = True) -> str:
        """2.4.1 ``PreTrainedTokenizer.decode(skip_special_tokens=False)``: added tokens joined by single spaces."""
        sub_texts: list[str] = []
        current: list[str] = []
        for i in ids:
            i = int(i)
            if i in self.added_tokens_decoder:
                if current:
                    sub_texts.append(self._bytes_to_text(current))
                    current = []
                sub_texts.append(self.added_tokens_decoder[i])
            else:
                current.append(self.decoder[i])
        if current:
            sub_texts.append(self._bytes_to_text(current))
        text = " ".join(sub_texts)
        return clean_up_tokenization(text) if clean_up_tokenization_spaces else text

    def decode(self, ids: list[int], skip_special_tokens: bool = True, clean_up_tokenization_spaces: bool = True) -> str:
        """``VisualCometTokenizer.decode`` of the original: base decode, blank structural tokens, cut at <|e_in|>."""
        text = self.decode_base(ids, clean_up_tokenization_spaces)
        if skip_special_tokens:
            for tok in DECODE_REMOVED:
                text = text.replace(tok, " ")
        end = text.find("<|e_in|>")
        if end >= 0:
            text = text[:end]
        return text.strip()


def build_bpe_files(texts: list[str], num_merges: int, pad_to: int | None = None) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Learn a small GPT-2 style byte-level BPE on ``texts``: 256 byte tokens, merges, then <|endoftext|> last.

    ``pad_to`` pads the vocabulary with unused filler tokens so that <|endoftext|> gets id ``pad_to - 1``
    (50257 reproduces the real GPT-2 ids: <|endoftext|> 50256 and added tokens 50257-50316).
    """
    from tokenizers import trainers

    byte_chars = list(bytes_to_unicode().values())
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    trainer = trainers.BpeTrainer(vocab_size=256 + num_merges, initial_alphabet=byte_chars, show_progress=False,
                                  special_tokens=[])
    tok.train_from_iterator(texts, trainer=trainer)
    model = json.loads(tok.to_str())["model"]
    vocab = {t: i for t, i in sorted(model["vocab"].items(), key=lambda kv: kv[1])}
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    if pad_to is not None:
        n = len(vocab)
        if pad_to - 1 < n:
            raise ValueError(f"cannot pad a {n}-entry vocabulary to {pad_to}")
        for k in range(pad_to - 1 - n):
            vocab[f"<|unused{k}|>"] = n + k
    vocab[EOT] = len(vocab)
    return vocab, merges
