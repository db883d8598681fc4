"""Data specs as written on the command line: ``synthetic[:N]``, ``cifar10:PATH``, ``cifar100:PATH``,
``npz:PATH``."""

from __future__ import annotations

from dataclasses import dataclass

from .dataset import DataError, Splits

KINDS = ("synthetic", "cifar10", "cifar100", "npz")
USAGE = "synthetic | synthetic:N | cifar10:PATH | cifar100:PATH | npz:PATH"


@dataclass(frozen=True)
class DataSpec:
    """A parsed data spec. ``path`` is set for file kinds, ``size`` (training images) for synthetic."""

    kind: str
    path: str | None = None
    size: int | None = None

    def load(self, model=None) -> Splits:
        """Read (or generate) the train/test splits this spec names.

        ``model`` (a graph): synthetic data takes its image size, channels and class count
        (:func:`~netmorph.data.synthetic.input_geometry`); without it, 3x32x32 and 10 classes.
        """
        if self.kind == "synthetic":
            from .synthetic import input_geometry, make_synthetic

            kw = {} if model is None else input_geometry(model)
            return make_synthetic(**kw) if self.size is None else make_synthetic(self.size, **kw)
        if self.kind == "npz":
            from .npz import load_npz

            return load_npz(self.path)
        from .cifar import load_cifar10, load_cifar100

        return load_cifar10(self.path) if self.kind == "cifar10" else load_cifar100(self.path)

    def __str__(self) -> str:
        arg = self.path if self.path is not None else self.size
        return self.kind if arg is None else f"{self.kind}:{arg}"


def parse_data_spec(spec: str) -> DataSpec:
    """Parse ``synthetic``, ``synthetic:N``, ``cifar10:PATH``, ``cifar100:PATH`` or ``npz:PATH``.

    Raises
    ------
    DataError
        Unknown kind, missing path, or a non-positive / non-integer ``N``; the message shows the
        accepted forms. (Whether ``PATH`` exists is checked when loading.)
    """
    text = str(spec).strip()
    kind, sep, arg = text.partition(":")
    kind = kind.strip().lower()
    if kind not in KINDS:
        raise DataError(f"data spec {text!r}: unknown kind {kind!r}; expected {USAGE}")
    if kind == "synthetic":
        if not sep:
            return DataSpec("synthetic")
        try:
            n = int(arg)
        except ValueError:
            n = 0
        if n < 1:
            raise DataError(f"data spec {text!r}: N must be a positive integer (training images)")
        return DataSpec("synthetic", size=n)
    if not sep or not arg.strip():
        raise DataError(f"data spec {text!r}: {kind} needs a path, e.g. {kind}:/data/{kind}")
    return DataSpec(kind, path=arg.strip())


def load_data(spec: str | DataSpec) -> Splits:
    """Parse (if needed) and load a data spec; see :func:`parse_data_spec`."""
    return (spec if isinstance(spec, DataSpec) else parse_data_spec(spec)).load()
