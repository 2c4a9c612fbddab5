"""The classic CNNs: LeNet-5, AlexNet, VGG, GoogLeNet, ResNet and DeconvNet.

Importing this package registers every builder in `kcnn.models.registry` (names `lenet5`,
`alexnet`, `vgg11` .. `vgg19`, `googlenet`, `classic_resnet18` .. `classic_resnet152` and
`deconvnet`). Each builder takes `input_shape` and `num_classes` and returns a functional
`keras.Model` ending in a float32 softmax; `width` arguments build small versions.
"""

from kcnn.models.classic.alexnet import AlexNet
from kcnn.models.classic.deconvnet import DeconvNet
from kcnn.models.classic.googlenet import AUX_LOSS_WEIGHT, GoogLeNet, without_aux_heads
from kcnn.models.classic.heads import dense_head, fully_convolutional_head
from kcnn.models.classic.lenet import LeNet5
from kcnn.models.classic.resnet import ResNet18, ResNet34, ResNet50, ResNet101, ResNet152
from kcnn.models.classic.vgg import VGG11, VGG13, VGG16, VGG19

__all__ = [
    "AUX_LOSS_WEIGHT",
    "AlexNet",
    "DeconvNet",
    "GoogLeNet",
    "LeNet5",
    "ResNet18",
    "ResNet34",
    "ResNet50",
    "ResNet101",
    "ResNet152",
    "VGG11",
    "VGG13",
    "VGG16",
    "VGG19",
    "dense_head",
    "fully_convolutional_head",
    "without_aux_heads",
]
