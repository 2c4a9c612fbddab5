"""A small trained model with a `StepCheckpoint`, for the checkpoint tests."""

import keras
import numpy as np

from kcnn.training.checkpoint import StepCheckpoint


def checkpointed_model(directory):
    """A compiled, once-trained Dense model and a `StepCheckpoint` (4 steps per epoch, every
    step) into `directory`, which has saved step 1. Returns `(model, checkpoint, weights)`,
    the weights being those of the step-1 checkpoint."""
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="adam", loss="mse")
    model.fit(np.ones((4, 3)), np.ones((4, 2)), epochs=1, verbose=0)
    checkpoint = StepCheckpoint(directory, steps_per_epoch=4, every_steps=1)
    checkpoint.set_model(model)
    checkpoint.save(1)
    return model, checkpoint, [np.asarray(w) for w in model.get_weights()]
