"""timm ViT / DeiT / Swin and tied GPT-2 / Llama under every transformer pass: one JSON row each.

Each row: whether the pass succeeded (the child verified by the PassManager in ONNX Runtime) or
was refused (and the one-line reason), the child's error relative to the parent's output scale
(``max|child - parent| / max|parent|``) over two batch sizes (token models: two lengths too),
and, for the tied models, whether the token table and the head are still one tensor.

    python benchmarks/transformer_vit.py [vit deit swin gpt2-tied llama-tied ...] > rows.json
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from transformer_passes import PASSES, _stdout_to_stderr  # noqa: E402  (one pass list, one stdout guard)

MODELS = [("vit", "torchscript"), ("vit", "dynamo"), ("vit-square", "torchscript"), ("deit", "torchscript"),
          ("deit", "dynamo"), ("swin", "torchscript"), ("swin", "dynamo"), ("gpt2-tied", "dynamo"),
          ("llama-tied", "dynamo")]


def main(kinds: list[str]) -> None:
    import onnxruntime as ort
    from netmorph.passes import PassManager, get_pass
    from transformer_models import rel_error
    from vit_models import exported, inputs

    from netmorph import onnx_io
    from netmorph.errors import NetmorphError

    for kind, exporter in MODELS:
        if kinds and kind not in kinds:
            continue
        with _stdout_to_stderr():
            g = onnx_io.load(exported(kind, exporter))
        xs = inputs(kind, np.random.default_rng(3))
        ps = ort.InferenceSession(onnx_io.to_onnx(g).SerializeToString(), providers=["CPUExecutionProvider"])
        for name, opts in PASSES:
            row = {"model": kind, "exporter": exporter, "pass": name, **opts}
            t0 = time.perf_counter()
            try:
                child, (rep,) = PassManager(inputs=[{"x": x} for x in xs], record_depth=False).run(
                    g, [get_pass(name, **opts)])
            except NetmorphError as e:
                row.update(result="refused", why=str(e).splitlines()[0][:300])
            else:
                cs = ort.InferenceSession(onnx_io.to_onnx(child).SerializeToString(),
                                          providers=["CPUExecutionProvider"])
                err = max(rel_error(cs.run(None, {"x": x})[0], ps.run(None, {"x": x})[0]) for x in xs)
                row.update(result="ok", max_rel=float(f"{err:.2e}"),
                           details=[d for d in rep.details if "tied_embeddings" in d or "morph" in d][:1])
            row["seconds"] = round(time.perf_counter() - t0, 2)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
