"""One place that registers kcnn objects for Keras serialization."""

import keras

PACKAGE = "kcnn"


def register(obj):
    """Register a layer, model, loss or metric under the "kcnn" package.

    `.keras` files and SavedModels that contain the object then reload with no
    `custom_objects`, as long as `kcnn` has been imported.
    """
    return keras.saving.register_keras_serializable(package=PACKAGE)(obj)
