"""Encoder position signals built from region geometry: grid-vector encodings (`gxg`, `g2`, sinusoidal) and `box-coord`."""
from __future__ import annotations

import math

import torch
from torch import nn

POS_TYPES = ("gxg", "g2", "box-coord")


def grid_side(num_grids: int) -> int:
    """Return g for G = g*g; raise ValueError when G is not a perfect square."""
    g = int(round(math.sqrt(num_grids)))
    if g * g != num_grids or g <= 0:
        raise ValueError(f"--num_grids must be a perfect square, got {num_grids}")
    return g


class SpatialPositionalEncoding(nn.Module):
    """Adds (or, for `gxg`, combines with a re-projection of) an encoding of each region's grid vector (spec 4.3)."""

    def __init__(self, grids: int, d_model: int, dropout: float, learnable: bool = True, learnable_type: str = "gxg"):
        super().__init__()
        if learnable_type not in POS_TYPES:
            raise ValueError(f"--enc_pos_type must be one of {POS_TYPES}, got {learnable_type!r}")
        self.g = grid_side(grids)
        self.learnable = learnable
        self.learnable_type = learnable_type
        self.dropout = nn.Dropout(p=dropout)
        g = self.g
        if not learnable:
            # Sinusoidal variant: its forward is broken in the original; this is the reconstruction of spec 4.3.
            pos = torch.arange(g, dtype=torch.float32).unsqueeze(1)
            div = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
            pe1 = torch.zeros(g, d_model)
            pe2 = torch.zeros(g, d_model)
            pe1[:, 0::2] = torch.sin(pos * div)
            pe1[:, 1::2] = torch.cos(pos * div)
            pe2[:, 0::2] = torch.cos(pos * div)
            pe2[:, 1::2] = torch.sin(pos * div)
            self.register_buffer("pe1", pe1)
            self.register_buffer("pe2", pe2)
            self.register_buffer("rows", torch.arange(g) % g)
            self.register_buffer("cols", torch.arange(g) // g)
        elif learnable_type == "gxg":
            # rows/cols are unused by the forward but are state_dict entries of the original (spec 4.3).
            self.register_buffer("rows", torch.arange(g) % g)
            self.register_buffer("cols", torch.arange(g) // g)
            self.fc1 = nn.Linear(g, d_model)
            self.fc2 = nn.Linear(g, d_model)
            self.fc3 = nn.Linear(d_model, d_model)
        elif learnable_type == "g2":
            self.fc = nn.Linear(grids, d_model)
        else:
            self.fc = nn.Sequential(nn.Linear(4, d_model // 2), nn.ReLU(), nn.Linear(d_model // 2, d_model))

    def forward(self, img_feat: torch.Tensor, box_vec: torch.Tensor | None) -> torch.Tensor:
        """img_feat (N, P, E), box_vec (N, P, G) grid vectors or (N, P, 4) boxes -> (N, P, E)."""
        if box_vec is None:
            raise ValueError("the spatial encoder needs grid vectors (--input_grid_vec_dir) but got none")
        n, p = img_feat.shape[:2]
        if not self.learnable:
            bv = box_vec.view(n, p, self.g, self.g)
            out = img_feat + bv.sum(-1) @ self.pe1 + bv.sum(-2) @ self.pe2
        elif self.learnable_type == "gxg":
            bv = box_vec.view(n, p, self.g, self.g)
            out = self.fc3(img_feat) + self.fc1(bv.sum(-1)) + self.fc2(bv.sum(-2))
        else:
            out = img_feat + self.fc(box_vec)
        return self.dropout(out)


class NoPositionalEncoding(nn.Module):
    """Identity `src_embed` of the plain transformer: the boxes are ignored."""

    def forward(self, img_feat: torch.Tensor, box_vec: torch.Tensor | None = None) -> torch.Tensor:
        """Return img_feat unchanged."""
        return img_feat
