"""Seeded fuzzing of the CLI: mutated real models (bytes and protobuf fields: dims, data locations,
attribute values, names, input shapes, opsets) into ``inspect``, ``verify`` and ``grow``.

Zero tracebacks, exit codes in {0, 1, 2}, no hang, bounded memory (the driver runs in a child whose
address space is capped at ``AS_LIMIT``; its peak RSS must stay under ``RSS_BOUND``) and bounded time.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from hostile_util import MiB, run_child

SEED, COUNT = 12, 80
AS_LIMIT = 8 << 30
RSS_BOUND = 3 << 30
TIME_BOUND = 240


def test_fuzz_cli_no_tracebacks_bounded(tmp_path):
    driver = Path(__file__).with_name("fuzz_driver.py")
    t0 = time.perf_counter()
    r = run_child([sys.executable, str(driver), str(tmp_path), str(SEED), str(COUNT)], timeout=TIME_BOUND,
                  mem_limit=AS_LIMIT)
    seconds = time.perf_counter() - t0
    records = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert r.code == 0 and not r.timed_out, f"driver died ({r.code}) after {records[-1:]}: {r.stderr[-2000:]}"
    assert records and records[-1] == {"done": COUNT}
    runs = records[:-1]
    assert len(runs) == 3 * COUNT
    bad = [x for x in runs if x["traceback"] or x["hang"] or x["code"] not in (0, 1, 2)]
    assert not bad, json.dumps(bad[:5], indent=1)
    for x in runs:  # every failure is exactly one line naming what went wrong
        if x["code"] == 2:
            assert x["error"], x
    codes = {c: sum(x["code"] == c for x in runs) for c in (0, 1, 2)}
    assert codes[2] > 0 and codes[0] > 0, codes  # the mutations reach both the refusals and real work
    assert r.max_rss < RSS_BOUND, f"peak RSS {r.max_rss / MiB:.0f} MiB"
    print(f"fuzz: {len(runs)} runs in {seconds:.1f} s, exit codes {codes}, "
          f"peak RSS {r.max_rss / MiB:.0f} MiB")
