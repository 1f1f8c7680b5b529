"""MEM slice: one SRAM tile per superlane (one byte-wide memory per lane, or one vector-wide
memory without ``params.mem_gather``), read and write queues."""

from amaranth.hdl import Array, C, Cat, Module, Mux, Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from openlpu import ecc, isa
from openlpu.isa import Dir, ErrorFlag

from .common import ERROR_BITS, issue_signature, stream_column, stream_drive
from .ecc import SecdedDecoder, SecdedEncoder
from .regs import host_target_signature
from .sweep import InstructionSweep

__all__ = ["MemSlice", "mem_host_addr_bits", "ecc_count_bits", "tile_memory_name"]


def tile_memory_name(superlane: int, lane: int | None = None) -> str:
    """Name of a tile's memory inside its MEM slice (the Verilog keeps it): ``tile{c}_lane{i}``
    for lane ``i`` of superlane ``c`` (``mem_gather``), ``tile{c}`` for the superlane's one
    vector-wide memory (``lane`` None, no ``mem_gather``). Simulator back doors (the Verilator
    backend's bulk MEM load) find the memories by it."""
    return f"tile{superlane}" if lane is None else f"tile{superlane}_lane{lane}"


def mem_host_addr_bits(params) -> int:
    """Width of a MEM slice's host address: lane group, superlane, word, bank (LSB first)."""
    bits = params.host_mem_field_bits
    return bits["group"] + bits["superlane"] + bits["word"] + bits["bank"]


def ecc_count_bits(params) -> int:
    """Width of a MEM slice's per-cycle ECC event counts (``mem_ecc``): at most one per
    codeword of every tile."""
    return ceil_log2(params.superlanes * ecc.tile_codewords(params) + 1)


