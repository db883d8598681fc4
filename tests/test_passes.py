"""Passes and the PassManager on small graphs: identity passes, conv-split, refusals, reports."""

from __future__ import annotations

import numpy as np
import pytest
from netmorph.passes import Contract, PassManager, get_pass, list_passes
from test_passes_models import conv_graph, max_diff, run_ort

import netmorph
from netmorph.errors import PreconditionError, VerificationError


@pytest.fixture(scope="module")
def plain7():
    return netmorph.build("plain", blocks=2, channels=(8, 16, 16), bn_stats=True, seed=1)


# -- identity passes -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["insert-identity-bn", "insert-identity-prelu"])
@pytest.mark.parametrize("value", ["level1.block1.relu1", "level2.block2.bn1", "input"])
def test_identity_insertion_is_exact(plain7, name, value):
    child, rep = get_pass(name, value=value).apply(plain7)
    op = "BatchNormalization" if name.endswith("bn") else "PRelu"
    (added,) = rep.nodes_added
    node = child.node(added)
    assert node.op_type == op and node.inputs[0].name == value
    assert [n.name for n, _ in child.value(value).uses()] == [added]
    assert max_diff(plain7, child, (2, 3, 32, 32)) <= 1e-6
    if op == "PRelu":
        assert node.param(1).shape == (child.value(value).type.shape[1], 1, 1)
        assert np.all(node.param(1) == 1)
    else:
        var, eps = node.param(4), node.attr("epsilon")
        assert np.allclose(var + eps, 1.0) and np.all(node.param(1) == 1) and np.all(node.param(3) == 0)


def test_restore_bn_puts_bn_after_every_bare_conv():
    g = conv_graph(bias=True)
    child, rep = get_pass("restore-bn").apply(g)
    conv = child.node("conv")
    assert [n.op_type for n in conv.output.consumers()] == ["BatchNormalization"]
    assert max_diff(g, child, (2, 4, 9, 9)) <= 1e-6
    again, rep = get_pass("restore-bn").apply(child)  # a no-op, said in the report: chains go on
    assert len(again.nodes) == len(child.nodes) and not rep.nodes_added
    assert rep.details == [{"morph": "restore-bn",
                            "unchanged": "nothing to restore: every conv is already followed by a BatchNorm"}]


def test_restore_bn_on_a_model_without_convs_is_a_noop_that_says_so():
    g = netmorph.Graph("mlp")
    x = g.add_input("x", netmorph.TensorType.float32("N", 4))
    w = g.add_parameter("w", np.ones((4, 3), np.float32))
    mm = g.create_node("MatMul", [x, w], name="mm", output_names=["y"])
    g.insert_before(None, mm)
    g.outputs.append(mm.output)
    netmorph.ir.infer_types(g)
    child, rep = get_pass("restore-bn").apply(g)
    assert not rep.nodes_added and "the model has no Conv node" in rep.details[0]["unchanged"]


def test_pass_never_mutates_its_input(plain7):
    before = plain7.pretty()
    params = {v.name: v.const for v in plain7.parameters}
    get_pass("conv-split", node="level2.block2.conv1").apply(plain7)
    get_pass("deepen").apply(plain7)
    assert plain7.pretty() == before
    assert {v.name: v.const for v in plain7.parameters} == params


