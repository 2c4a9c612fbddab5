"""COCO instance masks: run-length encoding and the three segmentation formats, through
pycocotools' mask API.

COCO stores an object's mask as polygons (`[[x1, y1, x2, y2, ...], ...]` in pixels),
uncompressed RLE (`{"size": [H, W], "counts": [run, run, ...]}`, runs of 0s and 1s in
column-major order, starting with 0s) or compressed RLE (`counts` a str, for crowds and
results files); see https://cocodataset.org/#format-data.
"""

import numpy as np


def encode_mask(mask):
    """COCO's compressed run-length encoding of a binary mask (pycocotools' `mask.encode`),
    with `counts` as str so that the dict is JSON.

    Args:
        mask: array `(H, W)`; nonzero is inside.

    Returns:
        `{"size": [H, W], "counts": str}`.

    Example:
    >>> rle = encode_mask(np.eye(3))
    >>> rle["size"], decode_mask(rle).tolist() == np.eye(3).tolist()
    ([3, 3], True)
    """
    from pycocotools import mask as mask_utils

    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"`mask` must have shape (H, W). Received: mask.shape={mask.shape}")
    rle = mask_utils.encode(np.asfortranarray(mask != 0, dtype=np.uint8))
    return {"size": [int(size) for size in rle["size"]], "counts": rle["counts"].decode("ascii")}


def decode_mask(segmentation, height=None, width=None):
    """The binary uint8 mask `(H, W)` of a COCO segmentation: polygons (a list of
    `[x1, y1, x2, y2, ...]`, which need `height` and `width`), uncompressed RLE (`counts` a
    list) or compressed RLE (`counts` a str), decoded by pycocotools' mask API as
    `COCO.annToMask` does.

    Raises:
        ValueError: if `segmentation` is none of these, or polygons come without a size.
    """
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, list):
        if height is None or width is None:
            raise ValueError("Polygon segmentations need the image's `height` and `width`.")
        polygons = [
            [float(value) for value in polygon]
            for polygon in segmentation
            if isinstance(polygon, list | tuple) and len(polygon) >= 6
        ]
        if not polygons or len(polygons) != len(segmentation):
            raise ValueError(
                "A polygon segmentation must be a list of [x1, y1, x2, y2, ...] lists of at "
                f"least 3 points. Received: {str(segmentation)[:200]}"
            )
        rle = mask_utils.merge(mask_utils.frPyObjects(polygons, int(height), int(width)))
    elif isinstance(segmentation, dict) and {"size", "counts"} <= set(segmentation):
        size = segmentation["size"]
        if isinstance(segmentation["counts"], list):
            rle = mask_utils.frPyObjects(segmentation, int(size[0]), int(size[1]))
        else:
            counts = segmentation["counts"]
            rle = {
                "size": list(size),
                "counts": counts.encode("ascii") if isinstance(counts, str) else counts,
            }
    else:
        raise ValueError(
            "A segmentation must be polygons or an RLE dict with 'size' and 'counts'. "
            f"Received: {str(segmentation)[:200]}"
        )
    return mask_utils.decode(rle).astype(np.uint8)
