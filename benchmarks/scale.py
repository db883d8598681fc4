"""``netmorph grow`` on real-size models: time, verification share, peak memory, distance from the floor.

Models are built from their configurations with random weights (no downloads) and exported once
with the dynamo exporter into ``--cache`` (export time is not part of any number). Per row:

- ``grow_s``: wall time of the ``netmorph grow`` subprocess (``--report`` gives ``verify_s``);
- ``peak_rss_gb``: the child process's maximum resident set (``resource.getrusage``);
- ``weights_gb``: bytes of weights of the larger of parent and child; ``rss_ratio`` = peak / that;
  ``rss_above_imports_ratio``: the same less the interpreter's own peak after the imports of a
  grow and before any model (``machine.imports_rss_gb``, measured once per run);
- ``floor_s``: the same job done bare, in its own process: ``onnx.load`` + ``onnx.save`` of
  the parent, one ONNX Runtime session and one run of the parent and of the child on the same
  inputs; ``grow_floor_ratio`` = ``grow_s / floor_s``;
- ``baseline_s``: a hand-written in-memory PyTorch morph of the same change (deep copies, zeroed
  output projections, duplicated MLP units), checked by a torch forward; ``None`` where no row-specific
  baseline is written (``add-heads``, ``widen-hidden``, ResNet ``widen``).

Prints one JSON object (and writes it to ``--out``). ``--models`` picks rows by model name,
``--passes`` keeps the rows whose pass arguments contain a text, ``--quick`` uses small stand-ins of
every family (seconds per row), ``--netmorph`` names the
``netmorph`` executable to measure (default: the one beside this interpreter).

    python benchmarks/scale.py --quick
    python benchmarks/scale.py --models resnet50,gpt2_small --out scale.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1] / "tests"

# name -> (family, config); quick stand-ins keep the family and shrink every size
MODELS = {
    "resnet50": ("resnet", {"arch": "resnet50", "image": 224}),
    "resnet152": ("resnet", {"arch": "resnet152", "image": 224}),
    "vit_b_16": ("vit", {"image": 224, "patch": 16, "layers": 12, "heads": 12, "hidden": 768, "mlp": 3072}),
    "bert_base": ("bert", {"layers": 12, "hidden": 768, "heads": 12, "inter": 3072, "pooled": False}),
    "bert_base_pooled": ("bert", {"layers": 12, "hidden": 768, "heads": 12, "inter": 3072, "pooled": True}),
    "gpt2_small": ("gpt2", {"layers": 12, "hidden": 768, "heads": 12}),
    "gpt2_medium": ("gpt2", {"layers": 24, "hidden": 1024, "heads": 16}),
    "gpt2_1b": ("gpt2", {"layers": 36, "hidden": 1536, "heads": 16}),
    # TinyLlama-1.1B's configuration (grouped-query attention: 32 query heads in 4 KV groups)
    "llama_1b": ("llama", {"layers": 22, "hidden": 2048, "heads": 32, "kv_heads": 4, "inter": 5632,
                           "vocab": 32000}),
}
QUICK = {
    "resnet50": ("resnet", {"arch": "resnet18", "image": 64}),
    "resnet152": ("resnet", {"arch": "resnet34", "image": 64}),
    "vit_b_16": ("vit", {"image": 64, "patch": 16, "layers": 4, "heads": 4, "hidden": 128, "mlp": 256}),
    "bert_base": ("bert", {"layers": 2, "hidden": 128, "heads": 4, "inter": 256, "pooled": False}),
    "bert_base_pooled": ("bert", {"layers": 2, "hidden": 128, "heads": 4, "inter": 256, "pooled": True}),
    "gpt2_small": ("gpt2", {"layers": 2, "hidden": 128, "heads": 4}),
    "gpt2_medium": ("gpt2", {"layers": 4, "hidden": 128, "heads": 4}),
    "gpt2_1b": ("gpt2", {"layers": 4, "hidden": 192, "heads": 4}),
    "llama_1b": ("llama", {"layers": 22, "hidden": 32, "heads": 4, "kv_heads": 2, "inter": 64, "vocab": 500}),
}
SEQ = 128
QUICK_SEQ = 16
SEQ_OF = {"gpt2_medium": 32, "llama_1b": 32}
"""Sequence length of the rows whose model is too large for 128 tokens on a shared 24 GB machine."""


def seq_of(name: str, quick: bool) -> int:
    return QUICK_SEQ if quick else SEQ_OF.get(name, SEQ)

LLAMA_AFTER = "3,7,11,15,19"
"""The layers the Llama rows insert an identity layer after (0-based)."""

# (model, pass arguments of `netmorph grow`, baseline name or None)
ROWS = [
    ("resnet50", ["--pass", "deepen"], "resnet_deepen"),
    ("resnet152", ["--pass", "widen", "--factor", "2"], None),
    ("vit_b_16", ["--pass", "add-heads", "--heads", "2"], None),
    ("vit_b_16", ["--pass", "widen-hidden", "--factor", "2"], None),
    ("bert_base", ["--pass", "widen-mlp", "--factor", "2"], "bert_widen_mlp"),
    ("bert_base_pooled", ["--pass", "deepen"], None),
    ("gpt2_small", ["--pass", "deepen"], "gpt2_deepen"),
    ("gpt2_small", ["--pass", "widen-hidden", "--factor", "2"], None),
    ("gpt2_small", ["--pass", "deepen", "--no-verify"], None),
    ("gpt2_medium", ["--pass", "deepen"], "gpt2_deepen"),
    ("gpt2_medium", ["--pass", "deepen", "--no-verify"], None),
    # LLaMA Pro's block expansion: an identity layer after every 4th (22 -> 27 layers)
    ("llama_1b", ["--pass", "deepen", "--level", LLAMA_AFTER], "llama_deepen"),
    ("llama_1b", ["--pass", "deepen", "--level", LLAMA_AFTER, "--no-verify"], None),
]
# rows only run when asked for by name (--models gpt2_1b): a ~1.1 B-parameter GPT-2-style model
EXTRA_ROWS = [("gpt2_1b", ["--pass", "deepen", "--layers", "4"], None)]


# -- model builders (run in a subprocess: `scale.py _export NAME PATH [--quick]`) ---------------
def _tokens(cfg) -> bool:
    return cfg[0] in ("bert", "gpt2", "llama")


def build(name: str, quick: bool):
    """The torch module (eval, random weights) and an example input of model ``name``."""
    import torch
    from torch import nn

    sys.path.insert(0, str(TESTS))
    import transformer_models as tm  # hides a torchvision that cannot load before transformers

    family, c = (QUICK if quick else MODELS)[name]
    torch.manual_seed(0)
    seq = seq_of(name, quick)
    if family == "resnet":
        from cnn_models import torchvision_models

        m = getattr(torchvision_models(), c["arch"])(weights=None)
        return m.eval(), torch.randn(2, 3, c["image"], c["image"])
    if family == "vit":
        m = tm.randomised(tm.vit(c["layers"], c["hidden"], c["heads"], c["mlp"], c["image"], c["patch"]))
        return m.eval(), torch.randn(2, 3, c["image"], c["image"])
    if family == "bert":
        from transformers import BertConfig, BertModel

        cfg = BertConfig(hidden_size=c["hidden"], num_hidden_layers=c["layers"],
                         num_attention_heads=c["heads"], intermediate_size=c["inter"],
                         hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                         attn_implementation="eager")

        class Bert(nn.Module):
            def __init__(self):
                super().__init__()
                self.model = BertModel(cfg, add_pooling_layer=c["pooled"])

            def forward(self, ids):
                out = self.model(input_ids=ids)
                return out.pooler_output if c["pooled"] else out.last_hidden_state

        return Bert().eval(), torch.randint(0, cfg.vocab_size, (2, seq))
    if family == "gpt2":
        from transformers import GPT2Config, GPT2LMHeadModel

        cfg = GPT2Config(n_embd=c["hidden"], n_layer=c["layers"], n_head=c["heads"], resid_pdrop=0.0,
                         embd_pdrop=0.0, attn_pdrop=0.0, use_cache=False, attn_implementation="eager")
        return tm.HFWrap(GPT2LMHeadModel(cfg)).eval(), torch.randint(0, cfg.vocab_size, (2, seq))
    if family == "llama":
        m = tm.llama_style("llama", layers=c["layers"], hidden=c["hidden"], heads=c["heads"],
                           kv_heads=c["kv_heads"], head_dim=c["hidden"] // c["heads"], mlp=c["inter"],
                           vocab=c["vocab"], tie=False, init=0.02)
        return m, torch.randint(0, c["vocab"], (2, seq))
    raise ValueError(family)


def export(name: str, path: Path, quick: bool) -> None:
    import torch

    sys.path.insert(0, str(TESTS))
    import transformer_models as tm

    model, x = build(name, quick)
    tokens = x.dtype == torch.int64
    axes = {0: torch.export.Dim("N", min=1, max=64)}
    if tokens:
        axes[1] = torch.export.Dim("T", min=2, max=512)
    arg = "ids" if tokens else "x"
    with torch.no_grad(), tm._no_fastpath():
        torch.onnx.export(model, (x,), str(path), dynamo=True, input_names=["x"], output_names=["y"],
                          opset_version=18, dynamic_shapes={arg: axes}, optimize=True)


# -- floor: bare onnx load/save + one ORT session and run of parent and child -------------------
def floor(parent: Path, child: Path, seq: int) -> float:
    import numpy as np
    import onnx
    import onnxruntime as ort

    t0 = time.perf_counter()
    m = onnx.load(str(parent))
    with tempfile.TemporaryDirectory(dir=parent.parent) as tmp:
        big = sum(t.ByteSize() for t in m.graph.initializer) > 1_800_000_000
        onnx.save(m, str(Path(tmp) / "copy.onnx"), save_as_external_data=big)
    del m
    feed = None
    for p in (parent, child):
        sess = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
        if feed is None:
            feed = {}
            for i in sess.get_inputs():
                dims = [d if isinstance(d, int) else (2 if k == 0 else seq)
                        for k, d in enumerate(i.shape)]
                feed[i.name] = (np.zeros(dims, np.int64) if "int64" in i.type
                                else np.random.default_rng(0).standard_normal(dims).astype(np.float32))
        sess.run(None, feed)
        del sess
    return time.perf_counter() - t0


# -- hand-written PyTorch baselines (in memory, checked by a forward) ----------------------------
def baseline(kind: str, name: str, quick: bool) -> float:
    import copy

    import torch

    model, x = build(name, quick)
    with torch.no_grad():
        ref = model(x)
        t0 = time.perf_counter()
        if kind == "resnet_deepen":  # a zero-gated copy after every bottleneck of every stage
            for stage in (model.layer1, model.layer2, model.layer3, model.layer4):
                blocks = list(stage)
                grown = []
                for b in blocks:
                    grown.append(b)
                    z = copy.deepcopy(blocks[-1])
                    last_bn = z.bn3 if hasattr(z, "bn3") else z.bn2
                    last_bn.weight.zero_()
                    last_bn.bias.zero_()
                    grown.append(z)
                stage._modules.clear()
                for i, b in enumerate(grown):
                    stage.add_module(str(i), b)
            # relu(0 + x) = x: every block reads the ReLU-ed output of the one before
        elif kind == "gpt2_deepen":  # a copy after every block, its two output projections zeroed
            layers = model.model.transformer.h
            new = []
            for blk in layers:
                z = copy.deepcopy(blk)
                for lin in (z.attn.c_proj, z.mlp.c_proj):
                    lin.weight.zero_()
                    lin.bias.zero_()
                new += [blk, z]
            model.model.transformer.h = torch.nn.ModuleList(new)
            model.model.config.n_layer = len(new)
        elif kind == "llama_deepen":  # LLaMA Pro's block expansion: o_proj and down_proj zeroed
            after = {int(i) for i in LLAMA_AFTER.split(",")}
            new = []
            for i, blk in enumerate(model.model.model.layers):
                new.append(blk)
                if i in after:
                    z = copy.deepcopy(blk)
                    for lin in (z.self_attn.o_proj, z.mlp.down_proj):
                        lin.weight.zero_()
                    new.append(z)
            for i, blk in enumerate(new):
                blk.self_attn.layer_idx = i
            model.model.model.layers = torch.nn.ModuleList(new)
            model.model.config.num_hidden_layers = len(new)
        elif kind == "bert_widen_mlp":
            for blk in model.model.encoder.layer:
                fc, out = blk.intermediate.dense, blk.output.dense
                fc.weight = torch.nn.Parameter(torch.cat([fc.weight, fc.weight]))
                fc.bias = torch.nn.Parameter(torch.cat([fc.bias, fc.bias]))
                out.weight = torch.nn.Parameter(torch.cat([out.weight, out.weight], 1) / 2)
                fc.out_features, out.in_features = fc.weight.shape[0], out.weight.shape[1]
        else:
            raise ValueError(kind)
        t = time.perf_counter() - t0
        got = model(x)
        err = float((got - ref).abs().max() / ref.abs().max())
        if err > 1e-4:
            raise AssertionError(f"baseline {kind} is not function-preserving (rel error {err:.2e})")
    return t


# -- driver --------------------------------------------------------------------------------------
def _child(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)


def _run_measured(cmd: list[str]) -> tuple[int, str, float, float]:
    """Run ``cmd`` under its own helper so that the peak RSS is the command's alone."""
    r = _child(["_measure", json.dumps(cmd)])
    if r.returncode != 0:
        raise RuntimeError(r.stderr[-2000:])
    d = json.loads(r.stdout)
    return d["rc"], d["stderr"], d["wall"], d["rss_gb"]


