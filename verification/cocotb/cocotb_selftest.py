"""A cocotb module that fails on purpose: checks that a failing run leaves a waveform."""

import cocotb

from openlpu import isa
from openlpu.verification.cocotb.hostbus import HostBus


@cocotb.test()
async def test_fails_on_purpose(dut):
    bus = await HostBus.start(dut)
    await bus.tick(3)
    assert await bus.reg(isa.HostReg.ID) == isa.CHIP_ID ^ 1, "deliberate failure"
