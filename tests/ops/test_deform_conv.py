import re

import numpy as np
import pytest
import tensorflow as tf

from kcnn.ops import deform_conv2d

from .deform_reference import deform_conv2d as reference

RNG = np.random.default_rng(0)


def explicit_pads(size, kernel, stride, dilation, padding):
    """((before, after)) zeros along one axis, by TensorFlow's rules for "same"."""
    if padding == "valid":
        return (0, 0)
    if padding == "same":
        out = -(-size // stride)
        total = max((out - 1) * stride + dilation * (kernel - 1) + 1 - size, 0)
        return (total // 2, total - total // 2)
    return (padding, padding)


def case(
    height, width, channels, filters, kernel, stride, dilation, groups, padding, masked, batch=2
):
    """Random float64 inputs with fractional offsets, some far outside the image."""
    pads = [
        explicit_pads(n, k, stride, dilation, padding)
        for n, k in zip((height, width), kernel, strict=True)
    ]
    out = [
        (n + sum(p) - dilation * (k - 1) - 1) // stride + 1
        for n, k, p in zip((height, width), kernel, pads, strict=True)
    ]
    taps = kernel[0] * kernel[1]
    x = RNG.normal(size=(batch, height, width, channels))
    offsets = RNG.normal(scale=1.5, size=(batch, *out, 2 * groups * taps))
    offsets.flat[::7] *= 6.0  # some samples land well outside the image
    w = RNG.normal(size=(*kernel, channels, filters))
    b = RNG.normal(size=(filters,))
    mask = RNG.uniform(size=(batch, *out, groups * taps)) if masked else None
    return x, offsets, w, b, mask, pads


CASES = [
    # height, width, channels, filters, kernel, stride, dilation, groups, padding, masked
    (7, 6, 4, 3, (3, 3), 1, 1, 1, "valid", False),
    (7, 6, 4, 3, (3, 3), 2, 1, 2, 1, True),
    (8, 9, 4, 5, (3, 3), 1, 2, 2, "same", True),
    (5, 7, 2, 2, (2, 3), 2, 2, 1, "same", False),
    (6, 5, 6, 2, (3, 2), 1, 1, 3, 2, True),
    (9, 8, 2, 3, (3, 3), 2, 2, 2, "valid", True),
]


@pytest.mark.parametrize("jit_compile", [None, False])
@pytest.mark.parametrize(
    "height, width, channels, filters, kernel, stride, dilation, groups, padding, masked", CASES
)
def test_matches_numpy_reference(
    height,
    width,
    channels,
    filters,
    kernel,
    stride,
    dilation,
    groups,
    padding,
    masked,
    jit_compile,
):
    x, offsets, w, b, mask, pads = case(
        height, width, channels, filters, kernel, stride, dilation, groups, padding, masked
    )
    expected = reference(x, offsets, w, b, mask, (stride, stride), pads, (dilation, dilation))
    actual = deform_conv2d(
        x, offsets, w, b, mask, stride, padding, dilation, jit_compile=jit_compile
    )
    np.testing.assert_allclose(np.asarray(actual), expected, atol=1e-10, rtol=0)
    actual32 = deform_conv2d(
        x.astype("float32"),
        offsets.astype("float32"),
        w.astype("float32"),
        b.astype("float32"),
        None if mask is None else mask.astype("float32"),
        stride,
        padding,
        dilation,
        jit_compile=jit_compile,
    )
    np.testing.assert_allclose(np.asarray(actual32), expected, atol=2e-4, rtol=0)


@pytest.mark.parametrize(
    "stride, dilation, padding", [(1, 1, "same"), (2, 1, "same"), (1, 2, "valid"), (2, 1, "valid")]
)
def test_zero_offsets_and_unit_mask_equal_plain_convolution(stride, dilation, padding):
    x = RNG.normal(size=(2, 9, 8, 4)).astype("float32")
    w = RNG.normal(size=(3, 3, 4, 5)).astype("float32")
    plain = tf.nn.conv2d(x, w, stride, padding.upper(), dilations=dilation)
    offsets = np.zeros((*plain.shape[:3], 2 * 2 * 9), "float32")  # 2 offset groups
    mask = np.ones((*plain.shape[:3], 2 * 9), "float32")
    for m in (None, mask):
        y = deform_conv2d(
            x, offsets, w, mask=m, strides=stride, padding=padding, dilation_rate=dilation
        )
        np.testing.assert_allclose(np.asarray(y), np.asarray(plain), atol=1e-5, rtol=0)


def test_worked_example_of_one_bilinear_sample():
    # One pixel of value 1 at (2, 2), a 1x1 kernel of weight 1, offsets (dy, dx) = (0.25,
    # 0.5) everywhere. Output (i, j) samples (i + 0.25, j + 0.5): it sees the pixel from
    # (1, 1) with weight 0.25 * 0.5, (1, 2) with 0.25 * 0.5, (2, 1) with 0.75 * 0.5 and
    # (2, 2) with 0.75 * 0.5.
    x = np.zeros((1, 5, 5, 1), "float32")
    x[0, 2, 2, 0] = 1.0
    offsets = np.tile(np.array([0.25, 0.5], "float32"), (1, 5, 5, 1))
    y = np.asarray(deform_conv2d(x, offsets, np.ones((1, 1, 1, 1), "float32")))[0, :, :, 0]
    expected = np.zeros((5, 5))
    expected[1, 1] = expected[1, 2] = 0.125
    expected[2, 1] = expected[2, 2] = 0.375
    np.testing.assert_allclose(y, expected, atol=1e-7)


def test_offset_layout_is_dy_then_dx_per_tap():
    # A 3x3 kernel that is 1 only at tap k = 5 (row 1, column 2): moving that tap's dx by -1
    # (channel 2 * 5 + 1) makes it read the centre pixel, so the output equals the input.
    x = RNG.normal(size=(1, 6, 6, 1)).astype("float32")
    w = np.zeros((3, 3, 1, 1), "float32")
    w[1, 2] = 1.0
    offsets = np.zeros((1, 6, 6, 18), "float32")
    offsets[..., 2 * 5 + 1] = -1.0
    y = deform_conv2d(x, offsets, w, padding="same")
    np.testing.assert_allclose(np.asarray(y), x, atol=1e-6)
    offsets[..., 2 * 5 + 1] = 0.0
    offsets[..., 2 * 5] = 1.0  # dy of the same tap: reads one row below instead
    y = np.asarray(deform_conv2d(x, offsets, w, padding="same"))
    np.testing.assert_allclose(y[0, :5, :5, 0], x[0, 1:, 1:, 0], atol=1e-6)


def test_non_finite_offsets_read_zero():
    x = RNG.normal(size=(1, 4, 4, 2)).astype("float32")
    offsets = np.full((1, 4, 4, 18), np.inf, "float32")
    offsets[..., 1::2] = np.nan
    y = deform_conv2d(
        x, offsets, np.ones((3, 3, 2, 3), "float32"), bias=[1.0, 2.0, 3.0], padding="same"
    )
    np.testing.assert_array_equal(np.asarray(y), np.broadcast_to([1.0, 2.0, 3.0], (1, 4, 4, 3)))


@pytest.mark.parametrize("jit_compile", [None, False])
@pytest.mark.parametrize(
    "kernel, stride, dilation, groups, padding, masked",
    [
        ((3, 3), 1, 1, 1, "same", True),
        ((3, 3), 2, 1, 2, 1, True),
        ((2, 3), 1, 2, 2, "valid", False),
        ((3, 3), 2, 2, 1, "same", True),
    ],
)
def test_gradients_match_finite_differences(
    kernel, stride, dilation, groups, padding, masked, jit_compile
):
    x, offsets, w, b, mask, _ = case(
        5, 4, 4, 3, kernel, stride, dilation, groups, padding, masked, batch=1
    )
    arguments = [x, offsets, w, b] + ([mask] if masked else [])

    @tf.function  # one graph for the thousands of finite-difference evaluations
    def function(x, offsets, w, b, mask=None):
        return deform_conv2d(
            x, offsets, w, b, mask, stride, padding, dilation, jit_compile=jit_compile
        )

    theoretical, numerical = tf.test.compute_gradient(function, arguments, delta=1e-6)
    names = ["inputs", "offsets", "kernel", "bias", "mask"]
    for name, got, want in zip(names, theoretical, numerical, strict=False):
        np.testing.assert_allclose(got, want, atol=1e-6, rtol=0, err_msg=name)


@pytest.mark.parametrize("channels, groups", [(16, 1), (24, 2)])
def test_gradients_match_finite_differences_with_wide_groups(channels, groups):
    # 16 and 12 channels per group: the offset and mask gradients sum over a group's
    # channels in partial sums of 8 and 4 lanes.
    x, offsets, w, b, mask, _ = case(5, 4, channels, 2, (3, 3), 1, 1, groups, "same", True, 1)

    @tf.function
    def function(x, offsets, w, b, mask):
        return deform_conv2d(x, offsets, w, b, mask, padding="same")

    theoretical, numerical = tf.test.compute_gradient(function, [x, offsets, w, b, mask], 1e-6)
    names = ["inputs", "offsets", "kernel", "bias", "mask"]
    for name, got, want in zip(names, theoretical, numerical, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-6, rtol=0, err_msg=name)


def test_gradients_flow_under_mixed_dtypes():
    # float16 inputs (mixed precision) with float32 offsets: positions stay float32.
    x = tf.constant(RNG.normal(size=(1, 5, 5, 2)), tf.float16)
    offsets = tf.constant(RNG.normal(size=(1, 5, 5, 18)), tf.float32)
    w = tf.constant(RNG.normal(size=(3, 3, 2, 2)), tf.float16)
    with tf.GradientTape() as tape:
        tape.watch([x, offsets])
        y = deform_conv2d(x, offsets, w, padding="same")
        loss = tf.reduce_sum(tf.cast(y, tf.float32) ** 2)
    dx, doff = tape.gradient(loss, [x, offsets])
    assert y.dtype == tf.float16 and dx.dtype == tf.float16 and doff.dtype == tf.float32
    expected = reference(
        np.asarray(x, np.float64),
        np.asarray(offsets, np.float64),
        np.asarray(w, np.float64),
        pad=((1, 1), (1, 1)),
    )
    np.testing.assert_allclose(np.asarray(y, np.float64), expected, atol=2e-2, rtol=1e-2)


@pytest.mark.parametrize(
    "x_shape, offsets_shape, w_shape, mask_shape, padding, message",
    [
        (
            (5, 5, 2),
            (1, 3, 3, 18),
            (3, 3, 2, 4),
            None,
            "valid",
            "`inputs` must have rank 4 (batch, height, width, channels). "
            "Received: inputs.shape=(5, 5, 2)",
        ),
        (
            (1, 5, 5, 2),
            (1, 3, 3, 18),
            (3, 3, 3, 4),
            None,
            "valid",
            "The kernel's input channels must equal the input's channels. "
            "Received: inputs.shape=(1, 5, 5, 2), kernel.shape=(3, 3, 3, 4)",
        ),
        (
            (1, 5, 5, 2),
            (1, 3, 3, 17),
            (3, 3, 2, 4),
            None,
            "valid",
            "`offsets` must have shape (batch, out_height, out_width, 2 * offset_groups * 9) "
            "for a 3x3 kernel. Received: offsets.shape=(1, 3, 3, 17)",
        ),
        (
            (1, 5, 5, 2),
            (1, 3, 3, 54),
            (3, 3, 2, 4),
            None,
            "valid",
            "The number of offset groups (3, from offsets.shape[-1] = 54) must divide the input "
            "channels (2).",
        ),
        (
            (1, 5, 5, 2),
            (1, 5, 5, 18),
            (3, 3, 2, 4),
            None,
            "valid",
            "`offsets` must have the output's spatial size (3, 3). "
            "Received: offsets.shape=(1, 5, 5, 18)",
        ),
        (
            (1, 5, 5, 2),
            (1, 3, 3, 18),
            (3, 3, 2, 4),
            (1, 3, 3, 18),
            "valid",
            "`mask` must have shape (batch, out_height, out_width, offset_groups * 9) = "
            "(batch, 3, 3, 9). Received: mask.shape=(1, 3, 3, 18)",
        ),
        (
            (1, 5, 5, 2),
            (1, 3, 3, 18),
            (3, 3, 2, 4),
            None,
            "full",
            '`padding` must be "valid", "same", a non-negative int or a tuple of 2 non-negative '
            "ints. Received: padding='full'",
        ),
    ],
)
def test_bad_shapes_raise_one_clear_error(
    x_shape, offsets_shape, w_shape, mask_shape, padding, message
):
    mask = None if mask_shape is None else np.ones(mask_shape, "float32")
    with pytest.raises(ValueError, match=re.escape(message)):
        deform_conv2d(
            np.zeros(x_shape, "float32"),
            np.zeros(offsets_shape, "float32"),
            np.zeros(w_shape, "float32"),
            mask=mask,
            padding=padding,
        )


def test_unknown_batch_and_spatial_size_in_a_graph():
    w = tf.constant(RNG.normal(size=(3, 3, 2, 3)), tf.float32)
    function = tf.function(
        lambda x, o: deform_conv2d(x, o, w, padding="same"),
        input_signature=[
            tf.TensorSpec([None, None, None, 2]),
            tf.TensorSpec([None, None, None, 18]),
        ],
    )
    for height, width in ((5, 7), (4, 4)):
        x = RNG.normal(size=(3, height, width, 2)).astype("float32")
        offsets = RNG.normal(size=(3, height, width, 18)).astype("float32")
        expected = reference(x, offsets, np.asarray(w), pad=((1, 1), (1, 1)))
        np.testing.assert_allclose(np.asarray(function(x, offsets)), expected, atol=1e-4)


@pytest.mark.parametrize(("parts", "static_batch"), [(2, True), (4, False)])
def test_backward_split_by_images_equals_each_image_alone(monkeypatch, parts, static_batch):
    # The XLA backward kernel runs on slices of the batch side by side. Reference: every
    # image's gradients computed alone (batch 1, never split; the finite-difference tests
    # check that path), in float64. With 3 images and 4 parts, a dynamic batch leaves one
    # part empty; offset groups 2 and samples far outside the image shift the table index.
    from kcnn.ops import deform_conv

    monkeypatch.setattr(deform_conv, "_parallel_parts", lambda batch, image_bytes: parts)
    x, offsets, w, b, mask, _ = case(6, 5, 4, 3, (3, 3), 2, 1, 2, "same", True, batch=3)
    batch_dim = 3 if static_batch else None
    signature = [
        tf.TensorSpec((batch_dim, *array.shape[1:]), tf.float64) for array in (x, offsets, mask)
    ]

    def gradients(x, offsets, mask):
        x, offsets, mask = (tf.convert_to_tensor(array) for array in (x, offsets, mask))
        with tf.GradientTape() as tape:
            tape.watch([x, offsets, mask])
            y = deform_conv2d(x, offsets, w, b, mask, 2, "same")
            loss = tf.reduce_sum(y * tf.sin(y))
        return tape.gradient(loss, [x, offsets, mask])

    together = tf.function(gradients, input_signature=signature)(x, offsets, mask)
    monkeypatch.setattr(deform_conv, "_parallel_parts", lambda batch, image_bytes: 1)
    for image in range(3):
        one = slice(image, image + 1)
        alone = gradients(x[one], offsets[one], mask[one])
        for name, got, want in zip(("inputs", "offsets", "mask"), together, alone, strict=True):
            assert np.any(np.asarray(want) != 0), name
            np.testing.assert_allclose(got[one], want, atol=1e-12, rtol=0, err_msg=name)


def test_the_backward_kernel_uses_one_part_per_core_and_image(monkeypatch):
    from kcnn.ops import deform_conv

    monkeypatch.setattr(deform_conv.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    assert deform_conv._parallel_parts(None) == 4
    assert deform_conv._parallel_parts(3) == 3
    assert deform_conv._parallel_parts(1) == 1
    monkeypatch.setattr(tf.config.threading, "get_inter_op_parallelism_threads", lambda: 2)
    assert deform_conv._parallel_parts(None) == 2
    # More parts than cores when the images' weighted rows are large: as many as keep a
    # part near _PART_BYTES, never more than one per image.
    part = deform_conv._PART_BYTES
    assert deform_conv._parallel_parts(8, 4 * part) == 8
    assert deform_conv._parallel_parts(64, part // 2) == 32
    assert deform_conv._parallel_parts(64, part // 2 + 1) == 64
    assert deform_conv._parallel_parts(64, part // 100) == 2
    assert deform_conv._parallel_parts(64, None) == 2
    # A dynamic batch: a fixed number of parts (some may be empty) when the image size is
    # static, never fewer than the cores.
    monkeypatch.setattr(deform_conv, "_DYNAMIC_PARTS", 8)
    assert deform_conv._parallel_parts(None, part // 100) == 8
    monkeypatch.setattr(deform_conv, "_DYNAMIC_PARTS", 1)
    assert deform_conv._parallel_parts(None, 4 * part) == 2


def test_the_weighted_rows_of_one_image_are_counted_in_bytes():
    from kcnn.ops import deform_conv

    inputs = tf.zeros((8, 32, 32, 64))
    offsets = tf.zeros((8, 16, 16, 36))  # stride 2, offset groups 2
    config = ((3, 3), (2, 2), "same", (1, 1), 2)
    assert deform_conv._image_rows_bytes(inputs, offsets, config) == 16 * 16 * 9 * 4 * 64 * 4
    half = tf.zeros((8, 32, 32, 64), tf.float16)
    assert deform_conv._image_rows_bytes(half, offsets, config) == 16 * 16 * 9 * 4 * 64 * 2
    dynamic = tf.TensorSpec((None, None, None, 36))
    assert deform_conv._image_rows_bytes(inputs, dynamic, config) is None