# -- conv-split on single convs ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "k,k1,k2,stride,bias",
    [(3, 3, 3, 1, False), (3, 3, 1, 1, False), (3, 1, 3, 1, True), (1, 1, 1, 1, False), (5, 1, 5, 1, False),
     (5, 5, 1, 1, True), (3, 3, 3, 2, False), (3, 3, 3, 2, True), (1, 1, 1, 2, True), (1, 3, 3, 1, False)],
)
def test_conv_split_exact_single_conv(k, k1, k2, stride, bias):
    g = conv_graph(cin=4, cout=6, k=k, stride=stride, bias=bias)
    child, rep = get_pass("conv-split", node="conv", k1=k1, k2=k2).apply(g)
    a, b = child.node("conv.a"), child.node("conv.b")
    assert a.param(1).shape == (6, 4, k1, k1) and b.param(1).shape == (6, 6, k2, k2)
    assert a.attr("strides") == [1, 1] and b.attr("strides") == [stride, stride]
    assert len(a.inputs) == 2 and (len(b.inputs) == 3) == bias  # the bias goes on F2
    chain = [n.op_type for n in child.nodes]
    assert chain == ["Conv", "PRelu", "Conv", "Relu"]  # no BN after the conv: none in the middle
    assert rep.solves[0].node == "conv" and rep.solves[0].method == "exact" and rep.solves[0].exact
    x = np.random.default_rng(1).normal(size=(2, 4, 9, 9)).astype(np.float32)
    (ya,), (yb,) = run_ort(g, {"x": x}), run_ort(child, {"x": x})
    assert ya.shape == yb.shape
    assert np.max(np.abs(ya - yb)) <= 1e-5 * max(1.0, float(np.max(np.abs(ya))))


def test_conv_split_5x5_into_3x3s():
    """5 -> 3+3 has no exact split for a generic kernel (one factor must be centre-tap, design §3):
    the exact solver refuses, naming the conv; optgd does it, and the report says the surgery proof
    was impossible instead of pretending."""
    g = conv_graph(k=5)
    with pytest.raises(PreconditionError, match="conv 'conv': exact split impossible"):
        get_pass("conv-split", node="conv").apply(g)
    p = get_pass("conv-split", node="conv", solver="lsq", max_iter=30)
    with pytest.raises(VerificationError, match="child differs from its parent: output 'y'"):
        PassManager().run(g, [p])  # a ~20% kernel residual breaks the default approximate bound
    child, (rep,) = PassManager(rtol=1e3, atol=1e3).run(g, [p])
    assert [child.node(n).param(1).shape[2:] for n in ("conv.a", "conv.b")] == [(3, 3), (3, 3)]
    assert rep.surgery_proof["ok"] is None and "exact split impossible" in rep.surgery_proof["skipped"]
    assert rep.verification["ok"] and 0.01 < rep.solves[0].residual < 0.5


def test_conv_split_cmid_and_mid_bn(plain7):
    child, rep = get_pass("conv-split", node="level2.block2.conv1", cmid=24).apply(plain7)
    names = [n.name for n in child.nodes]
    i = names.index("level2.block2.conv1.a")
    assert names[i:i + 4] == ["level2.block2.conv1.a", "level2.block2.conv1.bn_mid",
                              "level2.block2.conv1.prelu_mid", "level2.block2.conv1.b"]
    assert child.node("level2.block2.conv1.a").output.type.shape[1] == 24
    assert child.value("level2.block2.conv1.a.weight").const.shape == (24, 16, 3, 3)
    # the original BN / ReLU stay after F2, reading the same value name as before
    assert child.node("level2.block2.bn1").inputs[0].producer.name == "level2.block2.conv1.b"
    assert rep.params_after - rep.params_before == 24 * 16 * 9 + 16 * 24 * 9 - 16 * 16 * 9 + 24 * 5
    assert max_diff(plain7, child, (2, 3, 32, 32)) <= 1e-5


# -- refusals ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "graph_kw,pass_kw,msg",
    [
        ({}, {"node": "nope"}, "no node named 'nope'"),
        ({}, {"node": "relu"}, "is a Relu, not a Conv"),
        ({"cin": 4, "cout": 4, "group": 2}, {"node": "conv"}, r"grouped conv \(group=2\)"),
        ({"cin": 4, "cout": 4, "group": 4}, {"node": "conv"}, r"depthwise conv \(group=4\)"),
        ({}, {"node": "conv", "k1": 2}, "must be odd"),
        ({"k": 5}, {"node": "conv", "k1": 1, "k2": 3}, "does not fit"),
        ({}, {"node": "conv", "level": "all"}, "give one of --node or --level, not both"),
    ],
)
def test_conv_split_refuses_clearly(graph_kw, pass_kw, msg):
    g = conv_graph(**graph_kw)
    with pytest.raises(PreconditionError, match=msg) as e:
        get_pass("conv-split", **pass_kw).apply(g)
    assert "\n" not in str(e.value)


