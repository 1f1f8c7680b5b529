"""Design-space sweeps (verification/sweep.py): rows checked on the model, the same on every
executor (in process, a process pool, a local Dask cluster)."""

import numpy as np
import pytest

from openlpu.verification import sweep
from openlpu.verification.sweep import Point, evaluate, run_sweep

POINTS = [Point("tiny", "matmul", (8, 8, 8)),
          Point("tiny", "matmul", (32, 32, 32), (("mem_words", 32),)),      # does not fit
          Point("tiny", "matmul", (16, 24, 16), (("mem_words", 128),)),
          Point("mini", "softmax", (8, 16), seed=3)]


def _stable(rows):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


@pytest.fixture(scope="module")
def in_process():
    return run_sweep(POINTS, workers=1, progress=None)


def test_rows_are_checked_and_predicted(in_process):
    fits = [r for r in in_process if r["fits"]]
    assert [r["fits"] for r in in_process] == [True, False, True, True]
    assert "C byte plane 0 needs 128 words" in in_process[1]["reason"]
    for r in fits:
        assert r["mismatches"] == 0 and r["cycles"] == r["predicted_cycles"]
    m, k, n = POINTS[2].shape
    r = in_process[2]
    assert r["mxm_utilization"] == pytest.approx(m * k * n / (r["cycles"] * 8 * 8))
    assert r["mem_bytes"] == 2 * 2 * 2 * 128 * 8       # 2 hemispheres x 2 slices x 2 banks


def test_a_wrong_result_is_counted(monkeypatch):
    real = sweep.KERNELS["matmul"]

    def off_by_one(p, shape, rng):
        pkg, ins, want, macs = real(p, shape, rng)
        want = {"C": want["C"] + (np.arange(want["C"].size).reshape(want["C"].shape) == 5)}
        return pkg, ins, want, macs
    monkeypatch.setitem(sweep.KERNELS, "matmul", off_by_one)
    assert evaluate(POINTS[0])["mismatches"] == 1


def test_unknown_kernel():
    with pytest.raises(ValueError, match="unknown kernel 'conv'"):
        evaluate(Point("tiny", "conv", (1,)))


def test_process_pool_gives_the_same_rows(in_process):
    assert _stable(run_sweep(POINTS, workers=2, progress=None)) == _stable(in_process)


def test_dask_local_cluster_gives_the_same_rows(in_process):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        rows = run_sweep(POINTS, client=client, progress=None)
    assert _stable(rows) == _stable(in_process)
