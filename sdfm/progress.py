"""Progress of a long loop: a tqdm bar on a terminal, a plain line every N seconds in a log file.

Snakemake sends each job's output to ``results/logs/...``; a tqdm bar written there is one
carriage-return-separated line, unreadable until the job ends. When the stream is not a
terminal, :class:`Progress` instead writes a self-contained line every ``interval`` seconds
(``SDFM_PROGRESS_SECONDS``, default 30; ``sdfm <job> --progress-seconds S`` sets it),
such as::

    train sdfm: step 400/2000 (20%) loss=0.8731 | 41.2 steps/s | elapsed 9.7s | ETA 38.8s

after a first line saying where the loop starts, and a last line when it ends. The rate counts
the steps run by this process only (a job resumed from a checkpoint at step k starts its clock
there), and the ETA is ``(total - step) / rate``.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import TextIO

__all__ = ["DEFAULT_INTERVAL", "INTERVAL_ENV", "Progress", "format_duration", "interval_from_env"]

#: Seconds between two plain progress lines unless ``SDFM_PROGRESS_SECONDS`` says otherwise.
DEFAULT_INTERVAL = 30.0
INTERVAL_ENV = "SDFM_PROGRESS_SECONDS"


def interval_from_env() -> float:
    """``SDFM_PROGRESS_SECONDS`` as a number of seconds >= 0 (default :data:`DEFAULT_INTERVAL`)."""
    text = os.environ.get(INTERVAL_ENV, "")
    try:
        value = float(text) if text.strip() else DEFAULT_INTERVAL
    except ValueError:
        raise ValueError(f"{INTERVAL_ENV}={text!r}: give a number of seconds >= 0") from None
    if not value >= 0:
        raise ValueError(f"{INTERVAL_ENV}={text!r}: give a number of seconds >= 0")
    return value


def format_duration(seconds: float) -> str:
    """``9.7s``, ``3m05s``, ``2h03m``."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class Progress:
    """Progress of ``total`` steps: tqdm on a terminal, plain lines otherwise, nothing when disabled.

    The interface is tqdm's subset the loops use: :meth:`update`, :meth:`set_postfix`, :meth:`close`.

    Args:
        total: the number of steps of the loop.
        desc: what runs, the start of every line (``"potential eps=0.1"``).
        initial: the step a resumed loop starts from.
        enabled: False shows nothing.
        interval: seconds between plain lines (default: :func:`interval_from_env`).
        stream: where to write (default ``sys.stderr``).
        clock: the time source (tests pass a fake one).
    """

    def __init__(self, total: int, desc: str, *, initial: int = 0, enabled: bool = True,
                 interval: float | None = None, stream: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.total, self.desc, self.step = int(total), desc, int(initial)
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval_from_env() if interval is None else float(interval)
        self._clock, self._postfix, self._bar, self._closed = clock, {}, None, False
        self._start_time, self._start_step = clock(), self.step
        self._last_line = self._start_time
        self.plain = enabled and not _is_terminal(self.stream)
        if enabled and not self.plain:
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, initial=self.step, desc=desc, file=self.stream, leave=False)
        elif self.plain:
            print(f"{desc}: start at step {self.step}/{self.total}", file=self.stream, flush=True)

    def update(self, n: int = 1) -> None:
        """Count ``n`` more steps; a plain line when ``interval`` seconds passed since the last one."""
        self.step += n
        if self._bar is not None:
            self._bar.update(n)
        elif self.plain:
            now = self._clock()
            if now - self._last_line >= self.interval:
                self._last_line = now
                self._write(now)

    def set_postfix(self, **values) -> None:
        """The current figures (``chi2=...``, ``loss=...``) shown after the step count."""
        self._postfix = {key: str(value) for key, value in values.items()}
        if self._bar is not None:
            self._bar.set_postfix(**values)

    def close(self) -> None:
        """End the bar, or write the last plain line (with the whole run's rate)."""
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.close()
        elif self.plain:
            self._write(self._clock(), done=True)

    def line(self, now: float, done: bool = False) -> str:
        """The plain line at time ``now``: step, figures, steps/s, elapsed time and ETA (or ``done``)."""
        elapsed = max(now - self._start_time, 0.0)
        ran = self.step - self._start_step
        rate = ran / elapsed if elapsed > 0 else float("inf") if ran else 0.0
        share = f" ({100.0 * self.step / self.total:.0f}%)" if self.total > 0 else ""
        figures = "".join(f" {key}={value}" for key, value in self._postfix.items())
        speed = "- steps/s" if rate == float("inf") else f"{rate:.0f} steps/s" if rate >= 100 else f"{rate:.3g} steps/s"
        if done:
            tail = "done"
        elif rate > 0 and rate != float("inf"):
            tail = f"ETA {format_duration(max(self.total - self.step, 0) / rate)}"
        else:
            tail = "ETA -"
        return (f"{self.desc}: step {self.step}/{self.total}{share}{figures} | {speed} | "
                f"elapsed {format_duration(elapsed)} | {tail}")

    def _write(self, now: float, done: bool = False) -> None:
        print(self.line(now, done), file=self.stream, flush=True)

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _is_terminal(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
