"""Tokenizer: transformers 2.4.1 special-token behaviour byte for byte (spec 4.1, pitfalls 1-2, section 10, first assert)."""
from __future__ import annotations

import json

import pytest
import regex

from visualcomet import synthetic
from visualcomet.tokenization import ADDED_TOKENS, EOT, VisualCometTokenizer, build_bpe_files, bytes_to_unicode

GPT2_PAT = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")


class ReferenceGPT2:
    """Independent re-statement of transformers 2.4.1 GPT2Tokenizer.tokenize with added special tokens."""

    def __init__(self, vocab, merges, specials):
        self.encoder = vocab
        self.ranks = {tuple(m): i for i, m in enumerate(merges)}
        self.specials = specials
        self.byte_encoder = bytes_to_unicode()

    def bpe(self, token):
        word = tuple(token)
        while len(word) > 1:
            pairs = {(word[i], word[i + 1]) for i in range(len(word) - 1)}
            best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            new, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and (word[i], word[i + 1]) == best:
                    new.append(word[i] + word[i + 1])
                    i += 2
                else:
                    new.append(word[i])
                    i += 1
            word = tuple(new)
        return list(word)

    def _tokenize(self, text):
        out = []
        for tok in GPT2_PAT.findall(text):
            out += self.bpe("".join(self.byte_encoder[b] for b in tok.encode("utf-8")))
        return out

    def tokenize(self, text):
        # split_on_tokens of 2.4.1: one special token at a time, pieces stripped, empty pieces dropped
        def split_on_token(tok, text):
            result, parts = [], text.split(tok)
            for i, sub in enumerate(parts):
                sub = sub.strip()
                if i == 0 and not sub:
                    result.append(tok)
                elif i == len(parts) - 1:
                    if sub:
                        result.append(sub)
                else:
                    if sub:
                        result.append(sub)
                    result.append(tok)
            return result

        texts = [text]
        for tok in self.specials:
            nxt = []
            for sub in texts:
                nxt += [sub] if sub in self.specials else split_on_token(tok, sub)
            texts = nxt
        out = []
        for t in texts:
            out += [t] if t in self.specials else self._tokenize(t)
        return out


SPEC_TEXTS = ["1 is cooking dinner", "in a kitchen", "feed the family", "don't ask 3 to dance"] * 20


@pytest.fixture(scope="module")
def small():
    vocab, merges = build_bpe_files(synthetic.fixture_texts() * 3 + SPEC_TEXTS, 170)
    return VisualCometTokenizer(vocab, merges), ReferenceGPT2(vocab, merges, ADDED_TOKENS + [EOT])


@pytest.fixture(scope="module")
def padded():
    vocab, merges = build_bpe_files(synthetic.fixture_texts() * 3 + SPEC_TEXTS, 170, pad_to=50257)
    return VisualCometTokenizer(vocab, merges)


def test_added_token_ids_with_real_vocab_size(padded):
    assert len(padded) == 50317
    assert padded.eot_id == 50256
    ids = padded.convert_tokens_to_ids(ADDED_TOKENS)
    assert ids == list(range(50257, 50317))
    assert padded.convert_tokens_to_ids(["<|b_img|>", "<|e_in|>", "<|after|>", "<|det0|>", "<|det49|>"]) == \
        [50257, 50263, 50266, 50267, 50316]
    # ids >= 50 are not special tokens: unk lookup and BPE-split as text (pitfall 3)
    assert padded.convert_tokens_to_ids("<|det50|>") == 50256
    assert len(padded.tokenize("<|det50|>")) > 1
    ids = padded.encode("<|b_ev|> <|det1|> is cooking dinner <|e_ev|>")
    assert ids[:2] == [50259, 50268] and ids[-1] == 50260


def test_piecewise_encoding_has_no_prefix_space_tokens(small):
    tok, _ = small
    toks = tok.tokenize("<|b_ev|> <|det1|> is cooking dinner <|e_ev|>")
    assert toks == ["<|b_ev|>", "<|det1|>", "is", "Ġcooking", "Ġdinner", "<|e_ev|>"]


@pytest.mark.parametrize("text", [
    "<|b_ev|> <|det1|> is cooking dinner <|e_ev|>",
    "<|b_img|> " + " ".join([EOT] * 15) + " <|e_img|>",
    "<|intent|> don  't ask <|det3|> to dance <|e_in|>",
    "<|b_pl|> in a room <|e_pl|>",
    "<|det1|> is trying to talk to <|det3|>  's friend , <|det2|>.",
    "<|after|>serve the food to <|det2|><|e_in|><|endoftext|><|endoftext|>",
    "  leading and trailing   spaces  <|det50|> 3.5 ünïcödé ?",
])
def test_matches_reference_2_4_1_algorithm(small, text):
    tok, ref = small
    assert tok.tokenize(text) == ref.tokenize(text)


def test_decode_round_trip_and_kept_quirks(small):
    from visualcomet.data import replace_names

    tok, _ = small
    ids = tok.encode("don  't ask <|det3|> to dance <|e_in|> <|endoftext|><|endoftext|>")
    assert tok.decode_base(ids, clean_up_tokenization_spaces=False).startswith("don  't ask <|det3|> to dance <|e_in|>")
    text = tok.decode(ids)
    assert text == "don  't ask <|det3|> to dance"
    assert replace_names(text, {"<|det3|>": "3"}) == "don  't ask 3 to dance"
    # <|b_pl|> and <|detN|> survive decode(skip_special_tokens=True) (pitfall 2)
    assert tok.decode(tok.encode("<|b_pl|> in a room <|e_pl|>")) == "<|b_pl|> in a room"
    # added tokens are separate words joined by spaces, never glued
    assert tok.decode(tok.encode("ask<|det3|>to")) == "ask <|det3|> to"


def test_save_and_load_tokenizer_files(small, tmp_path):
    tok, _ = small
    tok.save_pretrained(tmp_path)
    added = json.loads((tmp_path / "added_tokens.json").read_text())
    assert list(added) == ADDED_TOKENS
    special = json.loads((tmp_path / "special_tokens_map.json").read_text())
    assert special["additional_special_tokens"] == ADDED_TOKENS and special["eos_token"] == EOT
    assert (tmp_path / "merges.txt").read_text().startswith("#version")
    again = VisualCometTokenizer.from_pretrained(tmp_path)
    text = "<|b_ev|> <|det1|> is cooking dinner <|e_ev|>"
    assert again.encode(text) == tok.encode(text)


def test_lower_case_keeps_special_tokens(small):
    tok, _ = small
    lower = VisualCometTokenizer(tok.encoder, tok.merges, do_lower_case=True)
    assert lower.tokenize("<|b_ev|> Feed The Family") == tok.tokenize("<|b_ev|> feed the family")


def test_bad_added_tokens_file_is_one_error(small, tmp_path):
    from common.errors import InputError

    tok, _ = small
    tok.save_pretrained(tmp_path)
    (tmp_path / "added_tokens.json").write_text(json.dumps({"<|b_img|>": 5}))
    with pytest.raises(InputError, match="added tokens"):
        VisualCometTokenizer.from_pretrained(tmp_path)
