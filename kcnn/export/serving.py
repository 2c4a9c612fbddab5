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
  - localization: `images` uint8 (B, H, W, C) -> `box` float32 (B, 4) `(x_min, y_min,
    x_max, y_max)` in pixels of the input image, `class_index` int32 (B,), `label` (B,)
    strings, `score` (B,) (the class probability) and `probabilities` (B, K);
  - detection: `images` uint8 (B, H, W, C) -> after decoding and per-class NMS, `boxes`
    float32 (B, D, 4) `(x_min, y_min, x_max, y_max)` in pixels of the input image, `scores`
    (B, D), `classes` int32 (B, D), `class_names` (B, D) strings and `count` int32 (B,):
    image b has `count[b]` detections, best first; the rows after them are padding (boxes
    and scores 0, class -1, name "").
  - instance segmentation: the same, and `masks` float32 (B, D, m, m), each detection's mask
    probabilities in the frame of its box (`kcnn.detection.paste_masks` pastes them into the
    image).

- `serve` is the Keras model itself on float32 inputs in [0, 1] (what `model.export` writes);
  the TFLite files are converted from it, except detection's, which are converted from the
  detector followed by its decoder and NMS (`kcnn.detection.detector_with_decoder`):
  they take the float image and return the final detections, in model-input pixels.

Each task builds its own `serving_default` (`kcnn.tasks.Task.serving_signature`) from the
endpoints of this module; this module knows no task.

