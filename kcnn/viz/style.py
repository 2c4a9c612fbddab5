"""Neural style transfer (Gatys et al. 2016) and a random multi-scale texture network.

Gatys, Ecker & Bethge, "Image Style Transfer Using Convolutional Neural Networks", CVPR 2016
(first as arXiv:1508.06576, "A Neural Algorithm of Artistic Style"): an image is optimised
so that its features at some layers of a CNN match those of a content image, and the Gram
matrices of its features at other layers those of a style image. With F the `(N, M)` matrix
of N feature maps of M = H W positions at layer l, P that of the content image, and G = F F^T
and A the Gram matrices of the image and of the style image:

    L_content = 1/2 sum (F - P)^2           (eq. 1)
    E_l = 1 / (4 N^2 M^2) sum (G - A)^2     (eq. 4)
    L_style = sum_l w_l E_l, w_l = 1 / L    (eq. 5, L style layers)
    L = alpha L_content + beta L_style      (eq. 7)

The shared `kcnn.ops.gram_matrix` returns G / (N M) (it divides by C H W = N M). As
G - A = N M (G / (N M) - A / (N M)), E_l = 1/4 sum (G / (N M) - A / (N M))^2: `style_loss` is
the paper's E_l exactly. The style image's Gram is divided by its own size, so it may have
another size than the content: for M' positions, E_l compares G with A M / M', the paper's
formula (which assumes M' = M) with A rescaled to M positions.

`content_loss` is the paper's divided by N M, 1/2 mean (F - P)^2, so that both terms are
independent of the image size and one `style_weight` serves any size. Several content layers
are averaged with equal weights, as the style layers are.
"""

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from kcnn._validation import check_positive_int, is_int, is_number, normalize_tuple
from kcnn.ops import gram_matrix
from kcnn.viz.explain import check_image
from kcnn.viz.plots import plt, show_image

INITS = ("content", "noise")
HISTORY_KEYS = ("loss", "content_loss", "style_loss")
TITLES = ("content", "style", "result")
# Adam's step is independent of the loss's scale only while the gradients are well above its
# epsilon. Near a match they are about 1e-8 per pixel (measured: random_texture_extractor,
# a 64 x 64 texture, style_weight=1); with Keras' 1e-7 the steps shrink and a synthesis from
# noise stalls in noise.
ADAM_EPSILON = 1e-12


def content_loss(features, content_features):
    """Content loss of Gatys et al. (2016), eq. (1), divided by N M: 1/2 mean (F - P)^2.

    Args:
        features: float tensor `(B, ...)`. Features F of B images at one layer.
        content_features: float tensor of the same shape (or broadcastable). Features P.

    Returns:
        A `(B,)` tensor, one loss per image.

    Example:

    >>> import numpy as np
    >>> float(content_loss(np.ones((1, 2, 2, 3)), np.zeros((1, 2, 2, 3)))[0])
    0.5
    """
    squared = ops.square(ops.convert_to_tensor(features) - content_features)
    return 0.5 * ops.mean(squared, axis=tuple(range(1, len(squared.shape))))


def style_loss(features, style_features):
    """E_l of Gatys et al. (2016), eq. (4), as 1/4 sum (G / (N M) - A / (N M))^2.

    Equal to 1 / (4 N^2 M^2) sum (G - A)^2 for the unnormalised Grams (module docstring).

    Args:
        features: float tensor `(B, H, W, C)`. Features of B images at one layer.
        style_features: float tensor `(1 or B, H', W', C)`. Features of the style image.

    Returns:
        A `(B,)` tensor, one loss per image.

    Example:

    >>> import numpy as np
    >>> float(style_loss(np.ones((1, 2, 2, 1)), np.zeros((1, 3, 3, 1)))[0])  # G / (N M) = 1
    0.25
    """
    return _gram_distance(gram_matrix(features), gram_matrix(style_features))


def _gram_distance(gram, style_gram):
    return 0.25 * ops.sum(ops.square(gram - style_gram), axis=(1, 2))


def _layers_named(extractor, names, argument):
    layers = {layer.name: layer for layer in extractor.layers}
    if isinstance(names, str) or not isinstance(names, list | tuple) or not names:
        raise ValueError(
            f"`{argument}` must be a non-empty list of layer names. Received: {argument}={names!r}"
        )
    unknown = [name for name in names if name not in layers]
    if unknown:
        raise ValueError(
            f"Unknown layer name(s) {unknown} in `{argument}`: `extractor` '{extractor.name}' "
            f"has no top-level layer of that name. Its layers: {list(layers)}"
        )
    return [layers[name] for name in names]


