# amaranth: UnusedElaboratable=no
"""The size options of ``LpuParams``: ``icu_repeat`` (the ICUs' REPEAT engine) and
``mem_gather`` (one byte memory per MEM lane, which GATHER / SCATTER need).

On chips with the options off (``tiny_lite``, an 8-lane variant, and the ``ice40`` preset) the
RTL is compared with the reference model (CYCLES, ERRORS, ERROR_CYCLE and every MEM byte) and
with numpy; words of the instructions such a chip lacks are written straight
into the instruction memories (bypassing the package check) and must raise BAD_INSTRUCTION at the
same cycle on both, the rest of the program unaffected. The assembler, package and compiler
checks are in ``tests/firmware``; the ICU and MEM slice unit tests in ``test_icu.py`` and
``test_mem.py``.

The whole-chip programs run on two Verilator builds (:mod:`tests.rtl.chiprun`), which also
carry timing-closure registers of ``test_pipeline_params.py``: ``tiny_lite_issue``
(``tiny_lite`` with ``icu_issue_reg``) and ``tiny8_lite_started`` (8 lanes, two host words per
tile, with ``host_start_reg``, ``mxm_act_reg`` and ``mxm_pipeline=2`` but no issue register).
``tiny_lite`` itself and ``ice40`` (one superlane of two lanes) run in Amaranth's simulator.
"""

import dataclasses

import numpy as np
import pytest

from openlpu import hostmap, isa
from openlpu.firmware.compiler import compile_matmul
from openlpu.host.device import Device, DeviceError
from openlpu.isa import ErrorFlag
from openlpu.params import PRESETS, LpuParams, ParamsError, preset
from openlpu.rtl.testing import run_sim

from ..conftest import int8_operands
from . import test_chip as chip_tests
from .chiprun import ChipRun, chip_params
from .test_chip import arrival, asm, cross_check, host_traffic, idx, rand_vecs, route_dir

OP = isa.BY_MNEMONIC
# Per-test limit of the tests that may build a Verilator model (minutes on a loaded machine);
# every simulator run inside them has its own wall-clock limit.
BUILD_TIMEOUT = 1800

TINY_LITE = dataclasses.replace(preset("tiny"), icu_repeat=False, mem_gather=False,
                                name="tiny_lite")
TINY8_LITE = dataclasses.replace(preset("tiny"), lanes=8, icu_repeat=False, mem_gather=False,
                                 name="tiny8_lite")
LITE = [TINY_LITE, TINY8_LITE, preset("ice40")]
ids = lambda p: p.name      # noqa: E731
# Verilator builds: the options off together with timing-closure registers
TINY_LITE_ISSUE = dataclasses.replace(TINY_LITE, icu_issue_reg=True, name="tiny_lite_issue")
TINY8_LITE_STARTED = dataclasses.replace(TINY8_LITE, host_start_reg=True, mxm_act_reg=True,
                                         mxm_pipeline=2, name="tiny8_lite_started")
LITE_CHIPS = chip_params(TINY_LITE_ISSUE, TINY8_LITE_STARTED)
# every lite chip, each on its simulator
ALL_LITE = (chip_params(TINY_LITE, preset("ice40"), sim="amaranth") + LITE_CHIPS)


# -- parameters -----------------------------------------------------------------------------

def test_options_and_what_they_remove():
    for p in PRESETS.values():              # presets at the defaults keep their JSON
        d = p.to_dict()
        for f in ("icu_repeat", "mem_gather"):
            assert (f in d) == (not getattr(p, f)), (p.name, f)
        assert LpuParams.from_dict(d) == p
    ice = preset("ice40")
    assert not ice.icu_repeat and not ice.mem_gather
    assert isa.unavailable(ice) == {"REPEAT", "GATHER", "SCATTER"}
    assert isa.unavailable(preset("tiny")) == frozenset()
    norep = dataclasses.replace(preset("tiny"), icu_repeat=False)
    assert isa.unavailable(norep) == {"REPEAT"}
    assert norep.config_id != preset("tiny").config_id != TINY_LITE.config_id
    assert LpuParams.from_json(TINY_LITE.to_json()) == TINY_LITE
    with pytest.raises(ParamsError, match="mem_gather must be True or False"):
        dataclasses.replace(preset("tiny"), mem_gather=0)
    q = ice.queue("mem_e0.read")
    assert not isa.available(OP["GATHER"], q.role, ice)
    assert isa.available(OP["READ"], q.role, ice)
    assert isa.unavailable_reason(OP["WRITE"], q.role, ice) == "WRITE is not allowed in a read queue"
    assert isa.unavailable_reason(OP["REPEAT"], q.role, ice) == (
        "REPEAT is not implemented by preset 'ice40' (icu_repeat=False)")


