"""SavedModel serving signatures that take what a client has and return what a user wants.

A kcnn SavedModel has two endpoints:

- `serving_default` takes a uint8 image batch of any height and width (a client's decoded
  JPEG or PNG), resizes it to the size the model was trained at, scales it to [0, 1] inside
  the graph and returns, by task:

  - classification: `images` uint8 (B, H, W, C) -> `probabilities` (B, K), `top_k_indices`,
    `top_k_scores` and `top_k_labels` (class names);
  - segmentation: `images` uint8 (B, H, W, C) -> `class_map` int32 (B, H, W) and
    `probabilities` (B, H, W, K), both at the input's size;
  - inpainting: `images` uint8 (B, H, W, 3) and `masks` uint8 (B, H, W, 1), nonzero = known
    pixel -> `inpainted` uint8 (B, H, W, 3), the known pixels kept and the holes filled, and
    `prediction`, the network's float32 output in [0, 1];
  - detection: `images` uint8 (B, H, W, C) -> after decoding and per-class NMS, `boxes`
    float32 (B, D, 4) `(x_min, y_min, x_max, y_max)` in pixels of the input image, `scores`
    (B, D), `classes` int32 (B, D), `class_names` (B, D) strings and `count` int32 (B,):
    image b has `count[b]` detections, best first; the rows after them are padding (boxes
    and scores 0, class -1, name "").

- `serve` is the Keras model itself on float32 inputs in [0, 1] (what `model.export` writes);
  the TFLite files are converted from it, except detection's, which are converted from the
  detector followed by its decoder and NMS (`kcnn.detection.detector.detector_with_decoder`):
  they take the float image and return the final detections, in model-input pixels.

Neither needs kcnn to run: `tf.saved_model.load(path).signatures["serving_default"]` or
`saved_model_cli run --dir PATH --tag_set serve --signature_def serving_default ...`.
"""

import keras
import tensorflow as tf

SERVING_SIGNATURE = "serving_default"
RAW_SIGNATURE = "serve"
TOP_K = 5


def _spatial_size(model, image_size):
    """The (height, width) the model takes: its static input size, else `image_size`."""
    height, width = model.inputs[0].shape[1:3]
    if height is not None and width is not None:
        return int(height), int(width)
    if image_size is None:
        return None
    if isinstance(image_size, int):
        return image_size, image_size
    return tuple(int(side) for side in image_size)


def _resize(images, size, method="bilinear"):
    return images if size is None else tf.image.resize(images, size, method=method)


def _unit_images(images, size):
    return _resize(tf.cast(images, tf.float32) / 255.0, size)


def _classification_endpoint(model, size, class_names):
    labels = tf.constant([str(name) for name in class_names])
    k = min(TOP_K, len(class_names))

    def serve(images):
        probabilities = model(_unit_images(images, size), training=False)
        scores, indices = tf.math.top_k(probabilities, k=k)
        return {
            "probabilities": probabilities,
            "top_k_indices": indices,
            "top_k_scores": scores,
            "top_k_labels": tf.gather(labels, indices),
        }

    return serve


def _segmentation_endpoint(model, size, class_names):
    del class_names  # the class map holds indices; names are in metadata.json

    def serve(images):
        input_size = tf.shape(images)[1:3]
        probabilities = model(_unit_images(images, size), training=False)
        probabilities = tf.image.resize(probabilities, input_size, method="bilinear")
        return {
            "class_map": tf.argmax(probabilities, axis=-1, output_type=tf.int32),
            "probabilities": probabilities,
        }

    return serve


def _inpainting_endpoint(model, size, class_names):
    del class_names

    def serve(images, masks):
        input_size = tf.shape(images)[1:3]
        image = tf.cast(images, tf.float32) / 255.0
        known = tf.cast(masks > 0, tf.float32)
        model_known = _resize(known, size, method="nearest")
        prediction = model([_resize(image, size) * model_known, model_known], training=False)
        prediction = tf.clip_by_value(tf.image.resize(prediction, input_size), 0.0, 1.0)
        result = image * known + prediction * (1.0 - known)
        return {
            "inpainted": tf.cast(tf.round(result * 255.0), tf.uint8),
            "prediction": prediction,
        }

    return serve


