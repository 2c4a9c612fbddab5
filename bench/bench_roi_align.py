"""RoIAlign: `kcnn.ops.roi_align` against `torchvision.ops.roi_align` on the same data.

A Mask R-CNN box head's pooling: features (2, 64, 64, 256) (stride 8 on a 512 x 512 image),
512 boxes of 16-256 pixels (some partly outside the image), 7 x 7 bins, sampling_ratio 2,
aligned=True. kcnn runs as a graph `tf.function` and under `tf.function(jit_compile=True)`;
torchvision (NCHW, 2 threads) runs in the same process when torch and torchvision are
importable, after checking that its output and feature gradient agree with kcnn's to 1e-5
relative (max abs difference / max abs value), not absolute: eager kcnn computes
torchvision's float32 sample positions, but in a graph TensorFlow's graph optimizer
reassociates their constant arithmetic, which moves some by one float32 step (7.6e-6 pixel at
64) and the outputs by up to about 2e-5 absolute here, as large as torchvision's own float32
error against a float64 computation.

"forward" returns the pooled features; "forward+backward" returns the loss
(sum of squares) and its gradient with respect to the features. Each time is the best of
`--repeats` rounds of `--steps` steps, interleaved.

    python bench/bench_roi_align.py --repeats 5
"""

import argparse
import importlib
import os
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

try:  # torch before TensorFlow: the other order crashes when both run in one process
    import torch
    import torchvision  # noqa: F401
except ImportError:
    torch = None

importlib.import_module("kcnn")  # before TensorFlow: its CPU set-up (oneDNN, BFC allocator)

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from kcnn.ops import roi_align  # noqa: E402

BATCH, SIZE, CHANNELS, STRIDE = 2, 64, 256, 8
NUM_BOXES, OUTPUT_SIZE, SAMPLING_RATIO = 512, (7, 7), 2


def make_data(seed=0):
    rng = np.random.default_rng(seed)
    features = rng.standard_normal((BATCH, SIZE, SIZE, CHANNELS)).astype("float32")
    image = SIZE * STRIDE
    sides = rng.uniform(16.0, 256.0, size=(NUM_BOXES, 2))
    corners = rng.uniform(-16.0, image - 16.0, size=(NUM_BOXES, 2))
    boxes = np.hstack([corners, corners + sides]).astype("float32")
    box_indices = rng.integers(0, BATCH, NUM_BOXES).astype("int32")
    return features, boxes, box_indices


def kcnn_steps(features, boxes, box_indices, jit_compile):
    features, boxes, box_indices = (tf.constant(v) for v in (features, boxes, box_indices))

    def pool(f):
        return roi_align(
            f, boxes, box_indices, OUTPUT_SIZE, 1.0 / STRIDE, SAMPLING_RATIO, aligned=True
        )

    @tf.function(jit_compile=jit_compile)
    def forward():
        return pool(features)

    @tf.function(jit_compile=jit_compile)
    def forward_backward():
        with tf.GradientTape() as tape:
            tape.watch(features)
            pooled = pool(features)
            loss = tf.reduce_sum(pooled * pooled)
        return loss, tape.gradient(loss, features)

    return forward, forward_backward


def torch_steps(features, boxes, box_indices):
    from torchvision.ops import roi_align as torch_roi_align

    torch.set_num_threads(2)
    features_t = torch.tensor(features.transpose(0, 3, 1, 2).copy(), requires_grad=True)
    rois = torch.tensor(np.hstack([box_indices[:, None].astype("float32"), boxes]))

    def pool():
        return torch_roi_align(
            features_t, rois, OUTPUT_SIZE, 1.0 / STRIDE, SAMPLING_RATIO, aligned=True
        )

    def forward():
        with torch.no_grad():
            return pool()

    def forward_backward():
        features_t.grad = None
        pooled = pool()
        loss = (pooled * pooled).sum()
        loss.backward()
        return loss, features_t.grad

    return forward, forward_backward


def agreement(kcnn, torchvision_steps):
    """Max abs difference of the outputs, and max relative difference (max abs difference /
    max abs value) of the outputs and of the feature gradients."""
    mine = np.asarray(kcnn[0]())
    theirs = torchvision_steps[0]().numpy().transpose(0, 2, 3, 1)
    gradient_mine = np.asarray(kcnn[1]()[1])
    gradient_theirs = torchvision_steps[1]()[1].numpy().transpose(0, 2, 3, 1)
    return (
        float(np.max(np.abs(mine - theirs))),
        _relative(mine, theirs),
        _relative(gradient_mine, gradient_theirs),
    )


def _relative(actual, expected):
    return float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))


def best_time(function, steps):
    start = time.perf_counter()
    for _ in range(steps):
        result = function()
    first = result[0] if isinstance(result, tuple) else result
    np.asarray(first.detach() if hasattr(first, "detach") else first)
    return (time.perf_counter() - start) / steps


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="best of this many rounds")
    parser.add_argument("--steps", type=int, default=5, help="steps timed per round")
    parser.add_argument("--no-torch", action="store_true", help="skip torchvision")
    args = parser.parse_args(argv)
    with_torch = torch is not None and not args.no_torch
    if torch is None:
        print("torch/torchvision not importable: torchvision comparison skipped")
    data = make_data()
    candidates = {
        "kcnn graph": kcnn_steps(*data, jit_compile=False),
        "kcnn XLA": kcnn_steps(*data, jit_compile=True),
    }
    if with_torch:
        candidates["torchvision"] = torch_steps(*data)
        for name in ("kcnn graph", "kcnn XLA"):
            output, relative, gradient = agreement(candidates[name], candidates["torchvision"])
            print(
                f"{name} vs torchvision: output max abs difference {output:.2e} "
                f"({relative:.2e} relative), feature gradient {gradient:.2e} relative"
            )
            if relative > 1e-5 or gradient > 1e-5:
                raise SystemExit(f"{name} disagrees with torchvision")
    for functions in candidates.values():
        for function in functions:
            function()  # trace and compile outside the timed rounds
    best = {(name, kind): float("inf") for name in candidates for kind in (0, 1)}
    for _ in range(args.repeats):
        for name, functions in candidates.items():
            for kind, function in enumerate(functions):
                best[name, kind] = min(best[name, kind], best_time(function, args.steps))
    print(
        f"\nfeatures {(BATCH, SIZE, SIZE, CHANNELS)}, {NUM_BOXES} boxes, {OUTPUT_SIZE} bins, "
        f"sampling_ratio {SAMPLING_RATIO}; best of {args.repeats} x {args.steps} steps (ms)"
    )
    for name in candidates:
        forward, forward_backward = best[name, 0], best[name, 1]
        line = f"  {name:12s} forward {forward * 1e3:8.2f}  "
        line += f"forward+backward {forward_backward * 1e3:8.2f}"
        if with_torch and name != "torchvision":
            line += (
                f"   this / torchvision: {forward / best['torchvision', 0]:5.2f} "
                f"{forward_backward / best['torchvision', 1]:5.2f}"
            )
        print(line)


if __name__ == "__main__":
    main()
