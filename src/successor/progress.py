"""What the driver tells whoever watches: a Progress receives each stage, experiment count and finished
generation. `Progress` says nothing; `PlainProgress` prints one plain line for each stage and each finished
generation, for logs, CI and nohup, where a live view would print nothing (the CLI's rich view is for a TTY)."""
from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """The default: silent. Subclass and override what you want to hear about."""

    def stage(self, generation: int, name: str) -> None: ...

    def experiments(self, done: int, total: int) -> None: ...

    def generation_done(self, generation: int, promoted: bool, frontier: int) -> None: ...


class PlainProgress(Progress):
    """One line a stage and one a finished generation, flushed at once; experiment counts only when they finish
    a batch (a line per experiment would drown a long run's log)."""

    def __init__(self, stream: TextIO | None = None, total_generations: int | None = None):
        self.stream = stream or sys.stderr
        self.total = total_generations
        self.t0 = time.monotonic()
        self._last: tuple[int, str] | None = None

    def _say(self, text: str) -> None:
        self.stream.write(f"[{time.monotonic() - self.t0:7.0f}s] {text}\n")
        self.stream.flush()

    def stage(self, generation: int, name: str) -> None:
        if (generation, name) != self._last:  # a wait for approval repeats its stage every half second
            self._last = (generation, name)
            self._say(f"generation {generation}: {name}")

    def experiments(self, done: int, total: int) -> None:
        if total and done == total:
            self._say(f"  experiments {done}/{total} done")

    def generation_done(self, generation: int, promoted: bool, frontier: int) -> None:
        of = f" of {self.total - 1}" if self.total else ""
        self._say(f"generation {generation}{of} done: {'promoted' if promoted else 'champion kept'}, "
                  f"frontier {frontier}")
