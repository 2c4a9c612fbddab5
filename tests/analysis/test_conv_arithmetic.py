import itertools

import keras
import numpy as np
import pytest

from kcnn.analysis import conv_output_size, conv_transpose_output_size


def count_window_positions(size, kernel_size, strides, padding, dilation_rate):
    """Independent reference: slide the dilated window over the padded axis and count."""
    padded = size + 2 * padding
    span = dilation_rate * (kernel_size - 1)
    return sum(1 for start in range(0, padded, strides) if start + span <= padded - 1)


@pytest.mark.parametrize(
    "size, kernel_size, strides, padding, dilation_rate, expected",
    [
        # Dumoulin & Visin 2016 (arXiv:1603.07285), figures 2.1-2.7 and 5.1.
        (4, 3, 1, 0, 1, 2),  # no padding, unit strides
        (5, 4, 1, 2, 1, 6),  # arbitrary padding
        (5, 3, 1, 1, 1, 5),  # half ("same") padding
        (5, 3, 1, 2, 1, 7),  # full padding
        (5, 3, 2, 0, 1, 2),  # no padding, strides
        (5, 3, 2, 1, 1, 3),  # padding, strides
        (6, 3, 2, 1, 1, 3),  # padding, strides, odd case
        (7, 3, 1, 0, 2, 3),  # dilated
        (227, 11, 4, 0, 1, 55),  # AlexNet conv1
    ],
)
def test_conv_output_size_published_examples(
    size, kernel_size, strides, padding, dilation_rate, expected
):
    assert conv_output_size(size, kernel_size, strides, padding, dilation_rate) == expected


def test_conv_output_size_matches_brute_force_counting():
    grid = itertools.product(range(1, 13), range(1, 6), range(1, 4), range(0, 3), range(1, 4))
    checked = 0
    for size, kernel_size, strides, padding, dilation_rate in grid:
        expected = count_window_positions(size, kernel_size, strides, padding, dilation_rate)
        if expected == 0:
            with pytest.raises(ValueError, match="The kernel does not fit"):
                conv_output_size(size, kernel_size, strides, padding, dilation_rate)
        else:
            got = conv_output_size(size, kernel_size, strides, padding, dilation_rate)
            assert got == expected, (size, kernel_size, strides, padding, dilation_rate)
            checked += 1
    assert checked > 1000


def test_valid_equals_zero_padding():
    for size, kernel_size, strides in itertools.product((4, 9), (1, 3), (1, 2)):
        assert conv_output_size(size, kernel_size, strides, "valid") == conv_output_size(
            size, kernel_size, strides, 0
        )


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_conv_output_size_matches_keras_conv2d(padding):
    for height, kernel_size, strides, dilation_rate in itertools.product(
        (5, 8, 13), (1, 2, 3, 5), (1, 2, 3), (1, 2)
    ):
        if strides > 1 and dilation_rate > 1:
            continue  # TensorFlow does not run strides and dilation together.
        width = height + 3
        if padding == "valid" and dilation_rate * (kernel_size - 1) + 1 > height:
            continue
        layer = keras.layers.Conv2D(
            1, kernel_size, strides=strides, padding=padding, dilation_rate=dilation_rate
        )
        output = layer(np.zeros((1, height, width, 1), "float32"))
        expected = tuple(output.shape[1:3])
        got = tuple(
            conv_output_size(n, kernel_size, strides, padding, dilation_rate)
            for n in (height, width)
        )
        assert got == expected, (height, kernel_size, strides, dilation_rate)


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_conv_transpose_output_size_matches_keras(padding):
    for size, kernel_size, strides, output_padding in itertools.product(
        (1, 3, 4), (1, 2, 3, 4), (1, 2, 3), (None, 0, 1, 2)
    ):
        if output_padding is not None and output_padding >= strides:
            continue
        layer = keras.layers.Conv2DTranspose(
            1, kernel_size, strides=strides, padding=padding, output_padding=output_padding
        )
        inputs = np.zeros((1, size, size + 2, 1), "float32")
        if padding == "same" and kernel_size % 2 == 0 and output_padding == 0:
            # oneDNN cannot run this case (it would need a negative padding), so compare with
            # the shape Keras declares for it instead of a computed output.
            expected = tuple(layer.compute_output_shape(inputs.shape)[1:3])
        else:
            expected = tuple(layer(inputs).shape[1:3])
        got = tuple(
            conv_transpose_output_size(n, kernel_size, strides, padding, output_padding)
            for n in (size, size + 2)
        )
        assert got == expected, (size, kernel_size, strides, output_padding)


