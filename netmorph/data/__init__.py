"""Datasets: CIFAR-10/100 batch folders, ``.npz`` files, and a synthetic task, as :class:`Dataset` values.

Every loader returns :class:`Splits` ``(train, test)``; images stay ``uint8`` NHWC (the trainer
moves them to the device as ``uint8`` and normalises per batch with the training mean/std).
"""

from .cifar import SafeUnpickler, load_cifar10, load_cifar100
from .dataset import DataError, Dataset, Splits, channel_stats, make_splits
from .npz import load_npz
from .spec import DataSpec, load_data, parse_data_spec
from .synthetic import make_synthetic

__all__ = [
    "DataError", "DataSpec", "Dataset", "SafeUnpickler", "Splits", "channel_stats", "load_cifar10",
    "load_cifar100", "load_data", "load_npz", "make_splits", "make_synthetic", "parse_data_spec",
]
