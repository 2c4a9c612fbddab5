"""Every public kcnn layer through Keras's own layer test harness.

`keras.src.testing.TestCase.run_layer_test` builds the layer, checks the built weights and the
output shapes and dtypes (eager and symbolic), round-trips `get_config`, runs one training
step in a model (`run_training_check`, compiled with XLA on TensorFlow where Keras picks it)
and repeats the call under the `mixed_float16` policy (`run_mixed_precision_check`). It is
the contract Keras's built-in layers meet; kcnn's citizenship tests (`citizenship.py`) add
`.keras` and SavedModel files, TFLite and distribution on top.
"""

import numpy as np
from keras.src.testing import TestCase

from kcnn.layers import (
    BedOfNailsUpsampling2D,
    BottleneckBlock,
    DeformableConv2D,
    DepthwiseSeparableConv2D,
    FractionalMaxPooling2D,
    InceptionModule,
    LocallyConnected2D,
    LocalResponseNormalization,
    MaxPoolingWithArgmax2D,
    MaxUnpooling2D,
    PartialConv2D,
    ResidualBlock,
    RoIAlign,
    SmoothFill2D,
    StochasticPooling2D,
    SubmanifoldConv2D,
)

RNG = np.random.default_rng(0)


def _images(*shape):
    return RNG.standard_normal(shape).astype("float32")


def _mask(*shape):
    return (RNG.random(shape) > 0.3).astype("float32")


class KerasLayerTest(TestCase):
    def test_depthwise_separable_conv2d(self):
        self.run_layer_test(
            DepthwiseSeparableConv2D,
            {"filters": 6, "kernel_size": 3, "strides": 2},
            input_shape=(2, 8, 8, 3),
            expected_output_shape=(2, 4, 4, 6),
            # The depthwise and pointwise kernels, each followed by a batch norm (MobileNet's
            # block): 2 kernels + 2 x (gamma, beta) train, 2 x (mean, variance) do not.
            expected_num_trainable_weights=6,
            expected_num_non_trainable_weights=4,
        )

    def test_partial_conv2d(self):
        self.run_layer_test(
            PartialConv2D,
            {"filters": 4, "kernel_size": 3, "strides": 2},
            input_data=(_images(2, 7, 9, 3), _mask(2, 7, 9, 1)),
            expected_output_shape=((2, 4, 5, 4), (2, 4, 5, 1)),
            expected_num_trainable_weights=2,
        )

    def test_submanifold_conv2d(self):
        self.run_layer_test(
            SubmanifoldConv2D,
            {"filters": 4, "kernel_size": 3},
            input_data=(_images(2, 6, 6, 3), _mask(2, 6, 6, 1)),
            expected_output_shape=((2, 6, 6, 4), (2, 6, 6, 1)),
            expected_num_trainable_weights=2,
        )

    def test_max_pooling_with_argmax2d(self):
        self.run_layer_test(
            MaxPoolingWithArgmax2D,
            {"pool_size": 2},
            input_shape=(2, 6, 8, 3),
            expected_output_shape=((2, 3, 4, 3), (2, 3, 4, 3)),
            expected_num_trainable_weights=0,
        )

    def test_max_unpooling2d(self):
        pooled, indices = MaxPoolingWithArgmax2D(2)(_images(2, 6, 8, 3))
        self.run_layer_test(
            MaxUnpooling2D,
            {"pool_size": 2},
            input_data=(np.asarray(pooled), np.asarray(indices)),
            expected_output_shape=(2, 6, 8, 3),
            expected_num_trainable_weights=0,
        )

    def test_deformable_conv2d(self):
        self.run_layer_test(
            DeformableConv2D,
            {"filters": 4, "kernel_size": 3, "modulated": True},
            input_shape=(2, 6, 6, 3),
            expected_output_shape=(2, 6, 6, 4),
        )

    def test_bed_of_nails_upsampling2d(self):
        self.run_layer_test(
            BedOfNailsUpsampling2D,
            {"size": 2},
            input_shape=(2, 3, 4, 2),
            expected_output_shape=(2, 6, 8, 2),
            expected_num_trainable_weights=0,
        )

    def test_locally_connected2d(self):
        self.run_layer_test(
            LocallyConnected2D,
            {"filters": 3, "kernel_size": 3, "strides": 2, "padding": "same"},
            input_shape=(2, 7, 6, 2),
            expected_output_shape=(2, 4, 3, 3),
            # One kernel and one bias, each holding a separate set per output position.
            expected_num_trainable_weights=2,
        )

    def test_local_response_normalization(self):
        self.run_layer_test(
            LocalResponseNormalization,
            {"depth_radius": 2},
            input_shape=(2, 4, 4, 6),
            expected_output_shape=(2, 4, 4, 6),
            expected_num_trainable_weights=0,
        )

    def test_residual_block(self):
        self.run_layer_test(
            ResidualBlock,
            {"filters": 4, "strides": 2},
            input_shape=(2, 8, 8, 3),
            expected_output_shape=(2, 4, 4, 4),
        )

    def test_bottleneck_block(self):
        self.run_layer_test(
            BottleneckBlock,
            {"filters": 2, "strides": 2},
            input_shape=(2, 8, 8, 3),
            expected_output_shape=(2, 4, 4, 8),
        )

    def test_inception_module(self):
        self.run_layer_test(
            InceptionModule,
            {
                "filters_1x1": 2,
                "filters_3x3_reduce": 2,
                "filters_3x3": 3,
                "filters_5x5_reduce": 1,
                "filters_5x5": 2,
                "filters_pool_proj": 2,
            },
            input_shape=(2, 6, 6, 3),
            expected_output_shape=(2, 6, 6, 9),
        )

    def test_stochastic_pooling2d(self):
        self.run_layer_test(
            StochasticPooling2D,
            {"pool_size": 2, "seed": 1},
            input_shape=(2, 6, 6, 3),
            expected_output_shape=(2, 3, 3, 3),
            expected_num_trainable_weights=0,
            expected_num_seed_generators=1,
        )

    def test_fractional_max_pooling2d(self):
        self.run_layer_test(
            FractionalMaxPooling2D,
            {"pooling_ratio": 2.0, "seed": 1},
            input_shape=(2, 8, 8, 3),
            expected_output_shape=(2, 4, 4, 3),
            expected_num_trainable_weights=0,
            expected_num_seed_generators=1,
        )

    def test_roi_align(self):
        # 3 boxes on a batch of 2 images: the number of boxes is not the batch.
        boxes = np.array([[0.5, 1.0, 9.0, 7.5], [-2.0, 3.0, 4.0, 12.0], [4.0, 4.0, 4.5, 5.0]])
        self.run_layer_test(
            RoIAlign,
            {"output_size": (3, 2), "spatial_scale": 0.5},
            input_data=(_images(2, 6, 6, 3), boxes.astype("float32"), np.array([0, 1, 1])),
            expected_output_shape=(3, 3, 2, 3),
            expected_num_trainable_weights=0,
        )

    def test_smooth_fill2d(self):
        self.run_layer_test(
            SmoothFill2D,
            {"iterations": 3, "coarse_iterations": 2},
            input_data=(_images(2, 16, 12, 3), _mask(2, 16, 12, 1)),
            expected_output_shape=(2, 16, 12, 3),
            expected_num_trainable_weights=0,
            # No weights: the training check has nothing to train.
            run_training_check=False,
        )
