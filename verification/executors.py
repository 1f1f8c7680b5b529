"""Where many independent tasks run: this process, a local process pool, or Dask distributed.

:func:`map_tasks` is the one dispatcher of the fuzz campaigns (``verification/fuzz``) and the
design-space sweeps (``verification/sweep.py``): results come back as ``(index, result)`` in the
order the tasks finish, whichever executor runs them.
"""

from __future__ import annotations

import os

__all__ = ["map_tasks", "worker_count"]


def worker_count(workers: int | None = None, client=None) -> int:
    """Workers a run will have: the Dask cluster's threads, ``workers``, or the CPU count."""
    if client is not None:
        return max(1, sum(client.nthreads().values()))
    return workers or os.cpu_count() or 1


def map_tasks(fn, arg_lists, *, workers: int | None = None, scheduler: str | None = None,
              client=None, setup=None):
    """Run ``fn(*args)`` for each ``args`` of ``arg_lists``; yields ``(index, result)``.

    ``client`` (a ``distributed.Client``) or ``scheduler`` (its address, ``host:port``) sends the
    tasks to Dask; otherwise a local pool of ``workers`` spawned processes (default: the CPU
    count; 1 runs them in this process). ``setup()`` runs first: on every Dask worker, or once
    here before a local pool starts (e.g. a Verilator build the workers then find cached)."""
    arg_lists = [tuple(a) for a in arg_lists]
    if client is not None or scheduler:
        from distributed import Client, as_completed
        own = client is None
        client = client or Client(scheduler)
        try:
            if setup is not None:
                client.run(setup)
            futs = [client.submit(fn, *a, pure=False) for a in arg_lists]
            index = {f.key: i for i, f in enumerate(futs)}
            for fut in as_completed(futs):
                yield index[fut.key], fut.result()
        finally:
            if own:
                client.close()
        return
    if setup is not None:
        setup()
    n = worker_count(workers)
    if n == 1:
        for i, a in enumerate(arg_lists):
            yield i, fn(*a)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed as cf_completed
    with ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn")) as pool:
        futs = {pool.submit(fn, *a): i for i, a in enumerate(arg_lists)}
        for fut in cf_completed(futs):
            yield futs[fut], fut.result()
