"""Pictures in pixel space of what a unit or a class responds to: the DeconvNet projection,
guided backpropagation and guided Grad-CAM.

Springenberg, Dosovitskiy, Brox & Riedmiller, "Striving for Simplicity: The All
Convolutional Net", ICLR 2015 workshop (arXiv:1412.6806), section 3.4 and figure 1, show that
the three ways of sending a signal from a unit back to the image differ only at the ReLUs.
With `x` the ReLU's forward input and `g` the signal coming back from above:

- backpropagation (Simonyan et al. 2014's saliency): `g * (x > 0)`;
- the DeconvNet (Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks",
  ECCV 2014, arXiv:1311.2901, section 2.1): `relu(g)`, the reconstruction is rectified
  whatever the forward sign was;
- guided backpropagation: `g * (x > 0) * (g > 0)`, both masks at once.

Everywhere else the backward pass is the one a tape computes: through a convolution it
applies the transposed filters (Zeiler & Fergus's "filtering"), through batch normalization
or a bias the linear map's transpose, and through max-pooling it puts each value back where
the maximum was. For the DeconvNet that last step is done literally as Zeiler & Fergus's
unpooling with switches: every `keras.layers.MaxPooling2D` is run as
`kcnn.ops.max_pool_with_argmax`, whose backward pass is `kcnn.ops.max_unpool` with the
recorded argmax (the same layers as `kcnn.layers.MaxPoolingWithArgmax2D`, which does this
already).

The ReLUs replaced are every ReLU the model computes through Keras: layers whose
`activation` is `"relu"`, `keras.layers.ReLU` (`max_value` kept, e.g. ReLU6) and
`keras.ops.relu` inside custom layers (kcnn's residual blocks). A ReLU written as
`tf.nn.relu` in a custom layer keeps the plain gradient. Leaky ReLUs and other activations
are left as they are. A model with no ReLU gives a `ValueError`.

kcnn's `DeconvNet` model (`kcnn.models.DeconvNet`) is the segmentation network of Noh, Hong
& Han (2015); `deconvnet_projection` here is Zeiler & Fergus's visualisation method.
"""

import contextlib

import keras
import keras.src.activations as keras_activations
import numpy as np
import tensorflow as tf

from kcnn.ops import max_pool_with_argmax
from kcnn.viz.explain import (
    _class_index,
    _picked,
    check_image,
    check_scores,
    find_layer,
    forward,
    grad_cam,
)

RULES = ("backprop", "deconvnet", "guided")


def _rectifier(rule):
    """`relu(x)` whose gradient follows `rule` (see the module docstring)."""

    @tf.custom_gradient
    def rectify(x):
        positive = tf.cast(x > 0, x.dtype)

        def gradient(upstream):
            if rule == "deconvnet":
                return tf.nn.relu(upstream)
            if rule == "guided":
                return upstream * positive * tf.cast(upstream > 0, upstream.dtype)
            return upstream * positive

        return tf.nn.relu(x), gradient

    return rectify