# -- compiled matmul: RTL == model == numpy, CYCLES == prediction ----------------------------

def _matmul_case(p, M, K, N, seed):
    rng = np.random.default_rng(seed)
    A, B = int8_operands(rng, (M, K)), int8_operands(rng, (K, N))
    A[0, :] = np.resize([-128, 127, 0, 1], K)
    A[1, :] = -128
    B[:, 0] = 127
    B[:, 1] = np.resize([-128, 0, 1, 127], K)
    return A, B, A.astype(np.int64) @ B.astype(np.int64)


@pytest.mark.timeout(BUILD_TIMEOUT)
@pytest.mark.parametrize("chip,shape", [
    pytest.param(ChipRun(TINY_LITE_ISSUE, "verilator"), (3, 10, 9), id="tiny_lite_issue-verilator"),
    pytest.param(ChipRun(TINY8_LITE_STARTED, "verilator"), (3, 18, 17),
                 id="tiny8_lite_started-verilator"),
    pytest.param(ChipRun(preset("ice40"), "amaranth"), (5, 9, 7), id="ice40-amaranth")])
def test_compiled_matmul_on_rtl(chip, shape):
    p = chip.p
    M, K, N = shape
    assert K > p.vl and N > p.vl
    if p.name == "ice40":
        assert M > p.mxm_acc_words
    pkg = compile_matmul(p, M, K, N)
    assert not any(isa.decode(w)[0].mnemonic == "REPEAT" for ws in pkg.queues.values() for w in ws)
    A, B, want = _matmul_case(p, M, K, N, seed=M * K * N)
    for backend in ("model", chip.sim):
        with Device.open(backend, p) as dev:
            cycles, out = dev.run_package(pkg, {"A": A, "B": B})
        assert cycles == pkg.predicted_cycles, backend
        np.testing.assert_array_equal(out["C"], want, err_msg=backend)


def _nop_to_bad(words, bad, skip=0):
    """Replace a NOP (count >= 1, the ``skip``-th one) by ``bad`` followed by NOP count-1: the
    queue keeps its timing if the chip skips ``bad`` in one cycle. Returns (words, bad's cycle)."""
    t, seen = 0, 0
    for i, w in enumerate(words):
        idef, f = isa.decode(w)
        if idef.mnemonic == "NOP":
            if seen == skip:
                rest = [OP["NOP"].encode(count=f["count"] - 1)] if f["count"] > 1 else []
                return words[:i] + [bad] + rest + words[i + 1:], t
            seen += 1
            t += f["count"]
        else:
            assert idef.mnemonic != "REPEAT"
            t += 1
    raise AssertionError("no NOP in the queue")


@pytest.mark.timeout(BUILD_TIMEOUT)
@pytest.mark.parametrize("chip", chip_params(TINY_LITE_ISSUE)
                         + chip_params(preset("ice40"), sim="amaranth"))
@pytest.mark.parametrize("mnemonic", ["REPEAT", "GATHER"])
def test_lacking_word_in_a_compiled_matmul(chip, mnemonic):
    """A word the chip lacks, written over a NOP of a compiled matmul through the raw IMEM
    writes of the backend: BAD_INSTRUCTION at that word's cycle on the RTL and the model, and
    the program (whose timing is unchanged) still computes A @ B in the predicted cycles."""
    p = chip.p
    M, K, N = 3, p.vl + 2, p.vl + 1
    pkg = compile_matmul(p, M, K, N)
    queue = "mem_w0.read" if mnemonic == "GATHER" else "mxm_w.compute"
    bad = (OP["REPEAT"].encode(count=2, interval=1, stride=1) if mnemonic == "REPEAT" else
           OP["GATHER"].encode(addr=1, map_stream=0, map_dir=0, stream=1, dir=0))
    words, t_bad = _nop_to_bad(list(pkg.queues[queue]), bad, skip=1)
    assert len(words) <= p.imem_words
    A, B, want = _matmul_case(p, M, K, N, seed=7)
    got = {}
    for backend in ("model", chip.sim):
        with Device.open(backend, p) as dev:
            dev.load(pkg)
            qi = p.queue(queue).index
            dev.backend.write_many([(hostmap.imem_addr(p, qi, i), w) for i, w in enumerate(words)])
            dev.write_inputs({"A": A, "B": B})
            with pytest.raises(DeviceError, match="BAD_INSTRUCTION"):
                dev.run()
            regs = tuple(dev.backend.read(hostmap.reg_addr(r)) for r in chip_tests.REGS)
            got[backend] = regs
            np.testing.assert_array_equal(dev.read_outputs()["C"], want, err_msg=backend)
    assert got[chip.sim] == got["model"] == (pkg.predicted_cycles,
                                               int(ErrorFlag.BAD_INSTRUCTION), t_bad)


