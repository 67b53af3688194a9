"""RoI pooling of one image's feature map, vectorised over boxes.

* ``roi_align``: detectron2's ``ROIAlignV2`` (torchvision ``roi_align`` with ``aligned=True``): half-pixel offset,
  no minimum box size, ``sampling_ratio=0`` = ceil(bin size) samples per bin side, bilinear samples averaged.
  Bilinear weights are separable and the sample grid is a product of its rows and columns, so each output is
  ``Wy @ feature @ Wx^T`` with per-box row/column weight matrices (exact, no per-box loop).
* ``roi_pool``: the Caffe RoIPool of bottom-up-attention (torchvision ``roi_pool``): box corners rounded half away
  from zero, +1 sizes, max over integer bins, empty bins 0. Bin maxima are read from a 2-D sparse max table.
"""
from __future__ import annotations

import math

import torch

_CHUNK_ELEMENTS = 1 << 23  # bound on the per-chunk intermediate (boxes x bins x channels x side)


def _as_chw(features: torch.Tensor) -> torch.Tensor:
    if features.dim() == 4:
        if features.shape[0] != 1:
            raise ValueError(f"one image at a time: got a batch of {features.shape[0]}")
        features = features[0]
    if features.dim() != 3:
        raise ValueError(f"expected a (C, H, W) feature map, got shape {tuple(features.shape)}")
    return features


def _align_weights(start: torch.Tensor, length: torch.Tensor, pooled: int, size: int) -> torch.Tensor:
    """(N, pooled, size) weights: mean over each bin's samples of their bilinear weights along one axis."""
    n = start.shape[0]
    bin_size = length / pooled
    grid = torch.ceil(bin_size).clamp(min=0).long()  # adaptive sampling_ratio (0)
    g_max = max(int(grid.max()) if n else 0, 1)
    p = torch.arange(pooled, dtype=start.dtype)
    i = torch.arange(g_max, dtype=start.dtype)
    g = grid.clamp(min=1).to(start.dtype)
    coord = (start[:, None, None] + p[None, :, None] * bin_size[:, None, None]
             + (i[None, None, :] + 0.5) * bin_size[:, None, None] / g[:, None, None])
    valid = (i[None, None, :] < grid[:, None, None]) & (coord >= -1.0) & (coord <= size)
    c = coord.clamp(min=0)
    low = c.floor().long()
    at_end = low >= size - 1
    low = torch.where(at_end, torch.full_like(low, size - 1), low)
    high = torch.where(at_end, low, low + 1)
    frac = torch.where(at_end, torch.zeros_like(c), c - low.to(c.dtype))
    scale = valid.to(c.dtype) / g[:, None, None]
    weights = torch.zeros(n, pooled, size, dtype=start.dtype)
    weights.scatter_add_(2, low, (1 - frac) * scale)
    weights.scatter_add_(2, high, frac * scale)
    return weights


