"""Training step time: `kcnn train` against a bare Keras `model.fit` and the same network in
PyTorch.

Three workloads, each the network a config builds:

- `default`: `configs/default.yaml`, the plain CNN 16-32-64 (2 convs per level, batch norm)
  classifier on Fashion-MNIST 28x28, batch 128, Adam;
- `unet`: `configs/segment_unet.yaml`, the U-Net on the 5-level plain encoder, `shapes`
  scenes 64x64, batch 16, cross-entropy + Dice;
- `resnet18`: `configs/default.yaml` with `model.backbone=resnet18` and Fashion-MNIST resized
  to 64x64, batch 64.

For each, in one process and one run:

- **kcnn**: `kcnn.training.train` on the config (one epoch of `--steps` steps, no export),
  with a callback that timestamps every training batch: the step time is the mean interval
  between batch ends after `--warmup` steps, so it includes kcnn's input pipeline,
  augmentation and step checkpoints, and excludes validation and everything after;
- **Keras**: the same model (`kcnn.training.build_model`), compiled with the same optimizer,
  loss and metrics, `model.fit` on NumPy arrays, timed the same way;
- **PyTorch** (with `--torch-python`, the Python of a virtualenv with torch 2.14.1): the same
  network written in PyTorch (channels_last, 2 threads, the same Adam and loss, random
  tensors of the same shapes: no input pipeline), run in a subprocess because torch and
  TensorFlow in one process crash. Its trainable parameter count must equal Keras's before
  anything is timed.

Each is run `--repeats` times, interleaved; the best run counts. The ratios kcnn / PyTorch and
kcnn / Keras are printed. Targets: kcnn <= 1.0x PyTorch on `default` and <= 1.1x on the
others; kcnn <= 1.05x Keras on all three.

    .venv/bin/python bench/bench_training.py --torch-python /path/to/torch-venv/bin/python
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

WORKLOADS = {
    "default": ("configs/default.yaml", []),
    "unet": ("configs/segment_unet.yaml", []),
    "resnet18": (
        "configs/default.yaml",
        [
            "model.backbone=resnet18",
            "model.backbone_args={}",
            "data.image_size=64",
            "data.batch_size=64",
        ],
    ),
}
TORCH_TARGETS = {"default": 1.0, "unet": 1.1, "resnet18": 1.1}
KERAS_TARGET = 1.05


# --- PyTorch (runs in the torch virtualenv; imports no TensorFlow) ---


def _torch_networks(torch):
    nn = torch.nn

    def conv_bn_relu(in_channels, out_channels):
        # Keras's momentum 0.9 is PyTorch's 0.1; epsilon 1e-3 is Keras's default.
        return [
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels, eps=1e-3, momentum=0.1),
            nn.ReLU(inplace=True),
        ]

    class PlainEncoder(nn.Module):
        """`kcnn.backbones.plain_cnn`: per level, max-pool (but the first) and 2 convs."""

        def __init__(self, in_channels, filters, convs=2):
            super().__init__()
            self.levels = nn.ModuleList()
            for level, width in enumerate(filters):
                layers = [nn.MaxPool2d(2)] if level else []
                for _ in range(convs):
                    layers += conv_bn_relu(in_channels, width)
                    in_channels = width
                self.levels.append(nn.Sequential(*layers))

        def forward(self, x):
            features = []
            for level in self.levels:
                x = level(x)
                features.append(x)
            return features

    class PlainClassifier(nn.Module):
        def __init__(self, in_channels, filters, classes, dropout):
            super().__init__()
            self.encoder = PlainEncoder(in_channels, filters)
            self.dropout = nn.Dropout(dropout)
            self.dense = nn.Linear(filters[-1], classes)

        def forward(self, x):
            x = self.encoder(x)[-1].mean(dim=(2, 3))
            return self.dense(self.dropout(x))

    class UNet(nn.Module):
        """`kcnn.models.UNet`: 2x2 transposed conv, concatenated skip, 2 x conv-BN-ReLU."""

        def __init__(self, in_channels, filters, decoder_filters, classes):
            super().__init__()
            self.encoder = PlainEncoder(in_channels, filters)
            self.ups, self.blocks = nn.ModuleList(), nn.ModuleList()
            width = filters[-1]
            for skip, out in zip(filters[-2::-1], decoder_filters, strict=True):
                self.ups.append(nn.ConvTranspose2d(width, out, 2, stride=2))
                self.blocks.append(
                    nn.Sequential(*conv_bn_relu(out + skip, out), *conv_bn_relu(out, out))
                )
                width = out
            self.head = nn.Conv2d(width, classes, 1)

        def forward(self, x):
            features = self.encoder(x)
            x = features[-1]
            for up, block, skip in zip(self.ups, self.blocks, features[-2::-1], strict=True):
                x = block(torch.cat([up(x), skip], dim=1))
            return self.head(x)

    class BasicBlock(nn.Module):
        def __init__(self, in_channels, out_channels, stride, shortcut):
            super().__init__()
            eps = 1e-5  # keras-hub's ResNet
            self.body = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False),
                nn.BatchNorm2d(out_channels, eps=eps, momentum=0.1),
                nn.ReLU(inplace=True),
                nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False),
                nn.BatchNorm2d(out_channels, eps=eps, momentum=0.1),
            )
            self.shortcut = nn.Identity()
            if shortcut:
                self.shortcut = nn.Sequential(
                    nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                    nn.BatchNorm2d(out_channels, eps=eps, momentum=0.1),
                )

        def forward(self, x):
            return torch.relu(self.body(x) + self.shortcut(x))

    class ResNet18(nn.Module):
        """keras-hub's ResNet-18 (v1): 7x7/2 stem, 3x3/2 max-pool, 4 stacks of 2 blocks."""

        def __init__(self, in_channels, classes, dropout):
            super().__init__()
            layers = [
                nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False),
                nn.BatchNorm2d(64, eps=1e-5, momentum=0.1),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(3, 2, 1),
            ]
            width = 64
            for stack, out in enumerate((64, 128, 256, 512)):
                for block in range(2):
                    stride = 2 if stack and not block else 1
                    layers.append(BasicBlock(width, out, stride, shortcut=stack > 0 and not block))
                    width = out
            self.body = nn.Sequential(*layers)
            self.dropout = nn.Dropout(dropout)
            self.dense = nn.Linear(512, classes)

        def forward(self, x):
            return self.dense(self.dropout(self.body(x).mean(dim=(2, 3))))

    return PlainClassifier, UNet, ResNet18


