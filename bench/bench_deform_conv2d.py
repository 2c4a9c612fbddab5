"""Deformable convolution (DCNv2, 3x3) against `keras.layers.Conv2D` and torchvision.

For each shape (B, H, W, C_in -> C_out) the same data runs through

- `keras.layers.Conv2D` of the same shape ("same" padding): the baseline;
- `kcnn.layers.DeformableConv2D` called on `[x, offsets, mask]`, with its sampling kernel
  XLA-compiled (the default) and not, inside a graph `tf.function`, and the whole step under
  `tf.function(jit_compile=True)`;
- `torchvision.ops.deform_conv2d` (NCHW, `padding=1`, 2 threads) when torch and torchvision
  are importable, after checking that its output and gradients agree with kcnn's.

"forward" returns the output; "forward+backward" returns the loss and the gradients for the
input, offsets, mask, kernel and bias, so no forward work is pruned. Each time is the best of
`--repeats` rounds of `--steps` steps, interleaved. Targets: kcnn forward <= 4x Conv2D (aim
3x), forward+backward <= 5x Conv2D, and >= 10x faster than torchvision forward+backward.

    python bench/bench_deform_conv2d.py --repeats 5
"""

import argparse
import importlib
import os
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# `TF_CPU_ALLOCATOR_USE_BFC=false python bench/...` times TensorFlow's malloc default.

try:  # torch before TensorFlow: the other order crashes when both run in one process
    import torch
    import torchvision  # noqa: F401
except ImportError:
    torch = None

importlib.import_module("kcnn")  # before TensorFlow: its CPU set-up (oneDNN, BFC allocator)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from kcnn.layers import DeformableConv2D  # noqa: E402

SHAPES = [(8, 32, 32, 64, 64), (4, 32, 32, 128, 128), (2, 16, 16, 256, 256)]
FORWARD_TARGET, BACKWARD_TARGET, TORCHVISION_TARGET = 4.0, 5.0, 10.0


def keras_steps(layer, inputs, jit_compile):
    """Compiled forward and forward+backward functions of a Keras layer on fixed inputs."""
    watched = inputs if isinstance(inputs, list) else [inputs]

    @tf.function(jit_compile=jit_compile)
    def forward():
        return layer(inputs)

    @tf.function(jit_compile=jit_compile)
    def forward_backward():
        with tf.GradientTape() as tape:
            tape.watch(watched)
            outputs = layer(inputs)
            loss = tf.reduce_sum(outputs * outputs)
        return [loss, *tape.gradient(loss, [*watched, *layer.trainable_variables])]

    return forward, forward_backward


def torch_steps(x, offsets, mask, kernel, bias):
    """The same computation in torchvision (NCHW / OIHW), as forward and forward+backward."""
    from torchvision.ops import deform_conv2d

    torch.set_num_threads(2)
    to_nchw = [0, 3, 1, 2]
    x_t = torch.tensor(x.transpose(to_nchw), requires_grad=True)
    offsets_t = torch.tensor(offsets.transpose(to_nchw), requires_grad=True)
    mask_t = torch.tensor(mask.transpose(to_nchw), requires_grad=True)
    kernel_t = torch.tensor(kernel.transpose(3, 2, 0, 1).copy(), requires_grad=True)
    bias_t = torch.tensor(bias, requires_grad=True)
    tensors = [x_t, offsets_t, mask_t, kernel_t, bias_t]

    def forward():
        with torch.no_grad():
            return deform_conv2d(x_t, offsets_t, kernel_t, bias_t, padding=1, mask=mask_t)

    def forward_backward():
        for tensor in tensors:
            tensor.grad = None
        outputs = deform_conv2d(x_t, offsets_t, kernel_t, bias_t, padding=1, mask=mask_t)
        loss = (outputs * outputs).sum()
        loss.backward()
        return [loss, *(tensor.grad for tensor in tensors)]

    return forward, forward_backward


def check_agreement(kcnn_forward_backward, torch_forward_backward, kcnn_output, torch_output):
    """Largest relative difference of the outputs and of each gradient (torch in NCHW)."""
    differences = {"output": _relative(kcnn_output, torch_output.numpy().transpose(0, 2, 3, 1))}
    kcnn_results = [np.asarray(value) for value in kcnn_forward_backward()]
    torch_results = [value.detach().numpy() for value in torch_forward_backward()]
    names = ["loss", "x", "offsets", "mask", "kernel", "bias"]
    layouts = [None, (0, 2, 3, 1), (0, 2, 3, 1), (0, 2, 3, 1), (2, 3, 1, 0), None]
    for name, mine, theirs, layout in zip(names, kcnn_results, torch_results, layouts, strict=True):
        differences[name] = _relative(mine, theirs if layout is None else theirs.transpose(layout))
    return differences


def _relative(actual, expected):
    return float(np.max(np.abs(actual - expected)) / max(np.max(np.abs(expected)), 1e-12))


