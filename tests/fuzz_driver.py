"""Driver of ``test_fuzz_cli``: seeded mutations of real models into ``inspect``, ``verify``, ``grow``.

Run as ``python fuzz_driver.py WORKDIR SEED COUNT``; prints one JSON line per command run and
``{"done": …}`` at the end. Runs in a child process with a capped address space (see the test), so
a mutation that would allocate without bound fails with ``MemoryError`` instead of hurting the
machine. A case that takes longer than ``CASE_SECONDS`` is reported as a hang.
"""

from __future__ import annotations

import copy
import json
import resource
import signal
import sys
import time
from pathlib import Path

import numpy as np
import onnx
from click.testing import CliRunner
from netmorph.cli.main import cli
from onnx import TensorProto

import netmorph

CASE_SECONDS = 60


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang()


def seeds(work: Path) -> list[Path]:
    """Real models: a PlainNet and a ResNet(0.5) built by netmorph, one with external data."""
    plain = work / "plain.onnx"
    netmorph.save(netmorph.build("plain", levels=2, blocks=2, channels=(4, 8), classes=3,
                                 input_shape=(3, 8, 8)), plain)
    resnet = work / "resnet.onnx"
    netmorph.save(netmorph.build("resnet", levels=2, blocks=1, channels=(8, 8), residual_ratio=0.5, classes=3,
                                 input_shape=(3, 8, 8)), resnet, external_data=True)
    return [plain, resnet]


def _pick(rng, seq):
    return seq[int(rng.integers(len(seq)))]


HUGE = [0, -1, -7, 1, 2, 3, 2**31 - 1, 2**40, 10**6, 2**63 - 1]


def mutate_proto(model: onnx.ModelProto, rng: np.random.Generator) -> str:
    """Change one protobuf field in place; return what was changed."""
    g = model.graph
    kind = _pick(rng, ["dims", "location", "attribute", "name", "input_dim", "opset", "op_type", "raw"])
    if kind == "dims" and len(g.initializer):
        t = _pick(rng, list(g.initializer))
        if len(t.dims):
            i = int(rng.integers(len(t.dims)))
            t.dims[i] = _pick(rng, HUGE)
            return f"dims {t.name}[{i}]={t.dims[i]}"
    if kind == "location" and len(g.initializer):
        t = _pick(rng, list(g.initializer))
        t.ClearField("raw_data")
        del t.external_data[:]
        t.data_location = TensorProto.EXTERNAL
        loc = _pick(rng, ["resnet.onnx.data", "/etc/passwd", "../x", "a\0b", "x" * 5000, "plain.onnx/x", ".",
                          "missing.bin", "resnet.onnx"])
        for k, v in (("location", loc), ("offset", _pick(rng, ["0", "64", "-5", "x", str(2**62)])),
                     ("length", _pick(rng, ["", "4", "432", str(3 << 30), "-1"]))):
            if v:
                e = t.external_data.add()
                e.key, e.value = k, v
        return f"location {t.name} -> {loc[:20]!r}"
    if kind == "attribute":
        nodes = [n for n in g.node if len(n.attribute)]
        if nodes:
            n = _pick(rng, nodes)
            a = _pick(rng, list(n.attribute))
            if a.type == onnx.AttributeProto.INTS and len(a.ints):
                a.ints[int(rng.integers(len(a.ints)))] = _pick(rng, HUGE)
            elif a.type == onnx.AttributeProto.INT:
                a.i = _pick(rng, HUGE)
            elif a.type == onnx.AttributeProto.FLOAT:
                a.f = _pick(rng, [float("nan"), float("inf"), -1.0, 0.0, 1e30])
            return f"attribute {n.name}.{a.name}"
    if kind == "name" and len(g.node):
        n = _pick(rng, list(g.node))
        if len(n.input):
            i = int(rng.integers(len(n.input)))
            n.input[i] = _pick(rng, ["", "nowhere", g.node[0].output[0], n.output[0], "x" * 300])
            return f"input {n.name}[{i}]"
    if kind == "input_dim" and len(g.input):
        shape = g.input[0].type.tensor_type.shape
        if len(shape.dim):
            d = shape.dim[int(rng.integers(len(shape.dim)))]
            d.dim_value = _pick(rng, [0, -1, 10**6, 2**40, 1, 7])
            return f"input dim {d.dim_value}"
    if kind == "opset":
        model.opset_import[0].version = _pick(rng, [99, 0, 1, 6, -3])
        return f"opset {model.opset_import[0].version}"
    if kind == "op_type" and len(g.node):
        n = _pick(rng, list(g.node))
        n.op_type = _pick(rng, ["Conv", "Relu", "NoSuchOp", "If", "Loop", "Add", ""])
        return f"op_type {n.name} -> {n.op_type}"
    if len(g.initializer):
        t = _pick(rng, list(g.initializer))
        t.raw_data = t.raw_data[: int(rng.integers(len(t.raw_data) + 1))] if t.raw_data else b"\0" * 5
        return f"raw_data {t.name}"
    return "none"


def mutate_bytes(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    b = bytearray(data)
    kind = _pick(rng, ["flip", "truncate", "insert", "splice"])
    if kind == "flip":
        for _ in range(int(rng.integers(1, 8))):
            b[int(rng.integers(len(b)))] ^= 1 << int(rng.integers(8))
    elif kind == "truncate":
        b = b[: int(rng.integers(len(b)))]
    elif kind == "insert":
        i = int(rng.integers(len(b)))
        b[i:i] = rng.integers(0, 256, int(rng.integers(1, 16)), dtype=np.uint8).tobytes()
    else:
        i, j = sorted(int(x) for x in rng.integers(len(b), size=2))
        b[i:j] = b[j:i:-1] if j > i else b""
    return bytes(b), f"bytes {kind}"


def main() -> None:
    work, seed, count = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    rng = np.random.default_rng(seed)
    models = seeds(work)
    protos = [onnx.load(m, load_external_data=False) for m in models]
    runner = CliRunner()
    signal.signal(signal.SIGALRM, _alarm)
    for case in range(count):
        k = int(rng.integers(len(models)))
        if rng.random() < 0.5:
            m = copy.deepcopy(protos[k])
            what = mutate_proto(m, rng)
            data = m.SerializeToString()
        else:
            data, what = mutate_bytes(models[k].read_bytes(), rng)
        mutant = work / f"mutant{case % 4}.onnx"
        mutant.write_bytes(data)
        out = work / "grown.onnx"
        for cmd in (["inspect", mutant], ["verify", models[k], mutant, "--batches", "1"],
                    ["grow", mutant, "--pass", "deepen", "-o", out]):
            t0 = time.perf_counter()
            signal.alarm(CASE_SECONDS)
            try:
                res = runner.invoke(cli, [str(c) for c in cmd])
                code = res.exit_code
                tb = ("Traceback" in res.output
                      or (res.exception is not None and not isinstance(res.exception, SystemExit)))
                hang = False
            except Hang:
                code, tb, hang = None, False, True
            finally:
                signal.alarm(0)
            output = "" if hang else res.output
            lines = [ln for ln in output.splitlines() if ln.startswith("netmorph: error:")]
            print(json.dumps({"case": case, "cmd": cmd[0], "what": what, "code": code, "traceback": tb,
                              "hang": hang, "seconds": time.perf_counter() - t0,
                              "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
                              "error": lines[0][:300] if lines else None,
                              "exception": repr(res.exception)[:300] if tb else None}), flush=True)
            out.unlink(missing_ok=True)
    print(json.dumps({"done": count}), flush=True)


if __name__ == "__main__":
    main()
