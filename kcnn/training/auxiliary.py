"""Training with auxiliary classifiers: their losses count during training only.

GoogLeNet (Szegedy et al. 2015, arXiv:1409.4842, section 5) attaches two small
classifiers to intermediate layers: "During training, their loss gets added to the total
loss of the network with a discount weight (the losses of the auxiliary classifiers were
weighted by 0.3). At inference time, these auxiliary networks are discarded."

A kcnn classification model with auxiliary classifiers has several outputs: the main
one named `"predictions"` and the others (e.g. `"aux1_predictions"`). `AuxiliaryLossModel`
trains it with the weighted sum and evaluates the main output alone; `main_output_model`
gives the one-output model to evaluate, save and export.
"""

import keras

from kcnn.models.classic.googlenet import AUX_LOSS_WEIGHT

MAIN_OUTPUT = "predictions"


def auxiliary_output_names(model):
    """Names of the outputs of `model` other than `"predictions"` (none for one output).

    Raises:
        ValueError: if `model` has several outputs and none is named `"predictions"`.

    Example:

    >>> from kcnn.models.classic import GoogLeNet
    >>> auxiliary_output_names(GoogLeNet((96, 96, 3), 10, aux_heads=True, width=0.125))
    ['aux1_predictions', 'aux2_predictions']
    """
    names = list(model.output_names)
    if len(names) == 1:
        return []
    if MAIN_OUTPUT not in names:
        raise ValueError(
            f"A model with several outputs needs one named '{MAIN_OUTPUT}' (the main "
            f"classifier). Model '{model.name}' has outputs {names}."
        )
    return [name for name in names if name != MAIN_OUTPUT]


def main_output_model(model):
    """The one-output model from the input of `model` to its `"predictions"` output.

    It shares the layers (and weights) of `model`; a one-output model is returned as is.

    Example:

    >>> from kcnn.models.classic import GoogLeNet
    >>> model = GoogLeNet((96, 96, 3), 10, aux_heads=True, width=0.125)
    >>> main_output_model(model).output_names
    ['predictions']
    """
    if not auxiliary_output_names(model):
        return model
    return keras.Model(model.input, model.get_layer(MAIN_OUTPUT).output, name=model.name)


class AuxiliaryLossModel(keras.Model):
    """Wraps a model with auxiliary classifiers so `fit` adds their losses with a weight.

    The loss `fit` minimises is `L(main) + aux_loss_weight * sum(L(aux_k))`, where `L` is
    the loss given to `compile`, applied to the same labels for every output; `evaluate`
    (and the validation of `fit`) report `L(main)` alone, and the metrics given to
    `compile` see the main output only, so logs read as those of a one-output model.
    `compile` takes one `keras.losses.Loss` instance (not a name), applied to every output.

    Args:
        model: a functional `keras.Model` with an output named `"predictions"` and one or
            more auxiliary outputs.
        aux_loss_weight: float >= 0. Weight of each auxiliary loss. Defaults to `0.3`
            (GoogLeNet's).
        **kwargs: `keras.Model` arguments (`name`).

    Raises:
        ValueError: if `model` has no auxiliary output or `aux_loss_weight` is negative;
            from `compile`, if `loss` is not a `keras.losses.Loss` instance.

    Example:

    >>> import numpy as np
    >>> from kcnn.models.classic import GoogLeNet
    >>> network = GoogLeNet((96, 96, 1), num_classes=3, aux_heads=True, width=0.125)
    >>> model = AuxiliaryLossModel(network)
    >>> loss = keras.losses.SparseCategoricalCrossentropy()
    >>> model.compile("sgd", loss=loss, metrics=["accuracy"])
    >>> logs = model.train_on_batch(np.zeros((2, 96, 96, 1)), np.array([0, 2]), return_dict=True)
    >>> sorted(logs)
    ['accuracy', 'loss']
    """

    def __init__(self, model, aux_loss_weight=AUX_LOSS_WEIGHT, **kwargs):
        kwargs.setdefault("name", f"{model.name}_training")
        super().__init__(**kwargs)
        if not auxiliary_output_names(model):
            raise ValueError(
                f"`model` must have auxiliary outputs besides '{MAIN_OUTPUT}'. "
                f"Received a model with outputs {list(model.output_names)}."
            )
        if isinstance(aux_loss_weight, bool) or not aux_loss_weight >= 0:
            raise ValueError(
                f"`aux_loss_weight` must be a number >= 0. Received: aux_loss_weight="
                f"{aux_loss_weight!r}"
            )
        self.network = model
        self.aux_loss_weight = float(aux_loss_weight)
        self.main_index = list(model.output_names).index(MAIN_OUTPUT)
        # The wrapped model is built already; callbacks such as BackupAndRestore need the
        # wrapper built before `fit`.
        self.build(model.input_shape)

    def compile(self, *args, **kwargs):
        super().compile(*args, **kwargs)
        # The auxiliary losses call the loss object directly: a function such as
        # "sparse_categorical_crossentropy" would return one value per sample instead.
        if not isinstance(self.loss, keras.losses.Loss):
            raise ValueError(
                "`loss` must be a keras.losses.Loss instance, applied to every output. "
                f"Received: loss={self.loss!r}"
            )

    def call(self, inputs, training=None):
        return self.network(inputs, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        outputs = list(y_pred)
        main = outputs.pop(self.main_index)
        loss = super().compute_loss(x, y, main, sample_weight, training=training)
        if training:
            for auxiliary in outputs:
                loss = loss + self.aux_loss_weight * self.loss(y, auxiliary, sample_weight)
        return loss

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        return super().compute_metrics(x, y, y_pred[self.main_index], sample_weight)
