"""Benchmark: how the CLI handles hostile inputs: exit code, one-line error, peak memory, time.

Prints one JSON object: per case the exit code, whether stderr holds a traceback, the first
``netmorph: error:`` line, the child's own peak RSS (MiB), wall seconds and a case-specific check
(e.g. whether a symlink target survived). Every child runs with its address space capped at
``--cap-gb`` (default 3) and a ``--timeout`` (default 40 s), so a checkout that blows up fails the
case instead of hurting the machine.

``--pythonpath DIR`` runs the cases against another checkout (a folder holding ``netmorph``,
``netmorph/cli`` and ``netmorph/passes`` importable), e.g. a ``git archive`` of ``main`` with
``cli/`` and ``passes/`` linked into its ``netmorph/``: that is how the before/after table in the
issue report was made.

Usage: ``python benchmarks/hostile_inputs.py [--pythonpath DIR] [--cap-gb 3] [--timeout 40]
[--second-review-only]``
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from hostile_util import run_child  # noqa: E402  (the tests' launcher measures a child's own peak RSS)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pythonpath", default=None)
    ap.add_argument("--cap-gb", type=float, default=3.0)
    ap.add_argument("--timeout", type=float, default=40.0)
    ap.add_argument("--second-review-only", action="store_true",
                    help="Run only the second review's cases (F1 ... F15 and the low ones).")
    args = ap.parse_args()
    env = {"PYTHONPATH": args.pythonpath} if args.pythonpath else {}
    cap = int(args.cap_gb * (1 << 30))
    import numpy as np
    import onnx
    from onnx import TensorProto

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)

        def cli(name, *argv, cwd=work, check=None):
            if args.second_review_only and name[0].isdigit():
                return
            t0 = time.perf_counter()
            r = run_child([sys.executable, "-m", "netmorph.cli.main", *map(str, argv)], env=env,
                          timeout=args.timeout, cwd=cwd, mem_limit=cap)
            errors = [ln for ln in r.stderr.splitlines() if ln.startswith("netmorph: error:")]
            results[name] = {
                "code": r.code, "timed_out": r.timed_out, "traceback": "Traceback" in r.stderr,
                "error": errors[0][:160] if errors else None, "peak_rss_mib": round(r.max_rss / (1 << 20)),
                "stderr_lines": len([ln for ln in r.stderr.splitlines() if ln.strip()]),
                "seconds": round(time.perf_counter() - t0, 2),
                **({"check": check()} if check else {}),
            }

        # a small real model, and copies with hostile external data
        small = work / "small.onnx"
        subprocess.run([sys.executable, "-m", "netmorph.cli.main", "new", "plain", "-n", "2", "--channels",
                        "4,4,4", "--classes", "10", "--input", "3x16x16", "-o", small], check=True, env={
                            **os.environ, **env}, capture_output=True)

        def external(folder: Path, length: str | None, size: str) -> Path:
            folder.mkdir()
            m = onnx.load(small)
            t = m.graph.initializer[0]
            raw = t.raw_data
            t.ClearField("raw_data")
            t.data_location = TensorProto.EXTERNAL
            for k, v in (("location", "w.bin"), ("length", length)):
                if v is not None:
                    e = t.external_data.add()
                    e.key, e.value = k, v
            (folder / "model.onnx").write_bytes(m.SerializeToString())
            (folder / "w.bin").write_bytes(raw)
            subprocess.run(["truncate", "-s", size, str(folder / "w.bin")], check=True)
            return folder / "model.onnx"

        lying = external(work / "lying", str(3 << 30), "3G")
        cli("1 sparse 3GiB side file, lying length: inspect", "inspect", lying)
        cli("1 sparse 3GiB side file, lying length: verify", "verify", small, lying)
        cli("1 sparse 20GiB side file, no length: inspect", "inspect", external(work / "nolen", None, "20G"))
        huge = work / "huge.onnx"
        subprocess.run(["truncate", "-s", "20G", str(huge)], check=True)
        cli("1 sparse 20GiB model.onnx: inspect", "inspect", huge)

        link = work / "out-link.onnx"
        link.symlink_to("/proc/self/fd/1")
        cli("2 -o symlink to /proc/self/fd/1", "new", "plain", "-n", "2", "-o", link,
            check=lambda: "symlink kept" if link.is_symlink() else "replaced by a regular file")
        fifo = work / "fifo.json"
        os.mkfifo(fifo)
        cli("2 --json on a FIFO", "verify", small, small, "--json", fifo,
            check=lambda: "FIFO kept" if stat.S_ISFIFO(os.lstat(fifo).st_mode) else "replaced")
        private = work / "private.onnx"
        private.write_bytes(b"x")
        private.chmod(0o600)
        cli("2 -o existing mode-600 file", "new", "plain", "-n", "2", "-o", private,
            check=lambda: f"mode {stat.S_IMODE(os.stat(private).st_mode):o}")
        hard = work / "hard.onnx"
        hard.write_bytes(b"users")
        os.link(hard, work / "hard-other-name")
        cli("2 -o hard-linked file", "new", "plain", "-n", "2", "-o", hard,
            check=lambda: f"links {os.stat(hard).st_nlink}, other name holds "
                          f"{(work / 'hard-other-name').read_bytes()[:5]!r}")

        # data bombs
        data = work / "data"
        data.mkdir()
        np.savez(data / "tiny.npz", x_train=np.zeros((32, 16, 16, 3), np.uint8), y_train=np.arange(32) % 10,
                 x_test=np.zeros((16, 16, 16, 3), np.uint8), y_test=np.arange(16) % 10)

        def cifar(name: str, first: bytes) -> Path:
            folder = data / name / "cifar-10-batches-py"
            folder.mkdir(parents=True)
            ok = pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}, protocol=2)
            for i, f in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
                (folder / f).write_bytes(first if i == 0 else ok)
            return folder.parent

        row = [0] * 3072
        memo = pickle.dumps({b"data": [row] * 300_000, b"labels": [0] * 300_000}, protocol=2)
        tiny = (b"\x80\x02}(U\x04datacnumpy\nndarray\nJ@B\x0f\x00M\x00\x0c\x86cnumpy\ndtype\nU\x02u1\x85R"
                b"\x86RU\x06labels]u.")
        model32 = work / "m32.onnx"
        subprocess.run([sys.executable, "-m", "netmorph.cli.main", "new", "plain", "-n", "2", "--channels",
                        "4,4,4", "-o", model32], check=True, env={**os.environ, **env}, capture_output=True)
        train = ("train", model32, "--epochs", "1", "--device", "cpu", "-q")
        cli(f"7 CIFAR pickle, list repeated through the memo ({len(memo) // 1024} KB)", *train, "--data",
            f"cifar10:{cifar('memo', memo)}", "-o", work / "t1.onnx")
        cli(f"7 CIFAR pickle ndarray((10**6, 3072)) ({len(tiny)} bytes)", *train, "--data",
            f"cifar10:{cifar('tiny', tiny)}", "-o", work / "t2.onnx")

        # infinite hyper-parameters, overwriting runs, absurd sizes
        m16 = work / "m16.onnx"
        subprocess.run([sys.executable, "-m", "netmorph.cli.main", "new", "plain", "-n", "2", "--channels",
                        "4,4,4", "--input", "3x16x16", "-o", m16], check=True, env={**os.environ, **env},
                       capture_output=True)
        t16 = ("train", m16, "--data", f"npz:{data / 'tiny.npz'}", "--epochs", "1", "--batch-size", "16",
               "--device", "cpu", "-q")
        cli("8 train --lr inf", *t16, "--lr", "inf", "-o", work / "inf.onnx")
        cli("8 train --lr 1e30 (diverges)", *t16, "--lr", "1e30", "-o", work / "div.onnx")
        cli("9 train once", *t16, "-o", work / "run.onnx")
        cli("9 train again without --resume", *t16, "-o", work / "run.onnx")
        cli("11 new --levels 1000000000000", "new", "plain", "-n", "2", "--levels", "1000000000000", "-o",
            work / "l.onnx")
        cli("11 iterate --schedule deepen:1000000000", "iterate", "plain:2", "--schedule",
            "deepen:1000000000", "--epochs-per-stage", "1", "--data", "synthetic:32", "--out-dir",
            work / "it")
        escape = work / "escape"
        (escape / "a" / "b").mkdir(parents=True)
        (escape / "a" / "b" / "p.toml").write_text(
            f'name = "../.."\ndata = "npz:{data / "tiny.npz"}"\n[start]\nfamily = "plain"\nblocks = 2\n'
            'channels = [4, 4, 4]\ninput_shape = [3, 16, 16]\n[train]\nbatch_size = 16\ndevice = "cpu"\n'
            '[[stages]]\nepochs = 1\n')
        cli('3 run with name = "../.." (no --out-dir)', "run", "p.toml", "--quiet", cwd=escape / "a" / "b",
            check=lambda: "wrote outside runs/" if (escape / "a" / "pipeline.toml").exists()
            or (escape / "a" / "b" / "pipeline.toml").exists() or (escape / "pipeline.toml").exists()
            else "nothing outside")
        foreign = work / "foreign"
        foreign.mkdir()
        (foreign / "pipeline.toml").write_text("someone else's file\n")
        (foreign / "notes.txt").write_text("mine\n")
        (escape / "a" / "b" / "q.toml").write_text(
            (escape / "a" / "b" / "p.toml").read_text().replace('"../.."', '"q"'))
        cli("4 run into a foreign non-empty --out-dir", "run", escape / "a" / "b" / "q.toml", "--out-dir",
            foreign, "--quiet", check=lambda: "foreign pipeline.toml kept"
            if (foreign / "pipeline.toml").read_text() == "someone else's file\n" else "overwritten")
        round_two(work, cli, results, small, data / "tiny.npz", env, args.timeout)
    print(json.dumps({"pythonpath": args.pythonpath, "cap_gb": args.cap_gb, "cases": results}, indent=1))


CRAFTED_CHECKPOINTS = r"""
import copy, sys, torch, netmorph, netmorph.torch as nmt
g = netmorph.build("plain", blocks=2, channels=(4, 4, 4), classes=3, input_shape=(3, 8, 8))
m = netmorph.lower(g)
opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
m(torch.randn(2, 3, 8, 8)).sum().backward()
opt.step()
nmt.save(sys.argv[1], m, opt, graph=g)
raw = torch.load(sys.argv[1], weights_only=True)
first = lambda d: next(iter(d))
def st(ck): return ck["optimizer"]["state_dict"]["state"]
cases = {
 "no graph": lambda ck: ck.pop("graph"), "graph str": lambda ck: ck.update(graph="m.onnx"),
 "graph float": lambda ck: ck.update(graph=ck["graph"].float()),
 "graph garbage": lambda ck: ck.update(graph=torch.tensor([10, 255, 255, 255], dtype=torch.uint8)),
 "no state_dict": lambda ck: ck.pop("state_dict"), "state_dict list": lambda ck: ck.update(state_dict=[1]),
 "state_dict ints": lambda ck: ck.update(state_dict={k: 1 for k in ck["state_dict"]}),
 "training str": lambda ck: ck.update(training="yes"), "no training": lambda ck: ck.pop("training"),
 "optimizer list": lambda ck: ck.update(optimizer=[1]),
 "class Optimizer": lambda ck: ck["optimizer"].update({"class": "Optimizer"}),
 "groups of ints": lambda ck: ck["optimizer"].update(groups=[[1, 2]]),
 "two groups for one": lambda ck: ck["optimizer"]["groups"].append([]),
 "param group int": lambda ck: ck["optimizer"]["state_dict"].update(param_groups=[3]),
 "state unknown index": lambda ck: st(ck).update({999: {}}),
 "state list": lambda ck: st(ck).update({first(st(ck)): [1]}),
 "momentum wrong shape": lambda ck: st(ck)[first(st(ck))].update(momentum_buffer=torch.zeros(7, 7)),
 "negative lr": lambda ck: ck["optimizer"]["state_dict"]["param_groups"][0].update(lr=-1.0),
 "extra str": lambda ck: ck.update(extra="abc"),
}
out = {"CheckpointError": [], "loaded": [], "raw": []}
for name, f in cases.items():
    ck = copy.deepcopy(raw)
    f(ck)
    torch.save(ck, sys.argv[1])
    try:
        nmt.load(sys.argv[1])
        out["loaded"].append(name)
    except nmt.CheckpointError:
        out["CheckpointError"].append(name)
    except Exception as e:
        out["raw"].append(f"{name}: {type(e).__name__}")
