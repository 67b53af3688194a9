"""Show-and-Tell (Vinyals et al. 2015): an RNN fed the fc feature at step 0 (spec 4.8); uses `--input_fc_feat_dir`."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from spatial_captioning.models.decoding import CaptionModel, State
from spatial_captioning.models.transformer import _get

RNN_TYPES = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


class ShowAndTell(CaptionModel):
    """RNN captioner; scheduled sampling (`ss_prob`) is honoured here only, as in the original."""

    def __init__(self, opt: Any):
        super().__init__()
        self.vocab_size = int(_get(opt, "vocab_size", 0))
        self.seq_length = int(_get(opt, "seq_length", 16))
        self.input_encoding_size = int(_get(opt, "input_encoding_size", 512))
        self.hidden_size = int(_get(opt, "hidden_size", 512))
        self.num_layers = int(_get(opt, "num_layers", 1))
        self.rnn_type = str(_get(opt, "rnn_type", "lstm")).lower()
        self.dropout_p = float(_get(opt, "dropout", 0.5))
        self.unk_index = _get(opt, "unk_index", None)
        self.ss_prob = 0.0
        if self.rnn_type not in RNN_TYPES:
            raise ValueError(f"--rnn_type must be one of {sorted(RNN_TYPES)}, got {self.rnn_type!r}")
        if self.vocab_size <= 0:
            raise ValueError("vocab_size must be set (from the cocotalk.json vocabulary)")
        self.img_embed = nn.Linear(int(_get(opt, "img_feat_size", 2048)), self.input_encoding_size)
        self.rnn = RNN_TYPES[self.rnn_type](self.input_encoding_size, self.hidden_size, self.num_layers, bias=False,
                                            dropout=self.dropout_p if self.num_layers > 1 else 0.0)
        self.embed = nn.Embedding(self.vocab_size + 1, self.input_encoding_size)
        self.logit = nn.Linear(self.hidden_size, self.vocab_size + 1)
        self.dropout = nn.Dropout(self.dropout_p)
        nn.init.uniform_(self.embed.weight, -0.1, 0.1)
        nn.init.uniform_(self.logit.weight, -0.1, 0.1)
        nn.init.zeros_(self.logit.bias)

    def _run(self, xt: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        hidden = tuple(s.transpose(0, 1).contiguous() for s in state)
        output, hidden = self.rnn(xt.unsqueeze(0), hidden if self.rnn_type == "lstm" else hidden[0])
        hidden = hidden if isinstance(hidden, tuple) else (hidden,)
        logprobs = torch.log_softmax(self.logit(self.dropout(output.squeeze(0))).float(), dim=1)
        return logprobs, tuple(s.transpose(0, 1) for s in hidden)

    def _zero_state(self, n: int, ref: torch.Tensor) -> State:
        count = 2 if self.rnn_type == "lstm" else 1
        return tuple(ref.new_zeros(n, self.num_layers, self.hidden_size) for _ in range(count))

    def _forward(self, fc_feats: torch.Tensor, labels: torch.Tensor, img_masks: torch.Tensor | None = None,
                 boxes: torch.Tensor | None = None) -> torch.Tensor:
        """Log-probs (N, T+1, V+1) for labels (N, T+2); image at step 0, BOS at step 1."""
        n = fc_feats.size(0)
        _, state = self._run(self.img_embed(fc_feats), self._zero_state(n, fc_feats))
        outputs = []
        for i in range(labels.size(1) - 1):
            it = labels[:, i].clone()
            if self.training and i >= 1 and self.ss_prob > 0.0:
                sample_mask = torch.rand(n, device=fc_feats.device) < self.ss_prob
                if bool(sample_mask.any()):
                    drawn = torch.multinomial(torch.exp(outputs[-1].detach()), 1).view(-1)
                    it = torch.where(sample_mask, drawn, it)
            logprobs, state = self._run(self.embed(it), state)
            outputs.append(logprobs)
        return torch.stack(outputs, 1)

    def init_decode(self, fc_feats: torch.Tensor, img_masks: torch.Tensor | None = None,
                    boxes: torch.Tensor | None = None) -> State:
        """Feed the image embedding; the state is the batch-first RNN hidden state."""
        _, state = self._run(self.img_embed(fc_feats), self._zero_state(fc_feats.size(0), fc_feats))
        return state

    def decode_step(self, it: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """Feed one word."""
        return self._run(self.embed(it), state)
