"""The base of kcnn's task models: a functional graph built in `__init__`, its facts in its
config.

keras-hub's layout (`keras_hub.src.models.task.Task`): a `keras.Model` subclass whose
`__init__` builds its layers and functional graph, then records the constructor arguments
as attributes, so that `get_config` returns exactly what `__init__` takes and code asks the
model (`model.num_classes`, `model.strides`) instead of reading its layer names. A backbone
argument is serialized as a nested layer and rebuilt by `from_config`, so `.keras` files
reload with no `custom_objects` once kcnn is imported.
"""

import keras


class TaskModel(keras.Model):
    """A functional model whose config is its constructor arguments.

    Subclasses build `(inputs, outputs)` in `__init__`, call
    `super().__init__(inputs, outputs, name=name, **kwargs)`, then set one attribute per
    constructor argument and list those names in `CONFIG_KEYS` (a `backbone` argument is
    serialized as a layer). `input_shape` is a property of every Keras model (with the batch
    axis), so a model that takes the argument keeps it as `image_shape`.
    """

    CONFIG_KEYS = ()
    # Config keys whose attribute has another name.
    CONFIG_ATTRIBUTES = {"input_shape": "image_shape"}

    def get_config(self):
        # Not Functional's config (the layer graph): the constructor arguments.
        config = {"name": self.name, "trainable": self.trainable}
        for key in self.CONFIG_KEYS:
            value = getattr(self, self.CONFIG_ATTRIBUTES.get(key, key))
            if key == "backbone":
                value = keras.layers.serialize(value)
            elif isinstance(value, tuple):
                value = list(value)
            config[key] = value
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("backbone"), dict):
            config["backbone"] = keras.layers.deserialize(config["backbone"])
        return cls(**config)
