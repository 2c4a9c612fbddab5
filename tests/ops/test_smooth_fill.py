import numpy as np
import pytest
import skimage.restoration

from kcnn.ops.smooth_fill import pyramid_levels, smooth_fill

RNG = np.random.default_rng(7)


def reference_pull(values, known):
    """2x2 block means of the known pixels, block by block (float64)."""
    height, width = values.shape[0] // 2, values.shape[1] // 2
    means = np.zeros((height, width, values.shape[2]))
    any_known = np.zeros((height, width, values.shape[2]))
    for i in range(height):
        for j in range(width):
            block_values = values[2 * i : 2 * i + 2, 2 * j : 2 * j + 2]
            block_known = known[2 * i : 2 * i + 2, 2 * j : 2 * j + 2]
            counts = block_known.sum(axis=(0, 1))
            any_known[i, j] = counts > 0
            sums = (block_values * block_known).sum(axis=(0, 1))
            means[i, j] = np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)
    return means, any_known


def reference_upsample(values, height, width):
    """Bilinear resizing with half-pixel centres, pixel by pixel (float64)."""
    in_height, in_width = values.shape[:2]
    out = np.zeros((height, width, values.shape[2]))
    for i in range(height):
        for j in range(width):
            y = min(max((i + 0.5) * in_height / height - 0.5, 0.0), in_height - 1)
            x = min(max((j + 0.5) * in_width / width - 0.5, 0.0), in_width - 1)
            y0, x0 = int(np.floor(y)), int(np.floor(x))
            y1, x1 = min(y0 + 1, in_height - 1), min(x0 + 1, in_width - 1)
            dy, dx = y - y0, x - x0
            out[i, j] = (
                values[y0, x0] * (1 - dy) * (1 - dx)
                + values[y0, x1] * (1 - dy) * dx
                + values[y1, x0] * dy * (1 - dx)
                + values[y1, x1] * dy * dx
            )
    return out


def reference_sweeps(values, known, iterations):
    """Damped Jacobi on the 13-point biharmonic stencil, mirrored borders (float64)."""
    height, width = values.shape[:2]

    def at(u, i, j):
        # numpy's "reflect": index -1 reads 1, index H reads H - 2.
        i = -i if i < 0 else (2 * (height - 1) - i if i >= height else i)
        j = -j if j < 0 else (2 * (width - 1) - j if j >= width else j)
        return u[i, j]

    for _ in range(iterations):
        new = values.copy()
        for i in range(height):
            for j in range(width):
                if known[i, j, 0]:
                    continue
                edges = sum(at(values, i + a, j + b) for a, b in ((-1, 0), (1, 0), (0, -1), (0, 1)))
                diagonals = sum(at(values, i + a, j + b) for a in (-1, 1) for b in (-1, 1))
                far = sum(at(values, i + a, j + b) for a, b in ((-2, 0), (2, 0), (0, -2), (0, 2)))
                stencil = (8 * edges - 2 * diagonals - far) / 20
                new[i, j] = 0.5 * values[i, j] + 0.5 * stencil
        values = new
    return values


def reference_fill(image, mask, iterations, coarse_iterations):
    known = np.repeat(mask, image.shape[2], axis=2).astype(np.float64)
    levels = pyramid_levels(*image.shape[:2])
    pyramid = [(image * known, known)]
    for _ in range(levels):
        pyramid.append(reference_pull(*pyramid[-1]))
    values, level_known = pyramid[-1]
    mean = (values * level_known).sum(axis=(0, 1)) / max(level_known[..., 0].sum(), 1)
    filled = values * level_known + (1 - level_known) * mean
    for level in reversed(range(levels + 1)):
        values, level_known = pyramid[level]
        if level < levels:
            up = reference_upsample(filled, *values.shape[:2])
            filled = values * level_known + (1 - level_known) * up
        sweeps = iterations if level == 0 else coarse_iterations
        filled = reference_sweeps(filled, level_known, sweeps)
    return filled


