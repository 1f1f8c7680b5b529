# amaranth: UnusedElaboratable=no
"""The serial backend against the HostBridge RTL in Amaranth's simulator, byte by byte.

The bridge's byte streams are fed directly by an in-process transport (no bit-level UART: the
UART PHY has its own loopback test in tests/synth/test_uart.py) that can corrupt, drop and
duplicate bytes in either direction; a monitor records every write the bridge puts on the host
bus, so the tests can check that a retried write is applied exactly once.
"""

import zlib
from collections import deque

import numpy as np
import pytest
from amaranth.hdl import ClockDomain, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from openlpu import bridge_proto as proto
from openlpu import isa
from openlpu.bridge_proto import Cmd, FrameError, LinkError, NakError, NakReason
from openlpu.host.backend import CycleLimitExceeded, DeviceTimeout, WallClockTimeout
from openlpu.host.backends.serial_link import ConfigMismatch, SerialBackend
from openlpu.hostmap import reg_addr
from openlpu.params import preset
from openlpu.rtl.bridge import HostBridge, attach_chip
from openlpu.rtl.common import host_bus_signature

TIMEOUT = 64            # bridge inter-byte timeout (cycles) used in these tests
READ_BUDGET = 200_000   # cycles a transport read may wait before it returns short
FAULT_READ_BUDGET = 3_000   # the same in the fault tests (longest answer there: ~300 cycles)


