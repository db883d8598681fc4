"""Every error line is bounded: the first cause, how many more, and where the full list is.

A pass refusing a model whose shape inference fails in many nodes used to print every failed node
(tens of KB on one line) or to drop all but the first silently.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from netmorph.cli.errors import MAX_MESSAGE, bounded
from netmorph.cli.main import cli
from onnx import TensorProto, helper, numpy_helper

from netmorph.ir import IRError

PREFIX = "netmorph: error: "


@pytest.fixture
def many_failures(tmp_path):
    """A conv followed by 40 Adds whose shapes do not broadcast: 40 shape-inference errors."""
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1])]
    inits = [numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")]
    outs = []
    for i in range(40):
        nodes.append(helper.make_node("Add", ["c", f"b{i}"], [f"y{i}"], name=f"an_add_with_a_long_name_{i}"))
        inits.append(numpy_helper.from_array(np.ones((5, 7), np.float32), f"b{i}"))
        outs.append(helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, None))
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])
    g = helper.make_graph(nodes, "many", [x], outs, inits)
    path = tmp_path / "many.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def _error_lines(res) -> list[str]:
    return [line for line in res.stderr.splitlines() if line.startswith(PREFIX)]


def test_grow_names_the_first_failure_and_counts_the_rest(many_failures, tmp_path, monkeypatch):
    # a relative path: the line's 300 characters must not depend on how deep pytest's tmp folder is
    monkeypatch.chdir(many_failures.parent)
    out = tmp_path / "child.onnx"
    res = CliRunner().invoke(cli, ["grow", many_failures.name, "--pass", "deepen", "-o", str(out)])
    assert res.exit_code == 2 and not out.exists() and "Traceback" not in res.output
    (line,) = _error_lines(res)
    assert len(line) <= 300, len(line)
    assert "an_add_with_a_long_name_0" in line and "an_add_with_a_long_name_1)" not in line
    assert line.endswith("(and 39 more; --debug shows them all)"), line
    # --debug: the full list, every failed node
    monkeypatch.setenv("NETMORPH_DEBUG", "")  # --debug sets it; put back afterwards
    res = CliRunner().invoke(cli, ["--debug", "grow", str(many_failures), "--pass", "deepen", "-o", str(out)])
    assert isinstance(res.exception, IRError)
    assert all(f"an_add_with_a_long_name_{i})" in str(res.exception) for i in range(40))


def test_a_long_list_on_one_line_is_cut_at_a_separator():
    names = ", ".join(f"block{i}.conv{i % 3}" for i in range(2000))
    line = bounded(f"stage3: cannot widen: the channel group reaches {names}")
    assert len(line) <= MAX_MESSAGE and len(PREFIX + line) <= 300
    assert line.startswith("stage3: cannot widen: the channel group reaches block0.conv0, block1.conv1")
    head, middle, tail = line.split(" … ")
    kept = head.count(", ") + 1 + tail.count(", ") + 1
    assert middle == f"[{2000 - kept} more items]", line
    assert tail.startswith("block") and tail.endswith("block1999.conv1 (--debug shows the full message)")


def test_the_verdict_at_the_end_of_a_long_cause_is_kept():
    line = bounded("pass 1 (deepen(" + ", ".join(f"opt{i}=1" for i in range(200)) + ")): the child differs")
    assert len(line) <= MAX_MESSAGE and line.startswith("pass 1 (deepen(opt0=1")
    assert line.endswith("the child differs (--debug shows the full message)"), line


def test_long_causes_on_many_lines():
    text = "\n".join(f"cause {i}: " + "x" * 500 for i in range(12))
    line = bounded(text)
    assert len(line) <= MAX_MESSAGE and line.startswith("cause 0: xxx")
    head, middle, tail = line.split(" … ")
    kept = len(head) + len(tail.removesuffix(" (11 more causes; --debug shows them all)"))
    assert middle == f"[{509 - kept} more characters]", line
    assert line.endswith("xxx (11 more causes; --debug shows them all)"), line


def test_short_messages_are_unchanged():
    assert bounded("model.onnx: no such file") == "model.onnx: no such file"
    assert bounded("  a   message\twrapped\n") == "a message wrapped"
