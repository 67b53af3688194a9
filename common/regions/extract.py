"""Region features of one image: detectron2 C4 features for given boxes (VisualCOMET, spec 2.7) and bottom-up
detections with features (spatial captioning), plus the box checks both do at the edge."""
from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import torch

from common.errors import InputError
from common.regions.detectors import BottomUpC4, Detectron2C4
from common.regions.image import bottom_up_input, detectron2_input

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
# Detector boxes written with inclusive pixel coordinates may end at width (or width - 1 + a rounding error): up to
# one pixel beyond the border is accepted, anything further is a box of another image.
BOX_SLACK = 1.0


def check_boxes(boxes: Any, width: float, height: float, source: Any, field: str = "boxes") -> np.ndarray:
    """(N, 4) float64 [x1, y1, x2, y2] (extra columns such as a score dropped) inside a width x height image.

    Each box must be finite, have x1 < x2 and y1 < y2, and lie within [0, width] x [0, height] (up to BOX_SLACK).
    """
    try:
        arr = np.asarray(boxes, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise InputError(source, f"boxes must be lists of numbers ({err})", field=field) from None
    if arr.size == 0:
        raise InputError(source, "no boxes", field=field)
    if arr.ndim != 2 or arr.shape[1] < 4:
        raise InputError(source, f"boxes must be [x1, y1, x2, y2(, score)] rows, got shape {arr.shape}", field=field)
    arr = arr[:, :4]
    for j, (x1, y1, x2, y2) in enumerate(arr):
        if not np.isfinite([x1, y1, x2, y2]).all():
            raise InputError(source, "box has a non-finite coordinate", record=j, field=field)
        if x2 <= x1 or y2 <= y1:
            raise InputError(source, f"box [{x1:g}, {y1:g}, {x2:g}, {y2:g}] has x2 <= x1 or y2 <= y1", record=j,
                             field=field)
        if x1 < -BOX_SLACK or y1 < -BOX_SLACK or x2 > width + BOX_SLACK or y2 > height + BOX_SLACK:
            raise InputError(source, f"box [{x1:g}, {y1:g}, {x2:g}, {y2:g}] lies outside the {width:g}x{height:g} "
                                     "image", record=j, field=field)
    return arr


def _precision(dtype: str):
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {list(DTYPES)}, got {dtype!r}")
    if dtype == "fp32":
        return contextlib.nullcontext()
    return torch.autocast("cpu", dtype=torch.bfloat16)


def detectron2_box_features(model: Detectron2C4, rgb: np.ndarray, boxes: np.ndarray, dtype: str = "fp32") -> np.ndarray:
    """(1 + N, D) float32: the whole-image box [0, 0, w, h] then the given (N, 4) boxes (spec 2.7).

    The image is resized as detectron2's predictor does and the boxes are scaled by the same x / y factors.
    """
    h, w = rgb.shape[:2]
    image, sx, sy = detectron2_input(rgb, model.cfg.pixel_mean, model.cfg.min_size, model.cfg.max_size)
    all_boxes = np.concatenate([[[0.0, 0.0, w, h]], np.asarray(boxes, np.float64).reshape(-1, 4)])
    scaled = torch.from_numpy(all_boxes * np.array([sx, sy, sx, sy]))
    with torch.no_grad(), _precision(dtype):
        feats = model.region_features(image, scaled)
    return feats.float().numpy()


def bottom_up_regions(model: BottomUpC4, rgb: np.ndarray, dtype: str = "fp32") -> dict[str, np.ndarray]:
    """Detected regions of an image: features (K, D), boxes (K, 4) in image pixels, objects, attributes (+ conf)."""
    image, scale = bottom_up_input(rgb, model.cfg.pixel_mean, model.cfg.min_size, model.cfg.max_size)
    with torch.no_grad(), _precision(dtype):
        out = model.detect(image, scale)
    return {k: (v.float() if v.is_floating_point() else v).numpy() for k, v in out.items()}
