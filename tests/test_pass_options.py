"""Pass options declared once: the CLI flags, `netmorph passes`, TOML stages, the Python API and the size
checks all come from each pass's ``Option`` declarations; plans are made once and never kept on the pass."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hostile_util import MiB, invoke, run_cli
from netmorph.cli.grow_cmd import grow as grow_command
from netmorph.passes import PASSES, PassManager, get_pass
from transformer_models import exported, inputs

import netmorph
from netmorph import onnx_io
from netmorph.errors import NetmorphError, PreconditionError
from netmorph.limits import LimitError
from netmorph.pipeline.spec import PipelineError, Stage


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("options")
    plain = netmorph.save(netmorph.build("plain", blocks=2, bn_stats=True), d / "p7.onnx")  # 16/32/64 wide
    resnet = netmorph.save(netmorph.build("resnet", blocks=2, channels=(4, 8, 8), residual_ratio=0.5,
                                          bn_stats=True), d / "r14.onnx")
    return {"plain": plain, "resnet": resnet}


def one_line(res, code: int = 2) -> str:
    lines = res.output.strip().splitlines()
    assert res.exit_code == code and len(lines) == 1 and lines[0].startswith("netmorph: error: "), res.output
    return lines[0]


# -- one declaration, every surface --------------------------------------------------------------------
SIZES = ("cmid", "k1", "k2", "kernel", "from_kernel", "width", "factor", "heads", "layers", "max_iter")


def test_every_option_is_declared_with_type_help_and_sizes_bounded():
    for name, cls in PASSES.items():
        for o in cls.option_specs:
            assert o.type in (int, float, str) and o.help, (name, o.name)
            if o.name in SIZES:
                assert o.high is not None and o.low is not None, (name, o.name)


def test_grow_flags_are_the_declared_options():
    flags = {opt for p in grow_command.params for opt in p.opts}
    declared = {o.flag for cls in PASSES.values() for o in cls.option_specs}
    assert declared <= flags and "--from" in flags and "--approx-rtol" in flags
    assert not {f for f in flags - declared if f.startswith("--k")}  # nothing hand-declared beside them


def test_netmorph_passes_shows_the_declarations():
    res = invoke("passes")
    assert res.exit_code == 0
    text = res.output
    assert ("  --factor X: new width = ceil(factor x old), rounded to whole groups (default 2; > 1, <= 64)"
            in text)
    assert "  --kernel INT: the new kernel size (default: --from + 2) (1..31)" in text
    assert "  --value TEXT: the NCHW value to follow (required)" in text
    assert "  give at most one of --node / --level" in text
    rows = {r["name"]: r for r in json.loads(invoke("passes", "--json").output)}
    cmid = next(o for o in rows["conv-split"]["options"] if o["name"] == "cmid")
    assert (cmid["min"], cmid["max"], cmid["type"]) == (1, 65536, "int")
    assert rows["widen"]["one_of"] == [["node", "level"], ["factor", "width"]]


# -- refusals: one line, exit 2, nothing written ------------------------------------------------------
@pytest.mark.parametrize(("args", "msg"), [
    (["--pass", "widen", "--bogus", "1"], "--bogus is not an option of grow or of any pass"),
    (["--pass", "restore-bn", "--factor", "2"], "option --factor does not apply to pass(es) restore-bn"),
    (["--pass", "widen", "--noise", "nan"], "option noise must be finite"),
    (["--pass", "widen", "--noise", "inf"], "option noise must be finite"),
    (["--pass", "widen", "--noise", "-1"], "option noise must be >= 0"),
    (["--pass", "widen", "--factor", "1e6"], "option factor must be <= 64"),
    (["--pass", "widen", "--factor", "abc"], "option factor must be a number"),
    (["--pass", "widen", "--level", ""], "option level is empty"),
    (["--pass", "widen", "--node", "x", "--level", "1"], "give one of --node or --level, not both"),
    (["--pass", "widen", "--factor", "2", "--width", "80"], "give one of --factor or --width, not both"),
    (["--pass", "transformer-deepen", "--after", " "], "option after is empty"),
    (["--pass", "grow-kernel", "--from", "0"], "option from_kernel must be >= 1, got 0"),
    (["--pass", "grow-kernel", "--kernel", "33"], "option kernel must be <= 31"),
    (["--pass", "conv-split", "--cmid", "2.5"], "option cmid must be an integer"),
    (["--pass", "add-heads", "--heads", "1e5"], "option heads must be <= 4,096"),
    (["--pass", "widen-mlp", "--factor", "1e4"], "option factor must be <= 64"),
    (["--pass", "deepen-level"], "deepen-level: option level is required"),
    (["--pass", "deepen", "--layers", "1"], "option --layers applies to transformers only"),
])
def test_bad_options_are_one_line_exit_2(models, tmp_path, args, msg):
    out = tmp_path / "o.onnx"
    line = one_line(invoke("grow", models["plain"], *args, "-o", out))
    assert msg in line, line
    assert not out.exists()


def test_api_checks_the_same_declaration(models):
    """``get_pass``, the pass classes, ``PassManager`` and ``netmorph.torch.grow`` apply the CLI's limits."""
    from netmorph.passes import ConvSplit, Widen

    with pytest.raises(LimitError, match="option factor must be <= 64"):
        get_pass("widen", factor=1e6)
    with pytest.raises(LimitError, match="must be finite"):
        Widen(noise=float("nan"))
    with pytest.raises(PreconditionError, match="has no option 'bogus'"):
        ConvSplit(bogus=1)
    with pytest.raises(LimitError, match="kernel must be <= 31"):
        get_pass("grow-kernel", kernel=301)
    g = netmorph.load(models["plain"])
    with pytest.raises(LimitError, match="NETMORPH_MAX_GROWTH_BYTES"):
        PassManager().run(g, [get_pass("conv-split", cmid=65536)])


