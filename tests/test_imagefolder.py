"""``--dataset imagefolder``: generated PNG/JPEG folders, decoded and streamed, the reference
transforms, the memory rule, the one-line errors, and the commands end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image

from kdsearch.cli import main
from kdsearch.data import ImageFiles, dataset_batches, load_dataset
from kdsearch.data.crops import ResizedCrop, resized_crop, sample_boxes, stored_size
from kdsearch.data.imagefolder import IMAGENET_MEAN, IMAGENET_STD, decode_budget, parse_bytes
from kdsearch.errors import KdsearchError

CLASSES = ("cat", "dog", "fox")
SIZE = (3, 32, 32)


def make_image_folder(root: Path, train: int = 30, val: int = 10) -> Path:
    """``root/{train,val}/{cat,dog,fox}/``: 48 x 48 (and 48 x 56, 48 x 64) images, PNG and
    JPEG in turn; each class a coloured stripe pattern under noise."""
    rng = np.random.default_rng(0)
    for split, count in (("train", train), ("val", val)):
        for label, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                width = 48 + 8 * (i % 3)
                stripes = (np.arange(width) // (4 * (label + 1)) % 2) * 120
                pixels = rng.integers(0, 100, (48, width, 3)) + stripes[None, :, None]
                pixels[..., label] += 35
                image = Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
                image.save(folder / f"{i:03d}.{'png' if i % 2 else 'jpg'}")
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("images"))


def load(folder: Path, **options):
    return load_dataset("imagefolder", data_dir=folder, input_size=SIZE, workers=0, **options)


def pixels(batch: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """Normalised model input back to uint8 pixels."""
    shape = (1, -1, 1, 1)
    values = batch * torch.tensor(std).view(shape) * 255 + torch.tensor(mean).view(shape) * 255
    return values.round().clamp(0, 255).to(torch.uint8)


def test_decoded_folder_is_stored_above_the_input_size(folder):
    ds = load(folder)
    assert isinstance(ds.train_images, torch.Tensor) and ds.train_images.dtype == torch.uint8
    assert ds.train_images.shape == (90, 3, 36, 36) and ds.test_images.shape == (30, 3, 36, 36)
    assert ds.input_size == SIZE and ds.num_classes == 3 and ds.class_names == CLASSES
    assert ds.train_labels.tolist() == [0] * 30 + [1] * 30 + [2] * 30
    assert (ds.mean, ds.std, ds.crop_padding) == (IMAGENET_MEAN, IMAGENET_STD, 0)
    images, _ = next(iter(dataset_batches(ds, "train", 16, "cpu")))
    assert images.shape == (16, 3, 32, 32) and images.dtype == torch.float32
    assert len(dataset_batches(ds, "train", 16, "cpu")) == 5  # 90 // 16, last dropped


def test_evaluation_input_is_torchvisions_resize_and_centre_crop(folder):
    reference = T.Compose([T.Resize(36), T.CenterCrop(32), T.PILToTensor()])
    files = sorted((folder / "val").rglob("*.*"))
    expected = torch.stack([reference(Image.open(f).convert("RGB")) for f in files])
    for stream in (False, True):
        ds = load(folder, stream=stream)
        batch = torch.cat([x for x, _ in dataset_batches(ds, "test", 7, "cpu")])
        assert torch.equal(pixels(batch), expected), f"stream={stream}"


def test_streaming_gives_the_batches_interface(folder, monkeypatch):
    monkeypatch.setenv("KDSEARCH_DECODE_BUDGET", "0")  # the memory rule chooses streaming
    ds = load_dataset("imagefolder", data_dir=folder, input_size=SIZE, workers=1)
    assert isinstance(ds.train_images, ImageFiles) and ds.train_images.shape == (90, 3, 36, 36)
    batches = dataset_batches(ds, "train", 16, "cpu", seed=3)
    first = [(x.clone(), y.clone()) for x, y in batches]  # one worker process
    assert len(first) == len(batches) == 5 and first[0][0].shape == (16, 3, 32, 32)
    in_process = dataset_batches(load(folder, stream=True), "train", 16, "cpu", seed=3)
    for (x, y), (x0, y0) in zip(first, in_process, strict=True):  # independent of workers
        assert torch.equal(x, x0) and torch.equal(y, y0)
    batches.set_epoch(0)
    again = next(iter(batches))
    assert torch.equal(again[0], first[0][0])
    assert not torch.equal(next(iter(batches))[0], first[0][0])  # epoch 1: other crops


@pytest.mark.parametrize("stream", [False, True])
def test_shards_make_up_the_whole_batch(folder, stream):
    ds = load(folder, stream=stream)
    whole = next(iter(dataset_batches(ds, "train", 16, "cpu", seed=1)))
    parts = [next(iter(dataset_batches(ds, "train", 16, "cpu", seed=1, shard=(r, 2))))
             for r in range(2)]
    assert torch.equal(torch.cat([p[0] for p in parts]), whole[0])
    assert torch.equal(torch.cat([p[1] for p in parts]), whole[1])


def test_subset_keeps_streamed_files(folder):
    ds = load_dataset("imagefolder", data_dir=folder, input_size=SIZE, workers=0, stream=True,
                      subset=20, seed=1)
    assert len(ds.train_images) == len(ds.train_labels) == 20
    labels = torch.cat([y for _, y in dataset_batches(ds, "train", 5, "cpu")])
    assert sorted(labels.tolist()) == sorted(ds.train_labels.tolist())


def test_normalize_data_measures_the_train_split(folder):
    ds = load(folder, normalize="data")
    stored = ds.train_images.double() / 255
    assert ds.mean == pytest.approx(stored.mean((0, 2, 3)).tolist(), abs=1e-9)
    assert ds.std == pytest.approx(stored.transpose(0, 1).flatten(1).std(1).tolist(), abs=1e-9)
    streamed = load(folder, normalize="data", stream=True)
    assert streamed.mean == pytest.approx(ds.mean) and streamed.std == pytest.approx(ds.std)


def test_grayscale_input(folder):
    ds = load_dataset("imagefolder", data_dir=folder, input_size=(1, 24, 20), workers=0)
    assert ds.train_images.shape == (90, 1, 27, 22) and ds.input_size == (1, 24, 20)
    assert next(iter(dataset_batches(ds, "train", 8, "cpu")))[0].shape == (8, 1, 24, 20)


def test_memory_rule(folder, monkeypatch):
    assert parse_bytes("512M") == 512 * 2**20 and parse_bytes("1.5GiB") == 3 * 2**29
    monkeypatch.setenv("KDSEARCH_DECODE_BUDGET", "lots")
    with pytest.raises(KdsearchError, match="512M or 20G"):
        decode_budget()
    needed = 120 * 3 * 36 * 36  # train + val at the stored size
    for budget, kind in ((needed, torch.Tensor), (needed - 1, ImageFiles)):
        monkeypatch.setenv("KDSEARCH_DECODE_BUDGET", str(budget))
        assert isinstance(load(folder).train_images, kind)
    monkeypatch.delenv("KDSEARCH_DECODE_BUDGET")
    assert 0 < decode_budget() <= 4 * 2**30


def test_sampled_boxes_follow_random_resized_crop():
    generator = torch.Generator().manual_seed(0)
    top, left, h, w = sample_boxes(4000, 36, 44, generator, (0.08, 1.0), (3 / 4, 4 / 3))
    assert bool((top >= 0).all() and (top + h <= 36).all() and (left + w <= 44).all())
    torch.manual_seed(0)
    crop = T.RandomResizedCrop(32)
    image = torch.zeros(3, 36, 44)
    reference = torch.tensor([math.prod(crop.get_params(image, crop.scale, crop.ratio)[2:])
                              for _ in range(4000)], dtype=torch.float64)
    assert float((h * w).double().mean()) == pytest.approx(float(reference.mean()), rel=0.03)
    assert float((w / h).double().log().abs().max()) <= math.log(4 / 3) + 0.1


def test_resized_crop_cuts_resizes_and_mirrors():
    images = torch.rand(2, 3, 9, 10)
    zeros, flip = torch.zeros(2, dtype=torch.long), torch.tensor([False, True])
    full = resized_crop(images, zeros, zeros, zeros + 9, zeros + 10, flip, (9, 10))
    assert torch.allclose(full[0], images[0], atol=1e-6)
    assert torch.allclose(full[1], images[1].flip(-1), atol=1e-6)
    top, left = torch.tensor([1, 3]), torch.tensor([2, 0])
    window = resized_crop(images, top, left, zeros + 5, zeros + 6, flip & False, (5, 6))
    assert torch.allclose(window[1], images[1, :, 3:8, 0:6], atol=1e-6)
    assert stored_size((32, 224)) == (36, 256) and ResizedCrop((4, 4)).scale == (0.08, 1.0)


def one_line_error(folder: Path, capsys) -> str:
    code = main(["teacher", "--model", "resnet8", "--dataset", "imagefolder", "--data-dir",
                 str(folder), "--input-size", "3,32,32", "--out", str(folder.parent / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    return err


def test_a_corrupt_image_is_named(tmp_path, capsys, monkeypatch):
    root = make_image_folder(tmp_path / "data", train=3, val=2)
    bad = root / "train" / "dog" / "001.png"
    bad.write_bytes(b"not a png at all")
    assert str(bad) in one_line_error(root, capsys)
    monkeypatch.setenv("KDSEARCH_DECODE_BUDGET", "0")  # streaming checks the headers
    assert f"{bad}: cannot read this image" in one_line_error(root, capsys)
    monkeypatch.delenv("KDSEARCH_DECODE_BUDGET")
    bad.unlink()
    cut = root / "val" / "fox" / "000.jpg"
    cut.write_bytes(cut.read_bytes()[:200])  # a header, then nothing
    with pytest.raises(KdsearchError, match=f"^{cut}: cannot read this image"):
        load(root)


def test_empty_and_mismatched_class_folders_are_named(tmp_path, capsys):
    root = make_image_folder(tmp_path / "data", train=2, val=1)
    for image in (root / "val" / "cat").iterdir():
        image.unlink()
    (root / "val" / "cat" / "notes.txt").write_text("not an image")
    assert f"{root / 'val' / 'cat'}: empty class folder" in one_line_error(root, capsys)
    (root / "val" / "cat" / "notes.txt").unlink()
    (root / "val" / "cat").rename(root / "val" / "cow")
    err = one_line_error(root, capsys)
    assert err.endswith(f"{root / 'val'}: class folders differ from {root / 'train'} "
                        "(missing cat; not in train/: cow)")
    assert "no such directory" in one_line_error(tmp_path / "absent", capsys)
    with pytest.raises(KdsearchError, match="needs --data-dir"):
        load_dataset("imagefolder")


@pytest.mark.slow
def test_commands_run_end_to_end(folder, tmp_path, capsys, monkeypatch):
    """teacher, search, train and compare at 3,32,32; then teacher again, streaming."""
    data = ["--dataset", "imagefolder", "--data-dir", str(folder), "--input-size", "3,32,32"]
    teacher = ["--teacher", "resnet14", "--teacher-weights", str(tmp_path / "t/teacher.pt")]
    assert main(["teacher", "--model", "resnet14", *data, "--epochs", "2", "--batch-size",
                 "16", "--out", str(tmp_path / "t"), "--quiet"]) == 0
    assert main(["search", *teacher, *data, "--budget", "0.5x", "--steps", "4", "--out",
                 str(tmp_path / "s"), "--quiet"]) == 0
    student = json.loads((tmp_path / "s/student.json").read_text())
    assert student["teacher"]["input_size"] == [3, 32, 32]
    assert main(["train", "--student", str(tmp_path / "s/student.json"), *teacher, *data,
                 "--epochs", "1", "--batch-size", "16", "--out", str(tmp_path / "d"),
                 "--quiet"]) == 0
    assert json.loads((tmp_path / "d/summary.json").read_text())["dataset"] == "imagefolder"
    assert main(["compare", *teacher, *data, "--against", "resnet8", "--seeds", "1",
                 "--epochs", "1", "--batch-size", "16", "--search-steps", "4", "--out",
                 str(tmp_path / "c"), "--quiet"]) == 0
    assert "| searched |" in (tmp_path / "c/comparison.md").read_text()
    monkeypatch.setenv("KDSEARCH_DECODE_BUDGET", "0")
    assert main(["teacher", "--model", "resnet8", *data, "--epochs", "1", "--batch-size",
                 "16", "--out", str(tmp_path / "streamed"), "--quiet"]) == 0
    assert (tmp_path / "streamed/teacher.pt").exists()
    assert main(["train", "--student", "resnet8", *teacher, *data, "--cache-teacher",
                 "--epochs", "1", "--out", str(tmp_path / "cached"), "--quiet"]) == 2
    assert "random resized crops" in capsys.readouterr().err


def test_a_pipeline_config_gives_the_input_size(folder, tmp_path, capsys):
    """kdsearch run on an image folder at 3,32,32 (dataset.input_size), end to end; a
    dataset without a free input size refuses it when the config is checked."""
    from kdsearch.pipeline.config import check_config

    config = {"dataset": {"name": "imagefolder", "data_dir": str(folder),
                          "input_size": [3, 32, 32]},
              "teacher": {"model": "resnet8", "train": {"epochs": 1, "batch_size": 16}},
              "search": {"budgets": ["0.5x"], "steps": 2},
              "distill": {"epochs": 1, "batch_size": 16}, "compare": False, "show": False,
              "out": str(tmp_path / "run")}
    assert check_config(config)["dataset"]["input_size"] == [3, 32, 32]
    with pytest.raises(KdsearchError, match="does not take input_size"):
        check_config({**config, "dataset": {"name": "digits", "input_size": [1, 8, 8]}})
    (tmp_path / "run.yaml").write_text(json.dumps(config))
    assert main(["run", "--config", str(tmp_path / "run.yaml"), "--threads", "1"]) == 0
    student = json.loads((tmp_path / "run/search/0.5x/student.json").read_text())
    assert student["teacher"]["input_size"] == [3, 32, 32]
