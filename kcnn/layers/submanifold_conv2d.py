"""`SubmanifoldConv2D`: a convolution evaluated only at the active sites of a sparse input."""

from keras import ops

from kcnn._serialization import register
from kcnn.layers._masked_conv2d import MaskedConv2D


@register
class SubmanifoldConv2D(MaskedConv2D):
    """Convolution whose outputs exist only where the input is active, so sparsity is kept.

    Implements the submanifold sparse convolution (SSC) of Graham & van der Maaten,
    "Submanifold Sparse Convolutional Networks", 2017 (arXiv:1706.01307), also used by
    Graham, Engelcke & van der Maaten, "3D Semantic Segmentation with Submanifold Sparse
    Convolutional Networks", 2018 (arXiv:1711.10275). Called on `[x, mask]`, where `mask` is
    1 at active sites and 0 elsewhere, it returns `[y, mask]`. Inactive sites are the
    "ground state" 0, and an output is computed only where the input site is active:

        count = sum(mask) over each window
        y     = (W * (x . mask)) * sum(1) / count + b   at active sites   (renormalize=True)
        y     =  W * (x . mask)                   + b   at active sites   (renormalize=False)
        y     = 0                                       at inactive sites

    With `renormalize=True` (the default) the value at an active site is the partial
    convolution of `PartialConv2D` (Liu et al. 2018, arXiv:1804.07723): the sum over the
    active neighbours is rescaled by `sum(1) / count`, `sum(1) = k_h * k_w`, so a site with
    few active neighbours is not darker than one inside a dense region. `renormalize=False`
    is the SSC of Graham et al. exactly: a plain convolution of the zero-filled input, read
    at the active sites. Either way an active site always has itself in its window
    (`count >= 1`), and the returned mask is the input mask: unlike a regular or a partial
    convolution, which dilate the set of non-zero sites by the kernel at every layer, a
    stack of these layers never grows it ("submanifold dilation" does not happen).

    The computation here is dense (two convolutions over the whole image, as in
    `PartialConv2D`), so it is correct on any input and converts to TFLite with builtin ops,
    but costs as much as a regular convolution; the hash-table implementations of the paper
    gain speed only at high sparsity. Strides are always 1 and padding `"same"`: a strided
    sparse convolution changes the set of sites and is a different operation. The mask is
    binarized (`mask > 0` is active) and no gradient flows into it. `activation`, when
    given, is applied after gating, so inactive sites hold `activation(0)`.

    Args:
        filters: int. Number of output channels.
        kernel_size: int or tuple of 2 odd ints, so that every window is centred on its
            site.
        dilation_rate: int or tuple of 2 ints. Defaults to `1`.
        renormalize: bool. Whether to rescale by `sum(1) / count` as a partial convolution
            does; `False` gives Graham et al.'s SSC. Defaults to `True`.
        use_bias: bool. Whether to add a bias (at active sites only). Defaults to `True`.
        activation: str, callable or None. Defaults to `None`.
        kernel_initializer: initializer for the kernel. Defaults to `"glorot_uniform"`.
        bias_initializer: initializer for the bias. Defaults to `"zeros"`.
        kernel_regularizer: regularizer for the kernel. Defaults to `None`.
        bias_regularizer: regularizer for the bias. Defaults to `None`.
        kernel_constraint: constraint for the kernel. Defaults to `None`.
        bias_constraint: constraint for the bias. Defaults to `None`.
        **kwargs: base layer arguments such as `name` and `dtype`.

    Input shape:
        A list `[x, mask]`: `x` of shape `(batch_size, height, width, channels)` and
        `mask` of shape `(batch_size, height, width, 1)`, of any numeric or boolean dtype.

    Output shape:
        A tuple `(y, mask)`: `y` of shape `(batch_size, height, width, filters)` and the
        binarized mask, `(batch_size, height, width, 1)`, in the layer's compute dtype.

    Raises:
        ValueError: if `filters` is not a positive int, if `kernel_size` is not a positive
            odd int or a tuple of 2 positive odd ints, or if `dilation_rate` is not a
            positive int or a tuple of 2 positive ints. When called: if the input is not a
            list `[x, mask]`, if `x` or `mask` is not 4D, if their spatial sizes differ, or
            if `mask` has more than one channel.
        TypeError: if given `strides`, `padding` or `multi_channel`.

    Example:

    >>> import numpy as np
    >>> x = np.random.rand(1, 8, 8, 2).astype("float32")
    >>> mask = np.zeros((1, 8, 8, 1), "float32")
    >>> mask[0, 2, 1:7] = 1.0  # a thin line of active sites
    >>> y, new_mask = SubmanifoldConv2D(4, 3)([x, mask])
    >>> y.shape, int(new_mask.numpy().sum())
    (TensorShape([1, 8, 8, 4]), 6)
    >>> bool(np.all(y.numpy()[mask[..., 0] == 0] == 0.0))
    True
    """

    def __init__(
        self,
        filters,
        kernel_size,
        dilation_rate=1,
        renormalize=True,
        use_bias=True,
        activation=None,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        kernel_constraint=None,
        bias_constraint=None,
        **kwargs,
    ):
        for fixed in ("strides", "padding", "multi_channel"):
            if fixed in kwargs:
                raise TypeError(
                    f"`SubmanifoldConv2D` does not take `{fixed}`: it always has stride 1, "
                    '"same" padding and a single-channel mask, so that it keeps the set of '
                    f"active sites. Received: {fixed}={kwargs[fixed]!r}"
                )
        super().__init__(
            filters,
            kernel_size,
            dilation_rate=dilation_rate,
            use_bias=use_bias,
            activation=activation,
            kernel_initializer=kernel_initializer,
            bias_initializer=bias_initializer,
            kernel_regularizer=kernel_regularizer,
            bias_regularizer=bias_regularizer,
            kernel_constraint=kernel_constraint,
            bias_constraint=bias_constraint,
            **kwargs,
        )
        if any(size % 2 == 0 for size in self.kernel_size):
            raise ValueError(
                "`kernel_size` must be a positive odd int or a tuple of 2 positive odd ints. "
                f"Received: kernel_size={kernel_size!r}"
            )
        self.renormalize = bool(renormalize)

    def call(self, inputs):
        x, mask = self.check_inputs(inputs)
        active = ops.cast(ops.greater(mask, 0), self.compute_dtype)
        products, count = self.masked_window_sums(x, active)
        outputs = self.gated_output(products, count, active, renormalize=self.renormalize)
        return outputs, active

    def get_config(self):
        config = super().get_config()
        config["renormalize"] = self.renormalize
        return config
