"""The timing-closure registers of ``LpuParams``: ``icu_issue_reg``, ``host_start_reg`` and
``mxm_act_reg``.

With them switched on (and ``mxm_pipeline`` > 0) the RTL must still agree with the reference
model and with numpy on every output element, and measured cycles must equal the compiler's
prediction. The existing unit tests of the MXM and the chip are rerun here on pipelined
variants of small presets; their expectations come from numpy, the documented timing rules and
the reference model, never from the RTL.

The ICU and MXM slice tests and the cycle-by-cycle START / DONE tests run in Amaranth's
simulator on ``tiny`` (every combination of ``icu_issue_reg`` and ``host_start_reg``). The
whole-chip programs run on two Verilator builds (:mod:`tests.rtl.chiprun`); with
``tiny_lite_issue`` and ``tiny8_lite_started`` of ``test_size_options.py`` they cover
``icu_issue_reg`` without ``host_start_reg``, ``host_start_reg`` without ``icu_issue_reg``, and
both, each with ``mxm_act_reg`` and a pipelined MXM:

* ``mini_issue``: ``mini`` (every slice kind, 2 superlanes) with ``icu_issue_reg``,
  ``mxm_act_reg`` and ``mxm_pipeline=1``;
* ``mini4_piped``: ``mini4`` (every slice kind, 4 superlanes) with all three registers and
  ``mxm_pipeline=2``.
"""

import dataclasses

import numpy as np
import pytest

from openlpu import hostmap, isa
from openlpu.firmware.compiler import compile_elementwise, compile_matmul
from openlpu.host.device import Device
from openlpu.isa import ErrorFlag, HostReg
from openlpu.params import PRESETS, LpuParams, preset
from openlpu.rtl.testing import run_sim
from openlpu.rtl.sweep import CONFIG_SLICE_KINDS, config_word

from ..conftest import int8_operands
from . import test_chip as chip_tests
from . import test_size_options as size_tests
from .chiprun import ChipRun, chip_params
from . import test_icu as icu_tests
from . import test_mxm as mxm_tests

OP = isa.BY_MNEMONIC
# Per-test limit of the tests that may build a Verilator model (minutes on a loaded machine);
# every simulator run inside them has its own wall-clock limit.
BUILD_TIMEOUT = 1800


def piped(name, *, issue=True, act=True, pipeline=1, start=False, rename=None):
    return dataclasses.replace(preset(name), icu_issue_reg=issue, mxm_act_reg=act,
                               mxm_pipeline=pipeline, host_start_reg=start,
                               name=rename or preset(name).name)


# The pipelined chips of the whole-chip tests (one Verilator build each).
MINI_ISSUE = piped("mini", issue=True, act=True, pipeline=1, start=False, rename="mini_issue")
MINI4_PIPED = piped("mini4", issue=True, act=True, pipeline=2, start=True, rename="mini4_piped")
PIPED_CHIPS = chip_params(MINI_ISSUE, MINI4_PIPED)


# -- parameters and the ISA figures derived from them -----------------------------------------

def test_defaults_leave_presets_unchanged():
    """Switches left at their defaults stay out of a preset's JSON (so its CONFIG_ID does not
    change); every preset registers START, and its JSON says so."""
    for p in PRESETS.values():
        d = p.to_dict()
        for f in ("icu_issue_reg", "mxm_act_reg", "host_start_reg"):
            assert (f in d) == getattr(p, f), (p.name, f)
        assert d["host_start_reg"] is True, p.name
        assert LpuParams.from_dict(d) == p
        assert LpuParams.from_dict({k: v for k, v in d.items() if k != "host_start_reg"}) \
            == dataclasses.replace(p, host_start_reg=False)
    base, var = preset("tiny"), piped("tiny")
    assert var.config_id != base.config_id       # a pipelined bitstream is told apart
    assert LpuParams.from_json(var.to_json()) == var
    with pytest.raises(ValueError, match="icu_issue_reg must be True or False"):
        dataclasses.replace(base, icu_issue_reg=1)
    with pytest.raises(ValueError, match="host_start_reg must be True or False"):
        dataclasses.replace(base, host_start_reg=1)
    plain = dataclasses.replace(base, host_start_reg=False)
    assert base.config_id not in (plain.config_id, var.config_id)
    assert plain.config_id != var.config_id
    started = base
    assert LpuParams.from_json(started.to_json()) == started
    assert all(p.host_start_reg for p in PRESETS.values())


@pytest.mark.parametrize("issue,act,pipeline,start",
                         [(0, 0, 0, 0), (1, 0, 0, 0), (0, 1, 0, 0), (1, 1, 2, 0),
                          (0, 0, 0, 1), (1, 0, 0, 1), (1, 1, 2, 1)])