def test_torch_grow_checks_options_before_exporting():
    import torch

    from netmorph.torch import grow

    m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(),
                            torch.nn.Linear(4 * 8 * 8, 2))
    x = torch.randn(1, 3, 8, 8)
    with pytest.raises(LimitError, match="option factor must be <= 64"):
        grow(m, x, "widen", factor=1e6)
    with pytest.raises(PreconditionError, match="option 'cmid' does not apply to pass\\(es\\) widen"):
        grow(m, x, "widen", cmid=4)


def test_toml_stages_check_the_same_declaration(tmp_path):
    with pytest.raises(PipelineError, match="widen: widen: option factor must be <= 64"):
        Stage(1, grow="widen", options={"factor": 1e6})
    with pytest.raises(PipelineError, match="option noise must be finite"):
        Stage(1, grow="widen", options={"noise": float("nan")})
    for stage, msg in [('grow = "widen"\noptions = { factor = 1e6 }', "factor must be <= 64"),
                       ('grow = "grow-kernel"\noptions = { kernel = 301 }', "kernel must be <= 31"),
                       ('grow = "widen"\noptions = { noise = nan }', "noise must be finite"),
                       ('grow = "widen"\noptions = { level = "" }', "level is empty")]:
        path = tmp_path / "p.toml"
        path.write_text(f'name = "p"\ndata = "synthetic:32"\n[start]\nfamily = "plain"\nblocks = 1\n'
                        f'[[stages]]\nepochs = 1\n[[stages]]\nepochs = 1\n{stage}\n')
        for extra in (["--check"], ["--out-dir", tmp_path / "run", "--quiet"]):
            line = one_line(invoke("run", path, *extra))
            assert msg in line and "stages[2]" in line, line
        assert not (tmp_path / "run").exists()  # refused before stage 1 trained


# -- sizes: estimated from the plan, refused before allocating ------------------------------------------
@pytest.mark.parametrize(("args", "msg"), [
    (["--pass", "widen", "--factor", "64"], "widen: the child would hold about 1.1 GiB of parameters"),
    (["--pass", "widen", "--factor", "100"], "option factor must be <= 64"),
    (["--pass", "grow-kernel", "--kernel", "301"], "option kernel must be <= 31"),
    (["--pass", "conv-split", "--cmid", "65536"], "conv-split: the child would hold about 507.8 MiB"),
    (["--pass", "deepen", "--cmid", "65536"], "above the limit of 256.0 MiB added by one pass"),
])
def test_size_options_are_refused_before_allocating(models, tmp_path, args, msg):
    out = tmp_path / "o.onnx"
    r = run_cli("grow", models["plain"], *args, "-o", out, timeout=120, mem_limit=3 << 30)
    lines = r.stderr.strip().splitlines()
    assert r.code == 2 and len(lines) == 1 and msg in lines[0], r.stderr
    assert r.max_rss < 400 * MiB, f"{r.max_rss / MiB:.0f} MiB"
    assert not out.exists()


def test_transformer_size_options_are_refused_before_allocating(tmp_path):
    model = exported("encoder-pre", "torchscript")
    out = tmp_path / "o.onnx"
    r = run_cli("grow", model, "--pass", "widen-hidden", "--factor", "64", "-o", out, timeout=120,
                mem_limit=3 << 30)
    assert r.code == 2 and "widen-hidden: the child would hold about" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and r.max_rss < 500 * MiB and not out.exists()


def test_growth_limit_is_overridable(models, tmp_path):
    """``NETMORPH_MAX_GROWTH_BYTES`` replaces the default rule (here: lowered below a deepen)."""
    out = tmp_path / "o.onnx"
    res = invoke("grow", models["plain"], "--pass", "deepen", "-o", out,
                 env={"NETMORPH_MAX_GROWTH_BYTES": "1000"})
    assert "above the limit of 1000 bytes added by one pass" in one_line(res) and not out.exists()
    res = invoke("grow", models["plain"], "--pass", "deepen", "-o", out,
                 env={"NETMORPH_MAX_GROWTH_BYTES": "1e9"})
    assert res.exit_code == 0 and out.exists(), res.output


