"""Progress bars on stderr, drawn by ``tqdm``.

One class for both of netmorph's long jobs (training epochs, kernel solves in ``netmorph grow``).
On a terminal the bar is tqdm's (it knows widths, notebooks, ``TQDM_*`` environment settings such as
``TQDM_DISABLE=1``, and draws no colour); on anything else — a log file, CI — nothing is drawn
while the work runs, and :meth:`Progress.close` writes one plain summary line (``summary=True``) or
nothing (``summary=False``), so logs get one line per epoch instead of carriage-return noise.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from tqdm import tqdm


class _Bar(tqdm):
    """tqdm with a ``{fields}`` placeholder (tqdm's own ``{postfix}`` starts with a comma)."""

    fields = ""

    @property
    def format_dict(self):
        d = super().format_dict
        d["fields"] = self.fields
        return d


class Progress:
    """``desc 12/40 [bar] loss=1.23, acc=45.6%``: a bar with fields, live only on a terminal.

    Parameters
    ----------
    total
        Number of steps.
    desc
        Text before the bar.
    stream
        Where to draw (default ``sys.stderr``).
    enabled
        ``False`` draws and prints nothing (quiet mode).
    summary
        Off a terminal, print one final line on :meth:`close`.
    leave
        On a terminal, keep the finished bar on screen (``False`` erases it).
    interval
        Seconds between redraws.
    """

    def __init__(self, total: int, desc: str = "", *, stream: TextIO | None = None, enabled: bool = True,
                 summary: bool = True, leave: bool = True, interval: float = 0.2):
        self.total, self.desc, self.enabled, self.summary = max(1, int(total)), desc, enabled, summary
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self.count = 0
        self.fields: dict[str, str] = {}
        self.live = enabled and bool(getattr(self.stream, "isatty", lambda: False)())
        self._last = 0.0
        self._bar = None
        if self.live:
            self._bar = _Bar(total=self.total, desc=desc, file=self.stream, leave=leave, mininterval=interval,
                             dynamic_ncols=True, bar_format="{desc} {n_fmt}/{total_fmt} [{bar}] {fields}")

    def due(self) -> bool:
        """True when a redraw would be shown now (callers skip computing fields otherwise)."""
        return self.live and time.monotonic() - self._last >= self.interval

    def update(self, count: int, **fields: str) -> None:
        """Set the step count and the fields shown after the bar."""
        self.count = int(count)
        self.fields.update(fields)
        if self.due():
            self._bar.n = min(self.count, self.total)
            self._bar.fields = self._fields()
            self._bar.refresh()
            self._last = time.monotonic()

    def set_description(self, desc: str) -> None:
        self.desc = desc
        if self._bar is not None:
            self._bar.set_description_str(desc, refresh=False)

    def _fields(self) -> str:
        return " ".join(f"{k} {v}" for k, v in self.fields.items())

    def close(self, **fields: str) -> None:
        """Finish: the final bar on a terminal, else one summary line (when ``summary``)."""
        self.fields.update(fields)
        if self._bar is not None:
            self._bar.n = min(self.count, self.total)
            self._bar.fields = self._fields()
            self._bar.close()
            self._bar = None
        elif self.enabled and self.summary:
            self.stream.write(f"{self.desc} {self.count}/{self.total} {self._fields()}".rstrip() + "\n")
            self.stream.flush()
