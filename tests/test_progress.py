"""Plain progress lines for job logs: cadence, rate, ETA, resume offset; tqdm only on a terminal."""

import io

import pytest

from sdfm.progress import Progress, format_duration, interval_from_env


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_a_line_every_interval_with_rate_and_eta():
    clock, out = FakeClock(), io.StringIO()
    bar = Progress(100, "train fm", interval=30, stream=out, clock=clock)
    for _ in range(40):  # 40 steps at 2 steps/s
        clock.now += 0.5
        bar.update()
        bar.set_postfix(loss="0.5000")
    bar.close()
    lines = out.getvalue().splitlines()
    assert lines[0] == "train fm: start at step 0/100"
    # t = 20 s after 40 steps: no interval passed yet, so only the start line and the last line
    assert len(lines) == 2
    assert lines[1] == "train fm: step 40/100 (40%) loss=0.5000 | 2 steps/s | elapsed 20.0s | done"


def test_lines_come_at_the_interval_and_the_eta_is_remaining_over_rate():
    clock, out = FakeClock(), io.StringIO()
    bar = Progress(1000, "potential eps=0.1", initial=200, interval=30, stream=out, clock=clock)
    for _ in range(400):  # resumed at 200; 4 steps/s
        clock.now += 0.25
        bar.update()
    lines = out.getvalue().splitlines()
    assert lines[0] == "potential eps=0.1: start at step 200/1000"
    progress = lines[1:]
    assert len(progress) == 3  # at t = 30, 60, 90 s (the run lasts 100 s)
    # at t = 30 s: step 200 + 120 = 320, rate 4 (the steps of this process only), ETA 680 / 4 = 170 s
    assert progress[0] == "potential eps=0.1: step 320/1000 (32%) | 4 steps/s | elapsed 30.0s | ETA 2m50s"
    assert progress[2].startswith("potential eps=0.1: step 560/1000 (56%) | 4 steps/s | elapsed 1m30s | ETA 1m50s")


def test_disabled_writes_nothing_and_a_terminal_gets_tqdm(monkeypatch):
    out = io.StringIO()
    bar = Progress(10, "x", enabled=False, stream=out)
    bar.update(10)
    bar.close()
    assert out.getvalue() == ""

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    tty = Terminal()
    bar = Progress(10, "evaluate", stream=tty, interval=0)
    bar.update(10)
    bar.close()
    assert not bar.plain and "\r" in tty.getvalue() and "steps/s" not in tty.getvalue()


def test_interval_from_the_environment(monkeypatch):
    monkeypatch.delenv("SDFM_PROGRESS_SECONDS", raising=False)
    assert interval_from_env() == 30.0
    monkeypatch.setenv("SDFM_PROGRESS_SECONDS", "2.5")
    assert interval_from_env() == 2.5 and Progress(1, "x", stream=io.StringIO()).interval == 2.5
    monkeypatch.setenv("SDFM_PROGRESS_SECONDS", "soon")
    with pytest.raises(ValueError, match="SDFM_PROGRESS_SECONDS='soon'"):
        interval_from_env()


def test_durations():
    assert [format_duration(s) for s in (9.74, 185, 7380)] == ["9.7s", "3m05s", "2h03m"]