def _feature_model(extractor, content_layers, style_layers):
    """One model from the extractor's input to the content, then the style layer outputs."""
    if not isinstance(extractor, keras.Model) or len(getattr(extractor, "inputs", None) or []) != 1:
        raise ValueError(
            "`extractor` must be a functional or Sequential Keras model with one input. "
            f"Received: extractor={extractor!r}"
        )
    content = _layers_named(extractor, content_layers, "content_layers")
    style = _layers_named(extractor, style_layers, "style_layers")
    for layer in style:
        if len(layer.output.shape) != 4:
            raise ValueError(
                "`style_layers` must name layers with 4-D outputs (batch, height, width, "
                f"channels). Received: '{layer.name}' of output shape {layer.output.shape}"
            )
    outputs = [layer.output for layer in content + style]
    return keras.Model(extractor.inputs[0], outputs, name=f"{extractor.name}_style_features")


def _check_picture(extractor, image, argument):
    array = np.asarray(image)
    if array.dtype != np.uint8 and array.dtype.kind != "f":
        raise ValueError(
            f"`{argument}` must be floats in the extractor's input scale. "
            f"Received: {argument}.dtype={array.dtype}"
        )
    array = check_image(extractor, array, argument)  # refuses uint8, checks the shape
    if not np.isfinite(array).all():
        raise ValueError(f"`{argument}` must be finite. Received: NaN or infinite values")
    return array


def _check_value_range(value_range):
    if not (
        isinstance(value_range, tuple | list)
        and len(value_range) == 2
        and all(is_number(value) for value in value_range)
        and value_range[0] < value_range[1]
    ):
        raise ValueError(
            "`value_range` must be (low, high) with low < high. "
            f"Received: value_range={value_range!r}"
        )
    return float(value_range[0]), float(value_range[1])


def _is_non_negative(value):
    return is_number(value) and value >= 0