def roi_align(features: torch.Tensor, boxes: torch.Tensor, output_size: int, spatial_scale: float) -> torch.Tensor:
    """(N, C, S, S) ROIAlignV2 of (N, 4) image-space boxes on a (C, H, W) map."""
    feat = _as_chw(features)
    c, h, w = feat.shape
    b = boxes.to(torch.float64) * spatial_scale - 0.5
    wy = _align_weights(b[:, 1], b[:, 3] - b[:, 1], output_size, h).to(feat.dtype)
    wx = _align_weights(b[:, 0], b[:, 2] - b[:, 0], output_size, w).to(feat.dtype)
    step = max(1, _CHUNK_ELEMENTS // max(1, output_size * c * w))
    outs = []
    for s in range(0, len(b), step):
        rows = torch.einsum("npy,cyx->npcx", wy[s:s + step], feat)
        outs.append(torch.einsum("npcx,nqx->ncpq", rows, wx[s:s + step]))
    if not outs:
        return feat.new_zeros(0, c, output_size, output_size)
    return torch.cat(outs)


def _round_half_away(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.floor(x.abs() + 0.5)


def _pool_bins(start: torch.Tensor, end: torch.Tensor, pooled: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, pooled) integer [lo, hi) bin ranges of Caffe RoIPool along one axis (float32 arithmetic as the kernel)."""
    length = torch.clamp(end - start + 1, min=1).to(torch.float32)
    bin_size = length / pooled
    p = torch.arange(pooled, dtype=torch.float32)
    lo = torch.floor(p[None] * bin_size[:, None]).long() + start[:, None]
    hi = torch.ceil((p[None] + 1) * bin_size[:, None]).long() + start[:, None]
    return lo.clamp(0, size), hi.clamp(0, size)


def _sparse_max_table(x: torch.Tensor, levels: int) -> torch.Tensor:
    """(levels, ..., W): level k holds the max over x[..., w : w + 2**k] (-inf where the window leaves the map)."""
    width = x.shape[-1]
    out = [x]
    for k in range(1, levels):
        prev, half = out[-1], 1 << (k - 1)
        nxt = torch.full_like(prev, float("-inf"))
        if width > half:
            nxt[..., :width - half] = torch.maximum(prev[..., :width - half], prev[..., half:])
        out.append(nxt)
    return torch.stack(out)


def roi_pool(features: torch.Tensor, boxes: torch.Tensor, output_size: int, spatial_scale: float) -> torch.Tensor:
    """(N, C, S, S) Caffe RoIPool of (N, 4) image-space boxes on a (C, H, W) map.

    Every bin is the max of four overlapping power-of-two windows read from one 2-D sparse max table of the map
    (levels up to the largest bin), so the cost is a few gathers per bin, whatever the box sizes.
    """
    feat = _as_chw(features)
    c, h, w = feat.shape
    scaled = _round_half_away(boxes.to(torch.float32) * spatial_scale).long()
    x_lo, x_hi = _pool_bins(scaled[:, 0], scaled[:, 2], output_size, w)
    y_lo, y_hi = _pool_bins(scaled[:, 1], scaled[:, 3], output_size, h)

    def query(lo: torch.Tensor, hi: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # a range [lo, hi) is the max of two (overlapping) power-of-two windows starting at lo and at hi - 2**level
        level = torch.floor(torch.log2((hi - lo).clamp(min=1).to(torch.float64))).long()
        return level, lo.clamp(max=size - 1), (hi - (1 << level)).clamp(min=0)

    x_level, x_first, x_second = query(x_lo, x_hi, w)
    y_level, y_first, y_second = query(y_lo, y_hi, h)
    n = len(scaled)
    if n == 0:
        return feat.new_zeros(0, c, output_size, output_size)
    by_cols = _sparse_max_table(feat, int(x_level.max()) + 1)  # (Lx, C, H, W)
    table = _sparse_max_table(by_cols.transpose(-1, -2), int(y_level.max()) + 1)  # (Ly, Lx, C, W, H)
    out = feat.new_empty(n, output_size, output_size, c)
    step = max(1, _CHUNK_ELEMENTS // (output_size * output_size * c))
    for s in range(0, n, step):
        e = min(s + step, n)
        ky, kx = y_level[s:e, :, None], x_level[s:e, None, :]  # (n, S_y, 1), (n, 1, S_x)
        best = None
        for ys in (y_first[s:e], y_second[s:e]):
            for xs in (x_first[s:e], x_second[s:e]):
                part = table[ky, kx, :, xs[:, None, :], ys[:, :, None]]  # (n, S_y, S_x, C)
                best = part if best is None else torch.maximum(best, part)
        out[s:e] = best
    empty = (x_hi <= x_lo)[:, None, :] | (y_hi <= y_lo)[:, :, None]  # (N, S_y, S_x)
    return out.masked_fill(empty[..., None], 0.0).permute(0, 3, 1, 2).contiguous()
