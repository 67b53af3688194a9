"""Reading an image and the two detectors' test-time resizing and normalisation (BGR, pixel means, std 1)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from common.errors import InputError


def read_image(path: str | Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB pixels of an image file; a missing or undecodable file is an InputError."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "image not found", field="image")
    try:
        with Image.open(path) as im:
            im.load()
            rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise InputError(path, f"not a readable image ({err})", field="image") from None
    if rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise InputError(path, f"empty image of size {rgb.shape[1]}x{rgb.shape[0]}", field="image")
    return rgb


def shortest_edge_size(height: int, width: int, min_size: int, max_size: int) -> tuple[int, int]:
    """(new_h, new_w) of detectron2's ``ResizeShortestEdge`` (rounded with int(x + 0.5))."""
    scale = min_size / min(height, width)
    new_h, new_w = (min_size, scale * width) if height < width else (scale * height, min_size)
    if max(new_h, new_w) > max_size:
        shrink = max_size / max(new_h, new_w)
        new_h, new_w = new_h * shrink, new_w * shrink
    return int(new_h + 0.5), int(new_w + 0.5)


def detectron2_input(rgb: np.ndarray, pixel_mean: tuple[float, ...], min_size: int = 800,
                     max_size: int = 1333) -> tuple[torch.Tensor, float, float]:
    """(1, 3, H', W') BGR minus mean as detectron2's DefaultPredictor feeds it, and the x / y scale factors.

    The resize is PIL bilinear on the uint8 image, as detectron2's ``ResizeTransform`` does for uint8 input.
    """
    from PIL import Image

    h, w = rgb.shape[:2]
    new_h, new_w = shortest_edge_size(h, w, min_size, max_size)
    resized = np.asarray(Image.fromarray(rgb).resize((new_w, new_h), Image.BILINEAR), dtype=np.float32)
    bgr = resized[:, :, ::-1] - np.asarray(pixel_mean, dtype=np.float32)
    tensor = torch.from_numpy(np.ascontiguousarray(bgr.transpose(2, 0, 1)))[None]
    return tensor, new_w / w, new_h / h


def bottom_up_scale(height: int, width: int, min_size: int = 600, max_size: int = 1000) -> float:
    """bottom-up-attention's ``im_scale``: shortest side to min_size unless the longest would exceed max_size."""
    scale = min_size / min(height, width)
    if np.round(scale * max(height, width)) > max_size:
        scale = max_size / max(height, width)
    return float(scale)


def bottom_up_input(rgb: np.ndarray, pixel_mean: tuple[float, ...], min_size: int = 600,
                    max_size: int = 1000) -> tuple[torch.Tensor, float]:
    """(1, 3, H', W') BGR minus mean resized by ``im_scale`` (``get_image_blob``), and ``im_scale``.

    The original resizes the mean-subtracted float image with cv2 INTER_LINEAR (no antialiasing), which torch's
    bilinear interpolation reproduces; the output size is rounded as cv2 rounds ``fx * width``.
    """
    h, w = rgb.shape[:2]
    scale = bottom_up_scale(h, w, min_size, max_size)
    bgr = rgb[:, :, ::-1].astype(np.float32) - np.asarray(pixel_mean, dtype=np.float32)
    x = torch.from_numpy(np.ascontiguousarray(bgr.transpose(2, 0, 1)))[None]
    size = (max(1, int(round(h * scale))), max(1, int(round(w * scale))))
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False), scale
