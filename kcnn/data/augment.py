"""AlexNet-style augmentation for classification, built from Keras's preprocessing layers.

Krizhevsky, Sutskever & Hinton, "ImageNet Classification with Deep Convolutional Neural
Networks", NeurIPS 2012, section 4.1, enlarged the data set with random crops and
horizontal flips, and altered the intensities of the RGB channels along their principal
components ("PCA lighting"). Later recipes added random resized crops, rotations and colour
jitter. A classification config lists the ones it wants, in the order they run:

    data:
      augment: [random_resized_crop, flip, color_jitter, pca_lighting]

Each name is Keras's own preprocessing layer where Keras has one, written here only where it
has none (`PCALighting`):

- `flip`: `RandomFlip("horizontal")`.
- `random_resized_crop`: `RandomZoom` in by up to 30% per side (height and width drawn
  apart, so the aspect ratio changes too), then `RandomTranslation` by up to 10%.
- `rotation`: `RandomRotation` by up to 15 degrees.
- `color_jitter`: `RandomBrightness` and `RandomContrast`, up to 20% and 30%.
- `pca_lighting`: `PCALighting` with the principal components of the training pixels.
- `random_erasing`: Keras's `RandomErasing` (Zhong, Zheng, Kang, Li & Yang, "Random
  Erasing Data Augmentation", AAAI 2020, arXiv:1708.04896): with probability 0.5 an image
  has one rectangle replaced by random values. The paper draws the area (2-40% of the
  image) and then the aspect ratio; Keras draws each side's fraction as the square root of
  a uniform number in the same 0.02-0.4, so the rectangle also covers 2-40% of the image,
  19% on average, and fills it with normal noise clipped to [0, 1] (the paper: uniform).

Geometric layers fill with the reflected image, as kcnn's `"flip_translate"` does.
"""

import keras
import numpy as np

from kcnn._serialization import register

LIST_AUGMENTATIONS = (
    "flip",
    "random_resized_crop",
    "rotation",
    "color_jitter",
    "pca_lighting",
    "random_erasing",
)
ZOOM_IN = 0.3
TRANSLATE = 0.1
ROTATION_DEGREES = 15.0
BRIGHTNESS = 0.2
CONTRAST = 0.3
# The standard deviation of the paper's α_i.
PCA_STD = 0.1
# PCA lighting's basis is computed on at most this many training images.
PCA_IMAGES = 10000
# Random erasing: the paper's probability p and area range (s_l, s_h).
ERASE_PROBABILITY = 0.5
ERASE_AREA = (0.02, 0.4)


def pca_lighting_basis(images, max_images=PCA_IMAGES, seed=0):
    """Eigenvalues and eigenvectors of the covariance of the images' pixel values.

    The basis of AlexNet's lighting augmentation (Krizhevsky et al. 2012, section 4.1): the
    covariance is taken over every pixel of the images as `C`-vectors of values in [0, 1]
    (as fb.resnet.torch, whose ImageNet eigenvalues are 0.2175, 0.0188, 0.0045).

    Args:
        images: array `(N, H, W, C)`, uint8 or float in [0, 1].
        max_images: int. At most this many images, drawn at random (seeded). Defaults to
            `PCA_IMAGES`.
        seed: int. Defaults to `0`.

    Returns:
        `(eigenvalues (C,), eigenvectors (C, C))`, float32, largest first; column `i` of
        `eigenvectors` is the `i`-th principal direction.

    Example:

    >>> images = np.zeros((2, 4, 4, 1), np.uint8); images[1] = 255
    >>> eigenvalues, eigenvectors = pca_lighting_basis(images)
    >>> float(eigenvalues[0]), float(abs(eigenvectors[0, 0]))  # values 0 and 1, half each
    (0.25, 1.0)
    """
    images = np.asarray(images)
    if len(images) > max_images:
        images = images[np.random.default_rng(seed).choice(len(images), max_images, False)]
    pixels = images.reshape(-1, images.shape[-1]).astype(np.float64)
    if images.dtype == np.uint8:
        pixels /= 255.0
    pixels -= pixels.mean(axis=0)
    eigenvalues, eigenvectors = np.linalg.eigh(pixels.T @ pixels / len(pixels))
    order = np.argsort(eigenvalues)[::-1]
    return eigenvalues[order].astype(np.float32), eigenvectors[:, order].astype(np.float32)