def smooth_image(size, channels, seed=3):
    """A smooth random image: a few low-frequency sinusoids."""
    rng = np.random.default_rng(seed)
    rows, cols = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    image = np.zeros((size, size, channels))
    for _ in range(4):
        fy, fx, phase = rng.uniform(0, 0.25, 2).tolist() + [rng.uniform(0, 6.28)]
        image += rng.uniform(0.05, 0.2, channels) * np.cos(fy * rows + fx * cols + phase)[..., None]
    return 0.5 + image


def test_matches_float64_reference():
    images = RNG.uniform(size=(2, 16, 16, 2))
    masks = (RNG.uniform(size=(2, 16, 16, 1)) > 0.5).astype(np.float64)
    masks[1, 2:12, 3:14] = 0  # one large hole
    filled = np.asarray(
        smooth_fill(images.astype("float32"), masks.astype("float32"), 6, 3), np.float64
    )
    for image, mask, result in zip(images, masks, filled, strict=True):
        np.testing.assert_allclose(result, reference_fill(image, mask, 6, 3), atol=2e-5)


def test_a_constant_image_is_filled_with_its_constant_after_any_number_of_sweeps():
    image = np.full((1, 32, 32, 2), 0.3, "float32")
    mask = np.ones((1, 32, 32, 1), "float32")
    mask[:, 4:28, 6:30] = 0  # larger than a pixel of the coarsest level
    for sweeps in (0, 3):
        filled = np.asarray(smooth_fill(image * mask, mask, sweeps, sweeps))
        np.testing.assert_allclose(filled, 0.3, atol=1e-6)


def test_known_pixels_kept_and_an_empty_image_filled_with_zero():
    images = RNG.uniform(size=(2, 32, 32, 3)).astype("float32")
    masks = (RNG.uniform(size=(2, 32, 32, 1)) > 0.4).astype("float32")
    masks[1] = 0
    filled = np.asarray(smooth_fill(images, masks))
    known = np.repeat(masks, 3, axis=-1) > 0
    np.testing.assert_array_equal(filled[known], images[known])
    np.testing.assert_array_equal(filled[1], 0.0)


def test_converges_to_the_biharmonic_interpolant():
    # skimage solves the same biharmonic equation exactly (a sparse linear solve): many sweeps
    # bring the fill to its solution, and the default sweeps most of the way.
    image = smooth_image(24, 3)
    mask = np.ones((24, 24, 1))
    mask[6:16, 7:17] = 0
    mask[18:21, 3:7] = 0
    exact = skimage.restoration.inpaint_biharmonic(image, mask[..., 0] == 0, channel_axis=-1)
    inputs = (image[None].astype("float32"), mask[None].astype("float32"))
    hole = np.repeat(mask, 3, axis=-1) == 0
    converged = np.asarray(smooth_fill(*inputs, iterations=2000, coarse_iterations=200))[0]
    assert np.abs(converged - exact)[hole].max() < 5e-4
    default = np.asarray(smooth_fill(*inputs))[0]
    mean_fill = np.abs(image[~hole].mean() - exact)[hole].mean()
    assert np.abs(default - exact)[hole].mean() < 0.1 * mean_fill


def exact_discrete_fill(image, mask, order=2):
    """The exact solution of `Δ^order u = 0` in the holes (`Δ²` by default), `Δ` the 5-point
    Laplacian with repeated borders (numpy's "symmetric"), the known pixels fixed: a dense
    float64 linear solve, one channel."""

    def laplacian(u):
        p = np.pad(u, 1, mode="symmetric")
        return p[:-2, 1:-1] + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:] - 4 * u

    def stencil(u):
        for _ in range(order):
            u = laplacian(u)
        return u

    free = np.flatnonzero(mask.ravel() == 0)
    columns = []
    for index in free:
        unit = np.zeros(image.size)
        unit[index] = 1.0
        columns.append(stencil(unit.reshape(image.shape)).ravel()[free])
    known_part = stencil(np.where(mask == 0, 0.0, image)).ravel()[free]
    solution = image.astype(np.float64).ravel().copy()
    solution[free] = np.linalg.solve(np.stack(columns, axis=1), -known_part)
    return solution.reshape(image.shape)


