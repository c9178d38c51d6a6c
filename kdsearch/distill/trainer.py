"""One training loop for every distillation method.

Per epoch: re-seed, train (``method.forward_train`` -> sum of losses -> backward -> step ->
``method.after_backward_step``), evaluate on the test split, append a line to
``metrics.jsonl``, checkpoint. Losses and correct counts stay on the device; the host syncs
once per epoch. Files written in the output directory (atomically):

* ``metrics.jsonl``: one line per epoch: ``epoch``, ``loss`` (the total) and each named loss
  (epoch means), ``lr``, ``train_acc`` and ``test_acc`` (%; None on an epoch not tested, see
  ``eval_every``), ``test_images`` (how many were tested), ``test_subset`` (tested on
  ``config.test_subset`` images, not the whole split), ``epoch_time_s`` (train + test),
  ``train_time_s``, ``images_per_s`` (training images per second);
* ``checkpoint.pt``: every ``checkpoint_every`` epochs and at the end: ``epoch``, ``method``
  (the method's whole state_dict: student, teacher, extra modules, own optimisers),
  ``optimizer``, ``method_name``, ``method_options``, ``config``, ``numerics`` (a resume with
  other numerics is refused). No RNG state is needed:
  every epoch re-seeds torch and the batch order from ``(seed, epoch)``, and the lr is a pure
  function of the epoch, so a resumed epoch computes what the original run computed
  (bit for bit on CPU, for the same numerics and thread count);
* ``summary.json`` (see :func:`build_summary`) and the student's state_dict
  (``student.pt``, loadable with ``torch.load(path, weights_only=True)``).

Checkpoint writing and resume checks live in :mod:`kdsearch.distill.checkpoint`; the progress
display in :mod:`kdsearch.distill.progress`, the SIGINT/SIGTERM handling in :mod:`kdsearch.signals`.

Under ``torchrun --nproc_per_node=N`` the same loop runs in N processes, each on its slice of
every global batch of ``batch_size`` images, the method wrapped in DistributedDataParallel;
rank 0 alone writes the files and prints (:mod:`kdsearch.distill.distributed`). With
``config.cache_teacher``, ``method.teacher_logits`` is answered from a cache of the logits
of views seen before (:mod:`kdsearch.distill.teacher_cache`) and each record gains
``teacher_cache_hit_pct``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import torch

from kdsearch.data.base import ImageDataset
from kdsearch.data.batches import DeviceBatches, dataset_batches, epoch_seed
from kdsearch.distill import distributed
from kdsearch.distill.checkpoint import Checkpoints, restore
from kdsearch.distill.config import Runtime, TrainConfig
from kdsearch.distill.distributed import SINGLE_PROCESS, Distributed
from kdsearch.distill.method import DistillMethod
from kdsearch.distill.progress import Progress
from kdsearch.distill.teacher_cache import TeacherLogitCache, cached_teacher
from kdsearch.errors import KdsearchError
from kdsearch.graph.counting import count_model
from kdsearch.io import append_jsonl, ensure_out_dir, read_jsonl, write_json
from kdsearch.models.checkpoint import save_weights
from kdsearch.signals import StopSignals

METRICS, CHECKPOINT, SUMMARY = "metrics.jsonl", "checkpoint.pt", "summary.json"
TORCH_SEED_SALT = 0x7EA1  # torch's RNG (dropout, ...) draws a stream apart from the batch order
NO_BAD_STEP = 2**24  # "every step was finite" in a min over processes (exact in float32)


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT/SIGTERM stopped training; the last completed epoch is in checkpoint.pt."""


class TrainingDiverged(KdsearchError):
    """A non-finite loss stopped training; the last good epoch is in checkpoint.pt."""


