"""A U-Net that learns a correction to a classical fill, for image inpainting."""

import keras

from kcnn._serialization import register
from kcnn.layers import SmoothFill2D
from kcnn.models._inpainting_unet import check_arguments, conv_unet_body, inpainting_inputs
from kcnn.models._task_model import TaskModel
from kcnn.models.registry import register_model


@register
@register_model("fill_residual_unet", "inpainting")
class FillResidualUNet(TaskModel):
    """A U-Net that refines a smooth classical fill: output = fill + learned residual.

    Two ideas from inpainting since partial convolutions (Liu et al. 2018,
    arXiv:1804.07723), in their simplest form:

    - Coarse fill, then refinement (Yu, Lin, Yang, Shen, Lu & Huang, "Generative Image
      Inpainting with Contextual Attention", 2018, arXiv:1801.07892, section 3.1): here the
      coarse stage has no weights: `SmoothFill2D`, a pull-push pyramid refined by biharmonic
      sweeps (Gortler et al. 1996; the interpolant of `skimage`'s `inpaint_biharmonic`),
      in TFLite builtin ops.
    - Learning a residual (He et al. 2016, arXiv:1512.03385): the refining network is
      `ConvUNetInpaint`'s plain-conv U-Net fed `concat(fill, mask)`, and its last layer
      starts at zero, so the untrained model *is* the classical fill and training only has
      to learn what the fill gets wrong (edges and shapes it cannot continue).

    Args:
        input_shape: `(height, width, channels)` of the images; height and width divisible
            by `2**depth` (and known: the fill's pyramid needs them).
        num_classes: ignored; accepted so every registry builder takes the same keyword
            arguments.
        width: int >= 1. Filters of the first layer. Defaults to 16.
        depth: int >= 1. Encoder levels. Defaults to 5.
        fill_iterations: int >= 0. Biharmonic sweeps of the fill at full resolution.
            Defaults to 40.
        fill_coarse_iterations: int >= 0. Sweeps at each coarser level. Defaults to 20.
        fill_cg_iterations: int >= 0. The fill's multigrid-preconditioned conjugate-gradient
            steps (`SmoothFill2D`'s `cg_iterations`): 6 bring it within 0.1 dB of
            `inpaint_biharmonic` on photo crops. Defaults to 0.
        name: str. Defaults to `"fill_residual_unet"`.

    Input and output:
        Those of `PConvUNet`: inputs `[masked_image, mask]` (`(B, H, W, C)` in [0, 1] and
        `(B, H, W, 1)`, 1 = valid), output the predicted image `(B, H, W, C)`, float32,
        linear. The composited result is `mask * image + (1 - mask) * output`.

    The constructor arguments are the model's config and attributes.

    Raises:
        ValueError: as `PConvUNet`, and for a height or width that is not known, or
            negative fill iterations.

    Example:

    >>> import numpy as np
    >>> model = FillResidualUNet((32, 32, 3), width=4, depth=3)
    >>> image = np.full((1, 32, 32, 3), 0.25, "float32")
    >>> mask = np.ones((1, 32, 32, 1), "float32"); mask[:, 8:24, 8:24] = 0
    >>> bool(np.allclose(model.predict([image * mask, mask], verbose=0), 0.25))
    True
    """

    CONFIG_KEYS = (
        "input_shape",
        "num_classes",
        "width",
        "depth",
        "fill_iterations",
        "fill_coarse_iterations",
        "fill_cg_iterations",
    )

    def __init__(
        self,
        input_shape,
        num_classes=None,
        width=16,
        depth=5,
        fill_iterations=40,
        fill_coarse_iterations=20,
        fill_cg_iterations=0,
        name="fill_residual_unet",
        **kwargs,
    ):
        # === Layers ===
        # float32 under mixed precision too: tens of sweeps in float16 drift.
        fill_layer = SmoothFill2D(
            fill_iterations,
            fill_coarse_iterations,
            cg_iterations=fill_cg_iterations,
            dtype="float32",
            name="smooth_fill",
        )
        # === Functional graph ===
        input_shape = check_arguments(input_shape, width, depth)
        if None in input_shape[:2]:
            raise ValueError(
                "`input_shape` must have a known height and width (the fill's pyramid needs "
                f"them). Received: input_shape={input_shape}"
            )
        image, mask = inpainting_inputs(input_shape)
        fill = fill_layer([image, mask])
        features = keras.layers.Concatenate(name="fill_and_mask")([fill, mask])
        residual = conv_unet_body(
            features, features, input_shape[-1], width, depth, zero_output=True, project_skip=True
        )
        output = keras.layers.Add(name="fill_plus_residual", dtype="float32")([fill, residual])
        super().__init__([image, mask], output, name=name, **kwargs)
        # === Config ===
        self.image_shape = tuple(input_shape)
        self.num_classes = num_classes
        self.width = width
        self.depth = depth
        self.fill_iterations = fill_layer.iterations
        self.fill_coarse_iterations = fill_layer.coarse_iterations
        self.fill_cg_iterations = fill_layer.cg_iterations