def best_time(function, steps):
    start = time.perf_counter()
    for _ in range(steps):
        result = function()
    first = result[0] if isinstance(result, list | tuple) else result
    np.asarray(first.detach() if hasattr(first, "detach") else first)
    return (time.perf_counter() - start) / steps


def benchmark(shape, repeats, steps, with_torch):
    batch, height, width, channels, filters = shape
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, height, width, channels)).astype("float32")
    offsets = rng.standard_normal((batch, height, width, 18)).astype("float32")
    mask = rng.random((batch, height, width, 9)).astype("float32")
    conv = keras.layers.Conv2D(filters, 3, padding="same")
    conv.build(x.shape)
    deformable = DeformableConv2D(filters, 3, bias_initializer="random_normal")
    deformable.build([x.shape, offsets.shape, mask.shape])
    eager = DeformableConv2D.from_config({**deformable.get_config(), "jit_compile": False})
    eager.build([x.shape, offsets.shape, mask.shape])
    eager.set_weights(deformable.get_weights())
    tensors = [tf.constant(v) for v in (x, offsets, mask)]
    x_tensor = tensors[0]

    candidates = {
        "Conv2D graph": keras_steps(conv, x_tensor, False),
        "Conv2D XLA": keras_steps(conv, x_tensor, True),
        "kcnn graph + XLA kernel": keras_steps(deformable, tensors, False),
        "kcnn graph, no XLA": keras_steps(eager, tensors, False),
        "kcnn XLA": keras_steps(deformable, tensors, True),
    }
    agreement = None
    if with_torch:
        kernel, bias = (np.asarray(w) for w in deformable.get_weights())
        candidates["torchvision"] = torch_steps(x, offsets, mask, kernel, bias)
        kcnn_output = np.asarray(candidates["kcnn graph + XLA kernel"][0]())
        agreement = check_agreement(
            candidates["kcnn graph + XLA kernel"][1],
            candidates["torchvision"][1],
            kcnn_output,
            candidates["torchvision"][0](),
        )
    best = {(name, kind): float("inf") for name in candidates for kind in (0, 1)}
    for functions in candidates.values():
        for function in functions:
            function()  # trace and compile outside the timed rounds
    for _ in range(repeats):
        for name, functions in candidates.items():
            for kind, function in enumerate(functions):
                rounds = max(1, steps // 4) if name == "torchvision" else steps
                best[name, kind] = min(best[name, kind], best_time(function, rounds))
    return best, agreement


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="best of this many rounds")
    parser.add_argument("--steps", type=int, default=8, help="steps timed per round")
    parser.add_argument("--no-torch", action="store_true", help="skip torchvision")
    args = parser.parse_args(argv)
    with_torch = torch is not None and not args.no_torch
    if torch is None:
        print("torch/torchvision not importable: torchvision comparison skipped")
    print(
        f"3x3 DCNv2, 'same' padding, best of {args.repeats} x {args.steps} steps (ms); "
        f"TF_CPU_ALLOCATOR_USE_BFC={os.environ['TF_CPU_ALLOCATOR_USE_BFC']}, "
        f"TF_ENABLE_ONEDNN_OPTS={os.environ['TF_ENABLE_ONEDNN_OPTS']}"
    )
    for shape in SHAPES:
        best, agreement = benchmark(shape, args.repeats, args.steps, with_torch)
        print(f"\n(B, H, W, C_in -> C_out) = {shape[:4]} -> {shape[4]}")
        if agreement is not None:
            print(
                "  agreement with torchvision (max relative difference): "
                + ", ".join(f"{name} {value:.1e}" for name, value in agreement.items())
            )
        conv = {kind: best["Conv2D graph", kind] for kind in (0, 1)}
        for name in dict.fromkeys(name for name, _ in best):
            forward, forward_backward = best[name, 0], best[name, 1]
            line = (
                f"  {name:24s} forward {forward * 1e3:8.2f}  forward+backward "
                f"{forward_backward * 1e3:8.2f}   / Conv2D graph: {forward / conv[0]:5.2f} "
                f"{forward_backward / conv[1]:5.2f}"
            )
            if with_torch and name.startswith("kcnn"):
                line += (
                    f"   torchvision / this: {best['torchvision', 0] / forward:5.1f} "
                    f"{best['torchvision', 1] / forward_backward:5.1f}"
                )
            print(line)
        default = best["kcnn graph + XLA kernel", 0], best["kcnn graph + XLA kernel", 1]
        verdicts = [
            f"forward {default[0] / conv[0]:.2f}x Conv2D (target <= {FORWARD_TARGET})",
            f"forward+backward {default[1] / conv[1]:.2f}x (target <= {BACKWARD_TARGET})",
        ]
        if with_torch:
            verdicts.append(
                f"{best['torchvision', 1] / default[1]:.1f}x faster than torchvision "
                f"forward+backward (target >= {TORCHVISION_TARGET})"
            )
        print("  default path: " + "; ".join(verdicts))


if __name__ == "__main__":
    main()
