"""ALBEF-style BERT tokenisation: ``[CLS] x1 ... xn`` with NO trailing ``[SEP]`` (spec 3.7, pitfall 9.3 K)."""
from __future__ import annotations

from pathlib import Path

import torch
from transformers import BertTokenizer

from common.errors import InputError


class TextTokenizer:
    """Wraps a WordPiece vocabulary; ``tok(texts, max_length)`` returns padded ids and mask tensors."""

    def __init__(self, name_or_path: str):
        path = Path(str(name_or_path))
        try:
            if path.is_file():
                self.tok = BertTokenizer(vocab=str(path), do_lower_case=True)
            else:
                self.tok = BertTokenizer.from_pretrained(str(name_or_path), local_files_only=True)
        except OSError as err:
            raise InputError(
                name_or_path,
                "no local BERT vocabulary found (weights cannot be downloaded here): set text_encoder=<dir with "
                "vocab.txt> or a vocab.txt path",
                field="text_encoder",
            ) from err
        self.cls_token_id = self.tok.cls_token_id
        self.sep_token_id = self.tok.sep_token_id
        self.pad_token_id = self.tok.pad_token_id
        self.mask_token_id = self.tok.mask_token_id
        self.vocab_size = len(self.tok)

    def __len__(self) -> int:
        return self.vocab_size

    def __call__(self, texts: list[str] | str, max_length: int) -> dict[str, torch.Tensor]:
        """Encode to ``{"input_ids", "attention_mask"}`` of shape (N, max_length), padded with [PAD]."""
        if isinstance(texts, str):
            texts = [texts]
        pieces = self.tok(list(texts), add_special_tokens=False)["input_ids"]
        ids = torch.full((len(pieces), max_length), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(pieces), max_length), dtype=torch.long)
        for row, piece in enumerate(pieces):
            seq = [self.cls_token_id] + list(piece)[: max_length - 1]
            ids[row, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            mask[row, : len(seq)] = 1
        return {"input_ids": ids, "attention_mask": mask}
