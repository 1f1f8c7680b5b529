"""Test selection for the whole regression (``tests/`` and ``verification/``).

Every test gets markers from where it lives, kept in this one table, so that

* ``make test-fast`` (``-m "not verilator and not synth and not slow"``) runs the unit tests
  in a few minutes;
* ``make test`` runs everything, on ``TEST_JOBS`` pytest-xdist workers, longest tests first.

Markers:

``verilator``
    builds or opens a Verilator model of a chip (the first build of a preset takes minutes;
    later ones come from the cache under ``build/``).
``synth``
    FPGA synthesis and place-and-route (minutes; skipped with a reason when the tools are
    missing).
``base_rtl``
    opens the Verilator model of preset ``base`` (VL 64: about 6 minutes to build the first
    time); ``make test`` leaves these out to stay within its time budget, ``make test-base``
    runs them (the benchmarks ``base_rtl.py``, ``graph_blocks.py``, ``speed_table.py`` and
    ``decoder_chip.py --backend verilator`` run the same kernels there).
``slow``
    a test of about 20 s or more in Amaranth's simulator, or an accuracy sweep of a model's
    reference over its whole sentence or prompt set.
"""

import pytest

# Modules whose tests build or open a Verilator model (besides these, every test whose
# parameters name the verilator backend, e.g. ``test_run_limit[verilator]``, and the whole-chip
# tests of ``tests/rtl``, whose ids end in ``-verilator``: see ``tests/rtl/chiprun.py``).
VERILATOR_MODULES = (
    "verification/cocotb/",
    "verification/test_isa_vs_model.py",
    "verification/test_norm_rtl.py",
    "verification/test_transpose_rtl.py",
    "verification/test_kernels.py",
    "verification/test_matmul_layouts.py",
    "verification/test_device_drain.py",
    "verification/test_fuzz.py",
    "verification/test_error_cycle.py",
    "verification/test_collision_priority.py",
    "verification/test_lw_lwt_order.py",
    "tests/host/test_backends.py",
    "tests/host/test_backends_agree.py",
)

# Modules whose Verilator tests run on preset base (marker ``base_rtl``).
BASE_RTL_MODULES = ("tests/firmware/test_graph_blocks.py",)

# Tests (module path, test-name prefix) that run 20 s or more in Amaranth's simulator,
# measured on the 2-core machine, and the models' accuracy sweeps.
SLOW_TESTS = (
    ("tests/host/test_serial_bridge.py", "test_matmul_through_bridge[quad"),
    ("tests/rtl/test_chip.py", "test_generate_verilog[default"),
    ("tests/rtl/test_chip.py", "test_registers[quad"),
    ("tests/rtl/test_pipeline_params.py", "test_mxm_act_reg_lwt_iw_order_and_errors"),
    ("tests/rtl/test_pipeline_params.py", "test_mxm_act_reg_matmul[quad"),
    ("tests/rtl/test_vxm.py", "test_verilog_convert"),
    ("tests/rtl/test_vxm.py", "test_binary_ops[quad"),
    ("tests/rtl/test_vxm.py", "test_unary_compare_cast[quad"),
    ("tests/rtl/test_vxm.py", "test_b_modes_const_select[quad"),
    ("tests/rtl/test_vxm.py", "test_requantize[quad"),
    ("tests/rtl/test_mxm.py", "test_booth_matmul[quad"),
    ("tests/rtl/test_sxm.py", "test_verilog_convert"),
    # accuracy sweeps of the model references over many sentences or prompts (numpy, 6-10 s)
    ("tests/models/test_minilm_int.py", "test_pair_ranking_kept"),
    ("tests/models/test_decoder.py", "test_task_accuracy"),
)

_ORDER = {"synth": 0, "verilator": 1, "slow": 2}


def pytest_configure(config):
    config.addinivalue_line("markers", "verilator: builds or opens a Verilator model of a chip")
    config.addinivalue_line("markers", "synth: FPGA synthesis + place-and-route (minutes)")
    config.addinivalue_line("markers", "slow: 20 s or more in Amaranth's simulator")
    config.addinivalue_line("markers", "base_rtl: opens the Verilator model of preset base")


def pytest_collection_modifyitems(config, items):
    for item in items:
        path = item.nodeid.split("::")[0]
        name = item.nodeid.split("::")[-1]
        if path.startswith(VERILATOR_MODULES) or "[verilator" in name or "-verilator" in name:
            item.add_marker(pytest.mark.verilator)
            if path in BASE_RTL_MODULES:
                item.add_marker(pytest.mark.base_rtl)
        if any(path == mod and name.startswith(prefix) for mod, prefix in SLOW_TESTS):
            item.add_marker(pytest.mark.slow)

    # Longest first: the synthesis and Verilator tests interleaved with the slow simulator
    # tests, then the rest, each group in collection order. With several xdist workers the long
    # tests then overlap instead of one of them finishing the run alone, and while one worker
    # builds a Verilator model (the others that need it wait on its build lock) another has a
    # simulator test to run.
    def rank(item):
        ranks = [_ORDER[m.name] for m in item.iter_markers() if m.name in _ORDER]
        return min(ranks, default=len(_ORDER))
    built = [it for it in items if rank(it) < _ORDER["slow"]]
    slow = [it for it in items if rank(it) == _ORDER["slow"]]
    rest = [it for it in items if rank(it) > _ORDER["slow"]]
    mixed = []
    for i in range(max(len(built), len(slow))):
        mixed += built[i:i + 1] + slow[i:i + 1]
    items[:] = mixed + rest
