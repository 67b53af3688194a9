"""Clip transforms on uint8 (T, C, H, W) tensors, same random parameters for every frame (spec 3.6)."""
from __future__ import annotations

import math
import random

import torch
from torch.nn import functional as F

BEIT_MEAN = (0.5, 0.5, 0.5)
BEIT_STD = (0.5, 0.5, 0.5)


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    # bicubic without antialias, as torchvision 0.11's tensor resize (pitfall 9.22 K)
    out = F.interpolate(x.float(), size=size, mode="bicubic", align_corners=False, antialias=False)
    return out.clamp(0, 255)


def random_resized_crop_params(height: int, width: int, scale=(0.5, 1.0), ratio=(3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop.get_params (10 tries, then a central crop)."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * random.uniform(*scale)
        aspect = math.exp(random.uniform(*log_ratio))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            i = random.randint(0, height - h)
            j = random.randint(0, width - w)
            return i, j, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def normalize(x: torch.Tensor, mean=BEIT_MEAN, std=BEIT_STD) -> torch.Tensor:
    """x/255 then (x - mean) / std per channel."""
    x = x.float() / 255.0
    m = torch.tensor(mean, dtype=x.dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(1, -1, 1, 1)
    return (x - m) / s


class TrainTransform:
    """RandomResizedCrop(scale 0.5-1, bicubic) -> RandomHorizontalFlip -> /255 -> normalise."""

    def __init__(self, image_res: int, scale=(0.5, 1.0), flip: bool = True):
        self.image_res, self.scale, self.flip = image_res, scale, flip

    def __call__(self, clip: torch.Tensor) -> torch.Tensor:
        i, j, h, w = random_resized_crop_params(clip.shape[-2], clip.shape[-1], self.scale)
        x = _resize(clip[..., i:i + h, j:j + w], (self.image_res, self.image_res))
        if self.flip and random.random() < 0.5:
            x = x.flip(-1)
        return normalize(x)


class EvalTransform:
    """Resize((res, res), bicubic; aspect ratio not kept, pitfall 9.22 K) -> /255 -> normalise."""

    def __init__(self, image_res: int):
        self.image_res = image_res

    def __call__(self, clip: torch.Tensor) -> torch.Tensor:
        return normalize(_resize(clip, (self.image_res, self.image_res)))