def train(
    method: DistillMethod,
    dataset: ImageDataset,
    config: TrainConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    quiet: bool = False,
    role: str = "student",
    info: dict[str, Any] | None = None,
    brief: bool = False,
) -> dict[str, Any]:
    """Train ``method.student`` on ``dataset``; write the run into ``out_dir``; return the summary.

    Printed: the setup line, one line per epoch (``brief``: none, for orchestrators that run
    many trainings) and the result line; nothing when ``quiet``.

    ``resume=True`` continues from ``out_dir/checkpoint.pt`` (or starts if there is none);
    without it an ``out_dir`` that already holds a run is a :class:`KdsearchError`, and so,
    either way, is a finished one (:func:`refuse_finished`). ``info`` is copied into the
    summary (e.g. model names). ``role`` names the trained network in what is printed, in
    the summary (``{role}_params``, ``{role}_macs``) and in its weights file
    (``{role}.pt``): ``"teacher"`` for ``kdsearch teacher``. Raises
    :class:`TrainingInterrupted` on SIGINT/SIGTERM and :class:`TrainingDiverged` on a
    non-finite loss, after writing the last completed epoch to ``checkpoint.pt``. The
    modules are trained in place, on the device.
    """
    refuse_finished(out_dir)
    out = ensure_out_dir(out_dir)
    runtime = Runtime.for_config(config)
    dist = distributed.setup(runtime.device)
    dist.check_batch_size(config.batch_size)
    cost = count_student(method.student, dataset.input_size)
    runtime.place(method, compile_models=config.compile)
    optimizer = build_optimizer(method, config)
    done = restore_run(out, method, optimizer, config, resume, runtime, dist)
    train_batches, test_batches = make_batches(dataset, config, runtime, dist)
    progress = Progress(config.epochs, done, quiet or not dist.is_main, brief=brief)
    progress.note(header(method, dataset, config, runtime, cost, out, done, dist, role))
    checkpoints = (Checkpoints(out / CHECKPOINT, method, optimizer, config, done, runtime)
                   if dist.is_main else NoCheckpoints(done))
    try:
        with StopSignals() as stop, dist.parallel(method, optimizer) as model, \
                teacher_cache(method, train_batches, dataset, config) as cache:
            for epoch in range(done + 1, config.epochs + 1):
                record = run_epoch(method, optimizer, train_batches, test_batches, epoch,
                                   config, runtime, stop, model=model, dist=dist, cache=cache)
                if dist.is_main:
                    append_jsonl(out / METRICS, record)
                checkpoints.epoch_done(epoch)
                progress.epoch_done(record)
                if stop.requested:
                    raise TrainingInterrupted(f"{stop.requested} after epoch {epoch}")
    except (TrainingInterrupted, TrainingDiverged) as err:
        saved = checkpoints.save_pending()
        where = f"{out / CHECKPOINT} holds epoch {saved}" if saved else "no epoch completed"
        advice = "rerun with --resume to continue" if isinstance(err, TrainingInterrupted) else (
            "the run is deterministic: change the settings and start a new run")
        raise type(err)(f"{err}; {where}; {advice}") from None
    finally:
        checkpoints.save_pending()
        progress.close()
    summary = None
    if dist.is_main:
        summary = finish(out, method, dataset, config, cost, role, info, progress, runtime)
    return dist.broadcast(summary)


def refuse_finished(out_dir: str | Path) -> None:
    """:class:`KdsearchError` when ``out_dir`` holds a finished run (its ``summary.json``):
    there is nothing to train or resume there, with or without ``--resume``."""
    if (Path(out_dir) / SUMMARY).exists():
        raise KdsearchError(f"{out_dir} holds a finished run (summary.json): nothing to train "
                            "or resume; choose another --out, or delete the folder to train "
                            "again")


def restore_run(out: Path, method, optimizer, config, resume, runtime, dist: Distributed) -> int:
    """:func:`restore` on every process; only rank 0 passes the real ``metrics.jsonl`` (which
    a resume truncates), the others a path that does not exist. Ends with a barrier."""
    metrics = out / METRICS if dist.is_main else out / f"{METRICS}.absent-rank{dist.rank}"
    done = restore(out / CHECKPOINT, metrics, method, optimizer, config, resume, runtime)
    dist.barrier()
    return done


