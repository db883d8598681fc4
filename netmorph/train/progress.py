"""A tiny per-epoch progress bar on stderr (no dependency)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressBar:
    """``desc [#####.....] 12/40 loss 1.23 acc 45.6% 1234 img/s``, redrawn in place.

    On a terminal the line is redrawn at most every ``interval`` seconds; elsewhere (logs, CI)
    nothing is drawn until :meth:`close`, which prints the final line once.
    """

    def __init__(self, total: int, desc: str = "", *, stream: TextIO | None = None,
                 enabled: bool = True, interval: float = 0.2, width: int = 24):
        self.total, self.desc, self.enabled = max(1, total), desc, enabled
        self.stream = stream if stream is not None else sys.stderr
        self.interval, self.width = interval, width
        self.count = 0
        self.fields: dict[str, str] = {}
        self._last = 0.0
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def due(self) -> bool:
        """True when a redraw would be shown now (callers skip computing fields otherwise)."""
        return self.enabled and self._tty and time.monotonic() - self._last >= self.interval

    def update(self, count: int, **fields: str) -> None:
        self.count = count
        self.fields.update(fields)
        if self.due():
            self._draw()
            self._last = time.monotonic()

    def _draw(self, end: str = "") -> None:
        done = int(self.width * min(self.count, self.total) / self.total)
        bar = "#" * done + "." * (self.width - done)
        extra = " ".join(f"{k} {v}" for k, v in self.fields.items())
        line = f"{self.desc} [{bar}] {self.count}/{self.total} {extra}"
        # on a terminal: return to the line start, draw, clear the rest of the old line
        self.stream.write(f"\r{line}\x1b[K{end}" if self._tty else f"{line}{end}")
        self.stream.flush()

    def close(self, **fields: str) -> None:
        self.fields.update(fields)
        if self.enabled:
            self._draw("\n")
