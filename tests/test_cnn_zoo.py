"""deepen, widen --factor 2 and grow-kernel --kernel 5 on small exports of the CNNs people have.

Each child is verified by the PassManager and, again, by the test itself in ONNX Runtime (max
relative output error <= 1e-4 against the parent on a fresh batch), has the node and parameter
counts the parent's units predict, lowers to torch and takes one SGD step. Refusals must name
the node and the reason.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from cnn_models import ARCHS, export, randomised, torchvision_model
from netmorph.passes import PassManager, get_pass

import netmorph
from netmorph.morphs import map_state
from netmorph.structure import anatomy

SMALL = [(a, "ts") for a in ARCHS] + [
    ("preact_resnet", "ts-bn"), ("mobilenet_v2", "ts-bn"), ("regnet", "ts-bn"), ("gelu_silu_plain", "ts-bn"),
    ("convnext", "ts-bn"),
    ("bottleneck_resnet", "dynamo"), ("mobilenet_v3", "dynamo"), ("convnext", "dynamo"), ("vgg", "dynamo"),
]
REFUSED = {  # (arch, morph) -> words the refusal must contain (documented limits, docs/structure.md)
    ("convnext", "grow-kernel"): ["no 3x3 conv"],
}


@pytest.fixture(scope="session")
def zoo(tmp_path_factory):
    d = tmp_path_factory.mktemp("cnn_zoo")
    out = {}
    for arch, how in SMALL:
        torch.manual_seed(0)
        out[arch, how] = export(randomised(ARCHS[arch]()), d / f"{arch}-{how}.onnx", how)
    return out


def run(graph, x):
    s = ort.InferenceSession(netmorph.to_onnx(graph).SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, {s.get_inputs()[0].name: x})[0]


def max_rel(parent, child, size):
    x = np.random.default_rng(7).standard_normal((3, 3, size, size)).astype(np.float32)
    a, b = run(parent, x), run(child, x)
    assert np.max(np.abs(a)) > 1e-3  # a function worth comparing
    return float(np.max(np.abs(a - b)) / np.max(np.abs(a)))


def train_step(child, size):
    m = netmorph.lower(child).train()
    opt = torch.optim.SGD(m.parameters(), lr=0.01)
    before = {k: v.detach().clone() for k, v in m.named_parameters()}
    loss = torch.nn.functional.cross_entropy(m(torch.randn(4, 3, size, size)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    assert any(not torch.equal(before[k], v) for k, v in m.named_parameters())


def _params(nodes) -> int:
    """Weights the nodes read (directly, or through an Identity / Transpose of a parameter)."""
    seen = {}
    for n in nodes:
        for v in n.inputs:
            while v is not None and v.const is None and v.producer is not None \
                    and v.producer.op_type in ("Identity", "Transpose"):
                v = v.producer.inputs[0]
            if v is not None and v.const is not None:
                seen[id(v)] = int(np.prod(v.const.shape))
    return sum(seen.values())


def _weight_transposes(nodes) -> int:
    """Transposes of parameters the nodes read (a copy gets its own, with its own weight)."""
    return len({id(v) for n in nodes for v in n.inputs if v is not None and v.producer is not None
                and v.producer.op_type == "Transpose" and v.producer.inputs[0].const is not None})


def expected_deepen(g):
    """(nodes added, params added or None when a split's factors decide it) from the parent's units."""
    an = anatomy(g)
    has_bn = any(n.op_type == "BatchNormalization" for n in g.nodes)
    nodes, params, exact_params = 0, 0, True
    for st in an.stages:
        ids = [u for u in st.units
               if u.kind == "residual" and u.residual.shortcut_kind in ("identity", "scaled")]
        for i, u in enumerate(st.units):
            if u.kind == "residual" and (u in ids or ids):
                t = u if u in ids else ids[0]
                trail = 0
                for n in t.trailing:
                    if n.op_type not in ("Relu", "Clip"):
                        break
                    trail += 1
                nodes += len(t.residual.branch) + 1 + trail + _weight_transposes(t.residual.branch)
                params += _params(t.residual.branch)
            elif u.kind in ("residual", "concat", "region"):
                c = u.width
                m = max(c // 4, 1)
                nodes += 5 if has_bn else 4
                params += 9 * c * m + c * m + c + (4 * m if has_bn else 0)
            elif u.kind == "plain" and i > 0:
                bn_after = any(n.op_type == "BatchNormalization" for n in u.trailing[:1])
                nodes += 3 if bn_after else 2
                exact_params = False
    return nodes, params if exact_params else None


def check_child(parent, child, rep, morph, size):
    assert rep.verification["ok"], rep.verification
    assert max_rel(parent, child, size) <= 1e-4
    if morph == "deepen":
        want_nodes, want_params = expected_deepen(parent)
        assert len(child.nodes) - len(parent.nodes) == want_nodes
        if want_params is not None:
            assert rep.params_after - rep.params_before == want_params
        units = sum(u.kind == "residual" for u in anatomy(child).units)
        inserted = sum(d["morph"] in ("unit-copy", "fresh-unit") for d in rep.details)
        assert units == sum(u.kind == "residual" for u in anatomy(parent).units) + inserted
    elif morph == "widen":
        assert len(child.nodes) == len(parent.nodes) and rep.params_after > rep.params_before
        widened = [d for d in rep.details if "producers" in d]
        assert widened
        for d in widened:
            assert d["new"] == 2 * d["old"]
            for name in d["producers"]:
                n = child.node(name)
                w = n.param(1) if n.op_type == "Conv" else None
                if w is not None:  # its rows grew by the group's growth (or more: a Split's other pieces)
                    was = parent.node(name).param(1).shape[0]
                    grew = w.shape[0] >= was + d["new"] - d["old"]
                    assert grew and (was != d["old"] or w.shape[0] == d["new"]), (name, w.shape)
        for name, rec in rep.lineage.records.items():
            assert child.has_value(name), name
            if rec.kind in ("gather", "gather-divide"):  # the optimizer state can follow every weight
                shape = child.value(name).const.shape
                state = np.ones(parent.value(rec.parent).const.shape, np.float32)
                assert map_state(rec, state, shape, moment=2).shape == shape
    else:
        grown = [d["node"] for d in rep.details]
        assert grown
        want = sum(16 * int(np.prod(parent.node(c).param(1).shape[:2])) for c in grown)
        assert rep.params_after - rep.params_before == want
        assert all(child.node(c).param(1).shape[2:] == (5, 5) for c in grown)
    train_step(child, size)


MORPHS = {"deepen": {}, "widen": {"factor": 2.0}, "grow-kernel": {"kernel": 5, "level": "all"}}


@pytest.mark.parametrize("morph", list(MORPHS))
@pytest.mark.parametrize("arch,how", SMALL, ids=[f"{a}-{h}" for a, h in SMALL])
def test_morph_small_cnn(zoo, arch, how, morph):
    g = netmorph.load(zoo[arch, how])
    p = get_pass(morph, **MORPHS[morph])
    refusal = REFUSED.get((arch, morph))
    if refusal is not None:
        with pytest.raises(netmorph.errors.PreconditionError) as e:
            PassManager(batches=1, batch_size=2).run(g, [p])
        assert all(w in str(e.value) for w in refusal), str(e.value)
        return
    child, (rep,) = PassManager(batches=1, batch_size=2).run(g, [p])
    check_child(g, child, rep, morph, 32)


def test_morphs_compose(zoo):
    """--pass widen --pass deepen --pass grow-kernel on a MobileNetV3-style export, exact at each step."""
    g = netmorph.load(zoo["mobilenet_v3", "ts"])
    passes = [get_pass("widen"), get_pass("deepen"), get_pass("grow-kernel", level="all")]
    child, reps = PassManager(batches=1, batch_size=2).run(g, passes)
    assert [r.pass_name for r in reps] == ["widen", "deepen", "grow-kernel"]
    assert all(r.verification["ok"] for r in reps)
    assert max_rel(g, child, 32) <= 1e-4
    train_step(child, 32)


TV = ["resnet50", "mobilenet_v3_small", "googlenet", "squeezenet1_1", "shufflenet_v2_x0_5"]


@pytest.fixture(scope="session")
def tv_zoo(tmp_path_factory):
    d = tmp_path_factory.mktemp("tv_zoo")
    return {n: export(torchvision_model(n), d / f"{n}.onnx", "ts", size=64) for n in TV}


@pytest.mark.slow
@pytest.mark.parametrize("morph", ["deepen", "widen"])
@pytest.mark.parametrize("name", TV)
def test_morph_torchvision(tv_zoo, name, morph):
    g = netmorph.load(tv_zoo[name])
    child, (rep,) = PassManager(batches=1, batch_size=2).run(g, [get_pass(morph, **MORPHS[morph])])
    check_child(g, child, rep, morph, 64)


def test_widen_noise_is_approximate_with_the_surgery_proven(zoo):
    g = netmorph.load(zoo["vgg", "ts"])
    p = get_pass("widen", noise=0.01)
    assert not p.contract.is_exact and p.exact_variant().contract.is_exact
    child, (rep,) = PassManager(batches=1, batch_size=2).run(g, [p])
    assert rep.surgery_proof["ok"] and rep.surgery_proof["max_abs"] < 1e-5  # the same surgery, no noise
    err = max_rel(g, child, 32)
    assert 1e-6 < err < 0.5  # the noise moved the function, within the approximate bound
    assert rep.verification["contract"] == "approx"


def test_bottleneck_child_deepens_again(zoo):
    """The child of a generic deepen is read the same way: 4 -> 8 -> 16 residual units, exact."""
    g = netmorph.load(zoo["bottleneck_resnet", "ts"])
    child, reps = PassManager(batches=1, batch_size=2).run(g, [get_pass("deepen"), get_pass("deepen")])
    assert [sum(d["morph"] == "unit-copy" for d in r.details) for r in reps] == [4, 8]
    assert sum(u.kind == "residual" for u in anatomy(child).units) == 16
    assert max_rel(g, child, 32) <= 1e-4
