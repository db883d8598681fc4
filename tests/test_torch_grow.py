"""``netmorph.torch.grow``: a hand-written torch CNN with BatchNorm grown inside a training loop.

Real parts throughout: the module is exported by torch (dynamo, or TorchScript), grown by the
PassManager (children verified in ONNX Runtime), lowered to torch, and stepped by real torch
optimizers. Bounds:

- child vs parent eval output: max |diff| / max |parent| <= 1e-5 (torch on both sides);
- identical gradients on parent and child: the shared parameters' new values and optimizer
  states are bit-identical (``torch.equal``) for SGD (momentum, Nesterov), Adam, AdamW;
- real backward on the same batch (eval mode): the shared parameters' updates agree to 1e-5
  relative (the child's forward differs from the parent's by float rounding; measured 2.7e-7
  for SGD-momentum, 5.4e-7 for Adam).
"""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import transformer_models as tm
from torch import nn

import netmorph
import netmorph.torch as nmt
from netmorph.torch import OptimizerStateError


class SmallCNN(nn.Module):
    """conv-BN-ReLU x3 (one level: a channel switch and two template blocks), mean, linear."""

    def __init__(self, width: int = 8, classes: int = 5):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                                  nn.ReLU())
        self.body = nn.Sequential(
            nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
        )
        self.fc = nn.Linear(width, classes)

    def forward(self, x):
        return self.fc(self.body(self.stem(x)).mean(dim=(2, 3)))


OPTIMIZERS = {
    "sgd-momentum": lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=1e-4),
    "sgd-nesterov": lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, nesterov=True),
    "adam": lambda ps: torch.optim.Adam(ps, lr=1e-3, weight_decay=1e-4),
    "adamw": lambda ps: torch.optim.AdamW(ps, lr=1e-3, amsgrad=True),
}
PASSES = {"deepen": {}, "conv-split": {"level": "all"}}


def _batch(seed: int = 0, n: int = 16):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 16, 16, generator=g), torch.randint(0, 5, (n,), generator=g)


def _trained(opt_name: str, steps: int = 3) -> tuple[nn.Module, torch.optim.Optimizer]:
    """A parent after a few real training steps (non-zero moments, BN statistics moved)."""
    torch.manual_seed(0)
    m = SmallCNN().train()
    opt = OPTIMIZERS[opt_name](m.parameters())
    for i in range(steps):
        x, y = _batch(100 + i)
        opt.zero_grad()
        F.cross_entropy(m(x), y).backward()
        opt.step()
    return m, opt


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


@pytest.fixture(scope="module")
def grown_adam():
    parent, opt = _trained("adam")
    return parent, opt, nmt.grow(parent, _batch()[0][:2], "deepen", optimizer=opt)


@pytest.mark.parametrize("pass_name", list(PASSES))
def test_child_eval_output_equals_parent(pass_name):
    parent, opt = _trained("sgd-momentum")
    x, _ = _batch(1)
    g = nmt.grow(parent, x[:2], pass_name, optimizer=opt, **PASSES[pass_name])
    assert g.module.training and parent.training  # the input's mode is carried
    assert g.report.passes[0].verification["ok"]  # verified in ONNX Runtime
    assert g.report.new and g.report.removed  # the split kernels are new, the old ones gone
    parent.eval()
    g.module.eval()
    with torch.no_grad():
        assert _rel(g.module(x), parent(x)) <= 1e-5
    assert sum(p.numel() for p in g.module.parameters()) > sum(p.numel() for p in parent.parameters())


def _shared(g) -> list[tuple[str, str]]:
    """(parent key, child key) pairs of parameters carried unchanged."""
    return [(parent, child) for child, (kind, parent) in g.report.origins.items()
            if kind == "same" and child in dict(g.module.named_parameters())]


def _state_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        (x is None and y is None) or torch.equal(x, y) for x, y in ((a[k], b[k]) for k in a)
    )


@pytest.mark.parametrize("opt_name", list(OPTIMIZERS))
def test_identical_gradients_give_bit_identical_updates(opt_name):
    parent, opt = _trained(opt_name)
    g = nmt.grow(parent, _batch()[0][:2], "deepen", optimizer=opt)
    assert len(_shared(g)) >= 8  # stem, BNs, the template convs' biases (moved to F2), head
    _check_identical_step(parent, opt, g)


