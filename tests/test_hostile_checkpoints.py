"""Crafted ``netmorph.torch`` checkpoints and crafted models through the Python API: every one is
refused with the documented error type (``CheckpointError``, ``OnnxFormatError``), never a raw
``KeyError`` / ``TypeError`` / ``DecodeError`` / ``UnicodeDecodeError``, and optimizer state of the
wrong shapes is refused instead of loaded."""

from __future__ import annotations

import copy

import onnx
import pytest
import torch

import netmorph  # noqa: E402
import netmorph.torch as nmt  # noqa: E402
from netmorph.onnx_io import OnnxFormatError  # noqa: E402


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A real checkpoint (lowered PlainNet, SGD with momentum after one step) and its raw dict."""
    graph = netmorph.build("plain", blocks=2, channels=(4, 4, 4), classes=3, input_shape=(3, 8, 8))
    module = netmorph.lower(graph)
    opt = torch.optim.SGD(module.parameters(), lr=0.1, momentum=0.9)
    module(torch.randn(2, 3, 8, 8)).sum().backward()
    opt.step()
    path = tmp_path_factory.mktemp("ck") / "ok.pt"
    nmt.save(path, module, opt, graph=graph)
    return path, torch.load(path, weights_only=True)


def _first(d):
    return next(iter(d))


def _momentum(ck):
    state = ck["optimizer"]["state_dict"]["state"]
    return state[_first(state)]


def _wrong_momentum(ck):
    st = _momentum(ck)
    st["momentum_buffer"] = torch.zeros(7, 7)


def _bytes(data: bytes):
    return torch.tensor(list(data), dtype=torch.uint8)


def _tamper(ck, key, value):
    ck[key] = value


CRAFTED = {
    "a list": lambda ck: ck.clear() or ck.update(format=nmt.FORMAT, graph=[1, 2]),
    "no graph": lambda ck: ck.pop("graph"),
    "graph is a string": lambda ck: _tamper(ck, "graph", "model.onnx"),
    "graph is float": lambda ck: _tamper(ck, "graph", ck["graph"].float()),
    "graph is garbage": lambda ck: _tamper(ck, "graph", _bytes(b"\x0a\xff\xff\xff")),
    "graph is not a model": lambda ck: _tamper(ck, "graph", _bytes(b"\x08\x07")),
    "no state_dict": lambda ck: ck.pop("state_dict"),
    "state_dict is a list": lambda ck: _tamper(ck, "state_dict", [1, 2]),
    "state_dict of ints": lambda ck: _tamper(ck, "state_dict", {k: 1 for k in ck["state_dict"]}),
    "state_dict wrong shape": lambda ck: ck["state_dict"].update(
        {_first(ck["state_dict"]): torch.zeros(1)}),
    "training is a string": lambda ck: _tamper(ck, "training", "yes"),
    "no training": lambda ck: ck.pop("training"),
    "optimizer is a list": lambda ck: _tamper(ck, "optimizer", [1]),
    "optimizer class Optimizer": lambda ck: ck["optimizer"].update({"class": "Optimizer"}),
    "optimizer without groups": lambda ck: ck["optimizer"].pop("groups"),
    "optimizer groups of ints": lambda ck: ck["optimizer"].update(groups=[[1, 2]]),
    "optimizer group names a stranger": lambda ck: ck["optimizer"]["groups"][0].append("nope.weight"),
    "two groups for one": lambda ck: ck["optimizer"]["groups"].append([]),
    "no param_groups": lambda ck: ck["optimizer"]["state_dict"].pop("param_groups"),
    "param group not a dict": lambda ck: ck["optimizer"]["state_dict"].update(param_groups=[3]),
    "state of unknown index": lambda ck: ck["optimizer"]["state_dict"]["state"].update({999: {}}),
    "state is a list": lambda ck: ck["optimizer"]["state_dict"]["state"].update(
        {_first(ck["optimizer"]["state_dict"]["state"]): [1]}),
    "momentum of the wrong shape": _wrong_momentum,
    "negative lr": lambda ck: ck["optimizer"]["state_dict"]["param_groups"][0].update(lr=-1.0),
    "extra is a string": lambda ck: _tamper(ck, "extra", "abc"),
}


def test_the_real_checkpoint_loads(saved):
    path, _ = saved
    back = nmt.load(path)
    assert type(back.optimizer) is torch.optim.SGD and back.optimizer.state_dict()["state"]


@pytest.mark.parametrize("case", list(CRAFTED))
def test_crafted_checkpoint_raises_checkpoint_error(saved, tmp_path, case):
    _, raw = saved
    ck = copy.deepcopy(raw)
    CRAFTED[case](ck)
    path = tmp_path / "crafted.pt"
    torch.save(ck, path)
    with pytest.raises(nmt.CheckpointError) as info:
        nmt.load(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def _corrupt(model: onnx.ModelProto, text: str) -> bytes:
    data = bytearray(model.SerializeToString())
    i = data.find(text.encode())
    assert i >= 0
    data[i] = 0xFF  # invalid UTF-8 in a string field
    return bytes(data)


@pytest.fixture(scope="module")
def proto(tmp_path_factory) -> onnx.ModelProto:
    path = tmp_path_factory.mktemp("m") / "m.onnx"
    graph = netmorph.build("plain", blocks=2, channels=(4, 4, 4), classes=3, input_shape=(3, 8, 8))
    netmorph.save(graph, path)
    m = onnx.load(path)
    m.producer_name, m.doc_string = "Zproducer", "Zdoc"
    e = m.metadata_props.add()
    e.key, e.value = "Zkey", "Zvalue"
    return m


@pytest.mark.parametrize("text", ["Zproducer", "Zdoc", "Zkey", "Zvalue", "Conv", "level1.block1.conv1"])
def test_invalid_utf8_in_a_model_is_a_format_error(proto, tmp_path, text):
    path = tmp_path / "bad.onnx"
    path.write_bytes(_corrupt(proto, text))
    with pytest.raises(OnnxFormatError, match="UTF-8"):
        netmorph.load(path)


def test_unknown_tensor_type_is_a_format_error(proto, tmp_path):
    m = copy.deepcopy(proto)
    m.graph.initializer[0].data_type = 999
    path = tmp_path / "bad.onnx"
    path.write_bytes(m.SerializeToString())
    with pytest.raises(OnnxFormatError, match="data type 999"):
        netmorph.save(netmorph.load(path), tmp_path / "out.onnx")
    assert not (tmp_path / "out.onnx").exists()