def test_latencies_follow_the_parameters(issue, act, pipeline, start):
    p = piped("tiny", issue=bool(issue), act=bool(act), pipeline=pipeline, start=bool(start))
    assert isa.start_delay(p) == 2 * issue + start
    plain = piped("tiny", issue=False, act=False, pipeline=0, start=False)
    assert isa.drain_cycles(p) - isa.drain_cycles(plain) == 2 * issue + start
    assert OP["ABC"].d_func(p) == p.superlanes + pipeline + act
    for m in ("READ", "WRITE", "ACC", "LW"):      # the other latencies do not move
        assert OP[m].d_func(p) == OP[m].d_func(preset("tiny"))


# -- ICU: the same issue trace, two cycles later ---------------------------------------------

def _icu_programs(p):
    e = icu_tests.enc
    return {
        "read": [e("READ", addr=1, stream=2, dir=0), e("NOP", count=3),
                 e("READ", addr=2, stream=3, dir=1), e("REPEAT", count=3, interval=2, stride=1),
                 e("NOTIFY"), 0x3F, e("READ", addr=4, stream=7, dir=1), e("HALT"),
                 e("READ", addr=5, stream=1, dir=0)],
        "compute": [e("ABC", acc=1, stream=2, dir=0, accumulate=0),
                    e("CONFIG", mask=1), e("ABC", acc=2, stream=1, dir=1, accumulate=1),
                    e("REPEAT", count=2, interval=1, stride=-1),
                    e("REPEAT", count=3, interval=3, stride=5), e("HALT")],
        "write": [e("WRITE", addr=3, stream=1, dir=1)] * 5 + [0x3F, e("NOP", count=2)] * 3
                 + [e("WRITE", addr=7, stream=0, dir=0),
                    e("REPEAT", count=4, interval=1, stride=-2)] + [e("NOP", count=1)] * 4,
    }


@pytest.mark.parametrize("role", ["read", "compute", "write"])
def test_icu_pipeline_delays_everything_by_two(params, role):
    """Issue, errors and done: the unpipelined ICU's trace, two cycles later (isa.start_delay).

    The ``write`` program issues back to back and then runs past a short instruction memory
    (IMEM_OVERRUN), so the fetch queue must deliver one word per cycle up to the end.
    """
    base = params
    if role == "write":
        base = dataclasses.replace(base, imem_words=len(_icu_programs(base)["write"]))
    var = dataclasses.replace(base, icu_issue_reg=True)
    d = isa.start_delay(var) - isa.start_delay(base)   # the issue register's two cycles
    q = icu_tests.queue_of(base, role)
    words = _icu_programs(base)[role]
    n = 30
    t_base = icu_tests.run_icu(base, q, words, n)
    t_var = icu_tests.run_icu(var, q, words, n)
    assert t_var[d:] == t_base[:-d]
    # before cycle 0: not done, no error; the START CONFIG of a swept queue in the cycle before
    start_word = config_word(-1) if q.slice.kind in CONFIG_SLICE_KINDS else None
    assert t_var[:d] == [(None, 0, False)] * (d - 1) + [(start_word, 0, False)]
    if role == "write":
        assert any(e & ErrorFlag.IMEM_OVERRUN for _, e, _ in t_base)
    issued = [w for w, _, _ in t_base if w is not None]
    assert len(issued) >= 4                          # the programs do issue something


@pytest.mark.parametrize("role", ["read", "compute"])
def test_icu_trace_unchanged_by_host_start_reg(params, role):
    """``host_start_reg`` lives in the register block: the ICU's own trace (plain and
    pipelined) does not change, and the pipelined ICU still builds."""
    q = icu_tests.queue_of(params, role)
    words = _icu_programs(params)[role]
    for issue in (False, True):
        base = dataclasses.replace(params, icu_issue_reg=issue)
        var = dataclasses.replace(base, host_start_reg=True)
        assert icu_tests.run_icu(var, q, words, 24) == icu_tests.run_icu(base, q, words, 24)


# -- MXM: the slice tests on pipelined datapaths ----------------------------------------------

MXM_VARIANTS = [("tiny", 0), ("tiny", 1), ("tiny", 2), ("quad", 1)]


@pytest.mark.timeout(180)
@pytest.mark.parametrize("name,pipeline", MXM_VARIANTS)
def test_mxm_act_reg_matmul(name, pipeline):
    p = piped(name, issue=False, pipeline=pipeline)
    mxm_tests.check_matmul(p, seed=11 + pipeline)
    mxm_tests.test_back_to_back_accumulate_every_cycle(p)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("name", ["tiny", "quad"])
