"""The export stage: SavedModel and TFLite files of a trained model, each checked against
Keras on held-out images (`export_report.json`)."""

import contextlib
import tempfile
from pathlib import Path

from kcnn._files import write_json
from kcnn.export.exporters import (
    ExportParityError,
    export_saved_model,
    export_tflite,
    parity_report,
)
from kcnn.export.options import INTEGER_QUANTIZATIONS
from kcnn.export.serving import serving_metadata, write_raw_saved_model
from kcnn.training.messages import log


def _tflite_name(quantization):
    return "model.tflite" if quantization == "none" else f"model_{quantization}.tflite"


def _export_table(report):
    """One line per TFLite file: size, latency, max error and the task metric."""
    lines = []
    for quantization, entry in report["tflite"].items():
        if "error" in entry:
            lines.append(f"  {_tflite_name(quantization):22} FAILED to run: {entry['error']}")
            continue
        metric = entry.get("metric")
        line = (
            f"  {_tflite_name(quantization):22} {entry['file_bytes'] / 1024:9.1f} KiB  "
            f"{entry.get('latency_ms', float('nan')):7.2f} ms  max|err| "
            f"{entry['max_abs_error']:.2e}"
        )
        if metric is not None:
            line += (
                f"  {metric} {entry[f'litert_{metric}']:.4f} (Keras {entry[f'keras_{metric}']:.4f})"
            )
        lines.append(line + ("" if entry["passed"] else "  FAILED"))
    return "\n".join(lines)


