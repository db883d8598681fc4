"""Benchmark: how the CLI handles hostile inputs (issue 12): exit code, one-line error, peak memory, time.

Prints one JSON object: per case the exit code, whether stderr holds a traceback, the first
``netmorph: error:`` line, the child's own peak RSS (MiB), wall seconds and a case-specific check
(e.g. whether a symlink target survived). Every child runs with its address space capped at
``--cap-gb`` (default 3) and a ``--timeout`` (default 40 s), so a checkout that blows up fails the
case instead of hurting the machine.

``--pythonpath DIR`` runs the cases against another checkout (a folder holding ``netmorph``,
``netmorph/cli`` and ``netmorph/passes`` importable), e.g. a ``git archive`` of ``main`` with
``cli/`` and ``passes/`` linked into its ``netmorph/``: that is how the before/after table in the
issue report was made.

Usage: ``python benchmarks/hostile_inputs.py [--pythonpath DIR] [--cap-gb 3] [--timeout 40]``
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
            t0 = time.perf_counter()
            r = run_child([sys.executable, "-m", "netmorph.cli.main", *map(str, argv)], env=env,
                          timeout=args.timeout, cwd=cwd, mem_limit=cap)
            errors = [ln for ln in r.stderr.splitlines() if ln.startswith("netmorph: error:")]
            results[name] = {
                "code": r.code, "timed_out": r.timed_out, "traceback": "Traceback" in r.stderr,
                "error": errors[0][:160] if errors else None, "peak_rss_mib": round(r.max_rss / (1 << 20)),
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
    print(json.dumps({"pythonpath": args.pythonpath, "cap_gb": args.cap_gb, "cases": results}, indent=1))


if __name__ == "__main__":
    main()
