"""Sliding-window classification and its convolutional form (OverFeat).

Sermanet, Eigen, Zhang, Mathieu, Fergus & LeCun, "OverFeat: Integrated Recognition,
Localization and Detection using Convolutional Networks", ICLR 2014 (arXiv:1312.6229),
section 3.5 and figure 5: a classifier trained on `window x window` images, run on a
larger image by cropping and classifying every window, computes the same thing as the
classifier with its dense layers rewritten as convolutions, run once on the whole image,
when the windows are placed at multiples of the network's total stride. The convolutional
form shares every computation of overlapping windows, which is its speed-up.

`sliding_window_scores` is the literal method; `fully_convolutional_classifier` builds the
convolutional form of a Keras classifier (Flatten + Dense becomes a `window`-sized "valid"
convolution, each further Dense a 1x1 convolution, a global pooling an ordinary pooling of
the window's feature-map size) and `window_stride` gives the stride of its score map.
"""

import keras
import numpy as np

from kcnn._validation import check_positive_int, normalize_tuple
from kcnn.analysis import analyze

_GLOBAL_POOLINGS = {
    keras.layers.GlobalAveragePooling2D: keras.layers.AveragePooling2D,
    keras.layers.GlobalMaxPooling2D: keras.layers.MaxPooling2D,
}


def _image_classifier_input(classifier):
    shape = getattr(classifier, "input_shape", None)
    if not isinstance(classifier, keras.Model) or not isinstance(shape, tuple) or len(shape) != 4:
        raise ValueError(
            "`classifier` must be a built keras.Model taking one image batch "
            f"(batch, height, width, channels). Received: {classifier!r}"
        )
    return shape


def sliding_window_scores(classifier, image, window, stride, batch_size=256):
    """Crops every `window` of `image` at `stride` and classifies each crop on its own.

    The literal method that OverFeat's convolutional evaluation replaces: window `(i, j)`
    covers rows `i * stride[0] ... i * stride[0] + window[0] - 1` and the matching columns,
    and windows that would leave the image are not taken (as a "valid" convolution).

    Args:
        classifier: a `keras.Model` mapping `(batch, window_h, window_w, channels)` images to
            `(batch, num_classes)` scores.
        image: array `(height, width, channels)`, already scaled as the classifier expects.
        window: int or tuple of 2 ints. Window height and width; must equal the classifier's
            input size when that size is fixed.
        stride: int or tuple of 2 ints. Step between windows in pixels.
        batch_size: int. Crops classified per call. Defaults to `256`.

    Returns:
        NumPy array `(rows, columns, num_classes)` with
        `rows = (height - window_h) // stride_h + 1` (and the same for columns).

    Raises:
        ValueError: if `image` is not 3-D, the window does not fit in it or differs from the
            classifier's input size, or `window` / `stride` / `batch_size` are not positive.

    Example:

    >>> from kcnn.models.classic import LeNet5
    >>> classifier = LeNet5((32, 32, 1), num_classes=10)
    >>> sliding_window_scores(classifier, np.zeros((40, 48, 1), "float32"), 32, 4).shape
    (3, 5, 10)
    """
    shape = _image_classifier_input(classifier)
    window = normalize_tuple(window, 2, "window")
    stride = normalize_tuple(stride, 2, "stride")
    batch_size = check_positive_int(batch_size, "batch_size")
    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(
            f"`image` must be a 3-D array (height, width, channels). Received: "
            f"image.shape={image.shape}"
        )
    fixed = tuple(size for size in shape[1:3])
    if None not in fixed and fixed != window:
        raise ValueError(
            f"`window` must equal the classifier's input size {fixed}. Received: window={window}"
        )
    if image.shape[0] < window[0] or image.shape[1] < window[1]:
        raise ValueError(
            f"`window` must fit in the image. Received: window={window}, image.shape={image.shape}"
        )
    rows = (image.shape[0] - window[0]) // stride[0] + 1
    columns = (image.shape[1] - window[1]) // stride[1] + 1
    crops = np.stack(
        [
            image[
                i * stride[0] : i * stride[0] + window[0],
                j * stride[1] : j * stride[1] + window[1],
            ]
            for i in range(rows)
            for j in range(columns)
        ]
    )
    scores = np.concatenate(
        [
            keras.ops.convert_to_numpy(classifier(crops[start : start + batch_size]))
            for start in range(0, len(crops), batch_size)
        ]
    )
    return scores.reshape(rows, columns, -1)


