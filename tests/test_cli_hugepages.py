"""The ``netmorph`` command keeps numpy off transparent huge pages unless the user says otherwise."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = ("from netmorph.cli.main import no_hugepage_stalls; no_hugepage_stalls(); import numpy; "
         "print(numpy._core.multiarray._get_madvise_hugepage())")
AFTER = ("import numpy; from netmorph.cli.main import no_hugepage_stalls; no_hugepage_stalls(); "
         "print(numpy._core.multiarray._get_madvise_hugepage())")


def _run(code: str, **env: str) -> str:
    base = {k: v for k, v in os.environ.items() if k != "NUMPY_MADVISE_HUGEPAGE"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**base, **env},
                       check=True)
    return r.stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="numpy madvises huge pages on Linux only")
def test_the_command_turns_numpys_huge_page_advice_off_and_the_user_can_keep_it():
    if _run("import numpy; print(numpy._core.multiarray._get_madvise_hugepage())") != "True":
        pytest.skip("this kernel or numpy build never madvises huge pages")  # pre-4.6 kernels
    assert _run(PROBE) == "False"  # set before numpy's import
    assert _run(AFTER) == "False"  # numpy already imported: switched off at run time
    assert _run(PROBE, NUMPY_MADVISE_HUGEPAGE="1") == "True"  # the user's setting wins
