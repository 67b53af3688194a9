"""common.regions box ops and pooling against slow references written from the definitions."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from common.regions import boxes as B
from common.regions.pooling import roi_align, roi_pool


def _random_boxes(gen: torch.Generator, n: int, width: float, height: float) -> torch.Tensor:
    """Boxes inside, on the border of, partly outside the image, and smaller than one pixel."""
    x1 = torch.rand(n, generator=gen) * width * 1.1 - 0.05 * width
    y1 = torch.rand(n, generator=gen) * height * 1.1 - 0.05 * height
    w = torch.rand(n, generator=gen) * width * 0.7
    h = torch.rand(n, generator=gen) * height * 0.7
    boxes = torch.stack([x1, y1, x1 + w, y1 + h], 1)
    extra = torch.tensor([[0.0, 0.0, width, height],  # whole image
                          [width - 3.0, height - 5.0, width, height],  # bottom-right border
                          [0.0, 0.0, 0.4, 0.7],  # < 1 pixel at the origin
                          [7.3, 5.2, 7.6, 5.9],  # < 1 pixel inside
                          [width - 0.5, 2.0, width + 0.3, 2.2],  # sub-pixel on the right border
                          [3.0, 3.0, 3.0, 3.0]])  # empty
    return torch.cat([boxes, extra])


def _bilinear(fmap: np.ndarray, y: float, x: float) -> np.ndarray:
    c, h, w = fmap.shape
    if y < -1.0 or y > h or x < -1.0 or x > w:
        return np.zeros(c)
    y, x = max(y, 0.0), max(x, 0.0)
    y_low, x_low = int(y), int(x)
    if y_low >= h - 1:
        y_low = y_high = h - 1
        y = float(y_low)
    else:
        y_high = y_low + 1
    if x_low >= w - 1:
        x_low = x_high = w - 1
        x = float(x_low)
    else:
        x_high = x_low + 1
    ly, lx = y - y_low, x - x_low
    hy, hx = 1 - ly, 1 - lx
    return (hy * hx * fmap[:, y_low, x_low] + hy * lx * fmap[:, y_low, x_high]
            + ly * hx * fmap[:, y_high, x_low] + ly * lx * fmap[:, y_high, x_high])


def _roi_align_reference(fmap: np.ndarray, boxes: np.ndarray, size: int, scale: float) -> np.ndarray:
    out = np.zeros((len(boxes), fmap.shape[0], size, size))
    for n, (x1, y1, x2, y2) in enumerate(boxes.astype(np.float64)):
        sx, sy = x1 * scale - 0.5, y1 * scale - 0.5
        rw, rh = x2 * scale - 0.5 - sx, y2 * scale - 0.5 - sy
        bw, bh = rw / size, rh / size
        gh, gw = max(math.ceil(bh), 0), max(math.ceil(bw), 0)
        count = max(gh * gw, 1)
        for ph in range(size):
            for pw in range(size):
                acc = np.zeros(fmap.shape[0])
                for iy in range(gh):
                    y = sy + ph * bh + (iy + 0.5) * bh / gh
                    for ix in range(gw):
                        x = sx + pw * bw + (ix + 0.5) * bw / gw
                        acc += _bilinear(fmap, y, x)
                out[n, :, ph, pw] = acc / count
    return out


def _round_half_away(v: float) -> int:
    return int(math.floor(abs(v) + 0.5)) * (1 if v >= 0 else -1)


def _roi_pool_reference(fmap: np.ndarray, boxes: np.ndarray, size: int, scale: float) -> np.ndarray:
    c, h, w = fmap.shape
    out = np.zeros((len(boxes), c, size, size))
    f32 = np.float32
    for n, box in enumerate(boxes):
        x1, y1, x2, y2 = (_round_half_away(float(f32(v) * f32(scale))) for v in box)
        roi_w, roi_h = max(x2 - x1 + 1, 1), max(y2 - y1 + 1, 1)
        bin_w, bin_h = f32(roi_w) / f32(size), f32(roi_h) / f32(size)
        for ph in range(size):
            hs = min(max(int(math.floor(f32(ph) * bin_h)) + y1, 0), h)
            he = min(max(int(math.ceil(f32(ph + 1) * bin_h)) + y1, 0), h)
            for pw in range(size):
                ws = min(max(int(math.floor(f32(pw) * bin_w)) + x1, 0), w)
                we = min(max(int(math.ceil(f32(pw + 1) * bin_w)) + x1, 0), w)
                if he <= hs or we <= ws:
                    continue
                out[n, :, ph, pw] = fmap[:, hs:he, ws:we].reshape(c, -1).max(1)
    return out


@pytest.mark.parametrize("seed,size,scale", [(0, 4, 1 / 16), (1, 7, 1 / 16), (2, 3, 0.5)])
def test_roi_align_matches_definition(seed, size, scale):
    gen = torch.Generator().manual_seed(seed)
    fmap = torch.randn(3, 9, 11, generator=gen, dtype=torch.float64)
    boxes = _random_boxes(gen, 14, 11 / scale, 9 / scale)
    got = roi_align(fmap, boxes, size, scale).numpy()
    want = _roi_align_reference(fmap.numpy(), boxes.numpy(), size, scale)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("seed,size,scale", [(0, 4, 1 / 16), (1, 7, 1 / 16), (2, 14, 0.5), (3, 2, 1.0)])
def test_roi_pool_matches_definition(seed, size, scale):
    gen = torch.Generator().manual_seed(seed)
    fmap = torch.randn(3, 9, 11, generator=gen)
    boxes = _random_boxes(gen, 14, 11 / scale, 9 / scale)
    got = roi_pool(fmap, boxes, size, scale).numpy()
    want = _roi_pool_reference(fmap.numpy(), boxes.numpy(), size, scale)
    np.testing.assert_array_equal(got, want.astype(np.float32))


def test_roi_align_of_a_constant_map_inside_is_the_constant():
    fmap = torch.full((2, 8, 8), 3.0)
    out = roi_align(fmap, torch.tensor([[16.0, 16.0, 96.0, 80.0]]), 4, 1 / 16)
    torch.testing.assert_close(out, torch.full((1, 2, 4, 4), 3.0))


def _nms_reference(boxes: np.ndarray, scores: np.ndarray, thr: float, offset: float, inclusive: bool) -> list[int]:
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    keep: list[int] = []
    for i in order:
        ok = True
        for j in keep:
            xx1, yy1 = max(boxes[i, 0], boxes[j, 0]), max(boxes[i, 1], boxes[j, 1])
            xx2, yy2 = min(boxes[i, 2], boxes[j, 2]), min(boxes[i, 3], boxes[j, 3])
            inter = max(0.0, xx2 - xx1 + offset) * max(0.0, yy2 - yy1 + offset)
            area = lambda b: (b[2] - b[0] + offset) * (b[3] - b[1] + offset)  # noqa: E731
            iou = inter / (area(boxes[i]) + area(boxes[j]) - inter)
            if (iou >= thr) if inclusive else (iou > thr):
                ok = False
                break
        if ok:
            keep.append(i)
    return keep


@pytest.mark.parametrize("offset,inclusive,thr", [(0.0, False, 0.5), (1.0, True, 0.3), (1.0, True, 0.7)])
def test_nms_matches_brute_force(offset, inclusive, thr):
    gen = torch.Generator().manual_seed(3)
    boxes = _random_boxes(gen, 60, 100.0, 80.0)[:-1].to(torch.float64)  # no empty box: IoU 0/0
    boxes = torch.cat([boxes, boxes[:5] + 0.5])  # near duplicates
    scores = torch.rand(len(boxes), generator=gen, dtype=torch.float64)
    got = B.nms(boxes, scores, thr, offset, inclusive).tolist()
    assert got == _nms_reference(boxes.numpy(), scores.numpy(), thr, offset, inclusive)


def test_per_class_nms_mask_equals_nms_per_column():
    gen = torch.Generator().manual_seed(4)
    boxes = _random_boxes(gen, 40, 100.0, 80.0)[:-1].to(torch.float64)
    scores = torch.rand(len(boxes), 7, generator=gen, dtype=torch.float64)
    mask = B.per_class_nms_mask(boxes, scores, 0.3, offset=1.0, inclusive=True)
    for c in range(7):
        want = sorted(_nms_reference(boxes.numpy(), scores[:, c].numpy(), 0.3, 1.0, True))
        assert torch.nonzero(mask[c]).flatten().tolist() == want


def test_caffe_anchors_are_py_faster_rcnn_generate_anchors():
    anchors = B.caffe_cell_anchors()
    # generate_anchors(scales=(4, 8, 16, 32)): ratio 0.5 rows first (23 x 12 base), then 1:1, then 2:1 (11 x 22)
    assert anchors.shape == (12, 4)
    assert anchors[0].tolist() == [-38.0, -16.0, 53.0, 31.0]
    assert anchors[5].tolist() == [-56.0, -56.0, 71.0, 71.0]
    assert anchors[11].tolist() == [-168.0, -344.0, 183.0, 359.0]


def test_apply_deltas_zero_is_identity_and_clip():
    boxes = torch.tensor([[10.0, 20.0, 50.0, 60.0]])
    torch.testing.assert_close(B.apply_deltas(torch.zeros(1, 8), boxes, offset=0.0), boxes.repeat(1, 2))
    # bottom-up-attention's decoding (+1 widths, no -1 on x2/y2) moves x2, y2 by one pixel at zero deltas
    assert B.apply_deltas(torch.zeros(1, 4), boxes).tolist() == [[10.0, 20.0, 51.0, 61.0]]
    clipped = B.clip_boxes(torch.tensor([[-5.0, -1.0, 120.0, 90.0]]), 80, 100, offset=1)
    assert clipped.tolist() == [[0.0, 0.0, 99.0, 79.0]]
