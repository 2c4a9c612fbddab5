"""SegNet pooling pair: kcnn's MaxPoolingWithArgmax2D + MaxUnpooling2D against two baselines.

- `keras`: `keras.layers.MaxPooling2D` + `keras.layers.UpSampling2D` (the same data movement
  without remembering positions; target: kcnn <= 1.5x this).
- `tfa-style`: `tf.nn.max_pool_with_argmax` + `tf.scatter_nd`, the tensorflow-addons
  formulation written inline here (target: kcnn faster). It has no XLA kernel, so it only runs
  in the graph rows.

Each variant runs as a `tf.function` (graph) and with `jit_compile=True` (XLA) in the same
process, interleaved, best of `--repeats` rounds of `--steps` steps. "forward+backward" is the
gradient of a weighted sum of the output with respect to the input.

    python bench/bench_argmax_pooling.py [--shape 16 128 128 64] [--repeats 5]
"""

import argparse
import importlib
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
importlib.import_module("kcnn")  # before TensorFlow: its CPU set-up (oneDNN, BFC allocator)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from kcnn.layers import MaxPoolingWithArgmax2D, MaxUnpooling2D  # noqa: E402

ARGMAX_POOL, UNPOOL = MaxPoolingWithArgmax2D(), MaxUnpooling2D()
MAX_POOL, UP_SAMPLE = keras.layers.MaxPooling2D(), keras.layers.UpSampling2D()


def kcnn_pair(x):
    pooled, indices = ARGMAX_POOL(x)
    return UNPOOL([pooled, indices])


def keras_pair(x):
    return UP_SAMPLE(MAX_POOL(x))


def tfa_style_pair(x):
    pooled, indices = tf.nn.max_pool_with_argmax(
        x, 2, 2, "VALID", output_dtype=tf.int64, include_batch_in_index=False
    )
    batch = tf.shape(x, out_type=tf.int64)[0]
    per_image = tf.size(x[0], out_type=tf.int64)
    image = tf.broadcast_to(tf.range(batch)[:, None, None, None], tf.shape(indices, tf.int64))
    positions = tf.stack([tf.reshape(image, [-1]), tf.reshape(indices, [-1])], axis=1)
    flat = tf.scatter_nd(positions, tf.reshape(pooled, [-1]), tf.stack([batch, per_image]))
    return tf.reshape(flat, tf.shape(x))


def make_step(pair, x, weights, backward, jit_compile):
    @tf.function(jit_compile=jit_compile)
    def step():
        if not backward:
            return tf.reduce_sum(pair(x) * weights)
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(pair(x) * weights)
        # Returning the loss too keeps graph pruning from dropping forward work the
        # gradient alone does not need.
        return loss + tf.reduce_sum(tape.gradient(loss, x))

    return step


def seconds_per_step(step, steps):
    step().numpy()  # trace and compile outside the timing
    start = time.perf_counter()
    for _ in range(steps):
        result = step()
    result.numpy()
    return (time.perf_counter() - start) / steps


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=4, default=[16, 128, 128, 64])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5)
    arguments = parser.parse_args()
    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal(arguments.shape), tf.float32)
    weights = tf.constant(rng.standard_normal(arguments.shape), tf.float32)
    print(f"input {tuple(arguments.shape)}, {platform.machine()}, TF {tf.__version__}")

    pairs = {"kcnn": kcnn_pair, "keras": keras_pair, "tfa-style": tfa_style_pair}
    np.testing.assert_allclose(kcnn_pair(x), tfa_style_pair(x), atol=0)  # same result
    for backward in (False, True):
        for jit_compile in (False, True):
            names = [n for n in pairs if not (jit_compile and n == "tfa-style")]
            steps = {n: make_step(pairs[n], x, weights, backward, jit_compile) for n in names}
            best = {n: float("inf") for n in names}
            for _ in range(arguments.repeats):
                for name in names:
                    best[name] = min(best[name], seconds_per_step(steps[name], arguments.steps))
            mode = "forward+backward" if backward else "forward"
            runtime = "XLA" if jit_compile else "graph"
            line = ", ".join(f"{n} {best[n] * 1e3:7.2f} ms" for n in names)
            ratios = ", ".join(f"kcnn/{n} {best['kcnn'] / best[n]:.2f}" for n in names[1:])
            print(f"{mode:16s} {runtime:5s}: {line} | {ratios}")


if __name__ == "__main__":
    main()
