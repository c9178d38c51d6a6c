"""The teacher-logit cache: exact (same weights as without it), fewer teacher forwards, refusals."""

from __future__ import annotations

import pytest
import torch

from kdsearch.data import load_dataset
from kdsearch.data.batches import BatchViews, DeviceBatches
from kdsearch.distill import DistillMethod, TrainConfig, get_method, train
from kdsearch.distill import teacher_cache as cache_module
from kdsearch.distill.teacher_cache import TeacherLogitCache, cache_bytes, cached_teacher
from kdsearch.errors import KdsearchError
from kdsearch.io import read_jsonl
from kdsearch.student.resolve import resolve_model


@pytest.fixture
def logit_only_kd(monkeypatch):
    """``kd`` declared logit-only (its file may already say so)."""
    kd = get_method("kd")
    monkeypatch.setattr(kd, "teacher_logits_only", True)
    return kd


def kd_run(tmp_path, name, cache: bool):
    """Two epochs of KD on 192 digits (3 batches of 64); returns (student state, teacher
    rows forwarded per call, metrics)."""
    dataset = load_dataset("digits", subset=192, seed=0)
    torch.manual_seed(0)
    student = resolve_model("digits_resnet8", dataset.num_classes, dataset.input_size).model
    teacher = resolve_model("digits_resnet8_half", dataset.num_classes, dataset.input_size).model
    rows = []
    teacher.register_forward_hook(lambda module, args, out: rows.append(len(args[0])))
    method = get_method("kd")(student, teacher, input_size=dataset.input_size)
    config = TrainConfig(epochs=2, batch_size=64, device="cpu", cache_teacher=cache)
    train(method, dataset, config, tmp_path / name, quiet=True)
    assert method.__dict__.get("teacher_logits") is None  # the cache is gone after training
    return student.state_dict(), rows, read_jsonl(tmp_path / name / "metrics.jsonl")


def test_cache_gives_the_same_student_with_fewer_teacher_forwards(tmp_path, logit_only_kd):
    plain, plain_rows, _ = kd_run(tmp_path, "plain", cache=False)
    cached, cached_rows, records = kd_run(tmp_path, "cached", cache=True)
    for key in plain:
        assert torch.equal(plain[key], cached[key]), key
    assert sum(plain_rows) == 2 * 192
    assert 192 < sum(cached_rows) < 2 * 192  # epoch 1 all misses; epoch 2 some of 9 views hit
    first, second = (record["teacher_cache_hit_pct"] for record in records)
    assert first == 0 and 0 < second < 100
    assert sum(cached_rows) == round(192 + 192 * (1 - second / 100))


def batches(count=6, padding=1, hflip=True) -> DeviceBatches:
    images = torch.randint(0, 256, (count, 1, 4, 4), dtype=torch.uint8)
    return DeviceBatches(images, torch.arange(count), batch_size=3, mean=(0.0,), std=(1.0,),
                         device="cpu", train=True, crop_padding=padding, hflip=hflip)


def view_logits(images):
    """Logits that depend on the view: its first 5 pixels, doubled."""
    return images.flatten(1)[:, :5] * 2


def test_every_view_has_its_own_key_and_hits_are_reused():
    data = batches()
    calls = []

    def teacher(images):
        calls.append(len(images))
        return view_logits(images)

    cache = TeacherLogitCache(teacher, data, num_classes=5)
    assert cache.views == 18  # 3 x 3 crops x 2 flips
    grid = torch.cartesian_prod(torch.arange(6), torch.arange(3), torch.arange(3),
                                torch.arange(2))
    views = BatchViews(grid[:, 0], grid[:, 1], grid[:, 2], grid[:, 3].bool())
    cache.select(views)
    assert sorted(cache.keys.tolist()) == list(range(6 * 18))
    first = torch.randn(4, 1, 4, 4)
    cache.select(BatchViews(*(field[[0, 5, 17, 40]] for field in views)))
    assert torch.equal(cache(first), view_logits(first))
    second = torch.stack([first[1], first[3], torch.randn(1, 4, 4)])
    cache.select(BatchViews(*(field[[5, 40, 41]] for field in views)))
    assert torch.equal(cache(second), view_logits(second))
    assert calls == [4, 1]  # all 4 missed; then 1 of 3
    assert cache.take_hit_rate() == pytest.approx(100 * 2 / 7)
    assert torch.equal(cache(first), view_logits(first))  # nothing selected: computed
    assert calls == [4, 1, 4]


def test_refusals_name_the_reason():
    class Features(DistillMethod):  # uses more than the teacher's logits
        def forward_train(self, images, labels, epoch):
            raise NotImplementedError

    model = torch.nn.Linear(2, 2)
    with pytest.raises(KdsearchError, match="only the teacher's logits"), \
            cached_teacher(Features(model, torch.nn.Linear(2, 2)), batches(), 5):
        pass
    with pytest.raises(KdsearchError, match="no teacher"), \
            cached_teacher(get_method("ce")(model), batches(), 5):
        pass


def test_memory_formula_and_limit(monkeypatch, logit_only_kd):
    assert cache_bytes(50000, 162, 100) == 50000 * 162 * 401  # CIFAR-100: 3.0 GiB
    assert cache_bytes(50000, 162, 100) < cache_module.MAX_CACHE_BYTES
    monkeypatch.setattr(cache_module, "MAX_CACHE_BYTES", 1000)
    method = logit_only_kd(torch.nn.Linear(2, 5), torch.nn.Linear(2, 5))
    with pytest.raises(KdsearchError, match=r"6 images x 18 views x 5 classes.*over the limit"), \
            cached_teacher(method, batches(), 5):
        pass
