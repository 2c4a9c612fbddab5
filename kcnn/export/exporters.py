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


def _converter(saved_model_dir, quantization, representative_images):
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
        images = np.asarray(representative_images, dtype=np.float32)

        def representative_dataset():
            for image in images:
                yield [image[None]]

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
        representative_images: float32 array of inputs for int8 calibration.

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
        converter = _converter(saved_model_dir, quantization, representative_images)
        temporary.write_bytes(converter.convert())
    return path


def tflite_predict(tflite_path, images, num_threads=1):
    """Runs a `.tflite` file on a batch with the LiteRT interpreter (`ai_edge_litert`).

    Args:
        tflite_path: the `.tflite` file.
        images: array of shape `(batch, ...)` matching the model input.
        num_threads: int. Interpreter threads. Defaults to 1.

    Returns:
        NumPy array of the model's first output for the batch.
    """
    from ai_edge_litert.interpreter import Interpreter

    images = np.asarray(images)
    interpreter = Interpreter(model_path=str(tflite_path), num_threads=num_threads)
    input_detail = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(input_detail["index"], list(images.shape))
    interpreter.allocate_tensors()
    input_detail = interpreter.get_input_details()[0]
    output_detail = interpreter.get_output_details()[0]
    batch = images.astype(input_detail["dtype"])
    if input_detail["dtype"] in (np.int8, np.uint8):
        scale, zero_point = input_detail["quantization"]
        batch = np.round(images / scale + zero_point).astype(input_detail["dtype"])
    interpreter.set_tensor(input_detail["index"], batch)
    interpreter.invoke()
    output = interpreter.get_tensor(output_detail["index"])
    if output_detail["dtype"] in (np.int8, np.uint8):
        scale, zero_point = output_detail["quantization"]
        output = (output.astype(np.float32) - zero_point) * scale
    return output


def parity_report(model, tflite_path, images, tolerance=1e-4, quantization="none"):
    """Compares Keras and LiteRT outputs on `images`.

    Returns:
        dict with `max_abs_error`, `top1_agreement` (for class outputs), `samples`,
        `tolerance`, `file_bytes` and `passed` (max error within tolerance; only fp32 exports
        are held to it, quantized ones are reported).
    """
    images = np.asarray(images, dtype=np.float32)
    expected = np.asarray(model.predict(images, verbose=0), dtype=np.float64)
    actual = np.asarray(tflite_predict(tflite_path, images), dtype=np.float64)
    max_abs_error = float(np.max(np.abs(expected - actual)))
    report = {
        "quantization": quantization,
        "samples": int(images.shape[0]),
        "max_abs_error": max_abs_error,
        "tolerance": tolerance,
        "file_bytes": int(tf.io.gfile.stat(str(tflite_path)).length),
    }
    if expected.ndim >= 2:
        # Share of images (classification) or pixels (segmentation) with the same top class.
        agreement = np.mean(expected.argmax(axis=-1) == actual.argmax(axis=-1))
        report["top1_agreement"] = float(agreement)
    report["passed"] = quantization != "none" or max_abs_error <= tolerance
    return report
