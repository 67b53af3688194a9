"""Ensemble of caption models: per step log(mean_m softmax_m) (spec 2.9), each model with its own encoder."""
from __future__ import annotations

import torch
from torch import nn

from spatial_captioning.models.decoding import CaptionModel, State


class EnsembleModel(CaptionModel):
    """Averages the word distributions of models that read the same inputs."""

    def __init__(self, models: list[CaptionModel], seq_length: int | None = None):
        super().__init__()
        if not models:
            raise ValueError("an ensemble needs at least one model")
        self.models = nn.ModuleList(models)
        self.seq_length = seq_length or models[0].seq_length
        self.unk_index = models[0].unk_index
        self._sizes: list[int] = []

    def _forward(self, feats: torch.Tensor, labels: torch.Tensor, masks: torch.Tensor | None = None,
                 boxes: torch.Tensor | None = None) -> torch.Tensor:
        """log of the mean of the models' teacher-forced probabilities."""
        probs = torch.stack([m(feats, labels, masks, boxes).exp() for m in self.models]).mean(0)
        return probs.log()

    def init_decode(self, feats: torch.Tensor, masks: torch.Tensor | None, boxes: torch.Tensor | None) -> State:
        """Concatenation of every model's decoding state."""
        states = [m.init_decode(feats, masks, boxes) for m in self.models]
        self._sizes = [len(s) for s in states]
        return tuple(t for s in states for t in s)

    def decode_step(self, it: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """One step of every model; log(mean softmax)."""
        out_state, probs, pos = [], [], 0
        for model, size in zip(self.models, self._sizes):
            logprobs, s = model.decode_step(it, tuple(state[pos: pos + size]))
            probs.append(logprobs.exp())
            out_state.extend(s)
            pos += size
        return torch.stack(probs).mean(0).log(), tuple(out_state)
