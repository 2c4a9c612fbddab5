"""`InceptionModule`: the four-branch block of GoogLeNet (Inception v1)."""

import keras
from keras import ops

from kcnn._serialization import register
from kcnn._validation import check_positive_int
from kcnn.analysis import LayerGeometry, register_layer_analyzer

_FILTER_ARGUMENTS = (
    "filters_1x1",
    "filters_3x3_reduce",
    "filters_3x3",
    "filters_5x5_reduce",
    "filters_5x5",
    "filters_pool_proj",
)


@register
class InceptionModule(keras.layers.Layer):
    """Parallel 1x1, 3x3 and 5x5 convolutions and a max-pooling, concatenated.

    The "Inception module with dimension reductions" of Szegedy et al., "Going Deeper with
    Convolutions", CVPR 2015 (arXiv:1409.4842), figure 2(b). Four branches see the same
    input and their outputs are concatenated along the channels, in this order:

        1x1 conv (filters_1x1)
        1x1 conv (filters_3x3_reduce) -> 3x3 conv (filters_3x3)
        1x1 conv (filters_5x5_reduce) -> 5x5 conv (filters_5x5)
        3x3 max-pool, stride 1 -> 1x1 conv (filters_pool_proj)

    The 1x1 "reductions" before the 3x3 and 5x5 convolutions keep the cost in check. Every
    convolution has a bias and is followed by `activation` (ReLU in the paper, reductions
    included); all use "same" padding and stride 1, so the spatial size is kept. The
    argument names and order are the columns of the paper's table 1; for example
    inception (3a) is `InceptionModule(64, 96, 128, 16, 32, 32)`, 256 output channels and
    163,328 weights + 368 biases = 163,696 parameters on 192 input channels.

    Args:
        filters_1x1: int. Filters of the 1x1 branch.
        filters_3x3_reduce: int. Filters of the 1x1 reduction before the 3x3 convolution.
        filters_3x3: int. Filters of the 3x3 convolution.
        filters_5x5_reduce: int. Filters of the 1x1 reduction before the 5x5 convolution.
        filters_5x5: int. Filters of the 5x5 convolution.
        filters_pool_proj: int. Filters of the 1x1 projection after the max-pooling.
        activation: str or callable. Applied after every convolution. Defaults to `"relu"`.
        kernel_initializer: initializer of the kernels. Defaults to `"glorot_uniform"`.
        bias_initializer: initializer of the biases. Defaults to `"zeros"`.
        kernel_regularizer: regularizer of the kernels. Defaults to `None`.
        bias_regularizer: regularizer of the biases. Defaults to `None`.
        **kwargs: base layer arguments such as `name` and `dtype`.

    Input shape:
        4D tensor `(batch_size, height, width, channels)` with known channels.

    Output shape:
        4D tensor `(batch_size, height, width, filters_1x1 + filters_3x3 + filters_5x5 +
        filters_pool_proj)`.

    Raises:
        ValueError: if a `filters_*` argument is not a positive int; when built, if the
            number of input channels is unknown.

    Example:

    >>> import numpy as np
    >>> module = InceptionModule(64, 96, 128, 16, 32, 32)  # inception (3a)
    >>> module(np.zeros((1, 28, 28, 192), "float32")).shape
    TensorShape([1, 28, 28, 256])
    >>> module.count_params()
    163696
    """

    def __init__(
        self,
        filters_1x1,
        filters_3x3_reduce,
        filters_3x3,
        filters_5x5_reduce,
        filters_5x5,
        filters_pool_proj,
        activation="relu",
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        values = (
            filters_1x1,
            filters_3x3_reduce,
            filters_3x3,
            filters_5x5_reduce,
            filters_5x5,
            filters_pool_proj,
        )
        for name, value in zip(_FILTER_ARGUMENTS, values, strict=True):
            setattr(self, name, check_positive_int(value, name))
        self.activation = keras.activations.get(activation)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.branch_1x1 = self._conv(self.filters_1x1, 1, "branch_1x1")
        self.branch_3x3_reduce = self._conv(self.filters_3x3_reduce, 1, "branch_3x3_reduce")
        self.branch_3x3 = self._conv(self.filters_3x3, 3, "branch_3x3")
        self.branch_5x5_reduce = self._conv(self.filters_5x5_reduce, 1, "branch_5x5_reduce")
        self.branch_5x5 = self._conv(self.filters_5x5, 5, "branch_5x5")
        self.branch_pool = keras.layers.MaxPooling2D(
            3, strides=1, padding="same", dtype=self.dtype_policy, name="branch_pool"
        )
        self.branch_pool_proj = self._conv(self.filters_pool_proj, 1, "branch_pool_proj")
        self.input_spec = keras.layers.InputSpec(ndim=4)

    def _conv(self, filters, kernel_size, name):
        return keras.layers.Conv2D(
            filters,
            kernel_size,
            padding="same",
            activation=self.activation,
            kernel_initializer=self.kernel_initializer,
            bias_initializer=self.bias_initializer,
            kernel_regularizer=self.kernel_regularizer,
            bias_regularizer=self.bias_regularizer,
            dtype=self.dtype_policy,
            name=name,
        )

    def build(self, input_shape):
        if input_shape[-1] is None:
            raise ValueError(
                "The number of channels of the inputs to `InceptionModule` must be known. "
                f"Received: input_shape={tuple(input_shape)}"
            )
        input_shape = tuple(input_shape)
        for convolution in self._input_convolutions():
            convolution.build(input_shape)
        self.branch_3x3.build((*input_shape[:-1], self.filters_3x3_reduce))
        self.branch_5x5.build((*input_shape[:-1], self.filters_5x5_reduce))
        self.input_spec = keras.layers.InputSpec(ndim=4, axes={-1: input_shape[-1]})

    def call(self, inputs):
        branches = [
            self.branch_1x1(inputs),
            self.branch_3x3(self.branch_3x3_reduce(inputs)),
            self.branch_5x5(self.branch_5x5_reduce(inputs)),
            self.branch_pool_proj(self.branch_pool(inputs)),
        ]
        return ops.concatenate(branches, axis=-1)

    def compute_output_shape(self, input_shape):
        channels = self.filters_1x1 + self.filters_3x3 + self.filters_5x5
        return (*tuple(input_shape)[:-1], channels + self.filters_pool_proj)

    def get_config(self):
        config = super().get_config()
        config.update({name: getattr(self, name) for name in _FILTER_ARGUMENTS})
        config.update(
            {
                "activation": keras.activations.serialize(self.activation),
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
                "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
            }
        )
        return config

    def _input_convolutions(self):
        return (
            self.branch_1x1,
            self.branch_3x3_reduce,
            self.branch_5x5_reduce,
            self.branch_pool_proj,
        )


@register_layer_analyzer(InceptionModule)
def _analyze_inception_module(layer, input_shapes, output_shapes):
    """MACs of the six convolutions at the input resolution; a 5x5 window (the widest)."""
    height, width, channels = input_shapes[0][1:]
    if height is None or width is None:
        raise ValueError(
            f"Cannot count the MACs of layer '{layer.name}': shape {tuple(input_shapes[0])} "
            "has unknown spatial dimensions. Pass `input_shape` to `analyze`, e.g. "
            "input_shape=(224, 224, 3)."
        )
    per_pixel = channels * (
        layer.filters_1x1
        + layer.filters_3x3_reduce
        + layer.filters_5x5_reduce
        + layer.filters_pool_proj
    )
    per_pixel += 9 * layer.filters_3x3_reduce * layer.filters_3x3
    per_pixel += 25 * layer.filters_5x5_reduce * layer.filters_5x5
    return height * width * per_pixel, LayerGeometry.sliding(5, pad_before=2)
