"""In-memory image datasets (ImageFolder, official CIFAR archives, synthetic) and batched transforms."""

from converter.training.datasets.base import DatasetError, ImageDataset
from converter.training.datasets.cifar import download_cifar, load_cifar
from converter.training.datasets.imagefolder import load_image_folder
from converter.training.datasets.spec import SPEC_HELP, open_dataset
from converter.training.datasets.synthetic import synthetic_dataset
from converter.training.datasets.transforms import (
    random_crop,
    random_flip,
    to_float,
)

__all__ = [
    "SPEC_HELP",
    "DatasetError",
    "ImageDataset",
    "download_cifar",
    "load_cifar",
    "load_image_folder",
    "open_dataset",
    "random_crop",
    "random_flip",
    "synthetic_dataset",
    "to_float",
]
