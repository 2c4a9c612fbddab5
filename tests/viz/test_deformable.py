import matplotlib.figure
import numpy as np
import pytest

from kcnn.ops import deform_conv2d
from kcnn.viz import deformable_sampling_locations, plot_deformable_sampling, save_figure


@pytest.mark.parametrize("group", [0, 1])
def test_locations_are_where_deform_conv2d_samples(group):
    # On a linear image f(y, x) = 3y + x + 1, bilinear sampling is exact, so a kernel that
    # is 1 at one tap returns f at that tap's sampling location.
    size, kernel_size, strides, dilation = 9, 3, 2, 2
    rows, columns = np.mgrid[0:size, 0:size].astype("float32")
    image = np.zeros((1, size, size, 2), "float32")
    image[0, ..., group] = 3 * rows + columns + 1
    offsets = np.random.default_rng(group).uniform(-1, 1, (1, 5, 5, 2 * 2 * 9)).astype("float32")
    position = (2, 2)
    regular, deformed = deformable_sampling_locations(
        offsets[0], position, kernel_size, (size, size), strides, "same", dilation, group
    )
    np.testing.assert_array_equal(regular[[0, 4, 8]], [[2, 2], [4, 4], [6, 6]])
    for tap in range(9):
        kernel = np.zeros((3, 3, 2, 1), "float32")
        kernel[tap // 3, tap % 3, group, 0] = 1.0
        outputs = deform_conv2d(
            image, offsets, kernel, strides=strides, padding="same", dilation_rate=dilation
        )
        y, x = deformed[tap]
        assert float(outputs[0, *position, 0]) == pytest.approx(3 * y + x + 1, abs=1e-4)


def test_valid_and_explicit_padding():
    offsets = np.zeros((4, 4, 8))
    regular, deformed = deformable_sampling_locations(offsets, (1, 3), 2, (5, 5), padding="valid")
    np.testing.assert_array_equal(regular, [[1, 3], [1, 4], [2, 3], [2, 4]])
    np.testing.assert_array_equal(deformed, regular)
    regular, _ = deformable_sampling_locations(offsets, (0, 0), 2, (5, 5), padding=(1, 0))
    np.testing.assert_array_equal(regular[0], [-1, 0])


def test_plot_draws_each_tap_and_saves(tmp_path):
    image = np.random.default_rng(0).random((12, 12, 3))
    offsets = np.random.default_rng(1).normal(0, 1, (12, 12, 18))
    figure = plot_deformable_sampling(image, offsets, [(3, 3), (8, 7)], 3)
    assert isinstance(figure, matplotlib.figure.Figure)
    collections = figure.axes[0].collections
    assert len(collections) == 4 and all(len(c.get_offsets()) == 9 for c in collections)
    _, deformed = deformable_sampling_locations(offsets, (8, 7), 3, (12, 12))
    np.testing.assert_allclose(collections[3].get_offsets(), deformed[:, ::-1])
    path = save_figure(figure, tmp_path / "sampling.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match=r"`offsets` must be \(H_out, W_out, 2 \* groups \* 9\)"):
        deformable_sampling_locations(np.zeros((4, 4, 10)), (0, 0), 3, (4, 4))
    with pytest.raises(ValueError, match=r"`position` must lie in the 4x4 output grid"):
        deformable_sampling_locations(np.zeros((4, 4, 18)), (4, 0), 3, (4, 4))
    with pytest.raises(ValueError, match=r"`group` must be in \[0, 1\)"):
        deformable_sampling_locations(np.zeros((4, 4, 18)), (0, 0), 3, (4, 4), group=1)
    with pytest.raises(ValueError, match="`kernel_size` must be a positive int"):
        deformable_sampling_locations(np.zeros((4, 4, 18)), (0, 0), 0, (4, 4))
