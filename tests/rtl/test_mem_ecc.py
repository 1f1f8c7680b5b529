# amaranth: UnusedElaboratable=no
"""MEM ECC (``LpuParams.mem_ecc``) on the RTL: the SECDED units exhaustively, then the chip.

* ``rtl/ecc.py``: every 13-bit word through the Hamming(13,8) decoder and every byte through
  the encoder, against ``openlpu.ecc`` (the code the model uses); the (39,32) code of the wide
  tiles on every single and double flip of sampled data.
* The chip (a ``tiny``-sized chip with ``mem_ecc``, in Amaranth's simulator, through the host
  driver's backend): faults injected with ``ECC_INJECT``, read by the host and by READs whose
  results a WRITE stores in another slice; data, ``ECC_CORRECTED``, ``ECC_UNCORRECTABLE``,
  ``ERRORS`` and ``ERROR_CYCLE`` equal to the reference model's and to the values the code and
  the timing rule give. Per-lane codewords (``mem_gather``) and per-host-word codewords (the
  wide tile), the latter with the timing-closure registers (registered error path).
* A compiled matmul on the ECC chip: numpy's result, the model's, CYCLES = predicted.
"""

import dataclasses
import itertools

import numpy as np
import pytest
from amaranth.sim import Simulator

from openlpu import ecc, isa
from openlpu.firmware.compiler import compile_matmul
from openlpu.host.backends.amaranth_sim import AmaranthBackend
from openlpu.host.device import Device
from openlpu.hostmap import mem_addr, reg_addr
from openlpu.isa import ErrorFlag, HostReg
from openlpu.params import preset
from openlpu.rtl.ecc import SecdedDecoder, SecdedEncoder
from openlpu.host.backends.model import ModelBackend

from ..model.test_model_ecc import (copy_scenario, expected_status, fault_plan, gather_scenario,
                                    host_scenario, reg)

OP = isa.BY_MNEMONIC


# -- the SECDED units ------------------------------------------------------------------------

def _unit_sim(code, words, datas):
    """Decoder outputs for ``words`` and encoder outputs for ``datas`` (combinational)."""
    from amaranth.hdl import Module
    m = Module()
    m.submodules.enc = enc = SecdedEncoder(code)
    m.submodules.dec = dec = SecdedDecoder(code)
    out = {"dec": [], "enc": []}

    async def tb(ctx):
        for w in words:
            ctx.set(dec.codeword, int(w))
            out["dec"].append((ctx.get(dec.data), ctx.get(dec.corrected),
                               ctx.get(dec.uncorrectable)))
        for d in datas:
            ctx.set(enc.data, int(d))
            out["enc"].append(ctx.get(enc.codeword))
    sim = Simulator(m)
    sim.add_testbench(tb)
    sim.run()
    return out


def _expect(code, w):
    data, status = code.decode(int(w))
    return data, int(status == ecc.Status.CORRECTED), int(status == ecc.Status.UNCORRECTABLE)


def test_hamming_13_8_units_exhaustive():
    code = ecc.code(8)
    assert (code.n, code.r) == (13, 4)
    out = _unit_sim(code, range(1 << code.n), range(256))
    assert out["enc"] == [code.encode(d) for d in range(256)]
    assert out["dec"] == [_expect(code, w) for w in range(1 << code.n)]
    # what that means for every codeword: 100 % of single flips corrected, of doubles detected
    for d in range(256):
        w = code.encode(d)
        for i in range(code.n):
            assert out["dec"][w ^ (1 << i)] == (d, 1, 0)
        for i, j in itertools.combinations(range(code.n), 2):
            assert out["dec"][w ^ (1 << i) ^ (1 << j)][1:] == (0, 1)


def test_secded_39_32_units_every_single_and_double_flip():
    code = ecc.code(32)
    assert code.n == 39
    rng = np.random.default_rng(7)
    datas = [0, 0xFFFFFFFF, *rng.integers(0, 1 << 32, 4, dtype=np.uint64).tolist()]
    words, want = [], []
    for d in datas:
        w = code.encode(d)
        words.append(w)
        want.append((d, 0, 0))
        for i in range(code.n):
            words.append(w ^ (1 << i))
            want.append((d, 1, 0))
        for i, j in itertools.combinations(range(code.n), 2):
            words.append(w ^ (1 << i) ^ (1 << j))
            want.append((d, 0, 1))
    out = _unit_sim(code, words, datas)
    assert out["enc"] == [code.encode(d) for d in datas]
    for got, exp, w in zip(out["dec"], want, words):
        assert got[1:] == exp[1:], hex(w)
        if not got[2]:                      # corrected (or clean): the data itself
            assert got[0] == exp[0], hex(w)
    assert out["dec"] == [_expect(code, w) for w in words]


# -- the chip --------------------------------------------------------------------------------

GATHER = dataclasses.replace(preset("tiny"), name="tiny_ecc", mem_ecc=True)
WIDE = dataclasses.replace(preset("tiny"), name="tiny_ecc_wide", mem_ecc=True, mem_gather=False,
                           icu_issue_reg=True, host_start_reg=True)


