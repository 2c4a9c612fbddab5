"""`MirrorViews` and `AverageMirrorViews`: mirrored-view averaging in the inference pass."""

import keras
from keras import ops

from kcnn._serialization import register


@register
class MirrorViews(keras.layers.Layer):
    """Adds the mirror image of every input to the batch, in inference only.

    Test-time augmentation as AlexNet evaluated (Krizhevsky, Sutskever & Hinton 2012,
    section 4.1: the softmax averaged over ten patches, five crops and their horizontal
    reflections), with the two views that a network trained on random horizontal flips has
    learned alike: the image and its left-right mirror. In inference (`training` False or
    None) the output is `concat([x, x[:, :, ::-1]], axis=0)`, twice the batch; in training
    it is `x` unchanged, so training costs nothing more. `AverageMirrorViews` at the
    model's output averages the two halves back to one prediction per image.

    Every layer between the two must treat the images of a batch independently (in
    inference, batch normalization uses its moving statistics, so every layer of a
    classifier does). The pair converts to TFLite with builtin ops (`REVERSE_V2`,
    `CONCATENATION`, `SPLIT`, `ADD`, `MUL`).

    Input shape:
        4D tensor `(batch_size, height, width, channels)`.

    Output shape:
        4D tensor `(2 * batch_size, height, width, channels)` in inference, the input shape
        in training.

    Example:

    >>> import numpy as np
    >>> x = np.arange(4, dtype="float32").reshape(1, 1, 4, 1)
    >>> np.asarray(MirrorViews()(x))[:, 0, :, 0].tolist()
    [[0.0, 1.0, 2.0, 3.0], [3.0, 2.0, 1.0, 0.0]]
    >>> np.asarray(MirrorViews()(x, training=True)).shape
    (1, 1, 4, 1)
    """

    # Marks a layer that adds or averages inference views: `kcnn.viz.explain` follows one.
    inference_views = True

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.input_spec = keras.layers.InputSpec(ndim=4)

    def call(self, inputs, training=None):
        if training:
            return inputs
        return ops.concatenate([inputs, ops.flip(inputs, axis=2)], axis=0)


@register
class AverageMirrorViews(keras.layers.Layer):
    """Averages the predictions of an image and its mirror made by `MirrorViews`.

    In inference the input's batch holds the predictions of the images and then those of
    their mirrors (what `MirrorViews` put in); the output is the mean of the two halves,
    one row per image. In training it is the input unchanged. Averaging probabilities keeps
    them probabilities (each row still sums to 1).

    Input shape:
        Tensor `(2 * batch_size, ...)` in inference, `(batch_size, ...)` in training.

    Output shape:
        `(batch_size, ...)`.

    Example:

    >>> import numpy as np
    >>> p = np.array([[0.8, 0.2], [0.4, 0.6]], "float32")
    >>> np.asarray(AverageMirrorViews()(p)).tolist()
    [[0.6000000238418579, 0.4000000059604645]]
    """

    inference_views = True

    def call(self, inputs, training=None):
        if training:
            return inputs
        images, mirrors = ops.split(inputs, 2, axis=0)
        return (images + mirrors) * ops.cast(0.5, inputs.dtype)
