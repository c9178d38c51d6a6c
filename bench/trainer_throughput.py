"""Training throughput: the kdsearch trainer's step against a classic distillation loop.

Both sides train the same student from the same teacher with the same method, optimiser,
batch size and images, in the same process, one after the other:

* ``reference``: the loop of the CRD / mdistiller code bases. The images are PIL images in
  a ``Dataset`` (as ``torchvision.datasets.CIFAR100`` keeps them); a ``DataLoader`` with
  worker processes applies ``RandomCrop(32, padding=4)``, ``RandomHorizontalFlip``,
  ``ToTensor`` and ``Normalize``; float32, contiguous; every step calls ``.item()`` on the loss
  and the correct count (a host sync, as an ``AverageMeter`` does). The loss is the method's
  own ``forward_train``, which runs the teacher under ``torch.no_grad()``.
* ``kdsearch``: the trainer's code path: :func:`~kdsearch.distill.trainer.train_steps` over
  :class:`~kdsearch.data.DeviceBatches` (uint8 data on the device, crop and flip batched
  there), the optimiser of :func:`~kdsearch.distill.trainer.build_optimizer`, the
  :class:`~kdsearch.distill.config.Runtime` of a default ``TrainConfig`` (bf16 autocast and
  channels-last on CUDA, float32 on CPU), one host sync per pass (``RunningSums.to_host``).

Warm-up steps are run first and not timed; CUDA is synchronised at both ends of the timed
region only. Prints images/s of both sides and their ratio per method; ``--json`` saves it.

    python bench/trainer_throughput.py                       # synthetic data, kd and reviewkd
    python bench/trainer_throughput.py --data-dir /work/shared/data --compile --json out.json
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from kdsearch.data import ImageDataset, dataset_batches, load_dataset
from kdsearch.distill.config import Runtime, TrainConfig, resolve_device
from kdsearch.distill.method import DistillMethod, build_method, method_names
from kdsearch.distill.progress import StopSignals
from kdsearch.distill.trainer import build_optimizer, train_steps
from kdsearch.models import build_model

TEACHER, STUDENT = "resnet32x4", "resnet8x4"
SYNTHETIC_IMAGES = 4096  # train images of the synthetic set (reused cyclically if more needed)
DEFAULT_STEPS = {"cuda": (200, 20), "cpu": (2, 1)}  # (timed steps, warm-up steps)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda")
    parser.add_argument("--steps", type=int, help="timed steps per side (cuda 200, cpu 2)")
    parser.add_argument("--warmup", type=int, help="untimed steps first (cuda 20, cpu 1)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                        help="DataLoader workers of the reference (default min(8, CPUs))")
    parser.add_argument("--methods", default="kd,reviewkd", help="comma-separated methods")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile student and teacher on the kdsearch side")
    parser.add_argument("--data-dir", help="CIFAR-100 from here (default: synthetic data)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", metavar="OUT", help="write the results here as JSON")
    args = parser.parse_args(argv)
    args.device = resolve_device(args.device)
    steps, warmup = DEFAULT_STEPS["cuda" if args.device.type == "cuda" else "cpu"]
    args.steps = steps if args.steps is None else args.steps
    args.warmup = warmup if args.warmup is None else args.warmup
    if args.steps < 1 or args.warmup < 1 or args.batch_size < 1 or args.workers < 0:
        parser.error("need --steps, --warmup, --batch-size >= 1 and --workers >= 0")
    return args


def load_data(args: argparse.Namespace) -> ImageDataset:
    """CIFAR-100 from ``--data-dir`` (no download), else synthetic CIFAR-100-shaped data."""
    if args.data_dir:
        return load_dataset("cifar100", data_dir=args.data_dir, download=False)
    return load_dataset("synthetic", num_classes=100, num_train=SYNTHETIC_IMAGES, num_test=64)


def image_pool(dataset: ImageDataset, count: int, seed: int) -> ImageDataset:
    """``dataset`` with ``count`` train images: a seeded shuffle, repeated if it is too short."""
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(dataset.train_labels), generator=generator)
    index = order.repeat(-(-count // len(order)))[:count]
    return dataclasses.replace(
        dataset, train_images=dataset.train_images[index], train_labels=dataset.train_labels[index]
    )


def first_batches(pool: ImageDataset, start: int, stop: int, batch_size: int) -> ImageDataset:
    """The pool's images of batches ``start..stop-1`` (as a dataset of their own)."""
    keep = slice(start * batch_size, stop * batch_size)
    return dataclasses.replace(
        pool, train_images=pool.train_images[keep], train_labels=pool.train_labels[keep]
    )


def build(name: str, dataset: ImageDataset, seed: int) -> DistillMethod:
    """A fresh teacher -> student method, the same weights for a given seed."""
    torch.manual_seed(seed)
    teacher = build_model(TEACHER, num_classes=dataset.num_classes)
    student = build_model(STUDENT, num_classes=dataset.num_classes)
    return build_method(name, student, teacher, input_size=dataset.input_size)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class ClassicImages(Dataset):
    """PIL images, transformed one by one in the workers (as torchvision's CIFAR100)."""

    def __init__(self, dataset: ImageDataset, transform: transforms.Compose):
        self.data = dataset.train_images.permute(0, 2, 3, 1).numpy()  # [N, H, W, C] uint8
        self.targets = dataset.train_labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = Image.fromarray(np.ascontiguousarray(self.data[index]))
        return self.transform(image), self.targets[index]