Neither needs kcnn to run: `tf.saved_model.load(path).signatures["serving_default"]` or
`saved_model_cli run --dir PATH --tag_set serve --signature_def serving_default ...`.
"""

import dataclasses

import keras
import tensorflow as tf

SERVING_SIGNATURE = "serving_default"
RAW_SIGNATURE = "serve"
TOP_K = 5


@dataclasses.dataclass(frozen=True)
class ServingSignature:
    """A SavedModel endpoint: a function of uint8 tensors returning a dict of outputs, and
    the `tf.TensorSpec` of each of its inputs."""

    function: object
    inputs: list


def spatial_size(model, image_size=None):
    """The (height, width) the model takes: its static input size, else `image_size`
    (an int or a pair), else None (the client's size is kept)."""
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


def uint8_image_specs(model, masks=False):
    """The uint8 inputs of a `serving_default`: `images` (B, H, W, C) of any size, and
    with `masks=True` also `masks` (B, H, W, 1)."""
    channels = int(model.inputs[0].shape[-1])
    specs = [tf.TensorSpec((None, None, None, channels), tf.uint8, name="images")]
    if masks:
        specs.append(tf.TensorSpec((None, None, None, 1), tf.uint8, name="masks"))
    return specs


def classification_endpoint(model, class_names, image_size=None):
    """uint8 `images` -> `probabilities` (B, K), `top_k_indices`, `top_k_scores` and
    `top_k_labels` (class names)."""
    size = spatial_size(model, image_size)
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


def segmentation_endpoint(model, image_size=None):
    """uint8 `images` -> `class_map` int32 (B, H, W) and `probabilities` (B, H, W, K), both
    at the input's size."""
    size = spatial_size(model, image_size)

    def serve(images):
        input_size = tf.shape(images)[1:3]
        probabilities = model(_unit_images(images, size), training=False)
        probabilities = tf.image.resize(probabilities, input_size, method="bilinear")
        return {
            "class_map": tf.argmax(probabilities, axis=-1, output_type=tf.int32),
            "probabilities": probabilities,
        }

    return serve


def inpainting_endpoint(model, image_size=None):
    """uint8 `images` and `masks` (nonzero = known) -> `inpainted` uint8, the known pixels
    kept and the holes filled, and `prediction`, the network's float32 output in [0, 1]."""
    size = spatial_size(model, image_size)

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


def localization_endpoint(model, class_names, image_size=None):
    """uint8 `images` -> `box` (B, 4) in pixels of the input image, `class_index`, `label`,
    `score` and `probabilities`, from a model whose output is the box as fractions of the
    image (4 numbers) followed by the class probabilities."""
    size = spatial_size(model, image_size)
    labels = tf.constant([str(name) for name in class_names])

    def serve(images):
        input_size = tf.cast(tf.shape(images)[1:3], tf.float32)
        outputs = model(_unit_images(images, size), training=False)
        probabilities = outputs[:, 4:]
        indices = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
        # Fractions of the image are the same before and after resizing.
        scale = tf.stack([input_size[1], input_size[0]] * 2)
        return {
            "box": outputs[:, :4] * scale,
            "class_index": indices,
            "label": tf.gather(labels, indices),
            "score": tf.reduce_max(probabilities, axis=-1),
            "probabilities": probabilities,
        }

    return serve


def detection_endpoint(model, decoder, class_names, image_size=None):
    """uint8 `images` -> `decoder`'s detections of the model's output, boxes in pixels of
    the input image, with `class_names` (B, D) strings ("" on padding rows).

    Args:
        decoder: a layer mapping the model's output to `boxes`, `scores`, `classes` and
            `count` for images of `decoder.image_size` (e.g. `kcnn.detection`'s
            `DetectionDecoder`), and for Mask R-CNN `masks` (B, D, m, m), each detection's
            mask in the frame of its box, which is returned as it is (it scales with the
            box).
    """
    size = spatial_size(model, image_size)
    labels = tf.constant([str(name) for name in class_names])
    model_height, model_width = decoder.image_size

    def serve(images):
        input_size = tf.cast(tf.shape(images)[1:3], tf.float32)
        detections = decoder(model(_unit_images(images, size), training=False))
        # Resizing maps pixel edges linearly, so box sides scale by the size ratio.
        scale = tf.stack([input_size[1] / model_width, input_size[0] / model_height] * 2)
        classes = detections["classes"]
        outputs = {
            "boxes": detections["boxes"] * scale,
            "scores": detections["scores"],
            "classes": classes,
            "class_names": tf.where(classes >= 0, tf.gather(labels, tf.maximum(classes, 0)), ""),
            "count": detections["count"],
        }
        if "masks" in detections:
            outputs["masks"] = detections["masks"]
        return outputs

    return serve


def _raw_signature(model):
    specs = [tf.TensorSpec(tensor.shape, tensor.dtype, name=tensor.name) for tensor in model.inputs]
    return [specs[0] if len(specs) == 1 else specs]


def serving_metadata(model, task, class_names, image_size=None):
    """What a client needs to call the exported files, as a JSON-able dict.

    Args:
        model: the trained `keras.Model`.
        task: the model's `kcnn.tasks.Task` (its name, serving signature and what its
            TFLite files return).
        class_names: the class names.
        image_size: int or (height, width) the model was trained at, when its input size
            is not static.
    """
    size = spatial_size(model, image_size)
    signature = task.serving_signature(model, class_names, image_size)
    uint8_inputs = {
        spec.name: f"uint8 {[None, None, None, spec.shape[-1]]}" for spec in signature.inputs
    }
    return {
        "task": task.name,
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
        "tflite_outputs": task.tflite_outputs,
    }


def write_raw_saved_model(model, directory):
    """Writes a SavedModel with only Keras's float `serve` endpoint (the model itself, as
    `model.export` writes it) into `directory`, for the TFLite converter to read.

    The same graph and variables as `model.export`, traced once: `model.export` traces the
    model three times (the endpoint, its `serving_default` alias and the signature) and
    writes functions the converter then loads again. Writing a small MobileNetV3 U-Net this
    way takes about half the time, and the converter makes the same flatbuffer byte for byte
    (`tests/export/test_exporters.py` checks it).
    """
    module = tf.Module()
    # Keras's endpoint: the model's `__call__` on its input signature.
    module.serve = tf.function(
        model.__call__, input_signature=_raw_signature(model), autograph=False
    )
    concrete = module.serve.get_concrete_function()
    # The TensorFlow variables the graph reads, tracked as `keras.export.ExportArchive`
    # tracks them, so the SavedModel restores them.
    module.captured_variables = list(concrete.variables)
    tf.saved_model.save(module, str(directory), signatures={RAW_SIGNATURE: concrete})


def write_serving_saved_model(model, directory, signature):
    """Writes a SavedModel with the `serving_default` endpoint `signature` (a
    `ServingSignature`) and Keras's float `serve` endpoint into `directory`, which must not
    exist yet (see `kcnn.export.export_saved_model`)."""
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(SERVING_SIGNATURE, signature.function, input_signature=signature.inputs)
    archive.add_endpoint(RAW_SIGNATURE, model.__call__, input_signature=_raw_signature(model))
    archive.write_out(str(directory), verbose=False)
