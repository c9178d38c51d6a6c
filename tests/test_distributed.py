"""Training on several processes: torchrun + DDP (gloo on CPU) computes the single-process run.

Processes are started with ``torch.distributed.run --standalone`` (its rendezvous binds
``localhost:0``, so the OS picks a free port) or ``torch.multiprocessing``; one thread each.
Weights are compared with ``allclose``, not bit for bit: with 2 processes the batch sums
(BatchNorm statistics, loss means, gradients) are added in another order (per shard, then
across processes), which changes float32 results in the last bits (about 1e-7 here).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from kdsearch.cli import main
from kdsearch.data import load_dataset
from kdsearch.data.batches import DeviceBatches
from kdsearch.distill import TrainConfig, TrainingInterrupted, get_method, train
from kdsearch.distill.distributed import (
    Distributed,
    average_gradients,
    global_batchnorm,
    launched,
)
from kdsearch.io import read_jsonl
from kdsearch.student.resolve import resolve_model

# float32: DDP computes what one process computes up to the order of float32 sums; in bf16
# the two shards round differently (weights ~1e-3 apart after an epoch, still one run)
RUN = ["--student", "digits_resnet8", "--teacher", "digits_resnet14", "--method", "kd",
       "--dataset", "digits", "--subset", "256", "--batch-size", "64", "--device", "cpu",
       "--no-amp", "--quiet"]
TOLERANCE = {"rtol": 1e-4, "atol": 1e-5}  # observed differences: ~2e-7 (float32 sum order)


def torchrun(args: list[str], processes: int = 2) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={processes}", "-m", "kdsearch", "train", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def assert_close_weights(path_a: Path, path_b: Path) -> None:
    a, b = torch.load(path_a, weights_only=True), torch.load(path_b, weights_only=True)
    assert a.keys() == b.keys()
    for key in a:
        if a[key].is_floating_point():
            assert torch.allclose(a[key], b[key], **TOLERANCE), key
        else:
            assert torch.equal(a[key], b[key]), key  # num_batches_tracked


@pytest.mark.slow
def test_two_processes_train_what_one_process_trains(tmp_path, one_thread):
    done = torchrun([*RUN, "--epochs", "1", "--out", str(tmp_path / "ddp")])
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(read_jsonl(tmp_path / "ddp" / "metrics.jsonl")) == 1
    assert (tmp_path / "ddp" / "summary.json").is_file()
    assert main(["train", *RUN, "--epochs", "1", "--out", str(tmp_path / "one")]) == 0
    assert_close_weights(tmp_path / "ddp" / "student.pt", tmp_path / "one" / "student.pt")
    ddp, one = (read_jsonl(tmp_path / run / "metrics.jsonl")[0] for run in ("ddp", "one"))
    for key in ("train_acc", "test_acc"):  # equal here; allow one borderline image elsewhere
        assert ddp[key] == pytest.approx(one[key], abs=0.5)
    assert ddp["loss"] == pytest.approx(one["loss"], rel=1e-5)


@pytest.mark.slow
def test_two_processes_run_a_dgkd_chain_with_a_searched_assistant(tmp_path, one_thread):
    """Rank 0 alone searches the assistant (the others wait for its files); every rank trains;
    the result is the single-process chain's."""
    chain = [arg if arg != "kd" else "dgkd" for arg in RUN] + [
        "--assistant-budgets", "0.7x", "--assistant-search-steps", "3", "--epochs", "1"]
    done = torchrun([*chain, "--out", str(tmp_path / "ddp")])
    assert done.returncode == 0, done.stderr[-3000:]
    assert main(["train", *chain, "--out", str(tmp_path / "one")]) == 0
    for run in ("ddp", "one"):
        assert (tmp_path / run / "assistant1_search" / "summary.json").is_file()
        assert (tmp_path / run / "summary.json").is_file()
    assert (read_jsonl(tmp_path / "ddp" / "assistant1_search" / "search_log.jsonl")
            == read_jsonl(tmp_path / "one" / "assistant1_search" / "search_log.jsonl"))
    assert_close_weights(tmp_path / "ddp" / "student.pt", tmp_path / "one" / "student.pt")


@pytest.mark.slow
def test_two_processes_run_a_stages_file(tmp_path, one_thread):
    stages = tmp_path / "stages.yaml"
    stages.write_text("- {method: kd, epochs: 1}\n- {method: reviewkd, epochs: 1}\n")
    run = [arg for arg in RUN if arg not in ("--method", "kd")] + ["--stages", str(stages)]
    done = torchrun([*run, "--out", str(tmp_path / "ddp")])
    assert done.returncode == 0, done.stderr[-3000:]
    assert main(["train", *run, "--out", str(tmp_path / "one")]) == 0
    assert_close_weights(tmp_path / "ddp" / "student.pt", tmp_path / "one" / "student.pt")


class InterruptedKD(get_method("kd")):
    """KD that asks to stop at the first step of epoch 2 (as a SIGINT would)."""

    def forward_train(self, images, labels, epoch):
        if epoch == 2:
            raise TrainingInterrupted("stop")
        return super().forward_train(images, labels, epoch)


def cli_method(method_class, dataset):
    """The models ``kdsearch train`` builds for RUN (same seed, same order)."""
    torch.manual_seed(0)
    student = resolve_model("digits_resnet8", dataset.num_classes, dataset.input_size).model
    teacher = resolve_model("digits_resnet14", dataset.num_classes, dataset.input_size).model
    return method_class(student, teacher, input_size=dataset.input_size)