def test_resnet_deepen_new_blocks_start_at_zero_state():
    """A lowered ResNet(0.5) (flatten head: the export keeps the batch symbolic) grown by deepen:
    the inserted blocks' parameters have no lineage record, so they count as new."""
    graph = netmorph.build("resnet", blocks=1, residual_ratio=0.5, channels=(4, 8, 8),
                           input_shape=(3, 16, 16), classes=5)
    parent = netmorph.lower(graph).train()
    opt = OPTIMIZERS["adam"](parent.parameters())
    x, y = _batch(9)
    for _ in range(2):
        opt.zero_grad()
        F.cross_entropy(parent(x), y).backward()
        opt.step()
    g = nmt.grow(parent, x[:2], "deepen", optimizer=opt, residual_ratio=0.5)
    assert g.report.source == "dynamo" and not g.report.removed
    assert any("dup" in k for k in g.report.new)
    parent.eval()
    g.module.eval()
    with torch.no_grad():
        assert _rel(g.module(x), parent(x)) <= 1e-5  # batch 16, exported at batch 2
    _check_identical_step(parent, opt, g)


def _check_identical_step(parent, opt, g) -> None:
    """Same gradients on shared parameters: bit-identical values and states after one step."""
    pp, cp = dict(parent.named_parameters()), dict(g.module.named_parameters())
    shared = _shared(g)
    new = [k for k in g.report.new if k in cp]
    assert new
    for k in new:  # new parameters start from zero state
        st = g.optimizer.state[cp[k]]
        assert st, k
        for name, v in st.items():
            assert v is None or not v.any(), (k, name)
    gen = torch.Generator().manual_seed(7)
    for p in pp.values():
        p.grad = torch.randn(p.shape, generator=gen)
    for pk, ck in shared:
        assert torch.equal(cp[ck].detach(), pp[pk].detach())
        cp[ck].grad = pp[pk].grad.clone()
        assert _state_equal(g.optimizer.state[cp[ck]], opt.state[pp[pk]]), pk
    for k in new:
        cp[k].grad = torch.randn(cp[k].shape, generator=gen)
    opt.step()
    g.optimizer.step()
    for pk, ck in shared:
        assert torch.equal(cp[ck].detach(), pp[pk].detach()), (pk, ck)
        assert _state_equal(g.optimizer.state[cp[ck]], opt.state[pp[pk]]), pk


@pytest.mark.parametrize("opt_name", ["sgd-momentum", "adam"])
def test_real_step_gives_parent_update(opt_name):
    """One step on the same batch (eval mode, BN on running statistics): same updates to 1e-5."""
    parent, opt = _trained(opt_name)
    x, y = _batch(3)
    g = nmt.grow(parent, x[:2], "conv-split", optimizer=opt, level="all")
    parent.eval()
    g.module.eval()
    # the step runs in float64 on both sides, so float32 rounding of a BLAS build cannot decide it:
    # what is compared is the growth (the split weights and the carried state), not the kernels
    for model, o in ((parent, opt), (g.module, g.optimizer)):
        model.double()
        for st in o.state.values():
            for k, v in st.items():
                if torch.is_tensor(v) and v.is_floating_point():
                    st[k] = v.double()
    x = x.double()
    pp, cp = dict(parent.named_parameters()), dict(g.module.named_parameters())
    before = {pk: pp[pk].detach().clone() for pk, _ in _shared(g)}
    for model, o in ((parent, opt), (g.module, g.optimizer)):
        o.zero_grad()
        F.cross_entropy(model(x), y).backward()
        o.step()
    worst = 0.0
    for pk, ck in _shared(g):
        worst = max(worst, _rel(cp[ck].detach() - before[pk], pp[pk].detach() - before[pk]))
    assert worst <= 1e-5, worst


