"""OverFeat's convolutional evaluation against literally cropping and classifying every window.

A LeNet-5 classifier of 32x32 windows (max pooling, so every layer is "valid" and its total
stride is 4) scores every window of one larger image at stride 4 in two ways:

- `sliding`: `kcnn.detection.sliding_window_scores`, each window cropped and classified on its
  own (batched, as a user would).
- `convolutional`: `kcnn.detection.fully_convolutional_classifier`, the same weights with the
  dense head as convolutions, one pass over the whole image.

Both call the Keras models eagerly, as a user would, and are checked equal before timing;
each time is the best of `--repeats` rounds in the same process.

    python bench/bench_sliding_windows.py [--sizes 64 128 256 512] [--repeats 5]
"""

import argparse
import importlib
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
importlib.import_module("kcnn")  # before TensorFlow: its CPU set-up (oneDNN, BFC allocator)

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from kcnn.detection import (  # noqa: E402
    fully_convolutional_classifier,
    sliding_window_scores,
    window_stride,
)
from kcnn.models.classic import LeNet5  # noqa: E402


def best_seconds(function, repeats):
    function()  # trace outside the timing
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256, 512])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()

    classifier = LeNet5((32, 32, 1), num_classes=10, pooling="max")
    dense = fully_convolutional_classifier(classifier)
    stride = window_stride(classifier)
    machine = platform.processor() or platform.machine()
    print(f"# {machine}, {os.cpu_count()} CPUs, TF {tf.__version__}")
    print(f"# LeNet-5 windows 32x32, stride {stride}")
    print("| image | windows | sliding (ms) | convolutional (ms) | speed-up |")
    print("| --- | --- | --- | --- | --- |")
    rng = np.random.default_rng(0)
    for size in args.sizes:
        image = rng.random((size, size, 1), dtype=np.float32)
        literal = sliding_window_scores(classifier, image, 32, stride, args.batch_size)
        np.testing.assert_allclose(dense(image[None])[0], literal, atol=1e-5)
        sliding = best_seconds(
            lambda image=image: sliding_window_scores(
                classifier, image, 32, stride, args.batch_size
            ),
            args.repeats,
        )
        convolutional = best_seconds(lambda image=image: dense(image[None]).numpy(), args.repeats)
        print(
            f"| {size}x{size} | {literal.shape[0] * literal.shape[1]:,} | {sliding * 1e3:.1f} | "
            f"{convolutional * 1e3:.2f} | {sliding / convolutional:.1f}x |"
        )


if __name__ == "__main__":
    main()
