"""The transformer passes on parallel-layer decoders and masked encoders: one JSON row per
(family, exporter, pass).

Families (``tests/transformer_models.py``): GPT-NeoX, Phi, Falcon, GPT-J (parallel layers,
exported with an all-ones mask) and BERT, DistilBERT, RoBERTa, ALBERT (``ids`` + ``mask`` (+
``types``) inputs). Each row: ``ok`` (the PassManager verified the child on its own generated
inputs) or ``refused`` (and why), the child's max error relative to the parent's output scale
over valid inputs at (batch, length) (3, 6) and (2, 5) (masks with a padded tail), the shapes and
the pass time.

    python benchmarks/transformer_families.py                 # TorchScript exports
    python benchmarks/transformer_families.py --dynamo bert-mask distilbert-mask
"""

from __future__ import annotations

import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

PASSES = [("deepen", {}), ("widen-mlp", {"factor": 2}), ("add-heads", {"heads": 2}),
          ("widen-hidden", {"factor": 2})]


def main(argv: list[str]) -> None:
    import onnxruntime as ort
    import transformer_models as tm
    from netmorph.passes import PassManager, get_pass

    from netmorph import onnx_io
    from netmorph.errors import NetmorphError
    from netmorph.structure.transformer import recognise_transformer

    exporter = "dynamo" if "--dynamo" in argv else "torchscript"
    kinds = [a for a in argv if not a.startswith("--")] or \
        [*tm.PARALLEL, "bert-mask", "distilbert-mask", "roberta-mask", "albert-mask"]

    def shape(st):
        return f"{len(st.layers)}L d{st.hidden} {st.heads}x{st.head_size} mlp{st.mlp}"

    def sess(g):
        proto = onnx_io.to_onnx(g).SerializeToString()
        return ort.InferenceSession(proto, providers=["CPUExecutionProvider"])

    tmp = Path(tempfile.mkdtemp(prefix="nm-families-"))
    for kind in kinds:
        path = tmp / f"{kind}-{exporter}.onnx"
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr):  # the dynamo exporter prints its progress
            if kind in tm.PARALLEL:
                tm.export(kind, path, exporter)
            else:
                tm.export_masked(kind, path, exporter)
        export_s = time.perf_counter() - t0
        parent = onnx_io.load(path)
        before = recognise_transformer(parent)
        rng = np.random.default_rng(5)
        if kind in tm.PARALLEL:
            feeds = [{"x": rng.integers(0, tm.VOCAB, (b, t)).astype(np.int64)} for b, t in ((3, 6), (2, 5))]
        else:
            feeds = [tm.masked_inputs(kind, rng, b, t) for b, t in ((3, 6), (2, 5))]
        for name, opts in PASSES:
            row = {"family": kind, "exporter": exporter, "pass": name, "options": opts,
                   "before": shape(before), "family_line": before.family_line(),
                   "export_s": round(export_s, 2)}
            t0 = time.perf_counter()
            try:
                child, (rep,) = PassManager(record_depth=False).run(parent, [get_pass(name, **opts)])
            except NetmorphError as e:
                row.update(result="refused", reason=str(e).splitlines()[0][:300])
            else:
                ps, cs = sess(parent), sess(child)
                err = max(tm.rel_error(cs.run(None, f)[0], ps.run(None, f)[0]) for f in feeds)
                row.update(result="ok" if rep.verification["ok"] else "not verified", max_rel=err,
                           after=shape(recognise_transformer(child)))
            row["pass_s"] = round(time.perf_counter() - t0, 2)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
