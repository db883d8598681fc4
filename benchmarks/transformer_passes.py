"""The transformer passes on the test models (both exporters): result and error, one JSON row each.

For each (model, exporter, pass) the row says whether the pass succeeded (the child verified
in ONNX Runtime by the PassManager) or was refused (and why), the child's max error relative to
the parent's output scale (``max|child - parent| / max|parent|``) over valid token ids at two
sequence lengths (images: two batch sizes), the shape before and after, and the pass time.

    python benchmarks/transformer_passes.py > table.json
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

MODELS = [("encoder-post", "torchscript"), ("encoder-post", "dynamo"), ("encoder-pre", "torchscript"),
          ("encoder-pre", "dynamo"), ("gpt", "torchscript"), ("gpt", "dynamo"), ("vit", "torchscript"),
          ("vit", "dynamo"), ("bert", "torchscript"), ("bert", "dynamo"), ("gpt2", "torchscript"),
          ("gpt2", "dynamo"), ("llama", "dynamo"), ("qwen2", "dynamo"), ("mistral", "dynamo"),
          ("gemma", "dynamo")]
"""All of them, or those named on the command line (``python benchmarks/transformer_passes.py llama``)."""
PASSES = [("deepen", {}), ("widen-mlp", {"factor": 2}), ("add-heads", {"heads": 2}),
          ("widen-hidden", {"factor": 2}), ("widen-hidden", {"factor": 2, "heads_mode": "size"})]


@contextlib.contextmanager
def _stdout_to_stderr():
    """File descriptor 1 onto 2 (C++ prints too), so stdout carries only the JSON."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def main() -> None:
    import onnxruntime as ort
    import transformer_models as tm
    from netmorph.passes import PassManager, get_pass

    from netmorph import onnx_io
    from netmorph.errors import NetmorphError
    from netmorph.structure.transformer import recognise_transformer

    def shape(st):
        return f"{len(st.layers)}L {st.norm}-LN d{st.hidden} {st.heads}x{st.head_size} mlp{st.mlp}"

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        chosen = set(sys.argv[1:])
        for kind, exporter in MODELS:
            if chosen and kind not in chosen:
                continue
            if kind not in ("encoder-post", "encoder-pre", "gpt", "vit") and not tm.has_transformers():
                continue
            try:
                with _stdout_to_stderr():  # exporters print progress and IR dumps on stdout
                    path = tm.export(kind, Path(tmp) / f"{kind}-{exporter}.onnx", exporter)
            except Exception as e:  # noqa: BLE001 - an exporter that cannot export this model
                rows.append({"model": kind, "exporter": exporter, "pass": None, "result": "not exported",
                             "reason": str(e).splitlines()[0][:200]})
                continue
            parent = onnx_io.load(path)
            xs = tm.inputs(kind, exporter, np.random.default_rng(0))
            psess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            refs = [psess.run(None, {"x": x})[0] for x in xs]
            before = shape(recognise_transformer(parent))
            for name, opts in PASSES:
                row = {"model": kind, "exporter": exporter, "pass": name, "options": opts, "before": before,
                       "inputs": [list(x.shape) for x in xs]}
                t0 = time.perf_counter()
                try:
                    child, (rep,) = PassManager(inputs=[{"x": x} for x in xs], record_depth=False).run(
                        parent, [get_pass(name, **opts)])
                except NetmorphError as e:
                    row.update(result="refused", reason=str(e).splitlines()[0])
                    rows.append(row)
                    continue
                row["seconds"] = time.perf_counter() - t0
                sess = ort.InferenceSession(onnx_io.to_onnx(child).SerializeToString(),
                                            providers=["CPUExecutionProvider"])
                err = max(float(np.abs(sess.run(None, {"x": x})[0] - r).max() / np.abs(r).max())
                          for x, r in zip(xs, refs, strict=True))
                row.update(result="ok", construction=rep.pass_name, rel_error=err,
                           after=shape(recognise_transformer(child)))
                rows.append(row)
    print(json.dumps({"benchmark": "transformer_passes", "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
