"""The stream-register fabric: SR columns between the slices, eastward and westward streams."""

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .common import drive_slot, stream_column, stream_drive, stream_slot
from .shared import active_library, place

__all__ = ["StreamFabric", "SrColumn"]


class StreamFabric(wiring.Component):
    """Stream registers of every SR column, both directions (``docs/architecture.md``, Streams).

    Slice position ``p`` has SR column ``p`` on its west side and ``p + 1`` on its east side.
    Every cycle, per superlane and stream::

        east[i+1] <= drive_east[i].en ? drive_east[i].data : east[i]    (east[0] is never driven)
        west[i]   <= drive_west[i].en ? drive_west[i].data : west[i+1]  (west[last] is never driven)

    A driven slot becomes valid; an undriven one takes the valid bit of its upstream
    neighbour. ``clear`` (the start pulse) clears every valid bit at the end of its cycle; the
    data registers have no reset. ``east[0]`` and ``west[last]`` are constant and never valid.
    In Verilog that keeps its modules apart (a :func:`openlpu.rtl.shared.library` opened with
    ``no_inline``: the big chips) each column is an :class:`SrColumn` placed with
    :func:`openlpu.rtl.shared.place`, one module for all of them; elsewhere the columns'
    registers are this module's own.

    Parameters
    ----------
    params : :class:`openlpu.params.LpuParams`
        Uses ``floorplan`` (one driver per position), ``superlanes``, ``streams``, ``lanes``.

    Members
    -------
    clear : ``In(1)``
        Clear all valid bits.
    drive_east, drive_west : ``In(stream_drive(params)).array(len(floorplan))``
        What the slice at each position drives (a position without a slice drives nothing).
    east, west : ``Out(stream_column(params)).array(sr_columns)``
        The SR columns' eastward and westward streams.
    """

    def __init__(self, params):
        self._params = params
        positions = len(params.floorplan)
        super().__init__({
            "clear":      In(1),
            "drive_east": In(stream_drive(params)).array(positions),
            "drive_west": In(stream_drive(params)).array(positions),
            "east":       Out(stream_column(params)).array(params.sr_columns),
            "west":       Out(stream_column(params)).array(params.sr_columns),
        })

    @property
    def params(self):
        return self._params

    def elaborate(self, platform):
        m = Module()
        p = self._params
        cols = p.sr_columns
        # east[0] and west[cols-1] stay at their initial value (0, not valid)
        links = ([(f"east{i}", self.east[i], self.east[i - 1], self.drive_east[i - 1])
                  for i in range(1, cols)]
                 + [(f"west{i}", self.west[i], self.west[i + 1], self.drive_west[i])
                    for i in range(cols - 1)])
        lib = active_library()
        if lib is None or not lib.no_inline:
            # the columns' logic in this module: Verilator flattens it into the chip's model
            for name, out, upstream, drive in links:
                column_logic(m, p, self.clear, upstream, drive, out, f"{name}_")
            return m
        # Verilog that keeps its modules apart (big chips, openlpu.rtl.chip.keep_modules_apart):
        # every column of both directions is the same circuit, converted once. (Smaller chips do
        # not: Verilator keeps a module with that many instances apart anyway, and the chip then
        # simulates slower: default 0.56 to 0.78 times, see Cost in docs/architecture.md.)
        key = (p.superlanes, p.streams, p.lanes)    # all the column's logic depends on
        for name, out, upstream, drive in links:
            col = SrColumn(p)
            place(m, name, col, key, kind="sr_column")
            m.d.comb += [
                col.clear.eq(self.clear),
                col.upstream.eq(upstream),
                col.drive.eq(drive),
                out.eq(col.out),
            ]
        return m


def column_logic(m, p, clear, upstream, drive, out, prefix=""):
    """The registers of one SR column, added to module ``m``: ``out`` (a
    ``stream_column(p)`` value) <= ``drive`` (``stream_drive(p)``) where enabled, else
    ``upstream``; ``clear`` clears the valid bits. Register names start with ``prefix``."""
    # Raw bit slices (offsets from the layouts) keep elaboration fast on big presets.
    slot, dslot = stream_slot(p), drive_slot(p)
    n_slots = p.superlanes * p.streams      # slot i: superlane i // streams, stream i % streams
    dbits = 8 * p.lanes
    up, drv = upstream.as_value(), drive.as_value()
    data_reg = Signal(n_slots * dbits, name=f"{prefix}data", reset_less=True)
    valid_reg = Signal(n_slots, name=f"{prefix}valid")
    data_next, valid_next, out_slots = [], [], []
    for i in range(n_slots):
        u, d = i * slot.size, i * dslot.size
        en = drv[d + dslot["en"].offset]
        data_next.append(Mux(en, drv[d + dslot["data"].offset:][:dbits],
                             up[u + slot["data"].offset:][:dbits]))
        valid_next.append(en | up[u + slot["valid"].offset])
        fields = {slot["data"].offset: data_reg[i * dbits:(i + 1) * dbits],
                  slot["valid"].offset: valid_reg[i]}
        out_slots.append(Cat(*[fields[k] for k in sorted(fields)]))
    m.d.sync += [
        data_reg.eq(Cat(*data_next)),
        valid_reg.eq(Mux(clear, 0, Cat(*valid_next))),
    ]
    m.d.comb += out.as_value().eq(Cat(*out_slots))


class SrColumn(wiring.Component):
    """One SR column of one direction: the stream registers of every superlane and stream.

    Every cycle, per superlane and stream::

        out <= drive.en ? drive.data : upstream        (valid: drive.en | upstream.valid)

    so ``out`` is registered (one cycle from ``drive`` or ``upstream`` to ``out``). ``clear``
    clears every valid bit at the end of its cycle; the data registers have no reset.

    Parameters
    ----------
    params : :class:`openlpu.params.LpuParams`
        Uses ``superlanes``, ``streams``, ``lanes``.

    Members
    -------
    clear : ``In(1)``
        Clear all valid bits.
    upstream : ``In(stream_column(params))``
        The column the streams come from (west of it for eastward streams, east for westward).
    drive : ``In(stream_drive(params))``
        What the slice between ``upstream`` and this column drives into it.
    out : ``Out(stream_column(params))``
        The column's registers.
    """

    def __init__(self, params):
        self._params = params
        super().__init__({
            "clear":    In(1),
            "upstream": In(stream_column(params)),
            "drive":    In(stream_drive(params)),
            "out":      Out(stream_column(params)),
        })

    def elaborate(self, platform):
        m = Module()
        column_logic(m, self._params, self.clear, self.upstream, self.drive, self.out)
        return m
