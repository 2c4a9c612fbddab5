"""Object detection: kcnn's anchor-free `Detector`, keras-hub's RetinaNet and a two-stage
Faster R-CNN with FPN behind one contract; boxes, target assignment, losses, decoding with
per-class NMS (TFLite builtins only) and COCO evaluation with pycocotools; OverFeat's sliding
windows and their convolutional form; and the anchors, targets, proposals and losses of
two-stage Faster R-CNN with FPN."""

from kcnn.detection.anchor_boxes import (
    RetinaNetDecoder,
    RetinaNetLoss,
    decode_anchor_deltas,
    focal_loss,
)
from kcnn.detection.assigner import task_aligned_assign
from kcnn.detection.boxes import (
    anchor_points,
    box_ciou,
    box_giou,
    box_iou,
    decode_distances,
    encode_distances,
)
from kcnn.detection.coco import (
    COCOMetricsCallback,
    coco_evaluate,
    load_coco_detections,
    load_coco_ground_truth,
    save_coco_detections,
    to_coco_detections,
    to_coco_ground_truth,
)
from kcnn.detection.decode import DetectionDecoder, decode_detections
from kcnn.detection.detector import DetectionModel, Detector, detector_strides
from kcnn.detection.detectors import (
    detection_decoder,
    detection_loss,
    detector_with_decoder,
    softplus_for_int8,
)
from kcnn.detection.faster_rcnn import FasterRCNN, FasterRCNNLoss
from kcnn.detection.faster_rcnn_outputs import FasterRCNNDecoder, decode_roi_detections
from kcnn.detection.losses import DetectionLoss, varifocal_loss
from kcnn.detection.mask_rcnn import MaskRCNN, MaskRCNNDecoder, MaskRCNNLoss
from kcnn.detection.masks import mask_loss, mask_targets, paste_masks
from kcnn.detection.retinanet import RetinaNet, set_retinanet_prior
from kcnn.detection.sampling import sample_balanced, sample_rois
from kcnn.detection.sliding_windows import (
    fully_convolutional_classifier,
    sliding_window_scores,
    window_stride,
)
from kcnn.detection.two_stage import (
    decode_boxes,
    encode_boxes,
    fast_rcnn_loss,
    fpn_anchors,
    generate_proposals,
    match_anchors,
    rpn_loss,
)

__all__ = [
    "COCOMetricsCallback",
    "DetectionDecoder",
    "DetectionLoss",
    "DetectionModel",
    "Detector",
    "FasterRCNN",
    "FasterRCNNDecoder",
    "FasterRCNNLoss",
    "MaskRCNN",
    "MaskRCNNDecoder",
    "MaskRCNNLoss",
    "RetinaNet",
    "RetinaNetDecoder",
    "RetinaNetLoss",
    "anchor_points",
    "box_ciou",
    "box_giou",
    "box_iou",
    "coco_evaluate",
    "decode_anchor_deltas",
    "decode_boxes",
    "decode_detections",
    "detection_decoder",
    "detection_loss",
    "detector_strides",
    "detector_with_decoder",
    "decode_distances",
    "decode_roi_detections",
    "encode_boxes",
    "encode_distances",
    "fast_rcnn_loss",
    "focal_loss",
    "fpn_anchors",
    "fully_convolutional_classifier",
    "generate_proposals",
    "load_coco_detections",
    "load_coco_ground_truth",
    "mask_loss",
    "mask_targets",
    "match_anchors",
    "paste_masks",
    "rpn_loss",
    "sample_balanced",
    "sample_rois",
    "save_coco_detections",
    "set_retinanet_prior",
    "sliding_window_scores",
    "softplus_for_int8",
    "task_aligned_assign",
    "to_coco_detections",
    "to_coco_ground_truth",
    "varifocal_loss",
    "window_stride",
]
