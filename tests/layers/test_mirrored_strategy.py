"""One MirroredStrategy step through the deterministic layers of the classic networks.

A single subprocess covers them all (each costs a TensorFlow start-up). Left out, because a
mirrored step cannot equal a one-device step for them: `StochasticPooling2D` and
`FractionalMaxPooling2D` draw different random numbers on each replica in training, and
`ResidualBlock` / `BottleneckBlock` normalize with per-replica batch statistics.
"""

import pytest

from . import citizenship


def test_mirrored_strategy_matches_one_device():
    citizenship.check_mirrored_strategy(
        """
        from kcnn.layers import (
            BedOfNailsUpsampling2D,
            InceptionModule,
            LocallyConnected2D,
            LocalResponseNormalization,
            SubmanifoldConv2D,
        )

        def model_fn():
            image, mask = keras.Input((6, 6, 3)), keras.Input((6, 6, 1))
            x, active = SubmanifoldConv2D(4, 3, activation="relu")([image, mask])
            x = LocalResponseNormalization(1, 1.0, 0.1, 0.75)(x)
            x = InceptionModule(2, 2, 3, 1, 2, 2)(x)
            x = BedOfNailsUpsampling2D(2)(x)
            x = keras.layers.Conv2D(2, 3, padding="same")(x)
            outputs = LocallyConnected2D(2, 3, padding="same")(x)
            return keras.Model([image, mask], outputs)

        rng = np.random.default_rng(0)
        mask = (rng.random((4, 6, 6, 1)) > 0.5).astype("float32")
        inputs = [rng.standard_normal((4, 6, 6, 3)).astype("float32"), mask]
        targets = rng.standard_normal((4, 12, 12, 2)).astype("float32")
        """
    )


def test_the_check_fails_when_replicas_disagree():
    # Batch normalization normalizes each replica's half batch with its own statistics, so
    # the mirrored step differs from the one-device step: the check must say so.
    with pytest.raises(AssertionError, match="Not equal to tolerance"):
        citizenship.check_mirrored_strategy(
            """
            def model_fn():
                inputs = keras.Input((4, 4, 2))
                x = keras.layers.BatchNormalization()(inputs)
                return keras.Model(inputs, keras.layers.Conv2D(2, 1)(x))

            rng = np.random.default_rng(0)
            # The replicas get the first and the second half: different spreads.
            scale = np.array([1.0, 1.0, 5.0, 5.0], "float32")[:, None, None, None]
            inputs = rng.standard_normal((4, 4, 4, 2)).astype("float32") * scale
            targets = rng.standard_normal((4, 4, 4, 2)).astype("float32")
            """
        )