@pytest.fixture(scope="module", params=[GATHER, WIDE], ids=["per_lane", "wide_pipelined"])
def chip(request):
    with AmaranthBackend(request.param) as b:
        yield b


def test_host_reads_correct_and_detect(chip):
    p = chip.params
    rng = np.random.default_rng(1)
    plan = fault_plan(p, rng, 8)
    faults = plan[:-8:3] + plan[-8:]        # a third of the single flips, 8 doubles
    value = 0x5AC3_96E1 & ((1 << (8 * p.host_word_lanes)) - 1)
    got = host_scenario(chip, faults, value)
    model = ModelBackend(p)
    assert got == host_scenario(model, faults, value)
    doubles = 0
    for (w, s, g, bits), (data, corr, unc, errs, _) in zip(faults, got):
        c, u = expected_status(p, bits)
        assert (corr, unc) == (c, u), bits
        assert errs == (ErrorFlag.MEM_UNCORRECTABLE if u else 0), bits
        if not u:
            assert data == value, bits                   # corrected
        doubles += bool(u)
    assert doubles == 8


def test_instruction_reads_correct_and_detect(chip):
    p = chip.params
    rng = np.random.default_rng(2)
    faults = fault_plan(p, rng, 6)
    data = rng.integers(0, 256, (len(faults), p.vl), dtype=np.uint8)
    regs, out = copy_scenario(chip, data, faults)
    mregs, mout = copy_scenario(ModelBackend(p), data, faults)
    assert regs == mregs
    np.testing.assert_array_equal(out, mout)
    # against the code and the timing rule
    n_single = ecc.host_word_code_bits(p)
    assert regs[HostReg.ECC_CORRECTED] == n_single
    assert regs[HostReg.ECC_UNCORRECTABLE] == 6
    assert regs[HostReg.ERRORS] == ErrorFlag.MEM_UNCORRECTABLE
    first_double = faults[n_single]               # READ of word w issued at cycle w
    assert regs[HostReg.ERROR_CYCLE] == first_double[0] + OP["READ"].d_func(p) + first_double[1]
    words = np.array([[int.from_bytes(bytes(v[i:i + p.host_word_lanes]), "little")
                       for i in range(0, p.vl, p.host_word_lanes)] for v in data],
                     dtype=np.uint64)
    np.testing.assert_array_equal(out[:n_single], words[:n_single])   # every single corrected


def test_gather_reads_per_lane_codewords(chip):
    p = chip.params
    if not p.mem_gather:
        pytest.skip("GATHER needs mem_gather")
    regs, out, data = gather_scenario(chip, np.random.default_rng(9))
    mregs, mout, _ = gather_scenario(ModelBackend(p), np.random.default_rng(9))
    assert regs == mregs
    np.testing.assert_array_equal(out, mout)
    assert (regs[HostReg.ECC_CORRECTED], regs[HostReg.ECC_UNCORRECTABLE]) == (p.vl, p.vl)
    assert regs[HostReg.ERRORS] == ErrorFlag.MEM_UNCORRECTABLE


def test_matmul_without_faults_is_unchanged(chip):
    p = chip.params
    M, K, N = 8, 8, 8
    pkg = compile_matmul(p, M, K, N)
    plain = compile_matmul(dataclasses.replace(p, mem_ecc=False), M, K, N)
    assert pkg.predicted_cycles == plain.predicted_cycles
    assert pkg.queues == plain.queues
    rng = np.random.default_rng(3)
    A = rng.integers(-128, 128, (M, K))
    B = rng.integers(-128, 128, (K, N))
    dev = Device(chip)
    cycles, out = dev.run_package(pkg, {"A": A, "B": B})
    mcycles, mout = Device(ModelBackend(p)).run_package(pkg, {"A": A, "B": B})
    assert cycles == mcycles == pkg.predicted_cycles
    np.testing.assert_array_equal(out["C"], A @ B)
    np.testing.assert_array_equal(mout["C"], A @ B)
    assert (reg(chip, HostReg.ECC_CORRECTED), reg(chip, HostReg.ECC_UNCORRECTABLE)) == (0, 0)


def test_inject_is_taken_by_any_host_mem_write(chip):
    p = chip.params
    addr = mem_addr(p, 0, 0, 5, 0, 0)
    chip.write(reg_addr(HostReg.CTRL), isa.Ctrl.CLEAR_ERRORS)
    chip.write(reg_addr(HostReg.ECC_INJECT), ecc.inject_word(p, 0))
    assert reg(chip, HostReg.ECC_INJECT) == ecc.inject_word(p, 0)
    chip.write(addr | (1 << 19), 5)                       # past the MEM slices: nothing stored
    assert reg(chip, HostReg.ECC_INJECT) == 0
    chip.write(addr, 5)
    assert chip.read(addr) == 5 and reg(chip, HostReg.ECC_CORRECTED) == 0


def test_ecc_registers_read_zero_without_the_option():
    with AmaranthBackend(preset("tiny")) as b:
        b.write(reg_addr(HostReg.ECC_INJECT), 0x8080)
        assert [reg(b, r) for r in (HostReg.ECC_INJECT, HostReg.ECC_CORRECTED,
                                    HostReg.ECC_UNCORRECTABLE)] == [0, 0, 0]
