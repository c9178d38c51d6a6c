"""Importing this module registers every zoo model (see :mod:`kdsearch.models.registry`)."""

from kdsearch.models import digits, mobilenetv2, resnet_cifar, shufflenetv2, vgg, wrn

__all__ = ["digits", "mobilenetv2", "resnet_cifar", "shufflenetv2", "vgg", "wrn"]
