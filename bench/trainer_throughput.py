"""Training throughput on the CPU or a GPU: the kdsearch trainer's step against a classic
distillation loop, and the gated search's step beside them.

Both training sides train the same student from the same teacher with the same method,
optimiser, batch size and images, in the same process, alternated ``--reps`` times:

* ``reference``: the loop of the CRD / mdistiller code bases, as a user would write it. The
  images are PIL images in a ``Dataset`` (as ``torchvision.datasets.CIFAR100`` keeps them); a
  ``DataLoader`` with worker processes applies ``RandomCrop(32, padding=4)``,
  ``RandomHorizontalFlip``, ``ToTensor`` and ``Normalize``; float32, contiguous; every step
  calls ``.item()`` on the loss and the correct count (a host sync, as an ``AverageMeter``
  does). The loss is the method's own ``forward_train``.
* ``kdsearch``: the trainer's code path: :func:`~kdsearch.distill.trainer.train_steps` over
  :class:`~kdsearch.data.DeviceBatches` (uint8 data on the device, crop and flip batched
  there), the optimiser of :func:`~kdsearch.distill.trainer.build_optimizer`, the
  :class:`~kdsearch.distill.config.Runtime` of a default ``TrainConfig`` (bf16 autocast and
  channels-last on CUDA and on CPUs with native bf16, float32 elsewhere), one host sync per
  pass.
* ``search``: one step of the gated search (:class:`~kdsearch.search.search.GatedSearch`:
  teacher forward, gated forward and backward, proximal step) with the teacher at the
  student's MACs (``like:STUDENT``), in the search's default numerics.

Pairs: kd is resnet56 -> resnet20, reviewkd resnet32x4 -> resnet8x4 (the issue's pairs;
``--pair`` overrides). Warm-up steps run first, untimed. Prints, per method, the median and
min-max images/s of each side over the repetitions and the median of the per-repetition
ratios; ``--json`` saves everything with the machine, torch version and load average.

    python bench/trainer_throughput.py                       # CPU defaults: 5 x 20 steps
    python bench/trainer_throughput.py --data-dir ../shared/data --json out.json
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import statistics
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
from kdsearch.distill.config import Runtime, TrainConfig
from kdsearch.distill.method import DistillMethod, build_method, method_names
from kdsearch.distill.trainer import build_optimizer, train_steps
from kdsearch.models import build_model
from kdsearch.numerics import resolve_device, set_threads
from kdsearch.signals import StopSignals

PAIRS = {"kd": ("resnet56", "resnet20"), "reviewkd": ("resnet32x4", "resnet8x4")}
DEFAULT_PAIR = ("resnet32x4", "resnet8x4")  # any other method
SYNTHETIC_IMAGES = 4096  # train images of the synthetic set (reused cyclically if more needed)
DEFAULT_STEPS = {"cuda": (200, 20), "cpu": (20, 3)}  # (timed steps per repetition, warm-up)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda")
    parser.add_argument("--steps", type=int, help="timed steps per repetition and side "
                                                  "(cuda 200, cpu 20)")
    parser.add_argument("--warmup", type=int, help="untimed steps first (cuda 20, cpu 3)")
    parser.add_argument("--reps", type=int, default=5,
                        help="repetitions, the two sides alternated (default 5)")
    parser.add_argument("--pair", help="TEACHER,STUDENT for every method (default: resnet56 "
                                       "-> resnet20 for kd, resnet32x4 -> resnet8x4 otherwise)")
    parser.add_argument("--no-search", dest="search", action="store_false",
                        help="do not time the gated search's step (timed on the first "
                             "method's pair)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                        help="DataLoader workers of the reference (default min(8, CPUs))")
    parser.add_argument("--methods", default="kd,reviewkd", help="comma-separated methods")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile student and teacher on the kdsearch side")
    parser.add_argument("--data-dir", help="CIFAR-100 from here (default: synthetic data)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads of both sides (0: kdsearch's default, the idle "
                             "cores, which a user's loop would get from torch as well)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", metavar="OUT", help="write the results here as JSON")
    args = parser.parse_args(argv)
    args.device = resolve_device(args.device)
    steps, warmup = DEFAULT_STEPS["cuda" if args.device.type == "cuda" else "cpu"]
    args.steps = steps if args.steps is None else args.steps
    args.warmup = warmup if args.warmup is None else args.warmup
    if min(args.steps, args.warmup, args.batch_size, args.reps) < 1 or args.workers < 0:
        parser.error("need --steps, --warmup, --reps, --batch-size >= 1 and --workers >= 0")
    if args.pair and len(args.pair.split(",")) != 2:
        parser.error("--pair is TEACHER,STUDENT")
    return args


def pair_of(name: str, args: argparse.Namespace) -> tuple[str, str]:
    return tuple(args.pair.split(",")) if args.pair else PAIRS.get(name, DEFAULT_PAIR)


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


def build(name: str, pair: tuple[str, str], dataset: ImageDataset, seed: int) -> DistillMethod:
    """A fresh teacher -> student method, the same weights for a given seed."""
    torch.manual_seed(seed)
    teacher = build_model(pair[0], num_classes=dataset.num_classes)
    student = build_model(pair[1], num_classes=dataset.num_classes)
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


class Reference:
    """The classic loop, built once; :meth:`run` times ``steps`` steps of it."""

    def __init__(self, name: str, pair: tuple[str, str], pool: ImageDataset,
                 args: argparse.Namespace):
        self.args, self.device = args, args.device
        torch.backends.cudnn.benchmark = True  # as the CRD / mdistiller loops set it
        self.method = build(name, pair, pool, args.seed).to(self.device)
        self.optimizer = build_optimizer(self.method, TrainConfig(batch_size=args.batch_size))
        self.method.train()
        self.batches = iter(classic_loader(pool, args))  # one pass covers every repetition
        self.step_count = 0
        self.run(args.warmup)

    def run(self, steps: int) -> float:
        synchronize(self.device)
        start = time.perf_counter()
        loss_sum, correct = 0.0, 0
        for _ in range(steps):
            self.step_count += 1
            images, labels = next(self.batches)
            images = images.to(self.device, non_blocking=True)
            labels = labels.to(self.device, non_blocking=True)
            logits, losses = self.method.forward_train(images, labels, 1)
            loss = sum(losses.values())
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.method.after_backward_step(self.step_count)
            loss_sum += loss.item()  # the per-step host sync of a classic loop
            correct += (logits.argmax(1) == labels).sum().item()
        synchronize(self.device)
        return time.perf_counter() - start


class Kdsearch:
    """The trainer's step, built once; :meth:`run` times one pass of ``steps`` batches."""

    def __init__(self, name: str, pair: tuple[str, str], pool: ImageDataset,
                 args: argparse.Namespace):
        self.args = args
        config = TrainConfig(batch_size=args.batch_size, device=str(args.device),
                             compile=args.compile, seed=args.seed)
        self.runtime = Runtime.for_config(config)
        self.method = build(name, pair, pool, args.seed)
        self.runtime.place(self.method, compile_models=config.compile)
        self.optimizer = build_optimizer(self.method, config)
        self.pool, self.config, self.next_batch = pool, config, 0
        self.numerics = self.runtime.numerics.name + (", compiled" if config.compile else "")
        self.run(args.warmup)

    def run(self, steps: int) -> float:
        part = first_batches(self.pool, self.next_batch, self.next_batch + steps,
                             self.args.batch_size)
        self.next_batch += steps
        batches = dataset_batches(part, "train", self.config.batch_size, self.runtime.device,
                                  self.config.seed, channels_last=self.runtime.channels_last)
        with StopSignals() as stop:
            synchronize(self.args.device)
            start = time.perf_counter()
            train_steps(self.method, self.optimizer, batches, 1, self.runtime,
                        stop).to_host(1, len(batches))
            synchronize(self.args.device)
        return time.perf_counter() - start


