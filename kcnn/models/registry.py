"""Names -> model builders, so a config says `name: unet` and nothing else needs strings.

Every builder takes `input_shape` and `num_classes` as keyword arguments (plus `backbone`, a
kcnn backbone instance, for the families that sit on one) and its own keyword arguments, and
returns a `keras.Model`: `(batch, num_classes)` float32 probabilities for classification,
`(batch, height, width, num_classes)` for segmentation. Inpainting models take
`[masked_image, mask]` and return the float32 image (`num_classes` is ignored). Detection
models return `(batch, points, 4 + num_classes)` box channels and class logits (see
`kcnn.detection.Detector`).

Each entry names the task it serves; the task names themselves are the task registry's
(`kcnn.tasks.task_names()`), which checks a config's model against its task.
"""

import dataclasses
import inspect


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    """A registered builder: its name, its task, whether it takes a backbone instance, and
    the keyword arguments it accepts (read once, at registration)."""

    name: str
    task: str
    builder: object
    uses_backbone: bool
    parameters: frozenset = frozenset()

    def accepts(self, argument):
        """Whether the builder takes the keyword argument `argument`."""
        return argument in self.parameters


MODELS = {}


def register_model(name, task, uses_backbone=False):
    """Decorator adding a builder to `MODELS` under `name` for `task`."""

    def decorator(builder):
        if name in MODELS:
            raise ValueError(f"A model named {name!r} is already registered.")
        parameters = frozenset(inspect.signature(builder).parameters)
        MODELS[name] = ModelEntry(name, task, builder, uses_backbone, parameters)
        return builder

    return decorator


def model_names(task=None):
    """Registered model names, for one task or all."""
    return sorted(name for name, entry in MODELS.items() if task in (None, entry.task))


def get_model_entry(name, task=None):
    """Returns the `ModelEntry` of `name`, checking it serves `task` when given.

    Raises:
        ValueError: naming the unknown model and listing the known ones for the task.
    """
    entry = MODELS.get(name)
    if entry is None or (task is not None and entry.task != task):
        raise ValueError(
            f"Unknown {task + ' ' if task else ''}model `name`={name!r}. Known: {model_names(task)}"
        )
    return entry
