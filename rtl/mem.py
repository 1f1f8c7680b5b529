"""MEM slice: one SRAM tile per superlane, a read queue and a write queue."""

from amaranth.hdl import Array, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from openlpu import isa
from openlpu.isa import Dir, ErrorFlag

from .common import ERROR_BITS, issue_signature, stream_column, stream_drive
from .regs import host_target_signature

__all__ = ["MemSlice", "mem_host_addr_bits"]


def mem_host_addr_bits(params) -> int:
    """Width of a MEM slice's host address: lane group, superlane, word, bank (LSB first)."""
    bits = params.host_mem_field_bits
    return bits["group"] + bits["superlane"] + bits["word"] + bits["bank"]


class MemSlice(wiring.Component):
    """A MEM slice: ``superlanes`` tiles of ``mem_banks x mem_words`` words of ``lanes`` bytes.

    Every tile is one memory with one write port (32-bit granularity, for the host) and one
    synchronous read port, so it maps to simple dual-port block RAM. The bank of an address is
    its most significant bit (``params.mem_bank_of``).

    Timing (superlane 0; superlane ``c`` does the same ``c`` cycles later, the decoded
    instructions being shifted north one superlane per cycle):

    * ``READ addr, stream, dir`` issued at ``t`` reads the word at ``t`` and drives it onto
      ``stream`` flowing ``dir`` at ``t + 1`` (``d_func = 1``).
    * ``WRITE addr, stream, dir`` issued at ``t`` samples ``stream`` at ``t`` (eastward streams
      from :attr:`sr_east_in`, westward ones from :attr:`sr_west_in`) and writes it at the clock
      edge that ends ``t`` (``d_skew = 0``).

    Errors (in the cycle of the instruction in superlane 0, except where noted):
    ``ADDR_RANGE`` for ``addr >= mem_banks * mem_words`` (the instruction does nothing) or a
    stream index ``>= streams`` (a READ then drives nothing, flagged at ``t + 1``; a WRITE stores
    zeros); ``BANK_CONFLICT`` when a READ and a WRITE hit the same bank in the same cycle (both
    still execute; the READ returns the old word); ``STREAM_UNWRITTEN`` when a WRITE samples a
    slot whose valid bit is 0 (in any superlane, at ``t + c``).

    Host access (:attr:`host`) reads or writes one 32-bit word (4 lanes) of one tile; it shares
    the memory ports and is meant for use while the chip is not running (instructions have
    priority). Read data is on ``host.r_data`` in the cycle after ``host.r_en``.

    Parameters
    ----------
    params : :class:`openlpu.params.LpuParams`
        Chip geometry.
    slice_info : :class:`openlpu.params.SliceInfo`
        The MEM slice of the floorplan this component implements.

    Members
    -------
    sr_east_in, sr_west_in : ``In(stream_column(params))``
        Eastward streams of the west SR column, westward streams of the east SR column.
    drive_east, drive_west : ``Out(stream_drive(params))``
        Values driven into the east / west SR column.
    instr_read, instr_write : ``In(issue_signature())``
        Instructions of the read and write queues.
    error : ``Out(ERROR_BITS)``
        ``ErrorFlag`` bits raised this cycle.
    host : ``In(host_target_signature(mem_host_addr_bits(params)))``
        Host access: address fields group, superlane, word, bank (LSB first).
    """

    def __init__(self, params, slice_info):
        if slice_info.kind != "mem":
            raise ValueError(f"MemSlice needs a slice of kind 'mem', not {slice_info.kind!r} "
                             f"({slice_info.name})")
        self._params = params
        self._info = slice_info
        self._tiles = []
        for c in range(params.superlanes):
            mem = Memory(shape=unsigned(8 * params.lanes), depth=params.mem_addr_words, init=[])
            self._tiles.append((mem, mem.write_port(granularity=32), mem.read_port()))
        super().__init__({
            "sr_east_in":  In(stream_column(params)),
            "sr_west_in":  In(stream_column(params)),
            "drive_east":  Out(stream_drive(params)),
            "drive_west":  Out(stream_drive(params)),
            "instr_read":  In(issue_signature()),
            "instr_write": In(issue_signature()),
            "error":       Out(ERROR_BITS),
            "host":        In(host_target_signature(mem_host_addr_bits(params))),
        })

    @property
    def params(self):
        return self._params

    @property
    def slice_info(self):
        return self._info

    @property
    def memories(self) -> tuple:
        """One :class:`~amaranth.lib.memory.Memory` per superlane (for simulation back doors).

        Word ``a`` of tile ``c`` holds lanes ``c*lanes ..`` of vector word ``a``, lane ``i`` in
        bits ``8*i .. 8*i+7``.
        """
        return tuple(t[0] for t in self._tiles)

    def elaborate(self, platform):
        m = Module()
        p = self._params
        n_addr = p.mem_addr_words
        abits = ceil_log2(n_addr)
        sbits = max(1, ceil_log2(p.streams))
        bank_bit = p.mem_word_bits           # the address MSB selects the bank

        op_layout = data.StructLayout({
            "valid":     1,                  # in-range instruction in this superlane
            "addr":      abits,
            "stream":    sbits,
            "stream_ok": 1,
            "dir":       1,
        })

        def decode(name, issue, mnemonic):
            view = data.View(isa.layout(mnemonic), issue.word)
            op = Signal(op_layout, name=f"{name}_sl0")
            in_range = view.addr < n_addr
            m.d.comb += [
                op.valid.eq(issue.valid & in_range),
                op.addr.eq(view.addr[:abits]),
                op.stream.eq(view.stream[:sbits]),
                op.stream_ok.eq(view.stream < p.streams),
                op.dir.eq(view.dir),
            ]
            return op, issue.valid & ~in_range

        r0, r_bad_addr = decode("rd", self.instr_read, "READ")
        w0, w_bad_addr = decode("wr", self.instr_write, "WRITE")

        # instructions move north one superlane per cycle
        r_ops, w_ops = [r0], [w0]
        for c in range(1, p.superlanes):
            r_c = Signal(op_layout, name=f"rd_sl{c}")
            w_c = Signal(op_layout, name=f"wr_sl{c}")
            m.d.sync += [r_c.eq(r_ops[-1]), w_c.eq(w_ops[-1])]
            r_ops.append(r_c)
            w_ops.append(w_c)

        # -- host address fields ---------------------------------------------------------------
        fb = p.host_mem_field_bits
        h_group = self.host.addr[:fb["group"]]
        h_sl = self.host.addr[fb["group"]:fb["group"] + fb["superlane"]]
        h_addr = self.host.addr[fb["group"] + fb["superlane"]:]
        groups = p.host_lane_groups

        # -- tiles -------------------------------------------------------------------------------
        unwritten = []
        read_bad_stream = Signal()
        rd_datas = []
        for c, (mem, wr, rd) in enumerate(self._tiles):
            m.submodules[f"tile{c}"] = mem
            r, w = r_ops[c], w_ops[c]

            # READ: sync read now, drive next cycle
            m.d.comb += rd.addr.eq(Mux(r.valid, r.addr, h_addr))
            d_valid = Signal(name=f"drv_valid_sl{c}")
            d_stream = Signal(sbits, name=f"drv_stream_sl{c}")
            d_dir = Signal(name=f"drv_dir_sl{c}")
            m.d.sync += [
                d_valid.eq(r.valid & r.stream_ok),
                d_stream.eq(r.stream),
                d_dir.eq(r.dir),
            ]
            if c == 0:
                m.d.sync += read_bad_stream.eq(r.valid & ~r.stream_ok)
            for s in range(p.streams):
                hit = d_valid & (d_stream == s)
                m.d.comb += [
                    self.drive_east[c][s].en.eq(hit & (d_dir == Dir.EAST)),
                    self.drive_east[c][s].data.eq(rd.data),
                    self.drive_west[c][s].en.eq(hit & (d_dir == Dir.WEST)),
                    self.drive_west[c][s].data.eq(rd.data),
                ]
            rd_datas.append(rd.data)

            # WRITE: sample the stream now, store at the end of the cycle
            src = Signal(data.StructLayout({"data": 8 * p.lanes, "valid": 1}), name=f"wr_src_sl{c}")
            east = self.sr_east_in[c][w.stream]
            west = self.sr_west_in[c][w.stream]
            m.d.comb += src.eq(Mux(w.dir == Dir.WEST, west.as_value(), east.as_value()))
            host_here = self.host.w_en & (h_sl == c)
            with m.If(w.valid):
                m.d.comb += [
                    wr.en.eq(-1),
                    wr.addr.eq(w.addr),
                    wr.data.eq(Mux(w.stream_ok, src.data, 0)),
                ]
            with m.Else():
                m.d.comb += [
                    wr.en.eq(Mux(host_here, Const(1, len(wr.en)) << h_group, 0)),
                    wr.addr.eq(h_addr),
                    wr.data.eq(self.host.w_data.replicate(groups)),
                ]
            unwritten.append(w.valid & w.stream_ok & ~src.valid)

        # -- host read data ------------------------------------------------------------------
        h_r = Signal()
        h_r_sl = Signal.like(h_sl) if len(h_sl) else None
        h_r_group = Signal.like(h_group) if len(h_group) else None
        m.d.sync += h_r.eq(self.host.r_en & (h_sl < p.superlanes if len(h_sl) else 1))
        tile_word = rd_datas[0]
        if h_r_sl is not None:
            m.d.sync += h_r_sl.eq(h_sl)
            tile_word = Array(rd_datas)[h_r_sl]
        word32 = tile_word[:32]
        if h_r_group is not None:
            m.d.sync += h_r_group.eq(h_group)
            word32 = tile_word.word_select(h_r_group, 32)
        m.d.comb += self.host.r_data.eq(Mux(h_r, word32, 0))

        # -- errors ------------------------------------------------------------------------------
        r_bank = r0.addr[bank_bit]
        w_bank = w0.addr[bank_bit]
        addr_range = r_bad_addr | w_bad_addr | (w0.valid & ~w0.stream_ok) | read_bad_stream
        m.d.comb += self.error.eq(
            Mux(addr_range, int(ErrorFlag.ADDR_RANGE), 0)
            | Mux(r0.valid & w0.valid & (r_bank == w_bank), int(ErrorFlag.BANK_CONFLICT), 0)
            | Mux(_any(unwritten), int(ErrorFlag.STREAM_UNWRITTEN), 0))
        return m


def _any(signals):
    acc = signals[0]
    for s in signals[1:]:
        acc = acc | s
    return acc
