"""SavedModel and TFLite export.

TFLite conversion uses builtin ops only (`TFLITE_BUILTINS`): a model that would need Flex
(TensorFlow) ops fails to convert with the converter's message naming the ops, rather than
producing a file the stock LiteRT interpreter cannot run.
"""

import numpy as np
import tensorflow as tf

from kcnn._files import atomic_path
from kcnn.export.options import QUANTIZATIONS


class ExportParityError(RuntimeError):
    """The exported model's outputs differ from Keras by more than the tolerance."""


def export_saved_model(model, path):
    """Writes `model` as a TensorFlow SavedModel with a `serve` endpoint.

    The previous folder at `path`, if any, is replaced only once the new one is complete.

    Args:
        model: a built `keras.Model`.
        path: folder to write.

    Returns:
        `path`.
    """
    with atomic_path(path) as temporary:
        model.export(str(temporary), format="tf_saved_model", verbose=False)
    return path


def _converter(saved_model_dir, quantization, representative_images, input_names):
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantization == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantization == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif quantization == "int8":
        if representative_images is None:
            raise ValueError("`quantization='int8'` needs `representative_images`.")
        several = isinstance(representative_images, (list, tuple))
        arrays = [
            np.asarray(array, dtype=np.float32)
            for array in (representative_images if several else [representative_images])
        ]

        def representative_dataset():
            for index in range(len(arrays[0])):
                samples = [array[index : index + 1] for array in arrays]
                # The converter orders a list by the signature's (sorted) input names, not
                # by the model's inputs: name them.
                yield dict(zip(input_names, samples, strict=True)) if several else samples

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative_dataset
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    return converter


def export_tflite(
    model, path, saved_model_dir=None, quantization="none", representative_images=None
):
    """Converts `model` to a `.tflite` flatbuffer with builtin ops only.

    Args:
        model: a built `keras.Model`.
        path: the `.tflite` file to write (replaced only when conversion succeeded).
        saved_model_dir: an existing SavedModel of `model` to convert from; written to a
            temporary folder when None.
        quantization: one of `"none"`, `"fp16"`, `"dynamic"`, `"int8"`. Defaults to
            `"none"`.
        representative_images: float32 array of inputs for int8 calibration, or a list of
            arrays (one per input, in the order of the model's inputs).

    Returns:
        `path`.

    Raises:
        ValueError: if `quantization` is not in the set above.
    """
    if quantization not in QUANTIZATIONS:
        raise ValueError(
            f"`quantization` must be one of {list(QUANTIZATIONS)}. "
            f"Received: quantization={quantization!r}"
        )
    with atomic_path(path) as temporary:
        if saved_model_dir is None:
            saved_model_dir = temporary.with_name("saved_model")
            model.export(str(saved_model_dir), format="tf_saved_model", verbose=False)
        input_names = [tensor.name for tensor in model.inputs]
        converter = _converter(saved_model_dir, quantization, representative_images, input_names)
        temporary.write_bytes(converter.convert())
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
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(tflite_path), num_threads=num_threads)
    if isinstance(images, dict):
        runner = interpreter.get_signature_runner("serving_default")
        details = runner.get_input_details()
        outputs = runner(
            **{name: _quantize(np.asarray(images[name]), details[name]) for name in details}
        )
        first = min(outputs, key=_output_position)
        return _dequantize(outputs[first], runner.get_output_details()[first])
    images = np.asarray(images)
    input_detail = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(input_detail["index"], list(images.shape))
    interpreter.allocate_tensors()
    input_detail = interpreter.get_input_details()[0]
    output_detail = interpreter.get_output_details()[0]
    interpreter.set_tensor(input_detail["index"], _quantize(images, input_detail))
    interpreter.invoke()
    return _dequantize(interpreter.get_tensor(output_detail["index"]), output_detail)


def parity_report(
    model, tflite_path, images, tolerance=1e-4, quantization="none", class_outputs=True
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

    Returns:
        dict with `max_abs_error`, `top1_agreement` (for class outputs), `samples`,
        `tolerance`, `file_bytes` and `passed` (max error within tolerance; only fp32 exports
        are held to it, quantized ones are reported).
    """
    if isinstance(images, (list, tuple)):
        inputs = [np.asarray(array, dtype=np.float32) for array in images]
        litert_inputs = {
            tensor.name: array for tensor, array in zip(model.inputs, inputs, strict=True)
        }
    else:
        inputs = litert_inputs = np.asarray(images, dtype=np.float32)
    expected = np.asarray(model.predict(inputs, verbose=0), dtype=np.float64)
    actual = np.asarray(tflite_predict(tflite_path, litert_inputs), dtype=np.float64)
    max_abs_error = float(np.max(np.abs(expected - actual)))
    report = {
        "quantization": quantization,
        "samples": int(expected.shape[0]),
        "max_abs_error": max_abs_error,
        "tolerance": tolerance,
        "file_bytes": int(tf.io.gfile.stat(str(tflite_path)).length),
    }
    if class_outputs and expected.ndim >= 2:
        # Share of images (classification) or pixels (segmentation) with the same top class.
        agreement = np.mean(expected.argmax(axis=-1) == actual.argmax(axis=-1))
        report["top1_agreement"] = float(agreement)
    report["passed"] = quantization != "none" or max_abs_error <= tolerance
    return report
