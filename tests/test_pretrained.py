"""torchvision's published weights, offline: a seeded state dict placed where torchvision's
cache looks ($TORCH_HOME/hub/checkpoints/<the URL's file name>)."""

from __future__ import annotations

import hashlib
import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision.models as tvm

from kdsearch.cli import main
from kdsearch.errors import KdsearchError
from kdsearch.models.pretrained import cached_file, download, pretrained_model, replace_head
from kdsearch.student.resolve import resolve_model

NAME = "torchvision:mobilenet_v3_small"
HEAD = "classifier.3"  # mobilenet_v3_small's classifier: the last nn.Linear
URL = tvm.get_model_weights("mobilenet_v3_small").DEFAULT.url


@pytest.fixture
def torch_home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch"


@pytest.fixture
def published(torch_home) -> dict[str, torch.Tensor]:
    """A seeded mobilenet_v3_small's state dict, saved as the published file would be (a
    seed no command uses: a fresh model is never these weights)."""
    torch.manual_seed(1234)
    state = tvm.mobilenet_v3_small().state_dict()
    path = torch_home / "hub" / "checkpoints" / "mobilenet_v3_small-047dcff4.pth"
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    return state


@pytest.fixture
def offline(monkeypatch):
    def refuse(url, dst, hash_prefix=None, progress=True):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


def test_the_cache_path_is_torchvisions(torch_home):
    expected = torch_home / "hub" / "checkpoints" / "mobilenet_v3_small-047dcff4.pth"
    assert cached_file(URL) == expected


@pytest.mark.parametrize("keyword", ["torchvision", "DEFAULT"])
def test_teacher_weights_torchvision_loads_the_cached_file(published, offline, keyword):
    model = resolve_model(NAME, 1000, (3, 224, 224), weights=keyword).model
    loaded = model.state_dict()
    assert loaded.keys() == published.keys()
    assert all(torch.equal(loaded[key], value) for key, value in published.items())


def test_pretrained_gets_a_new_head_and_keeps_the_rest(published, offline):
    torch.manual_seed(1)
    model = pretrained_model(NAME, 3)
    state = model.state_dict()
    assert state[f"{HEAD}.weight"].shape == (3, 1024) and state[f"{HEAD}.bias"].shape == (3,)
    kept = [key for key in published if not key.startswith(HEAD)]
    assert all(torch.equal(state[key], published[key]) for key in kept)
    assert model.eval()(torch.zeros(2, 3, 32, 32)).shape == (2, 3)


def test_replace_head_finds_the_last_classifier():
    assert replace_head(tvm.resnet18(), 5, 1000) == "fc"
    assert replace_head(tvm.squeezenet1_1(), 5, 1000) == "classifier.1"  # a 1x1 conv head
    with pytest.raises(KdsearchError, match="no classifier layer with 1000 outputs"):
        replace_head(tvm.resnet18(num_classes=10), 5, 1000)


def test_teacher_pretrained_fine_tunes_from_the_published_weights(published, offline,
                                                                   tmp_path):
    """lr 1e-30: the trained weights are the published ones, with a 3-class head."""
    assert main(["teacher", "--model", NAME, "--pretrained", "--dataset", "synthetic",
                 "--input-size", "3,32,32", "--num-classes", "3", "--subset", "32",
                 "--epochs", "1", "--batch-size", "16", "--lr", "1e-30", "--no-amp",
                 "--out", str(tmp_path / "t"), "--quiet"]) == 0
    trained = torch.load(tmp_path / "t" / "teacher.pt", weights_only=True)
    assert trained[f"{HEAD}.weight"].shape == (3, 1024)
    parameters = dict(tvm.mobilenet_v3_small().named_parameters())
    kept = [key for key in parameters if not key.startswith(HEAD)]
    assert all(torch.allclose(trained[key], published[key], rtol=0, atol=1e-20) for key in kept)
    again = resolve_model(NAME, 3, (3, 32, 32), str(tmp_path / "t" / "teacher.pt")).model
    assert torch.equal(again.state_dict()[f"{HEAD}.weight"], trained[f"{HEAD}.weight"])


def test_missing_file_offline_names_the_url_and_the_path(torch_home, offline, tmp_path,
                                                         capsys):
    expected = torch_home / "hub" / "checkpoints" / "mobilenet_v3_small-047dcff4.pth"
    assert main(["teacher", "--model", NAME, "--pretrained", "--dataset", "synthetic",
                 "--input-size", "3,32,32", "--out", str(tmp_path / "t")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"cannot download {URL} (no network)" in err and f"put it at {expected}" in err


def test_published_weights_must_fit(published, offline):
    with pytest.raises(KdsearchError, match="classify 1000 classes, the dataset has 3: "
                                            "fine-tune them first"):
        resolve_model(NAME, 3, (3, 32, 32), weights="torchvision")
    with pytest.raises(KdsearchError, match="for torchvision:NAME models, not resnet8"):
        resolve_model("resnet8", 100, (3, 32, 32), weights="torchvision")
    with pytest.raises(KdsearchError, match="takes 3 input channels, not 1"):
        pretrained_model(NAME, 10, in_channels=1)
    wrong = cached_file(URL)
    torch.save({"fc.weight": torch.zeros(2, 2)}, wrong)
    with pytest.raises(KdsearchError, match=f"{wrong} does not fit {NAME}: .*delete it"):
        resolve_model(NAME, 1000, (3, 224, 224), weights="torchvision")


def test_a_download_is_checked_against_the_hash_in_its_name(tmp_path):
    """torch.hub's check of the SHA-256 prefix, through a file:// URL."""
    source = tmp_path / "source"
    source.mkdir()
    content = b"weights"
    digest = hashlib.sha256(content).hexdigest()
    for prefix, ok in ((digest[:8], True), ("deadbeef", False)):
        (source / f"net-{prefix}.pth").write_bytes(content)
        target = tmp_path / "cache" / f"net-{prefix}.pth"
        if ok:
            download((source / target.name).as_uri(), target)
            assert target.read_bytes() == content
        else:
            with pytest.raises(KdsearchError, match=f"put it at {target}"):
                download((source / target.name).as_uri(), target)
            assert not target.exists()
