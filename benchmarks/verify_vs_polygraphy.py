"""Verdicts of Polygraphy's default flow and of `netmorph verify` on pairs with known answers.

The pairs are the test models (``tests/test_verify_*.py``): each is saved, then checked with
``polygraphy run A --onnxrt --save-inputs I --save-outputs O`` + ``polygraphy run B --onnxrt
--load-inputs I --load-outputs O``, with ``netmorph verify A B`` and with ``netmorph verify A B
--tolerance calibrated``. Prints one JSON object per pair (exit codes; 0 = "equivalent").
Needs ``polygraphy`` on PATH.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import onnx
from onnx import TensorProto, helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from test_verify_calibrated import bn_cnn  # noqa: E402
from test_verify_cli import int_offset  # noqa: E402
from test_verify_inputs import attention, embedder  # noqa: E402


def sqrt_model() -> onnx.ModelProto:
    g = helper.make_graph([helper.make_node("Sqrt", ["x"], ["y"])], "sqrt",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 5])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


PAIRS = {  # name -> (a, b, expected verdict)
    "embedding row 57 changed": (embedder, lambda: embedder(changed_row=57), "fail"),
    "2-row token_type table, same model": (embedder, embedder, "pass"),
    "causal vs full mask, dynamic seq": (lambda: attention("causal-inf"), lambda: attention("full"), "fail"),
    "-inf vs -1e9 mask": (lambda: attention("causal-inf"), lambda: attention("causal-1e9"), "pass"),
    "int64 output off by one at 1e5": (lambda: int_offset(100000), lambda: int_offset(100001), "fail"),
    "identical NaN-producing models": (sqrt_model, sqrt_model, "fail (NaN reported)"),
    "1e-3 weight change in a BN CNN": (bn_cnn, lambda: bn_cnn(delta=1e-3), "fail"),
    "BN CNN vs its BN-folded export": (bn_cnn, lambda: bn_cnn(fold=True), "pass"),
}


def _run(*cmd) -> int:
    return subprocess.run([str(c) for c in cmd], capture_output=True).returncode


def main() -> None:
    poly = shutil.which("polygraphy")
    if poly is None:
        sys.exit("polygraphy is not installed")
    exe = shutil.which("netmorph")
    nm = [exe] if exe else [sys.executable, "-m", "netmorph.cli.main"]
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        for name, (make_a, make_b, expected) in PAIRS.items():
            a, b = d / "a.onnx", d / "b.onnx"
            onnx.save(make_a(), a)
            onnx.save(make_b(), b)
            i, o = d / "i.json", d / "o.json"
            p1 = _run(poly, "run", a, "--onnxrt", "--save-inputs", i, "--save-outputs", o)
            p2 = _run(poly, "run", b, "--onnxrt", "--load-inputs", i, "--load-outputs", o)
            print(json.dumps({
                "pair": name, "expected": expected, "polygraphy_exit_codes": [p1, p2],
                "netmorph_verify_exit_code": _run(*nm, "verify", a, b),
                "netmorph_verify_calibrated_exit_code": _run(*nm, "verify", a, b, "--tolerance",
                                                             "calibrated"),
            }), flush=True)


if __name__ == "__main__":
    main()
