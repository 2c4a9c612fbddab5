"""Inpainting quality on held-out images: kcnn's models against the classical fills.

Every method fills the same holes of the same images. `--data photos` (the default): crops of
the test photos of `load_photos(collection="all")` (never seen in training), each with one
fixed, seeded irregular mask per hole-area bucket (0-10%, ..., 50-60%). `--data
fashion_holes`: the test items of the `fashion_holes` data set with its fixed masks (30-40%,
40-50%, 50-60%). Scores are those of `kcnn.tasks.inpainting`: PSNR and TensorFlow's SSIM of
the composited result (known pixels kept) and the mean absolute error in the holes (hole L1,
0-1 scale), averaged per bucket. Rows:

- the trained models of the run folders given (e.g. `kcnn train configs/inpaint_pconv.yaml`,
  `configs/inpaint_conv_baseline.yaml`, `configs/inpaint_fill_residual.yaml`),
- their `model_int8.tflite` and `model_int16x8.tflite` files run in LiteRT, where the run has
  them (`kcnn export RUN --quantization int8 int16x8`), for the PSNR drop per bucket,
- kcnn's `SmoothFill2D` alone (the untrained fill that `FillResidualUNet` refines), with
  its default sweeps and with 6 multigrid conjugate-gradient steps after them, and the
  harmonic (Laplace) fill, `order=1`, with the same steps,
- `skimage.restoration.inpaint_biharmonic` (channel by channel),
- OpenCV's `cv2.inpaint` with Telea's method (radius 3), when `cv2` imports
  (`pip install opencv-python-headless`),
- the mean of the known pixels of each image (a floor every method should clear).

    python bench/bench_inpainting.py runs/inpaint_pconv runs/inpaint_conv_baseline
    python bench/bench_inpainting.py --image-size 128 runs/inpaint_fill_residual_128
    python bench/bench_inpainting.py --data fashion_holes runs/inpaint_fashion
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

from kcnn.data import (  # noqa: E402
    AREA_BUCKETS,
    irregular_masks,
    load_inpainting_data,
    load_photos,
)
from kcnn.export import LiteRTRunner  # noqa: E402
from kcnn.ops import smooth_fill  # noqa: E402
from kcnn.tasks.inpainting import area_bucket_names, composite, inpainting_scores  # noqa: E402
from kcnn.training import load_run  # noqa: E402

# Other seeds than the training data's, so test crops and masks are drawn for this run only.
CROP_SEED = 2026
MASK_SEED = 1122
SCORES = ("psnr", "ssim", "hole_l1")


def held_out_set(image_size, crops_per_photo, collection="all"):
    """Test crops, each repeated once per bucket, with its bucket's mask.

    Returns:
        `(images, masks, bucket)`: uint8 `(N * B, H, W, 3)`, uint8 `(N * B, H, W, 1)` and the
        bucket index of each row.
    """
    crops = load_photos(
        image_size, crops_per_photo, split="test", seed=CROP_SEED, collection=collection
    )
    images, masks, bucket = [], [], []
    for index, area_range in enumerate(AREA_BUCKETS):
        masks.append(irregular_masks(len(crops), image_size, area_range, seed=MASK_SEED + index))
        images.append(crops)
        bucket.append(np.full(len(crops), index))
    return np.concatenate(images), np.concatenate(masks), np.concatenate(bucket)


def fashion_held_out_set():
    """The `fashion_holes` test items with their fixed masks, and each one's bucket index."""
    data = load_inpainting_data("fashion_holes", train_size=1, mask_pool_size=1)
    names = area_bucket_names(data.y_test)
    order = sorted(set(names), key=lambda name: int(name.split("-")[0]))
    return data.x_test, data.y_test, np.array([order.index(name) for name in names]), order


def model_method(run_dir):
    config, model = load_run(run_dir)

    def inpaint(images, masks):
        mask = masks.astype(np.float32)
        output = model.predict(
            [images.astype(np.float32) / 255.0 * mask, mask], batch_size=64, verbose=0
        )
        return np.clip(output, 0.0, 1.0)

    return f"kcnn {config.model.name} ({Path(run_dir).name})", inpaint


