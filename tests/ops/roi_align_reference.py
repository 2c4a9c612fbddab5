"""NumPy float64 reference of RoIAlign: a direct loop over boxes, bins and sample points
(He et al. 2017, arXiv:1703.06870, section 3), with the box convention, half-pixel offset and
boundary rules of torchvision's `roi_align` kernel, written from that definition and not from
kcnn's code; and FPN's level formula (Lin et al. 2017, arXiv:1612.03144, eq. 1) as written.
"""

import math

import numpy as np


def bilinear(image, y, x):
    """`image` (H, W, C) at (y, x) by torchvision's rules: 0 outside [-1, H] x [-1, W],
    coordinates below 0 raised to 0, the last row / column read alone at or past it."""
    height, width, _ = image.shape
    if not (-1.0 <= y <= height and -1.0 <= x <= width):
        return np.zeros(image.shape[2])
    y, x = max(y, 0.0), max(x, 0.0)
    y_low, x_low = int(y), int(x)
    if y_low >= height - 1:
        y_low = y_high = height - 1
        y = float(y_low)
    else:
        y_high = y_low + 1
    if x_low >= width - 1:
        x_low = x_high = width - 1
        x = float(x_low)
    else:
        x_high = x_low + 1
    ly, lx = y - y_low, x - x_low
    return (
        (1 - ly) * (1 - lx) * image[y_low, x_low]
        + (1 - ly) * lx * image[y_low, x_high]
        + ly * (1 - lx) * image[y_high, x_low]
        + ly * lx * image[y_high, x_high]
    )


def roi_align(features, boxes, box_indices, output_size, spatial_scale, sampling_ratio, aligned):
    """features (N, H, W, C), boxes (K, 4) as (x1, y1, x2, y2); returns (K, oh, ow, C)."""
    features = np.asarray(features, np.float64)
    boxes = np.asarray(boxes, np.float64)
    out_h, out_w = output_size
    offset = 0.5 if aligned else 0.0
    pooled = np.zeros((len(boxes), out_h, out_w, features.shape[3]))
    for k, (x1, y1, x2, y2) in enumerate(boxes):
        image = features[box_indices[k]]
        start_x, start_y = x1 * spatial_scale - offset, y1 * spatial_scale - offset
        box_w = x2 * spatial_scale - offset - start_x
        box_h = y2 * spatial_scale - offset - start_y
        if not aligned:
            box_w, box_h = max(box_w, 1.0), max(box_h, 1.0)
        bin_h, bin_w = box_h / out_h, box_w / out_w
        for i in range(out_h):
            for j in range(out_w):
                total = np.zeros(features.shape[3])
                for a in range(sampling_ratio):
                    y = start_y + (i + (a + 0.5) / sampling_ratio) * bin_h
                    for b in range(sampling_ratio):
                        x = start_x + (j + (b + 0.5) / sampling_ratio) * bin_w
                        total += bilinear(image, y, x)
                pooled[k, i, j] = total / sampling_ratio**2
    return pooled


def pyramid_level(box, levels, canonical_size=224.0, canonical_level=4):
    """FPN eq. 1 in exact arithmetic (Python floats), clamped to the levels given."""
    x1, y1, x2, y2 = (float(v) for v in box)
    area = (x2 - x1) * (y2 - y1)
    if area <= 0:
        return levels[0]
    level = math.floor(canonical_level + math.log2(math.sqrt(area) / canonical_size))
    return min(max(level, levels[0]), levels[-1])
