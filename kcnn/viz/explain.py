"""What a trained CNN looks at: layer outputs, saliency, occlusion and Grad-CAM.

Every function here computes NumPy arrays; the figures that show them are in
`kcnn.viz.explain_plots`. They take any functional (or Sequential) Keras model, including
kcnn's models whose backbone is a nested model: a layer is found by name anywhere inside.

A class *score* is the input of the final softmax when the model ends in a layer with a
softmax activation (as in the papers: a saturated probability has no gradient), and the
model's output otherwise. A model that averages mirror views at inference
(`build_classifier(..., test_time_flip=True)`) is explained on the image as given, one
view. Images are float arrays `(H, W, C)` in the model's input scale
(floats in [0, 1] for kcnn's data pipelines).
"""

from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from kcnn._validation import check_positive_int
from kcnn.data import read_image
from kcnn.data._imaging import resize_image

CONV_LAYER_TYPES = (
    keras.layers.Conv2D,
    keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv2D,
    keras.layers.Conv2DTranspose,
)


def _walk_layers(model):
    """Yields every layer of `model` and of the models nested in it, in graph order."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _walk_layers(layer)
        else:
            yield layer


def _is_conv(layer):
    if isinstance(layer, CONV_LAYER_TYPES):
        return True
    # kcnn's own conv layers (DeformableConv2D, PartialConv2D, ...) own a 4-D kernel.
    kernel = getattr(layer, "kernel", None)
    return kernel is not None and len(kernel.shape) == 4


def conv_layer_names(model):
    """Names of the convolution layers of `model`, nested models included, in graph order.

    Example:
    >>> import keras
    >>> inputs = keras.Input((8, 8, 1))
    >>> x = keras.layers.Conv2D(4, 3, name="first")(inputs)
    >>> x = keras.layers.Conv2D(4, 3, name="second")(x)
    >>> conv_layer_names(keras.Model(inputs, x))
    ['first', 'second']
    """
    return [layer.name for layer in _walk_layers(model) if _is_conv(layer)]


def find_layer(model, layer_name):
    """Returns the layer called `layer_name` in `model` or in a model nested in it.

    Raises:
        ValueError: if there is no such layer; the message lists the conv layers.
    """
    for layer in _walk_layers(model):
        if layer.name == layer_name:
            return layer
    raise ValueError(
        f"Unknown `layer_name`={layer_name!r}: model '{model.name}' (nested models included) "
        f"has no layer of that name. Its conv layers: {conv_layer_names(model)}; all layers: "
        f"{[layer.name for layer in _walk_layers(model)]}"
    )


def _contains(model, layer):
    return any(candidate is layer for candidate in _walk_layers(model))


def _is_view_layer(operation):
    """A layer that adds views at inference or averages them back (`kcnn.layers.MirrorViews`,
    `AverageMirrorViews`, marked `inference_views`): an explanation follows one view."""
    return getattr(operation, "inference_views", False) is True


def output_layer(model):
    """The layer that computes the model's (first) output, looking through a final
    `AverageMirrorViews` to the layer whose predictions it averages."""
    history = getattr(model.outputs[0], "_keras_history", None)
    operation = None if history is None else history.operation
    if _is_view_layer(operation):
        operation = operation.input._keras_history.operation
    return operation


def _run(model, inputs, layer, captured, strip_softmax):
    """Runs `model` on `inputs` eagerly, appending the output of `layer` to `captured`.

    With `strip_softmax`, the final layer's softmax activation is skipped.
    """
    final_layer = output_layer(model) if strip_softmax else None

    def operation_fn(operation):
        if isinstance(operation, keras.Model) and layer is not None and _contains(operation, layer):
            return lambda *args, **kwargs: _run(operation, args[0], layer, captured, False)
        if _is_view_layer(operation):
            return lambda *args, **kwargs: args[0]
        if operation is layer or operation is final_layer:
            return lambda *args, **kwargs: _call(operation, args, kwargs)
        return operation

    def _call(operation, args, kwargs):
        if operation is final_layer and operation.activation is keras.activations.softmax:
            # Keras has no "logits" output to ask for: run the last layer once without its
            # softmax (restored below), so the class score is the softmax's input.
            operation.activation = keras.activations.linear
            try:
                outputs = operation(*args, **kwargs)
            finally:
                operation.activation = keras.activations.softmax
        else:
            outputs = operation(*args, **kwargs)
        if operation is layer:
            captured.append(outputs)
        return outputs

    if isinstance(model, keras.Sequential):
        outputs = inputs
        for operation in model.layers:
            outputs = operation_fn(operation)(outputs)
        return outputs
    if not hasattr(model, "_run_through_graph"):
        raise ValueError(
            "`model` must be a functional or Sequential Keras model (a subclassed model has "
            f"no graph to take a layer's output from). Received: {type(model).__name__}"
        )
    # Keras has no public hook on a layer inside a nested model; replaying the graph (what
    # Functional.call itself does) with one layer wrapped gives its output and the scores
    # from the same forward pass, so a tape sees both.
    return model._run_through_graph(inputs, operation_fn=operation_fn)


def forward(model, images, layer=None, scores=False):
    """(output of `layer` or None, model output or class scores) for an image batch."""
    captured = []
    outputs = _run(model, images, layer, captured, strip_softmax=scores)
    return (captured[0] if captured else None), outputs


def check_image(model, image, argument="image"):
    """Returns `image` as float32 `(H, W, C)`, checked against the model's input shape."""
    return check_images(model, np.asarray(image)[np.newaxis], argument, batch=False)[0]


