"""Arguments shared by several subcommands, parsed into the library's types."""

from __future__ import annotations

import argparse

MODEL_HELP = ("zoo name (resnet56), torchvision:NAME, or your own model as FILE.py:NAME or "
              "package.module:NAME (a module class or a function returning one)")
TEACHER_WEIGHTS_HELP = ("the teacher's trained weights: a state_dict file (e.g. teacher.pt of "
                        "kdsearch teacher), or 'torchvision' (DEFAULT) for torchvision's "
                        "published weights of a torchvision:NAME teacher")


def parse_input_size(text: str) -> tuple[int, int, int]:
    """``"3,32,32"`` -> (3, 32, 32)."""
    try:
        size = tuple(int(part) for part in text.split(","))
    except ValueError:
        size = ()
    if len(size) != 3 or min(size) < 1:
        raise argparse.ArgumentTypeError(f"expected C,H,W with positive integers, got {text!r}")
    return size  # type: ignore[return-value]


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def add_model_shape_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--num-classes", type=positive_int, default=None,
                        help="classes of the head (default: the model's natural task: 100 for "
                             "the CIFAR zoo, 10 for digits models, 1000 for torchvision)")
    parser.add_argument("--input-size", type=parse_input_size, default=None, metavar="C,H,W",
                        help="input size (default: the model's natural input: 3,32,32 for the "
                             "CIFAR zoo, 1,8,8 for digits models, 3,224,224 for torchvision)")


def add_data_args(parser: argparse.ArgumentParser, default: str | None = "digits") -> None:
    parser.add_argument("--dataset", default=default, required=default is None,
                        help="dataset name: digits (embedded), cifar10, cifar100, synthetic, "
                             "imagefolder (your images: --data-dir DIR with DIR/train/CLASS/"
                             "*.jpg and DIR/val/CLASS/*.jpg)")
    parser.add_argument("--data-dir", default=None,
                        help="folder with the dataset (extracted folder or archive; for "
                             "imagefolder the folder of train/ and val/); CIFAR is downloaded "
                             "there (default ~/.cache/kdsearch/data) when absent")
    parser.add_argument("--no-download", dest="download", action="store_false",
                        help="never download: fail when the data is not in --data-dir")
    parser.add_argument("--subset", type=positive_int, default=None, metavar="N",
                        help="use a seeded random subset of N training images")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--input-size", dest="data_input_size", type=parse_input_size,
                        default=None, metavar="C,H,W",
                        help="synthetic and imagefolder only: model input size (default "
                             "3,32,32 for synthetic, 3,224,224 for imagefolder, whose images "
                             "are resized and cropped to it)")
    parser.add_argument("--num-classes", dest="data_classes", type=positive_int, default=None,
                        metavar="N", help="synthetic data only: number of classes (default 10)")
    parser.add_argument("--normalize", choices=("imagenet", "data"), default=None,
                        help="imagefolder only: normalise with ImageNet's mean/std (the "
                             "default; what pretrained torchvision weights expect) or the "
                             "train images' own")


def data_options(args: argparse.Namespace) -> dict:
    """The keyword arguments of :func:`kdsearch.data.load_dataset` the data arguments give."""
    options = {"data_dir": args.data_dir, "subset": args.subset, "seed": args.seed,
               "download": args.download, "input_size": args.data_input_size,
               "num_classes": args.data_classes, "normalize": args.normalize}
    return {key: value for key, value in options.items() if value is not None}


def dataset_from_args(args: argparse.Namespace):
    """Load the dataset the data arguments describe (see :func:`add_data_args`)."""
    from kdsearch.data import load_dataset

    return load_dataset(args.dataset, **data_options(args))


def add_numerics_args(parser: argparse.ArgumentParser) -> None:
    """``--no-amp`` and ``--no-channels-last`` (see :mod:`kdsearch.numerics`)."""
    parser.add_argument("--no-amp", dest="amp", action="store_false",
                        help="float32 instead of bf16 autocast (which is the default on CUDA "
                             "and on CPUs with native bf16)")
    parser.add_argument("--no-channels-last", dest="channels_last", action="store_false",
                        help="keep the contiguous memory format (channels-last is the default "
                             "where bf16 runs)")


def add_threads_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=positive_int, default=None, metavar="N",
                        help="CPU threads (default: OMP_NUM_THREADS, else the cores not busy "
                             "with other work; results are bit-exact for one thread count)")