class StubChip(wiring.Component):
    """A host-bus device for protocol tests: ID/CONFIG_ID/STATUS registers and a 64-word RAM
    at the start of the MEM region. ``STATUS.DONE`` is set ``run_cycles`` after ``START``."""

    def __init__(self, params, run_cycles=40):
        self._params = params
        self._run_cycles = run_cycles
        super().__init__({"host": In(host_bus_signature()), "running": Out(1), "done": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.ram = ram = Memory(shape=32, depth=64, init=[])
        wr, rd = ram.write_port(), ram.read_port()
        h = self.host
        region = h.addr[isa.HOST_REGION_SHIFT:]
        is_mem = (region == isa.HostRegion.MEM) & (h.addr[6:isa.HOST_REGION_SHIFT] == 0)
        timer = Signal(range(self._run_cycles + 1))
        d1_valid, d1_data, d1_mem = Signal(), Signal(32), Signal()
        m.d.comb += [wr.addr.eq(h.addr[:6]), wr.data.eq(h.w_data), wr.en.eq(h.w_en & is_mem),
                     rd.addr.eq(h.addr[:6])]
        with m.If(h.w_en & (h.addr == reg_addr(isa.HostReg.CTRL)) & h.w_data[0]):
            m.d.sync += [self.running.eq(1), self.done.eq(0), timer.eq(0)]
        with m.Elif(self.running):
            m.d.sync += timer.eq(timer + 1)
            with m.If(timer == self._run_cycles - 1):
                m.d.sync += [self.running.eq(0), self.done.eq(1)]
        regs = {isa.HostReg.ID: isa.CHIP_ID, isa.HostReg.CONFIG_ID: self._params.config_id}
        m.d.sync += [d1_valid.eq(h.r_en), d1_mem.eq(is_mem), h.r_valid.eq(d1_valid),
                     h.r_data.eq(0)]
        with m.Switch(h.addr):
            for reg, value in regs.items():
                with m.Case(reg_addr(reg)):
                    m.d.sync += d1_data.eq(value)
            with m.Case(reg_addr(isa.HostReg.STATUS)):
                m.d.sync += d1_data.eq(self.running | (self.done << 1))
            with m.Default():
                m.d.sync += d1_data.eq(0)
        with m.If(d1_valid):
            with m.If(d1_mem):
                m.d.sync += h.r_data.eq(rd.data)
            with m.Else():
                m.d.sync += h.r_data.eq(d1_data)
        return m


class SimBridgeTransport:
    """A byte transport into ``HostBridge`` + a chip running in ``amaranth.sim``.

    ``write`` queues bytes that a background testbench offers on the bridge's ``i`` stream,
    one per cycle; ``read(n)`` advances the simulation until ``n`` response bytes have arrived
    or ``READ_BUDGET`` cycles passed (then it returns what it has, as pyserial does on a
    timeout). ``corrupt_tx`` / ``corrupt_rx`` map a byte offset of the outgoing / incoming
    stream to an XOR mask; ``drop_tx`` / ``drop_rx`` are offsets of bytes lost, ``dup_tx`` /
    ``dup_rx`` of bytes delivered twice. ``bus_writes`` lists every ``(addr, data)`` the bridge
    wrote on the host bus.
    """

    def __init__(self, chip, *, timeout=TIMEOUT, bus_reg=False, read_budget=READ_BUDGET):
        self.chip = chip
        self.bridge = HostBridge(timeout=timeout, bus_reg=bus_reg)
        self.timeout = timeout
        top = Module()
        top.domains.sync = ClockDomain("sync")
        top.submodules.bridge = self.bridge
        attach_chip(top, self.bridge, chip)                 # as BoardTop
        self.tx, self.rx = deque(), deque()
        self.sent = self.received = 0
        self.corrupt_tx, self.corrupt_rx = {}, {}
        self.drop_tx, self.drop_rx, self.dup_tx, self.dup_rx = set(), set(), set(), set()
        self.dead = False                       # drop every byte in both directions
        self.read_budget = read_budget
        self.bus_writes = []
        self.cycles = 0
        self.busy = False
        self.sim = Simulator(top)
        self.sim.add_clock(1e-8)
        self.sim.add_testbench(self._pump, background=True)
        self.sim.add_testbench(self._monitor, background=True)

    async def _monitor(self, ctx):
        bus = self.chip.host                    # what the chip sees (after bus_reg)
        while True:
            if ctx.get(bus.w_en):
                self.bus_writes.append((ctx.get(bus.addr), ctx.get(bus.w_data)))
            await ctx.tick()

    async def _pump(self, ctx):
        b = self.bridge
        ctx.set(b.o.ready, 1)
        while True:
            if self.tx:
                ctx.set(b.i.payload, self.tx[0])
                ctx.set(b.i.valid, 1)
            else:
                ctx.set(b.i.valid, 0)
            accepted = bool(self.tx) and bool(ctx.get(b.i.ready))
            out = ctx.get(b.o.payload) if ctx.get(b.o.valid) else None
            self.busy = bool(ctx.get(b.busy))
            await ctx.tick()
            self.cycles += 1
            if accepted:
                self.tx.popleft()
            if out is not None:
                k = self.received
                out ^= self.corrupt_rx.pop(k, 0)
                self.received += 1
                if k not in self.drop_rx and not self.dead:
                    self.rx.append(out)
                    if k in self.dup_rx:
                        self.rx.append(out)

    def write(self, data):
        for byte in bytes(data):
            if self.sent not in self.drop_tx and not self.dead:
                self.tx.append(byte ^ self.corrupt_tx.pop(self.sent, 0))
                if self.sent in self.dup_tx:
                    self.tx.append(byte)
            self.sent += 1
        return len(data)

    def run_cycles(self, n):
        stop = self.cycles + n
        while self.cycles < stop:
            self.sim.advance()

    def read(self, n):
        stop = self.cycles + self.read_budget
        while len(self.rx) < n and self.cycles < stop:
            self.sim.advance()
        return bytes(self.rx.popleft() for _ in range(min(n, len(self.rx))))

    def drain(self):
        """Let the bridge finish or time out on a broken frame, then drop stale bytes."""
        self.run_cycles(2 * self.timeout)
        while self.tx or self.busy:
            self.run_cycles(self.timeout)
        self.rx.clear()

    def reset_input_buffer(self):
        self.rx.clear()


def _stub(params=None, bus_reg=False, **kw):
    params = params or preset("tiny")
    return params, SimBridgeTransport(StubChip(params), bus_reg=bus_reg, **kw)


MEM0 = int(isa.HostRegion.MEM) << isa.HOST_REGION_SHIFT    # the stub's RAM


# -- protocol ------------------------------------------------------------------------------

def test_crc8_reference_vector():
    # CRC-8 (poly 0x07, init 0): check value of "123456789" is 0xF4
    assert proto.crc8(b"123456789") == 0xF4


def test_encode_request_rejects_bad_arguments():
    with pytest.raises(ValueError, match="word count"):
        proto.encode_request(Cmd.READ, 0, proto.MAX_WORDS + 1)
    with pytest.raises(ValueError, match="payload"):
        proto.encode_request(Cmd.WRITE, 0, 2, [1])
    with pytest.raises(ValueError, match="wider than"):
        proto.encode_request(Cmd.READ, 1 << isa.HOST_ADDR_BITS, 1)


@pytest.mark.parametrize("name,bus_reg", [("tiny", False), ("quad", False), ("ice40", False),
                                          ("tiny", True)])
def test_identity_and_ram_roundtrip(name, bus_reg):
    params, tr = _stub(preset(name), bus_reg)
    be = SerialBackend(params, tr)              # checks ID and CONFIG_ID
    rng = np.random.default_rng(1)
    base = reg_addr(isa.HostReg.ID) | (int(isa.HostRegion.MEM) << isa.HOST_REGION_SHIFT)
    words = [0, 1, 0xFFFFFFFF, 0x80808080, 0x7F7F7F7F] + \
        [int(x) for x in rng.integers(0, 1 << 32, 59, dtype=np.uint64)]
    addrs = [base + i for i in range(64)]
    be.write_many(zip(addrs, words))
    assert be.read_many(addrs) == words
    be.write(base + 5, 0x12345678)
    assert be.read(base + 5) == 0x12345678
    # non-consecutive and longer than one frame
    order = list(reversed(addrs)) + addrs
    assert be.read_many(order) == [0x12345678 if a == base + 5 else words[a - base]
                                   for a in order]


def test_config_mismatch_is_reported():
    _, tr = _stub(preset("tiny"))
    with pytest.raises(ConfigMismatch, match="another parameter set"):
        SerialBackend(preset("quad"), tr)


@pytest.mark.parametrize("bus_reg", [False, True])
def test_wait_for_done_and_timeout(bus_reg):
    params, tr = _stub(bus_reg=bus_reg)
    be = SerialBackend(params, tr)
    be.run(max_cycles=10_000)
    assert be.read(reg_addr(isa.HostReg.STATUS)) & isa.Status.DONE
    with pytest.raises(DeviceTimeout):
        be.run(max_cycles=5)


@pytest.mark.parametrize("bus_reg", [False, True])
def test_corrupted_request_is_nak_and_not_performed(bus_reg):
    params, tr = _stub(bus_reg=bus_reg)
    be = SerialBackend(params, tr, retries=0)
    addr = int(isa.HostRegion.MEM) << isa.HOST_REGION_SHIFT
    be.write(addr, 0x11111111)
    frame_len = len(proto.encode_request(Cmd.WRITE, addr, 1, [0]))
    tr.corrupt_tx[tr.sent + frame_len - 3] = 0x40          # flip a data bit in transit
    with pytest.raises(NakError, match="BAD_CRC") as e:
        be.write(addr, 0x22222222)
    assert e.value.reason == NakReason.BAD_CRC
    assert be.read(addr) == 0x11111111                      # the garbled write was not done


@pytest.mark.parametrize("offset", [proto.REQ_CMD, proto.REQ_SEQ, proto.REQ_COUNT, proto.REQ_ADDR])
def test_corrupted_header_is_reported(offset):
    params, tr = _stub()
    be = SerialBackend(params, tr, retries=0)
    addr = int(isa.HostRegion.MEM) << isa.HOST_REGION_SHIFT
    tr.corrupt_tx[tr.sent + offset] = 0x10
    with pytest.raises((NakError, FrameError)):
        be.write(addr, 0x33333333)
    assert be.read(addr) == 0                               # nothing was written
    assert be.read(reg_addr(isa.HostReg.ID)) == isa.CHIP_ID  # the link recovers


def test_lost_byte_times_out_with_nak():
    params, tr = _stub()
    be = SerialBackend(params, tr, retries=0)
    tr.drop_tx.add(tr.sent + 7)
    with pytest.raises(NakError, match="TIMEOUT"):
        be.write(int(isa.HostRegion.MEM) << isa.HOST_REGION_SHIFT, 0x44444444)
    assert be.read(reg_addr(isa.HostReg.ID)) == isa.CHIP_ID


def test_corrupted_response_is_reported():
    params, tr = _stub()
    be = SerialBackend(params, tr, retries=0)
    tr.corrupt_rx[tr.received + proto.RESP_DATA] = 0x01     # a data byte on the way back
    with pytest.raises(FrameError, match="checksum"):
        be.read(reg_addr(isa.HostReg.ID))
    assert be.read(reg_addr(isa.HostReg.ID)) == isa.CHIP_ID


def _bus_trace(bus_reg, frame, cycles):
    """Per cycle: the bridge's (w_en, r_en, addr, w_data) while ``frame`` arrives and runs."""
    _, tr = _stub(bus_reg=bus_reg)
    trace = []

    async def record(ctx):
        bus = tr.bridge.bus
        while True:
            on = ctx.get(bus.w_en) or ctx.get(bus.r_en)
            trace.append((ctx.get(bus.w_en), ctx.get(bus.r_en), ctx.get(bus.addr) if on else None,
                          ctx.get(bus.w_data) if ctx.get(bus.w_en) else None))
            await ctx.tick()

    tr.sim.add_testbench(record, background=True)
    tr.write(frame)
    tr.run_cycles(cycles)
    return trace


def test_bus_reg_delays_the_bus_by_one_cycle():
    """With ``bus_reg`` the bridge's bus outputs are its plain outputs one cycle later."""
    addr = int(isa.HostRegion.MEM) << isa.HOST_REGION_SHIFT
    words = [0xFFFFFFFF, 0x80807F01, 0x12345678]
    frame = proto.encode_request(Cmd.WRITE, addr + 3, len(words), words)
    n = len(frame) + 4 * len(words) + 20
    plain, reg = _bus_trace(False, frame, n), _bus_trace(True, frame, n)
    writes = [(a, d) for w, _, a, d in plain if w]
    assert writes == [(addr + 3 + i, w) for i, w in enumerate(words)]
    assert reg[0] == (0, 0, None, None)
    assert reg[1:] == plain[:-1]


def test_bridge_arguments_are_checked():
    with pytest.raises(ValueError, match="bus_reg must be True or False"):
        HostBridge(bus_reg=1)     # never elaborated: see the file's first line


def test_bad_count_and_command_are_nak():
    params, tr = _stub()
    SerialBackend(params, tr)
    frame = bytearray(proto.encode_request(Cmd.READ, 0, 1, seq=0x33))
    frame[proto.REQ_COUNT] = proto.MAX_WORDS                 # COUNT + 1 > MAX_WORDS
    frame[-1] = proto.crc8(frame[:-1])
    tr.write(frame)
    resp = tr.read(proto.NAK_LENGTH)
    assert resp == proto.encode_response(0x33, reason=NakReason.BAD_COUNT)
    assert resp == bytes([proto.Resp.NAK, 0x33, NakReason.BAD_COUNT,
                          proto.crc8([proto.Resp.NAK, 0x33, NakReason.BAD_COUNT])])
    frame[proto.REQ_CMD], frame[proto.REQ_COUNT] = 0x7E, 0
    frame[-1] = proto.crc8(frame[:-1])
    tr.write(frame)
    assert tr.read(proto.NAK_LENGTH) == proto.encode_response(0x33, reason=NakReason.BAD_CMD)


# -- retries: faults in transit, each write applied exactly once ------------------------------

def _faulty(**kw):
    params, tr = _stub(read_budget=FAULT_READ_BUDGET)
    return tr, SerialBackend(params, tr, first_seq=0x40, **kw)   # reproducible frames


def _writes_to(tr, addr):
    return [d for a, d in tr.bus_writes if a == addr]


WRITE_ACK = proto.response_length(Cmd.WRITE, 1)
WRITE_REQ = len(proto.encode_request(Cmd.WRITE, 0, 1, [0]))


@pytest.mark.parametrize("fault", ["lost_ack", "lost_ack_byte", "dup_ack_status",
                                   "corrupt_ack", "corrupt_request", "lost_request",
                                   "lost_request_byte", "dup_request_byte"])
def test_faulty_write_is_retried_and_applied_once(fault):
    tr, be = _faulty()
    addr = MEM0 + 9
    tx, rx = tr.sent, tr.received
    if fault == "lost_ack":
        tr.drop_rx.update(range(rx, rx + WRITE_ACK))
    elif fault == "lost_ack_byte":
        tr.drop_rx.add(rx + WRITE_ACK - 1)
    elif fault == "dup_ack_status":
        tr.dup_rx.add(rx)
    elif fault == "corrupt_ack":
        tr.corrupt_rx[rx + proto.RESP_SEQ] = 0x04
    elif fault == "corrupt_request":
        tr.corrupt_tx[tx + proto.HEADER_BYTES + 1] = 0x08
    elif fault == "lost_request":
        tr.drop_tx.update(range(tx, tx + WRITE_REQ))
    elif fault == "lost_request_byte":
        tr.drop_tx.add(tx + proto.REQ_COUNT)
    else:
        tr.dup_tx.add(tx + proto.HEADER_BYTES)
    frames = be.frames
    be.write(addr, 0xCAFEF00D)
    assert _writes_to(tr, addr) == [0xCAFEF00D]            # applied exactly once
    assert be.retried >= 1
    assert be.frames - frames == 1 + be.retried
    assert be.read(addr) == 0xCAFEF00D
    assert be.read(reg_addr(isa.HostReg.ID)) == isa.CHIP_ID


def test_duplicated_trailing_byte_does_not_fail_the_next_transaction():
    tr, be = _faulty(retries=0)             # no retry may hide the stale byte
    tr.dup_rx.add(tr.received + WRITE_ACK - 1)              # the write's CRC byte, twice
    be.write(MEM0 + 1, 0x01020304)
    assert be.read(reg_addr(isa.HostReg.CONFIG_ID)) == be.params.config_id
    assert be.read(MEM0 + 1) == 0x01020304


@pytest.mark.parametrize("fault", ["corrupt", "dup", "lost"])
def test_faulty_read_response_is_retried(fault):
    tr, be = _faulty()
    words = [0x11223344 * (i + 1) & 0xFFFFFFFF for i in range(5)]
    be.write_many((MEM0 + 20 + i, w) for i, w in enumerate(words))
    rx = tr.received
    {"corrupt": lambda: tr.corrupt_rx.__setitem__(rx + proto.RESP_DATA + 7, 0x80),
     "dup": lambda: tr.dup_rx.add(rx + proto.RESP_DATA + 3),
     "lost": lambda: tr.drop_rx.add(rx + proto.RESP_DATA + 12)}[fault]()
    assert be.read_many([MEM0 + 20 + i for i in range(5)]) == words
    assert be.retried == 1


def test_random_faults_every_write_applied_once():
    """A sequence of writes and reads with a random fault in most transactions: the RAM ends
    as the writes say, each write frame reached the bus once, every read returned the data."""
    tr, be = _faulty(retries=8)
    rng = np.random.default_rng(7)
    ram = {}
    for step in range(24):
        tx, rx = tr.sent, tr.received
        kind = rng.integers(6)
        if kind == 0:
            tr.corrupt_tx[tx + int(rng.integers(1, WRITE_REQ))] = 1 << int(rng.integers(8))
        elif kind == 1:
            tr.drop_tx.add(tx + int(rng.integers(WRITE_REQ)))
        elif kind == 2:
            tr.corrupt_rx[rx + int(rng.integers(WRITE_ACK))] = 1 << int(rng.integers(8))
        elif kind == 3:
            tr.drop_rx.add(rx + int(rng.integers(WRITE_ACK)))
        elif kind == 4:
            tr.dup_rx.add(rx + int(rng.integers(WRITE_ACK)))
        addr = MEM0 + int(rng.integers(8))
        if step % 3 == 2:
            assert be.read(addr) == ram.get(addr, 0), step
        else:
            value = int(rng.integers(1 << 32, dtype=np.uint64))
            before = len(tr.bus_writes)
            be.write(addr, value)
            assert tr.bus_writes[before:] == [(addr, value)], step
            ram[addr] = value
        tr.corrupt_tx.clear()                   # faults not reached (a short frame) expire
        tr.corrupt_rx.clear()
    assert be.read_many(sorted(ram)) == [ram[a] for a in sorted(ram)]
    assert be.retried >= 10


def test_dead_link_raises_after_bounded_retries():
    tr, be = _faulty(retries=3)
    tr.dead = True
    frames = be.frames
    with pytest.raises(LinkError, match="after 4 attempt") as e:
        be.write(MEM0, 1)
    assert e.value.attempts == 4 and be.frames - frames == 4
    assert isinstance(e.value.last, FrameError)
    assert tr.bus_writes[-1:] != [(MEM0, 1)]
    tr.dead = False                                         # the link comes back
    assert be.read(reg_addr(isa.HostReg.ID)) == isa.CHIP_ID


def test_lost_wait_answer_is_retried():
    tr, be = _faulty()
    be.write(MEM0, 5)
    tr.drop_rx.add(tr.received + WRITE_ACK + 1)  # after START's ACK: the WAIT answer's SEQ
    be.run(max_cycles=10_000)
    assert be.read(reg_addr(isa.HostReg.STATUS)) & isa.Status.DONE
    starts = [d for a, d in tr.bus_writes if a == reg_addr(isa.HostReg.CTRL)]
    assert starts == [int(isa.Ctrl.START)]                  # START once
    assert be.retried == 1


def test_run_limits_on_the_serial_backend():
    params = preset("tiny")
    tr = SimBridgeTransport(StubChip(params, run_cycles=50_000), read_budget=FAULT_READ_BUDGET)
    be = SerialBackend(params, tr, wait_chunk=300, first_seq=0x40)
    with pytest.raises(CycleLimitExceeded, match="not done after 900 cycles"):
        be.run(max_cycles=900)
    with pytest.raises(WallClockTimeout, match="wall-clock"):
        be.run(max_cycles=1 << 30, timeout_s=0.2)
    with pytest.raises(TypeError, match="max_cycles must be a positive int"):
        be.run(max_cycles="100")


def test_serial_backend_refuses_use_after_close():
    from openlpu.host.backend import BackendClosed
    _, tr = _stub()
    be = SerialBackend(preset("tiny"), tr)
    be.close()
    be.close()
    with pytest.raises(BackendClosed, match="serial backend is closed"):
        be.read(reg_addr(isa.HostReg.ID))


# -- the real chip behind the bridge ---------------------------------------------------------

@pytest.mark.parametrize("name,shape,kind", [
    ("tiny", (3, 8, 5), "random"),
    ("tiny", (2, 8, 3), "min"),
    ("ice40", (2, 3, 2), "min"),
    ("quad", (2, 5, 3), "random"),
    ("ice40", (3, 5, 3), "random"),     # the HX8K bitstream's chip: VL 2, no REPEAT
    ("ecp5", (3, 10, 4), "random"),     # the ULX3S bitstream's chip: every timing register
])
def test_matmul_through_bridge(name, shape, kind):
    from openlpu.firmware.compiler import compile_matmul
    from openlpu.host.device import Device
    from openlpu.rtl.chip import LpuChip

    params = preset(name)
    M, K, N = shape
    rng = np.random.default_rng(zlib.crc32(f"{name}{shape}{kind}".encode()))
    if kind == "random":
        A = rng.integers(-128, 128, (M, K), dtype=np.int64)
        B = rng.integers(-128, 128, (K, N), dtype=np.int64)
        A[0, :4] = [-128, 127, 0, 1][:min(4, K)]
    else:
        A = np.full((M, K), -128, dtype=np.int64)
        B = np.full((K, N), -128, dtype=np.int64)
        B[:, -1] = 127
    A, B = A.astype(np.int8), B.astype(np.int8)

    tr = SimBridgeTransport(LpuChip(params), bus_reg=params.host_start_reg)   # as BoardTop
    dev = Device(SerialBackend(params, tr))
    dev.load(compile_matmul(params, M, K, N))
    dev.write_inputs({"A": A, "B": B})
    cycles = dev.run()
    C = dev.read_outputs()["C"]
    expect = A.astype(np.int32) @ B.astype(np.int32)
    assert C.shape == expect.shape
    np.testing.assert_array_equal(C, expect)
    assert cycles == dev.package.predicted_cycles


def test_corrupted_frame_against_chip_is_reported():
    from openlpu.rtl.chip import LpuChip

    params = preset("tiny")
    tr = SimBridgeTransport(LpuChip(params))
    be = SerialBackend(params, tr, retries=0)
    addr = reg_addr(isa.HostReg.CONFIG_ID)
    tr.corrupt_tx[tr.sent + proto.REQ_ADDR] = 0x80         # an address byte, in transit
    with pytest.raises(NakError, match="corrupted in transit"):
        be.read(addr)
    assert be.read(addr) == params.config_id


def test_lost_ack_at_sequence_wrap_applies_once():
    params, tr = _stub(read_budget=FAULT_READ_BUDGET)
    be = SerialBackend(params, tr, first_seq=0xFE, check=False)   # READ ID uses 0xFE
    be.read(MEM0)                                                  # 0xFF
    tr.drop_rx.update(range(tr.received, tr.received + WRITE_ACK))
    be.write(MEM0 + 2, 77)                                         # seq 0x00, ACK lost
    assert _writes_to(tr, MEM0 + 2) == [77] and be.retried == 1
    be.write(MEM0 + 2, 77)                          # a new request with the same data is written
    assert _writes_to(tr, MEM0 + 2) == [77, 77]


# -- RESET: the host stops the board ----------------------------------------------------------

def test_reset_request_stops_a_run_and_keeps_memory():
    params = preset("tiny")
    tr = SimBridgeTransport(StubChip(params, run_cycles=50_000), read_budget=FAULT_READ_BUDGET)
    be = SerialBackend(params, tr, wait_chunk=300, first_seq=0x10)
    be.write(MEM0 + 3, 0xDEADBEEF)
    with pytest.raises(CycleLimitExceeded):
        be.run(max_cycles=600)
    assert be.read(reg_addr(isa.HostReg.STATUS)) & isa.Status.RUNNING      # still running
    be.reset()
    assert be.read(reg_addr(isa.HostReg.STATUS)) == 0                      # stopped, not done
    assert be.read(MEM0 + 3) == 0xDEADBEEF                                 # memory kept
    be.reset()                                                             # harmless twice
    assert be.read(reg_addr(isa.HostReg.ID)) == isa.CHIP_ID


def test_reset_frame_and_bad_count():
    assert proto.request_payload_words(Cmd.RESET, 1) == 0
    assert proto.response_length(Cmd.RESET, 1) == proto.RESP_DATA + 1
    with pytest.raises(ValueError, match="RESET takes a word count of 1"):
        proto.encode_request(Cmd.RESET, 0, 2)
    params, tr = _stub()
    SerialBackend(params, tr)
    frame = bytearray(proto.encode_request(Cmd.RESET, 0, 1, seq=0x21))
    frame[proto.REQ_COUNT] = 1                                  # RESET with COUNT != 0
    frame[-1] = proto.crc8(frame[:-1])
    tr.write(frame)
    assert tr.read(proto.NAK_LENGTH) == proto.encode_response(0x21, reason=NakReason.BAD_COUNT)


def test_lost_reset_ack_is_retried():
    params = preset("tiny")
    tr = SimBridgeTransport(StubChip(params, run_cycles=50_000), read_budget=FAULT_READ_BUDGET)
    be = SerialBackend(params, tr, wait_chunk=300, first_seq=0x50)
    be.write(reg_addr(isa.HostReg.CTRL), isa.Ctrl.START)
    tr.drop_rx.add(tr.received)                                 # the RESET's ACK is lost
    be.reset()
    assert be.retried == 1
    assert be.read(reg_addr(isa.HostReg.STATUS)) == 0


@pytest.mark.timeout(600)
def test_device_stops_the_board_after_a_timeout():
    """A package parked on a SYNC: Device.run times out, resets the chip through the bridge,
    and the next matmul is exact (the real chip behind the bridge)."""
    from openlpu.host.device import Device, DeviceState
    from openlpu.rtl.chip import LpuChip
    from tests.host.test_device import _matmul_ok, sync_parked_package

    params = preset("tiny")
    tr = SimBridgeTransport(LpuChip(params), bus_reg=params.host_start_reg)
    dev = Device(SerialBackend(params, tr, wait_chunk=500))
    dev.load(sync_parked_package(params))
    with pytest.raises(CycleLimitExceeded):
        dev.run(max_cycles=2000)
    assert dev.state is DeviceState.OPEN
    assert not dev.backend.read(reg_addr(isa.HostReg.STATUS)) & isa.Status.RUNNING
    _matmul_ok(dev, params)
