"""SavedModel and TFLite export.

TFLite conversion uses builtin ops only (`TFLITE_BUILTINS`): a model that would need Flex
(TensorFlow) ops fails with an `ExportError` naming the ops, rather than producing a file the
stock LiteRT interpreter cannot run, unless `allow_flex=True` is given.

An int8 file quantizes every op except those a layer computes under
`kcnn._quantization.keep_float()` (a partial convolution's window count and renormalisation,
`SmoothFill2D`'s sweeps): they stay float32, with QUANTIZE and DEQUANTIZE ops at their
borders, through the selective quantization of TFLite's quantization debugger
(`tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=...)`).
"""

import json
import re
import time

import numpy as np
import tensorflow as tf

from kcnn._files import atomic_path
from kcnn._quantization import in_float_scope
from kcnn.export.options import INTEGER_QUANTIZATIONS, QUANTIZATIONS
from kcnn.export.serving import RAW_SIGNATURE, write_raw_saved_model, write_serving_saved_model


class ExportError(RuntimeError):
    """A model could not be exported as asked (e.g. it needs Flex ops)."""


class ExportParityError(RuntimeError):
    """The exported model's outputs differ from Keras by more than the tolerance."""


def export_saved_model(model, path, task=None, class_names=(), image_size=None, metadata=None):
    """Writes `model` as a TensorFlow SavedModel.

    Without `task` the SavedModel has Keras's `serve` endpoint only (float32 inputs, what
    `model.export` writes). With `task` it also has the task's `serving_default` signature,
    which takes uint8 images of any size and returns what a user wants (see
    `kcnn.export.serving` and `kcnn.tasks.Task.serving_signature`).
    The previous folder at `path`, if any, is replaced only once the new one is complete.

    Args:
        model: a built `keras.Model`.
        path: folder to write.
        task: None or the model's `kcnn.tasks.Task`, e.g. `kcnn.tasks.get_task("segmentation")`.
        class_names: class names, for the labels of classification's top-k output.
        image_size: int or (height, width) to resize images to when the model's input
            size is not static.
        metadata: None or a JSON-able dict, written as `assets/metadata.json` so the
            folder describes itself when copied alone.

    Returns:
        `path`.
    """
    with atomic_path(path) as temporary:
        if task is None:
            model.export(str(temporary), format="tf_saved_model", verbose=False)
        else:
            signature = task.serving_signature(model, class_names, image_size)
            write_serving_saved_model(model, temporary, signature)
        if metadata is not None:
            (temporary / "assets").mkdir(exist_ok=True)
            (temporary / "assets" / "metadata.json").write_text(json.dumps(metadata, indent=2))
    return path


def _flex_ops(message):
    """The TensorFlow op names a converter error says have no builtin kernel."""
    listed = re.findall(r"TF Select ops: ([^\n]+)", message)
    if listed:
        names = {name.strip() for line in listed for name in line.split(",")}
    else:
        names = set(re.findall(r"\btf\.(\w+)\(", message))
    return sorted(name for name in names if name)


def float_scope_nodes(saved_model_dir):
    """Names of the tensors of a SavedModel's `serve` endpoint that lie under `keep_float()`,
    as TFLite names them (an fp32 conversion lists them): the nodes an int8 export leaves
    float32."""
    from ai_edge_litert.interpreter import Interpreter

    converter = tf.lite.TFLiteConverter.from_saved_model(
        str(saved_model_dir), signature_keys=[RAW_SIGNATURE]
    )
    interpreter = Interpreter(model_content=converter.convert())
    # Every tensor of the scope: a constant's name matches no op and is ignored.
    return sorted(
        {
            tensor["name"]
            for tensor in interpreter.get_tensor_details()
            if in_float_scope(tensor["name"])
        }
    )


def _representative_dataset(quantization, representative_images, input_names):
    """The calibration generator of an integer export: one sample per call, as the
    converter wants it."""
    if representative_images is None:
        raise ValueError(f"`quantization={quantization!r}` needs `representative_images`.")
    several = isinstance(representative_images, (list, tuple))
    arrays = [
        np.asarray(array, dtype=np.float32)
        for array in (representative_images if several else [representative_images])
    ]

    def representative_dataset():
        for index in range(len(arrays[0])):
            samples = [array[index : index + 1] for array in arrays]
            # The converter orders a list by the signature's (sorted) input names, not by
            # the model's inputs: name them.
            yield dict(zip(input_names, samples, strict=True)) if several else samples

    return representative_dataset


