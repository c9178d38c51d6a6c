"""Test a model on a dataset: top-1 accuracy, and KL divergence to a teacher.

The one place that knows how a split becomes model input (uint8 images scaled and
normalised by :class:`~kdsearch.data.DeviceBatches`, no augmentation, eval mode):

>>> from kdsearch import build_model, evaluate
>>> from kdsearch.data import load_dataset
>>> evaluate(build_model("digits_resnet8"), load_dataset("digits"))  # doctest: +SKIP
{'accuracy': 10.0, 'images': 360, 'split': 'test', 'numerics': 'bf16+channels_last'}
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from kdsearch.data import ImageDataset, dataset_batches
from kdsearch.numerics import Numerics, resolve_device


@torch.inference_mode()
def evaluate(model: nn.Module, dataset: ImageDataset, *, teacher: nn.Module | None = None,
             split: str = "test", device: str = "auto", batch_size: int = 1024,
             amp: bool = True, channels_last: bool = True) -> dict[str, Any]:
    """``model``'s top-1 accuracy (%) on ``split`` of ``dataset``; with ``teacher``, also the
    teacher's accuracy and the mean KL(teacher || model) at T=1 (nats per image).

    Runs on copies in eval mode (the arguments are not moved or changed), in the device's
    default numerics (:mod:`kdsearch.numerics`; ``amp=False`` for float32).
    """
    where = resolve_device(device)
    numerics = Numerics.for_device(where, amp, channels_last)
    model = numerics.place(copy.deepcopy(model).to(where).eval())
    teacher = None if teacher is None else numerics.place(copy.deepcopy(teacher).to(where).eval())
    batches = dataset_batches(dataset, split, batch_size, where, train=False,
                              channels_last=numerics.channels_last)
    right = torch.zeros((), dtype=torch.int64, device=where)
    teacher_right, kl_sum = torch.zeros_like(right), torch.zeros((), device=where)
    with numerics.autocast():
        for images, labels in batches:
            logits = model(images).float()
            right += (logits.argmax(1) == labels).sum()
            if teacher is not None:
                reference = teacher(images).float()
                teacher_right += (reference.argmax(1) == labels).sum()
                kl_sum += F.kl_div(F.log_softmax(logits, 1), F.log_softmax(reference, 1),
                                   reduction="sum", log_target=True)
    images = len(batches.labels)
    result = {"accuracy": 100.0 * right.item() / images, "images": images, "split": split,
              "numerics": numerics.name}
    if teacher is not None:
        result.update(teacher_accuracy=100.0 * teacher_right.item() / images,
                      kl_to_teacher=kl_sum.item() / images)
    return result