def test_mxm_act_reg_lwt_iw_order_and_errors(name):
    """LW/LWT/IW/ABC in adjacent and equal cycles keep their order; errors keep their cycle."""
    p = piped(name, issue=False, pipeline=1)
    mxm_tests.test_errors(p)
    mxm_tests.test_lwt_matmul(p)
    mxm_tests.test_lw_and_lwt_mixed(p)
    mxm_tests.test_lwt_per_superlane_timing(p)
    mxm_tests.test_lwt_errors(p)


# -- chip: RTL against the reference model with the registers ----------------------------------

@pytest.mark.timeout(BUILD_TIMEOUT)
@pytest.mark.parametrize("chip", PIPED_CHIPS)
def test_chip_against_model(chip):
    """The chip tests of ``test_chip.py`` on the pipelined chips (Verilator): MEM copies, NOP /
    HALT cycles, REPEAT, the MXM through REPEAT, SYNC / NOTIFY, CONFIG masks, GATHER and the
    error cases, RTL == model == numpy."""
    chip_tests.test_mem_copy_through_fabric(chip)
    chip_tests.test_nop_halt_and_cycles(chip)
    chip_tests.test_repeat_read_write(chip, 3, -3, -1)
    chip_tests.test_repeat_mxm_lw_abc_acc(chip)
    chip_tests.test_sync_notify(chip)
    chip_tests.test_config_partial_mask(chip)
    chip_tests.test_gather_scatter(chip, "gather")
    chip_tests.test_xcheck_host_traffic(chip)


# (icu_issue_reg, host_start_reg) -> the Verilator build with that combination
ERROR_CYCLE_CHIPS = [pytest.param(ChipRun(p, "verilator"), id=f"{i:d}{s:d}-{p.name}-verilator")
                     for (i, s), p in [((False, False), preset("tiny")),
                                       ((True, False), MINI_ISSUE),
                                       ((False, True), size_tests.TINY8_LITE_STARTED),
                                       ((True, True), MINI4_PIPED)]]


@pytest.mark.timeout(BUILD_TIMEOUT)
@pytest.mark.parametrize("chip", ERROR_CYCLE_CHIPS)
def test_error_cycle_of_slice_errors_moves_by_the_issue_delay(chip):
    """ERROR_CYCLE and CYCLES of slice and ICU errors do not change with the pipelined ICUs or
    the registered START: the same values (from the run-cycle rules) on each combination of
    ``icu_issue_reg`` and ``host_start_reg``, RTL == model."""
    p = chip.p
    e = {m: OP[m].encode for m in OP}
    w1 = f"mem_w{p.mem_slices - 1}"
    runs = [
        chip_tests.host_traffic(p, {f"{w1}.read": chip_tests.asm(
            {3: e["READ"](addr=p.mem_addr_words, stream=0, dir=0)}, 6)}),
        chip_tests.host_traffic(p, {"mem_w0.read": [e["NOP"](count=2),
                                                    e["WRITE"](addr=0, stream=0, dir=0),
                                                    e["HALT"]()]}),
    ]
    got = chip_tests.cross_check(chip, runs)        # RTL == model: CYCLES, ERRORS, ERROR_CYCLE
    for k, (flag, cyc) in enumerate([(ErrorFlag.ADDR_RANGE, 3), (ErrorFlag.BAD_INSTRUCTION, 2)]):
        c, err, ec = got[k][0]
        assert err == int(flag), k
        assert c == [7, 4][k], k                   # max(HALT cycle) + 1
        assert ec == cyc, k


# -- START: DONE rises start_delay cycles later; a restart drops the old run's flags -----------

START_VARIANTS = [(False, False), (True, False), (False, True), (True, True)]


def _halt_program(t_bad, t_halt):
    """Queue words: BAD_INSTRUCTION at cycle ``t_bad`` (if not None), HALT at ``t_halt``."""
    e = {m: OP[m].encode for m in OP}
    if t_bad is None:
        return [e["NOP"](count=t_halt), e["HALT"]()]
    return [e["NOP"](count=t_bad), 0x3F, e["NOP"](count=t_halt - t_bad - 1), e["HALT"]()]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("issue,start", START_VARIANTS)