def _converter(
    saved_model_dir, quantization, representative_images, input_names, allow_flex, int8_io
):
    if int8_io and quantization != "int8":
        raise ValueError(
            "`int8_io=True` (full-integer input and output) needs `quantization='int8'`. "
            f"Received: quantization={quantization!r}"
        )
    converter = tf.lite.TFLiteConverter.from_saved_model(
        str(saved_model_dir), signature_keys=[RAW_SIGNATURE]
    )
    builtins = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantization == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantization == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif quantization in INTEGER_QUANTIZATIONS:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = _representative_dataset(
            quantization, representative_images, input_names
        )
        if quantization == "int8":
            builtins = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        else:
            # TFLite's 16x8 mode; an op without a 16x8 kernel (e.g. DIV) stays float32.
            builtins = [
                tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8,
                tf.lite.OpsSet.TFLITE_BUILTINS,
            ]
    if int8_io:
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    converter.target_spec.supported_ops = builtins
    if allow_flex:
        converter.target_spec.supported_ops.append(tf.lite.OpsSet.SELECT_TF_OPS)
    return converter


def _selectively_quantized(converter, float_nodes, int8_io):
    """The int8 flatbuffer of `converter` with the ops writing `float_nodes` left float32."""
    options = tf.lite.experimental.QuantizationDebugOptions(
        denylisted_nodes=list(float_nodes), fully_quantize=bool(int8_io)
    )
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=converter,
        debug_dataset=converter.representative_dataset,
        debug_options=options,
    )
    return debugger.get_nondebug_quantized_model()


def export_tflite(
    model,
    path,
    saved_model_dir=None,
    quantization="none",
    representative_images=None,
    allow_flex=False,
    int8_io=False,
):
    """Converts `model` to a `.tflite` flatbuffer with builtin ops only.

    Args:
        model: a built `keras.Model`.
        path: the `.tflite` file to write (replaced only when conversion succeeded).
        saved_model_dir: an existing SavedModel of `model` (with a `serve` endpoint) to
            convert from; written to a temporary folder when None.
        quantization: one of `"none"`, `"fp16"`, `"dynamic"`, `"int8"`, `"int16x8"`.
            `"int16x8"` is TFLite's 16x8 mode: int8 weights and int16 activations, for
            models whose activations have too wide a range for one int8 scale (ops without
            a 16x8 kernel, e.g. DIV, stay float32). Defaults to `"none"`.
        representative_images: float32 array of inputs for int8 and int16x8 calibration,
            or a list of arrays (one per input, in the order of the model's inputs).
        allow_flex: bool. Let ops without a builtin kernel fall back to TensorFlow (Flex)
            ops; the file then needs the Flex delegate. Defaults to False.
        int8_io: bool. With `quantization="int8"`, make the input and output tensors int8
            too (full-integer model). Defaults to False (float32 input and output).

    Returns:
        `path`.

    Raises:
        ValueError: if `quantization` is not in the set above.
        ExportError: if the model needs Flex ops and `allow_flex` is False.
    """
    if quantization not in QUANTIZATIONS:
        raise ValueError(
            f"`quantization` must be one of {list(QUANTIZATIONS)}. "
            f"Received: quantization={quantization!r}"
        )
    with atomic_path(path) as temporary:
        if saved_model_dir is None:
            saved_model_dir = temporary.with_name("saved_model")
            write_raw_saved_model(model, saved_model_dir)
        input_names = [tensor.name for tensor in model.inputs]
        converter = _converter(
            saved_model_dir,
            quantization,
            representative_images,
            input_names,
            allow_flex,
            int8_io,
        )
        float_nodes = float_scope_nodes(saved_model_dir) if quantization == "int8" else []
        try:
            if float_nodes:
                flatbuffer = _selectively_quantized(converter, float_nodes, int8_io)
            else:
                flatbuffer = converter.convert()
        except Exception as error:  # the converter raises its own ConverterError
            ops = _flex_ops(str(error))
            if not ops or allow_flex:
                raise
            raise ExportError(
                f"{model.name} needs TensorFlow ops that TFLite has no builtin kernel for: "
                f"{', '.join(ops)}. Replace them, or pass `allow_flex=True` (`kcnn export "
                "--allow-flex`) to keep them as Flex ops, which need the Flex delegate on "
                "the device."
            ) from None
        temporary.write_bytes(flatbuffer)
    return path


def _quantize(values, detail):
    if detail["dtype"] in (np.int8, np.uint8):
        scale, zero_point = detail["quantization"]
        return np.round(values / scale + zero_point).astype(detail["dtype"])
    return np.asarray(values).astype(detail["dtype"])


def _dequantize(values, detail):
    if detail["dtype"] in (np.int8, np.uint8):
        scale, zero_point = detail["quantization"]
        return (values.astype(np.float32) - zero_point) * scale
    return values


def _output_position(name):
    """Sort key of LiteRT signature outputs: "output_0" < "output_1" < ... < "output_10"."""
    digits = name.rsplit("_", 1)[-1]
    return (int(digits) if digits.isdigit() else 0, name)


