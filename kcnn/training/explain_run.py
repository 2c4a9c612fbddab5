"""`kcnn explain`: what a finished run's classifier looks at in one image file."""

import json
from pathlib import Path

import numpy as np

from kcnn.training.run_folder import load_run
from kcnn.viz import METHODS, explain, load_image_for_model, plot_saliency, save_figure


def explain_run(run_dir, image_path, method, output, class_index=None, layer_name=None):
    """Explains a finished run's prediction on one image file and writes the figure as PNG.

    Args:
        run_dir: a kcnn run folder (with `model.keras`).
        image_path: an image file; see `load_image_for_model`.
        method: one of `METHODS`.
        output: path of the PNG to write.
        class_index: int or None. Class to explain. Defaults to the predicted class.
        layer_name: str or None. Grad-CAM layer. Defaults to the last conv layer.

    Returns:
        The PNG path (`pathlib.Path`).
    """
    if method not in METHODS:
        raise ValueError(f"`method` must be one of {METHODS}. Received: method={method!r}")
    _, model = load_run(run_dir)
    image = load_image_for_model(image_path, model)
    explanation = explain(model, image, method, class_index, layer_name)
    probabilities = np.asarray(model(image[np.newaxis], training=False))[0]
    names_file = Path(run_dir) / "class_names.json"
    class_names = json.loads(names_file.read_text()) if names_file.is_file() else None
    predicted = int(probabilities.argmax())
    explained = predicted if class_index is None else class_index

    def name(index):
        return class_names[index] if class_names else str(index)

    title = f"{Path(image_path).name}: {method} of class {name(explained)}"
    title += f" (p = {probabilities[explained]:.3f})"
    if explained != predicted:
        title += f", predicted {name(predicted)} (p = {probabilities[predicted]:.3f})"
    figure = plot_saliency(image, {method: explanation}, title=title)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    return save_figure(figure, output)