def _measure(cmd: list[str]) -> None:
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # KiB -> GiB
    print(json.dumps({"rc": p.returncode, "stderr": p.stderr[-3000:], "wall": wall, "rss_gb": rss}))


def _imports_gb(netmorph: str) -> float | None:
    """Peak RSS of the interpreter beside ``netmorph`` importing what ``netmorph grow`` imports
    (numpy, onnx, ONNX Runtime, the CLI and the passes), no model: the fixed part of every row."""
    python = Path(netmorph).parent / "python"
    code = "import numpy, onnx, onnxruntime, netmorph.cli.main, netmorph.passes"
    rc, _err, _wall, rss = _run_measured([str(python if python.exists() else sys.executable), "-c", code])
    return round(rss, 3) if rc == 0 else None


def _weights_bytes(path: Path) -> int:
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    total = 0
    for t in m.graph.initializer:
        n = 1
        for d in t.dims:
            n *= d
        total += n * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
    return total


def run_row(model: str, pass_args: list[str], base: str | None, args) -> dict:
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    tag = "quick-" if args.quick else ""
    parent = cache / f"{tag}{model}.onnx"
    row: dict = {"model": model, "pass": " ".join(a for a in pass_args if a != "--pass")}
    if not parent.exists():
        t0 = time.perf_counter()
        r = _child(["_export", model, str(parent)] + (["--quick"] if args.quick else []))
        if r.returncode != 0:
            row.update(result="not exported", reason=r.stderr.strip().splitlines()[-1][:300])
            return row
        row["export_s"] = round(time.perf_counter() - t0, 1)
    family = (QUICK if args.quick else MODELS)[model]
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        child = Path(tmp) / "child.onnx"
        report = Path(tmp) / "report.json"
        cmd = [args.netmorph, "grow", str(parent), *pass_args, "-o", str(child), "--report", str(report)]
        if args.cap_gb:  # the address-space cap the shared machine asks for on the largest rows
            cmd = ["prlimit", f"--as={int(args.cap_gb * 2**30)}", "--", *cmd]
            row["as_cap_gb"] = args.cap_gb
        if _tokens(family):
            cmd += ["--dim", f"T={seq_of(model, args.quick)}"]
            row["seq"] = seq_of(model, args.quick)
        rc, err, wall, rss = _run_measured(cmd)
        row.update(exit=rc, grow_s=round(wall, 2), peak_rss_gb=round(rss, 2),
                   load_avg_1min=round(os.getloadavg()[0], 1))
        pw = _weights_bytes(parent)
        row["parent_weights_gb"] = round(pw / 1e9, 3)
        if rc != 0:
            row["error"] = err.strip().splitlines()[-1][:300] if err.strip() else ""
            return row
        if report.exists():
            reps = json.loads(report.read_text())
            reps = reps if isinstance(reps, list) else reps.get("passes", [reps])
            row["verify_s"] = round(sum((r.get("timings") or {}).get("verify", 0.0) for r in reps), 2)
            phases: dict = {}
            for r in reps:
                for k, v in ((r.get("verification") or {}).get("seconds") or {}).items():
                    phases[k] = round(max(phases.get(k, 0.0), v) if "RSS" in k else phases.get(k, 0.0) + v, 2)
                for k, v in (r.get("timings") or {}).items():
                    phases[f"pass {k}"] = round(phases.get(f"pass {k}", 0.0) + v, 2)
            if phases:
                row["phases"] = phases
        cw = _weights_bytes(child)
        big = max(pw, cw)
        row.update(child_weights_gb=round(cw / 1e9, 3), rss_ratio=round(rss * 2**30 / big, 2))
        if args.imports_gb is not None:  # the peak less what the interpreter holds before any model
            row["rss_above_imports_ratio"] = round((rss - args.imports_gb) * 2**30 / big, 2)
        r = _child(["_floor", str(parent), str(child), str(seq_of(model, args.quick))])
        if r.returncode == 0:
            row["floor_s"] = round(float(r.stdout.strip()), 2)
            row["grow_floor_ratio"] = round(wall / row["floor_s"], 2)
        else:
            row["floor_error"] = r.stderr.strip().splitlines()[-1][:300]
    if base is not None:
        r = _child(["_baseline", base, model] + (["--quick"] if args.quick else []))
        row["baseline_s"] = round(float(r.stdout.strip()), 3) if r.returncode == 0 else None
        if r.returncode != 0:
            row["baseline_error"] = r.stderr.strip().splitlines()[-1][:300]
    return row


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1].startswith("_"):
        cmd, rest = sys.argv[1], sys.argv[2:]
        quick = "--quick" in rest
        rest = [a for a in rest if a != "--quick"]
        if cmd == "_export":
            export(rest[0], Path(rest[1]), quick)
        elif cmd == "_floor":
            print(floor(Path(rest[0]), Path(rest[1]), int(rest[2])))
        elif cmd == "_baseline":
            print(baseline(rest[0], rest[1], quick))
        elif cmd == "_measure":
            _measure(json.loads(rest[0]))
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", help="comma-separated model names (default: every row but gpt2_1b)")
    ap.add_argument("--passes", help="only rows whose pass arguments contain this text (e.g. no-verify)")
    ap.add_argument("--quick", action="store_true", help="small stand-ins of every model")
    ap.add_argument("--netmorph", default=str(Path(sys.executable).with_name("netmorph")),
                    help="the netmorph executable to measure")
    ap.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "netmorph-scale"),
                    help="folder for the exported parents (reused between runs)")
    ap.add_argument("--out", help="also write the JSON here")
    ap.add_argument("--cap-gb", type=float, help="run each grow under prlimit --as of this many GiB")
    args = ap.parse_args()
    pick = set(args.models.split(",")) if args.models else None
    rows = [r for r in ROWS + EXTRA_ROWS if (r[0] in pick if pick else r not in EXTRA_ROWS)
            and (not args.passes or args.passes in " ".join(r[1]))]
    out = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                       "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())},
           "quick": args.quick, "netmorph": args.netmorph, "rows": []}
    args.imports_gb = _imports_gb(args.netmorph)
    out["machine"]["imports_rss_gb"] = args.imports_gb
    for model, pass_args, base in rows:
        row = run_row(model, pass_args, base, args)
        print(json.dumps(row), file=sys.stderr, flush=True)
        out["rows"].append(row)
    text = json.dumps(out, indent=1)
    if args.out:
        Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
