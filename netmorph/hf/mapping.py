"""A grown graph's parameters as a ``transformers`` state dict, by the family's rule table.

Each child parameter is traced to the parent parameter it derives from (the passes' lineage; a
fresh tensor, such as the zeroed output projection of an inserted layer, by the name it was given
after the one it replaces), whose ``state_dict`` key gives its role. Layer parameters are then
numbered again in the order the child's graph uses them: an inserted layer takes the next index,
the layers after it move up.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import PreconditionError
from ..ir import Graph
from ..torch.export import TensorSlot
from ..torch.trace import Origin

_SUFFIX = re.compile(r"(_grown\d+)?(\.\d+)*$")


@dataclass(frozen=True)
class Placed:
    """Child IR parameter ``ir`` is the checkpoint's tensor ``key`` (``slot``: its layout)."""

    ir: str
    key: str
    slot: TensorSlot
    layer: int | None
    parent_layer: int | None = None
    """The parent layer the tensor derives from (an inserted layer: the one it copies)."""

    @property
    def shape(self) -> tuple[int, ...]:
        """The tensor's shape in the checkpoint (the IR's, transposed where the module holds that)."""
        return self.slot.shape[::-1] if self.slot.transpose else self.slot.shape


def place(graph: Graph, parent_slots: dict[str, TensorSlot], origins: dict[str, Origin],
          family: dict, what: str) -> list[Placed]:
    """Where every child parameter that holds a checkpoint tensor goes (see the module doc)."""
    by_ir = {}
    for key, s in parent_slots.items():
        by_ir.setdefault(s.ir, key)
    first_use: dict[str, int] = {}
    for i, n in enumerate(graph.nodes):
        for v in n.inputs:
            if v is not None and v.is_parameter:
                first_use.setdefault(v.name, i)
    layer_re = re.compile(family["layers"])
    outside: dict[str, Placed] = {}
    layered: list[tuple[int, str, str, TensorSlot, int]] = []
    for v in graph.parameters:
        o = origins.get(v.name)
        template = by_ir.get(o.root) if o is not None and o.root is not None else None
        if template is None:
            hint = _SUFFIX.sub("", v.name)
            template = by_ir.get(hint) or (hint if hint in parent_slots else None)
        if template is None:
            continue  # a constant of the graph, not a tensor of the checkpoint
        ps = parent_slots[template]
        slot = TensorSlot(v.name, tuple(v.const.shape), ps.transpose)  # shape: the IR layout
        m = layer_re.match(template)
        if m is None:
            if template in outside:
                raise PreconditionError(f"{what}: two child tensors claim {template!r}; the child cannot be "
                                        "written as a checkpoint of this family")
            outside[template] = Placed(v.name, template, slot, None)
            continue
        layered.append((first_use.get(v.name, -1), m.group(2), v.name, slot, int(m.group(1))))
    placed = list(outside.values())
    layer, roles = -1, set()
    for _pos, role, ir, slot, parent_layer in sorted(layered, key=lambda t: t[0]):
        if layer < 0 or role in roles:
            layer, roles = layer + 1, set()
        roles.add(role)
        placed.append(Placed(ir, family["layer_key"].format(i=layer, role=role), slot, layer, parent_layer))
    return placed


def child_config(config, placed: list[Placed], family: dict, what: str, structures=(None, None),
                 parent_shapes: dict[str, tuple[int, ...]] | None = None):
    """A copy of ``config`` with the fields the family's rules read off the child's tensors and,
    for ``("structure", attr)`` rules, off ``structures`` (the parent's and the grown graph's
    transformer readings)."""
    cfg = config.__class__.from_dict(config.to_dict())
    layers = {p.layer for p in placed if p.layer is not None}
    layer_re = re.compile(family["layers"])
    for field, rule in family["config"].items():
        old = getattr(config, field, None)
        if rule[0] == "layers":
            setattr(cfg, field, len(layers))
        elif rule[0] == "dim":
            _, role, axis = rule
            dims = {p.shape[axis] for p in placed if p.layer is not None
                    and layer_re.match(p.key).group(2) == role}
            if len(dims) > 1:
                raise PreconditionError(f"{what}: {role} has widths {sorted(dims)} across layers; one "
                                        f"{config.model_type} config cannot say that (grow every layer)")
            if not dims:
                continue
            new = dims.pop()
            was = {s[axis] for k, s in (parent_shapes or {}).items()
                   if (m := layer_re.match(k)) and m.group(2) == role}
            if old is None and was == {new}:
                continue  # a derived field (GPT-2's n_inner = 4 n_embd) the growth left alone
            setattr(cfg, field, new)
        elif rule[0] == "structure" and structures[1] is not None and hasattr(cfg, field):
            new = getattr(structures[1], rule[1], None)
            was = getattr(structures[0], rule[1], None) if structures[0] is not None else None
            if new is not None and not (old is None and was == new):
                setattr(cfg, field, int(new))
    _per_layer_lists(config, cfg, placed)
    return cfg


def _per_layer_lists(config, cfg, placed: list[Placed]) -> None:
    """Per-layer config lists (Qwen2's ``layer_types``: full or sliding attention) follow the
    layers: each child layer takes the entry of the parent layer its tensors derive from."""
    source: dict[int, int] = {}
    for p in placed:
        if p.layer is not None and p.parent_layer is not None:
            source.setdefault(p.layer, p.parent_layer)
    for field in ("layer_types",):
        old = getattr(config, field, None)
        if not isinstance(old, list) or len(source) == len(old) and all(source[i] == i for i in source):
            continue
        if any(j >= len(old) for j in source.values()):
            continue
        setattr(cfg, field, [old[source[i]] for i in sorted(source)])
