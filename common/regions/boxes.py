"""Box operations: areas and IoU, greedy NMS (single and per class), Caffe anchors, box deltas, clipping.

``offset`` is 0 for detectron2's continuous coordinates and 1 for the Caffe / maskrcnn-benchmark convention
of bottom-up-attention (a box [x1, x2] covers x2 - x1 + 1 pixels).
"""
from __future__ import annotations

import math

import numpy as np
import torch

# detectron2 / bottom-up-attention clamp of dw, dh: log(1000 / 16)
SCALE_CLAMP = math.log(1000.0 / 16)


def box_area(boxes: torch.Tensor, offset: float = 0.0) -> torch.Tensor:
    """(N,) areas of (N, 4) [x1, y1, x2, y2] boxes."""
    return (boxes[:, 2] - boxes[:, 0] + offset) * (boxes[:, 3] - boxes[:, 1] + offset)


def pairwise_iou(a: torch.Tensor, b: torch.Tensor, offset: float = 0.0) -> torch.Tensor:
    """(N, M) intersection over union of two box sets."""
    lt = torch.maximum(a[:, None, :2], b[None, :, :2])
    rb = torch.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt + offset).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(a, offset)[:, None] + box_area(b, offset)[None, :] - inter
    return inter / union.clamp(min=torch.finfo(union.dtype).tiny)


def _suppresses(iou: torch.Tensor, threshold: float, inclusive: bool) -> torch.Tensor:
    return iou >= threshold if inclusive else iou > threshold


def nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float, offset: float = 0.0,
        inclusive: bool = False) -> torch.Tensor:
    """Greedy NMS: indices of the kept boxes, highest score first.

    A box is dropped when its IoU with a kept, higher-scoring box is > threshold (detectron2/torchvision) or
    >= threshold with ``inclusive`` (maskrcnn-benchmark's kernel used by bottom-up-attention).
    """
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.long)
    order = torch.argsort(scores, descending=True, stable=True)
    sorted_boxes = boxes[order]
    removed = torch.zeros(len(order), dtype=torch.bool)
    keep = []
    for i in range(len(order)):
        if removed[i]:
            continue
        keep.append(i)
        if i + 1 < len(order):
            iou = pairwise_iou(sorted_boxes[i:i + 1], sorted_boxes[i + 1:], offset)[0]
            removed[i + 1:] |= _suppresses(iou, threshold, inclusive)
    return order[torch.tensor(keep, dtype=torch.long)]


def per_class_nms_mask(boxes: torch.Tensor, scores: torch.Tensor, threshold: float, offset: float = 0.0,
                       inclusive: bool = False) -> torch.Tensor:
    """(C, R) bool: which of R shared boxes greedy NMS keeps for each of the C score columns of (R, C) ``scores``.

    All classes are run at once: step r visits each class's r-th best box, so the loop is over ranks,
    never over classes or boxes.
    """
    num_boxes, num_classes = scores.shape
    suppress = _suppresses(pairwise_iou(boxes, boxes, offset), threshold, inclusive)
    suppress.fill_diagonal_(False)
    order = torch.argsort(scores, dim=0, descending=True, stable=True)  # (R, C)
    cls = torch.arange(num_classes)
    keep = torch.zeros(num_classes, num_boxes, dtype=torch.bool)
    removed = torch.zeros(num_classes, num_boxes, dtype=torch.bool)
    for r in range(num_boxes):
        idx = order[r]
        alive = ~removed[cls, idx]
        keep[cls, idx] = alive
        removed |= alive[:, None] & suppress[idx]
    return keep


def caffe_cell_anchors(base_size: int = 16, ratios: tuple[float, ...] = (0.5, 1.0, 2.0),
                       scales: tuple[float, ...] = (4, 8, 16, 32)) -> torch.Tensor:
    """py-faster-rcnn's ``generate_anchors``: (len(ratios) * len(scales), 4), ratio-major, rounded like numpy."""
    w = h = float(base_size)
    x_ctr, y_ctr = 0.5 * (w - 1), 0.5 * (h - 1)
    out = []
    for ratio in ratios:
        ws = float(np.round(np.sqrt(w * h / ratio)))
        hs = float(np.round(ws * ratio))
        for scale in scales:
            sw, sh = ws * scale, hs * scale
            out.append([x_ctr - 0.5 * (sw - 1), y_ctr - 0.5 * (sh - 1), x_ctr + 0.5 * (sw - 1), y_ctr + 0.5 * (sh - 1)])
    return torch.tensor(out, dtype=torch.float32)


def grid_anchors(cell_anchors: torch.Tensor, height: int, width: int, stride: int) -> torch.Tensor:
    """(H * W * A, 4) anchors shifted over a feature map, ordered (y, x, anchor)."""
    ys = torch.arange(height, dtype=torch.float32) * stride
    xs = torch.arange(width, dtype=torch.float32) * stride
    sy, sx = torch.meshgrid(ys, xs, indexing="ij")
    shifts = torch.stack([sx, sy, sx, sy], -1).reshape(-1, 1, 4)
    return (shifts + cell_anchors[None]).reshape(-1, 4)


def apply_deltas(deltas: torch.Tensor, boxes: torch.Tensor, weights: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0),
                 offset: float = 1.0) -> torch.Tensor:
    """R-CNN box decoding of (N, 4k) deltas on (N, 4) boxes (bottom-up-attention: offset 1, weights 1)."""
    boxes = boxes.to(deltas.dtype)
    widths = boxes[:, 2] - boxes[:, 0] + offset
    heights = boxes[:, 3] - boxes[:, 1] + offset
    ctr_x = boxes[:, 0] + 0.5 * widths
    ctr_y = boxes[:, 1] + 0.5 * heights
    wx, wy, ww, wh = weights
    dx, dy = deltas[:, 0::4] / wx, deltas[:, 1::4] / wy
    dw = (deltas[:, 2::4] / ww).clamp(max=SCALE_CLAMP)
    dh = (deltas[:, 3::4] / wh).clamp(max=SCALE_CLAMP)
    cx = dx * widths[:, None] + ctr_x[:, None]
    cy = dy * heights[:, None] + ctr_y[:, None]
    pw = torch.exp(dw) * widths[:, None]
    ph = torch.exp(dh) * heights[:, None]
    out = torch.stack([cx - 0.5 * pw, cy - 0.5 * ph, cx + 0.5 * pw, cy + 0.5 * ph], -1)
    return out.reshape(deltas.shape)


def clip_boxes(boxes: torch.Tensor, height: float, width: float, offset: float = 0.0) -> torch.Tensor:
    """Boxes clipped to [0, width - offset] x [0, height - offset]."""
    x = boxes[:, 0::2].clamp(0, width - offset)
    y = boxes[:, 1::2].clamp(0, height - offset)
    return torch.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], -1)
