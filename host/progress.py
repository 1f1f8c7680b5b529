"""Progress lines for long steps (Verilog generation, Verilator builds, long runs).

A step that may take more than a few seconds is wrapped in :func:`step`: it prints what it is
doing when it starts, a heartbeat with the elapsed time while it runs, and the total when it
ends; a step served from a cache says so with :func:`cached`. Lines go to standard error, so
they never mix with a command's results on standard output (pytest captures them and shows
them only for a failing test).

Set ``OPENLPU_PROGRESS=0`` to silence them; ``OPENLPU_PROGRESS_EVERY`` sets the heartbeat
period in seconds (default 15).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from typing import Callable

__all__ = ["step", "cached", "note", "enabled"]


def enabled() -> bool:
    """Whether progress lines are printed (``OPENLPU_PROGRESS`` is not ``0``)."""
    return os.environ.get("OPENLPU_PROGRESS", "1") not in ("0", "", "no", "false")


def _period() -> float:
    try:
        return max(0.05, float(os.environ.get("OPENLPU_PROGRESS_EVERY", "15")))
    except ValueError:
        return 15.0


def note(text: str) -> None:
    """Print one progress line (``[openlpu] text``) to standard error."""
    if enabled():
        print(f"[openlpu] {text}", file=sys.stderr, flush=True)


def cached(what: str, where=None) -> None:
    """Say that ``what`` was taken from a cache (and where)."""
    note(f"{what}: cached" + (f" ({where})" if where else ""))


@contextlib.contextmanager
def step(what: str, detail: Callable[[], str] | None = None):
    """Context manager around a long step: prints ``what ...`` at the start, ``what: still
    running, N s`` every heartbeat period (with ``detail()`` appended when given, e.g. the last
    line of a build log), and ``what: done in N s`` or ``what: failed after N s`` at the end."""
    t0 = time.monotonic()
    if not enabled():
        yield
        return
    note(f"{what} ...")
    stop = threading.Event()

    def beat():
        while not stop.wait(_period()):
            extra = ""
            if detail is not None:
                try:
                    extra = detail()
                except Exception:          # a heartbeat never breaks the step it reports on
                    extra = ""
            note(f"{what}: still running, {time.monotonic() - t0:.0f} s"
                 + (f" ({extra})" if extra else ""))

    thread = threading.Thread(target=beat, name="openlpu-progress", daemon=True)
    thread.start()
    try:
        yield
    except BaseException:
        stop.set()
        note(f"{what}: failed after {time.monotonic() - t0:.1f} s")
        raise
    finally:
        stop.set()
        thread.join()
    note(f"{what}: done in {time.monotonic() - t0:.1f} s")
