"""Importing this module registers every zoo model and family initialisation (see
:mod:`kdsearch.models.registry`)."""

from kdsearch.models import (
    digits,
    mobilenetv2,
    resnet_cifar,
    shufflenetv2,
    torchvision_init,
    vgg,
    wrn,
)

__all__ = ["digits", "mobilenetv2", "resnet_cifar", "shufflenetv2", "torchvision_init", "vgg",
           "wrn"]