def check_images(model, images, argument="images", batch=True):
    """Returns `images` as float32 `(N, H, W, C)`, checked against the model's input shape."""
    images = np.asarray(images)
    expected = tuple(model.inputs[0].shape[1:])
    if images.dtype == np.uint8:
        raise ValueError(
            f"`{argument}` must be floats in the model's input scale (e.g. uint8 / 255). "
            f"Received: {argument}.dtype=uint8"
        )
    matches = images.ndim == len(expected) + 1 and all(
        size is None or size == actual
        for size, actual in zip(expected, images.shape[1:], strict=True)
    )
    if not matches:
        if batch:
            wanted = "a batch of model inputs (N, " + ", ".join(map(str, expected)) + ")"
            shape = images.shape
        else:
            wanted = f"the shape of one model input {expected} (no batch axis)"
            shape = images.shape[1:]
        raise ValueError(f"`{argument}` must have {wanted}. Received: {argument}.shape={shape}")
    return images.astype(np.float32)


def check_scores(model):
    if len(model.outputs) != 1 or len(model.outputs[0].shape) != 2:
        raise ValueError(
            "Explanations need a classifier: one output of shape (batch, classes). Received "
            f"a model with output shapes {[tuple(output.shape) for output in model.outputs]}"
        )


def _class_index(scores, class_index):
    """The explained class: `class_index`, or the top-scoring class of each image."""
    num_classes = int(scores.shape[-1])
    if class_index is None:
        return tf.argmax(scores, axis=-1, output_type=tf.int32)
    if not isinstance(class_index, int | np.integer) or not 0 <= class_index < num_classes:
        raise ValueError(
            f"`class_index` must be None or an int in [0, {num_classes}). "
            f"Received: class_index={class_index!r}"
        )
    return tf.fill([tf.shape(scores)[0]], tf.constant(int(class_index), tf.int32))


def _picked(scores, classes):
    return tf.gather(scores, classes, axis=1, batch_dims=1)


def layer_output(model, images, layer_name, batch_size=256):
    """Outputs of the layer `layer_name` (nested models included) for a batch of images.

    Args:
        model: a functional or Sequential Keras model.
        images: float array `(N, H, W, C)` in the model's input scale.
        layer_name: str. Name of a layer of `model` or of a model nested in it.
        batch_size: positive int. Images per forward pass. Defaults to 256.

    Returns:
        float32 array `(N, ...)`: the layer's output, e.g. `(N, h, w, filters)` for a conv.

    Raises:
        ValueError: for an unknown layer name or images of the wrong shape.

    Example:
    >>> import keras, numpy as np
    >>> inputs = keras.Input((8, 8, 1))
    >>> x = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    >>> model = keras.Model(inputs, keras.layers.Flatten()(x))
    >>> layer_output(model, np.zeros((2, 8, 8, 1)), "conv").shape
    (2, 6, 6, 4)
    """
    layer = find_layer(model, layer_name)
    images = check_images(model, images)
    check_positive_int(batch_size, "batch_size")
    batches = [
        forward(model, tf.constant(images[start : start + batch_size]), layer)[0]
        for start in range(0, len(images), batch_size)
    ]
    return np.concatenate([np.asarray(batch, dtype=np.float32) for batch in batches])


def _input_gradients(model, images, class_index):
    images = tf.constant(images)
    with tf.GradientTape() as tape:
        tape.watch(images)
        _, scores = forward(model, images, scores=True)
        picked = _picked(scores, _class_index(scores, class_index))
    return tape.gradient(picked, images).numpy()


