"""A grown torchvision ``ResNet`` or ``VisionTransformer`` as a model of its own class.

:func:`netmorph.torch.grow` grows the exported graph as for any module; when the parent is one of
the classes below (the class itself, not a subclass, built as its constructor builds it) and the
growth is a change of its constructor arguments, the child is a new instance of that class built
with the updated arguments, the grown tensors placed by the rule table (the machinery of
:mod:`netmorph.hf.mapping`: lineage gives each tensor its role, layers are numbered again in
graph order, per stage for a ResNet), loaded with ``strict=True``, and checked by its own torch
forward against the parent's. Anything else (a growth no argument expresses, a modified
instance) is a :class:`~netmorph.errors.PreconditionError` saying why; ``grow`` then returns
the lowered module as before and reports the reason.

| class | argument | read off the child |
|---|---|---|
| ``ResNet`` | ``layers`` | blocks per stage (``deepen``, ``mode="generic"``) |
| ``ResNet`` | ``width_per_group`` | the factor every bottleneck's ``conv1`` grew by |
| ``VisionTransformer`` | ``num_layers`` | layers (``deepen``) |
| ``VisionTransformer`` | ``mlp_dim`` | MLP width (``widen-mlp``) |
| ``VisionTransformer`` | ``hidden_dim`` | stream width (``widen-hidden``) |
| ``VisionTransformer`` | ``num_heads`` | the attention's head count (the transformer reading) |

torchvision is never imported here: a module is recognised by its class's module path, and
the child is built by calling that class.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import PreconditionError
from ..ir import Graph
from .agreement import RTOL, judge  # noqa: F401 - RTOL: the bound this module documents
from .export import Captured, TensorSlot
from .trace import Step


def _resnet_arguments(m: nn.Module) -> dict[str, Any]:
    stages = [m.layer1, m.layer2, m.layer3, m.layer4]
    dilate = [all(c.stride == (1, 1) for c in s[0].modules() if isinstance(c, nn.Conv2d)) for s in stages[1:]]
    return {"block": type(m.layer1[0]), "layers": [len(s) for s in stages], "num_classes": m.fc.out_features,
            "groups": m.groups, "width_per_group": m.base_width, "replace_stride_with_dilation": dilate,
            "norm_layer": m._norm_layer}


def _vit_arguments(m: nn.Module) -> dict[str, Any]:
    if not isinstance(m.conv_proj, nn.Conv2d):
        raise PreconditionError("a VisionTransformer with a convolutional stem (conv_stem_configs) is not "
                                "rebuilt: its stem's arguments are not kept on the model")
    return {"image_size": m.image_size, "patch_size": m.patch_size, "num_layers": len(m.encoder.layers),
            "num_heads": m.encoder.layers[0].self_attention.num_heads, "hidden_dim": m.hidden_dim,
            "mlp_dim": m.mlp_dim, "dropout": m.dropout, "attention_dropout": m.attention_dropout,
            "num_classes": m.num_classes, "representation_size": m.representation_size,
            "norm_layer": m.norm_layer}


def _vit_heads(args: dict[str, Any], grown) -> str | None:
    """Why the grown attention is no ``nn.MultiheadAttention`` of ``args`` (``None``: it is one)."""
    if grown is None or grown.heads is None or grown.head_size is None:
        return None
    if grown.heads * grown.head_size != args["hidden_dim"]:
        return (f"the grown attention has {grown.heads} heads of {grown.head_size} on a {args['hidden_dim']} "
                "wide stream, and nn.MultiheadAttention ties the head size to hidden_dim / num_heads")
    return None


CLASSES: dict[str, dict[str, Any]] = {
    "torchvision.models.resnet.ResNet": {
        "layers": r"^layer([1-4])\.(\d+)\.(.+)$",  # stage, block, role
        "layer_key": "layer{stage}.{i}.{role}",
        "config": {"layers": ("stage_layers",), "width_per_group": ("scale", "conv1.weight", 0)},
        "arguments": _resnet_arguments,
        "note": "a ResNet's arguments say the blocks per stage (deepen with mode='generic' inserts copies "
                "of a stage's blocks; the paper mode's identity blocks, with a PReLU, are no ResNet blocks) "
                "and a Bottleneck's inner width (width_per_group); its stem and stage widths are fixed "
                "(64 x 2^s channels)",
    },
    "torchvision.models.vision_transformer.VisionTransformer": {
        "layers": r"^encoder\.layers\.encoder_layer_(\d+)\.(.+)$",
        "layer_key": "encoder.layers.encoder_layer_{i}.{role}",
        "config": {"num_layers": ("layers",), "hidden_dim": ("dim", "ln_1.weight", 0),
                   "mlp_dim": ("dim", "mlp.0.weight", 0), "num_heads": ("structure", "heads")},
        "arguments": _vit_arguments,
        "check": _vit_heads,
        "note": "nn.MultiheadAttention ties the head size to hidden_dim / num_heads",
    },
}
"""Qualified class name -> its rules (``layers`` / ``layer_key`` / ``config`` as in
:mod:`netmorph.hf.families`; ``arguments``: the instance's constructor arguments; ``check``: why
the grown graph's transformer reading is no model of the new arguments; ``note``: what the
class's arguments can say, appended to a refusal)."""


def rules_of(module: nn.Module) -> dict[str, Any] | None:
    """The rules of ``module``'s class (exactly that class: a subclass's constructor is its own), or
    ``None``."""
    cls = type(module)
    return CLASSES.get(f"{cls.__module__}.{cls.__qualname__}")


@dataclass
class Rebuilt:
    """The child as a model of the parent's class, its tensors' ``slots`` and ``kept`` keys (see
    :func:`netmorph.torch.carry.carry_optimizer`) and the ``config`` arguments that changed."""

    module: nn.Module
    slots: dict[str, TensorSlot]
    kept: dict[str, str]
    config: dict[str, list]


def rebuild(module: nn.Module, rules: dict[str, Any], cap: Captured, steps: list[Step], graph: Graph,
            lowered: dict[str, TensorSlot], inputs: tuple, *, verify: bool, seed: int,
            rtol: float | None = None, atol: float | None = None) -> Rebuilt:
    """``graph`` (the growth of ``module``) as a model of ``type(module)``.

    ``lowered``: the slots of the lowered child (every tensor the grown graph holds must find a
    key of the class). Raises :class:`PreconditionError` when the growth is not a config change
    of the class, :class:`VerificationError` when the rebuilt model's forward differs from the
    parent's by more than :data:`RTOL` (``verify``; ``rtol`` / ``atol``: see :func:`check_forward`).
    """
    from ..hf.mapping import config_changes, load_placed, parent_key_of, place, reading
    from .carry import origins_of

    cls = type(module)
    what = cls.__name__
    if len(inputs) != 1 or not isinstance(inputs[0], torch.Tensor) or not inputs[0].is_floating_point():
        raise PreconditionError(f"{what}: the example input is not one batch of images")
    try:
        args = rules["arguments"](module)
    except (AttributeError, IndexError, TypeError) as e:  # an instance rebuilt by hand
        raise PreconditionError(f"{what}: its constructor arguments cannot be read ({_first(e)})") from None
    _check_as_built(module, cls, args, what)
    placed = place(graph, cap.slots, origins_of(steps, graph), rules, what)
    have = {p.ir for p in placed}
    extra = sorted(k for k, s in lowered.items() if s.ir not in have)
    if extra:
        raise PreconditionError(f"{what}: the grown graph holds {len(extra)} tensor(s) no key of {what} "
                                f"takes (first: {extra[0]!r}): the passes inserted layers of another kind "
                                f"({rules['note']})")
    structures = (reading(cap.graph), reading(graph)) if any(
        r[0] == "structure" for r in rules["config"].values()) else (None, None)
    shapes = {k: tuple(t.shape) for k, t in module.state_dict().items()}
    changes = config_changes(args, placed, rules, what, structures, shapes, what)
    new_args = {**args, **changes}
    why = rules.get("check", lambda a, s: None)(new_args, structures[1])
    if why:
        raise PreconditionError(f"{what}: this growth is not a config change of {what} ({why})")
    try:
        with torch.random.fork_rng(devices=[]):  # the constructor's initialisation: not the user's RNG
            child = cls(**new_args).eval()
    except Exception as e:  # noqa: BLE001 - constructors raise their own types (ValueError, AssertionError)
        raise PreconditionError(f"{what}: this growth is not a config change of {what} ({_first(e)}; "
                                f"{rules['note']})") from None
    try:
        load_placed(child, graph, placed, module.state_dict(), cap.unmapped, rules, what)
    except PreconditionError as e:
        raise PreconditionError(f"{e} ({rules['note']})") from None
    first = next(iter(module.parameters()), None)
    if first is not None and first.is_floating_point():
        child.to(device=first.device, dtype=first.dtype)
    if verify:
        check_forward(module, child, inputs[0], seed, what, rtol=rtol, atol=atol)
    child.train(module.training)
    slots = {p.key: p.slot for p in placed}
    kept = {k: parent_key_of(k, placed, rules) for k, q in child.named_parameters() if k not in slots}
    kept = {k: v for k, v in kept.items() if v in shapes}
    config = {k: [args[k], v] for k, v in changes.items() if v != args[k]}
    return Rebuilt(child, slots, kept, config)


def _check_as_built(module: nn.Module, cls: type, args: dict[str, Any], what: str) -> None:
    """Refuse an instance its constructor arguments do not describe (a replaced ``fc`` or ``maxpool``):
    its layout (``repr``) must be that of a fresh one (built on the meta device: no weights)."""
    try:
        with torch.device("meta"), torch.random.fork_rng(devices=[]):
            fresh = cls(**args)
    except Exception as e:  # noqa: BLE001
        raise PreconditionError(f"{what}: its constructor arguments, as read, build no {what} "
                                f"({_first(e)})") from None
    if repr(fresh) != repr(module):
        mine, theirs = repr(module).splitlines(), repr(fresh).splitlines()
        line = next((a.strip() for a, b in zip(mine, theirs, strict=False) if a != b), "")
        raise PreconditionError(f"{what}: the module is not the {what} its constructor arguments build (it "
                                f"was changed after construction: {line or 'another number of modules'})")


def check_forward(parent: nn.Module, child: nn.Module, x: torch.Tensor, seed: int, what: str, *,
                  rtol: float | None = None, atol: float | None = None) -> float:
    """The child's outputs against the parent's (eval mode) on ``x`` and on a random batch of one
    more image, judged by :func:`netmorph.torch.agreement.judge` (``atol + rtol * max|p|``;
    ``rtol``: :data:`RTOL`, ``atol``: 0 when ``None``); the worst ``max|c - p| / max|p|``."""
    g = torch.Generator().manual_seed(seed + 100)
    other = torch.randn((x.shape[0] + 1, *x.shape[1:]), generator=g).to(device=x.device, dtype=x.dtype)
    was = parent.training, child.training
    parent.eval()
    child.eval()
    try:
        with torch.no_grad(), _full_float32(x.is_cuda):
            return judge(((parent(b), child(b)) for b in (x, other)), rtol=rtol, atol=atol,
                         what=(f"{what}: the rebuilt {what}'s outputs", "outputs"))
    finally:
        parent.train(was[0])
        child.train(was[1])


@contextlib.contextmanager
def _full_float32(cuda: bool):
    """No TF32 meanwhile on CUDA (cuDNN convolutions use it by default: about 1e-3 relative,
    above :data:`RTOL`, between two models that compute the same function differently)."""
    if not cuda:
        yield
        return
    flags = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = flags


def _first(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return lines[-1] if lines else type(e).__name__