print(len(cases), "crafted;", len(out["CheckpointError"]), "CheckpointError; loaded:", out["loaded"],
      "; raw:", out["raw"])
"""


def round_two(work: Path, cli, results: dict, small: Path, npz: Path, env: dict, timeout: float) -> None:
    """The second review's cases: outputs naming inputs, run folders, crafted checkpoints, odd names."""
    import shutil

    import numpy as np
    import onnx
    from onnx import numpy_helper

    r2 = work / "r2"
    r2.mkdir()
    model = r2 / "m.onnx"
    shutil.copy(small, model)
    digest = model.read_bytes()
    bn = ("--pass", "insert-identity-bn", "--value", "level1.block1.relu1")
    kept = lambda: "model kept" if model.read_bytes() == digest else "MODEL REPLACED"  # noqa: E731
    cli("F2 grow -o = the input model", "grow", model, *bn, "-o", model, check=kept)
    cli("F2 grow --report = the input model", "grow", model, *bn, "-o", r2 / "c.onnx", "--report", model,
        check=kept)
    cli("F2 grow -o X --report X", "grow", model, *bn, "-o", r2 / "x.onnx", "--report", r2 / "x.onnx",
        check=lambda: "X holds JSON" if (r2 / "x.onnx").exists() and (r2 / "x.onnx").read_bytes()[:1] == b"{"
        else ("X is the model" if (r2 / "x.onnx").exists() else "nothing written"))
    (r2 / "inputs").mkdir()
    np.savez(r2 / "inputs" / "b1.npz", input=np.zeros((2, 3, 16, 16), np.float32))
    b1 = (r2 / "inputs" / "b1.npz").read_bytes()
    cli("F2 verify --json inside the --inputs folder", "verify", model, model, "--inputs", r2 / "inputs",
        "--json", r2 / "inputs" / "b1.npz",
        check=lambda: "inputs kept" if (r2 / "inputs" / "b1.npz").read_bytes() == b1 else "INPUT REPLACED")
    (r2 / "m.run").mkdir()
    cli("F2 train -o RUN/checkpoint.pt", "train", model, "--data", "synthetic:16", "--epochs", "1",
        "--batch-size", "8", "--device", "cpu", "-q", "-o", r2 / "m.run" / "checkpoint.pt", "--out-dir",
        r2 / "m.run", check=lambda: _what_is(r2 / "m.run" / "checkpoint.pt"))

    # run folders: a finished one-stage run, resumed with a second stage
    toml = (f'name = "r2"\ndata = "npz:{npz}"\n[start]\nfamily = "plain"\nblocks = 2\nchannels = [4, 4, 4]\n'
            'input_shape = [3, 16, 16]\n[train]\nbatch_size = 16\ndevice = "cpu"\nnum_threads = 1\n'
            "[[stages]]\nepochs = 1\n")
    (r2 / "one.toml").write_text(toml)
    (r2 / "two.toml").write_text(toml + '[[stages]]\nepochs = 1\ngrow = "deepen"\n')
    run = r2 / "run"
    cli("F1/F8 setup: a finished one-stage run", "run", r2 / "one.toml", "--out-dir", run, "--quiet")
    linked = r2 / "run-linked"
    shutil.copytree(run, linked, symlinks=True)
    foreign = r2 / "foreign"
    foreign.mkdir()
    (foreign / "metrics.jsonl").write_text("someone else's\n")
    (linked / "stage_2").symlink_to(foreign, target_is_directory=True)
    cli("F1 resume through a symlinked stage_2", "run", r2 / "two.toml", "--out-dir", linked, "--quiet",
        check=lambda: "foreign folder untouched" if sorted(p.name for p in foreign.iterdir())
        == ["metrics.jsonl"] and (foreign / "metrics.jsonl").read_text() == "someone else's\n"
        else f"foreign folder now holds {sorted(p.name for p in foreign.iterdir())}")
    swapped = r2 / "run-swapped"
    shutil.copytree(run, swapped, symlinks=True)
    subprocess.run([sys.executable, "-m", "netmorph.cli.main", "new", "plain", "-n", "3", "--channels",
                    "4,4,4", "--input", "3x16x16", "-o", swapped / "stage_1.onnx"], check=True,
                   env={**os.environ, **env}, capture_output=True)
    cli("F8 resume after stage_1.onnx is swapped for another architecture", "run", r2 / "two.toml",
        "--out-dir", swapped, "--quiet", check=lambda: _stages(swapped))

    ck = r2 / "crafted.pt"
    t0 = time.perf_counter()
    r = run_child([sys.executable, "-c", CRAFTED_CHECKPOINTS, str(ck)], env=env, timeout=timeout * 3)
    results["F15 netmorph.torch.load on crafted checkpoints"] = {
        "code": r.code, "summary": (r.stdout.strip().splitlines() or [r.stderr[-300:]])[-1][:400],
        "peak_rss_mib": round(r.max_rss / (1 << 20)), "seconds": round(time.perf_counter() - t0, 2)}

    # low items (the model is copied again: a checkout that lets an output replace it has broken it)
    shutil.copy(small, model)
    cli("low -o newdir/", "grow", model, *bn, "-o", str(r2 / "newdir") + "/",
        check=lambda: "a file named newdir" if (r2 / "newdir").is_file() else "nothing written")
    long_name = r2 / ("a" * 250 + ".onnx")
    cli("low -o with a 255-byte name", "grow", model, *bn, "-o", long_name,
        check=lambda: "written" if long_name.exists() else "not written")
    cli("low -o into a missing folder", "grow", model, *bn, "-o", r2 / "missing" / "x.onnx",
        check=lambda: "folder created" if (r2 / "missing").exists() else "no folder created")
    m = onnx.load(small)
    t = m.graph.initializer[0]
    a = numpy_helper.to_array(t).copy()
    a.flat[0] = np.nan
    t.CopyFrom(numpy_helper.from_array(a, t.name))
    onnx.save(m, r2 / "nan.onnx")
    cli("low grow a parent with a NaN weight", "grow", r2 / "nan.onnx", *bn, "-o", r2 / "n.onnx")
    cli("low widen --noise 1e300 (numpy warns, then the child differs)", "grow", model, "--pass", "widen",
        "--noise", "1e300", "-o", r2 / "w.onnx")
    chain = r2 / "chain.onnx"
    _chain(chain, 50_000)
    cli("low inspect a 50,000-node chain", "inspect", chain)
    cli("low grow a 50,000-node chain (insert-identity-bn)", "grow", chain, "--pass", "insert-identity-bn",
        "--value", "v100", "-o", r2 / "chain2.onnx")


