"""OpenAI CLIP byte-level BPE tokenizer with the CLIP4IDC interface (spec 4.2).

The vocabulary file `bpe_simple_vocab_16e6.txt.gz` ships inside this package (the same bytes as the
copy in the `open-clip-torch` wheel, sha256 924691ac288e5440...). Id 0 is the byte token "!", which
the original uses as padding everywhere (spec 9.13/9.14).
"""
from __future__ import annotations

import gzip
import html
import os
from functools import lru_cache
from pathlib import Path

import ftfy
import regex as re

SOT_TOKEN = "<|startoftext|>"
EOT_TOKEN = "<|endoftext|>"
SOT_ID = 49406
EOT_ID = 49407
PAD_ID = 0
VOCAB_SIZE = 49408
DEFAULT_BPE_PATH = Path(__file__).resolve().parent / "bpe_simple_vocab_16e6.txt.gz"


@lru_cache()
def bytes_to_unicode() -> dict[int, str]:
    """Map every byte to a printable unicode character (GPT-2/CLIP byte encoder)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars)))


def _pairs(word: tuple[str, ...]) -> set[tuple[str, str]]:
    return {(a, b) for a, b in zip(word[:-1], word[1:])}


def _clean(text: str) -> str:
    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text)).strip()
    return re.sub(r"\s+", " ", text).strip()


class ClipTokenizer:
    """CLIP BPE tokenizer: `encode`, `decode`, `tokenize`, `convert_tokens_to_ids` as in the original."""

    pattern = re.compile(
        r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
        re.IGNORECASE,
    )

    def __init__(self, bpe_path: str | os.PathLike | None = None):
        path = Path(bpe_path) if bpe_path is not None else DEFAULT_BPE_PATH
        if not path.is_file():
            raise FileNotFoundError(f"CLIP BPE vocabulary not found: {path}")
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {v: k for k, v in self.byte_encoder.items()}
        with gzip.open(path, "rt", encoding="utf-8") as f:
            lines = f.read().split("\n")
        merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
        vocab = list(self.byte_encoder.values())
        vocab = vocab + [v + "</w>" for v in vocab]
        vocab.extend("".join(m) for m in merges)
        vocab.extend([SOT_TOKEN, EOT_TOKEN])
        self.encoder = dict(zip(vocab, range(len(vocab))))
        self.decoder = {v: k for k, v in self.encoder.items()}
        self.bpe_ranks = dict(zip(merges, range(len(merges))))
        self.cache = {SOT_TOKEN: SOT_TOKEN, EOT_TOKEN: EOT_TOKEN}
        self.vocab = self.encoder

    def bpe(self, token: str) -> str:
        """Space-separated BPE pieces of one pre-token (last piece carries `</w>`)."""
        if token in self.cache:
            return self.cache[token]
        word = tuple(token[:-1]) + (token[-1] + "</w>",)
        pairs = _pairs(word)
        if not pairs:
            return token + "</w>"
        while True:
            bigram = min(pairs, key=lambda p: self.bpe_ranks.get(p, float("inf")))
            if bigram not in self.bpe_ranks:
                break
            first, second = bigram
            new_word: list[str] = []
            i = 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                except ValueError:
                    new_word.extend(word[i:])
                    break
                new_word.extend(word[i:j])
                i = j
                if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
                    new_word.append(first + second)
                    i += 2
                else:
                    new_word.append(word[i])
                    i += 1
            word = tuple(new_word)
            if len(word) == 1:
                break
            pairs = _pairs(word)
        out = " ".join(word)
        self.cache[token] = out
        return out

    def tokenize(self, text: str) -> list[str]:
        """BPE token strings of `text` after CLIP's cleaning and lowercasing."""
        tokens: list[str] = []
        for piece in re.findall(self.pattern, _clean(text).lower()):
            piece = "".join(self.byte_encoder[b] for b in piece.encode("utf-8"))
            tokens.extend(self.bpe(piece).split(" "))
        return tokens

    def convert_tokens_to_ids(self, tokens: list[str]) -> list[int]:
        """Ids of BPE token strings."""
        return [self.encoder[t] for t in tokens]

    def encode(self, text: str) -> list[int]:
        """Ids of `text` (no SOT/EOT added)."""
        return self.convert_tokens_to_ids(self.tokenize(text))

    def decode(self, ids) -> str:
        """Decoded text: token strings joined, bytes decoded, `</w>` turned into spaces."""
        text = "".join(self.decoder[int(i)] for i in ids)
        return bytearray(self.byte_decoder[c] for c in text).decode("utf-8", errors="replace").replace("</w>", " ")

    # The original's `convert_ids_to_tokens` returns the decoded string (spec 4.2).
    convert_ids_to_tokens = decode


def postprocess_caption(text: str) -> str:
    """Original decoding cleanup (spec 4.7, kept per 9.13): cut at EOT, then at the first '!', strip."""
    if EOT_TOKEN in text:
        text = text[: text.index(EOT_TOKEN)]
    if "!" in text:
        text = text[: text.index("!")]
    return text.strip()


@lru_cache(maxsize=4)
def get_tokenizer(bpe_path: str | None = None) -> ClipTokenizer:
    """Shared tokenizer instance (building the merge table takes ~0.3 s)."""
    return ClipTokenizer(bpe_path)