def saliency_map(model, image, class_index=None, smoothgrad_samples=0, noise=0.1, seed=0):
    """Image-specific class saliency: how much each pixel changes the class score.

    Simonyan, Vedaldi & Zisserman, "Deep Inside Convolutional Networks: Visualising Image
    Classification Models and Saliency Maps", 2014 (arXiv:1312.6034), sec. 3: the map is
    max over channels of |dS_c / dx|. With `smoothgrad_samples` > 0 the gradient is first
    averaged over that many copies of the image with Gaussian noise of standard deviation
    `noise` * (max - min of the image) (SmoothGrad: Smilkov, Thorat, Kim, Viegas &
    Wattenberg 2017, arXiv:1706.03825), which removes most of the speckle.

    Args:
        model: a Keras classifier (functional or Sequential, output `(batch, classes)`).
        image: float array `(H, W, C)` in the model's input scale.
        class_index: int or None. Class to explain. Defaults to the top-scoring class.
        smoothgrad_samples: non-negative int. 0 for the plain gradient. Defaults to 0.
        noise: float >= 0. Noise level relative to the image's value range. Defaults to 0.1.
        seed: int. Seed of the SmoothGrad noise. Defaults to 0.

    Returns:
        float32 array `(H, W)`, non-negative.

    Raises:
        ValueError: on an image of the wrong shape, a bad `class_index`, a negative
            `smoothgrad_samples` or `noise`.

    Example:
    >>> import keras, numpy as np
    >>> inputs = keras.Input((4, 4, 1))
    >>> outputs = keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(inputs))
    >>> saliency_map(keras.Model(inputs, outputs), np.ones((4, 4, 1))).shape
    (4, 4)
    """
    check_scores(model)
    image = check_image(model, image)
    check_positive_int(smoothgrad_samples, "smoothgrad_samples", minimum=0)
    if not noise >= 0:
        raise ValueError(f"`noise` must be >= 0. Received: noise={noise!r}")
    if smoothgrad_samples == 0:
        gradients = _input_gradients(model, image[np.newaxis], class_index)
    else:
        # SmoothGrad explains the class of the clean image in every noisy copy.
        if class_index is None:
            _, scores = forward(model, tf.constant(image[np.newaxis]), scores=True)
            class_index = int(np.argmax(scores[0]))
        sigma = noise * float(image.max() - image.min())
        rng = np.random.default_rng(seed)
        noisy = image + rng.normal(0.0, sigma, (smoothgrad_samples, *image.shape))
        gradients = _input_gradients(model, noisy.astype(np.float32), class_index)
    return np.abs(gradients.mean(axis=0)).max(axis=-1).astype(np.float32)


def _window_starts(size, patch, stride):
    starts = list(range(0, max(size - patch, 0) + 1, stride))
    if starts[-1] + patch < size:
        starts.append(size - patch)  # the last window reaches the border
    return starts