def style_transfer(
    content,
    style,
    extractor,
    content_layers,
    style_layers,
    steps=200,
    content_weight=1.0,
    style_weight=1e3,
    learning_rate=0.02,
    value_range=(0.0, 1.0),
    init="content",
    seed=0,
    verbose=1,
):
    """Paints `content` in the style of `style` (Gatys, Ecker & Bethge, CVPR 2016).

    Minimises `content_weight * L_content + style_weight * L_style` (module docstring) over
    the pixels. Gatys et al. used L-BFGS; Adam is simpler, runs as one compiled
    `tf.function` step, and lets the pixels be clipped to `value_range` after every step.
    Gatys et al. start from white noise (`init="noise"`); starting from the content image
    (`init="content"`, as the Keras style-transfer example does) keeps its layout.

    The default `style_weight` was measured with `random_texture_extractor` on four pairs
    of 32 x 32 photos in [0, 1] and 200 steps: the style loss falls 300 to 1800 times and
    the luminance keeps a correlation of 0.7 to 0.9 with the content's; 1e4 lowers that to
    0.4 on two pairs, 1e2 lowers the style loss only 30 to 170 times. It depends on the
    network: the content term grows with the square of the feature scale, the style term
    with its fourth power. With VGG-19 from a local weights file
    (`keras.applications.VGG19(weights="/path/to/file.h5", include_top=False)`; nothing is
    downloaded), its input scale and the paper's layers (content `block4_conv2`, style
    `block1_conv1` ... `block5_conv1`) the results are those of the paper; with
    `random_texture_extractor` expect colours and local texture.

    Args:
        content: float array `(H, W, C)` in the extractor's input scale.
        style: float array `(H', W', C)`, of any size the extractor accepts.
        extractor: a functional or Sequential Keras model with one input.
        content_layers: non-empty list of str. Names of top-level layers of `extractor`.
        style_layers: non-empty list of str. Names of top-level layers with 4-D outputs.
        steps: positive int. Adam steps. Defaults to 200.
        content_weight: float >= 0. alpha. Defaults to 1.
        style_weight: float >= 0. beta. Defaults to 1e3.
        learning_rate: float > 0. Adam's step size, in pixel units. Defaults to 0.02.
        value_range: `(low, high)` of valid pixel values. Defaults to `(0.0, 1.0)`.
        init: `"content"` or `"noise"` (uniform in `value_range`). Defaults to `"content"`.
        seed: int. Seed of the noise. Defaults to 0.
        verbose: 0 (silent), 1 (progress bar) or 2 (one line at the end). Defaults to 1.

    Returns:
        `(image, history)`: the float32 `(H, W, C)` result in `value_range`, and a dict of
        lists `"loss"` (weighted sum), `"content_loss"` and `"style_loss"` (unweighted)
        whose entry k belongs to the image before step k + 1.

    Raises:
        ValueError: naming the argument: an empty or unknown layer list (listing the
            extractor's layers), images that are not 3-D floats (uint8 is refused) or do
            not fit the extractor's input, or any other bad argument.

    Example:

    >>> import numpy as np
    >>> extractor = random_texture_extractor(filters=4, kernel_sizes=(3,))
    >>> content, style = np.zeros((8, 8, 3), "float32"), np.ones((8, 8, 3), "float32")
    >>> image, history = style_transfer(
    ...     content, style, extractor, ["deep"], ["scale_3"], steps=20, verbose=0)
    >>> image.shape, history["style_loss"][-1] < history["style_loss"][0]
    ((8, 8, 3), True)
    """
    content = _check_picture(extractor, content, "content")
    style = _check_picture(extractor, style, "style")
    features = _feature_model(extractor, content_layers, style_layers)
    check_positive_int(steps, "steps")
    low, high = _check_value_range(value_range)
    for name, value, valid, wanted in (
        ("content_weight", content_weight, _is_non_negative(content_weight), ">= 0"),
        ("style_weight", style_weight, _is_non_negative(style_weight), ">= 0"),
        ("learning_rate", learning_rate, is_number(learning_rate) and learning_rate > 0, "> 0"),
        ("init", init, init in INITS, f"one of {INITS}"),
        ("seed", seed, is_int(seed), "an int"),
        ("verbose", verbose, verbose in (0, 1, 2), "0, 1 or 2"),
    ):
        if not valid:
            raise ValueError(f"`{name}` must be {wanted}. Received: {name}={value!r}")
    if not content_weight and not style_weight:
        raise ValueError("`content_weight` and `style_weight` are both 0: nothing to optimise.")
    if init == "content":
        start = np.clip(content, low, high)
    else:
        start = np.random.default_rng(seed).uniform(low, high, content.shape)
    image = keras.Variable(start[np.newaxis].astype(np.float32), name="style_transfer_image")
    split = len(content_layers)
    content_targets = features(content[np.newaxis])[:split]
    style_grams = [gram_matrix(f) for f in features(style[np.newaxis])[split:]]
    optimizer = keras.optimizers.Adam(learning_rate, epsilon=ADAM_EPSILON)
    optimizer.build([image])

    @tf.function
    def step():
        # Keras has no gradient op of its own: the tape is TensorFlow's.
        with tf.GradientTape() as tape:
            outputs = features(image.value, training=False)
            content_terms = [
                content_loss(f, p) for f, p in zip(outputs[:split], content_targets, strict=True)
            ]
            style_terms = [
                _gram_distance(gram_matrix(f), a)
                for f, a in zip(outputs[split:], style_grams, strict=True)
            ]
            content_term = ops.mean(ops.concatenate(content_terms))
            style_term = ops.mean(ops.concatenate(style_terms))
            loss = content_weight * content_term + style_weight * style_term
        optimizer.apply([tape.gradient(loss, image)], [image])
        image.assign(ops.clip(image, low, high))
        return loss, content_term, style_term

    history = {key: [] for key in HISTORY_KEYS}
    progress = keras.utils.Progbar(steps, verbose=verbose, stateful_metrics=HISTORY_KEYS)
    for index in range(steps):
        values = [float(value) for value in step()]
        for key, value in zip(HISTORY_KEYS, values, strict=True):
            history[key].append(value)
        progress.update(index + 1, list(zip(HISTORY_KEYS, values, strict=True)))
    return np.asarray(image.numpy()[0], dtype=np.float32), history


