"""The per-kernel report (benchmarks/kernel_report.py) runs, checks its results and counts right."""

import importlib.util
import sys
from pathlib import Path

import pytest

from openlpu.firmware.compiler import compile_elementwise
from openlpu.params import preset

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "kernel_report.py"


@pytest.fixture(scope="module")
def kr():
    spec = importlib.util.spec_from_file_location("kernel_report", _PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_rows_on_the_model(kr):
    lines = []
    rows = kr.report(["elementwise", "matmul+requantize+relu"], "model", out=lines.append)
    assert len(rows) == len(lines) == 4
    for r in rows:
        assert r["check"], r
        assert r["cycles"] == r["predicted"], r
        assert 0 < r["max_queue_words"] <= r["words"] and r["max_queue_words"] <= r["imem_words"]
    assert rows[-1]["abc"] > 0 and rows[0]["abc"] == 0


def test_static_figures(kr):
    pkg = compile_elementwise(preset("mini"), "ADD", 8, 24)
    f = kr.figures(pkg)
    assert f["words"] == sum(len(w) for w in pkg.queues.values())
    # 8 rows x 3 column tiles: each vector is read twice, added once and written once
    assert f["issued"] == 8 * 3 * 4


def test_vxm_accuracy_benchmark_runs(capsys):
    """benchmarks/vxm_accuracy.py prints its figures; the attention one within the documented
    0.01 bound."""
    spec = importlib.util.spec_from_file_location("vxm_accuracy", _PATH.with_name("vxm_accuracy.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.main()
    out = capsys.readouterr().out
    line = [x for x in out.splitlines() if x.startswith("attention probabilities")][0]
    assert float(line.rsplit(" ", 1)[1]) < 0.01


def test_base_rtl_benchmark_checks_on_the_model(capsys):
    """benchmarks/base_rtl.py (the base kernels on the Verilator RTL) runs its checks; here on
    the reference model, one kernel, so the script stays working without a base build."""
    path = _PATH.with_name("base_rtl.py")
    spec = importlib.util.spec_from_file_location("base_rtl", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--backend", "model", "--only", "rmsnorm"]) == 0
    out = capsys.readouterr().out
    assert "RMSNorm 16x384" in out and "exact" in out and ", equal" in out


def test_speed_table_rows_check_and_bound_on_the_model():
    """benchmarks/speed_table.py: a decode-shaped row's bound is planes x max(install, M) and its
    run is exact with measured == predicted; the markdown table names the target."""
    import numpy as np

    from openlpu import isa
    from openlpu.host.device import Device
    spec = importlib.util.spec_from_file_location("speed_table", _PATH.with_name("speed_table.py"))
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod                 # its dataclass looks its module up there
    spec.loader.exec_module(mod)
    row, pkg, ins, want = mod._decode(np.random.default_rng(1), 8, 384, 384)
    install = -(-mod.VL // isa.wide_load_feed_rows(mod.P))
    assert row.bound == 36 * max(install, 8) and row.figure == "ratio"
    with Device.open("model", mod.P) as dev:
        cycles, got = dev.run_package(pkg, ins)
    assert cycles == pkg.predicted_cycles == row.predicted
    np.testing.assert_array_equal(got["C"], want["C"])
    row.measured = cycles
    assert row.value == cycles / row.bound and row.met == (row.value <= 1.25)
    table = mod._markdown([row], "model")
    assert "| matmul 8x384x384 |" in table and "<= 1.25x" in table
