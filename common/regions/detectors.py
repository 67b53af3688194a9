"""The two R101-C4 detectors as module trees named like their released state dicts, with their forward passes.

* ``Detectron2C4``: detectron2 ``COCO-InstanceSegmentation/mask_rcnn_R_101_C4_3x`` (VisualCOMET, spec 2.7). Only
  ``region_features`` is run (given boxes: backbone -> ROIAlignV2 14x14 at 1/16 -> res5 -> mean); the RPN, box
  predictor and mask head exist so the model-zoo file loads strictly.
* ``BottomUpC4``: bottom-up-attention's Caffe Faster R-CNN (Visual Genome, 1600 classes + background, 400 attributes)
  as converted by bottom-up-attention.pytorch: Caffe stem pooling, res5 dilated, RoIPool, Caffe box conventions
  (+1 sizes), RPN NMS 0.7 (6000 -> 300 proposals), then the extractor's per-class NMS 0.3 / confidence 0.2 /
  10-100 boxes on the proposals (``utils/extract_utils.py::save_roi_features``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from common.regions import boxes as B
from common.regions.pooling import roi_align, roi_pool
from common.regions.trunk import ResNetC4, TrunkConfig, make_res5

FEATURE_STRIDE = 16


@dataclass(frozen=True)
class Detectron2Config:
    """detectron2 Base-RCNN-C4 + mask_rcnn_R_101_C4_3x (defaults: the model-zoo model)."""

    trunk: TrunkConfig = field(default_factory=TrunkConfig)
    num_classes: int = 80
    num_anchors: int = 15  # 5 sizes x 3 aspect ratios
    mask_dim: int = 256
    pooler_resolution: int = 14
    pixel_mean: tuple[float, float, float] = (103.530, 116.280, 123.675)  # BGR; PIXEL_STD is 1
    min_size: int = 800
    max_size: int = 1333


@dataclass(frozen=True)
class BottomUpConfig:
    """configs/caffe/test-caffe-r101.yaml of bottom-up-attention.pytorch (defaults: the released model)."""

    trunk: TrunkConfig = field(default_factory=lambda: TrunkConfig(caffe_stem_pool=True, res5_dilation=2))
    num_classes: int = 1601  # 1600 Visual Genome objects + background (index 0)
    num_attributes: int = 401  # 400 attributes + "no attribute" (index 0)
    rpn_channels: int = 512
    anchor_scales: tuple[float, ...] = (4, 8, 16, 32)
    anchor_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    cls_embed_dim: int = 256
    attr_hidden: int = 512
    pooler_resolution: int = 14
    pixel_mean: tuple[float, float, float] = (102.9801, 115.9465, 122.7717)  # BGR
    min_size: int = 600
    max_size: int = 1000
    rpn_pre_nms_topk: int = 6000
    rpn_post_nms_topk: int = 300
    rpn_nms: float = 0.7
    rpn_min_size: float = 16.0
    nms: float = 0.3
    conf_thresh: float = 0.2
    min_boxes: int = 10
    max_boxes: int = 100

    @property
    def num_anchors(self) -> int:
        return len(self.anchor_scales) * len(self.anchor_ratios)


class _Node(nn.Module):
    """A named container (``proposal_generator``, ``roi_heads``) so parameter names match the released files."""


class Detectron2C4(nn.Module):
    """detectron2 Mask R-CNN R101-C4: backbone, RPN head, res5 box/mask heads."""

    def __init__(self, cfg: Detectron2Config = Detectron2Config()):
        super().__init__()
        self.cfg = cfg
        c4, c5 = cfg.trunk.res4_channels, cfg.trunk.res5_channels
        self.backbone = ResNetC4(cfg.trunk)
        self.proposal_generator = _Node()
        rpn = _Node()
        rpn.conv = nn.Conv2d(c4, c4, 3, padding=1)
        rpn.objectness_logits = nn.Conv2d(c4, cfg.num_anchors, 1)
        rpn.anchor_deltas = nn.Conv2d(c4, cfg.num_anchors * 4, 1)
        self.proposal_generator.rpn_head = rpn
        self.roi_heads = _Node()
        self.roi_heads.res5 = make_res5(cfg.trunk)
        predictor = _Node()
        predictor.cls_score = nn.Linear(c5, cfg.num_classes + 1)
        predictor.bbox_pred = nn.Linear(c5, cfg.num_classes * 4)
        self.roi_heads.box_predictor = predictor
        mask = _Node()
        mask.deconv = nn.ConvTranspose2d(c5, cfg.mask_dim, 2, stride=2)
        mask.predictor = nn.Conv2d(cfg.mask_dim, cfg.num_classes, 1)
        self.roi_heads.mask_head = mask

    @torch.no_grad()
    def region_features(self, image: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """(N, 2048) features of (N, 4) boxes given in the coordinates of the (1, 3, H, W) normalised input."""
        fmap = self.backbone(image)
        pooled = roi_align(fmap, boxes, self.cfg.pooler_resolution, 1.0 / FEATURE_STRIDE)
        return self.roi_heads.res5(pooled.contiguous(memory_format=torch.channels_last)).mean(dim=(2, 3))


class BottomUpC4(nn.Module):
    """bottom-up-attention Faster R-CNN R101-C4 with the attribute head."""

    def __init__(self, cfg: BottomUpConfig = BottomUpConfig()):
        super().__init__()
        self.cfg = cfg
        c4, c5 = cfg.trunk.res4_channels, cfg.trunk.res5_channels
        self.backbone = ResNetC4(cfg.trunk)
        self.proposal_generator = _Node()
        rpn = _Node()
        rpn.conv = nn.Conv2d(c4, cfg.rpn_channels, 3, padding=1)
        rpn.objectness_logits = nn.Conv2d(cfg.rpn_channels, cfg.num_anchors * 2, 1)
        rpn.anchor_deltas = nn.Conv2d(cfg.rpn_channels, cfg.num_anchors * 4, 1)
        self.proposal_generator.rpn_head = rpn
        self.roi_heads = _Node()
        self.roi_heads.res5 = make_res5(cfg.trunk)
        predictor = _Node()
        predictor.cls_score = nn.Linear(c5, cfg.num_classes)
        predictor.bbox_pred = nn.Linear(c5, cfg.num_classes * 4)
        predictor.cls_embed = nn.Embedding(cfg.num_classes, cfg.cls_embed_dim)
        predictor.attr_linear1 = nn.Linear(c5 + cfg.cls_embed_dim, cfg.attr_hidden)
        predictor.attr_linear2 = nn.Linear(cfg.attr_hidden, cfg.num_attributes)
        self.roi_heads.box_predictor = predictor
        # Caffe anchors (py-faster-rcnn generate_anchors, base 16): the layout the converted RPN weights were trained on
        self.register_buffer("cell_anchors", B.caffe_cell_anchors(16, cfg.anchor_ratios, cfg.anchor_scales),
                             persistent=False)

    def proposals(self, fmap: torch.Tensor, height: int, width: int, im_scale: float) -> torch.Tensor:
        """(P, 4) RPN proposals in input coordinates (``find_top_bua_rpn_proposals`` at test time)."""
        cfg, rpn = self.cfg, self.proposal_generator.rpn_head
        hidden = F.relu(rpn.conv(fmap))
        logits, deltas = rpn.objectness_logits(hidden), rpn.anchor_deltas(hidden)
        _, _, h, w = logits.shape
        a = cfg.num_anchors
        fg = F.softmax(logits.view(1, 2, a, h, w).float(), dim=1)[:, 1]  # (1, A, H, W)
        scores = fg.permute(0, 2, 3, 1).reshape(-1)
        deltas = deltas.view(1, a, 4, h, w).permute(0, 3, 4, 1, 2).reshape(-1, 4).float()
        anchors = B.grid_anchors(self.cell_anchors, h, w, FEATURE_STRIDE)
        boxes = B.clip_boxes(B.apply_deltas(deltas, anchors, offset=1.0), height, width, offset=1.0)
        keep = (boxes[:, 3] > boxes[:, 1]) & (boxes[:, 2] > boxes[:, 0])
        min_side = cfg.rpn_min_size * im_scale
        keep &= (boxes[:, 2] - boxes[:, 0] + 1 > min_side) & (boxes[:, 3] - boxes[:, 1] + 1 > min_side)
        boxes, scores = boxes[keep], scores[keep]
        top = torch.argsort(scores, descending=True, stable=True)[:cfg.rpn_pre_nms_topk]
        boxes, scores = boxes[top], scores[top]
        kept = B.nms(boxes, scores, cfg.rpn_nms, offset=1.0, inclusive=True)[:cfg.rpn_post_nms_topk]
        return boxes[kept]

    def box_head(self, fmap: torch.Tensor, proposals: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(pooled 2048-d features, class probabilities, attribute probabilities) of the proposals."""
        cfg, pred = self.cfg, self.roi_heads.box_predictor
        pooled = roi_pool(fmap, proposals, cfg.pooler_resolution, 1.0 / FEATURE_STRIDE)
        feats = self.roi_heads.res5(pooled.contiguous(memory_format=torch.channels_last)).mean(dim=(2, 3))
        logits = pred.cls_score(feats)
        hidden = pred.attr_linear1(torch.cat([feats, pred.cls_embed(logits.argmax(1))], 1))
        attrs = F.softmax(pred.attr_linear2(F.relu(hidden)).float(), dim=-1)
        return feats.float(), F.softmax(logits.float(), dim=-1), attrs

    @torch.no_grad()
    def detect(self, image: torch.Tensor, im_scale: float) -> dict[str, torch.Tensor]:
        """Regions of one normalised (1, 3, H, W) input: features (K, 2048), boxes (K, 4) in original-image pixels,
        object/attribute ids (0-based into the 1600/400 vocabularies) and confidences."""
        cfg = self.cfg
        _, _, height, width = image.shape
        fmap = self.backbone(image)
        props = self.proposals(fmap, height, width, im_scale)
        if len(props) == 0:
            raise ValueError("the region proposal network kept no box")
        feats, probs, attrs = self.box_head(fmap, props)
        dets = props / im_scale
        kept = B.per_class_nms_mask(dets.double(), probs[:, 1:].double(), cfg.nms, offset=1.0, inclusive=True)
        max_conf = (probs[:, 1:].T * kept).amax(0)
        order = torch.argsort(max_conf, descending=True, stable=True)
        keep = torch.nonzero(max_conf >= cfg.conf_thresh).flatten()
        if len(keep) < cfg.min_boxes:
            keep = order[:cfg.min_boxes]
        elif len(keep) > cfg.max_boxes:
            keep = order[:cfg.max_boxes]
        obj_conf, obj = probs[keep, 1:].max(1)
        attr_conf, attr = attrs[keep, 1:].max(1)
        return {"features": feats[keep], "boxes": dets[keep], "objects": obj, "objects_conf": obj_conf,
                "attrs": attr, "attrs_conf": attr_conf}