def _dice_loss(torch, logits, targets, classes):
    """1 - mean over classes of 2|P ∩ T| / (|P| + |T|), soft, over the batch."""
    probabilities = torch.softmax(logits, dim=1)
    one_hot = torch.nn.functional.one_hot(targets, classes).permute(0, 3, 1, 2).float()
    intersection = (probabilities * one_hot).sum(dim=(0, 2, 3))
    total = probabilities.sum(dim=(0, 2, 3)) + one_hot.sum(dim=(0, 2, 3))
    return 1 - ((2 * intersection + 1e-6) / (total + 1e-6)).mean()


def torch_worker(spec, steps, warmup):
    """Trains the workload's PyTorch network for `steps` steps; returns its step time."""
    import torch

    torch.set_num_threads(2)
    torch.manual_seed(0)
    plain, unet, resnet18 = _torch_networks(torch)
    batch, (height, width, channels), classes = spec["batch"], spec["image"], spec["classes"]
    if spec["name"] == "default":
        model = plain(channels, spec["filters"], classes, spec["dropout"])
    elif spec["name"] == "unet":
        model = unet(channels, spec["filters"], spec["decoder_filters"], classes)
    else:
        model = resnet18(channels, classes, spec["dropout"])
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if params != spec["trainable_params"]:
        return {"error": f"{params} trainable parameters, Keras has {spec['trainable_params']}"}
    model = model.to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=spec["learning_rate"], eps=1e-7)
    images = torch.rand(batch, channels, height, width).to(memory_format=torch.channels_last)
    if spec["name"] == "unet":
        targets = torch.randint(0, classes, (batch, height, width))
    else:
        targets = torch.randint(0, classes, (batch,))
    stamps = []
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        logits = model(images)
        loss = torch.nn.functional.cross_entropy(logits, targets)
        if spec["name"] == "unet":
            loss = loss + _dice_loss(torch, logits, targets, classes)
        loss.backward()
        optimizer.step()
        float(loss)  # synchronise, as Keras does once per step to report the loss
        stamps.append(time.perf_counter())
    return {"step_s": _mean_interval(stamps, warmup), "params": params}


def _mean_interval(stamps, warmup):
    steady = stamps[warmup:]
    return (steady[-1] - steady[0]) / (len(steady) - 1)


# --- TensorFlow side ---


def _setup_tensorflow():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # kcnn first: it turns oneDNN on and selects the BFC allocator only if TensorFlow is not
    # imported yet (Keras imports it), and both sides then run with what a kcnn user gets.
    import kcnn  # noqa: F401, I001

    import keras

    class StepTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.stamps = []

        def on_train_batch_end(self, batch, logs=None):
            self.stamps.append(time.perf_counter())

    return StepTimer


def _config(workload, steps, extra=()):
    from kcnn.training import load_config

    path, overrides = WORKLOADS[workload]
    overrides = [
        *overrides,
        *extra,
        "train.epochs=1",
        f"train.steps_per_epoch={steps}",
        "export.formats=[]",
    ]
    return load_config(ROOT / path, overrides)


