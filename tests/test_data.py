"""The data layer: loaders, the registry, CIFAR archives and downloads, device batches."""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import io
import os
import pickle
import re
import tarfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from kdsearch.data import (
    DATASETS,
    DeviceBatches,
    ResizedCrop,
    cifar,
    dataset_batches,
    load_dataset,
)
from kdsearch.data.batches import crop_and_flip
from kdsearch.errors import KdsearchError, UnknownNameError

# --- digits, synthetic, registry -----------------------------------------------------------


def test_digits_shapes_split_and_determinism():
    ds = load_dataset("digits")
    assert ds.train_images.shape == (1437, 1, 8, 8) and ds.test_images.shape == (360, 1, 8, 8)
    assert ds.train_images.dtype == torch.uint8 and ds.train_labels.dtype == torch.int64
    assert int(ds.train_images.max()) == 255 and ds.num_classes == 10
    assert (ds.crop_padding, ds.hflip) == (1, False)
    assert torch.bincount(ds.test_labels).min() >= 34  # stratified: 36 +- 2 per class
    again = load_dataset("digits", seed=123)  # the split does not depend on the seed
    assert torch.equal(ds.train_images, again.train_images)
    assert torch.equal(ds.test_labels, again.test_labels)


def test_synthetic_honours_input_size_and_num_classes():
    ds = load_dataset("synthetic", input_size=(1, 12, 10), num_classes=7)
    assert ds.train_images.shape == (512, 1, 12, 10) and ds.test_images.shape == (128, 1, 12, 10)
    assert ds.num_classes == 7 and int(ds.train_labels.max()) < 7 and len(ds.mean) == 1
    default = load_dataset("synthetic", num_train=16, num_test=8)
    assert default.input_size == (3, 32, 32) and default.num_classes == 10
    assert len(default.train_labels) == 16


def test_synthetic_labels_are_learnable():
    """A nearest-class-mean classifier beats chance (10%) by far."""
    ds = load_dataset("synthetic")
    train, test = ds.train_images.flatten(1).float(), ds.test_images.flatten(1).float()
    centres = torch.stack([train[ds.train_labels == c].mean(0) for c in range(ds.num_classes)])
    predicted = torch.cdist(test, centres).argmin(1)
    assert (predicted == ds.test_labels).float().mean() > 0.5


def test_subset_is_seeded_sized_and_checked():
    first = load_dataset("digits", subset=100, seed=1)
    assert first.train_images.shape[0] == 100 and first.test_images.shape[0] == 360
    assert torch.equal(first.train_images, load_dataset("digits", subset=100, seed=1).train_images)
    assert not torch.equal(
        first.train_labels, load_dataset("digits", subset=100, seed=2).train_labels
    )
    for bad in (0, -1, 1438, 2.5):
        with pytest.raises(KdsearchError, match="subset"):
            load_dataset("digits", subset=bad)


def test_unknown_name_suggests_close_match():
    with pytest.raises(UnknownNameError, match="cifar100"):
        load_dataset("cifar1000")


def test_option_a_loader_does_not_take_is_rejected(tmp_path):
    with pytest.raises(KdsearchError, match=r"input_size.*synthetic"):
        load_dataset("cifar100", data_dir=tmp_path, download=False, input_size=(3, 8, 8))
    assert load_dataset("digits", data_dir=tmp_path).num_classes == 10  # file options ignored
    assert {"digits", "synthetic", "cifar10", "cifar100", "imagefolder"} <= set(DATASETS)


# --- CIFAR from fake archives in the official layout -----------------------------------------

FAKE_COUNTS = {"cifar100": (100, 20), "cifar10": (50, 10)}


