"""The detection models side by side: parameters, training step time, TFLite size and
single-thread LiteRT latency, on the same `shapes` scenes (128x128, batch 16).

The five configs of README's detection table: `Detector` (`configs/detect_shapes.yaml`),
`Detector(deformable=True)` (`configs/detect_shapes_deformable.yaml`), keras-hub's RetinaNet
(`configs/detect_shapes_retinanet.yaml`), `FasterRCNN` (`configs/detect_shapes_faster_rcnn.yaml`)
and `MaskRCNN` (`configs/instance_shapes_mask_rcnn.yaml`). For each, in one process:

- **step**: `kcnn.training.train` of the config for one epoch of `--steps` steps (20 test
  scenes, no export); the step time is the mean interval between training batch ends after
  `--warmup` steps (input pipeline, augmentation and step checkpoints included, validation
  excluded). The best of `--repeats` runs counts.
- **TFLite**: the task's TFLite model (the detector with its decoding and NMS) of that
  briefly trained model, converted fp32 with builtin ops only; its size, and its median
  single-thread LiteRT latency on one test scene (`kcnn.export.tflite_latency_ms`).
- **trained**: when `runs/<config name>/model.tflite` exists (a finished `kcnn train` of the
  config), its latency too: NMS time depends on how many boxes score above the threshold,
  which a fully trained model sets.

The baseline is the first model given (`Detector` by default): each model's step time and
latency are also printed as a ratio to its. The parameter counts are the models' own
(`count_params`); the mAPs of README's table come from the configs' full runs, not from here.

    .venv/bin/python bench/bench_detectors.py --steps 30 --warmup 10
"""

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CONFIGS = {
    "Detector": "configs/detect_shapes.yaml",
    "Detector(deformable=True)": "configs/detect_shapes_deformable.yaml",
    "RetinaNet": "configs/detect_shapes_retinanet.yaml",
    "FasterRCNN": "configs/detect_shapes_faster_rcnn.yaml",
    "MaskRCNN": "configs/instance_shapes_mask_rcnn.yaml",
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(CONFIGS), choices=CONFIGS)
    parser.add_argument("--steps", type=int, default=30, help="training steps per timed run")
    parser.add_argument("--warmup", type=int, default=10, help="steps left out of the mean")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--latency-runs", type=int, default=20)
    arguments = parser.parse_args()
    if arguments.warmup + 2 > arguments.steps:
        parser.error("--steps must exceed --warmup by at least 2")

    # The training benchmark's step timer (bench/ is the script's folder on sys.path).
    from bench_training import _mean_interval, _setup_tensorflow

    StepTimer = _setup_tensorflow()
    import keras

    from kcnn.export import export_tflite, tflite_latency_ms
    from kcnn.tasks import get_task
    from kcnn.training import load_config, train

    rows = []
    for label in arguments.models:
        path = ROOT / CONFIGS[label]
        overrides = [
            "train.epochs=1",
            f"train.steps_per_epoch={arguments.steps}",
            "data.args.test_count=20",
            "export.formats=[]",
        ]
        config = load_config(path, overrides)
        task = get_task(config.task)
        best, row = float("inf"), {}
        for _ in range(arguments.repeats):
            timer = StepTimer()
            with tempfile.TemporaryDirectory() as folder:
                run_dir = train(config, run_dir=Path(folder) / "run", verbose=0, callbacks=[timer])
                step = _mean_interval(timer.stamps, arguments.warmup)
                if step < best:
                    best = step
                    model = keras.saving.load_model(run_dir / "model.keras")
                    data = task.load_data(config.data, seed=config.runtime.seed)
                    sample = task.model_inputs(data.x_test[:1], data.y_test[:1])
                    tflite = export_tflite(task.tflite_model(model), Path(folder) / "model.tflite")
                    row = {
                        "params": model.count_params(),
                        "step_ms": step * 1000,
                        "tflite_kib": tflite.stat().st_size / 1024,
                        "latency_ms": tflite_latency_ms(tflite, sample, arguments.latency_runs),
                    }
        trained = ROOT / "runs" / config.name / "model.tflite"
        row["trained_latency_ms"] = (
            tflite_latency_ms(trained, sample, arguments.latency_runs) if trained.exists() else None
        )
        rows.append((label, row))
        print(label, {key: value for key, value in row.items()}, flush=True)

    baseline_label, baseline = rows[0]
    print(
        "\n| model | parameters | ms per training step | TFLite KiB | LiteRT ms (after the "
        f"timed steps) | LiteRT ms (trained run) | step / {baseline_label} | "
        f"LiteRT / {baseline_label} |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for label, row in rows:
        trained = row["trained_latency_ms"]
        print(
            f"| {label} | {row['params']:,} | {row['step_ms']:.0f} | {row['tflite_kib']:.0f} | "
            f"{row['latency_ms']:.1f} | {'—' if trained is None else f'{trained:.1f}'} | "
            f"{row['step_ms'] / baseline['step_ms']:.2f} | "
            f"{row['latency_ms'] / baseline['latency_ms']:.2f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