def classic_loader(pool: ImageDataset, args: argparse.Namespace) -> DataLoader:
    height = pool.input_size[1]
    transform = transforms.Compose([
        transforms.RandomCrop(height, padding=pool.crop_padding),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(pool.mean, pool.std),
    ])
    return DataLoader(
        ClassicImages(pool, transform), batch_size=args.batch_size, shuffle=True,
        num_workers=args.workers, pin_memory=args.device.type == "cuda", drop_last=True,
    )


def time_reference(name: str, pool: ImageDataset, args: argparse.Namespace) -> dict[str, Any]:
    """The classic loop: one DataLoader pass over the pool, warm-up steps first."""
    device = args.device
    torch.backends.cudnn.benchmark = True  # as the CRD / mdistiller loops set it
    method = build(name, pool, args.seed).to(device)
    optimizer = build_optimizer(method, TrainConfig(batch_size=args.batch_size))
    method.train()
    batches = iter(classic_loader(pool, args))
    loss_sum, correct = 0.0, 0
    for step in range(1, args.warmup + args.steps + 1):
        if step == args.warmup + 1:
            synchronize(device)
            start = time.perf_counter()
        images, labels = next(batches)
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        logits, losses = method.forward_train(images, labels, 1)
        loss = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        method.after_backward_step(step)
        loss_sum += loss.item()  # the per-step host sync of a classic loop
        correct += (logits.argmax(1) == labels).sum().item()
    synchronize(device)
    return timing(time.perf_counter() - start, args, "float32, contiguous")


def time_kdsearch(name: str, pool: ImageDataset, args: argparse.Namespace) -> dict[str, Any]:
    """The trainer's step: ``train_steps`` over ``DeviceBatches``, then its one host sync."""
    config = TrainConfig(batch_size=args.batch_size, device=str(args.device),
                         compile=args.compile, seed=args.seed)
    runtime = Runtime.for_config(config)
    method = build(name, pool, args.seed)
    runtime.place(method, compile_models=config.compile)
    optimizer = build_optimizer(method, config)
    warm, timed = (
        dataset_batches(part, "train", config.batch_size, runtime.device, config.seed,
                        channels_last=runtime.channels_last)
        for part in (first_batches(pool, 0, args.warmup, args.batch_size),
                     first_batches(pool, args.warmup, args.warmup + args.steps, args.batch_size))
    )
    with StopSignals() as stop:
        train_steps(method, optimizer, warm, 1, runtime, stop).to_host(1, len(warm))
        synchronize(args.device)
        start = time.perf_counter()
        sums = train_steps(method, optimizer, timed, 1, runtime, stop)
        sums.to_host(1, len(timed))
        synchronize(args.device)
    numerics = ["bf16 autocast" if runtime.amp else "float32",
                "channels_last" if runtime.channels_last else "contiguous",
                *(["compiled"] if config.compile else [])]
    return timing(time.perf_counter() - start, args, ", ".join(numerics))


def timing(seconds: float, args: argparse.Namespace, numerics: str) -> dict[str, Any]:
    images = args.steps * args.batch_size
    return {"images_per_s": images / seconds, "ms_per_step": 1000 * seconds / args.steps,
            "seconds": seconds, "numerics": numerics}


def bench_method(name: str, dataset: ImageDataset, args: argparse.Namespace) -> dict[str, Any]:
    pool = image_pool(dataset, (args.warmup + args.steps) * args.batch_size, args.seed)
    reference = time_reference(name, pool, args)
    kdsearch = time_kdsearch(name, pool, args)
    if args.device.type == "cuda":
        torch.cuda.empty_cache()
    return {"reference": reference, "kdsearch": kdsearch,
            "ratio": kdsearch["images_per_s"] / reference["images_per_s"]}


def machine(args: argparse.Namespace) -> dict[str, Any]:
    info = {"device": str(args.device), "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "platform": platform.platform()}
    if args.device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(args.device)
    if hasattr(os, "getloadavg"):
        info["load_average_1m_at_start"] = os.getloadavg()[0]
    return info


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    report = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
              "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
              "machine": machine(args), "teacher": TEACHER, "student": STUDENT,
              "settings": {k: str(v) for k, v in vars(args).items()},
              "methods": {}, "skipped": {}}
    dataset = load_data(args)
    report["dataset"] = f"{dataset.name} ({len(dataset.train_labels)} train images)"
    print(f"{TEACHER} -> {STUDENT} on {report['dataset']}, {args.device}, batch "
          f"{args.batch_size}, {args.steps} timed steps after {args.warmup} warm-up, "
          f"{args.workers} reference workers, {torch.get_num_threads()} torch threads")
    for name in args.methods.split(","):
        if name not in method_names():
            report["skipped"][name] = "not registered"
            print(f"{name}: skipped (not a registered method yet)")
            continue
        result = report["methods"][name] = bench_method(name, dataset, args)
        print(result_line(name, result), flush=True)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


def result_line(name: str, result: dict[str, Any]) -> str:
    ref, ours = result["reference"], result["kdsearch"]
    return (f"{name}: reference {ref['images_per_s']:.0f} img/s ({ref['ms_per_step']:.1f} "
            f"ms/step), kdsearch {ours['images_per_s']:.0f} img/s ({ours['ms_per_step']:.1f} "
            f"ms/step, {ours['numerics']}): {result['ratio']:.2f}x")


if __name__ == "__main__":
    sys.exit(main())