# -- one default target, no-ops that say so, one report flag --------------------------------------------
def test_level_defaults_to_all_for_every_pass_with_a_target(models, tmp_path):
    for name, model in [("conv-split", "plain"), ("grow-kernel", "plain"), ("widen", "plain"),
                        ("duplicate-block", "resnet")]:
        out = tmp_path / f"{name}.onnx"
        res = invoke("grow", models[model], "--pass", name, "-o", out)
        assert res.exit_code == 0 and out.exists(), (name, res.output)
        assert get_pass(name).options["level"] == "all"


def test_restore_bn_noop_keeps_a_chain_going_and_says_so(models, tmp_path):
    out, rep = tmp_path / "o.onnx", tmp_path / "o.json"
    res = invoke("grow", models["plain"], "--pass", "restore-bn", "--pass", "deepen", "-o", out,
                 "--json", rep)
    assert res.exit_code == 0, res.output
    assert ("note: step 1 (restore-bn): nothing to restore: every conv is already followed by a BatchNorm"
            in res.output)
    passes = json.loads(rep.read_text())["passes"]
    assert passes[0]["nodes_added"] == [] and passes[1]["depth_after"] == 10


def test_verify_takes_report_as_grow_does(models, tmp_path):
    for flag in ("--report", "--json"):
        path = tmp_path / f"v{flag[2:]}.json"
        res = invoke("verify", models["plain"], models["plain"], flag, path)
        assert res.exit_code == 0 and json.loads(path.read_text())["ok"], res.output


# -- deepen on a transformer forwards what applies, refuses what does not -------------------------------
def test_deepen_forwards_level_to_transformer_deepen_and_refuses_cnn_options():
    from netmorph.structure.transformer import recognise_transformer

    g = onnx_io.load(exported("encoder-pre", "torchscript"))
    layers = len(recognise_transformer(g).layers)
    feeds = [{"x": x} for x in inputs("encoder-pre", "torchscript", np.random.default_rng(0))]
    child, (rep,) = PassManager(record_depth=False, inputs=feeds).run(g, [get_pass("deepen", level="0")])
    assert len(recognise_transformer(child).layers) == layers + 1
    assert rep.details[0]["as_pass"] == "transformer-deepen(after=0)"
    child, _ = PassManager(record_depth=False, verify=False).run(g, [get_pass("deepen", layers=1)])
    assert len(recognise_transformer(child).layers) == layers + 1
    with pytest.raises(PreconditionError, match="--cmid, --solver does not apply to a transformer"):
        get_pass("deepen", cmid=8, solver="lsq").apply(g)


# -- plans: made once, kept by nobody -----------------------------------------------------------------
def test_transformer_is_recognised_once_to_plan(monkeypatch):
    import netmorph.structure.transformer as tr

    g = onnx_io.load(exported("encoder-pre", "torchscript"))
    calls = []
    real = tr.recognise_transformer

    def counted(graph):
        calls.append(graph)
        return real(graph)

    monkeypatch.setattr(tr, "recognise_transformer", counted)
    monkeypatch.setattr("netmorph.passes.transformer_surgery.recognise_transformer", counted)
    for name, want in (("deepen", 2), ("widen-mlp", 1), ("add-heads", 1)):  # the plan (+ deepen's ensures)
        calls.clear()
        get_pass(name).apply(g)
        assert len(calls) == want, (name, len(calls))


@pytest.mark.parametrize(("name", "model"), [("deepen", "plain"), ("deepen", "resnet"), ("widen", "plain"),
                                             ("grow-kernel", "plain"), ("conv-split", "plain")])
def test_a_pass_object_keeps_no_state(models, name, model):
    p = get_pass(name)
    before = dict(vars(p))
    g = netmorph.load(models[model])
    a, _ = p.apply(g)
    assert vars(p) == before
    other = netmorph.load(models["resnet" if model == "plain" else "plain"])
    try:
        p.apply(other)  # the same object on another graph
    except NetmorphError:
        pass
    b, _ = p.apply(g, seed=0)
    assert vars(p) == before
    assert [n.name for n in a.nodes] == [n.name for n in b.nodes]
    assert all(np.array_equal(x.const.array, b.value(x.name).const.array) for x in a.parameters)


def test_manager_checks_options_changed_after_the_pass_was_made(models):
    p = get_pass("widen")
    p.options["factor"] = 1e6
    with pytest.raises(LimitError, match="option factor must be <= 64"):
        PassManager().run(netmorph.load(models["plain"]), [p])
