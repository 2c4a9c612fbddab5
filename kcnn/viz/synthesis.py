"""Images made by following a model's gradients: adversarial examples (FGSM) and DeepDream."""

import keras
import numpy as np
import tensorflow as tf

from kcnn._validation import check_positive_int
from kcnn.viz.explain import (
    check_image,
    check_images,
    check_scores,
    find_layer,
    forward,
    output_layer,
)


def fgsm(model, images, labels, epsilon, value_range=(0.0, 1.0)):
    """Fast gradient sign method: a one-step adversarial example for each image.

    Goodfellow, Shlens & Szegedy, "Explaining and Harnessing Adversarial Examples", ICLR 2015
    (arXiv:1412.6572), eq. (3): x_adv = x + epsilon * sign(d J(x, y) / dx), J the
    cross-entropy of the true labels (computed from the scores, so a saturated softmax still
    has a gradient), then clipped to `value_range`. Every pixel moves by at most `epsilon`.

    Args:
        model: a Keras classifier.
        images: float array `(N, H, W, C)` in the model's input scale.
        labels: int array `(N,)` of true classes.
        epsilon: float >= 0. Max-norm of the perturbation.
        value_range: `(low, high)` of valid pixel values. Defaults to `(0.0, 1.0)`.

    Returns:
        float32 array `(N, H, W, C)`: the adversarial images.

    Raises:
        ValueError: on images of the wrong shape, labels of another length or out of
            range, or a negative `epsilon`.

    Example:
    >>> import keras, numpy as np
    >>> inputs = keras.Input((4, 4, 1))
    >>> outputs = keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(inputs))
    >>> images = np.full((3, 4, 4, 1), 0.5, "float32")
    >>> adversarial = fgsm(keras.Model(inputs, outputs), images, [0, 1, 0], epsilon=0.1)
    >>> float(np.abs(adversarial - images).max()) <= 0.1 + 1e-6
    True
    """
    check_scores(model)
    images = check_images(model, images)
    labels = np.asarray(labels)
    num_classes = int(model.outputs[0].shape[-1])
    if labels.shape != (len(images),) or labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(
            f"`labels` must be {len(images)} ints in [0, {num_classes}), one per image. "
            f"Received: labels.shape={labels.shape}"
        )
    if not epsilon >= 0:
        raise ValueError(f"`epsilon` must be >= 0. Received: epsilon={epsilon!r}")
    low, high = value_range
    batches = []
    for start in range(0, len(images), 256):
        batch = tf.constant(images[start : start + 256])
        with tf.GradientTape() as tape:
            tape.watch(batch)
            _, scores = forward(model, batch, scores=True)
            loss = keras.losses.sparse_categorical_crossentropy(
                labels[start : start + 256], scores, from_logits=_ends_in_softmax(model)
            )
        step = epsilon * tf.sign(tape.gradient(loss, batch))
        batches.append(tf.clip_by_value(batch + step, low, high).numpy())
    return np.concatenate(batches).astype(np.float32)


def _ends_in_softmax(model):
    layer = output_layer(model)
    return getattr(layer, "activation", None) is keras.activations.softmax


def deep_dream(model, image, layer_name, steps=20, step_size=0.01, value_range=(0.0, 1.0)):
    """DeepDream: changes an image by gradient ascent to excite a layer.

    Mordvintsev, Olah & Tyka, "Inceptionism: Going Deeper into Neural Networks", Google
    Research blog, 2015: repeat x <- x + step_size * g / std(g), g = d mean(A) / dx for the
    activations A of `layer_name` (the gradient normalised as in the TensorFlow DeepDream
    tutorial), clipping x to `value_range`.

    Args:
        model: a functional or Sequential Keras model.
        image: float array `(H, W, C)` in the model's input scale.
        layer_name: str. The layer whose mean activation grows (nested models included).
        steps: positive int. Gradient steps. Defaults to 20.
        step_size: float > 0. Defaults to 0.01.
        value_range: `(low, high)` of valid pixel values. Defaults to `(0.0, 1.0)`.

    Returns:
        float32 array `(H, W, C)`: the dreamed image.

    Raises:
        ValueError: on an unknown layer, an image of the wrong shape, or a bad `steps` or
            `step_size`.

    Example:
    >>> import keras, numpy as np
    >>> inputs = keras.Input((8, 8, 1))
    >>> x = keras.layers.Conv2D(2, 3, activation="relu", name="conv")(inputs)
    >>> model = keras.Model(inputs, x)
    >>> image = np.full((8, 8, 1), 0.5, "float32")
    >>> deep_dream(model, image, "conv", steps=3).shape
    (8, 8, 1)
    """
    image = check_image(model, image)
    layer = find_layer(model, layer_name)
    check_positive_int(steps, "steps")
    if not step_size > 0:
        raise ValueError(f"`step_size` must be > 0. Received: step_size={step_size!r}")
    low, high = value_range
    dream = tf.Variable(image[np.newaxis])
    for _ in range(steps):
        with tf.GradientTape() as tape:
            activations, _ = forward(model, dream, layer)
            objective = tf.reduce_mean(activations)
        gradient = tape.gradient(objective, dream)
        gradient /= tf.math.reduce_std(gradient) + 1e-8
        dream.assign(tf.clip_by_value(dream + step_size * gradient, low, high))
    return dream.numpy()[0]