def test_child_trains(grown_adam):
    _, _, g = grown_adam
    child = copy.deepcopy(g.module).train()
    opt = torch.optim.Adam(child.parameters(), lr=1e-2)
    opt.load_state_dict(g.optimizer.state_dict())  # the carried state, on the copy's parameters
    for group in opt.param_groups:
        group["lr"] = 1e-2
    x, y = _batch(4)
    losses = []
    for _ in range(15):
        opt.zero_grad()
        loss = F.cross_entropy(child(x), y)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.7 * losses[0], losses


def test_name_map_and_state_dict(grown_adam):
    parent, _, g = grown_adam
    g.module.load_state_dict(g.state_dict(), strict=True)
    ps, cs = parent.state_dict(), g.module.state_dict()
    assert g.report.source == "dynamo"
    assert g.report.name_map["fc.weight"] == ["fc.weight"]
    assert g.report.name_map["stem.0.weight"] == ["stem_0.weight"]
    assert "body.0.weight" in g.report.removed  # split into body_0_a / body_0_b
    assert g.report.name_map["body.0.bias"] == ["body_0_b.bias"]  # the bias moves to F2
    for parent_key, children in g.report.name_map.items():
        for ck in children:
            assert torch.equal(cs[ck].float(), ps[parent_key].float()), (parent_key, ck)
    # BN running statistics follow: the parent's trained statistics are in the child
    assert not torch.equal(ps["stem.1.running_mean"], torch.zeros(8))
    assert g.report.to_dict()["origins"]["stem_1.running_mean"] == ["same", "stem.1.running_mean"]


def test_checkpoint_roundtrip(grown_adam, tmp_path):
    _, _, g = grown_adam
    path = tmp_path / "grown.pt"
    g.save(path)
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == nmt.FORMAT
    back = nmt.load(path)
    assert type(back.optimizer) is torch.optim.Adam and back.module.training == g.module.training
    x, y = _batch(5)
    g.module.eval()
    back.module.eval()
    with torch.no_grad():
        assert torch.equal(back.module(x), g.module(x))
    a, b = g.optimizer.state_dict(), back.optimizer.state_dict()
    assert a["param_groups"] == b["param_groups"]
    for i, st in a["state"].items():
        assert _state_equal(st, b["state"][i])
    with pytest.raises(nmt.CheckpointError, match="not a netmorph.torch checkpoint"):
        torch.save({"format": "other"}, tmp_path / "x.pt")
        nmt.load(tmp_path / "x.pt")


def test_grow_twice_reuses_the_graph(grown_adam):
    parent, opt, g = grown_adam
    g2 = nmt.grow(g.module, None, "conv-split", optimizer=g.optimizer, level="all")
    assert g2.report.source == "lowered"  # no export: the graph the module came from
    cp1, cp2 = dict(g.module.named_parameters()), dict(g2.module.named_parameters())
    for ck, (kind, pk) in g2.report.origins.items():
        if kind == "same" and ck in cp2:
            assert _state_equal(g2.optimizer.state[cp2[ck]], g.optimizer.state[cp1[pk]])
    x, _ = _batch(6)
    for m in (g.module, g2.module):
        m.eval()
    with torch.no_grad():
        assert _rel(g2.module(x), g.module(x)) <= 1e-5


def test_torchscript_exporter_unties_merged_initializers():
    """Fresh BatchNorms have equal gammas; the TorchScript exporter stores them once."""
    torch.manual_seed(1)
    parent = SmallCNN()
    opt = OPTIMIZERS["sgd-momentum"](parent.parameters())
    x, y = _batch(8)
    opt.zero_grad()
    F.cross_entropy(parent(x), y).backward()
    opt.step()
    for bn in (parent.stem[1], parent.body[1], parent.body[4]):
        bn.weight.data.fill_(1.0)  # equal again: the exporter merges them
    g = nmt.grow(parent, x[:2], "deepen", optimizer=opt, exporter="torchscript")
    assert g.report.source == "torchscript"
    pp, cp = dict(parent.named_parameters()), dict(g.module.named_parameters())
    gammas = [g.report.name_map[f"{k}.weight"] for k in ("stem.1", "body.1", "body.4")]
    assert len({c[0] for c in gammas}) == 3  # one child tensor each
    for pk, ck in _shared(g):
        assert _state_equal(g.optimizer.state[cp[ck]], opt.state[pp[pk]]), pk