def export_run(
    model,
    run_dir,
    task,
    export_config,
    dataset,
    image_size=None,
    quantization=None,
    allow_flex=None,
    int8_io=None,
):
    """Writes the exports of a run folder and checks them against Keras.

    Writes `saved_model/` (the `serving_default` uint8 signature and the float `serve`
    one, see `kcnn.export.serving`), one `.tflite` file per quantization (`model.tflite`
    for fp32, `model_<mode>.tflite` otherwise), `metadata.json` (task, class names, inputs)
    and `export_report.json`: per file, the max abs error against Keras, the task metric
    (top-1 accuracy, mean IoU, PSNR or mAP@.5) for Keras and LiteRT, top-1 agreement, file
    size and single-thread LiteRT latency, on the first `export_config.parity_samples` test
    images. Detection's files hold the decoder and NMS; they pass when LiteRT's detections
    match Keras's (`DetectionTask.compare_exports`).
    int8 calibration draws on the training split.

    Args:
        model: the trained `keras.Model`.
        run_dir: the run folder.
        task: the model's `kcnn.tasks.Task` (serving signature, TFLite model, task metric,
            parity comparison).
        export_config: the config's `export` block (`ExportConfig`).
        dataset: the run's data set (test images for parity, training images for int8
            calibration, class names).
        image_size: the config's `data.image_size` (serving size of a model whose input
            size is not static).
        quantization: None (the config's `export.quantization`), a mode or a list of modes.
        allow_flex: None (the config's `export.allow_flex`) or bool.
        int8_io: None (the config's `export.int8_io`) or bool.

    Raises:
        ExportParityError: if the fp32 file differs from Keras by more than
            `export_config.parity_tolerance`, or the int8 file drops the task metric by more
            than `export_config.int8_tolerance` (the report is still written).
    """
    run_dir = Path(run_dir)
    if quantization is None:
        quantizations = export_config.quantizations
    else:
        quantizations = [quantization] if isinstance(quantization, str) else list(quantization)
    allow_flex = export_config.allow_flex if allow_flex is None else allow_flex
    int8_io = export_config.int8_io if int8_io is None else int8_io
    metadata = serving_metadata(model, task, dataset.class_names, image_size)
    report = {"task": task.name, "formats": list(export_config.formats), "tflite": {}}
    saved_model_dir = run_dir / "saved_model"
    if "saved_model" in export_config.formats:
        export_saved_model(
            model,
            saved_model_dir,
            task=task,
            class_names=dataset.class_names,
            image_size=image_size,
            metadata=metadata,
        )
        report["saved_model"] = {
            "path": str(saved_model_dir),
            "signatures": sorted(metadata["signatures"]),
        }
    failures = []
    if "tflite" in export_config.formats:
        with contextlib.ExitStack() as exits:
            count = export_config.parity_samples
            images, labels = dataset.x_test[:count], dataset.y_test[:count]
            samples = task.model_inputs(images, labels)
            metric = task.export_metric(images, labels, dataset.class_names)
            int8_tolerance = export_config.int8_tolerance
            if int8_tolerance is None:
                int8_tolerance = task.int8_tolerance
            # A task may convert another model than `serve` (detection: the detector with its
            # decoder and NMS) and compare its several outputs its own way.
            tflite_model = task.tflite_model(model)
            source = saved_model_dir if saved_model_dir.exists() and tflite_model is model else None
            if source is None and len(quantizations) > 1:
                # Every mode converts the same graph: trace and write it once, not once per mode.
                source = Path(exits.enter_context(tempfile.TemporaryDirectory())) / "saved_model"
                write_raw_saved_model(tflite_model, source)
            for mode in quantizations:
                tflite_path = run_dir / _tflite_name(mode)
                export_tflite(
                    tflite_model,
                    tflite_path,
                    saved_model_dir=source,
                    quantization=mode,
                    representative_images=task.model_inputs(
                        dataset.x_train[:256], dataset.y_train[:256]
                    ),
                    allow_flex=allow_flex,
                    int8_io=int8_io and mode == "int8",
                )
                try:
                    entry = parity_report(
                        tflite_model,
                        tflite_path,
                        samples,
                        export_config.parity_tolerance,
                        mode,
                        class_outputs=task.class_outputs,
                        metric=metric,
                        latency_runs=export_config.latency_runs,
                        compare=task.compare_exports,
                    )
                except RuntimeError as error:  # a kernel that fails to run in LiteRT
                    message = str(error).strip().splitlines()[-1]
                    report["tflite"][mode] = {
                        "quantization": mode,
                        "path": str(tflite_path),
                        "file_bytes": tflite_path.stat().st_size,
                        "error": message,
                        "passed": False,
                    }
                    failures.append(
                        f"{tflite_path.name} fails in the LiteRT interpreter: {message}"
                    )
                    continue
                entry["path"] = str(tflite_path)
                if not entry["passed"] and "mismatch" in entry:
                    failures.append(f"{tflite_path.name} {entry['mismatch']}")
                elif not entry["passed"]:
                    failures.append(
                        f"{tflite_path.name} differs from Keras by {entry['max_abs_error']:.3g} "
                        f"(tolerance {entry['tolerance']})"
                    )
                if mode in INTEGER_QUANTIZATIONS:
                    entry["metric_tolerance"] = int8_tolerance
                    entry["passed"] = entry["metric_drop"] <= int8_tolerance
                    if not entry["passed"]:
                        failures.append(
                            f"{tflite_path.name} drops {entry['metric']} by "
                            f"{entry['metric_drop']:.4g} (tolerance {int8_tolerance}: "
                            "export.int8_tolerance)"
                        )
                report["tflite"][mode] = entry
            metadata["tflite_files"] = {mode: _tflite_name(mode) for mode in report["tflite"]}
            metadata["tflite_int8_io"] = bool(int8_io and "int8" in report["tflite"])
    report["passed"] = not failures
    write_json(run_dir / "metadata.json", metadata)
    write_json(run_dir / "export_report.json", report)
    if report["tflite"]:
        shown = min(count, len(dataset.x_test))
        log(f"exports (LiteRT on {shown} test samples, 1 thread):\n{_export_table(report)}")
    if failures:
        raise ExportParityError("; ".join(failures) + f"; see {run_dir / 'export_report.json'}")
    return report
