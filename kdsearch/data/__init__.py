"""Datasets as in-memory uint8 tensors, and mini-batches made on the device.

>>> ds = load_dataset("digits")
>>> ds.train_images.shape, ds.num_classes
(torch.Size([1437, 1, 8, 8]), 10)
"""

from kdsearch.data.base import ImageDataset
from kdsearch.data.batches import DeviceBatches, dataset_batches
from kdsearch.data.crops import ResizedCrop
from kdsearch.data.imagefiles import ImageFiles
from kdsearch.data.registry import DATASETS, dataset_names, load_dataset, register_dataset

__all__ = [
    "DATASETS",
    "DeviceBatches",
    "ImageDataset",
    "ImageFiles",
    "ResizedCrop",
    "dataset_batches",
    "dataset_names",
    "load_dataset",
    "register_dataset",
]