def make_batches(dataset, config: TrainConfig, runtime: Runtime, dist: Distributed
                 ) -> tuple[DeviceBatches, TestSchedule]:
    """This process's training batches and test schedule (its shard of each global batch)."""
    options = {"channels_last": runtime.channels_last, "shard": dist.shard}
    train_batches = dataset_batches(dataset, "train", config.batch_size, runtime.device,
                                    config.seed, **options)
    full = dataset_batches(dataset, "test", config.eval_batch_size, runtime.device, **options)
    quick = full
    if config.test_subset is not None and config.test_subset < len(dataset.test_labels):
        quick = dataset_batches(test_subset(dataset, config.test_subset, config.seed), "test",
                                config.eval_batch_size, runtime.device, **options)
    return train_batches, TestSchedule(full, quick, config.eval_every, config.epochs)


class TestSchedule:
    """Which test batches an epoch is evaluated on: the whole split at the last epoch, the
    quick ones (``--test-subset``) every ``every`` epochs before it, else none."""

    def __init__(self, full: DeviceBatches, quick: DeviceBatches, every: int, epochs: int):
        self.full, self.quick, self.every, self.epochs = full, quick, every, epochs

    def for_epoch(self, epoch: int) -> DeviceBatches | None:
        if epoch == self.epochs:
            return self.full
        return self.quick if epoch % self.every == 0 else None


def test_subset(dataset: ImageDataset, count: int, seed: int) -> ImageDataset:
    """``dataset`` with ``count`` test images drawn at random (seeded), in their stored order."""
    generator = torch.Generator().manual_seed(seed)
    keep = torch.randperm(len(dataset.test_labels), generator=generator)[:count].sort().values
    return dataclasses.replace(dataset, test_images=dataset.test_images[keep],
                               test_labels=dataset.test_labels[keep])


class NoCheckpoints:
    """What the processes other than rank 0 have in place of :class:`Checkpoints`."""

    def __init__(self, saved_epoch: int):
        self.saved_epoch = saved_epoch

    def epoch_done(self, epoch: int) -> None:
        self.saved_epoch = epoch  # what rank 0 holds once it has saved what is pending

    def save_pending(self) -> int:
        return self.saved_epoch


def teacher_cache(method, batches, dataset, config: TrainConfig):
    """:func:`cached_teacher` when ``config.cache_teacher``, else a block yielding None."""
    if not config.cache_teacher:
        return contextlib.nullcontext()
    return cached_teacher(method, batches, dataset.num_classes)


def build_optimizer(method: DistillMethod, config: TrainConfig) -> torch.optim.SGD:
    """SGD over the student's and the method's extra trainable parameters."""
    parameters = [*method.student.parameters(), *method.extra_parameters()]
    return torch.optim.SGD(
        [p for p in parameters if p.requires_grad],
        lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay,
        nesterov=config.nesterov,
    )


def run_epoch(
    method: DistillMethod,
    optimizer: torch.optim.Optimizer,
    train_batches: DeviceBatches,
    test_batches: TestSchedule,
    epoch: int,
    config: TrainConfig,
    runtime: Runtime,
    stop: StopSignals,
    *,
    model: torch.nn.Module | None = None,
    dist: Distributed = SINGLE_PROCESS,
    cache: TeacherLogitCache | None = None,
) -> dict[str, Any]:
    """Train one (1-based) epoch, evaluate, and return its metrics record (see
    :func:`train_steps` for ``model`` and ``cache``; ``dist`` sums over the processes)."""
    start = time.perf_counter()
    torch.manual_seed(epoch_seed(config.seed, epoch) ^ TORCH_SEED_SALT)
    train_batches.set_epoch(epoch)
    lr = config.lr_at(epoch)
    for group in optimizer.param_groups:
        group["lr"] = lr
    sums = train_steps(method, optimizer, train_batches, epoch, runtime, stop,
                       model=model, cache=cache)
    means, train_acc, images = sums.to_host(epoch, len(train_batches), dist)
    train_time = time.perf_counter() - start
    tested = test_batches.for_epoch(epoch)
    test_acc = evaluate(method, tested, runtime, dist) if tested is not None else None
    record = {
        "epoch": epoch, **means, "lr": lr, "train_acc": train_acc, "test_acc": test_acc,
        "test_images": len(tested.labels) if tested is not None else 0,
        "test_subset": tested is not None and tested is not test_batches.full,
        "epoch_time_s": time.perf_counter() - start, "train_time_s": train_time,
        "images_per_s": images / train_time,
    }
    if cache is not None:
        record["teacher_cache_hit_pct"] = cache.take_hit_rate()  # this process's
    return record


