"""Image preprocessing of the original (`RawImageExtractorCV2`, spec 3.3)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from common.errors import InputError

MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)


def load_image(path: str | Path, size: int) -> np.ndarray:
    """(1, 3, size, size) float32 CLIP-normalised image; aspect ratio not kept (spec 9.22, kept)."""
    try:
        with Image.open(path) as img:
            rgb = img.convert("RGB").resize((size, size), Image.BICUBIC)
    except FileNotFoundError:
        raise InputError(path, "image file not found") from None
    except OSError as err:
        raise InputError(path, f"cannot read image: {err}") from None
    return preprocess_pil(rgb, size)


def preprocess_pil(img: Image.Image, size: int) -> np.ndarray:
    """(1, 3, size, size) float32 array of a PIL image (resize bicubic, ToTensor, Normalize)."""
    if img.size != (size, size) or img.mode != "RGB":
        img = img.convert("RGB").resize((size, size), Image.BICUBIC)
    arr = np.asarray(img, dtype=np.float32) / 255.0
    arr = (arr - MEAN) / STD
    return arr.transpose(2, 0, 1)[None].copy()


def denormalise(arr: np.ndarray) -> np.ndarray:
    """(3,H,W) normalised array -> (H,W,3) uint8 for display."""
    img = arr.transpose(1, 2, 0) * STD + MEAN
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)