# LiteRT runs a batch in chunks of this many samples: its interpreter holds every
# intermediate tensor of a call at once, which for a two-stage detector's RoIs on a few
# hundred images is more memory than the machine has.
LITERT_BATCH = 32


class LiteRTRunner:
    """A `.tflite` file loaded once in the LiteRT interpreter (`ai_edge_litert`), called on
    batches like a Keras model (in chunks of `LITERT_BATCH` samples).

    Args:
        tflite_path: the `.tflite` file.
        num_threads: int. Interpreter threads. Defaults to 1.
    """

    def __init__(self, tflite_path, num_threads=1):
        from ai_edge_litert.interpreter import Interpreter

        self.path = tflite_path
        self.interpreter = Interpreter(model_path=str(tflite_path), num_threads=num_threads)
        self._shape = None

    def all_outputs(self, images):
        """Runs the file's signature (a kcnn file has one, `serve`) on `images`, an array or
        a dict keyed by input name, and returns every output, `{output name: NumPy array}`,
        dequantized to float32 where the file's output is int8 / uint8 (e.g. a detector's
        `boxes`, `scores`, `classes` and `count`)."""
        (signature,) = self.interpreter.get_signature_list()
        runner = self.interpreter.get_signature_runner(signature)
        details = runner.get_input_details()
        if not isinstance(images, dict):
            (name,) = details
            images = {name: images}
        images = {name: np.asarray(images[name]) for name in details}
        output_details = runner.get_output_details()
        chunks = []
        for start in range(0, len(next(iter(images.values()))), LITERT_BATCH):
            outputs = runner(
                **{
                    name: _quantize(array[start : start + LITERT_BATCH], details[name])
                    for name, array in images.items()
                }
            )
            chunks.append(
                {name: _dequantize(value, output_details[name]) for name, value in outputs.items()}
            )
        return {name: np.concatenate([chunk[name] for chunk in chunks]) for name in chunks[0]}

    def __call__(self, images):
        """Runs the file on `images`.

        Args:
            images: array of shape `(batch, ...)` matching the model input, or, for a
                model with several inputs, a dict `{input name: array}` keyed by the names
                of the Keras model's inputs (the names of the SavedModel's `serve`
                signature). Float inputs are quantized for full-integer files.

        Returns:
            NumPy array of the model's first output (dequantized to float32 when the file's
            output is integer).

        Raises:
            ValueError: if the file has several inputs and `images` is not a dict.
        """
        if isinstance(images, dict):
            outputs = self.all_outputs(images)
            return outputs[min(outputs, key=_output_position)]
        inputs = self.interpreter.get_input_details()
        if len(inputs) > 1:
            signatures = self.interpreter.get_signature_list()
            names = (
                sorted(next(iter(signatures.values()))["inputs"])
                if signatures
                else [detail["name"] for detail in inputs]
            )
            raise ValueError(
                f"{self.path} has {len(inputs)} inputs: `images` must be a dict "
                f"{{input name: array}} with the names {names}. "
                f"Received: images of type {type(images).__name__}"
            )
        images = np.asarray(images)
        return np.concatenate(
            [
                self._invoke(images[start : start + LITERT_BATCH])
                for start in range(0, len(images), LITERT_BATCH)
            ]
        )

    def _invoke(self, images):
        interpreter = self.interpreter
        if self._shape != images.shape:
            detail = interpreter.get_input_details()[0]
            interpreter.resize_tensor_input(detail["index"], list(images.shape))
            interpreter.allocate_tensors()
            self._shape = images.shape
        input_detail = interpreter.get_input_details()[0]
        output_detail = interpreter.get_output_details()[0]
        interpreter.set_tensor(input_detail["index"], _quantize(images, input_detail))
        interpreter.invoke()
        return _dequantize(interpreter.get_tensor(output_detail["index"]), output_detail)


def tflite_predict(tflite_path, images, num_threads=1):
    """Runs a `.tflite` file on a batch with the LiteRT interpreter (`ai_edge_litert`).

    Args:
        tflite_path: the `.tflite` file.
        images: array of shape `(batch, ...)` matching the model input, or, for a model
            with several inputs, a dict `{input name: array}` keyed by the names of the
            Keras model's inputs (the names of the SavedModel's `serve` signature).
        num_threads: int. Interpreter threads. Defaults to 1.

    Returns:
        NumPy array of the model's first output for the batch.
    """
    return LiteRTRunner(tflite_path, num_threads)(images)


def _first_sample(images):
    if isinstance(images, dict):
        return {name: array[:1] for name, array in images.items()}
    return images[:1]


def tflite_latency_ms(tflite_path, images, runs=20):
    """Median single-thread LiteRT latency, in milliseconds, of one sample of `images`
    (batch 1, after one warm-up call)."""
    runner = LiteRTRunner(tflite_path, num_threads=1)
    sample = _first_sample(images)
    runner(sample)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        runner(sample)
        times.append(time.perf_counter() - start)
    return 1000.0 * float(np.median(times))


