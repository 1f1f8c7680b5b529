"""cocotb tests of the chip's host bus: registers, MEM round trips, a NOP program's CYCLES."""

import cocotb
import numpy as np

from openlpu import isa
from openlpu.hostmap import imem_addr, mem_addr
from openlpu.verification.cocotb.hostbus import HostBus, params_from_env

PARAMS = params_from_env()
NOP = isa.BY_MNEMONIC["NOP"]
HALT = isa.BY_MNEMONIC["HALT"]


@cocotb.test()
async def test_registers_after_reset(dut):
    bus = await HostBus.start(dut)
    assert await bus.reg(isa.HostReg.ID) == isa.CHIP_ID
    assert await bus.reg(isa.HostReg.CONFIG_ID) == PARAMS.config_id
    assert await bus.reg(isa.HostReg.STATUS) == 0
    assert await bus.reg(isa.HostReg.CYCLES) == 0
    assert await bus.reg(isa.HostReg.ERRORS) == 0


@cocotb.test()
async def test_mem_round_trip(dut):
    bus = await HostBus.start(dut)
    rng = np.random.default_rng(7)
    n = 2 * PARAMS.mem_slices
    fields = [(0, 0, 0, 0, 0), (n - 1, PARAMS.mem_banks - 1, PARAMS.mem_words - 1,
                                PARAMS.superlanes - 1, PARAMS.host_lane_groups - 1)]
    fields += [(int(rng.integers(n)), int(rng.integers(PARAMS.mem_banks)),
                int(rng.integers(PARAMS.mem_words)), int(rng.integers(PARAMS.superlanes)),
                int(rng.integers(PARAMS.host_lane_groups))) for _ in range(30)]
    addrs = list(dict.fromkeys(mem_addr(PARAMS, *f) for f in fields))
    words = [0x80808080, 0x7F7F7F7F, 0, 1] + [int(x) for x in rng.integers(
        0, 1 << 32, len(addrs) - 4, dtype=np.uint64)]
    await bus.write_many(zip(addrs, words))
    assert await bus.read_many(addrs) == words
    assert await bus.reg(isa.HostReg.ERRORS) == 0


@cocotb.test()
async def test_nop_program_cycles(dut):
    bus = await HostBus.start(dut)
    lengths = [2 + 3 * q for q in range(len(PARAMS.queues))]
    for q, n in enumerate(lengths):
        await bus.write(imem_addr(PARAMS, q, 0), NOP.encode(count=n))
        await bus.write(imem_addr(PARAMS, q, 1), HALT.encode())
    expected = max(lengths) + 1           # CYCLES = max(cycle of each HALT) + 1
    cycles = await bus.run(max_cycles=10 * expected)
    assert cycles == expected + isa.start_delay(PARAMS)    # DONE after the START register
    assert await bus.reg(isa.HostReg.CYCLES) == expected
    assert await bus.reg(isa.HostReg.STATUS) == isa.Status.DONE
    assert await bus.reg(isa.HostReg.ERRORS) == 0