class Search:
    """The gated search's step on the pair's teacher at the student's MACs."""

    def __init__(self, pair: tuple[str, str], pool: ImageDataset, args: argparse.Namespace):
        from kdsearch.graph.counting import count_model
        from kdsearch.graph.topology import TopologyGraph
        from kdsearch.graph.units import Constraints
        from kdsearch.numerics import Numerics
        from kdsearch.search.config import SearchConfig
        from kdsearch.search.cost import MacModel
        from kdsearch.search.gates import build_gated
        from kdsearch.search.search import GatedSearch

        self.args = args
        torch.manual_seed(args.seed)
        teacher = build_model(pair[0], num_classes=pool.num_classes)
        calibrate_batchnorm(teacher, pool, args)  # the search runs BatchNorm in eval mode
        student = build_model(pair[1], num_classes=pool.num_classes)
        constraints = Constraints()
        topology = TopologyGraph(teacher, pool.input_size, constraints)
        budget = count_model(student, pool.input_size).macs
        config = SearchConfig(steps=10**6, batch_size=args.batch_size)
        self.numerics = Numerics.for_device(args.device, config.amp, config.channels_last)
        gated = self.numerics.place(build_gated(topology.gm, topology.units).to(args.device))
        self.search = GatedSearch(gated, self.numerics.place(teacher.to(args.device)),
                                  MacModel(topology.units, topology.macs_per_node), budget,
                                  config, topology.units, constraints, self.numerics)
        self.search.gated.eval()
        self.batches = iter(dataset_batches(pool, "train", args.batch_size, args.device,
                                            args.seed, channels_last=self.numerics.channels_last))
        self.step_count = 0
        self.run(args.warmup)

    def run(self, steps: int) -> float:
        synchronize(self.args.device)
        start = time.perf_counter()
        for _ in range(steps):
            images, labels = next(self.batches)
            self.search.step(self.step_count, images, labels)  # syncs once (its snapshot)
            self.step_count += 1
        synchronize(self.args.device)
        return time.perf_counter() - start