def _stages(run: Path) -> str:
    """How many stage records ``run``'s results hold, and whether stage 2 was grown."""
    n = len(json.loads((run / "results.json").read_text())["stages"])
    grown = (run / "stage_2.onnx").exists()
    return f"{n} stage record(s), " + ("stage 2 grown from the swapped model" if grown else "nothing grown")


def _what_is(path: Path) -> str:
    """'nothing written', 'an ONNX model' or 'another file' at ``path``."""
    import onnx

    if not path.exists():
        return "nothing written"
    try:
        onnx.load(path)
    except Exception:
        return "another file"
    return "an ONNX model"


def _chain(path: Path, n: int) -> None:
    """Conv, then ``n - 3`` Relus, GlobalAveragePool, Flatten: one long chain."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("Conv", ["x", "w"], ["v0"], kernel_shape=[1, 1])]
    nodes += [helper.make_node("Relu", [f"v{i}"], [f"v{i + 1}"]) for i in range(n - 3)]
    nodes += [helper.make_node("GlobalAveragePool", [f"v{n - 3}"], ["p"]),
              helper.make_node("Flatten", ["p"], ["y"])]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    w = numpy_helper.from_array(np.ones((4, 3, 1, 1), np.float32), "w")
    graph = helper.make_graph(nodes, "chain", [x], [y], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


if __name__ == "__main__":
    main()