def _detection_endpoint(model, size, class_names):
    # Imported here: kcnn.detection imports kcnn.backbones, which this module does not need.
    from kcnn.detection.detector import detection_decoder

    decoder = detection_decoder(model)
    labels = tf.constant([str(name) for name in class_names])
    model_height, model_width = decoder.image_size

    def serve(images):
        input_size = tf.cast(tf.shape(images)[1:3], tf.float32)
        detections = decoder(model(_unit_images(images, size), training=False))
        # Resizing maps pixel edges linearly, so box sides scale by the size ratio.
        scale = tf.stack([input_size[1] / model_width, input_size[0] / model_height] * 2)
        classes = detections["classes"]
        return {
            "boxes": detections["boxes"] * scale,
            "scores": detections["scores"],
            "classes": classes,
            "class_names": tf.where(classes >= 0, tf.gather(labels, tf.maximum(classes, 0)), ""),
            "count": detections["count"],
        }

    return serve


ENDPOINTS = {
    "classification": _classification_endpoint,
    "segmentation": _segmentation_endpoint,
    "inpainting": _inpainting_endpoint,
    "detection": _detection_endpoint,
}


def _uint8_signature(model, task):
    channels = [int(tensor.shape[-1]) for tensor in model.inputs]
    images = tf.TensorSpec((None, None, None, channels[0]), tf.uint8, name="images")
    if task == "inpainting":
        return [images, tf.TensorSpec((None, None, None, 1), tf.uint8, name="masks")]
    return [images]


def _raw_signature(model):
    specs = [tf.TensorSpec(tensor.shape, tensor.dtype, name=tensor.name) for tensor in model.inputs]
    return [specs[0] if len(specs) == 1 else specs]


def serving_metadata(model, task, class_names, image_size=None):
    """What a client needs to call the exported files, as a JSON-able dict."""
    size = _spatial_size(model, image_size)
    tflite_outputs = "as the `serve` signature"
    if task == "detection":
        tflite_outputs = (
            "final detections after per-class NMS, in model_input_size pixels: boxes (B, D, 4) "
            "xyxy, scores (B, D), classes (B, D) int32, -1 for padding rows, count (B,)"
        )
    uint8_inputs = {
        spec.name: f"uint8 {[None, None, None, spec.shape[-1]]}"
        for spec in _uint8_signature(model, task)
    }
    return {
        "task": task,
        "class_names": [str(name) for name in class_names],
        "model_input_size": list(size) if size is not None else None,
        "signatures": {
            SERVING_SIGNATURE: {
                "inputs": uint8_inputs,
                "preprocessing": "resized to model_input_size (bilinear; masks nearest) and "
                "divided by 255 inside the graph",
            },
            RAW_SIGNATURE: {
                "inputs": {
                    tensor.name: f"float32 {list(tensor.shape)} in [0, 1]"
                    for tensor in model.inputs
                }
            },
        },
        "tflite_inputs": "as the `serve` signature: float32 in [0, 1] at model_input_size "
        "(int8/uint8 with the file's quantization parameters for full-integer exports)",
        "tflite_outputs": tflite_outputs,
    }


def write_serving_saved_model(model, directory, task, class_names, image_size=None):
    """Writes a SavedModel with the `serving_default` (uint8) and `serve` (float) endpoints
    into `directory`, which must not exist yet (see `kcnn.export.export_saved_model`).

    Args:
        model: a built `keras.Model` of `task`.
        directory: folder to create.
        task: `"classification"`, `"segmentation"`, `"inpainting"` or `"detection"`.
        class_names: the class names (top-k labels of classification, detection labels).
        image_size: int or (height, width) the uint8 images are resized to when the model's
            input size is not static. None keeps the client's size.
    """
    if task not in ENDPOINTS:
        raise ValueError(
            f"`task` must be one of {sorted(ENDPOINTS)} for a serving signature. "
            f"Received: task={task!r}"
        )
    size = _spatial_size(model, image_size)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        SERVING_SIGNATURE,
        ENDPOINTS[task](model, size, class_names),
        input_signature=_uint8_signature(model, task),
    )
    archive.add_endpoint(RAW_SIGNATURE, model.__call__, input_signature=_raw_signature(model))
    archive.write_out(str(directory), verbose=False)