# -- hand-placed programs: RTL vs model through the host bus ---------------------------------

@pytest.mark.timeout(BUILD_TIMEOUT)
@pytest.mark.parametrize("chip", ALL_LITE)
def test_lacking_words_are_bad_instructions(chip):
    """REPEAT, GATHER and SCATTER words between READs and WRITEs that move data: each run raises
    BAD_INSTRUCTION at the word's cycle (RTL == model), the copies around it arrive intact
    (numpy), and nothing else is written (every MEM byte equal on RTL and model); with the
    pipelined ICU (``tiny_lite_issue``) and the registered START (``tiny8_lite_started``)
    ERROR_CYCLE is unchanged."""
    p = chip.p
    rng = np.random.default_rng(81)
    n = p.mem_slices
    src, dst = f"mem_w{n - 1}", f"mem_e{n - 1}"
    d = int(route_dir(p, src, dst))
    s = p.streams - 1
    vecs = rand_vecs(rng, p, 3)
    preload = [(idx(p, src), a, vecs[a]) for a in range(3)]
    t = [1, 3, 5]                                     # READ a at t[a]; the bad word at 2 or 4
    reads = {t[a]: OP["READ"].encode(addr=a, stream=s, dir=d) for a in range(3)}
    writes = {arrival(p, src, dst, t[a]): OP["WRITE"].encode(addr=p.mem_words + 2 * a, stream=s,
                                                             dir=d) for a in range(3)}
    repeat = OP["REPEAT"].encode(count=2, interval=1, stride=1)
    gather = OP["GATHER"].encode(addr=2, map_stream=0, map_dir=d, stream=s, dir=d)
    scatter = OP["SCATTER"].encode(addr=p.mem_words + 1, map_stream=0, map_dir=d, stream=s, dir=d)
    t_w = sorted(writes)
    cases = [  # (programs, cycle of the bad word)
        ({f"{src}.read": asm({**reads, 2: repeat}), f"{dst}.write": asm(writes)}, 2),
        ({f"{src}.read": asm({**reads, 4: gather}), f"{dst}.write": asm(writes)}, 4),
        ({f"{src}.read": asm(reads), f"{dst}.write": asm({**writes, t_w[1] + 1: scatter})},
         t_w[1] + 1),
        ({f"{src}.read": asm(reads), f"{dst}.write": asm({**writes, t_w[0] + 1: repeat})},
         t_w[0] + 1),
    ]
    runs = [host_traffic(p, progs, preload) for progs, _ in cases]
    res = cross_check(chip, runs, [ErrorFlag.BAD_INSTRUCTION] * len(cases))
    assert t_w[-1] > max(reads) and t_w[1] + 1 < t_w[2]
    for k, ((cycles, _, err_cycle), mem) in enumerate(res):
        assert err_cycle == cases[k][1], f"run {k}"
        assert cycles == t_w[-1] + 2, f"run {k}"        # the write queue's HALT + 1
        for a in range(3):
            np.testing.assert_array_equal(mem[idx(p, dst), p.mem_words + 2 * a], vecs[a],
                                          err_msg=f"run {k} copy {a}")
            np.testing.assert_array_equal(mem[idx(p, dst), p.mem_words + 2 * a + 1],
                                          np.zeros(p.vl, np.uint8), err_msg=f"run {k}")


@pytest.mark.timeout(BUILD_TIMEOUT)
@pytest.mark.parametrize("chip", ALL_LITE)
def test_host_mem_roundtrip(chip):
    """Host writes and reads of every 32-bit lane group of MEM words, IMEM words, registers."""
    chip_tests.test_host_roundtrip(chip)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("p", [TINY_LITE, preset("ice40")], ids=ids)
def test_registers_cycle_by_cycle(p):
    """The register reads of the host bus, cycle by cycle (Amaranth's simulator). The 8-lane
    chip's ID and CONFIG_ID are read in ``test_host_mem_roundtrip[tiny8_lite_started-...]``; the
    read timing is the register block's, the same for every lane count."""
    chip_tests.test_registers(p)


