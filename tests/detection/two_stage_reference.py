"""Float64 NumPy references for `kcnn.detection.two_stage`, written from the papers with loops.

Faster R-CNN (Ren et al. 2015, arXiv:1506.01497), FPN (Lin et al. 2017, arXiv:1612.03144),
Fast R-CNN (Girshick 2015, arXiv:1504.08083), with Detectron2's choices where the papers leave
one open (the low-quality matches, the clamp of dw and dh, the normalisations, beta).
"""

import math

import numpy as np


def anchors(image_size, levels, sizes, ratios):
    """Per level: for each cell (y, x), then each ratio r = h / w, the box of area size**2
    centred at ((x + 0.5) * stride, (y + 0.5) * stride)."""
    height, width = image_size
    result = []
    for k, size in zip(levels, sizes, strict=True):
        stride = 2**k
        rows = []
        for y in range(math.ceil(height / stride)):
            for x in range(math.ceil(width / stride)):
                centre_x, centre_y = (x + 0.5) * stride, (y + 0.5) * stride
                for ratio in ratios:
                    w = math.sqrt(size * size / ratio)  # w * h = size**2 and h = ratio * w
                    h = ratio * w
                    rows.append(
                        [centre_x - w / 2, centre_y - h / 2, centre_x + w / 2, centre_y + h / 2]
                    )
        result.append(np.array(rows))
    return result


def iou(a, b):
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    intersection = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - intersection
    return intersection / union if union > 0 else 0.0


def centre_size(box):
    w, h = box[2] - box[0], box[3] - box[1]
    return box[0] + w / 2, box[1] + h / 2, w, h


def encode(box, anchor, weights):
    """R-CNN appendix C: t = (wx dx / wa, wy dy / ha, ww log(w / wa), wh log(h / ha))."""
    x, y, w, h = centre_size(box)
    xa, ya, wa, ha = centre_size(anchor)
    wx, wy, ww, wh = weights
    return [wx * (x - xa) / wa, wy * (y - ya) / ha, ww * math.log(w / wa), wh * math.log(h / ha)]


def decode(delta, anchor, weights, clip):
    xa, ya, wa, ha = centre_size(anchor)
    wx, wy, ww, wh = weights
    x, y = xa + delta[0] / wx * wa, ya + delta[1] / wy * ha
    w = wa * math.exp(min(delta[2] / ww, clip))
    h = ha * math.exp(min(delta[3] / wh, clip))
    return [x - w / 2, y - h / 2, x + w / 2, y + h / 2]


def match(anchor_boxes, gt, valid, positive_iou, negative_iou, allow_low_quality):
    """One image: labels 1 / 0 / -1 and the best valid ground truth of each anchor."""
    real = [m for m in range(len(gt)) if valid[m]]
    labels, matched = [], []
    overlaps = [[iou(anchor, gt[m]) for m in real] for anchor in anchor_boxes]
    for row in overlaps:
        best = max(row) if row else -1.0
        matched.append(real[int(np.argmax(row))] if row else 0)
        labels.append(1 if best >= positive_iou else 0 if best < negative_iou else -1)
    if allow_low_quality:
        for column in range(len(real)):
            highest = max(row[column] for row in overlaps)
            for a, row in enumerate(overlaps):
                if highest > 0 and row[column] == highest:
                    labels[a] = 1
    return np.array(labels), np.array(matched)


def greedy_nms(boxes, scores, threshold):
    """Indices kept: in decreasing score, a box goes if its IoU with a kept one is > threshold."""
    kept = []
    for index in sorted(range(len(scores)), key=lambda i: (-scores[i], i)):
        if all(iou(boxes[index], boxes[k]) <= threshold for k in kept):
            kept.append(index)
    return kept


def proposals(objectness, deltas, anchor_levels, image_size, pre, post, nms_iou, min_size):
    """One image: per level top-k, decode, clip, drop small boxes, NMS per level; then the
    best `post` over the levels, as (boxes, scores) sorted by score."""
    height, width = image_size
    candidates = []
    for logits, level_deltas, level_anchors in zip(objectness, deltas, anchor_levels, strict=True):
        order = sorted(range(len(logits)), key=lambda i: (-logits[i], i))[:pre]
        boxes, scores = [], []
        for i in order:
            box = decode(level_deltas[i], level_anchors[i], (1, 1, 1, 1), math.log(1000 / 16))
            box = [min(max(box[0], 0), width), min(max(box[1], 0), height)] + [
                min(max(box[2], 0), width),
                min(max(box[3], 0), height),
            ]
            if box[2] - box[0] > min_size and box[3] - box[1] > min_size:
                boxes.append(box)
                scores.append(logits[i])
        candidates += [(scores[k], boxes[k]) for k in greedy_nms(boxes, scores, nms_iou)]
    candidates.sort(key=lambda c: -c[0])
    candidates = candidates[:post]
    return np.array([c[1] for c in candidates]).reshape(-1, 4), np.array([c[0] for c in candidates])


def smooth_l1(x, beta):
    """Fast R-CNN eq. 3, with Detectron2's beta (1 in the paper; 0 is L1)."""
    x = abs(x)
    if beta == 0:
        return x
    return 0.5 * x * x / beta if x < beta else x - 0.5 * beta


def rpn_loss(logits, deltas, labels, targets, sampled, beta):
    """Binary cross-entropy on sampled anchors and smooth L1 on sampled positives, both over
    the number of sampled anchors."""
    count = max(1, int(np.sum(sampled)))
    classification = regression = 0.0
    for b, a in zip(*np.nonzero(sampled), strict=True):
        p = 1 / (1 + math.exp(-logits[b, a]))
        classification -= math.log(p) if labels[b, a] == 1 else math.log(1 - p)
        if labels[b, a] == 1:
            regression += sum(smooth_l1(deltas[b, a, j] - targets[b, a, j], beta) for j in range(4))
    return classification / count, regression / count


def fast_rcnn_loss(logits, deltas, classes, targets, valid, beta):
    """Softmax cross-entropy over valid RoIs and smooth L1 on the class-specific deltas of the
    foreground ones (class c uses slot c - 1), both over the number of valid RoIs."""
    count = max(1, int(np.sum(valid)))
    classification = regression = 0.0
    for b, r in zip(*np.nonzero(valid), strict=True):
        row = logits[b, r]
        log_normaliser = math.log(sum(math.exp(v) for v in row))
        classification += log_normaliser - row[classes[b, r]]
        if classes[b, r] > 0:
            predicted = deltas[b, r, classes[b, r] - 1]
            regression += sum(smooth_l1(predicted[j] - targets[b, r, j], beta) for j in range(4))
    return classification / count, regression / count