@register
class PCALighting(keras.layers.Layer):
    """AlexNet's lighting augmentation: a random shift of every pixel along the principal
    components of the training set's pixel values.

    Krizhevsky, Sutskever & Hinton 2012, section 4.1: to each pixel of an image add
    `[p_1, ..., p_C] [α_1 λ_1, ..., α_C λ_C]^T`, where `p_i` and `λ_i` are the eigenvectors
    and eigenvalues of the covariance of pixel values (`pca_lighting_basis`) and each `α_i`
    is drawn from N(0, `std`) once per image. Natural images keep their identity under such
    changes of illumination intensity and colour. Results are clipped to [0, 1]. Active in
    training only.

    Args:
        eigenvalues: sequence of `C` floats.
        eigenvectors: `(C, C)` nested sequence; column `i` belongs to `eigenvalues[i]`.
        std: float >= 0. Standard deviation of the α_i. Defaults to `0.1` (the paper's).
        seed: int or None. Seed of the draws. Defaults to `None`.
        **kwargs: `keras.layers.Layer` arguments.

    Input shape:
        `(B, H, W, C)` float images in [0, 1].

    Output shape:
        Same as the input.

    Raises:
        ValueError: if the eigen-pairs do not match in size or `std` is negative.

    Example:

    >>> layer = PCALighting([0.04], [[1.0]], seed=0)
    >>> images = np.full((2, 3, 3, 1), 0.5, "float32")
    >>> bool(np.all(layer(images, training=False) == images))
    True
    """

    def __init__(self, eigenvalues, eigenvectors, std=PCA_STD, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.eigenvalues = [float(value) for value in np.ravel(eigenvalues)]
        self.eigenvectors = np.asarray(eigenvectors, np.float32).tolist()
        shape = np.shape(self.eigenvectors)
        if shape != (len(self.eigenvalues),) * 2:
            raise ValueError(
                "`eigenvectors` must be a (C, C) matrix for the C `eigenvalues`. Received: "
                f"{len(self.eigenvalues)} eigenvalues, eigenvectors of shape {shape}"
            )
        if not std >= 0:
            raise ValueError(f"`std` must be >= 0. Received: std={std!r}")
        self.std = float(std)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs, training=True):
        if not training:
            return inputs
        channels = len(self.eigenvalues)
        alphas = keras.random.normal(
            (keras.ops.shape(inputs)[0], channels), stddev=self.std, seed=self.seed_generator
        )
        weighted = alphas * keras.ops.convert_to_tensor(self.eigenvalues, inputs.dtype)
        basis = keras.ops.convert_to_tensor(self.eigenvectors, inputs.dtype)
        shift = keras.ops.matmul(weighted, keras.ops.transpose(basis))
        return keras.ops.clip(inputs + shift[:, None, None, :], 0.0, 1.0)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            eigenvalues=self.eigenvalues,
            eigenvectors=self.eigenvectors,
            std=self.std,
            seed=self.seed,
        )
        return config


def check_list_augment(augment):
    """Raises a ValueError naming the first name of the list `augment` that is unknown."""
    if not augment:
        raise ValueError(
            f"`augment` as a list must name at least one of {LIST_AUGMENTATIONS}. "
            f"Received: augment={augment!r}"
        )
    for name in augment:
        if name not in LIST_AUGMENTATIONS:
            raise ValueError(
                f"Each entry of the `augment` list must be one of {LIST_AUGMENTATIONS}. "
                f"Received: {name!r} in augment={list(augment)!r}"
            )


def augmentation_layers(augment, images, seed=0):
    """The Keras layers of a list of augmentation names, in order (see the module docstring).

    Args:
        augment: list of names from `LIST_AUGMENTATIONS`.
        images: the training images, `(N, H, W, C)`; `pca_lighting` takes its basis from
            them.
        seed: int. Each layer is seeded from it. Defaults to `0`.

    Returns:
        A list of Keras layers, to be called on float batches in [0, 1] with
        `training=True`.

    Raises:
        ValueError: for an unknown name (named).
    """
    check_list_augment(augment)
    layers = []
    for index, name in enumerate(augment):
        layer_seed = seed * len(LIST_AUGMENTATIONS) * 4 + index * 4
        if name == "flip":
            layers.append(keras.layers.RandomFlip("horizontal", seed=layer_seed))
        elif name == "random_resized_crop":
            layers += [
                keras.layers.RandomZoom(
                    (-ZOOM_IN, 0.0), (-ZOOM_IN, 0.0), fill_mode="reflect", seed=layer_seed
                ),
                keras.layers.RandomTranslation(
                    TRANSLATE, TRANSLATE, fill_mode="reflect", seed=layer_seed + 1
                ),
            ]
        elif name == "rotation":
            layers.append(
                keras.layers.RandomRotation(
                    ROTATION_DEGREES / 360.0, fill_mode="reflect", seed=layer_seed
                )
            )
        elif name == "color_jitter":
            layers += [
                keras.layers.RandomBrightness(BRIGHTNESS, value_range=(0, 1), seed=layer_seed),
                keras.layers.RandomContrast(CONTRAST, value_range=(0, 1), seed=layer_seed + 1),
            ]
        elif name == "random_erasing":
            layers.append(
                keras.layers.RandomErasing(
                    factor=(ERASE_PROBABILITY, ERASE_PROBABILITY),
                    scale=ERASE_AREA,
                    value_range=(0, 1),
                    seed=layer_seed,
                )
            )
        else:
            eigenvalues, eigenvectors = pca_lighting_basis(images, seed=seed)
            layers.append(PCALighting(eigenvalues, eigenvectors, seed=layer_seed))
    return layers