def _leaf_layers(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _leaf_layers(layer)
        else:
            yield layer


def _check_valid_padding(classifier):
    for layer in _leaf_layers(classifier):
        size = getattr(layer, "kernel_size", None) or getattr(layer, "pool_size", None)
        if getattr(layer, "padding", "valid") == "same" and size and max(size) > 1:
            raise ValueError(
                "The convolutional form equals sliding windows only when every convolution "
                "and pooling pads nothing ('valid'): zeros padded around a whole image are "
                f"not the zeros padded around each window. Layer {layer.name!r} has "
                f"padding='same', kernel {tuple(size)}."
            )


def fully_convolutional_classifier(classifier, name=None):
    """The convolutional form of a classifier: its whole class-score map in one pass.

    OverFeat's (Sermanet et al. 2014, arXiv:1312.6229, section 3.5) rewrite of a classifier
    trained on fixed-size windows: the feature layers are the classifier's own (shared, not
    copied); `Flatten` + `Dense` becomes a "valid" convolution whose kernel is the dense
    kernel reshaped to the window's feature-map size, each further `Dense` a 1x1
    convolution (its weights copied at conversion), and a global average or max pooling an
    ordinary pooling of that size with stride 1. On an image of the window's size the
    result is the classifier's output as a `1 x 1` map; on a larger image, position
    `(i, j)` of the map is the classifier's output on the window at
    `(i * stride, j * stride)`, `stride` being `window_stride(classifier)`.

    Args:
        classifier: a functional or Sequential `keras.Model` from one image batch
            `(batch, height, width, channels)` to class scores, with a fixed input size
            (the window), "valid" convolutions and poolings, and a head of `Flatten` or
            global pooling followed by `Dense` layers.
        name: str or None. Name of the new model. Defaults to the classifier's name with
            `"_fully_convolutional"` appended.

    Returns:
        A `keras.Model` taking `(batch, None, None, channels)` images and returning
        `(batch, rows, columns, num_classes)` score maps.

    Raises:
        ValueError: if the classifier's input size is not fixed, or a layer pads "same"
            (sliding windows would see different borders).

    Example:

    >>> from kcnn.models.classic import LeNet5
    >>> classifier = LeNet5((32, 32, 1), num_classes=10)
    >>> dense = fully_convolutional_classifier(classifier)
    >>> dense(np.zeros((1, 40, 48, 1), "float32")).shape, window_stride(classifier)
    (TensorShape([1, 3, 5, 10]), (4, 4))
    """
    shape = _image_classifier_input(classifier)
    if None in shape[1:3]:
        raise ValueError(
            "`classifier` must have a fixed input size (the window it classifies). "
            f"Received: input_shape={shape}"
        )
    _check_valid_padding(classifier)
    state = {"window": (1, 1)}

    def call(layer, *args, **kwargs):
        if isinstance(layer, keras.layers.Flatten):
            state["window"] = tuple(layer.input.shape[1:3])
            return args[0]
        if type(layer) in _GLOBAL_POOLINGS:
            window = tuple(layer.input.shape[1:3])
            pooling = _GLOBAL_POOLINGS[type(layer)](window, strides=1, name=f"{layer.name}_window")
            return pooling(args[0])
        if isinstance(layer, keras.layers.Dense):
            kernel, *bias = layer.get_weights()
            size = state["window"]
            state["window"] = (1, 1)
            convolution = keras.layers.Conv2D(
                layer.units,
                size,
                activation=layer.activation,
                use_bias=layer.use_bias,
                dtype=layer.dtype_policy,
                name=f"{layer.name}_conv",
            )
            outputs = convolution(args[0])
            convolution.set_weights(
                [kernel.reshape(*size, kernel.shape[0] // (size[0] * size[1]), -1), *bias]
            )
            return outputs
        return layer(*args, **kwargs)

    graph = classifier
    if isinstance(classifier, keras.Sequential):
        # clone_model rewires the calls of functional graphs only; a built Sequential is one.
        graph = keras.Model(classifier.inputs[0], classifier.outputs[0])
    inputs = keras.Input((None, None, shape[3]), name="image")
    model = keras.models.clone_model(
        graph, input_tensors=inputs, clone_function=lambda layer: layer, call_function=call
    )
    if len(model.output.shape) != 4:
        raise ValueError(
            "`classifier` must end in Flatten or global pooling followed by Dense layers, so "
            f"that its head can become convolutions. Received output {model.output.shape}"
        )
    return keras.Model(
        model.input, model.output, name=name or f"{classifier.name}_fully_convolutional"
    )


def window_stride(classifier):
    """The step, in input pixels, between adjacent windows of the convolutional form:
    the product of the strides of the classifier's convolutions and poolings.

    Returns:
        Tuple `(stride_h, stride_w)` of ints.
    """
    shape = _image_classifier_input(classifier)
    records = analyze(fully_convolutional_classifier(classifier), input_shape=shape[1:]).layers
    jump = next(record.jump for record in reversed(records) if record.jump is not None)
    return normalize_tuple(
        tuple(int(j) for j in jump) if isinstance(jump, tuple) else int(jump), 2, "stride"
    )