@pytest.mark.slow
def test_two_processes_resume_a_single_process_checkpoint(tmp_path, one_thread):
    dataset = load_dataset("digits", subset=256, seed=0)
    config = TrainConfig(epochs=2, batch_size=64, device="cpu", amp=False)  # as RUN
    with pytest.raises(TrainingInterrupted):
        train(cli_method(InterruptedKD, dataset), dataset, config, tmp_path / "run", quiet=True)
    assert len(read_jsonl(tmp_path / "run" / "metrics.jsonl")) == 1
    done = torchrun([*RUN, "--epochs", "2", "--out", str(tmp_path / "run"), "--resume"])
    assert done.returncode == 0, done.stderr[-3000:]
    assert [r["epoch"] for r in read_jsonl(tmp_path / "run" / "metrics.jsonl")] == [1, 2]
    assert main(["train", *RUN, "--epochs", "2", "--out", str(tmp_path / "one")]) == 0
    assert_close_weights(tmp_path / "run" / "student.pt", tmp_path / "one" / "student.pt")


def test_shards_of_a_batch_are_the_batch():
    images = torch.randint(0, 256, (20, 1, 5, 5), dtype=torch.uint8)
    options = dict(batch_size=8, mean=(0.0,), std=(1.0,), device="cpu", crop_padding=1,
                   hflip=True, seed=3)
    whole = DeviceBatches(images, torch.arange(20), train=True, **options)
    shards = [DeviceBatches(images, torch.arange(20), train=True, shard=(r, 2), **options)
              for r in range(2)]
    for batch, *parts in zip(whole.iter_views(), *(s.iter_views() for s in shards),
                             strict=True):
        for item, *slices in zip(batch[:2], *(p[:2] for p in parts), strict=True):
            assert torch.equal(item, torch.cat(slices))
        assert torch.equal(batch[2].index, torch.cat([p[2].index for p in parts]))
    with pytest.raises(ValueError, match="divisible"):
        DeviceBatches(images, torch.arange(20), train=True, shard=(0, 3), **options)
    tests = [DeviceBatches(images, torch.arange(20), train=False, batch_size=16, mean=(0.0,),
                           std=(1.0,), device="cpu", shard=(r, 3)) for r in range(3)]
    labels = sorted(label for t in tests for _, y in t for label in y.tolist())
    assert labels == list(range(20))  # the short last batch: 4 = 2 + 2 + nothing


def test_one_process_is_a_no_op():
    single = Distributed()
    assert single.is_main and single.shard == (0, 1) and not launched()
    tensor = torch.ones(3)
    assert single.all_reduce(tensor) is tensor and torch.equal(tensor, torch.ones(3))
    assert single.broadcast({"a": 1}) == {"a": 1}
    single.check_batch_size(63)
    with pytest.raises(Exception, match="divisible"):
        Distributed(0, 2).check_batch_size(63)


def _global_batchnorm_worker(rank: int, init_file: str, inputs, results) -> None:
    """Rank ``rank`` of 2: BatchNorm forward/backward on its half, an own optimiser step."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 1), torch.nn.BatchNorm2d(3))
    critic = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(critic.parameters(), lr=1.0)
    optimizer.register_step_pre_hook(average_gradients)
    x = inputs[rank * 4 : (rank + 1) * 4]
    with global_batchnorm(model, torch.device("cpu")):
        out = model(x)
        assert type(model[1]).__name__ == "CpuGlobalBatchNorm"
    assert type(model[1]) is torch.nn.BatchNorm2d
    out.pow(2).mean().backward()  # the mean of this half
    critic(out.detach().mean((2, 3))).mean().backward()
    optimizer.step()
    grads = [p.grad.clone() for p in model.parameters()]
    for grad in grads:
        dist.all_reduce(grad)
        grad /= 2  # what DDP does
    results[rank] = {"out": out.detach(), "grads": grads, "critic": critic.weight.detach(),
                     "running": model[1].running_var.clone()}
    dist.destroy_process_group()


@pytest.mark.slow
def test_global_batchnorm_and_own_optimisers_match_one_process(tmp_path, one_thread):
    inputs = torch.randn(8, 2, 3, 3)
    with mp.Manager() as manager:
        shared = manager.dict()
        mp.spawn(_global_batchnorm_worker, args=(str(tmp_path / "init"), inputs, shared),
                 nprocs=2)
        results = dict(shared)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 1), torch.nn.BatchNorm2d(3))
    critic = torch.nn.Linear(3, 1)
    out = model(inputs)
    out.pow(2).mean().backward()
    critic(out.detach().mean((2, 3))).mean().backward()
    torch.optim.SGD(critic.parameters(), lr=1.0).step()
    assert torch.allclose(torch.cat([results[0]["out"], results[1]["out"]]), out, atol=1e-6)
    for rank in range(2):
        for got, expected in zip(results[rank]["grads"], model.parameters(), strict=True):
            assert torch.allclose(got, expected.grad, atol=1e-6)
        assert torch.allclose(results[rank]["critic"], critic.weight, atol=1e-6)
        assert torch.allclose(results[rank]["running"], model[1].running_var, atol=1e-6)
