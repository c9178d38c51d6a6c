"""torchvision's published weights for ``torchvision:NAME`` models, through torchvision's cache.

``--teacher-weights torchvision`` (or ``DEFAULT``) means the weights
``torchvision.models.get_model_weights(NAME).DEFAULT`` names. They are read from torchvision's
own cache, the file ``$TORCH_HOME/hub/checkpoints/<the URL's file name>`` (``TORCH_HOME``
defaults to ``~/.cache/torch``), where any earlier torchvision or kdsearch run left them.
When the file is absent it is downloaded there, and the download is checked against the
SHA-256 prefix in the file name (as torchvision does with ``check_hash=True``); a failed
download is one line naming the URL and the exact path to put the file at by hand. A file
already in the cache is trusted, without a hash check, as torchvision trusts it; it is
first read with ``weights_only=True`` (a file holding pickled code is refused), then the
model is built by torchvision's own builder with those weights (with the builder's options,
e.g. a ViT's image size).

:func:`pretrained_model` is the start of a fine-tuning (``kdsearch teacher --pretrained``):
the published model with its classifier (:func:`replace_head`: the last ``nn.Linear``, or
1x1 ``nn.Conv2d`` for SqueezeNet, with the published class count as outputs) replaced by a
freshly initialised layer of the same kind for the dataset's classes.
"""

from __future__ import annotations

import os
import urllib.error
from pathlib import Path
from urllib.parse import urlparse

import torch
import torch.nn as nn

from kdsearch.errors import KdsearchError, first_line
from kdsearch.models.checkpoint import describe_mismatch, read_checkpoint, unwrap_state_dict
from kdsearch.models.registry import TORCHVISION_PREFIX
from kdsearch.registry import unknown_name_message

PUBLISHED = ("torchvision", "DEFAULT")  # what --teacher-weights takes for the published weights


def is_published(weights: str | None) -> bool:
    """Whether ``weights`` asks for torchvision's published weights."""
    return weights in PUBLISHED


def published_model(name: str, in_channels: int = 3) -> nn.Module:
    """``torchvision:NAME`` built by torchvision with its published (DEFAULT) weights."""
    import torchvision.models as tvm

    arch = _torchvision_arch(name)
    if in_channels != 3:
        raise KdsearchError(f"{name} takes 3 input channels, not {in_channels}")
    weights = _default_weights(arch)
    path = cached_file(weights.url)
    if not path.is_file():
        download(weights.url, path)
    # read once with weights_only=True (a file holding pickled code is refused), kept as shapes
    state = {key: value.to("meta")
             for key, value in unwrap_state_dict(read_checkpoint(path), str(path)).items()}
    try:
        return tvm.get_model(arch, weights=weights, progress=False)
    except RuntimeError as err:  # the file in the cache does not fit the model
        fresh = tvm.get_model(arch, weights=None, num_classes=published_classes(name))
        problems = describe_mismatch(state, fresh.state_dict()) or first_line(err)
        raise KdsearchError(f"{path} does not fit {name}: {problems}; delete it to download "
                            f"{weights.url} again") from None


def pretrained_model(name: str, num_classes: int, in_channels: int = 3) -> nn.Module:
    """:func:`published_model` with a fresh classifier for ``num_classes`` classes."""
    model = published_model(name, in_channels)
    if getattr(model, "transform_input", False):  # googlenet, inception_v3
        raise KdsearchError(f"{name}'s published weights need transform_input=True, which a "
                            "model rebuilt from its weights file does not get; choose another "
                            "torchvision model")
    replace_head(model, num_classes, published_classes(name))
    return model


def published_classes(name: str) -> int:
    """How many classes the published weights of ``torchvision:NAME`` classify."""
    return len(_default_weights(_torchvision_arch(name)).meta["categories"])


def check_published_fits(name: str, num_classes: int) -> None:
    """One line unless the published weights of ``name`` classify ``num_classes`` classes."""
    published = published_classes(name)
    if num_classes != published:
        raise KdsearchError(
            f"torchvision's weights for {name} classify {published} classes, the dataset has "
            f"{num_classes}: fine-tune them first (kdsearch teacher --model {name} "
            "--pretrained ...) and pass the teacher.pt it writes")


def replace_head(model: nn.Module, num_classes: int, published: int) -> str:
    """Replace the classifier of ``model`` in place by a fresh layer with ``num_classes``
    outputs; return its module path (``fc``, ``classifier.3``, ``heads.head``)."""
    path, head = _find_head(model, published)
    if isinstance(head, nn.Linear):
        new: nn.Module = nn.Linear(head.in_features, num_classes, bias=head.bias is not None)
    else:
        new = nn.Conv2d(head.in_channels, num_classes, 1, bias=head.bias is not None)
    parent_path, _, attribute = path.rpartition(".")
    setattr(model.get_submodule(parent_path), attribute, new.to(head.weight.device))
    return path


def _find_head(model: nn.Module, published: int) -> tuple[str, nn.Linear | nn.Conv2d]:
    """The last ``nn.Linear`` (or 1x1 ``nn.Conv2d``) in module order with ``published``
    outputs."""
    found = [(path, module) for path, module in model.named_modules()
             if (isinstance(module, nn.Linear) and module.out_features == published)
             or (isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1)
                 and module.out_channels == published)]
    if not found:
        raise KdsearchError(f"{type(model).__name__}: no classifier layer with {published} "
                            "outputs (nn.Linear or 1x1 nn.Conv2d) to replace")
    return found[-1]


def cached_file(url: str) -> Path:
    """Where torchvision keeps the file of ``url``: ``torch.hub.get_dir()/checkpoints/``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def download(url: str, path: Path) -> None:
    """Download ``url`` to ``path``, checked against the SHA-256 prefix in its file name;
    any failure is one line naming the URL and the path to put the file at."""
    found = torch.hub.HASH_REGEX.search(path.name)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(path), found.group(1) if found else None,
                                       progress=True)
    except (urllib.error.URLError, OSError, RuntimeError) as err:
        reason = getattr(err, "reason", None) or first_line(err)
        raise KdsearchError(f"cannot download {url} ({reason}); download it by hand and put it "
                            f"at {path} (TORCH_HOME chooses the folder)") from None


def _default_weights(arch: str):
    import torchvision.models as tvm

    try:
        return tvm.get_model_weights(arch).DEFAULT
    except (ValueError, AttributeError, KeyError):
        raise KdsearchError(f"torchvision publishes no weights for {arch}") from None


def _torchvision_arch(name: str) -> str:
    """``NAME`` of ``torchvision:NAME``; one line for another kind of model or an unknown name."""
    import torchvision.models as tvm

    if not name.startswith(TORCHVISION_PREFIX):
        raise KdsearchError(f"torchvision's published weights are for torchvision:NAME models, "
                            f"not {name}")
    arch = name[len(TORCHVISION_PREFIX):]
    known = tvm.list_models(module=tvm)
    if arch not in known:
        raise KdsearchError(unknown_name_message("torchvision model", arch, known))
    return arch