def test_param_groups_and_hyper_parameters_are_kept():
    torch.manual_seed(2)
    parent = SmallCNN()
    decay = [p for n, p in parent.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in parent.named_parameters() if p.ndim <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": 1e-4},
                           {"params": no_decay, "weight_decay": 0.0}], lr=0.2, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5)
    x, y = _batch(10)
    opt.zero_grad()
    F.cross_entropy(parent(x), y).backward()
    opt.step()
    scheduler.step()  # lr 0.2 -> 0.1
    g = nmt.grow(parent, x[:2], "deepen", optimizer=opt, param_group_of=lambda key, t: 0 if t.ndim > 1 else 1)
    groups = g.optimizer.param_groups
    assert [gr["weight_decay"] for gr in groups] == [1e-4, 0.0]
    assert all(gr["momentum"] == 0.9 and gr["lr"] == 0.1 and gr["initial_lr"] == 0.2 for gr in groups)
    scheduler.optimizer = g.optimizer  # the user's scheduler goes on with the new optimizer
    g.optimizer.zero_grad()
    F.cross_entropy(g.module(x), y).backward()
    g.optimizer.step()
    scheduler.step()
    assert [gr["lr"] for gr in groups] == [0.05, 0.05]
    assert all(p.ndim > 1 for p in groups[0]["params"]) and all(p.ndim <= 1 for p in groups[1]["params"])
    n_child = sum(1 for p in g.module.parameters() if p.requires_grad)
    assert sum(len(gr["params"]) for gr in groups) == n_child


def test_unknown_optimizer_refused_unless_reset():
    parent, _ = _trained("sgd-momentum", steps=0)
    opt = torch.optim.RMSprop(parent.parameters(), lr=1e-3)
    x = _batch()[0][:2]
    with pytest.raises(OptimizerStateError, match=r"RMSprop.*state='reset'"):
        nmt.grow(parent, x, "deepen", optimizer=opt)
    g = nmt.grow(parent, x, "deepen", optimizer=opt, state="reset")
    assert type(g.optimizer) is torch.optim.RMSprop and not g.optimizer.state
    assert g.optimizer.param_groups[0]["lr"] == 1e-3 and g.report.state == "reset"


