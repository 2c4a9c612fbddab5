"""Architectures built on kcnn backbones, registered by name (see `kcnn.models.registry`)."""

from kcnn.models import classic  # noqa: F401  (registers LeNet-5 ... DeconvNet)
from kcnn.models.classifier import build_classifier
from kcnn.models.deeplab import DeepLabV3Plus
from kcnn.models.fcn import FCN
from kcnn.models.fill_unet import FillResidualUNet
from kcnn.models.localizer import CenterSizeToCorners, build_localizer
from kcnn.models.pconv_unet import ConvUNetInpaint, PConvUNet
from kcnn.models.registry import MODELS, get_model_entry, model_names, register_model
from kcnn.models.segnet import SegNet
from kcnn.models.unet import UNet

__all__ = [
    "CenterSizeToCorners",
    "ConvUNetInpaint",
    "DeepLabV3Plus",
    "FCN",
    "FillResidualUNet",
    "MODELS",
    "PConvUNet",
    "SegNet",
    "UNet",
    "build_classifier",
    "build_localizer",
    "get_model_entry",
    "model_names",
    "register_model",
]
