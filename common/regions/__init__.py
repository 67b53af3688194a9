"""Region features without detectron2: the ResNet-101 C4 trunk, RoI pooling, box ops and weight import.

Shared by VisualCOMET (detectron2 Mask R-CNN R101-C4 features for given boxes) and spatial captioning
(bottom-up-attention Faster R-CNN R101-C4 with attributes). One concept per file:
``boxes`` (box ops, anchors, greedy NMS), ``pooling`` (ROIAlignV2, Caffe RoIPool), ``trunk`` (frozen-BN
ResNet C4 and its res5 head), ``detectors`` (the two detectors' module trees and forward passes),
``image`` (reading and test-time resizing), ``extract`` (one image to features or detected regions), ``weights`` (strict import of the released weight files),
``convert`` (``python -m common.regions.convert --check-keys``).
"""