def integer_method(run_dir, quantization="int8"):
    """The run's `model_int8.tflite` or `model_int16x8.tflite` (`kcnn export RUN
    --quantization int8 int16x8`) in LiteRT, or None when the run has none."""
    path = Path(run_dir) / f"model_{quantization}.tflite"
    if not path.exists():
        return None
    config, model = load_run(run_dir)
    runner = LiteRTRunner(path, num_threads=2)
    names = [tensor.name for tensor in model.inputs]

    def inpaint(images, masks):
        mask = masks.astype(np.float32)
        inputs = [images.astype(np.float32) / 255.0 * mask, mask]
        output = runner(dict(zip(names, inputs, strict=True)))
        return np.clip(output, 0.0, 1.0)

    return f"kcnn {config.model.name} ({Path(run_dir).name}), {quantization} LiteRT", inpaint


def kcnn_fill(images, masks, cg_iterations=0, order=2):
    mask = masks.astype(np.float32)
    filled = [
        np.asarray(
            smooth_fill(
                images[i : i + 64].astype(np.float32) / 255.0,
                mask[i : i + 64],
                cg_iterations=cg_iterations,
                order=order,
            )
        )
        for i in range(0, len(images), 64)
    ]
    return np.concatenate(filled)


def kcnn_fill_cg(images, masks):
    return kcnn_fill(images, masks, cg_iterations=6)


def kcnn_fill_harmonic(images, masks):
    return kcnn_fill(images, masks, cg_iterations=6, order=1)


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
    found = []
    for run_dir in run_dirs:
        found.append(model_method(run_dir))
        for quantization in ("int8", "int16x8"):
            integer = integer_method(run_dir, quantization)
            if integer is not None:
                found.append(integer)
    found.append(("kcnn SmoothFill2D alone (no training)", kcnn_fill))
    found.append(("kcnn SmoothFill2D, 6 multigrid CG steps (no training)", kcnn_fill_cg))
    found.append(("kcnn SmoothFill2D(order=1), harmonic, 6 CG steps", kcnn_fill_harmonic))
    found.append(("skimage inpaint_biharmonic", biharmonic))
    try:
        import cv2  # noqa: F401

        found.append(("OpenCV cv2.inpaint (Telea, radius 3)", telea))
    except ImportError:
        print("OpenCV is not installed: the Telea row is left out")
    found.append(("mean of the known pixels", known_mean))
    return found


def evaluate(run_dirs, crops_per_photo, image_size=None, data="photos"):
    if data == "fashion_holes":
        images, masks, bucket, buckets = fashion_held_out_set()
        image_size = images.shape[1]
    else:
        if image_size is None:
            if not run_dirs:
                raise ValueError("Give `--image-size` or at least one run folder.")
            config, _ = load_run(run_dirs[0])
            image_size = config.data.image_size
        images, masks, bucket = held_out_set(image_size, crops_per_photo)
        buckets = [f"{int(low * 100)}-{int(high * 100)}%" for low, high in AREA_BUCKETS]
    truth = images.astype(np.float64) / 255.0
    results = {}
    for name, inpaint in methods(run_dirs):
        start = time.perf_counter()
        output = inpaint(images, masks).reshape(images.shape)
        seconds = time.perf_counter() - start
        scores = inpainting_scores(truth, composite(truth, output, masks.astype(np.float64)), masks)
        results[name] = {
            "seconds_per_image": seconds / len(images),
            "buckets": {
                name: {key: float(np.mean(scores[key][bucket == index])) for key in SCORES}
                for index, name in enumerate(buckets)
            },
        }
    return {
        "data": data,
        "image_size": image_size,
        "images_per_bucket": int(len(images) // len(buckets)),
        **results,
    }


def print_table(results):
    names = [key for key in results if isinstance(results[key], dict)]
    buckets = list(results[names[0]]["buckets"])
    print(
        f"{results['data']}: {results['images_per_bucket']} held-out {results['image_size']}x"
        f"{results['image_size']} images per bucket; PSNR dB / SSIM / hole L1"
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
    parser.add_argument("runs", nargs="*", help="run folders of trained inpainting models")
    parser.add_argument("--data", choices=("photos", "fashion_holes"), default="photos")
    parser.add_argument(
        "--image-size", type=int, help="photo crop side (default: the first run's config)"
    )
    parser.add_argument("--crops-per-photo", type=int, default=24)
    parser.add_argument("--json", help="also write the results to this JSON file")
    arguments = parser.parse_args()
    results = evaluate(
        arguments.runs, arguments.crops_per_photo, arguments.image_size, arguments.data
    )
    print_table(results)
    if arguments.json:
        Path(arguments.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