def _keras_outputs(model, inputs, batch_size=256):
    """The model called directly in inference mode, batch by batch: one NumPy array, or a
    dict of them for a model with several named outputs (e.g. decoded detections).

    Not `model.predict`: for a model built under a `tf.distribute` strategy, predict runs
    distributed and its outputs differ from a plain call by up to ~1e-2, which is not what
    the exported file computes.
    """
    several = isinstance(inputs, list)
    count = len(inputs[0]) if several else len(inputs)
    outputs = []
    for start in range(0, count, batch_size):
        part = slice(start, start + batch_size)
        batch = [array[part] for array in inputs] if several else inputs[part]
        outputs.append(model(batch, training=False))
    if isinstance(outputs[0], dict):
        return {
            name: np.concatenate([np.asarray(part[name]) for part in outputs])
            for name in outputs[0]
        }
    return np.concatenate([np.asarray(part) for part in outputs])


def parity_report(
    model,
    tflite_path,
    images,
    tolerance=1e-4,
    quantization="none",
    class_outputs=True,
    metric=None,
    latency_runs=0,
    compare=None,
):
    """Compares Keras and LiteRT outputs on `images`.

    Args:
        model: the Keras model the `.tflite` file was converted from.
        tflite_path: the `.tflite` file.
        images: model inputs: an array, or a list of arrays for a model with several
            inputs (in the order of `model.inputs`).
        tolerance: float. Largest max abs error an fp32 export may have. Defaults to 1e-4.
        quantization: str. The export's quantization. Defaults to `"none"`.
        class_outputs: bool. Whether the last output axis holds class scores, for which
            `top1_agreement` is reported. Defaults to True.
        metric: None or `(name, function)`: the task's metric, `function(outputs)` a float
            where higher is better (e.g. test accuracy against the labels), reported for
            Keras and LiteRT and as `metric_drop` (Keras minus LiteRT).
        latency_runs: int. When > 0, also report `latency_ms`, the median single-thread
            LiteRT time of one sample over this many runs. Defaults to 0.
        compare: None, or a function for a model with several outputs (a dict, such as a
            detector's decoded detections): `compare(keras_outputs, litert_outputs)`, both
            `{output name: array}`, returns report entries, `max_abs_error` among them, and
            a `mismatch` entry (a sentence) when they disagree. `metric` then gets those
            dicts too, and `tolerance` is not used. Defaults to None (the model's one
            output, compared by max abs error).

    Returns:
        dict with `max_abs_error`, `top1_agreement` (for class outputs), the metric keys,
        `samples`, `tolerance`, `file_bytes`, `latency_ms` and `passed` (max error within
        tolerance, or no `mismatch` with `compare`; only fp32 exports are held to it,
        quantized ones are reported).
    """
    if isinstance(images, (list, tuple)):
        inputs = [np.asarray(array, dtype=np.float32) for array in images]
        litert_inputs = {
            tensor.name: array for tensor, array in zip(model.inputs, inputs, strict=True)
        }
    else:
        inputs = litert_inputs = np.asarray(images, dtype=np.float32)
    report = {"quantization": quantization}
    if compare is not None:
        expected = _keras_outputs(model, inputs)
        actual = LiteRTRunner(tflite_path).all_outputs(litert_inputs)
        report["samples"] = int(len(next(iter(expected.values()))))
        report.update(compare(expected, actual))
        agrees = "mismatch" not in report
    else:
        expected = np.asarray(_keras_outputs(model, inputs), dtype=np.float64)
        actual = np.asarray(tflite_predict(tflite_path, litert_inputs), dtype=np.float64)
        report["samples"] = int(expected.shape[0])
        report["max_abs_error"] = float(np.max(np.abs(expected - actual)))
        report["tolerance"] = tolerance
        agrees = report["max_abs_error"] <= tolerance
    report["file_bytes"] = int(tf.io.gfile.stat(str(tflite_path)).length)
    if class_outputs and compare is None and expected.ndim >= 2:
        # Share of images (classification) or pixels (segmentation) with the same top class.
        agreement = np.mean(expected.argmax(axis=-1) == actual.argmax(axis=-1))
        report["top1_agreement"] = float(agreement)
    if metric is not None:
        name, function = metric
        keras_value, litert_value = float(function(expected)), float(function(actual))
        report["metric"] = name
        report[f"keras_{name}"] = keras_value
        report[f"litert_{name}"] = litert_value
        report["metric_drop"] = keras_value - litert_value
    if latency_runs > 0:
        report["latency_ms"] = tflite_latency_ms(tflite_path, litert_inputs, latency_runs)
    report["passed"] = quantization != "none" or agrees
    return report