@pytest.mark.parametrize("order", [2, 1], ids=["biharmonic", "harmonic"])
def test_multigrid_cg_solves_the_discrete_equation(order):
    # Against an exact dense solve of the same equation: each group of steps brings the fill
    # closer, and 16 steps solve it (a hole within two pixels of the border included).
    image = smooth_image(16, 1, seed=5)[..., 0] + 0.1 * RNG.standard_normal((16, 16))
    mask = np.ones((16, 16))
    mask[3:13, 2:10] = 0
    mask[12:15, 11:15] = 0
    exact = exact_discrete_fill(image, mask, order)
    inputs = (image[None, ..., None].astype("float32"), mask[None, ..., None].astype("float32"))

    def error(**kwargs):
        filled = np.asarray(
            smooth_fill(*inputs, iterations=2, coarse_iterations=2, order=order, **kwargs)
        )
        return np.abs(filled[0, ..., 0] - exact).max()

    errors = [error(cg_iterations=steps) for steps in (0, 4, 16)]
    assert errors[0] > 0.03
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 5e-4
    # A V-cycle scaled for the operator (its coarse right-hand side times 4**order) makes
    # 4 steps cut the error 5x for Δ² and 100x for Δ; a wrong scale only slows them.
    assert errors[1] < {2: 0.2, 1: 0.01}[order] * errors[0]


def test_multigrid_cg_keeps_known_pixels_constants_and_images_without_holes():
    images = RNG.uniform(size=(3, 32, 32, 2)).astype("float32")
    masks = (RNG.uniform(size=(3, 32, 32, 1)) > 0.4).astype("float32")
    masks[1] = 1.0  # no hole: nothing to solve, and no 0 / 0
    images[2] = 0.3
    masks[2, :, 4:28] = 0
    filled = np.asarray(smooth_fill(images, masks, cg_iterations=3))
    known = np.repeat(masks, 2, axis=-1) > 0
    np.testing.assert_array_equal(filled[known], images[known])
    assert np.isfinite(filled).all()
    np.testing.assert_allclose(filled[2], 0.3, atol=1e-6)


def test_pyramid_levels():
    assert pyramid_levels(64, 64) == 4  # 64 -> 32 -> 16 -> 8 -> 4
    assert pyramid_levels(32, 48) == 3
    assert pyramid_levels(64, 64, levels=2) == 2
    assert pyramid_levels(7, 7) == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"iterations": -1}, r"`iterations` must be a non-negative int. Received: iterations=-1"),
        ({"coarse_iterations": 1.5}, r"`coarse_iterations` must be a non-negative int"),
        ({"levels": -2}, r"`levels` must be a non-negative int"),
        ({"cg_iterations": -1}, r"`cg_iterations` must be a non-negative int"),
        ({"order": 3}, r"`order` must be 1 \(harmonic\) or 2 \(biharmonic\). Received: order=3"),
        ({"order": True}, r"`order` must be 1 \(harmonic\) or 2 \(biharmonic\)"),
    ],
)
def test_bad_arguments(kwargs, message):
    image = np.zeros((1, 8, 8, 1), "float32")
    with pytest.raises(ValueError, match=message):
        smooth_fill(image, np.ones_like(image), **kwargs)


def test_harmonic_sweeps_converge_to_the_discrete_harmonic_fill():
    # The order-1 Jacobi sweeps alone (no conjugate gradients), against the dense solve.
    image = smooth_image(16, 1, seed=8)[..., 0] + 0.1 * RNG.standard_normal((16, 16))
    mask = np.ones((16, 16))
    mask[2:14, 4:12] = 0
    exact = exact_discrete_fill(image, mask, order=1)
    inputs = (image[None, ..., None].astype("float32"), mask[None, ..., None].astype("float32"))
    filled = np.asarray(smooth_fill(*inputs, iterations=1500, coarse_iterations=50, order=1))
    assert np.abs(filled[0, ..., 0] - exact).max() < 1e-4
    # ... which differs from the biharmonic one.
    assert np.abs(exact - exact_discrete_fill(image, mask)).max() > 0.01
