"""Input pipeline throughput: kcnn.data.make_dataset against a hand-written tf.data baseline.

Both iterate one epoch of Fashion-MNIST (or digits, tiled to 60k, when it is not installed)
in batches of 128 with seeded shuffling and random horizontal flips, as `configs/default.yaml`
trains. The baseline is the usual per-image `map` before `batch`; kcnn augments whole batches.
A ratio kcnn / baseline below 1 means kcnn is faster: the pipeline must not be what slows
training down on a 2-core machine, where it competes with the model for the same cores.

    python bench/bench_input_pipeline.py [--repeats 3]
"""

import argparse
import importlib
import platform
import time

importlib.import_module("kcnn")  # before TensorFlow: its CPU set-up (oneDNN, BFC allocator)

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from kcnn import data  # noqa: E402


def baseline_dataset(images, labels, batch_size, seed):
    """The tf.data pipeline one would write by hand (the baseline)."""

    def prepare(image, label):
        image = tf.cast(image, tf.float32) / 255.0
        return tf.image.random_flip_left_right(image, seed=seed), label

    dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    dataset = dataset.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.map(prepare, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size)
    return dataset.prefetch(tf.data.AUTOTUNE)


def epoch_seconds(dataset):
    started = time.perf_counter()
    batches = 0
    for _ in dataset:
        batches += 1
    return time.perf_counter() - started, batches


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    arguments = parser.parse_args()
    try:
        (images, labels), _ = data.load_fashion_mnist()
        name = "fashion_mnist"
    except FileNotFoundError:
        (images, labels), _ = data.load_digits()
        images, labels = np.resize(images, (60000, 8, 8, 1)), np.resize(labels, 60000)
        name = "digits (tiled)"
    print(f"{name}: {images.shape}, batch {arguments.batch_size}, {platform.processor()}")
    results = {"kcnn": [], "baseline": []}
    for _ in range(arguments.repeats):  # interleaved, so both see the same machine state
        kcnn_data = data.make_dataset(
            images, labels, batch_size=arguments.batch_size, shuffle=True, augment="flip"
        )
        results["kcnn"].append(epoch_seconds(kcnn_data)[0])
        baseline = baseline_dataset(images, labels, arguments.batch_size, seed=0)
        results["baseline"].append(epoch_seconds(baseline)[0])
    kcnn_best, baseline_best = min(results["kcnn"]), min(results["baseline"])
    print(f"kcnn.data.make_dataset   {kcnn_best:7.3f} s/epoch (best of {arguments.repeats})")
    print(f"hand-written tf.data     {baseline_best:7.3f} s/epoch (best of {arguments.repeats})")
    print(f"ratio kcnn / baseline    {kcnn_best / baseline_best:7.2f}")


if __name__ == "__main__":
    main()