@contextlib.contextmanager
def backward_rule(model, rule, unpool_with_switches=None):
    """Within the block, every Keras ReLU of `model` sends signals back by `rule`.

    Args:
        model: a Keras model (nested models and custom layers included).
        rule: one of `RULES`: `"backprop"`, `"deconvnet"` or `"guided"`.
        unpool_with_switches: bool or None. Run `MaxPooling2D` layers as
            `max_pool_with_argmax`, whose backward pass is unpooling with the switches.
            Defaults to True for `"deconvnet"` only.

    Yields:
        A list that holds, after a forward pass, the number of ReLU calls replaced.

    Raises:
        ValueError: for an unknown `rule`.
    """
    if rule not in RULES:
        raise ValueError(f"`rule` must be one of {RULES}. Received: rule={rule!r}")
    if unpool_with_switches is None:
        unpool_with_switches = rule == "deconvnet"
    rectify = _rectifier(rule)
    calls = [0]
    plain_relu = keras_activations.relu
    plain_ops_relu = keras.ops.relu

    def relu(x, negative_slope=0.0, max_value=None, threshold=0.0):
        if negative_slope != 0.0 or threshold != 0.0:
            return plain_relu(x, negative_slope, max_value, threshold)
        calls[0] += 1
        y = rectify(tf.convert_to_tensor(x))
        return y if max_value is None else tf.minimum(y, tf.cast(max_value, y.dtype))

    swapped, pools = [], []
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if getattr(layer, "activation", None) is plain_relu:
            swapped.append(layer)
            layer.activation = relu
        if unpool_with_switches and type(layer) is keras.layers.MaxPooling2D:
            if layer.data_format == "channels_last":
                pools.append(layer)
                object.__setattr__(layer, "call", _switch_pool(layer))
    keras_activations.relu = relu
    keras.ops.relu = relu
    try:
        yield calls
    finally:
        keras_activations.relu = plain_relu
        keras.ops.relu = plain_ops_relu
        for layer in swapped:
            layer.activation = plain_relu
        for layer in pools:
            del layer.__dict__["call"]


def _switch_pool(layer):
    def call(inputs):
        pooled, _ = max_pool_with_argmax(inputs, layer.pool_size, layer.strides, layer.padding)
        return pooled

    return call


def _seed_at_unit(activations, channel, position):
    """The DeconvNet's starting point: one unit's activation, every other unit zero."""
    values = activations[0, ..., channel].numpy()
    if position is None:
        position = np.unravel_index(int(np.argmax(values)), values.shape)
    position = tuple(int(index) for index in position)
    if len(position) != values.ndim or not all(
        0 <= index < size for index, size in zip(position, values.shape, strict=True)
    ):
        raise ValueError(
            f"`position` must index the layer's output map of size {values.shape}. "
            f"Received: position={position!r}"
        )
    seed = np.zeros(activations.shape, np.float32)
    seed[(0, *position, channel)] = values[position]
    return tf.constant(seed)


def _project(model, image, rule, layer=None, channel=None, position=None, class_index=None):
    """Sends one unit (or class score) of `image` back to pixel space by `rule`."""
    image = check_image(model, image)
    if layer is None:
        check_scores(model)
    else:
        layer = find_layer(model, layer) if isinstance(layer, str) else layer
    inputs = tf.constant(image[np.newaxis])
    with backward_rule(model, rule) as calls, tf.GradientTape() as tape:
        tape.watch(inputs)
        activations, scores = forward(model, inputs, layer, scores=layer is None)
    if not calls[0]:
        raise ValueError(
            f"Model '{model.name}' computes no ReLU through Keras, so the {rule!r} rule has "
            "nothing to change (it applies at ReLUs only)."
        )
    if layer is None:
        with tape:
            target = _picked(scores, _class_index(scores, class_index))
        return tape.gradient(target, inputs)[0].numpy()
    if activations is None or len(activations.shape) != 4:
        shape = None if activations is None else tuple(activations.shape)
        raise ValueError(
            f"`layer`={layer.name!r} must be a layer with a (batch, height, width, channels) "
            f"output on the path to the model output. Received output shape: {shape}"
        )
    channels = int(activations.shape[-1])
    if not isinstance(channel, int | np.integer) or not 0 <= channel < channels:
        raise ValueError(
            f"`channel` must be an int in [0, {channels}) for layer {layer.name!r}. "
            f"Received: channel={channel!r}"
        )
    seed = _seed_at_unit(activations, int(channel), position)
    return tape.gradient(activations, inputs, output_gradients=seed)[0].numpy()