def train_steps(
    method: DistillMethod,
    optimizer: torch.optim.Optimizer,
    batches: DeviceBatches,
    epoch: int,
    runtime: Runtime,
    stop: StopSignals,
    *,
    model: torch.nn.Module | None = None,
    cache: TeacherLogitCache | None = None,
) -> RunningSums:
    """One pass over ``batches``; returns the on-device sums (no host sync here).

    ``model`` runs the training forward, ``model(images, labels, epoch)``: ``method`` itself
    (the default) or its DDP wrapper. ``cache`` is told each batch's views.
    """
    model = method if model is None else model
    model.train()
    sums = RunningSums(runtime.device)
    steps_before = (epoch - 1) * len(batches)
    for step, (images, labels, views) in enumerate(batches.iter_views(), start=1):
        if cache is not None:
            cache.select(views)
        with runtime.autocast():
            logits, losses = model(images, labels, epoch)
        total = sum(losses.values())
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        with runtime.autocast():  # a method's own updates (e.g. a discriminator) too
            method.after_backward_step(steps_before + step)
        sums.add(step, losses, total, logits, labels)
        if stop.requested:
            raise TrainingInterrupted(f"{stop.requested} during epoch {epoch}, step {step}")
    return sums


class RunningSums:
    """Per-epoch loss sums, correct count and first non-finite step, all on the device."""

    def __init__(self, device: torch.device):
        self.losses: dict[str, torch.Tensor] = {}
        self.correct = torch.zeros((), dtype=torch.int64, device=device)
        self.first_bad_step = torch.full((), -1, dtype=torch.int64, device=device)
        self.images = 0
        self.steps = 0

    def add(self, step: int, losses: dict, total: torch.Tensor, logits, labels) -> None:
        for name, value in {"loss": total, **losses}.items():
            value = value.detach().float()
            self.losses[name] = self.losses[name] + value if name in self.losses else value
        self.correct += (logits.detach().argmax(1) == labels).sum()
        bad = ~torch.isfinite(total.detach()) & (self.first_bad_step < 0)
        self.first_bad_step = torch.where(bad, step, self.first_bad_step)
        self.images += len(labels)
        self.steps += 1

    def to_host(self, epoch: int, steps_per_epoch: int, dist: Distributed = SINGLE_PROCESS
                ) -> tuple[dict[str, float], float, int]:
        """(loss means, train accuracy %, images seen), summed over the processes; one
        sync. Raises on a bad step (the first, over the processes)."""
        names = list(self.losses)
        sums = dist.all_reduce(torch.stack([self.losses[n] for n in names] + [
            self.correct.float(), self.correct.new_tensor(self.images).float()]))
        bad = dist.all_reduce(torch.where(self.first_bad_step < 0, NO_BAD_STEP,
                                          self.first_bad_step), op="min")
        values = torch.cat([sums, bad.float().view(1)]).tolist()
        if values[-1] != NO_BAD_STEP:
            raise TrainingDiverged(
                f"the loss is not finite at epoch {epoch}, step {int(values[-1])} of "
                f"{steps_per_epoch} (try a lower --lr)"
            )
        sums, correct, images = values[: len(names)], values[-3], int(values[-2])
        steps = max(self.steps, 1) * dist.world_size
        means = {name: value / steps for name, value in zip(names, sums, strict=True)}
        return means, 100.0 * correct / max(images, 1), images


def evaluate(method: DistillMethod, batches: DeviceBatches, runtime: Runtime,
             dist: Distributed = SINGLE_PROCESS) -> float:
    """Top-1 accuracy (%) of the student on ``batches`` (eval mode, no grad); with several
    processes each evaluates its shard and the correct counts are summed."""
    method.eval()
    correct = torch.zeros((), dtype=torch.int64, device=runtime.device)
    with torch.inference_mode(), runtime.autocast():
        for images, labels in batches:
            correct += (method(images).argmax(1) == labels).sum()
    return 100.0 * dist.all_reduce(correct).item() / len(batches.labels)