@torch.no_grad()
def calibrate_batchnorm(model: torch.nn.Module, pool: ImageDataset, args) -> None:
    """Running statistics from 10 training batches: an untrained network's initial ones
    (mean 0, variance 1) make a deep ResNet's eval-mode outputs explode."""
    model.train()
    for _, (images, _labels) in zip(range(10), dataset_batches(pool, "train", args.batch_size,
                                                               "cpu", args.seed), strict=False):
        model(images)
    model.eval()


def bench_method(name: str, dataset: ImageDataset, args: argparse.Namespace,
                 search: bool) -> dict[str, Any]:
    """Both sides (and the search step) built once, then alternated ``reps`` times."""
    pair = pair_of(name, args)
    batches = args.warmup + args.reps * args.steps
    pool = image_pool(dataset, batches * args.batch_size, args.seed)
    sides = {"reference": Reference(name, pair, pool, args),
             "kdsearch": Kdsearch(name, pair, pool, args)}
    if search:
        sides["search"] = Search(pair, pool, args)
    rates: dict[str, list[float]] = {side: [] for side in sides}
    for _ in range(args.reps):
        for side, runner in sides.items():
            rates[side].append(args.steps * args.batch_size / runner.run(args.steps))
    ratios = [k / r for k, r in zip(rates["kdsearch"], rates["reference"], strict=True)]
    result = {"teacher": pair[0], "student": pair[1],
              "ratio_median": statistics.median(ratios), "ratios": ratios}
    numerics = {"reference": "float32, contiguous", "kdsearch": sides["kdsearch"].numerics,
                "search": sides["search"].numerics.name if "search" in sides else None}
    for side, values in rates.items():
        result[side] = {"images_per_s_median": statistics.median(values),
                        "images_per_s_min": min(values), "images_per_s_max": max(values),
                        "images_per_s": values, "numerics": str(numerics[side])}
    if args.device.type == "cuda":
        torch.cuda.empty_cache()
    return result


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
    set_threads(args.threads or None)
    report = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
              "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
              "machine": machine(args),
              "settings": {k: str(v) for k, v in vars(args).items()},
              "methods": {}, "skipped": {}}
    dataset = load_data(args)
    report["dataset"] = f"{dataset.name} ({len(dataset.train_labels)} train images)"
    print(f"{report['dataset']}, {args.device}, batch {args.batch_size}, {args.reps} x "
          f"{args.steps} timed steps per side after {args.warmup} warm-up, {args.workers} "
          f"reference workers, {torch.get_num_threads()} torch threads, load average "
          f"{report['machine'].get('load_average_1m_at_start', 'n/a')}")
    for name in args.methods.split(","):
        if name not in method_names():
            report["skipped"][name] = "not registered"
            print(f"{name}: skipped (not a registered method yet)")
            continue
        first = name == args.methods.split(",")[0]  # the search step once, on its pair
        result = report["methods"][name] = bench_method(name, dataset, args, args.search and first)
        print(result_line(name, result), flush=True)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


def result_line(name: str, result: dict[str, Any]) -> str:
    def side(key: str) -> str:
        r = result[key]
        return (f"{key} {r['images_per_s_median']:.0f} img/s ({r['images_per_s_min']:.0f}-"
                f"{r['images_per_s_max']:.0f}, {r['numerics']})")

    parts = [side(key) for key in ("reference", "kdsearch", "search") if key in result]
    return (f"{name} ({result['teacher']} -> {result['student']}): " + "; ".join(parts)
            + f"; kdsearch / reference {result['ratio_median']:.2f}x (median of "
              f"{len(result['ratios'])}, {min(result['ratios']):.2f}-"
              f"{max(result['ratios']):.2f})")


if __name__ == "__main__":
    sys.exit(main())
