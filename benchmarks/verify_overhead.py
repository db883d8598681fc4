"""What `verify_models` costs on top of the ONNX Runtime runs it needs, and against Polygraphy.

Two models, each compared with itself re-exported through netmorph's IR (``load`` -> ``save``):

* ``plainnet``: a CIFAR PlainNet (conv-BN-ReLU), float input;
* ``transformer``: a 12-layer BERT-style encoder exported from PyTorch (token / type / position
  embeddings, 4-head attention with a padding mask, GELU FFN, LayerNorm), dynamic batch and
  sequence; vocabulary 1000 rows, so the default inputs cover every row (coverage batches) and
  exercise the sequence at lengths 8 and 1.

For each: medians (seconds) of a full ``verify_models(a, b)`` call (load, range inference, input
generation, interface check, two ORT sessions, runs, comparison), of the same with
``tolerance="calibrated"`` (two more sessions and runs of ``a``), and of the bare ORT work on the
same inputs (two sessions, the same runs), and the ratios to the bare work. With ``polygraphy`` on PATH, also
the wall time of its two-command flow on the same pair
(``polygraphy run A --onnxrt --save-inputs I --save-outputs O`` then
``polygraphy run B --onnxrt --load-inputs I --load-outputs O``) and of ``netmorph verify A B``
as one command (both include Python start-up). Prints one JSON object per model.
``--quick`` for a smoke run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def plainnet(blocks: int, seed: int = 0) -> onnx.ModelProto:
    """CIFAR PlainNet: stem conv, 3 levels (16/32/64 ch) of ``blocks`` conv-BN-ReLU, GAP, FC."""
    rng = np.random.default_rng(seed)
    nodes, inits, cur, cin, k = [], [], "x", 3, 0

    def conv_bn_relu(cout: int, stride: int) -> None:
        nonlocal cur, cin, k
        w = (rng.standard_normal((cout, cin, 3, 3)) * np.sqrt(2 / (9 * cin))).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{k}"))
        bn = (np.ones(cout), np.zeros(cout), rng.normal(0, 0.1, cout), np.ones(cout))
        for n, v in zip("gbmv", bn, strict=True):
            inits.append(numpy_helper.from_array(v.astype(np.float32), f"{n}{k}"))
        nodes.append(helper.make_node("Conv", [cur, f"w{k}"], [f"c{k}"], pads=[1] * 4, strides=[stride] * 2))
        nodes.append(helper.make_node("BatchNormalization", [f"c{k}", f"g{k}", f"b{k}", f"m{k}", f"v{k}"],
                                      [f"n{k}"]))
        nodes.append(helper.make_node("Relu", [f"n{k}"], [f"r{k}"]))
        cur, cin, k = f"r{k}", cout, k + 1

    conv_bn_relu(16, 1)
    for level, ch in enumerate((16, 32, 64)):
        for i in range(blocks):
            conv_bn_relu(ch, 2 if (level and i == 0) else 1)
    inits.append(numpy_helper.from_array(rng.standard_normal((10, 64)).astype(np.float32) * 0.1, "fc"))
    nodes += [helper.make_node("GlobalAveragePool", [cur], ["p"]), helper.make_node("Flatten", ["p"], ["f"]),
              helper.make_node("Gemm", ["f", "fc"], ["logits"], transB=1)]
    g = helper.make_graph(nodes, "plainnet",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 32, 32])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def export_transformer(path: Path, layers: int = 12, vocab: int = 1000, d: int = 64, heads: int = 4) -> None:
    """A BERT-style encoder (``layers`` blocks) exported by the TorchScript exporter."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
            self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.ff = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

        def forward(self, x, bias):
            b, s, _ = x.shape
            q, k, v = self.qkv(x).view(b, s, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
            att = torch.softmax(q @ k.transpose(-1, -2) / (d // heads) ** 0.5 + bias, dim=-1)
            x = self.ln1(x + self.proj((att @ v).transpose(1, 2).reshape(b, s, d)))
            return self.ln2(x + self.ff(x))

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok, self.typ, self.pos = nn.Embedding(vocab, d), nn.Embedding(2, d), nn.Embedding(64, d)
            self.blocks = nn.ModuleList(Block() for _ in range(layers))

        def forward(self, input_ids, attention_mask, token_type_ids):
            pos = torch.arange(input_ids.shape[1]).unsqueeze(0)
            x = self.tok(input_ids) + self.typ(token_type_ids) + self.pos(pos)
            bias = (1.0 - attention_mask[:, None, None, :].float()) * -1e4
            for blk in self.blocks:
                x = blk(x, bias)
            return x

    torch.manual_seed(0)
    m = Encoder().eval()
    ids = torch.randint(0, vocab, (2, 8))
    names = ["input_ids", "attention_mask", "token_type_ids"]
    torch.onnx.export(m, (ids, torch.ones_like(ids), torch.zeros_like(ids)), str(path), dynamo=False,
                      input_names=names, output_names=["hidden"], opset_version=17,
                      dynamic_axes={n: {0: "batch", 1: "seq"} for n in [*names, "hidden"]})


def _wall(cmd: list[str]) -> tuple[float, int]:
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    return time.perf_counter() - t0, p.returncode


def measure(name: str, a: Path, b: Path, repeats: int, work: Path) -> dict:
    from netmorph.verification import make_inputs, verify_models
    from netmorph.verification.models import load_model
    from netmorph.verification.session import make_session

    feeds = make_inputs(a)
    outputs = [o.name for o in onnx.load(str(a), load_external_data=False).graph.output]

    def bare() -> None:
        sa = make_session(load_model(a, "a"), optimize=False)
        sb = make_session(load_model(b, "b"), optimize=False)
        for f in feeds:
            sa.run(outputs, f)
            sb.run(outputs, f)

    def full():
        r = verify_models(a, b)
        assert r.ok, r.failure_line()
        return r

    def calibrated():
        r = verify_models(a, b, tolerance="calibrated")
        assert r.ok, r.failure_line()
        return r

    report = full()  # warm-up (imports, allocator)
    cal = calibrated()
    t_full, t_bare, t_cal = [], [], []
    for _ in range(repeats):  # interleaved, so drift hits all alike
        for fn, ts in ((full, t_full), (bare, t_bare), (calibrated, t_cal)):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
    mf, mb, mc = statistics.median(t_full), statistics.median(t_bare), statistics.median(t_cal)
    elements = sum(int(v.size) for f in feeds for v in f.values())
    row = {
        "benchmark": "verify_overhead", "model": name,
        "parameters": sum(int(np.prod(t.dims)) for t in onnx.load(str(a)).graph.initializer),
        "batches": len(feeds), "coverage_batches": (report.plan or {}).get("coverage_batches"),
        "input_elements": elements, "repeats": repeats,
        "verify_median_s": round(mf, 4), "bare_ort_median_s": round(mb, 4),
        "overhead_ratio": round(mf / mb, 3),
        "verify_calibrated_median_s": round(mc, 4), "calibrated_ratio": round(mc / mb, 3),
        "max_noise_ratio": max((o.noise_ratio or 0.0) for o in cal.outputs),
    }
    poly = shutil.which("polygraphy")
    if poly:
        inp, out = work / f"{name}_in.json", work / f"{name}_out.json"
        t1, rc1 = _wall([poly, "run", str(a), "--onnxrt", "--save-inputs", str(inp),
                         "--save-outputs", str(out)])
        t2, rc2 = _wall([poly, "run", str(b), "--onnxrt", "--load-inputs", str(inp),
                         "--load-outputs", str(out)])
        exe = shutil.which("netmorph")
        cmd = [exe] if exe else [sys.executable, "-m", "netmorph.cli.main"]
        t3, rc3 = _wall([*cmd, "verify", str(a), str(b)])
        row |= {"polygraphy_two_commands_s": round(t1 + t2, 3), "polygraphy_exit_codes": [rc1, rc2],
                "netmorph_verify_command_s": round(t3, 3), "netmorph_verify_exit_code": rc3}
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="small models, few repeats")
    ap.add_argument("--blocks", type=int, default=9, help="conv blocks per level (PlainNet depth 3n+1+1)")
    ap.add_argument("--layers", type=int, default=12, help="transformer layers")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--model", choices=["plainnet", "transformer", "all"], default="all")
    args = ap.parse_args()
    blocks, layers, repeats = (2, 2, 2) if args.quick else (args.blocks, args.layers, args.repeats)

    import netmorph

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        pairs = []
        if args.model in ("plainnet", "all"):
            onnx.save(plainnet(blocks), work / "plain.onnx")
            pairs.append(("plainnet", work / "plain.onnx"))
        if args.model in ("transformer", "all"):
            export_transformer(work / "tf.onnx", layers=layers)
            pairs.append((f"transformer{layers}", work / "tf.onnx"))
        for name, a in pairs:
            b = netmorph.save(netmorph.load(a), work / f"{a.stem}_rt.onnx")
            print(json.dumps(measure(name, a, b, repeats, work)), flush=True)


if __name__ == "__main__":
    main()