def finish(out: Path, method, dataset, config, cost, role, info, progress,
           runtime: Runtime) -> dict:
    """Write the trained network's weights (``{role}.pt``) and ``summary.json``; return the
    summary."""
    weights_name = f"{role}.pt"
    save_weights(method.student, out / weights_name)
    summary = build_summary(read_jsonl(out / METRICS), method, dataset, config, cost, runtime,
                            role)
    summary.update(weights=weights_name, **(info or {}))
    write_json(out / SUMMARY, summary)
    progress.note(
        f"test accuracy: best {summary['best_test_acc']:.2f}% (epoch {summary['best_epoch']}), "
        f"last {summary['last_test_acc']:.2f}%; wrote {out}/{{{METRICS}, {CHECKPOINT}, "
        f"{SUMMARY}, {weights_name}}}"
    )
    return summary


def build_summary(records: list[dict], method, dataset, config: TrainConfig, cost,
                  runtime: Runtime, role: str = "student") -> dict:
    """The run at a glance: best and last test accuracy (%), speed, student size, settings.

    ``best_test_acc`` is the maximum over the epochs tested on the whole test split (first
    epoch reaching it in ``best_epoch``);
    ``last_test_acc`` the final epoch's: papers report one or the other. ``numerics`` and
    ``threads`` say how it ran (results are bit-exact only for equal values of both).
    """
    whole = len(dataset.test_labels)
    full = [record for record in records if record.get("test_images", whole) == whole]
    best = max(full or records[-1:], key=lambda record: record["test_acc"])
    train_time = sum(record["train_time_s"] for record in records)
    images = sum(record["images_per_s"] * record["train_time_s"] for record in records)
    return {
        "method": method.name or type(method).__name__,
        "method_options": dict(method.options),
        "dataset": dataset.name,
        "num_classes": dataset.num_classes,
        "input_size": list(dataset.input_size),
        "best_test_acc": best["test_acc"],
        "best_epoch": best["epoch"],
        "last_test_acc": records[-1]["test_acc"],
        "epochs": records[-1]["epoch"],
        "total_time_s": sum(record["epoch_time_s"] for record in records),
        "images_per_s": images / train_time if train_time else None,
        f"{role}_params": cost["params"],
        f"{role}_macs": cost["macs"],
        "lr_milestone_epochs": config.milestone_epochs(),
        "numerics": runtime.numerics.name,
        "threads": torch.get_num_threads(),
        "config": config.as_dict(),
    }


def header(method, dataset, config, runtime, cost, out, done,
           dist: Distributed = SINGLE_PROCESS, role: str = "student") -> str:
    """The line printed before training starts."""
    macs = f"{cost['macs'] / 1e6:.2f}M MACs" if cost["macs"] is not None else "MACs unknown"
    start = f"resuming after epoch {done}" if done else "starting"
    where = runtime.describe()
    batch = f"batch {config.batch_size}"
    if dist.world_size > 1:
        where += f" x {dist.world_size} processes"
        batch += f" ({config.batch_size // dist.world_size} per process)"
    return (
        f"{start}: {method.name} on {dataset.name} ({len(dataset.train_labels)} train images) "
        f"on {where}; {role} {cost['params']:,} params, {macs}; "
        f"{config.schedule_text()}; {batch}; output {out}"
    )


def count_student(student: torch.nn.Module, input_size: tuple[int, int, int]) -> dict:
    """``{"params", "macs"}`` of the student; ``macs`` is None (and a warning printed) if the
    student cannot be traced."""
    params = sum(p.numel() for p in student.parameters())
    try:
        with torch.random.fork_rng(devices=[]):  # counting draws an example input
            macs = count_model(student, input_size).macs
    except Exception as err:  # a summary figure must not stop a training run
        print(f"warning: cannot count the student's MACs ({type(err).__name__}: {err})",
              file=sys.stderr)
        macs = None
    return {"params": params, "macs": macs}