class MemSlice(wiring.Component):
    """A MEM slice: ``superlanes`` tiles of ``mem_banks x mem_words`` words of ``lanes`` bytes.

    Every tile is ``lanes`` byte-wide memories (one per lane, both banks, address = ``bank *
    mem_words + word``), each with one write port and one synchronous read port, so it maps to
    simple dual-port block RAM and every lane can use its own address (GATHER / SCATTER). The
    bank of an address is its most significant bit (``params.mem_bank_of``). Without
    ``params.mem_gather`` a tile is a single memory ``lanes`` bytes wide (written in 32-bit
    groups by the host), fewer and better-filled block RAMs, and GATHER / SCATTER do not exist
    (the ICU rejects them).

    Each queue's instructions go through an :class:`~openlpu.rtl.sweep.InstructionSweep`: they
    move north one superlane per cycle, and superlane ``c`` executes an instruction only if its
    ``CONFIG`` mask enables ``c`` (a disabled tile reads, writes and drives nothing, so the
    passing stream value is kept, and its checkers are silent).

    Timing (superlane 0; superlane ``c`` does the same ``c`` cycles later):

    * ``READ addr, stream, dir`` issued at ``t`` reads the word at ``t`` and drives it onto
      ``stream`` flowing ``dir`` at ``t + 1`` (``d_func = 1``).
    * ``GATHER addr, map_stream, map_dir, stream, dir`` samples the map vector at ``t`` (from the
      input-side SR column of ``map_dir``); lane ``l`` reads word ``(addr mod mem_words +
      map[l]) mod mem_words`` of ``addr``'s bank at ``t``; the vector is driven at ``t + 1``.
    * ``WRITE addr, stream, dir`` issued at ``t`` samples ``stream`` at ``t`` (eastward streams
      from :attr:`sr_east_in`, westward ones from :attr:`sr_west_in`) and writes it at the clock
      edge that ends ``t`` (``d_skew = 0``).
    * ``SCATTER addr, map_stream, map_dir, stream, dir``: like WRITE, lane ``l`` storing at the
      word GATHER's lane ``l`` would read.

    Errors (in the cycle of the instruction in superlane 0, except where noted):
    ``ADDR_RANGE`` for ``addr >= mem_banks * mem_words`` (the instruction does nothing) or a
    stream index ``>= streams`` (a READ / GATHER then drives nothing, flagged at ``t + 1``; a
    WRITE / SCATTER stores zeros; an out-of-range map stream reads as zeros) -- whatever the
    mask; ``BANK_CONFLICT`` when a READ / GATHER and a WRITE / SCATTER hit the same bank in the
    same cycle in a superlane enabled for both (both still execute; the read returns the old
    data); ``STREAM_UNWRITTEN`` when an enabled superlane samples a slot whose valid bit is 0
    (flagged at ``t + c``).

    Host access (:attr:`host`) reads or writes one 32-bit word (4 lanes) of one tile; it shares
    the memory ports and is meant for use while the chip is not running (instructions have
    priority). Read data is on ``host.r_data`` in the cycle after ``host.r_en``.

    ECC (``params.mem_ecc``, ``openlpu.ecc``): every memory entry holds codewords, one per lane
    (Hamming(13,8)) with ``mem_gather``, one per host word of ``host_word_lanes`` lanes without
    it ((39,32); its write granularity is a codeword, so a host write needs no read-modify-write).
    A :class:`~openlpu.rtl.ecc.SecdedEncoder` per codeword sits behind the write-data multiplexer
    (WRITE, SCATTER and host writes; a host write stores the bits of :attr:`ecc_flip` flipped), a
    :class:`~openlpu.rtl.ecc.SecdedDecoder` after each read port: READ / GATHER / the host read
    the corrected data in the same cycle, so no latency changes. :attr:`ecc_corrected` and
    :attr:`ecc_uncorrectable` count the codewords read in this cycle (those of every enabled tile
    of a READ / GATHER at ``t + 1 + c``; those of the host word one cycle after ``host.r_en``)
    with a corrected or an uncorrectable error; ``MEM_UNCORRECTABLE`` is raised with them.

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
        Instructions of the read and write queues (``CONFIG`` included).
    error : ``Out(ERROR_BITS)``
        ``ErrorFlag`` bits raised this cycle.
    host : ``In(host_target_signature(mem_host_addr_bits(params)))``
        Host access: address fields group, superlane, word, bank (LSB first).
    ecc_flip : ``In(ecc.host_word_code_bits(params))`` (``mem_ecc`` only)
        Stored bits to flip in a host write of this cycle (bit ``j * n + b``: bit ``b`` of
        codeword ``j`` of the host word).
    ecc_corrected, ecc_uncorrectable : ``Out(ecc_count_bits(params))`` (``mem_ecc`` only)
        Codewords read in this cycle with a corrected / an uncorrectable error.
    """

    def __init__(self, params, slice_info):
        if slice_info.kind != "mem":
            raise ValueError(f"MemSlice needs a slice of kind 'mem', not {slice_info.kind!r} "
                             f"({slice_info.name})")
        self._params = params
        self._info = slice_info
        # [superlane][lane] -> (memory, write port, read port); without mem_gather one memory
        # per superlane, [superlane][0], a vector word (lanes bytes) per entry
        self._lanes = []
        for c in range(params.superlanes):
            row = []
            # bits per lane entry / per host-word group (a codeword with mem_ecc)
            unit = ecc.code_for(params).n if params.mem_ecc else None
            if params.mem_gather:
                for _ in range(params.lanes):
                    mem = Memory(shape=unsigned(unit or 8), depth=params.mem_addr_words,
                                 init=[])
                    row.append((mem, mem.write_port(), mem.read_port()))
            else:
                group = unit or 8 * params.host_word_lanes
                mem = Memory(shape=unsigned(group * params.host_lane_groups),
                             depth=params.mem_addr_words, init=[])
                row.append((mem, mem.write_port(granularity=group), mem.read_port()))
            self._lanes.append(row)
        members = {
            "sr_east_in":  In(stream_column(params)),
            "sr_west_in":  In(stream_column(params)),
            "drive_east":  Out(stream_drive(params)),
            "drive_west":  Out(stream_drive(params)),
            "instr_read":  In(issue_signature()),
            "instr_write": In(issue_signature()),
            "error":       Out(ERROR_BITS),
            "host":        In(host_target_signature(mem_host_addr_bits(params))),
        }
        if params.mem_ecc:
            members["ecc_flip"] = In(ecc.host_word_code_bits(params))
            members["ecc_corrected"] = Out(ecc_count_bits(params))
            members["ecc_uncorrectable"] = Out(ecc_count_bits(params))
        super().__init__(members)

    @property
    def params(self):
        return self._params

    @property
    def slice_info(self):
        return self._info

    @property
    def memories(self) -> tuple:
        """The lane memories, ``memories[c][i]`` for lane ``i`` of superlane ``c`` (back doors).

        Entry ``a`` of ``memories[c][i]`` is byte ``c*lanes + i`` of vector word ``a`` (``a =
        bank * mem_words + word``). Without ``params.mem_gather`` each superlane has one memory,
        ``memories[c][0]``, whose entry ``a`` holds the superlane's ``lanes`` bytes of word ``a``
        (lane 0 in the low byte). With ``params.mem_ecc`` every entry holds codewords
        (``openlpu.ecc``): the lane's byte and its check bits, or without ``mem_gather`` one
        codeword of ``ecc.code_for(params).n`` bits per host-word group (group 0 lowest).
        """
        return tuple(tuple(t[0] for t in row) for row in self._lanes)

    def elaborate(self, platform):
        m = Module()
        p = self._params
        n_addr = p.mem_addr_words
        abits = ceil_log2(n_addr)
        wbits = p.mem_word_bits
        sbits = max(1, ceil_log2(p.streams))
        bank_bit = wbits                     # the address MSB selects the bank
        lanes = p.lanes

        m.submodules.sweep_read = sw_r = InstructionSweep(p)
        m.submodules.sweep_write = sw_w = InstructionSweep(p)
        wiring.connect(m, wiring.flipped(self.instr_read), sw_r.issue)
        wiring.connect(m, wiring.flipped(self.instr_write), sw_w.issue)

        op_layout = data.StructLayout({
            "valid":      1,                 # in-range instruction, superlane enabled
            "present":    1,                 # in-range instruction (whatever the mask)
            "mapped":     1,                 # GATHER / SCATTER
            "addr":       abits,
            "stream":     sbits,
            "stream_ok":  1,
            "dir":        1,
            "map_stream": sbits,
            "map_ok":     1,
            "map_dir":    1,
        })

        def decode(name, sweep, c, plain, mapped):
            """Decode the word in superlane ``c`` of a queue (``plain`` / ``mapped`` mnemonic)."""
            word = sweep.word[c]
            pv = data.View(isa.layout(plain), word)
            mv = data.View(isa.layout(mapped), word)
            # without per-lane addressing the ICU rejects GATHER / SCATTER (isa.unavailable)
            is_mapped = (mv.opcode == isa.BY_MNEMONIC[mapped].opcode) if p.mem_gather else C(0)
            op = Signal(op_layout, name=f"{name}_sl{c}")
            addr = Signal(max(len(pv.addr), len(mv.addr)), name=f"{name}_addr_sl{c}")
            stream = Mux(is_mapped, mv.stream, pv.stream)
            m.d.comb += [
                addr.eq(Mux(is_mapped, mv.addr, pv.addr)),
                op.present.eq(sweep.present[c] & (addr < n_addr)),
                op.valid.eq(sweep.valid[c] & (addr < n_addr)),
                op.mapped.eq(is_mapped),
                op.addr.eq(addr[:abits]),
                op.stream.eq(stream[:sbits]),
                op.stream_ok.eq(stream < p.streams),
                op.dir.eq(Mux(is_mapped, mv.dir, pv.dir)),
                op.map_stream.eq(mv.map_stream[:sbits]),
                op.map_ok.eq(mv.map_stream < p.streams),
                op.map_dir.eq(mv.map_dir),
            ]
            return op, sweep.present[0] & (addr >= n_addr)

        def slot(c, stream, d):
            """The SR slot (data, valid) of ``stream`` flowing ``d`` at the input side."""
            east = self.sr_east_in[c][stream]
            west = self.sr_west_in[c][stream]
            src = Signal(data.StructLayout({"data": data.ArrayLayout(unsigned(8), lanes),
                                            "valid": 1}))
            m.d.comb += src.eq(Mux(d == Dir.WEST, west.as_value(), east.as_value()))
            return src

        def lane_addrs(op, map_slot, name):
            """Per lane memory address of ``op`` (READ/WRITE: addr; mapped: bank + word + map)."""
            out = []
            bank = op.addr[bank_bit]
            word = op.addr[:wbits]
            for i in range(lanes):
                a = Signal(abits, name=f"{name}_lane{i}")
                mapv = Mux(op.map_ok, map_slot.data[i], 0)
                mword = (word + mapv)[:wbits] if wbits else word
                m.d.comb += a.eq(Mux(op.mapped, Cat(mword, bank) if wbits else bank, op.addr))
                out.append(a)
            return out

        # -- host address fields ---------------------------------------------------------------
        fb = p.host_mem_field_bits
        h_group = self.host.addr[:fb["group"]]
        h_sl = self.host.addr[fb["group"]:fb["group"] + fb["superlane"]]
        h_addr = self.host.addr[fb["group"] + fb["superlane"]:]

        h_r = Signal()
        h_r_sl = Signal.like(h_sl) if len(h_sl) else None
        h_r_group = Signal.like(h_group) if len(h_group) else None

        # -- tiles -------------------------------------------------------------------------------
        ecc_corr, ecc_unc = [], []           # codeword events counted this cycle
        unwritten = []
        read_bad_stream = Signal()
        rd_datas = []                        # per superlane: the lanes' read data, lane 0 first
        r0 = w0 = None
        r_bad_addr = w_bad_addr = None
        for c, row in enumerate(self._lanes):
            r, rb = decode("rd", sw_r, c, "READ", "GATHER")
            w, wb = decode("wr", sw_w, c, "WRITE", "SCATTER")
            if c == 0:
                r0, w0, r_bad_addr, w_bad_addr = r, w, rb, wb
            r_map = slot(c, r.map_stream, r.map_dir)
            w_map = slot(c, w.map_stream, w.map_dir)
            w_src = slot(c, w.stream, w.dir)
            r_addrs = lane_addrs(r, r_map, f"rd_sl{c}")
            w_addrs = lane_addrs(w, w_map, f"wr_sl{c}")
            host_here = self.host.w_en & (h_sl == c) if len(h_sl) else self.host.w_en
            if p.mem_gather:
                tile_data, corr, unc = self._lane_memories(m, c, row, r, w, w_src, r_addrs,
                                                           w_addrs, host_here, h_group, h_addr)
            else:
                tile_data, corr, unc = self._wide_memory(m, c, row[0], r, w, w_src, host_here,
                                                         h_group, h_addr)
            rd_datas.append(tile_data)
            if p.mem_ecc:
                # the codewords whose read is used this cycle: every one of an enabled READ /
                # GATHER of the cycle before, else those of the host word read the cycle before
                rd_used = Signal(name=f"ecc_rd_used_sl{c}")
                m.d.sync += rd_used.eq(r.valid)
                host_sl = h_r & ((h_r_sl == c) if h_r_sl is not None else 1) & ~rd_used
                per_group = len(corr) // p.host_lane_groups
                for j in range(len(corr)):
                    g = j // per_group
                    used = rd_used | (host_sl & ((h_r_group == g) if h_r_group is not None
                                                 else 1))
                    ecc_corr.append(corr[j] & used)
                    ecc_unc.append(unc[j] & used)

            # READ / GATHER: drive next cycle
            d_valid = Signal(name=f"drv_valid_sl{c}")
            d_stream = Signal(sbits, name=f"drv_stream_sl{c}")
            d_dir = Signal(name=f"drv_dir_sl{c}")
            m.d.sync += [
                d_valid.eq(r.valid & r.stream_ok),
                d_stream.eq(r.stream),
                d_dir.eq(r.dir),
            ]
            if c == 0:
                m.d.sync += read_bad_stream.eq(r.present & ~r.stream_ok)
            for s in range(p.streams):
                hit = d_valid & (d_stream == s)
                m.d.comb += [
                    self.drive_east[c][s].en.eq(hit & (d_dir == Dir.EAST)),
                    self.drive_east[c][s].data.eq(tile_data),
                    self.drive_west[c][s].en.eq(hit & (d_dir == Dir.WEST)),
                    self.drive_west[c][s].data.eq(tile_data),
                ]

            # checkers of this superlane (enabled instructions only)
            unwritten.append(w.valid & w.stream_ok & ~w_src.valid)
            unwritten.append(w.valid & w.mapped & w.map_ok & ~w_map.valid)
            unwritten.append(r.valid & r.mapped & r.map_ok & ~r_map.valid)

        # -- host read data ------------------------------------------------------------------
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

        # -- errors (superlane 0 frame) ----------------------------------------------------------
        r_bank = r0.addr[bank_bit]
        w_bank = w0.addr[bank_bit]
        both = (sw_r.issue_mask & sw_w.issue_mask).any()
        addr_range = (r_bad_addr | w_bad_addr | (w0.present & ~w0.stream_ok) | read_bad_stream
                      | (r0.present & r0.mapped & ~r0.map_ok)
                      | (w0.present & w0.mapped & ~w0.map_ok))
        ecc_flag = 0
        if p.mem_ecc:
            m.d.comb += [self.ecc_corrected.eq(sum(ecc_corr)),
                         self.ecc_uncorrectable.eq(sum(ecc_unc))]
            ecc_flag = Mux(_any(ecc_unc), int(ErrorFlag.MEM_UNCORRECTABLE), 0)
        m.d.comb += self.error.eq(
            ecc_flag
            | Mux(addr_range, int(ErrorFlag.ADDR_RANGE), 0)
            | Mux(r0.present & w0.present & (r_bank == w_bank) & both,
                  int(ErrorFlag.BANK_CONFLICT), 0)
            | Mux(_any(unwritten), int(ErrorFlag.STREAM_UNWRITTEN), 0))
        return m


    def _lane_memories(self, m, c, row, r, w, w_src, r_addrs, w_addrs, host_here, h_group,
                       h_addr):
        """Tile ``c`` as one byte memory per lane (per-lane addresses); returns its read data
        and, with ``mem_ecc``, the per-lane corrected / uncorrectable bits (else empty)."""
        p = self._params
        lane_data, corr, unc = [], [], []
        for i, (mem, wr, rd) in enumerate(row):
            m.submodules[tile_memory_name(c, i)] = mem
            m.d.comb += rd.addr.eq(Mux(r.valid, r_addrs[i], h_addr))
            host_lane = host_here & (h_group == i // 4 if len(h_group) else 1)
            w_data = Mux(w.valid, Mux(w.stream_ok, w_src.data[i], 0),
                         self.host.w_data.word_select(i % 4, 8))
            if p.mem_ecc:
                code = ecc.code_for(p)
                m.submodules[f"ecc_enc{c}_lane{i}"] = enc = SecdedEncoder(code)
                m.submodules[f"ecc_dec{c}_lane{i}"] = dec = SecdedDecoder(code)
                j = i % p.host_word_lanes            # codeword j of its host word
                flip = self.ecc_flip[j * code.n:(j + 1) * code.n]
                m.d.comb += [enc.data.eq(w_data), dec.codeword.eq(rd.data)]
                w_data = enc.codeword ^ Mux(w.valid, 0, flip)
                lane_data.append(dec.data)
                corr.append(dec.corrected)
                unc.append(dec.uncorrectable)
            else:
                lane_data.append(rd.data)
            m.d.comb += [
                wr.en.eq(Mux(w.valid, 1, host_lane)),
                wr.addr.eq(Mux(w.valid, w_addrs[i], h_addr)),
                wr.data.eq(w_data),
            ]
        return Cat(*lane_data), corr, unc

    def _wide_memory(self, m, c, ports, r, w, w_src, host_here, h_group, h_addr):
        """Tile ``c`` as one vector-wide memory (``mem_gather`` off); returns its read data and,
        with ``mem_ecc``, the per-group corrected / uncorrectable bits (else empty)."""
        p = self._params
        mem, wr, rd = ports
        m.submodules[tile_memory_name(c)] = mem
        m.d.comb += rd.addr.eq(Mux(r.valid, r.addr, h_addr))
        gbits = 8 * p.host_word_lanes
        # the host writes one group of host_word_lanes lanes, WRITE all of them
        groups = [host_here & (h_group == g if len(h_group) else 1)
                  for g in range(p.host_lane_groups)]
        w_data = Mux(w.valid, Mux(w.stream_ok, w_src.data.as_value(), 0),
                     self.host.w_data[:gbits].replicate(p.host_lane_groups))
        corr, unc = [], []
        if p.mem_ecc:
            code = ecc.code_for(p)
            words, datas = [], []
            for g in range(p.host_lane_groups):
                m.submodules[f"ecc_enc{c}_g{g}"] = enc = SecdedEncoder(code)
                m.submodules[f"ecc_dec{c}_g{g}"] = dec = SecdedDecoder(code)
                m.d.comb += [enc.data.eq(w_data[g * gbits:(g + 1) * gbits]),
                             dec.codeword.eq(rd.data[g * code.n:(g + 1) * code.n])]
                words.append(enc.codeword ^ Mux(w.valid, 0, self.ecc_flip))
                datas.append(dec.data)
                corr.append(dec.corrected)
                unc.append(dec.uncorrectable)
            w_data, read_data = Cat(*words), Cat(*datas)
        else:
            read_data = rd.data
        m.d.comb += [
            wr.en.eq(Cat(*groups) | w.valid.replicate(p.host_lane_groups)),
            wr.addr.eq(Mux(w.valid, w.addr, h_addr)),
            wr.data.eq(w_data),
        ]
        return read_data, corr, unc


def _any(signals):
    acc = signals[0]
    for s in signals[1:]:
        acc = acc | s
    return acc
