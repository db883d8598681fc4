"""netmorph.progress: tqdm bars on a terminal, one summary line elsewhere, nothing when quiet."""

from __future__ import annotations

import io

from netmorph.progress import Progress


class Tty(io.StringIO):
    def isatty(self):
        return True


def test_live_on_a_terminal_with_fields():
    out = Tty()
    bar = Progress(5, "epoch 1/3", stream=out)
    bar.update(2, loss="1.0")
    bar.close(loss="0.5", acc="50%")
    text = out.getvalue()
    assert "\r" in text and "epoch 1/3 2/5" in text and "loss 1.0" in text
    assert text.endswith("loss 0.5 acc 50%\n")  # the finished bar stays, with the final fields


def test_one_plain_line_off_a_terminal():
    out = io.StringIO()
    bar = Progress(5, "epoch 1/3", stream=out)
    for i in range(1, 6):
        bar.update(i, loss=f"{1 / i:.2f}")
    bar.close(acc="50%")
    assert out.getvalue() == "epoch 1/3 5/5 loss 0.20 acc 50%\n"


def test_quiet_and_summary_off_print_nothing():
    for kw in ({"enabled": False}, {"summary": False}):
        out = io.StringIO()
        bar = Progress(3, "x", stream=out, **kw)
        bar.update(3)
        bar.close()
        assert out.getvalue() == ""
    out = Tty()
    bar = Progress(3, "x", stream=out, enabled=False)
    bar.update(1)
    bar.close()
    assert out.getvalue() == ""


def test_leave_false_erases_the_bar():
    out = Tty()
    bar = Progress(3, "solve", stream=out, leave=False)
    bar.update(1, item="conv1")
    bar.close()
    assert "solve 1/3" in out.getvalue() and not out.getvalue().endswith("\n")
