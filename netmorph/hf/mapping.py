"""A grown graph's parameters as a ``transformers`` state dict, by the family's rule table.

Each child parameter is traced to the parent parameter it derives from (the passes' lineage; a
fresh tensor, such as the zeroed output projection of an inserted layer, by the name it was given
after the one it replaces), whose ``state_dict`` key gives its role. Layer parameters are then
numbered again in the order the child's graph uses them: an inserted layer takes the next index,
the layers after it move up. A family whose ``layers`` expression has three groups (stage, layer,
role: torchvision's ``layer2.1.conv1.weight``) numbers the layers of each stage apart.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import NetmorphError, PreconditionError
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
    stage: str | None = None
    """The stage of a family whose layers are numbered per stage (torchvision ResNet's ``layer{s}``)."""

    @property
    def shape(self) -> tuple[int, ...]:
        """The tensor's shape in the checkpoint (the IR's, transposed where the module holds that)."""
        return self.slot.shape[::-1] if self.slot.transpose else self.slot.shape


def split_key(m: re.Match) -> tuple[str | None, int, str]:
    """``(stage, layer, role)`` of a key the family's ``layers`` expression matched: two groups
    (layer, role; stage ``None``) or three (stage, layer, role)."""
    g = m.groups()
    return (g[0] if len(g) == 3 else None), int(g[-2]), g[-1]


def role_of(layer_re: re.Pattern, key: str) -> str:
    """The role of ``key`` inside its layer, or the key itself outside the layers."""
    m = layer_re.match(key)
    return split_key(m)[2] if m else key


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
        stage, parent_layer, role = split_key(m)
        layered.append((first_use.get(v.name, -1), role, v.name, slot, parent_layer, stage))
    placed = list(outside.values())
    layer, roles, stage, left = -1, set(), None, set()
    for _pos, role, ir, slot, parent_layer, st in sorted(layered, key=lambda t: t[0]):
        if st != stage:  # a new stage numbers its layers from 0
            if st in left:
                raise PreconditionError(f"{what}: the layers of stage {st} are not consecutive in the grown "
                                        "graph; the child cannot be written as a checkpoint of this family")
            left.add(stage)
            layer, roles, stage = -1, set(), st
        if layer < 0 or role in roles:
            layer, roles = layer + 1, set()
        roles.add(role)
        key = family["layer_key"].format(i=layer, role=role, stage=st)
        placed.append(Placed(ir, key, slot, layer, parent_layer, st))
    return placed


def child_config(config, placed: list[Placed], family: dict, what: str, structures=(None, None),
                 parent_shapes: dict[str, tuple[int, ...]] | None = None):
    """A copy of ``config`` with the fields the family's rules read off the child's tensors and,
    for ``("structure", attr)`` rules, off ``structures`` (the parent's and the grown graph's
    transformer readings)."""
    cfg = config.__class__.from_dict(config.to_dict())
    old = {f: getattr(config, f) for f in family["config"] if hasattr(config, f)}
    changes = config_changes(old, placed, family, what, structures, parent_shapes,
                             f"{config.model_type} config")
    for field, value in changes.items():
        setattr(cfg, field, value)
    _per_layer_lists(config, cfg, placed)
    return cfg


def config_changes(old: dict[str, Any], placed: list[Placed], family: dict, what: str,
                   structures=(None, None), parent_shapes: dict[str, tuple[int, ...]] | None = None,
                   kind: str = "config") -> dict[str, Any]:
    """The value of every field of ``family["config"]`` its rule reads off the child (field -> value).

    ``old``: the parent's fields (a field absent from it takes no ``structure`` rule); ``kind``
    names what holds them in messages (``gpt2 config``, ``ResNet``). Rules
    (see :mod:`.families`): ``("layers",)``, ``("dim", role, axis)``, ``("structure", attr)``,
    and for families numbered per stage ``("stage_layers",)`` (the layers of each stage, a list
    in stage order) and ``("scale", role, axis)`` (the parent's value times the one factor by
    which that dimension grew in every layer: a ResNet's ``width_per_group``).
    """
    out: dict[str, Any] = {}
    layers = {p.layer for p in placed if p.layer is not None}
    layer_re = re.compile(family["layers"])
    for field, rule in family["config"].items():
        value = old.get(field)
        if rule[0] == "layers":
            out[field] = len(layers)
        elif rule[0] == "stage_layers":
            per: dict[str, set[int]] = {}
            for p in placed:
                if p.layer is not None:
                    per.setdefault(str(p.stage), set()).add(p.layer)
            out[field] = [len(per[s]) for s in sorted(per, key=lambda s: (len(s), s))]
        elif rule[0] == "dim":
            _, role, axis = rule
            dims = {p.shape[axis] for p in placed if p.layer is not None and role_of(layer_re, p.key) == role}
            if len(dims) > 1:
                raise PreconditionError(f"{what}: {role} has widths {sorted(dims)} across layers; one "
                                        f"{kind} cannot say that (grow every layer)")
            if not dims:
                continue
            new = dims.pop()
            was = {s[axis] for k, s in (parent_shapes or {}).items()
                   if (m := layer_re.match(k)) and split_key(m)[2] == role}
            if value is None and was == {new}:
                continue  # a derived field (GPT-2's n_inner = 4 n_embd) the growth left alone
            out[field] = new
        elif rule[0] == "scale":
            scaled = _scaled(value, placed, rule, layer_re, parent_shapes or {}, kind, what)
            if scaled is not None:
                out[field] = scaled
        elif rule[0] == "structure" and structures[1] is not None and field in old:
            new = getattr(structures[1], rule[1], None)
            was = getattr(structures[0], rule[1], None) if structures[0] is not None else None
            if new is not None and not (value is None and was == new):
                out[field] = int(new)
    return out


def _scaled(value, placed: list[Placed], rule, layer_re: re.Pattern, parent_shapes: dict, kind: str,
            what: str) -> int | None:
    """``value`` times the factor by which dimension ``axis`` of ``role`` grew, the same in every
    stage (each stage's layers one width, as one config says)."""
    _, role, axis = rule
    new: dict[str | None, set[int]] = {}
    for p in placed:
        if p.layer is not None and role_of(layer_re, p.key) == role:
            new.setdefault(p.stage, set()).add(p.shape[axis])
    was: dict[str | None, set[int]] = {}
    for k, s in parent_shapes.items():
        if (m := layer_re.match(k)) and split_key(m)[2] == role:
            was.setdefault(split_key(m)[0], set()).add(s[axis])
    factors = set()
    for st, dims in new.items():
        if len(dims) > 1 or len(was.get(st, ())) != 1:
            where = f" of stage {st}" if st is not None else ""
            widths = sorted(dims | was.get(st, set()))
            raise PreconditionError(f"{what}: {role} has widths {widths} across the layers{where}; one "
                                    f"{kind} cannot say that (grow every layer)")
        (d,), (w,) = dims, was[st]
        factors.add((d, w))
    if value is None or not factors:
        return None
    ratios = {d / w for d, w in factors}
    if len(ratios) > 1:
        raise PreconditionError(f"{what}: {role} grew by factors {sorted(ratios)} in different stages; one "
                                f"{kind} scales them all alike")
    scaled = value * ratios.pop()
    if scaled != int(scaled):
        raise PreconditionError(f"{what}: {role} grew to a width no integer value can give")
    return int(scaled)


def _per_layer_lists(config, cfg, placed: list[Placed]) -> None:
    """Per-layer config lists (Qwen2's ``layer_types``: full or sliding attention) follow the
    layers: each child layer takes the entry of the parent layer its tensors derive from."""
    source = {layer: parent for (_stage, layer), parent in parent_layer_keys(placed).items()}
    for field in ("layer_types",):
        old = getattr(config, field, None)
        if not isinstance(old, list) or len(source) == len(old) and all(source[i] == i for i in source):
            continue
        if any(j >= len(old) for j in source.values()):
            continue
        setattr(cfg, field, [old[source[i]] for i in sorted(source)])


def parent_layer_keys(placed: list[Placed]) -> dict[tuple[str | None, int], int]:
    """``(stage, child layer) -> parent layer`` it derives from (an inserted layer: the one it copies)."""
    source: dict[tuple[str | None, int], int] = {}
    for p in placed:
        if p.layer is not None and p.parent_layer is not None:
            source.setdefault((p.stage, p.layer), p.parent_layer)
    return source


def parent_key_of(key: str, placed: list[Placed], family: dict,
                  source: dict[tuple[str | None, int], int] | None = None) -> str:
    """The parent key a child key no grown tensor fills corresponds to: the same key outside the
    layers; inside, the same role in the parent layer the child layer derives from (or the same
    key when no tensor of that layer says which)."""
    m = re.match(family["layers"], key)
    if m is None:
        return key
    stage, layer, role = split_key(m)
    source = parent_layer_keys(placed) if source is None else source
    parent = source.get((stage, layer))
    return key if parent is None else family["layer_key"].format(i=parent, role=role, stage=stage)


def load_placed(child: Any, graph: Graph, placed: list[Placed], parent_sd: dict[str, Any],
                unmapped: list[str], family: dict, what: str, prefix: str = "") -> None:
    """Fill ``child`` (a module of the new config) with the placed tensors, ``strict=True``.

    A tensor the export dropped because it was zero (``unmapped``: a bias, a BN's
    ``num_batches_tracked`` before training; ``prefix`` stripped from those keys) stays zero in
    every layer of the child; a tensor the forward did not read is the parent's, a buffer inside
    a layer that of the parent layer it derives from; any other buffer the new config's own.
    A grown tensor the new config has no key for, or gives another shape, is a
    :class:`PreconditionError`: the growth is not a config change of the class.
    """
    import torch

    sd = child.state_dict()
    new: dict[str, Any] = {}
    for p in placed:
        if p.key not in sd:
            raise PreconditionError(f"{what}: the grown tensor {p.key!r} has no place in a "
                                    f"{type(child).__name__} of the new config")
        a = p.slot.from_ir(graph.value(p.ir).const.array, p.shape)
        if tuple(sd[p.key].shape) != tuple(a.shape):
            raise PreconditionError(f"{what}: the grown {p.key!r} is {tuple(a.shape)}, the new config gives "
                                    f"{tuple(sd[p.key].shape)}: this growth is not a config change of "
                                    f"{type(child).__name__}")
        new[p.key] = torch.from_numpy(np.array(a, dtype=np.float32, copy=True))
    layer_re = re.compile(family["layers"])
    zero_roles = set()
    for k in unmapped:
        k = k.removeprefix(prefix)
        if k in parent_sd and not torch.count_nonzero(parent_sd[k]):
            zero_roles.add(role_of(layer_re, k))
    params = dict(child.named_parameters())
    source = parent_layer_keys(placed)
    for k, t in sd.items():
        if k in new:
            continue
        m = layer_re.match(k)
        src = parent_key_of(k, placed, family, source) if m is not None else k
        if role_of(layer_re, k) in zero_roles:
            new[k] = torch.zeros_like(t)
        elif k in parent_sd and parent_sd[k].shape == t.shape and m is None:
            new[k] = parent_sd[k].detach().clone()  # a buffer or tensor the forward did not read
        elif m is not None and k not in params and src in parent_sd and parent_sd[src].shape == t.shape:
            new[k] = parent_sd[src].detach().clone()  # a layer's buffer (BN num_batches_tracked)
        elif not t.is_floating_point() or k not in params:
            new[k] = t  # a buffer of the new config (masks, rotary tables)
        else:
            raise PreconditionError(f"{what}: no grown tensor for {k!r}")
    child.load_state_dict(new, strict=True)


def reading(graph: Graph):
    """The transformer recognition of ``graph`` (head counts), or ``None`` where it reads none."""
    from ..structure.transformer import recognise_transformer

    try:
        return recognise_transformer(graph)
    except NetmorphError:
        return None
