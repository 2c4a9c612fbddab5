"""Where a deformable convolution samples: its taps drawn on the input image."""

import numpy as np

from kcnn.viz.plots import plt, show_image


def _pair(value, name):
    pair = (value, value) if isinstance(value, int | np.integer) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int | np.integer) and v > 0 for v in pair):
        raise ValueError(
            f"`{name}` must be a positive int or a tuple of 2 positive ints. Received: "
            f"{name}={value!r}"
        )
    return pair


def _pad_before(padding, size, kernel, stride, dilation, axis):
    if padding == "valid":
        return 0
    if padding == "same":
        # TensorFlow's rule, as in kcnn.ops.deform_conv2d: odd padding goes after.
        output = -(-size // stride)
        return max((output - 1) * stride + dilation * (kernel - 1) + 1 - size, 0) // 2
    if isinstance(padding, int | np.integer) and padding >= 0:
        return int(padding)
    if isinstance(padding, tuple | list) and len(padding) == 2:
        before = padding[axis]
        before = before[0] if isinstance(before, tuple | list) else before
        if isinstance(before, int | np.integer) and before >= 0:
            return int(before)
    raise ValueError(
        '`padding` must be "valid", "same", a non-negative int or a pair of them (as in '
        f"kcnn.ops.deform_conv2d). Received: padding={padding!r}"
    )


def deformable_sampling_locations(
    offsets,
    position,
    kernel_size,
    image_size,
    strides=1,
    padding="same",
    dilation_rate=1,
    group=0,
):
    """Input coordinates sampled by one output position of a deformable convolution.

    Dai et al. 2017 (arXiv:1703.06211), eq. (2): tap k of the output position p0 reads the
    input at p0 * s - pad + p_k * d + dp_k. Offsets use the layout of
    `kcnn.ops.deform_conv2d` (and torchvision): channel 2 * (g * kh * kw + k) is dy and the
    next one dx, k = i * kw + j.

    Args:
        offsets: array `(H_out, W_out, 2 * G * kh * kw)` of one image.
        position: `(row, column)` of the output position.
        kernel_size: int or `(kh, kw)`.
        image_size: `(height, width)` of the input (for `"same"` padding).
        strides: int or pair. Defaults to 1.
        padding: `"same"`, `"valid"`, an int or a pair, as in `deform_conv2d`. Defaults
            to `"same"`.
        dilation_rate: int or pair. Defaults to 1.
        group: int. Offset group to read. Defaults to 0.

    Returns:
        `(regular, deformed)`: float64 arrays `(kh * kw, 2)` of (y, x) input coordinates,
        without and with the offsets.

    Raises:
        ValueError: when the offsets' channels do not match the kernel and group, or the
            position is outside the offsets' grid.

    Example:
    >>> import numpy as np
    >>> offsets = np.zeros((5, 5, 18))
    >>> offsets[2, 2, 0:2] = (0.5, -1.0)  # dy, dx of the top-left tap
    >>> regular, deformed = deformable_sampling_locations(offsets, (2, 2), 3, (5, 5))
    >>> regular[0].tolist(), deformed[0].tolist()
    ([1.0, 1.0], [1.5, 0.0])
    """
    offsets = np.asarray(offsets, dtype=np.float64)
    kh, kw = _pair(kernel_size, "kernel_size")
    sh, sw = _pair(strides, "strides")
    dh, dw = _pair(dilation_rate, "dilation_rate")
    taps = kh * kw
    if offsets.ndim != 3 or offsets.shape[-1] % (2 * taps):
        raise ValueError(
            f"`offsets` must be (H_out, W_out, 2 * groups * {taps}) for a {kh}x{kw} kernel "
            f"(one image). Received: offsets.shape={offsets.shape}"
        )
    groups = offsets.shape[-1] // (2 * taps)
    if not 0 <= group < groups:
        raise ValueError(f"`group` must be in [0, {groups}). Received: group={group!r}")
    row, column = position
    if not (0 <= row < offsets.shape[0] and 0 <= column < offsets.shape[1]):
        raise ValueError(
            f"`position` must lie in the {offsets.shape[0]}x{offsets.shape[1]} output grid. "
            f"Received: position={tuple(position)}"
        )
    pad_top = _pad_before(padding, image_size[0], kh, sh, dh, 0)
    pad_left = _pad_before(padding, image_size[1], kw, sw, dw, 1)
    tap_rows, tap_columns = np.divmod(np.arange(taps), kw)
    regular = np.stack(
        [row * sh - pad_top + tap_rows * dh, column * sw - pad_left + tap_columns * dw], axis=1
    ).astype(np.float64)
    start = 2 * group * taps
    deltas = offsets[row, column, start : start + 2 * taps].reshape(taps, 2)
    return regular, regular + deltas


def plot_deformable_sampling(
    image,
    offsets,
    position,
    kernel_size,
    strides=1,
    padding="same",
    dilation_rate=1,
    group=0,
    title=None,
):
    """Draws the regular and the deformed sampling grid of output positions on the image.

    Hollow squares are the taps of a plain convolution, dots where the deformable one
    samples, and arrows the learned offsets (see `deformable_sampling_locations`).

    Args:
        image: `(H, W)` or `(H, W, C)` array (uint8 or float in [0, 1]), the layer's input.
        offsets: array `(H_out, W_out, 2 * G * kh * kw)` of that image.
        position: `(row, column)`, or a list of them (one colour each).
        kernel_size, strides, padding, dilation_rate, group: as the convolution's.
        title: str or None.

    Returns:
        A matplotlib `Figure`.
    """
    image = np.asarray(image)
    positions = [position] if np.ndim(position) == 1 else list(position)
    figure, axis = plt.subplots(figsize=(5, 5))
    show_image(axis, image)
    colours = plt.get_cmap("tab10")(np.arange(len(positions)) % 10)
    for colour, where in zip(colours, positions, strict=True):
        regular, deformed = deformable_sampling_locations(
            offsets, where, kernel_size, image.shape[:2], strides, padding, dilation_rate, group
        )
        axis.scatter(
            regular[:, 1], regular[:, 0], marker="s", s=60, facecolors="none", edgecolors=colour
        )
        axis.scatter(deformed[:, 1], deformed[:, 0], s=22, color=colour, label=f"{tuple(where)}")
        for start, end in zip(regular, deformed, strict=True):
            axis.annotate(
                "",
                xy=(end[1], end[0]),
                xytext=(start[1], start[0]),
                arrowprops={"arrowstyle": "->", "color": colour, "lw": 0.8},
            )
    axis.set_xlim(-0.5, image.shape[1] - 0.5)
    axis.set_ylim(image.shape[0] - 0.5, -0.5)
    axis.legend(title="output position", fontsize=7, loc="upper right")
    axis.set_title(title or "regular (squares) and deformed (dots) sampling")
    figure.tight_layout()
    return figure