@pytest.mark.timeout(BUILD_TIMEOUT)
@pytest.mark.parametrize("chip", LITE_CHIPS)
def test_chip_tests_without_the_options(chip):
    """The chip tests that use neither REPEAT nor GATHER / SCATTER, RTL against the model:
    MEM copies in both directions, errors, IMEM overrun, CONFIG masks (the wide memory's write
    enables), SYNC / NOTIFY (Verilator)."""
    chip_tests.test_mem_copy_through_fabric(chip)
    chip_tests.test_xcheck_host_traffic(chip)
    chip_tests.test_config_partial_mask(chip)
    chip_tests.test_sync_notify(chip)
    chip_tests.test_nop_halt_and_cycles(chip)


# -- with the pipelined ICU (icu_issue_reg) ---------------------------------------------------

@pytest.mark.parametrize("role", ["read", "compute", "write"])
def test_pipelined_icu_without_repeat_engine(role):
    """icu_issue_reg with icu_repeat=False: the unpipelined ICU's trace (REPEAT words bad and
    skipped, as expected from the ISA rules) two cycles later (isa.start_delay)."""
    from . import test_icu as icu_tests
    from . import test_pipeline_params as pipe_tests
    base = TINY_LITE
    words = pipe_tests._icu_programs(base)[role]
    assert any(isa.decode(w)[0].mnemonic == "REPEAT" for w in words if w != 0x3F)
    var = dataclasses.replace(base, icu_issue_reg=True)
    d, n = isa.start_delay(var) - isa.start_delay(base), 30   # the issue register's two cycles
    q = icu_tests.queue_of(base, role)
    t_base = icu_tests.run_icu(base, q, words, n)
    # expected_schedule lists every accepted word as issued; the ICU keeps NOTIFY (it drives the
    # notify wire) and CONFIG outside MEM queues (a no-op) from its slice
    kept = {OP["NOTIFY"].encode()}
    if q.slice.kind not in isa.CONFIG_SLICE_KINDS:
        kept |= {w for w in words if w != 0x3F and isa.decode(w)[0].mnemonic == "CONFIG"}
    exp = [(None if w in kept else w, e, done)
           for w, e, done in icu_tests.expected_schedule(base, role, words, n)]
    assert t_base == exp
    assert sum(1 for _, e, _ in exp if e & ErrorFlag.BAD_INSTRUCTION) >= 1
    t_var = icu_tests.run_icu(var, q, words, n)
    assert t_var[d:] == t_base[:-d]


# -- host words of tiles narrower than 4 lanes -------------------------------------------------

@pytest.mark.timeout(60)
@pytest.mark.parametrize("p", [preset("ice40"),
                               dataclasses.replace(TINY_LITE, lanes=2, name="tiny2_lite")],
                         ids=ids)
def test_host_word_of_a_two_lane_tile(p):
    """With fewer than 4 lanes a host word carries the tile's ``host_word_lanes`` lanes: the
    upper bytes of a write are ignored and read as 0 (RTL == model), the lanes land in the wide
    memory's entry, lane 0 in the low byte."""
    from openlpu.verification.model import LpuModel
    assert p.lanes < 4 and p.host_word_lanes == p.lanes
    places = [(2 * p.mem_slices - 1, 1, 3, p.superlanes - 1, 0), (0, 0, 0, 0, 0)]
    value = 0xDDCCBBAA
    want = value & ((1 << 8 * p.host_word_lanes) - 1)
    mdl = LpuModel(p)
    for sl, bank, word, c, g in places:
        mdl.write(hostmap.mem_addr(p, sl, bank, word, c, g), value)
    assert [mdl.read(hostmap.mem_addr(p, *pl)) for pl in places] == [want] * len(places)
    b = chip_tests.ChipBench(p)
    got = {}

    async def tb(ctx):
        for sl, bank, word, c, g in places:
            await b.bus.write(ctx, hostmap.mem_addr(p, sl, bank, word, c, g), value)
        got["read"] = [await b.bus.read(ctx, hostmap.mem_addr(p, *pl)) for pl in places]
        got["other"] = await b.bus.read(ctx, hostmap.mem_addr(p, 0, 0, 1, 0, 0))
        sl, bank, word, c, _ = places[0]
        tile = b.dut.slices[p.mem_slice_list[sl].name].memories[c][0]
        got["entry"] = ctx.get(tile.data[bank * p.mem_words + word])

    run_sim(b.dut, tb, max_cycles=200)
    assert got["read"] == [want] * len(places)
    assert got["other"] == 0
    assert got["entry"] == want