def random_texture_extractor(
    channels=3, filters=32, kernel_sizes=(3, 5, 7, 11, 15), value_range=(0.0, 1.0), seed=0
):
    """A CNN with random weights whose Gram matrices model textures, for `style_transfer`.

    Ustyuzhaninov, Brendel, Gatys & Bethge, "What does it take to generate natural
    textures?", ICLR 2017 (arXiv:1606.00021): a single convolutional layer of random filters
    of several sizes with a ReLU synthesises natural textures, no training needed (their
    network has more and larger filters; these sizes suit a CPU). Layers:

    - `centre`: maps `value_range` to [-1, 1]. On uncentred inputs in [0, 1] the Grams are
      dominated by the mean response, and a synthesis from noise matched them while staying
      noise (measured).
    - `scale_k` for each k in `kernel_sizes`: `filters` random k x k filters (He normal),
      "same" padding, ReLU. The style layers.
    - `multi_scale` (the `scale_k` maps concatenated), `pool` (its 2 x 2 average) and `deep`
      (`filters` random 3 x 3 filters on `pool`, ReLU): a coarser content layer.

    What to expect: random features capture texture statistics (colours, and blobs and edges
    up to the largest filter size) but no semantic content, so `style_transfer` moves the
    content image's colours and local structure towards the style's: a texture-like
    stylisation, not the painting of objects in an artist's manner that VGG-19 gives.

    Args:
        channels: positive int. Channels of the input images. Defaults to 3.
        filters: positive int. Filters per scale, and of `deep`. Defaults to 32.
        kernel_sizes: tuple of distinct positive ints. Defaults to `(3, 5, 7, 11, 15)`.
        value_range: `(low, high)` of the input pixels. Defaults to `(0.0, 1.0)`.
        seed: int. The weights depend on it alone. Defaults to 0.

    Returns:
        A frozen functional `keras.Model` from `(None, None, None, channels)` images to the
        output of `deep`.

    Raises:
        ValueError: on a bad `channels`, `filters`, `kernel_sizes`, `value_range` or `seed`.

    Example:

    >>> extractor = random_texture_extractor(filters=4, kernel_sizes=(3, 5))
    >>> [layer.name for layer in extractor.layers][1:]
    ['centre', 'scale_3', 'scale_5', 'multi_scale', 'pool', 'deep']
    """
    check_positive_int(channels, "channels")
    check_positive_int(filters, "filters")
    if not isinstance(kernel_sizes, tuple | list) or len(set(kernel_sizes)) != len(kernel_sizes):
        raise ValueError(
            "`kernel_sizes` must be a tuple of distinct positive ints. "
            f"Received: kernel_sizes={kernel_sizes!r}"
        )
    sizes = normalize_tuple(kernel_sizes, len(kernel_sizes), "kernel_sizes")
    low, high = _check_value_range(value_range)
    if not is_int(seed):
        raise ValueError(f"`seed` must be an int. Received: seed={seed!r}")
    inputs = keras.Input((None, None, channels), name="image")
    centred = keras.layers.Rescaling(
        2.0 / (high - low), offset=-(high + low) / (high - low), name="centre"
    )(inputs)

    def conv(size, index, name):
        # One seed per layer: a seeded initializer draws the same values at every call.
        initializer = keras.initializers.HeNormal(seed=seed + index)
        return keras.layers.Conv2D(
            filters,
            size,
            padding="same",
            activation="relu",
            kernel_initializer=initializer,
            name=name,
        )

    scales = [conv(size, i, f"scale_{size}")(centred) for i, size in enumerate(sizes)]
    multi_scale = keras.layers.Concatenate(name="multi_scale")(scales)
    pooled = keras.layers.AveragePooling2D(2, name="pool")(multi_scale)
    deep = conv(3, len(sizes), "deep")(pooled)
    extractor = keras.Model(inputs, deep, name="random_texture_extractor")
    extractor.trainable = False
    return extractor


def plot_style_transfer(content, style, result, history=None, value_range=(0.0, 1.0)):
    """Content, style and result side by side, and the losses of `style_transfer`.

    Args:
        content, style, result: `(H, W, C)` arrays in `value_range` (sizes may differ).
        history: dict or None. The history `style_transfer` returns; adds a panel of the
            losses per step (log scale). Defaults to None.
        value_range: `(low, high)` shown as black to white. Defaults to `(0.0, 1.0)`.

    Returns:
        A matplotlib `Figure` with three panels, or four with `history`.

    Raises:
        ValueError: if `history` lacks one of `"loss"`, `"content_loss"`, `"style_loss"`.
    """
    low, high = _check_value_range(value_range)
    if history is not None and not set(HISTORY_KEYS) <= set(history):
        raise ValueError(f"`history` must hold {list(HISTORY_KEYS)}. Received: {list(history)}")
    panels = 3 if history is None else 4
    figure, axes = plt.subplots(1, panels, figsize=(3.0 * panels, 3.2), squeeze=False)
    for axis, title, image in zip(axes[0], TITLES, (content, style, result), strict=False):
        show_image(axis, (np.asarray(image, np.float64) - low) / (high - low), title)
    if history is not None:
        axis = axes[0, 3]
        for key in HISTORY_KEYS:
            series = np.asarray(history[key], np.float64)
            axis.plot(np.arange(1, len(series) + 1), series, label=key)
        # The content loss of the first step is 0 with init="content": masked, not clipped.
        axis.set_yscale("log", nonpositive="mask")
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    return figure
