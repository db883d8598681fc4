"""A model's interface (input and output names with tensor types) and the check that two agree."""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from ..ir import TensorType
from .errors import InterfaceMismatchError


@dataclass
class Interface:
    """Graph inputs (initializers excluded) and outputs, in file order, name -> type.

    The type is ``None`` for an input/output that is not a plain tensor (sequence, map …).
    """

    inputs: dict[str, TensorType | None]
    outputs: dict[str, TensorType | None]

    @classmethod
    def of(cls, model: onnx.ModelProto) -> Interface:
        g = model.graph
        inits = {t.name for t in g.initializer}
        return cls(
            {vi.name: TensorType.from_type_proto(vi.type) for vi in g.input if vi.name not in inits},
            {vi.name: TensorType.from_type_proto(vi.type) for vi in g.output},
        )


def _names(names) -> str:
    return ", ".join(repr(n) for n in names)


def check_same_interface(a: Interface, b: Interface, label_a: str, label_b: str) -> None:
    """Raise :class:`InterfaceMismatchError` unless ``a`` and ``b`` have the same interface.

    Names must be the same sets (order may differ), element types equal, and shapes
    compatible: same rank, and fixed sizes equal where both are fixed (a symbolic or unknown
    dim is compatible with anything).
    """
    for kind in ("inputs", "outputs"):
        ta, tb = getattr(a, kind), getattr(b, kind)
        only_a = [n for n in ta if n not in tb]
        only_b = [n for n in tb if n not in ta]
        if only_a or only_b:
            parts = []
            if only_a:
                parts.append(f"{_names(only_a)} only in {label_a}")
            if only_b:
                parts.append(f"{_names(only_b)} only in {label_b}")
            raise InterfaceMismatchError(f"the models have different {kind}: " + "; ".join(parts))
        for name, t1 in ta.items():
            t2 = tb[name]
            if t1 is None or t2 is None:
                if (t1 is None) != (t2 is None):
                    raise InterfaceMismatchError(
                        f"{kind[:-1]} {name!r} is a tensor in one model and not in the other"
                    )
                continue
            if not t1.compatible(t2):
                raise InterfaceMismatchError(
                    f"{kind[:-1]} {name!r} has type {t1} in {label_a} but {t2} in {label_b}"
                )


def renamed(b: Interface, name_map: dict[str, str], a: Interface, label_a: str, label_b: str) -> Interface:
    """``b``'s interface under ``a``'s names: ``name_map`` maps a's name -> b's (``--map``).

    Raises :class:`InterfaceMismatchError` when a mapped name is not in its model, or when ``b``
    has an input/output of its own under the name another of its names is mapped to (``--map
    logits=out2`` while ``b`` has a ``logits`` too): that one would be hidden, never compared.
    """
    if not name_map:
        return b
    b_names = set(b.inputs) | set(b.outputs)
    for an, bn in name_map.items():
        if an not in a.inputs and an not in a.outputs:
            raise InterfaceMismatchError(f"--map {an}={bn}: {label_a} has no input or output {an!r}")
        if bn not in b_names:
            raise InterfaceMismatchError(f"--map {an}={bn}: {label_b} has no input or output {bn!r}")
    back = {bn: an for an, bn in name_map.items()}
    for an, bn in name_map.items():
        if an != bn and an in b_names and an not in back:
            raise InterfaceMismatchError(
                f"--map {an}={bn}: {label_b} has its own {an!r} too, which would be hidden; map that one "
                f"to a name of {label_a} as well, or rename it")
    return Interface({back.get(n, n): t for n, t in b.inputs.items()},
                     {back.get(n, n): t for n, t in b.outputs.items()})
