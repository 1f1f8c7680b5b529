"""Fuzz campaigns: many programs on a local process pool or on a Dask cluster.

A campaign splits its seeds into batches; each batch runs in a worker (:func:`run_batch`), which
keeps one :class:`~.run.RtlRunner` (one Verilator model of the cached build) and one
:class:`~.run.ModelRunner` per preset for its whole life, so nothing is rebuilt per program.
Mismatching programs are written as JSON under the output folder, shrunk
(:func:`~.shrink.shrink`) unless told not to. Locally the workers are processes of a
``concurrent.futures.ProcessPoolExecutor``; with a scheduler address (``host:port``) the
batches go to a ``distributed.Client`` (``pip install -e .[fuzz]``), whose workers need this
package installed and reach the same build cache or build it once themselves.

:func:`run_campaign` prints a progress line as batches finish (programs done, mismatches,
rate, elapsed) and returns a :class:`CampaignReport`.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass, field

from openlpu.params import preset

__all__ = ["run_batch", "run_campaign", "CampaignReport", "prepare"]

_RUNNERS = {}                 # (preset name, thread id) -> (ModelRunner, RtlRunner)


def _runners(name: str):
    key = (name, threading.get_ident())
    if key not in _RUNNERS:
        from .run import ModelRunner, RtlRunner
        p = preset(name)
        _RUNNERS[key] = (ModelRunner(p), RtlRunner(p))
    return _RUNNERS[key]


def prepare(name: str) -> float:
    """Build (or find in the cache) the Verilator model of preset ``name``; returns seconds."""
    from openlpu.host.backends.verilator_sim import build_library, chip_verilog
    t0 = time.monotonic()
    build_library(chip_verilog(preset(name)), tag=name, params=preset(name))
    return time.monotonic() - t0


def run_batch(name: str, seeds, out_dir: str | None = None, shrink_failures: bool = True,
              max_shrink_evals: int = 300) -> dict:
    """Run the programs of ``seeds`` on preset ``name`` in this process; returns counts, the
    mismatches (seed, differences, replay files) and the seconds spent."""
    from .generate import generate
    from .run import check
    from .shrink import mismatch_predicate, shrink, write_replay
    t0 = time.monotonic()
    model, rtl = _runners(name)
    out = {"n": 0, "hazard": 0, "timeout": 0, "errors": 0, "mismatches": [], "seconds": 0.0,
           "pid": os.getpid()}
    for seed in seeds:
        prog = generate(name, seed)
        res = check(prog, model, rtl)
        out["n"] += 1
        out["hazard"] += res.skipped
        out["timeout"] += res.model.outcome == "timeout"
        out["errors"] += bool(res.model.errors)
        if res.ok:
            continue
        rec = {"seed": seed, "diffs": res.diffs, "model": res.model.summary(),
               "rtl": res.rtl.summary(), "files": []}
        if out_dir:
            rec["files"].append(str(write_replay(prog, out_dir)))
            if shrink_failures:
                small = shrink(prog, mismatch_predicate(model, rtl, res.diffs),
                               max_evals=max_shrink_evals)
                rec["files"].append(str(write_replay(small, out_dir,
                                                     f"{name}-seed{seed}-min")))
        out["mismatches"].append(rec)
    out["seconds"] = time.monotonic() - t0
    return out


@dataclass
class CampaignReport:
    preset: str
    n: int = 0
    hazard: int = 0
    timeout: int = 0
    errors: int = 0
    mismatches: list = field(default_factory=list)
    seconds: float = 0.0             # wall clock
    worker_seconds: float = 0.0      # summed over batches (busy time of the workers)
    workers: int = 1

    @property
    def rate(self) -> float:
        """Programs per second (wall clock)."""
        return self.n / self.seconds if self.seconds else 0.0

    @property
    def rate_per_worker(self) -> float:
        """Programs per second of worker time (per core when each worker has one)."""
        return self.n / self.worker_seconds if self.worker_seconds else 0.0

    def add(self, batch: dict):
        for k in ("n", "hazard", "timeout", "errors"):
            setattr(self, k, getattr(self, k) + batch[k])
        self.mismatches += batch["mismatches"]
        self.worker_seconds += batch["seconds"]

    def line(self) -> str:
        return (f"{self.preset}: {self.n} programs, {len(self.mismatches)} mismatching, "
                f"{self.timeout} hung (both), {self.hazard} skipped (schedule hazard), "
                f"{self.rate:.2f} programs/s ({self.rate_per_worker:.2f} per worker), "
                f"{self.seconds:.0f} s")


def _batches(seed0: int, n: int, size: int):
    return [list(range(s, min(s + size, seed0 + n))) for s in range(seed0, seed0 + n, size)]


def run_campaign(name: str = "mini", n: int = 1000, seed: int = 0, workers: int | None = None,
                 scheduler: str | None = None, client=None, out_dir: str | None = "build/fuzz",
                 shrink_failures: bool = True, batch: int = 20, progress=print,
                 progress_every: float = 10.0) -> CampaignReport:
    """Run ``n`` programs (seeds ``seed`` .. ``seed + n - 1``) of preset ``name``.

    ``client`` (a ``distributed.Client``) or ``scheduler`` (its address) sends the batches to
    Dask; otherwise a local pool of ``workers`` processes (default: the CPU count) runs them.
    """
    preset(name)                                       # unknown names fail here
    report = CampaignReport(name)
    batches = _batches(seed, n, batch)
    args = (out_dir, shrink_failures)
    t0 = time.monotonic()
    last = [t0]

    def done(res):
        report.add(res)
        report.seconds = time.monotonic() - t0
        now = time.monotonic()
        if progress and (now - last[0] >= progress_every or report.n == n):
            last[0] = now
            progress(f"[fuzz] {report.n}/{n} done, {len(report.mismatches)} mismatching, "
                     f"{report.rate:.2f} programs/s, {report.seconds:.0f} s elapsed")

    from functools import partial

    from ..executors import map_tasks, worker_count
    if client is None and scheduler:
        from distributed import Client
        client = own_client = Client(scheduler)
    else:
        own_client = None
    try:
        report.workers = worker_count(workers, client)
        for _, res in map_tasks(run_batch, [(name, b, *args) for b in batches],
                                workers=workers, client=client, setup=partial(prepare, name)):
            done(res)
    finally:
        if own_client is not None:
            own_client.close()
    report.seconds = time.monotonic() - t0
    return report


def main_campaign(args) -> int:
    rep = run_campaign(args.preset, args.n, args.seed, args.workers, args.scheduler,
                       out_dir=args.out, shrink_failures=not args.no_shrink, batch=args.batch)
    print(rep.line())
    for m in rep.mismatches:
        print(f"  seed {m['seed']}: {'; '.join(m['diffs'])}")
        for f in m["files"]:
            print(f"    replay: python -m openlpu.verification.fuzz replay {f}")
    sys.stdout.flush()
    return 1 if rep.mismatches else 0