def fake_members(name: str) -> dict[str, dict]:
    """Official-layout member dicts with random rows; labels cycle through all classes."""
    fmt, rng = cifar.FORMATS[name], np.random.default_rng(0)
    train_rows, test_rows = FAKE_COUNTS[name]
    sizes = {m: train_rows // len(fmt.train_members) for m in fmt.train_members}
    sizes.update({m: test_rows for m in fmt.test_members})
    return {
        member: {
            "data": rng.integers(0, 256, (rows, cifar.PIXELS), dtype=np.uint8),
            fmt.label_key: [i % fmt.num_classes for i in range(rows)],
            "batch_label": member,
        }
        for member, rows in sizes.items()
    }


def write_archive(path, folder: str, members: dict[str, object], mode: str):
    """A tar archive holding ``folder/member`` pickles (protocol 2, like the official files)."""
    with tarfile.open(path, mode) as archive:
        for member, content in members.items():
            data = pickle.dumps(content, protocol=2)
            info = tarfile.TarInfo(f"{folder}/{member}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def write_fake(tmp_path, name: str, layout: str, members=None):
    """A fake ``name`` in ``layout``; returns the ``data_dir`` to pass to the loader.

    Folders hold protocol-5 pickles (numpy 2 spells arrays differently), archives protocol 2.
    """
    fmt, members = cifar.FORMATS[name], members or fake_members(name)
    if layout in ("folder", "folder-itself"):
        (tmp_path / fmt.folder).mkdir()
        for member, content in members.items():
            (tmp_path / fmt.folder / member).write_bytes(pickle.dumps(content))
        return tmp_path / fmt.folder if layout == "folder-itself" else tmp_path
    archive = tmp_path / fmt.folder.replace("-batches-py", "-python")
    archive = archive.with_name(archive.name + "." + layout.removesuffix("-itself"))
    write_archive(archive, fmt.folder, members, "w:" + archive.suffix[1:])
    return archive if layout.endswith("-itself") else tmp_path


@pytest.fixture
def fake_counts(monkeypatch):
    monkeypatch.setattr(cifar, "EXPECTED_COUNTS", FAKE_COUNTS)


@pytest.mark.parametrize(
    "name, layout",
    [
        ("cifar100", "tar.gz"),
        ("cifar100", "tar.xz"),
        ("cifar100", "folder"),
        ("cifar100", "folder-itself"),
        ("cifar100", "tar.xz-itself"),
        ("cifar10", "tar.gz"),
        ("cifar10", "folder"),
    ],
)
def test_cifar_loads_fake_in_each_layout(tmp_path, fake_counts, name, layout):
    data_dir = write_fake(tmp_path, name, layout)
    ds = load_dataset(name, data_dir=data_dir, download=False)
    members, fmt = fake_members(name), cifar.FORMATS[name]
    first = members[fmt.train_members[0]]
    assert ds.train_images.shape == (FAKE_COUNTS[name][0], 3, 32, 32)
    assert ds.test_images.shape == (FAKE_COUNTS[name][1], 3, 32, 32)
    assert torch.equal(ds.train_images[0], torch.from_numpy(first["data"][0]).view(3, 32, 32))
    assert ds.train_labels[: len(first["data"])].tolist() == first[fmt.label_key]
    assert ds.num_classes == fmt.num_classes and ds.mean == fmt.mean
    assert (ds.crop_padding, ds.hflip) == (4, True)


def test_cifar_counts_are_checked_against_the_official_ones(tmp_path):
    data_dir = write_fake(tmp_path, "cifar100", "tar.gz")
    with pytest.raises(KdsearchError, match="expected 50000 / 10000"):
        load_dataset("cifar100", data_dir=data_dir, download=False)


@pytest.mark.parametrize("suffix", ["tar.gz", "tar.xz"])
def test_truncated_archive_is_a_one_line_user_error(tmp_path, fake_counts, suffix):
    archive = write_fake(tmp_path, "cifar100", suffix + "-itself")
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(KdsearchError, match="cannot read CIFAR-100") as caught:
        load_dataset("cifar100", data_dir=archive, download=False)
    assert str(archive) in str(caught.value) and "\n" not in str(caught.value)


def test_garbage_archive_is_a_user_error(tmp_path):
    archive = tmp_path / "cifar-100-python.tar.gz"
    archive.write_bytes(b"not an archive" * 100)
    with pytest.raises(KdsearchError, match=re.escape(str(archive))):
        load_dataset("cifar100", data_dir=tmp_path, download=False)


def test_missing_member_bad_rows_and_foreign_globals_are_refused(tmp_path, fake_counts):
    members = fake_members("cifar100")
    cases = {
        "missing": ({"train": members["train"]}, "cifar-100-python/test is missing"),
        "columns": (
            {**members, "test": {**members["test"], "data": np.zeros((20, 9), np.uint8)}},
            "uint8",
        ),
        "labels": ({**members, "test": {**members["test"], "fine_labels": [100] * 20}}, "0..99"),
        "global": ({**members, "test": {"when": datetime.date(2020, 1, 1)}}, "refusing"),
    }
    for case, (content, message) in cases.items():
        archive = write_archive(tmp_path / f"{case}.tar.gz", "cifar-100-python", content, "w:gz")
        with pytest.raises(KdsearchError, match=message):
            load_dataset("cifar100", data_dir=archive, download=False)


def test_missing_data_dir_without_download_names_the_path(tmp_path):
    with pytest.raises(
        KdsearchError, match=re.escape(f"{tmp_path / 'nowhere'}: no such directory")
    ):
        load_dataset("cifar10", data_dir=tmp_path / "nowhere", download=False)
    with pytest.raises(KdsearchError, match="no CIFAR-10 here"):
        load_dataset("cifar10", data_dir=tmp_path, download=False)


def test_download_over_file_url_checks_md5_then_loads(tmp_path, monkeypatch, fake_counts):
    (tmp_path / "server").mkdir()
    served = write_fake(tmp_path / "server", "cifar100", "tar.gz-itself")
    md5 = hashlib.md5(served.read_bytes()).hexdigest()
    fmt = dataclasses.replace(cifar.FORMATS["cifar100"], url=served.as_uri(), md5=md5)
    monkeypatch.setitem(cifar.FORMATS, "cifar100", fmt)
    ds = load_dataset("cifar100", data_dir=tmp_path / "cache", download=True)
    assert ds.train_images.shape[0] == 100
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["cifar-100-python.tar.gz"]


def test_download_with_wrong_md5_leaves_no_file(tmp_path):
    (tmp_path / "server").mkdir()
    served = tmp_path / "server" / "archive.tar.gz"
    served.write_bytes(b"x" * 1000)
    dest = tmp_path / "cache" / "archive.tar.gz"
    with pytest.raises(KdsearchError, match="md5"):
        cifar.download_file(served.as_uri(), dest, "0" * 32)
    assert list(dest.parent.iterdir()) == []
    with pytest.raises(KdsearchError, match="download failed"):
        cifar.download_file((tmp_path / "absent").as_uri(), dest, "0" * 32)
    assert list(dest.parent.iterdir()) == []


# --- DeviceBatches ---------------------------------------------------------------------------


def make_batches(count=10, *, train=True, size=(3, 6, 6), **kwargs) -> DeviceBatches:
    """Batches over random images whose labels are their indices; mean 0, std 1 (x -> x/255)."""
    images = torch.randint(0, 256, (count, *size), generator=torch.Generator().manual_seed(0))
    options = dict(batch_size=4, mean=(0.0,) * size[0], std=(1.0,) * size[0], device="cpu")
    options.update(kwargs)
    return DeviceBatches(images.to(torch.uint8), torch.arange(count), train=train, **options)


def reference_crop(image, padding, top, left, flip):
    """The crop of one image by plain slicing."""
    _, height, width = image.shape
    window = F.pad(image, (padding,) * 4)[:, top : top + height, left : left + width]
    return window.flip(-1) if flip else window


def test_batch_shapes_counts_and_dtypes():
    train, evaluation = make_batches(train=True), make_batches(train=False)
    assert (len(train), len(evaluation)) == (2, 3)  # training drops the last partial batch
    sizes = [len(labels) for _, labels in evaluation]
    assert sizes == [4, 4, 2]
    images, labels = next(iter(train))
    assert images.shape == (4, 3, 6, 6) and images.dtype == torch.float32
    assert labels.dtype == torch.int64
    assert len(make_batches(count=3, train=True)) == 1  # no full batch: keep the partial one


def test_crop_and_flip_matches_slicing():
    images = torch.randint(0, 256, (5, 2, 7, 9), dtype=torch.uint8)
    top, left = torch.tensor([0, 4, 2, 1, 3]), torch.tensor([4, 0, 2, 3, 1])
    flip = torch.tensor([False, True, False, True, True])
    out = crop_and_flip(images, 2, top, left, flip)
    for i in range(5):
        expected = reference_crop(images[i], 2, int(top[i]), int(left[i]), bool(flip[i]))
        assert torch.equal(out[i], expected)
    no_shift, all_flipped = torch.zeros(5, dtype=torch.long), torch.ones(5, dtype=torch.bool)
    mirrored = crop_and_flip(images, 0, no_shift, no_shift, all_flipped)
    assert torch.equal(mirrored, images.flip(-1))


def test_training_batches_are_translated_and_flipped_crops():
    batches = make_batches(count=8, crop_padding=2, hflip=True)
    seen = set()
    for images, labels in batches:
        for image, label in zip((images * 255).round().to(torch.uint8), labels, strict=True):
            source = batches.images[label]
            matches = [
                (top, left, flip)
                for top in range(5)
                for left in range(5)
                for flip in (False, True)
                if torch.equal(image, reference_crop(source, 2, top, left, flip))
            ]
            assert matches, "every training image is a padded crop of its source"
            seen.update(matches)
    assert len({(t, le) for t, le, _ in seen}) > 2 and {f for *_, f in seen} == {False, True}


def test_evaluation_order_is_fixed_and_normalised():
    mean, std = (0.2, 0.4, 0.6), (0.5, 0.25, 0.1)
    batches = make_batches(train=False, mean=mean, std=std, crop_padding=4, hflip=True)
    images = torch.cat([x for x, _ in batches])
    per_channel = (1, 3, 1, 1)
    expected = batches.images.float() / 255 - torch.tensor(mean).view(per_channel)
    expected /= torch.tensor(std).view(per_channel)
    assert torch.allclose(images, expected, atol=1e-5)
    assert torch.cat([y for _, y in batches]).tolist() == list(range(10))


def run_epoch(batches: DeviceBatches, epoch: int | None = None) -> list[torch.Tensor]:
    """One epoch's batches as ``[images, labels, images, labels, ...]``."""
    if epoch is not None:
        batches.set_epoch(epoch)
    return [tensor for batch in batches for tensor in batch]


def test_same_seed_and_epoch_give_same_batches():
    run = make_batches(count=16, seed=3, crop_padding=1, hflip=True)
    first, second = run_epoch(run), run_epoch(run)  # iterating advances the epoch: 0, then 1
    resumed = make_batches(count=16, seed=3, crop_padding=1, hflip=True)
    assert all(map(torch.equal, run_epoch(resumed, 1), second))
    assert all(map(torch.equal, run_epoch(resumed, 0), first))
    assert not torch.equal(first[1], second[1])  # another epoch, another order
    other_seed = run_epoch(make_batches(count=16, seed=4, crop_padding=1, hflip=True))
    assert not torch.equal(first[1], other_seed[1])
    assert sorted(torch.cat(first[1::2]).tolist()) == list(range(16))


def test_dataset_batches_reads_augmentation_from_dataset():
    ds = load_dataset("digits")
    train = dataset_batches(ds, "train", 64, "cpu", seed=1, channels_last=True)
    assert (train.crop_padding, train.hflip, train.train) == (1, False, True)
    images, _ = next(iter(train))
    assert images.is_contiguous(memory_format=torch.channels_last)
    test = dataset_batches(ds, "test", 64, "cpu")
    assert not test.train and sum(len(y) for _, y in test) == 360


def test_resized_crop_batches_crop_the_stored_images():
    """Evaluation: the centre; training: a box of the drawn area and ratio, resized."""
    whole = ResizedCrop((6, 6), scale=(1.0, 1.0), ratio=(1.0, 1.0))
    stored = make_batches(size=(3, 6, 6), train=True, resized_crop=whole)
    images, labels = next(iter(stored))  # labels: the image indices
    assert torch.allclose(images * 255, stored.images[labels].float(), atol=1e-4)
    assert not stored.finite_views and make_batches().finite_views
    centre = make_batches(size=(3, 8, 9), train=False, resized_crop=ResizedCrop((6, 6)))
    images, labels = next(iter(centre))
    assert torch.equal(images * 255, centre.images[:4, :, 1:7, 2:8].float())
    half = ResizedCrop((4, 4), scale=(0.25, 0.25), ratio=(1.0, 1.0))
    images, labels = next(iter(make_batches(size=(3, 8, 8), resized_crop=half, seed=2)))
    assert images.shape == (4, 3, 4, 4) and labels.tolist() != [0, 1, 2, 3]
    with pytest.raises(ValueError, match="not both"):
        make_batches(crop_padding=2, resized_crop=half)


@pytest.mark.shared_data
@pytest.mark.slow
def test_shared_cifar100_archive(shared_data_dir):
    archive = shared_data_dir / "cifar-100-python.tar.xz"
    if not archive.is_file():
        pytest.skip(f"{archive} is absent")
    ds = load_dataset("cifar100", data_dir=archive, download=False)
    assert ds.train_images.shape == (50_000, 3, 32, 32) and ds.test_images.shape[0] == 10_000
    assert ds.num_classes == 100 and len(torch.unique(ds.test_labels)) == 100
    mean = ds.train_images.double().mean((0, 2, 3)) / 255
    expected = torch.tensor([0.5071, 0.4865, 0.4409], dtype=torch.double)
    assert torch.allclose(mean, expected, atol=1e-3)


def test_an_archive_is_decoded_once_then_read_from_the_cache(tmp_path, fake_counts,
                                                           monkeypatch):
    (tmp_path / "data").mkdir()
    archive = write_fake(tmp_path / "data", "cifar100", "tar.gz-itself")
    monkeypatch.setenv("KDSEARCH_CACHE", str(tmp_path / "cache"))
    first = load_dataset("cifar100", data_dir=archive, download=False)
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [archive.name]  # untouched
    assert len(list((tmp_path / "cache" / "decoded").iterdir())) == 1

    def no_decoding(*args):
        raise AssertionError("the archive was decoded again")

    monkeypatch.setattr(cifar, "read_members", no_decoding)
    again = load_dataset("cifar100", data_dir=archive, download=False)
    assert torch.equal(again.train_images, first.train_images)
    assert torch.equal(again.test_labels, first.test_labels)
    os.utime(archive, ns=(1, 1))  # another archive at that path: decoded again
    with pytest.raises(AssertionError, match="decoded again"):
        load_dataset("cifar100", data_dir=archive, download=False)


def test_a_failed_download_says_where_the_archive_goes_and_leaves_no_folder(tmp_path,
                                                                            monkeypatch):
    fmt = dataclasses.replace(cifar.FORMATS["cifar10"], url=(tmp_path / "absent").as_uri())
    monkeypatch.setitem(cifar.FORMATS, "cifar10", fmt)
    target = tmp_path / "new" / "data"
    with pytest.raises(KdsearchError, match=re.escape("download failed (")) as caught:
        load_dataset("cifar10", data_dir=target, download=True)
    assert f"place cifar-10-python.tar.gz ({fmt.url}, md5 {fmt.md5}) in {target}" in \
        str(caught.value)
    assert not (tmp_path / "new").exists()


def test_no_download_into_a_data_folder_that_holds_other_data(tmp_path):
    (tmp_path / "cifar-100-python.tar.gz").write_bytes(b"another dataset")
    with pytest.raises(KdsearchError, match="does not download into a data folder that holds"):
        load_dataset("cifar10", data_dir=tmp_path, download=True)
    assert [p.name for p in tmp_path.iterdir()] == ["cifar-100-python.tar.gz"]
