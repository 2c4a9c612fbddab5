"""`explain`: one explanation of a classifier's decision, chosen by name."""

from kcnn.viz.backprojection import deconvnet_projection, guided_backprop, guided_grad_cam
from kcnn.viz.explain import grad_cam, occlusion_map, saliency_map

METHODS = (
    "saliency",
    "smoothgrad",
    "occlusion",
    "gradcam",
    "guided",
    "guided_gradcam",
    "deconvnet",
)
PIXEL_SPACE_METHODS = ("guided", "guided_gradcam", "deconvnet")
_LAYER_METHODS = ("gradcam", "guided_gradcam")


def explain(model, image, method, class_index=None, layer_name=None):
    """One explanation of `model`'s score for a class on `image`, by method name.

    - `"saliency"`, `"smoothgrad"` (32 noisy gradients averaged), `"occlusion"` and
      `"gradcam"` return a map `(H, W)`;
    - `"guided"` (guided backpropagation), `"guided_gradcam"` and `"deconvnet"` (the class
      score sent back by Zeiler & Fergus's DeconvNet rule) return a pixel-space picture
      `(H, W, C)`; see `kcnn.viz.backprojection`.

    `layer_name` is the Grad-CAM layer of `"gradcam"` and `"guided_gradcam"`.

    Returns:
        float32 array `(H, W)` or `(H, W, C)` (the methods in `PIXEL_SPACE_METHODS`).

    Raises:
        ValueError: for an unknown `method`, or what the method itself raises.

    Example:
    >>> import keras, numpy as np
    >>> inputs = keras.Input((8, 8, 1))
    >>> x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    >>> x = keras.layers.GlobalAveragePooling2D()(x)
    >>> model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))
    >>> explain(model, np.zeros((8, 8, 1), "float32"), "occlusion").shape
    (8, 8)
    >>> explain(model, np.zeros((8, 8, 1), "float32"), "guided").shape
    (8, 8, 1)
    """
    if method not in METHODS:
        raise ValueError(f"`method` must be one of {METHODS}. Received: method={method!r}")
    if layer_name is not None and method not in _LAYER_METHODS:
        raise ValueError(
            f"`layer_name` applies to method in {_LAYER_METHODS} only. Received: "
            f"method={method!r}, layer_name={layer_name!r}"
        )
    if method == "saliency":
        return saliency_map(model, image, class_index)
    if method == "smoothgrad":
        return saliency_map(model, image, class_index, smoothgrad_samples=32)
    if method == "occlusion":
        return occlusion_map(model, image, class_index=class_index)
    if method == "gradcam":
        return grad_cam(model, image, layer_name, class_index)
    if method == "guided":
        return guided_backprop(model, image, class_index)
    if method == "guided_gradcam":
        return guided_grad_cam(model, image, class_index, layer_name)
    return deconvnet_projection(model, None, None, image, class_index=class_index)