def deconvnet_projection(model, layer, channel, image, position=None, class_index=None):
    """Zeiler & Fergus's DeconvNet projection of one unit back to pixel space.

    Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks", ECCV 2014
    (arXiv:1311.2901), section 2.1: all activations of the layer but one are set to zero,
    and that one is passed back through the network in reverse, at each level unpooling
    with the switches recorded by max-pooling, rectifying, and filtering with the transposed
    filters, down to the pixels. The unit defaults to the channel's strongest activation on
    `image`, as in the paper's figures.

    Args:
        model: a functional or Sequential Keras model (nested models included).
        layer: str or Layer. The layer whose unit is projected; a 4-D output.
        channel: int. The feature map.
        image: float array `(H, W, C)` in the model's input scale.
        position: None or `(row, column)` of the unit in the layer's output. Defaults to
            the position of the channel's maximum.
        class_index: int or None. With `layer=None` and `channel=None`, a class score of a
            classifier (the softmax's input) is sent back by the same rule instead of a
            unit (Springenberg et al.'s "deconvnet" column). Defaults to the top class.

    Returns:
        float32 array `(H, W, C)`: the projection (zero outside the unit's receptive field).

    Raises:
        ValueError: on an unknown layer, a layer without a 4-D output, a channel or
            position out of range, an image of the wrong shape, or a model without ReLUs.

    Example:
    >>> import keras, numpy as np
    >>> inputs = keras.Input((8, 8, 1))
    >>> x = keras.layers.Conv2D(2, 3, activation="relu", name="conv")(inputs)
    >>> model = keras.Model(inputs, keras.layers.MaxPooling2D()(x))
    >>> image = np.random.default_rng(0).random((8, 8, 1))
    >>> deconvnet_projection(model, "conv", 0, image).shape
    (8, 8, 1)
    """
    if layer is None and channel is not None:
        raise ValueError(f"`channel` needs a `layer`. Received: layer=None, channel={channel!r}")
    return _project(model, image, "deconvnet", layer, channel, position, class_index)


def guided_backprop(model, image, class_index=None, layer=None, channel=None, position=None):
    """Guided backpropagation of a class score (or of one unit) to pixel space.

    Springenberg, Dosovitskiy, Brox & Riedmiller, "Striving for Simplicity: The All
    Convolutional Net", ICLR 2015 workshop (arXiv:1412.6806), section 3.4: the gradient,
    with the signal zeroed at each ReLU where either the forward input or the signal coming
    back is negative.

    Args:
        model: a Keras classifier (functional or Sequential, nested backbones included).
        image: float array `(H, W, C)` in the model's input scale.
        class_index: int or None. Class whose score is sent back (the softmax's input).
            Defaults to the top-scoring class. Ignored when `layer` is given.
        layer: None, str or Layer. To send back one unit of this layer instead of a class
            score (as `deconvnet_projection` does).
        channel: int. The unit's channel, with `layer`.
        position: None or `(row, column)`, with `layer`. Defaults to the channel's maximum.

    Returns:
        float32 array `(H, W, C)`.

    Raises:
        ValueError: as `deconvnet_projection`, or when `layer` is None and the model is not
            a classifier or `class_index` is out of range.

    Example:
    >>> import keras, numpy as np
    >>> inputs = keras.Input((8, 8, 1))
    >>> x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    >>> x = keras.layers.GlobalAveragePooling2D()(x)
    >>> model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))
    >>> guided_backprop(model, np.random.default_rng(0).random((8, 8, 1))).shape
    (8, 8, 1)
    """
    return _project(model, image, "guided", layer, channel, position, class_index)


def guided_grad_cam(model, image, class_index=None, layer_name=None):
    """Guided Grad-CAM: guided backpropagation times the Grad-CAM map, pixel by pixel.

    Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
    Localization", ICCV 2017 (arXiv:1610.02391), section 3.1: the fine detail of guided
    backpropagation, kept where Grad-CAM says the class is.

    Args:
        model: a Keras classifier.
        image: float array `(H, W, C)` in the model's input scale.
        class_index: int or None. Defaults to the top-scoring class.
        layer_name: str or None. The Grad-CAM layer. Defaults to the last conv layer.

    Returns:
        float32 array `(H, W, C)`.

    Raises:
        ValueError: as `guided_backprop` and `grad_cam`.
    """
    cam = grad_cam(model, image, layer_name, class_index)
    return (guided_backprop(model, image, class_index) * cam[..., np.newaxis]).astype(np.float32)