def time_kcnn(workload, steps, warmup, StepTimer, overrides=()):
    from kcnn.training import train

    config = _config(workload, steps, overrides)
    timer = StepTimer()
    with tempfile.TemporaryDirectory() as folder:
        train(config, run_dir=Path(folder) / "run", verbose=0, callbacks=[timer])
    return _mean_interval(timer.stamps, warmup)


def time_keras(workload, steps, warmup, StepTimer, data):
    from kcnn.tasks import get_task
    from kcnn.training import build_model
    from kcnn.training.fitting import build_optimizer

    config = _config(workload, steps)
    task = get_task(config.task)
    classes = len(data.class_names)
    model = build_model(config, data.x_train.shape[1:], classes)
    model.compile(
        optimizer=build_optimizer(config.train, steps),
        loss=task.loss(config.train, model),
        metrics=task.metrics(classes, config.train),
    )
    count = steps * config.data.batch_size
    timer = StepTimer()
    model.fit(
        data.x_train[:count],
        data.y_train[:count],
        batch_size=config.data.batch_size,
        epochs=1,
        shuffle=True,
        verbose=0,
        callbacks=[timer],
    )
    return _mean_interval(timer.stamps, warmup), model


def torch_spec(workload, model, data):
    config = _config(workload, 1)
    backbone_args = config.model.backbone_args
    return {
        "name": workload,
        "batch": config.data.batch_size,
        "image": list(data.x_train.shape[1:]),
        "classes": len(data.class_names),
        "filters": list(backbone_args.get("filters", [])),
        "decoder_filters": list(config.model.args.get("decoder_filters", [])),
        "dropout": config.model.dropout or 0.0,
        "learning_rate": config.train.learning_rate,
        "trainable_params": int(sum(weight.numpy().size for weight in model.trainable_weights)),
    }


def run_torch(python, spec, steps, warmup):
    result = subprocess.run(
        [python, __file__, "--torch-worker", json.dumps(spec), "--steps", str(steps)]
        + ["--warmup", str(warmup)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=WORKLOADS)
    parser.add_argument("--steps", type=int, default=60, help="training steps per timed run")
    parser.add_argument("--warmup", type=int, default=10, help="steps left out of the mean")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--torch-python", help="Python of a virtualenv with torch 2.14.1")
    parser.add_argument(
        "-o",
        "--override",
        action="append",
        default=[],
        help="config override for the kcnn run only, e.g. runtime.jit_compile=true",
    )
    parser.add_argument("--torch-worker", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.warmup + 2 > arguments.steps:
        parser.error("--steps must exceed --warmup by at least 2")
    if arguments.torch_worker:
        print(
            json.dumps(
                torch_worker(json.loads(arguments.torch_worker), arguments.steps, arguments.warmup)
            )
        )
        return 0

    StepTimer = _setup_tensorflow()
    from kcnn.training import load_data

    rows = []
    for workload in arguments.workloads:
        config = _config(workload, arguments.steps)
        data = load_data(config.data, seed=config.runtime.seed, task=config.task)
        best = {"kcnn": float("inf"), "keras": float("inf"), "torch": float("inf")}
        spec = None
        for _ in range(arguments.repeats):
            best["kcnn"] = min(
                best["kcnn"],
                time_kcnn(
                    workload, arguments.steps, arguments.warmup, StepTimer, arguments.override
                ),
            )
            seconds, model = time_keras(
                workload, arguments.steps, arguments.warmup, StepTimer, data
            )
            best["keras"] = min(best["keras"], seconds)
            if arguments.torch_python:
                spec = spec or torch_spec(workload, model, data)
                result = run_torch(arguments.torch_python, spec, arguments.steps, arguments.warmup)
                if "error" in result:
                    raise SystemExit(f"{workload}: the PyTorch network differs: {result['error']}")
                best["torch"] = min(best["torch"], result["step_s"])
        rows.append((workload, spec["trainable_params"] if spec else None, best))
        print(workload, {key: round(value * 1000, 1) for key, value in best.items()}, flush=True)

    print(
        "\n| workload | trainable params | kcnn ms/step | Keras fit ms/step | PyTorch ms/step "
        "| kcnn / Keras | kcnn / PyTorch |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for workload, params, best in rows:
        torch_ms = "—" if best["torch"] == float("inf") else f"{best['torch'] * 1000:.1f}"
        torch_ratio = (
            "—"
            if best["torch"] == float("inf")
            else f"{best['kcnn'] / best['torch']:.2f} (target {TORCH_TARGETS[workload]})"
        )
        print(
            f"| {workload} | {params if params else '—'} | {best['kcnn'] * 1000:.1f} | "
            f"{best['keras'] * 1000:.1f} | {torch_ms} | "
            f"{best['kcnn'] / best['keras']:.2f} (target {KERAS_TARGET}) | {torch_ratio} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