def test_conv_transpose_output_size_with_dilation_matches_keras():
    layer = keras.layers.Conv2DTranspose(1, 3, padding="valid", dilation_rate=2)
    output = layer(np.zeros((1, 4, 6, 1), "float32"))
    assert tuple(output.shape[1:3]) == (
        conv_transpose_output_size(4, 3, dilation_rate=2),
        conv_transpose_output_size(6, 3, dilation_rate=2),
    )


def test_conv_transpose_output_size_int_padding_inverts_conv():
    # With an int padding the transposed convolution maps back to a size that the direct
    # convolution with the same arguments sends to the original size.
    grid = itertools.product(range(1, 7), range(1, 5), range(1, 4), range(0, 2), range(1, 3))
    for size, kernel_size, strides, padding, dilation_rate in grid:
        for output_padding in range(strides):
            try:
                upsampled = conv_transpose_output_size(
                    size, kernel_size, strides, padding, output_padding, dilation_rate
                )
            except ValueError:
                continue
            assert conv_output_size(upsampled, kernel_size, strides, padding, dilation_rate) == (
                size
            )


def test_dumoulin_visin_transpose_example():
    # Figure 4.5: a 3x3 kernel, stride 2, no padding maps 2x2 to 5x5.
    assert conv_transpose_output_size(2, 3, strides=2, padding=0) == 5


def test_unknown_size_gives_none():
    assert conv_output_size(None, 3, strides=2, padding="same") is None
    assert conv_transpose_output_size(None, 3, strides=2) is None


def test_unknown_size_still_validates_arguments():
    with pytest.raises(ValueError, match=r"Received: kernel_size=0"):
        conv_output_size(None, 0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            dict(size=0, kernel_size=3),
            r"`size` must be a positive int or None\. Received: size=0",
        ),
        (
            dict(size=5.0, kernel_size=3),
            r"`size` must be a positive int or None\. Received: size=5\.0",
        ),
        (
            dict(size=5, kernel_size=0),
            r"`kernel_size` must be a positive int\. Received: kernel_size=0",
        ),
        (
            dict(size=5, kernel_size=True),
            r"`kernel_size` must be a positive int\. Received: kernel_size=True",
        ),
        (
            dict(size=5, kernel_size=3, strides=-1),
            r"`strides` must be a positive int\. Received: strides=-1",
        ),
        (
            dict(size=5, kernel_size=3, dilation_rate=0),
            r"`dilation_rate` must be a positive int\. Received: dilation_rate=0",
        ),
        (
            dict(size=5, kernel_size=3, padding=-1),
            r"`padding` must be a non-negative int or one of .*Received: padding=-1",
        ),
        (
            dict(size=5, kernel_size=3, padding="full"),
            r"`padding` must be a non-negative int or one of .*Received: padding='full'",
        ),
        (
            dict(size=3, kernel_size=3, dilation_rate=2),
            r"The kernel does not fit in the input: the dilated kernel spans "
            r"dilation_rate \* \(kernel_size - 1\) \+ 1 = 5 positions but the padded input has "
            r"size \+ 2 \* padding = 3\. Received: size=3, kernel_size=3",
        ),
    ],
)
def test_conv_output_size_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        conv_output_size(**kwargs)


def test_conv_transpose_output_size_bad_arguments():
    with pytest.raises(
        ValueError,
        match=r"`output_padding` must be None or an int with 0 <= output_padding < strides\. "
        r"Received: output_padding=2, strides=2",
    ):
        conv_transpose_output_size(4, 3, strides=2, output_padding=2)
    with pytest.raises(ValueError, match=r"Received: padding='causal'"):
        conv_transpose_output_size(4, 3, padding="causal")
    with pytest.raises(ValueError, match=r"`padding` crops the whole output"):
        conv_transpose_output_size(1, 1, padding=1)