def test_done_rises_start_delay_cycles_later(issue, start):
    """STATUS.DONE (the chip's ``done``) rises in host cycle ``h + 1 + start_delay + T + 1``
    for a START written in ``h`` and a last HALT at run cycle ``T``; CYCLES is ``T + 1``."""
    p = piped("tiny", issue=issue, act=False, pipeline=0, start=start)
    t_halt = 5
    b = chip_tests.ChipBench(p)
    got = {}

    async def tb(ctx):
        await b.load_programs(ctx, {"mem_w0.read": _halt_program(None, t_halt)})
        await b.bus.start(ctx)                   # written in cycle h; now in cycle h + 1
        rise = None
        for i in range(1, 40):
            if ctx.get(b.dut.done):
                rise = i
                break
            assert ctx.get(b.dut.running), i     # RUNNING from h + 1 until DONE
            await ctx.tick()
        got["rise"] = rise
        assert not ctx.get(b.dut.running)
        got["cycles"] = await b.bus.reg(ctx, HostReg.CYCLES)
        got["errors"] = await b.bus.reg(ctx, HostReg.ERRORS)

    run_sim(b.dut, tb, max_cycles=4000)
    assert got["rise"] == 1 + isa.start_delay(p) + t_halt + 1
    assert got["cycles"] == t_halt + 1
    assert got["errors"] == 0


@pytest.mark.timeout(180)
@pytest.mark.parametrize("issue,start", START_VARIANTS)
def test_restart_drops_the_old_runs_flags(issue, start):
    """A START while a run is going, written at every cycle around the old run's
    BAD_INSTRUCTION: the old run's flag (raised before the new run's cycle 0) is never
    recorded, the new run reports its own flag with its own ERROR_CYCLE, and CYCLES is that of
    a clean run."""
    p = piped("tiny", issue=issue, act=False, pipeline=0, start=start)
    t_bad, t_halt = 6, 12
    d = isa.start_delay(p)
    offsets = range(t_bad - 1, t_bad + d + 4)    # restart writes around the old flag
    b = chip_tests.ChipBench(p)
    got = {}
    ctrl = hostmap.reg_addr(HostReg.CTRL)

    async def tb(ctx):
        await b.load_programs(ctx, {"mem_w0.read": _halt_program(t_bad, t_halt)})
        for off in offsets:
            await b.bus.start(ctx)               # START in h0
            for _ in range(off):                 # restart in h0 + 1 + off
                await ctx.tick()
            assert ctx.get(b.dut.running) and not ctx.get(b.dut.done)
            await b.bus.write(ctx, ctrl, int(isa.Ctrl.START))
            await b.bus.wait_done(ctx)
            got[off] = (await b.bus.reg(ctx, HostReg.CYCLES),
                        await b.bus.reg(ctx, HostReg.ERRORS),
                        await b.bus.reg(ctx, HostReg.ERROR_CYCLE))

    run_sim(b.dut, tb, max_cycles=20000)
    for off in offsets:
        assert got[off] == (t_halt + 1, int(ErrorFlag.BAD_INSTRUCTION), t_bad), off


# -- host driver: compiled kernels, bit-exact, cycles as predicted --------------------------------

def _run(p, pkg, inputs, backends):
    out = {}
    for backend in backends:
        with Device.open(backend, p) as dev:
            dev.load(pkg)
            dev.write_inputs(inputs)
            out[backend] = (dev.run(), dev.read_outputs())
    return out


@pytest.mark.timeout(BUILD_TIMEOUT)
@pytest.mark.parametrize("chip", PIPED_CHIPS)
def test_matmul_on_pipelined_chip(chip):
    """A compiled matmul (K and N past the vector length) on the model and the Verilator RTL."""
    p = chip.p
    rng = np.random.default_rng(5)
    M, K, N = 3, p.vl + 2, 5
    pkg = compile_matmul(p, M, K, N)
    A, B = int8_operands(rng, (M, K)), int8_operands(rng, (K, N))
    A[0, :] = -128
    A[1, :3] = [127, 0, 1]
    B[:, 0] = 127
    B[:3, 1] = [-128, 0, 1]
    want = A.astype(np.int32) @ B.astype(np.int32)
    for backend, (cycles, outs) in _run(p, pkg, {"A": A, "B": B}, ("model", chip.sim)).items():
        assert cycles == pkg.predicted_cycles, backend
        np.testing.assert_array_equal(outs["C"], want, err_msg=backend)


@pytest.mark.timeout(BUILD_TIMEOUT)
@pytest.mark.parametrize("chip", PIPED_CHIPS)
def test_elementwise_on_pipelined_chip(chip):
    """VXM and MEM through the issue register (with and without the registered START)."""
    p = chip.p
    rng = np.random.default_rng(8)
    R, C = 2, p.vl
    pkg = compile_elementwise(p, "ADD", R, C)
    A, B = int8_operands(rng, (R, C)), int8_operands(rng, (R, C))
    A[0, :4] = [-128, 127, 0, 1]
    B[0, :4] = [-1, 1, -128, 127]
    want = ((A + B + 128) % 256) - 128            # int8 wrap-around
    for backend, (cycles, outs) in _run(p, pkg, {"A": A, "B": B}, ("model", chip.sim)).items():
        assert cycles == pkg.predicted_cycles, backend
        np.testing.assert_array_equal(outs["Y"], want, err_msg=backend)
