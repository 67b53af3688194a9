"""ResNet C4 trunk with frozen batch norm (MSRA, stride in the 1x1 conv) and the res5 head run on pooled regions.

Module and parameter names follow detectron2 (``stem.conv1.norm.running_var``, ``res4.22.conv3.weight``,
``res5.0.shortcut.norm.bias``) so the released state dicts load by name. Channel widths and block counts are
configurable so tests can build the real architecture with a few channels.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class TrunkConfig:
    """Widths and structure of a ResNet C4 trunk (defaults: ResNet-101 as in both detectors)."""

    stem_channels: int = 64
    res2_channels: int = 256  # output width of res2; doubles per stage (res5 = 8x)
    bottleneck_channels: int = 64  # bottleneck width of res2; doubles per stage
    blocks: tuple[int, int, int, int] = (3, 4, 23, 3)  # res2, res3, res4, res5
    caffe_stem_pool: bool = False  # bottom-up-attention: max pool without padding, ceil_mode (Caffe)
    res5_dilation: int = 1  # bottom-up-attention: 2 (3x3 convs of res5 dilated, stride kept in the first 1x1)

    @property
    def res4_channels(self) -> int:
        return self.res2_channels * 4

    @property
    def res5_channels(self) -> int:
        return self.res2_channels * 8


class FrozenBatchNorm2d(nn.Module):
    """Batch norm with fixed statistics and affine parameters: y = (x - mean) / sqrt(var + eps) * w + b."""

    def __init__(self, channels: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(channels))
        self.register_buffer("bias", torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels) - eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        shift = self.bias - self.running_mean * scale
        return x * scale.view(1, -1, 1, 1).to(x.dtype) + shift.view(1, -1, 1, 1).to(x.dtype)


class ConvNorm(nn.Conv2d):
    """A bias-free convolution followed by its frozen norm (detectron2's ``Conv2d(..., norm=...)``)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1):
        super().__init__(in_ch, out_ch, kernel, stride=stride, padding=padding, dilation=dilation, bias=False)
        self.norm = FrozenBatchNorm2d(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the frozen norm folded into the convolution: one pass over the activations instead of three
        n = self.norm
        scale = n.weight * (n.running_var + n.eps).rsqrt()
        shift = n.bias - n.running_mean * scale
        return F.conv2d(x, self.weight * scale.view(-1, 1, 1, 1), shift, self.stride, self.padding, self.dilation)


class Bottleneck(nn.Module):
    """1x1 (carries the stride, MSRA) -> 3x3 -> 1x1 with a projection shortcut when the width changes."""

    def __init__(self, in_ch: int, out_ch: int, bottleneck: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        self.shortcut = ConvNorm(in_ch, out_ch, 1, stride=stride) if in_ch != out_ch else None
        self.conv1 = ConvNorm(in_ch, bottleneck, 1, stride=stride)
        self.conv2 = ConvNorm(bottleneck, bottleneck, 3, padding=dilation, dilation=dilation)
        self.conv3 = ConvNorm(bottleneck, out_ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.conv1(x))
        out = F.relu(self.conv2(out))
        out = self.conv3(out)
        return F.relu(out + (self.shortcut(x) if self.shortcut is not None else x))


def make_stage(num_blocks: int, in_ch: int, out_ch: int, bottleneck: int, first_stride: int,
               dilation: int = 1) -> nn.Sequential:
    """``num_blocks`` bottlenecks; only the first one strides."""
    blocks = [Bottleneck(in_ch if i == 0 else out_ch, out_ch, bottleneck, first_stride if i == 0 else 1, dilation)
              for i in range(num_blocks)]
    return nn.Sequential(*blocks)


class Stem(nn.Module):
    """7x7/2 conv + frozen BN + ReLU + 3x3/2 max pool (stride 4)."""

    def __init__(self, out_ch: int, caffe_pool: bool = False):
        super().__init__()
        self.conv1 = ConvNorm(3, out_ch, 7, stride=2, padding=3)
        self.caffe_pool = caffe_pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        if self.caffe_pool:
            return F.max_pool2d(x, kernel_size=3, stride=2, padding=0, ceil_mode=True)
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


class ResNetC4(nn.Module):
    """Stem + res2..res4: the (N, 3, H, W) image to the stride-16 ``res4`` map."""

    def __init__(self, cfg: TrunkConfig):
        super().__init__()
        self.stem = Stem(cfg.stem_channels, cfg.caffe_stem_pool)
        in_ch, out_ch, mid = cfg.stem_channels, cfg.res2_channels, cfg.bottleneck_channels
        for idx, name in enumerate(("res2", "res3", "res4")):
            self.add_module(name, make_stage(cfg.blocks[idx], in_ch, out_ch, mid, 1 if idx == 0 else 2))
            in_ch, out_ch, mid = out_ch, out_ch * 2, mid * 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # channels-last activations take oneDNN's fast convolution path on CPU (about 1.7x here)
        x = x.contiguous(memory_format=torch.channels_last)
        return self.res4(self.res3(self.res2(self.stem(x))))


def make_res5(cfg: TrunkConfig) -> nn.Sequential:
    """The res5 head run on pooled regions (first block strides by 2; dilation as configured)."""
    return make_stage(cfg.blocks[3], cfg.res4_channels, cfg.res5_channels, cfg.bottleneck_channels * 8, 2,
                      cfg.res5_dilation)
