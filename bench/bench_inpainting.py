"""Inpainting quality on held-out photos: PConvUNet against a plain-conv U-Net and classics.

Every method fills the same holes of the same crops: crops of the test photos of
`kcnn.data.PHOTO_SOURCES` (never seen in training), each with one fixed, seeded irregular mask
per hole-area bucket (0-10%, ..., 50-60%). Scores are those of `kcnn.tasks.inpainting`:
PSNR and TensorFlow's SSIM of the composited result (known pixels kept) and the mean absolute
error in the holes (hole L1, 0-1 scale), averaged per bucket. Rows:

- the trained models of the run folders given (`kcnn train configs/inpaint_pconv.yaml` and
  `configs/inpaint_conv_baseline.yaml`),
- `skimage.restoration.inpaint_biharmonic` (channel by channel),
- OpenCV's `cv2.inpaint` with Telea's method (radius 3), when `cv2` imports
  (`pip install opencv-python-headless`),
- the mean of the known pixels of each image (a floor every method should clear).

    python bench/bench_inpainting.py runs/inpaint_pconv runs/inpaint_conv_baseline
"""

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import skimage.restoration  # noqa: E402

from kcnn.data import AREA_BUCKETS, irregular_masks, load_photos  # noqa: E402
from kcnn.tasks.inpainting import composite, inpainting_scores  # noqa: E402
from kcnn.training import load_run  # noqa: E402

# Other seeds than the training data's, so test crops and masks are drawn for this run only.
CROP_SEED = 2026
MASK_SEED = 1122
SCORES = ("psnr", "ssim", "hole_l1")


def held_out_set(image_size, crops_per_photo):
    """Test crops, each repeated once per bucket, with its bucket's mask.

    Returns:
        `(images, masks, bucket)`: uint8 `(N * B, H, W, 3)`, uint8 `(N * B, H, W, 1)` and the
        bucket index of each row.
    """
    crops = load_photos(image_size, crops_per_photo, split="test", seed=CROP_SEED)
    images, masks, bucket = [], [], []
    for index, area_range in enumerate(AREA_BUCKETS):
        masks.append(irregular_masks(len(crops), image_size, area_range, seed=MASK_SEED + index))
        images.append(crops)
        bucket.append(np.full(len(crops), index))
    return np.concatenate(images), np.concatenate(masks), np.concatenate(bucket)


def model_method(run_dir):
    config, model = load_run(run_dir)

    def inpaint(images, masks):
        mask = masks.astype(np.float32)
        output = model.predict(
            [images.astype(np.float32) / 255.0 * mask, mask], batch_size=64, verbose=0
        )
        return np.clip(output, 0.0, 1.0)

    return f"kcnn {config.model.name} ({Path(run_dir).name})", inpaint


def biharmonic(images, masks):
    results = []
    for image, mask in zip(images, masks, strict=True):
        results.append(
            skimage.restoration.inpaint_biharmonic(
                image.astype(np.float64) / 255.0, mask[..., 0] == 0, channel_axis=-1
            )
        )
    return np.stack(results)


def telea(images, masks):
    import cv2

    return (
        np.stack(
            [
                cv2.inpaint(image, (mask[..., 0] == 0).astype(np.uint8), 3, cv2.INPAINT_TELEA)
                for image, mask in zip(images, masks, strict=True)
            ]
        ).astype(np.float64)
        / 255.0
    )


def known_mean(images, masks):
    mask = masks.astype(np.float64)
    means = (images * mask).sum(axis=(1, 2)) / np.maximum(mask.sum(axis=(1, 2)), 1)
    return np.broadcast_to(means[:, None, None, :], images.shape) / 255.0


def methods(run_dirs):
    found = [model_method(run_dir) for run_dir in run_dirs]
    found.append(("skimage inpaint_biharmonic", biharmonic))
    try:
        import cv2  # noqa: F401

        found.append(("OpenCV cv2.inpaint (Telea, radius 3)", telea))
    except ImportError:
        print("OpenCV is not installed: the Telea row is left out")
    found.append(("mean of the known pixels", known_mean))
    return found


def evaluate(run_dirs, crops_per_photo, image_size=None):
    if image_size is None:
        config, _ = load_run(run_dirs[0])
        image_size = config.data.image_size
    images, masks, bucket = held_out_set(image_size, crops_per_photo)
    truth = images.astype(np.float64) / 255.0
    results = {}
    for name, inpaint in methods(run_dirs):
        start = time.perf_counter()
        output = inpaint(images, masks)
        seconds = time.perf_counter() - start
        scores = inpainting_scores(truth, composite(truth, output, masks.astype(np.float64)), masks)
        results[name] = {
            "seconds_per_image": seconds / len(images),
            "buckets": {
                f"{int(low * 100)}-{int(high * 100)}%": {
                    key: float(np.mean(scores[key][bucket == index])) for key in SCORES
                }
                for index, (low, high) in enumerate(AREA_BUCKETS)
            },
        }
    return {"image_size": image_size, "images_per_bucket": int(len(images) // 6), **results}


def print_table(results):
    buckets = [f"{int(low * 100)}-{int(high * 100)}%" for low, high in AREA_BUCKETS]
    names = [key for key in results if isinstance(results[key], dict)]
    print(
        f"{results['images_per_bucket']} held-out {results['image_size']}x"
        f"{results['image_size']} crops per bucket; PSNR dB / SSIM / hole L1"
    )
    print("| method | " + " | ".join(buckets) + " | ms per image |")
    print("| --- |" + " --- |" * (len(buckets) + 1))
    best = {b: max(results[n]["buckets"][b]["psnr"] for n in names) for b in buckets}
    for name in names:
        cells = []
        for b in buckets:
            s = results[name]["buckets"][b]
            psnr = f"{s['psnr']:.2f}"
            if s["psnr"] == best[b]:
                psnr = f"**{psnr}**"
            cells.append(f"{psnr} / {s['ssim']:.3f} / {s['hole_l1']:.4f}")
        milliseconds = 1000 * results[name]["seconds_per_image"]
        print(f"| {name} | " + " | ".join(cells) + f" | {milliseconds:.1f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="run folders of trained inpainting models")
    parser.add_argument("--crops-per-photo", type=int, default=24)
    parser.add_argument("--json", help="also write the results to this JSON file")
    arguments = parser.parse_args()
    results = evaluate(arguments.runs, arguments.crops_per_photo)
    print_table(results)
    if arguments.json:
        Path(arguments.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
