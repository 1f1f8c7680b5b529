"""UART PHY: transmitter -> receiver loopback in Amaranth's simulator, and bit timing."""

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.sim import Simulator

from openlpu.rtl.uart import UartRx, UartTx, uart_divisor


def _run(dut, bench, max_cycles):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    state = {"done": False}

    async def wrapped(ctx):
        await bench(ctx)
        state["done"] = True
    sim.add_testbench(wrapped)
    sim.run_until(max_cycles * 1e-8)
    assert state["done"], f"testbench did not finish within {max_cycles} cycles"


@pytest.mark.parametrize("divisor", [4, 7, 16])
def test_loopback(divisor):
    rng = np.random.default_rng(divisor)
    data = [0x00, 0xFF, 0x80, 0x7F, 0x01, 0x55, 0xAA] + [int(x) for x in rng.integers(0, 256, 25)]
    m = Module()
    m.submodules.tx = tx = UartTx(divisor)
    m.submodules.rx = rx = UartRx(divisor)
    m.d.comb += rx.rx.eq(tx.tx)
    got = []

    async def bench(ctx):
        ctx.set(rx.o.ready, 1)
        sent = 0
        while len(got) < len(data):
            if sent < len(data):
                ctx.set(tx.i.payload, data[sent])
                ctx.set(tx.i.valid, 1)
            else:
                ctx.set(tx.i.valid, 0)
            took = sent < len(data) and ctx.get(tx.i.ready)
            assert not ctx.get(rx.frame_error) and not ctx.get(rx.overrun)
            if ctx.get(rx.o.valid):
                got.append(ctx.get(rx.o.payload))
            await ctx.tick()
            sent += took
    _run(m, bench, (len(data) + 2) * 12 * divisor)
    assert got == data


def test_tx_bit_timing():
    divisor = 5
    dut = UartTx(divisor)
    byte = 0b1011_0010

    async def bench(ctx):
        assert ctx.get(dut.tx) == 1
        ctx.set(dut.i.payload, byte)
        ctx.set(dut.i.valid, 1)
        await ctx.tick()
        ctx.set(dut.i.valid, 0)
        line = []
        for _ in range(10 * divisor):
            line.append(ctx.get(dut.tx))
            await ctx.tick()
        expect = [0] + [(byte >> i) & 1 for i in range(8)] + [1]
        assert line == [b for b in expect for _ in range(divisor)]
        assert ctx.get(dut.i.ready) and ctx.get(dut.tx) == 1
    _run(dut, bench, 20 * divisor)


def test_rx_reports_frame_error():
    divisor = 6
    dut = UartRx(divisor)
    seen = {"error": False, "byte": False}

    async def bench(ctx):
        ctx.set(dut.o.ready, 1)
        for bit in [0] + [1] * 8 + [0] + [0] * 4:     # stop bit low: a break / bad frame
            for _ in range(divisor):
                ctx.set(dut.rx, bit)
                seen["error"] |= bool(ctx.get(dut.frame_error))
                seen["byte"] |= bool(ctx.get(dut.o.valid))
                await ctx.tick()
        ctx.set(dut.rx, 1)
        for _ in range(4 * divisor):
            seen["error"] |= bool(ctx.get(dut.frame_error))
            await ctx.tick()
    _run(dut, bench, 30 * divisor)
    assert seen["error"] and not seen["byte"]


def test_divisor_checks():
    assert uart_divisor(25e6, 115200) == 217
    assert uart_divisor(12e6, 115200) == 104
    with pytest.raises(ValueError, match="too high"):
        uart_divisor(1e6, 1_000_000)
    with pytest.raises(ValueError, match="integer >= 4"):
        UartTx(2)