@pytest.mark.slow
def test_example_grows_twice_in_a_plain_loop(tmp_path, capsys):
    """examples/grow_in_my_loop.py on a tiny npz of random images (the real data are not needed)."""
    rng = np.random.default_rng(0)
    path = tmp_path / "tiny.npz"
    np.savez(path, x_train=rng.integers(0, 256, (32, 32, 32, 3), dtype=np.uint8),
             y_train=rng.integers(0, 10, 32), x_test=rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8),
             y_test=rng.integers(0, 10, 20))
    spec = importlib.util.spec_from_file_location(
        "grow_in_my_loop", Path(__file__).parents[1] / "examples" / "grow_in_my_loop.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    example.main([str(path), "--images", "32", "--epochs", "3", "--batch", "16"])
    out = capsys.readouterr().out
    assert out.count("grown (") == 2 and "depth 5 -> 7" in out and "depth 7 -> 11" in out
    assert "grown (lowered)" in out  # the second growth reuses the first one's graph


@pytest.mark.parametrize("opt_name", ["sgd-momentum", "adam"])
def test_widen_gathers_and_divides_the_moments(opt_name):
    """widen (Net2Wider) of body.0's channel group: producer rows and BN statistics gathered, the
    consumer's columns divided; first moments follow like the weights, second moments by d²."""
    parent, opt = _trained(opt_name)
    x, y = _batch(11)
    g = nmt.grow(parent, x[:2], "widen", optimizer=opt, node="body.0")
    parent.eval()
    g.module.eval()
    with torch.no_grad():
        assert _rel(g.module(x), parent(x)) <= 1e-5
    lineage = g.report.passes[0].lineage
    prod, cons = lineage.origin("body.0.weight"), lineage.origin("body.3.weight")
    assert prod.kind == "gather" and cons.kind == "gather-divide" and cons.axis == 1
    assert g.report.origins["body_1.running_mean"] == ("gather", "body.1.running_mean")
    pp, cp = dict(parent.named_parameters()), dict(g.module.named_parameters())
    pairs = (("body.0.weight", "body_0.weight", prod), ("body.3.weight", "body_3.weight", cons))
    for key, ckey, rec in pairs:
        ps, cs = opt.state[pp[key]], g.optimizer.state[cp[ckey]]
        for entry, power in (("momentum_buffer", 1), ("exp_avg", 1), ("exp_avg_sq", 2)):
            if entry not in ps:
                continue
            want = np.take(ps[entry].numpy(), rec.index, axis=rec.axis)
            if rec.kind == "gather-divide":
                shape = [1] * want.ndim
                shape[rec.axis] = -1
                d = np.asarray(rec.divide).reshape(shape) ** power
                want = (want.astype(np.float64) / d).astype(np.float32)
            np.testing.assert_array_equal(cs[entry].numpy(), want, err_msg=f"{key} {entry}")
        if "step" in ps:
            assert torch.equal(cs["step"], ps["step"])
    assert cp["body_0.weight"].shape[0] == 2 * pp["body.0.weight"].shape[0]
    g.module.train()
    g.optimizer.zero_grad()
    F.cross_entropy(g.module(x), y).backward()
    g.optimizer.step()  # the mapped state has the child's shapes


def test_rtol_and_atol_override_the_contract():
    """``rtol`` / ``atol`` reach the PassManager: at 0 / 0 the widened child (the consumer's columns
    divided: rounding-level differences) fails its ONNX Runtime verification; a negative one is refused
    before any export. The same growth at the contract's bound passes (the test above)."""
    from netmorph.errors import VerificationError
    from netmorph.limits import LimitError

    parent, _ = _trained("sgd-momentum", steps=1)
    x = _batch(11)[0][:2]
    with pytest.raises(VerificationError, match=r"pass 1 \(widen\(.*child differs from its parent: .*atol 0"):
        nmt.grow(parent, x, "widen", node="body.0", rtol=0, atol=0)
    with pytest.raises(LimitError, match="atol must be >= 0, got -1"):
        nmt.grow(parent, x, "widen", node="body.0", atol=-1)


def test_a_module_no_exporter_can_take_is_one_clear_error():
    with pytest.raises(nmt.ExportError, match=r"dynamo: .*; torchscript: "):
        nmt.grow(SmallCNN(), torch.randn(2, 5, 16, 16), "deepen")  # 5 channels into a 3-channel conv


def test_small_transformer_grown_by_transformer_deepen():
    """A hand-written pre-LN GPT (tests/transformer_models.py) with AdamW: the exporter folds the
    Linear weights into transposed MatMul constants, which are found by value (no state lost)."""
    parent, ids = tm.build("gpt")
    parent.train()
    opt = torch.optim.AdamW(parent.parameters(), lr=1e-3)
    y = torch.randint(0, tm.VOCAB, ids.shape, generator=torch.Generator().manual_seed(0))
    for _ in range(2):
        opt.zero_grad()
        F.cross_entropy(parent(ids).flatten(0, 1), y.flatten()).backward()
        opt.step()
    g = nmt.grow(parent, ids, "transformer-deepen", optimizer=opt, exporter="torchscript")
    assert not g.report.unmapped and not g.report.removed
    qkv = g.report.name_map["blocks.0.qkv.weight"]
    assert g.report.origins[qkv[0]] == ("same", "blocks.0.qkv.weight")
    x = torch.randint(0, tm.VOCAB, (3, ids.shape[1]), generator=torch.Generator().manual_seed(1))
    parent.eval()
    g.module.eval()
    with torch.no_grad():
        assert _rel(g.module(x), parent(x)) <= 1e-5
    pp, cp = dict(parent.named_parameters()), dict(g.module.named_parameters())
    for pk, ck in _shared(g):
        ps, cs = opt.state[pp[pk]], g.optimizer.state[cp[ck]]
        assert torch.equal(cs["step"], ps["step"])
        for entry in ("exp_avg", "exp_avg_sq"):  # the module holds the transpose of the IR's MatMul weight
            assert torch.equal(cs[entry], ps[entry]), (pk, entry)
    assert len(_shared(g)) >= 20
