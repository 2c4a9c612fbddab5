"""FFT convolution (`kcnn.ops.fft_conv2d`) against `keras.layers.Conv2D`, by kernel size.

For each shape (B, H, W, C_in -> C_out) and each square kernel size k, one
`keras.layers.Conv2D(C_out, k, padding="same")` is built, and `fft_conv2d` runs with the
same kernel and bias, so both compute the same output (checked before timing). Both run as
graph `tf.function`s; "forward" returns the output, "forward+backward" the loss and the
gradients for the input, kernel and bias. Each time is the median of `--repeats` rounds of
`--steps` steps, the two implementations interleaved. The table gives both times, the ratio
Conv2D / FFT (above 1: FFT is faster), and the crossover: the smallest kernel size from which
FFT is faster at every larger size measured.

    python bench/bench_fft_conv.py --repeats 3 --steps 3
"""

import argparse
import importlib
import os
import statistics
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
importlib.import_module("kcnn")  # before TensorFlow: its CPU set-up (oneDNN, BFC allocator)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from kcnn.ops import fft_conv2d  # noqa: E402
from kcnn.ops.fft_conv import fast_fft_length  # noqa: E402

KERNEL_SIZES = (3, 5, 7, 9, 11, 15, 19, 23, 27, 31)
SHAPES = ("8x64x64x16x16",)


def parse_shape(text):
    """Reads "8x64x64x16x16" as (batch, height, width, channels, filters)."""
    values = tuple(int(part) for part in text.lower().split("x"))
    if len(values) != 5 or min(values) < 1:
        raise argparse.ArgumentTypeError(
            f"a shape is BxHxWxC_INxC_OUT of positive ints. Received: {text!r}"
        )
    return values


def compiled_steps(function, inputs, variables):
    """Graph forward and forward+backward functions of `function(inputs)`."""

    @tf.function
    def forward():
        return function(inputs)

    @tf.function
    def forward_backward():
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            outputs = function(inputs)
            loss = tf.reduce_sum(outputs * outputs)
        # The loss is returned too, so graph pruning keeps the whole forward pass.
        return [loss, *tape.gradient(loss, [inputs, *variables])]

    return forward, forward_backward


def mean_step_time(function, steps):
    start = time.perf_counter()
    for _ in range(steps):
        result = function()
    # Reading a result waits for the last step to finish.
    np.asarray(result[0] if isinstance(result, list) else result)
    return (time.perf_counter() - start) / steps


def benchmark(shape, kernel_size, repeats, steps, max_seconds):
    """Median forward and forward+backward seconds of Conv2D and FFT, the (name, pass) pairs
    timed from one step only, and the largest relative difference of the outputs."""
    batch, height, width, channels, filters = shape
    rng = np.random.default_rng(0)
    x = tf.constant(rng.standard_normal((batch, height, width, channels)), tf.float32)
    conv = keras.layers.Conv2D(filters, kernel_size, padding="same", bias_initializer="normal")
    conv.build(x.shape)
    candidates = {
        "Conv2D": compiled_steps(conv, x, conv.trainable_variables),
        "FFT": compiled_steps(
            lambda inputs: fft_conv2d(inputs, conv.kernel, "same", bias=conv.bias),
            x,
            conv.trainable_variables,
        ),
    }
    expected = np.asarray(candidates["Conv2D"][0]())
    difference = np.max(np.abs(np.asarray(candidates["FFT"][0]()) - expected))
    difference /= np.max(np.abs(expected))
    rounds = {(name, kind): [] for name in candidates for kind in (0, 1)}
    single = set()
    for name, functions in candidates.items():
        for kind, function in enumerate(functions):
            # The first call traces; one slower than `max_seconds` is the measurement itself,
            # so a pathological kernel (Conv2D's filter gradient from k = 27 on, 30-50 s a
            # step, bench/RESULTS.md) is run once instead of 1 + repeats x steps times.
            first = mean_step_time(function, 1)
            if first > max_seconds:
                rounds[name, kind].append(first)
                single.add((name, kind))
    for _ in range(repeats):
        for name, functions in candidates.items():
            for kind, function in enumerate(functions):
                if (name, kind) not in single:
                    rounds[name, kind].append(mean_step_time(function, steps))
    medians = {key: statistics.median(times) for key, times in rounds.items()}
    return medians, single, float(difference)


def crossover(kernel_sizes, ratios):
    """The smallest kernel size from which every ratio Conv2D / FFT is above 1, or None."""
    found = None
    for kernel_size, ratio in reversed(list(zip(kernel_sizes, ratios, strict=True))):
        if ratio <= 1.0:
            break
        found = kernel_size
    return found


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--shapes", type=parse_shape, nargs="+", default=[parse_shape(s) for s in SHAPES]
    )
    parser.add_argument("--kernel-sizes", type=int, nargs="+", default=list(KERNEL_SIZES))
    parser.add_argument("--repeats", type=int, default=3, help="median of this many rounds")
    parser.add_argument("--steps", type=int, default=3, help="steps timed per round")
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=5.0,
        help="a first step slower than this is the measurement (one step, marked *)",
    )
    args = parser.parse_args(argv)
    print(
        f"'same' padding, stride 1, graph tf.function; median of {args.repeats} rounds x "
        f"{args.steps} steps (ms); TensorFlow {tf.__version__}, Keras {keras.__version__}"
    )
    for shape in args.shapes:
        print(f"\n(B, H, W, C_in -> C_out) = {shape[:4]} -> {shape[4]}")
        print(
            "   k  FFT size | fwd: Conv2D      FFT  Conv2D/FFT | fwd+bwd: Conv2D      FFT  "
            "Conv2D/FFT | max rel. diff"
        )
        ratios = {0: [], 1: []}
        for kernel_size in args.kernel_sizes:
            medians, single, difference = benchmark(
                shape, kernel_size, args.repeats, args.steps, args.max_seconds
            )
            times = {
                key: f"{value * 1e3:.2f}{'*' if key in single else ''}"
                for key, value in medians.items()
            }
            for kind in (0, 1):
                ratios[kind].append(medians["Conv2D", kind] / medians["FFT", kind])
            fft_size = f"{fast_fft_length(shape[1] + kernel_size - 1)}"
            fft_size += f"x{fast_fft_length(shape[2] + kernel_size - 1)}"
            print(
                f"  {kernel_size:2d}  {fft_size:>8s} | "
                f"{times['Conv2D', 0]:>11s} {times['FFT', 0]:>8s} {ratios[0][-1]:11.2f} | "
                f"{times['Conv2D', 1]:>15s} {times['FFT', 1]:>8s} {ratios[1][-1]:11.2f} | "
                f"{difference:.1e}",
                flush=True,
            )
        for kind, label in ((0, "forward"), (1, "forward+backward")):
            found = crossover(args.kernel_sizes, ratios[kind])
            verdict = f"FFT faster from k = {found}" if found else "FFT never faster for all"
            print(f"  crossover, {label}: {verdict}")
    print(f"\n* one step only: its first call took longer than --max-seconds={args.max_seconds}")


if __name__ == "__main__":
    main()
