"""TFLite export: `kcnn.export.export_tflite` against Keras's `model.export` + the converter.

Both convert a SavedModel with the TFLite converter (builtin ops only); they differ in how the
SavedModel is written. The baseline is what a Keras user writes: `model.export(path,
format="tf_saved_model")`, then `tf.lite.TFLiteConverter.from_saved_model(path)` on its
`serve` endpoint, the one kcnn converts. kcnn writes the same `serve` graph traced once
(`kcnn.export.serving.write_raw_saved_model`). For each model, one model is converted both
ways first and the two flatbuffers must be equal byte for byte (a model built anew has new
layer names, which the flatbuffer holds).

Models: U-Nets at 64x64 on MobileNetV3-Small (keras-hub's architecture, built from its
constructor arguments) and on kcnn's plain CNN (both with their default widths), PConvUNet at
64x64 and a small detector followed by its decoder and NMS (what a detection run converts).
Each time is the median of `--repeats` rounds, kcnn and the baseline interleaved, each on a
model built anew (a model traced once is faster to trace again).

    python bench/bench_export.py --repeats 3
"""

import argparse
import importlib
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

importlib.import_module("kcnn")  # before TensorFlow: its CPU set-up (oneDNN, BFC allocator)

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from kcnn.backbones import build_backbone  # noqa: E402
from kcnn.detection import Detector, detector_with_decoder  # noqa: E402
from kcnn.export import export_tflite  # noqa: E402
from kcnn.models import PConvUNet, UNet  # noqa: E402


def _unet(name):
    backbone = build_backbone(name, (64, 64, 3))
    return UNet(backbone, 3)


def _detector():
    backbone = build_backbone(
        "plain_cnn", (64, 64, 3), filters=(8, 16, 16, 16, 16, 16), convs_per_level=1
    )
    return detector_with_decoder(Detector(backbone, 3, neck_filters=8, head_filters=8))


MODELS = {
    "U-Net, MobileNetV3-Small": lambda: _unet("mobilenetv3_small"),
    "U-Net, plain CNN": lambda: _unet("plain_cnn"),
    "PConvUNet 64x64": lambda: PConvUNet((64, 64, 3), filters=(16, 32, 32, 64)),
    "detector + decoder": _detector,
}


def build(make):
    keras.utils.set_random_seed(0)
    return make()


def keras_export(model, folder):
    """The baseline: Keras's SavedModel, then the converter with builtin ops."""
    saved_model = folder / "keras_saved_model"
    model.export(str(saved_model), format="tf_saved_model", verbose=False)
    # Keras's `serve` endpoint (its alias `serving_default` names the signature otherwise).
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model), signature_keys=["serve"])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    return converter.convert()


def kcnn_export(model, folder):
    return export_tflite(model, folder / "kcnn.tflite").read_bytes()


def timed(function, make):
    model = build(make)
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        function(model, Path(folder))
        return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1. Received: {args.repeats}")
    timed(kcnn_export, MODELS["U-Net, plain CNN"])  # the converter's own first-use cost
    print(f"TensorFlow {tf.__version__}, Keras {keras.__version__}, {os.cpu_count()} CPUs")
    print(f"{'model':<26} {'kcnn s':>8} {'Keras s':>8} {'kcnn/Keras':>10}  flatbuffers")
    for name, make in MODELS.items():
        # One model both ways (a model built anew has new layer names, so new tensor names).
        model = build(make)
        with tempfile.TemporaryDirectory() as folder:
            if kcnn_export(model, Path(folder)) != keras_export(model, Path(folder)):
                raise SystemExit(f"{name}: kcnn's flatbuffer differs from Keras's path")
        times = {"kcnn": [], "keras": []}
        for _ in range(args.repeats):
            times["kcnn"].append(timed(kcnn_export, make))
            times["keras"].append(timed(keras_export, make))
        ours, theirs = (statistics.median(times[key]) for key in ("kcnn", "keras"))
        print(f"{name:<26} {ours:8.2f} {theirs:8.2f} {ours / theirs:10.2f}  identical")


if __name__ == "__main__":
    main()
