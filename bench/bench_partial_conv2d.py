"""Forward + backward time of `PartialConv2D` against `keras.layers.Conv2D` of the same shape.

Gradients are taken for the weights and the image input. Both layers run as `tf.function`s
(graph and XLA `jit_compile=True` variants) in the same process, interleaved, and each time
reported is the best of `--repeats` rounds of `--steps` steps. The ratio
`PartialConv2D / Conv2D` is the number to watch; the target is <= 1.5.

    python bench/bench_partial_conv2d.py --repeats 5
"""

import argparse
import importlib
import os
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
importlib.import_module("kcnn")  # before TensorFlow: its CPU set-up (oneDNN, BFC allocator)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from kcnn.layers import PartialConv2D  # noqa: E402

TARGET_RATIO = 1.5


def training_step(layer, inputs, image, jit_compile):
    """A compiled function computing the layer's output and the gradients of its sum.

    Gradients are taken for the weights and for the image input, as in a layer inside a
    network (the mask needs none).
    """

    @tf.function(jit_compile=jit_compile)
    def step():
        with tf.GradientTape() as tape:
            tape.watch(image)
            outputs = layer(inputs)
            if isinstance(outputs, (list, tuple)):  # (output, updated mask)
                outputs = outputs[0]
            loss = tf.reduce_sum(outputs)
        gradients = tape.gradient(loss, [image, *layer.trainable_variables])
        # Returning the loss too keeps graph pruning from dropping the forward convolution,
        # which the gradients of a linear layer do not need.
        return [loss, *gradients]

    return step


def time_steps(step, steps):
    start = time.perf_counter()
    for _ in range(steps):
        gradients = step()
    # Gradients come back as eager tensors; reading one waits for the whole step.
    gradients[0].numpy()
    return (time.perf_counter() - start) / steps


def benchmark(
    batch, size, channels, filters, kernel_size, repeats, steps, hole_fraction, mask_channels=1
):
    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal((batch, size, size, channels)), tf.float32)
    mask_shape = (batch, size, size, mask_channels)
    mask = tf.constant(rng.random(mask_shape) > hole_fraction, tf.float32)
    partial = PartialConv2D(filters, kernel_size, multi_channel=mask_channels > 1)
    conv = keras.layers.Conv2D(filters, kernel_size, padding="same")
    results = {}
    for jit_compile in (False, True):
        steps_by_name = {
            "PartialConv2D": training_step(partial, [x, mask], x, jit_compile),
            "Conv2D": training_step(conv, x, x, jit_compile),
        }
        best = {name: float("inf") for name in steps_by_name}
        for step in steps_by_name.values():
            step()  # trace and compile outside the timed rounds
        for _ in range(repeats):
            for name, step in steps_by_name.items():
                best[name] = min(best[name], time_steps(step, steps))
        results[jit_compile] = best
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--filters", type=int, default=64)
    parser.add_argument("--kernel-size", type=int, default=3)
    parser.add_argument("--hole-fraction", type=float, default=0.3)
    parser.add_argument(
        "--mask-channels",
        type=int,
        default=1,
        help="1: one mask for all channels; the input's channel count: a mask per channel",
    )
    parser.add_argument("--repeats", type=int, default=5, help="best of this many rounds")
    parser.add_argument("--steps", type=int, default=10, help="steps timed per round")
    args = parser.parse_args(argv)
    print(
        f"forward+backward, batch {args.batch}, {args.size}x{args.size}, "
        f"{args.channels}->{args.filters}, {args.kernel_size}x{args.kernel_size}, "
        f"{args.mask_channels}-channel mask with {args.hole_fraction:.0%} holes, "
        f"best of {args.repeats} x {args.steps} steps"
    )
    results = benchmark(
        args.batch,
        args.size,
        args.channels,
        args.filters,
        args.kernel_size,
        args.repeats,
        args.steps,
        args.hole_fraction,
        args.mask_channels,
    )
    for jit_compile, best in results.items():
        label = "tf.function(jit_compile=True)" if jit_compile else "tf.function"
        ratio = best["PartialConv2D"] / best["Conv2D"]
        verdict = "ok" if ratio <= TARGET_RATIO else f"above target {TARGET_RATIO}"
        print(
            f"{label:30s} PartialConv2D {best['PartialConv2D'] * 1e3:8.2f} ms  "
            f"Conv2D {best['Conv2D'] * 1e3:8.2f} ms  "
            f"PartialConv2D / Conv2D = {ratio:.2f} ({verdict})"
        )


if __name__ == "__main__":
    main()