def occlusion_map(model, image, patch=None, stride=None, class_index=None, fill=None):
    """Occlusion sensitivity: the drop in class probability when a patch is greyed out.

    Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks", ECCV 2014
    (arXiv:1311.2901), sec. 4.2: a square patch slides over the image; each pixel gets the
    mean, over the windows that cover it, of p_c(image) - p_c(image with the window filled).

    Args:
        model: a Keras classifier (output `(batch, classes)` of probabilities).
        image: float array `(H, W, C)` in the model's input scale.
        patch: positive int. Side of the square patch. Defaults to a quarter of the
            shorter side (at least 1).
        stride: positive int. Step between windows. Defaults to half the patch (at least 1).
        class_index: int or None. Class to explain. Defaults to the predicted class.
        fill: float, per-channel sequence or None. Value put in the patch. Defaults to the
            image's per-channel mean.

    Returns:
        float32 array `(H, W)`: positive where hiding the pixel lowers the probability.

    Raises:
        ValueError: on an image of the wrong shape, a bad `class_index`, or a `patch` or
            `stride` that is not a positive int (or a patch larger than the image).

    Example:
    >>> import keras, numpy as np
    >>> inputs = keras.Input((8, 8, 1))
    >>> outputs = keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(inputs))
    >>> occlusion_map(keras.Model(inputs, outputs), np.ones((8, 8, 1)), patch=4).shape
    (8, 8)
    """
    check_scores(model)
    image = check_image(model, image)
    height, width = image.shape[:2]
    patch = max(1, min(height, width) // 4) if patch is None else patch
    check_positive_int(patch, "patch")
    if patch > min(height, width):
        raise ValueError(
            f"`patch` must fit in the image ({height}x{width}). Received: patch={patch}"
        )
    stride = max(1, patch // 2) if stride is None else stride
    check_positive_int(stride, "stride")
    fill = image.mean(axis=(0, 1)) if fill is None else np.broadcast_to(fill, image.shape[-1:])

    windows = [
        (top, left)
        for top in _window_starts(height, patch, stride)
        for left in _window_starts(width, patch, stride)
    ]
    occluded = np.repeat(image[np.newaxis], len(windows), axis=0)
    for index, (top, left) in enumerate(windows):
        occluded[index, top : top + patch, left : left + patch] = fill
    reference = np.asarray(model(image[np.newaxis], training=False))
    if class_index is None:
        class_index = int(reference[0].argmax())
    classes = _class_index(tf.constant(reference), class_index).numpy()[0]
    probabilities = np.concatenate(
        [
            np.asarray(model(occluded[start : start + 256], training=False))
            for start in range(0, len(occluded), 256)
        ]
    )
    drops = reference[0, classes] - probabilities[:, classes]
    total = np.zeros((height, width))
    count = np.zeros((height, width))
    for drop, (top, left) in zip(drops, windows, strict=True):
        total[top : top + patch, left : left + patch] += drop
        count[top : top + patch, left : left + patch] += 1
    return (total / count).astype(np.float32)


def grad_cam(model, image, layer_name=None, class_index=None):
    """Grad-CAM: where a conv layer's features vote for a class.

    Selvaraju, Cogswell, Das, Vedantam, Parikh & Batra, "Grad-CAM: Visual Explanations from
    Deep Networks via Gradient-based Localization", ICCV 2017 (arXiv:1610.02391), eq. (1)-(2):
    alpha_k = spatial mean of dS_c / dA^k, map = ReLU(sum_k alpha_k A^k), bilinearly resized
    to the input and scaled to a maximum of 1.

    Args:
        model: a Keras classifier (functional or Sequential, nested backbones included).
        image: float array `(H, W, C)` in the model's input scale.
        layer_name: str or None. A conv layer (or any layer with a 4-D output). Defaults to
            the last conv layer of the model.
        class_index: int or None. Class to explain. Defaults to the top-scoring class.

    Returns:
        float32 array `(H, W)` in [0, 1] (all zeros when no feature votes for the class).

    Raises:
        ValueError: on an unknown layer (the message lists the conv layers), a layer whose
            output is not `(batch, h, w, channels)`, a model without conv layers, an image
            of the wrong shape or a bad `class_index`.

    Example:
    >>> import keras, numpy as np
    >>> inputs = keras.Input((8, 8, 1))
    >>> x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(inputs)
    >>> x = keras.layers.GlobalAveragePooling2D()(x)
    >>> model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))
    >>> grad_cam(model, np.random.default_rng(0).random((8, 8, 1))).shape
    (8, 8)
    """
    check_scores(model)
    image = check_image(model, image)
    if layer_name is None:
        names = conv_layer_names(model)
        if not names:
            raise ValueError(
                f"Model '{model.name}' has no conv layer; pass `layer_name` of a layer with a "
                "4-D output."
            )
        layer_name = names[-1]
    layer = find_layer(model, layer_name)
    with tf.GradientTape() as tape:
        activations, scores = forward(model, tf.constant(image[np.newaxis]), layer, scores=True)
        picked = _picked(scores, _class_index(scores, class_index))
    if activations is None or len(activations.shape) != 4:
        shape = None if activations is None else tuple(activations.shape)
        raise ValueError(
            f"`layer_name`={layer_name!r} must name a layer with a (batch, height, width, "
            f"channels) output on the path to the scores. Received output shape: {shape}"
        )
    gradients = tape.gradient(picked, activations)
    weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)
    cam = tf.nn.relu(tf.reduce_sum(weights * activations, axis=-1, keepdims=True))
    cam = tf.image.resize(cam, image.shape[:2], method="bilinear")[0, ..., 0].numpy()
    peak = cam.max()
    return (cam / peak if peak > 0 else cam).astype(np.float32)


def load_image_for_model(path, model):
    """Reads an image file as one input of `model`: float32 `(H, W, C)` in [0, 1].

    PNG, JPEG, BMP or GIF; converted to grey or RGB to match the model's channel count and
    resized (bilinear) to its fixed input size, the scale of kcnn's data pipelines (uint8 / 255).

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: if the file is not a readable image, or the model takes neither 1 nor 3
            channels.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"Image file '{path}' does not exist.")
    height, width, channels = model.inputs[0].shape[1:]
    if channels not in (1, 3):
        raise ValueError(
            f"Model '{model.name}' takes {channels} channels; only 1 (grey) or 3 (RGB) "
            "images can be read from a file."
        )
    image = read_image(path, "grayscale" if channels == 1 else "rgb")
    image = resize_image(image, height or image.shape[0], width or image.shape[1])
    return image.astype(np.float32) / 255.0