def test_level_out_of_range_and_bad_options(plain7):
    with pytest.raises(PreconditionError, match="level 9 is out of range"):
        get_pass("deepen-level", level=9).apply(plain7)
    with pytest.raises(PreconditionError, match="no option 'nodes'"):
        get_pass("conv-split", nodes="x")
    with pytest.raises(PreconditionError, match="not one of exact, optgd, lsq"):
        get_pass("conv-split", node="x", solver="magic")
    with pytest.raises(PreconditionError, match="no pass named"):
        get_pass("grow-wings")


def test_duplicate_block_refuses_a_possibly_negative_input():
    from netmorph.passes.base import PassContext
    from netmorph.passes.duplicate_block import insert_identity_block

    g = conv_graph()
    ctx = PassContext(get_pass("restore-bn"), 0, None)
    with pytest.raises(PreconditionError, match="comes from Conv 'conv', not a ReLU"):
        insert_identity_block(g, ctx, g.value("conv"), r=0.5, name="x")


# -- the manager -----------------------------------------------------------------------------------------
def test_manager_reports_and_contracts(plain7):
    seen = []
    pm = PassManager(progress=lambda *a: seen.append(a))
    child, reps = pm.run(plain7, [get_pass("conv-split", level=2), get_pass("insert-identity-bn",
                                                                             value="level3.block1.relu1")])
    r0, r1 = reps
    assert r0.contract == Contract.exact() and r0.depth_before == 7 and r0.depth_after == 8
    assert [s.node for s in r0.solves] == ["level2.block2.conv1"]
    assert r0.verification["ok"] and r0.verification["max_abs"] < 1e-5 and r0.surgery_proof is None
    assert r1.depth_after == 8 and r1.nodes_added == ["level3.block1.relu1.bn_id"]
    d = r0.to_dict()
    assert d["pass"] == "conv-split" and d["contract"]["kind"] == "exact" and d["max_residual"] < 1e-6
    assert {"solve", "surgery", "check", "verify"} <= set(d["timings"])
    assert seen[-1][:3] == ("conv-split", 1, 1)
    assert netmorph.verify(plain7, child, batches=1).ok


def test_manager_proves_an_approximate_split_and_reports_its_price(plain7):
    p = get_pass("conv-split", node="level2.block2.conv1", solver="optgd", max_iter=15)
    assert p.contract.kind == "approx" and p.exact_variant().options["solver"] == "exact"
    child, (rep,) = PassManager().run(plain7, [p])
    assert rep.surgery_proof["ok"] and rep.surgery_proof["max_abs"] < 1e-5
    (s,) = rep.solves
    assert s.method == "optgd" and not s.exact and 0 < s.residual < 1 and s.iterations > 0
    assert rep.verification["contract"] == "approx" and rep.verification["max_abs"] > 1e-5


def test_manager_catches_a_channel_mismatch(plain7, monkeypatch):
    """A pass that builds a wrongly shaped child is refused at once by the type check."""
    import netmorph.passes.conv_split as cs

    real = cs.conv_node

    def wrong_width(graph, x, weight, bias, *, name, strides=(1, 1), out_type=None):
        if name.endswith(".b"):
            weight = weight[:-1]  # one output channel short: the next BN reads 15 of 16
        return real(graph, x, weight, bias, name=name, strides=strides, out_type=out_type)

    monkeypatch.setattr(cs, "conv_node", wrong_width)
    with pytest.raises((VerificationError, netmorph.IRError)):
        PassManager().run(plain7, [get_pass("conv-split", node="level2.block2.conv1")])


def test_list_passes_has_contracts_and_options():
    rows = {r["name"]: r for r in list_passes()}
    assert {"conv-split", "insert-identity-bn", "insert-identity-prelu", "duplicate-block", "restore-bn",
            "deepen-level", "deepen"} <= set(rows)
    assert rows["insert-identity-bn"]["contract"].startswith("exact")
    assert "approx" in rows["conv-split"]["contract"]
    assert "solver" in [o["name"] for o in rows["deepen"]["options"]]
