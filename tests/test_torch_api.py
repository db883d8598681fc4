"""``netmorph.torch``'s public names, and the exporter notes it keeps away from the user."""

from __future__ import annotations

import logging

import torch

import netmorph.torch as nmt  # noqa: E402
from netmorph.torch.export import EXPORTER_NOISE, capture, quiet_exporter  # noqa: E402


def test_star_import_gives_every_public_name():
    namespace: dict = {}
    exec("from netmorph.torch import *", namespace)
    assert set(nmt.__all__) <= set(namespace)
    assert namespace["carry_optimizer"].__module__ == "netmorph.torch.carry"


class _Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_quiet_exporter_drops_only_the_torchvision_notes():
    name = EXPORTER_NOISE[0][0]
    logger, seen = logging.getLogger(name), _Records()
    logger.addHandler(seen)
    try:
        with quiet_exporter():
            logger.warning("torchvision is not installed. Skipping %s", "torchvision::nms")
            logger.warning("something the user must see")
        logger.warning("torchvision is not installed. Skipping %s", "after")  # filter removed again
    finally:
        logger.removeHandler(seen)
    assert seen.messages == ["something the user must see", "torchvision is not installed. Skipping after"]


def test_dynamo_export_without_torchvision_logs_no_torchvision_note(monkeypatch):
    """torch's exporter logs one note per torchvision op when torchvision is absent (4 per export)."""
    from torch import nn

    monkeypatch.setitem(__import__("sys").modules, "torchvision", None)  # find_spec -> None: "absent"
    name = EXPORTER_NOISE[0][0]
    logger, seen = logging.getLogger(name), _Records()
    logger.addHandler(seen)
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                      nn.Linear(4, 3))
    try:
        cap = capture(m, (torch.randn(2, 3, 8, 8),), exporter="dynamo")
    finally:
        logger.removeHandler(seen)
    assert cap.source == "dynamo"
    assert not [msg for msg in seen.messages if "torchvision" in msg]
