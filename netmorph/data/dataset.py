"""The :class:`Dataset` value type: images, labels and the statistics used to normalise them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import numpy as np

from netmorph.errors import NetmorphError


class DataError(NetmorphError):
    """A data set cannot be read or is malformed; the message names the file and the reason."""


def channel_stats(images: np.ndarray, layout: str, chunk: int = 4096) -> tuple[tuple[float, ...], ...]:
    """Per-channel mean and standard deviation of an image array.

    Parameters
    ----------
    images
        ``(N, H, W, C)`` when ``layout == "NHWC"``, ``(N, C, H, W)`` when ``layout == "NCHW"``.
    layout
        ``"NHWC"`` or ``"NCHW"``.
    chunk
        Images per accumulation step (bounds the float64 working memory).

    Returns
    -------
    (mean, std)
        Two tuples of floats, one entry per channel, in the scale of ``images``.
    """
    axis = 3 if layout == "NHWC" else 1
    channels = images.shape[axis]
    total = np.zeros(channels)
    total_sq = np.zeros(channels)
    reduce_axes = tuple(a for a in range(4) if a != axis)
    for start in range(0, len(images), chunk):
        part = images[start:start + chunk].astype(np.float64)
        total += part.sum(axis=reduce_axes)
        total_sq += np.square(part).sum(axis=reduce_axes)
    count = max(1, images.size // channels)
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    std = np.where(std > 0, std, 1.0)
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


@dataclass(frozen=True, eq=False)
class Dataset:
    """Labelled images plus what a trainer needs to normalise them.

    Attributes
    ----------
    images
        ``uint8`` ``(N, H, W, C)`` (the layout of CIFAR and the ``.npz`` files) or ``float32``
        ``(N, C, H, W)``.
    labels
        ``int64`` ``(N,)`` class indices in ``[0, num_classes)``.
    num_classes
        Number of classes of the task (not only those present in this split).
    mean, std
        Per-channel statistics in the scale of ``images`` (0–255 for ``uint8``); the test split
        carries the statistics of its training split.
    class_names
        Optional names, one per class.
    lossless
        Optional ``bool`` ``(N,)`` mask of the images that are exact originals (see
        ``netmorph.data.prepare``); training reports the error on those separately.
    name
        Short description used in logs (``"cifar10/test"``).
    """

    images: np.ndarray
    labels: np.ndarray
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...] = ()
    lossless: np.ndarray | None = None
    name: str = field(default="data")

    def __post_init__(self) -> None:
        x, y = self.images, self.labels
        where = f"{self.name}: "
        if not isinstance(x, np.ndarray) or x.ndim != 4:
            raise DataError(f"{where}images must be a 4-D array, got shape {getattr(x, 'shape', None)}")
        if x.dtype not in (np.uint8, np.float32):
            raise DataError(f"{where}images must be uint8 NHWC or float32 NCHW, got {x.dtype}")
        if not isinstance(y, np.ndarray) or y.ndim != 1 or len(y) != len(x):
            raise DataError(f"{where}labels must be a 1-D array of {len(x)} entries, got {np.shape(y)}")
        if not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"{where}labels must be integers, got {y.dtype}")
        if y.dtype != np.int64:
            object.__setattr__(self, "labels", y.astype(np.int64))
        if self.num_classes < 1:
            raise DataError(f"{where}num_classes must be positive, got {self.num_classes}")
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
            raise DataError(
                f"{where}labels must lie in [0, {self.num_classes}), found {int(y.min())}..{int(y.max())}"
            )
        c = self.channels
        if len(self.mean) != c or len(self.std) != c:
            raise DataError(f"{where}mean/std need {c} entries (one per channel)")
        if any(not s > 0 for s in self.std):
            raise DataError(f"{where}std entries must be positive, got {self.std}")
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        object.__setattr__(self, "class_names", tuple(str(n) for n in self.class_names))
        if self.class_names and len(self.class_names) != self.num_classes:
            raise DataError(f"{where}{len(self.class_names)} class names for {self.num_classes} classes")
        if self.lossless is not None:
            m = self.lossless
            if not isinstance(m, np.ndarray) or m.dtype != np.bool_ or m.shape != (len(x),):
                raise DataError(f"{where}lossless must be a bool array of shape ({len(x)},)")

    # -- constructors -------------------------------------------------------------------
    @classmethod
    def from_arrays(
        cls,
        images: np.ndarray,
        labels: np.ndarray,
        num_classes: int | None = None,
        *,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        **kwargs,
    ) -> Dataset:
        """Build a data set, computing ``num_classes`` and mean/std from the arrays when not given."""
        images = np.asarray(images)
        labels = np.asarray(labels)
        if num_classes is None:
            num_classes = int(labels.max()) + 1 if len(labels) else 1
        if mean is None or std is None:
            if images.ndim != 4:
                raise DataError(f"{kwargs.get('name', 'data')}: images must be a 4-D array")
            layout = "NHWC" if images.dtype == np.uint8 else "NCHW"
            m, s = channel_stats(images, layout)
            mean = m if mean is None else mean
            std = s if std is None else std
        return cls(images, labels, int(num_classes), tuple(mean), tuple(std), **kwargs)

    # -- queries ------------------------------------------------------------------------
    @property
    def layout(self) -> str:
        """``"NHWC"`` for ``uint8`` images, ``"NCHW"`` for ``float32`` images."""
        return "NHWC" if self.images.dtype == np.uint8 else "NCHW"

    @property
    def channels(self) -> int:
        return int(self.images.shape[3] if self.layout == "NHWC" else self.images.shape[1])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image, the model input without the batch dimension."""
        s = self.images.shape
        return (s[3], s[1], s[2]) if self.layout == "NHWC" else (s[1], s[2], s[3])

    def __len__(self) -> int:
        return len(self.labels)

    # -- derived data sets --------------------------------------------------------------
    def subset(self, index: slice | Sequence[int] | np.ndarray, name: str | None = None) -> Dataset:
        """The images selected by ``index`` (a slice, indices or a bool mask), same statistics."""
        if not isinstance(index, slice):
            index = np.asarray(index)
        return replace(
            self,
            images=self.images[index],
            labels=self.labels[index],
            lossless=None if self.lossless is None else self.lossless[index],
            name=self.name if name is None else name,
        )

    def with_stats(self, mean: Sequence[float], std: Sequence[float]) -> Dataset:
        """The same images normalised with other statistics (e.g. those of the training split)."""
        return replace(self, mean=tuple(mean), std=tuple(std))

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}, n={len(self)}, {self.layout} {self.image_shape}, "
            f"classes={self.num_classes})"
        )


class Splits(NamedTuple):
    """A training split and a test split that share the training statistics."""

    train: Dataset
    test: Dataset


def make_splits(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    *,
    num_classes: int | None = None,
    class_names: Sequence[str] = (),
    test_lossless: np.ndarray | None = None,
    name: str = "data",
) -> Splits:
    """Train/test :class:`Dataset` pair; mean/std come from the training images only."""
    if num_classes is None:
        top = max(int(y_train.max()) if len(y_train) else 0, int(y_test.max()) if len(y_test) else 0)
        num_classes = len(class_names) or top + 1
    train = Dataset.from_arrays(
        x_train, y_train, num_classes, class_names=tuple(class_names), name=f"{name}/train"
    )
    test = Dataset(
        x_test, y_test, num_classes, train.mean, train.std,
        class_names=tuple(class_names), lossless=test_lossless, name=f"{name}/test",
    )
    if train.image_shape != test.image_shape:
        raise DataError(f"{name}: train images are {train.image_shape} but test images {test.image_shape}")
    if train.images.dtype != test.images.dtype:
        raise DataError(f"{name}: train images are {train.images.dtype} but test images {test.images.dtype}")
    return Splits(train, test)
