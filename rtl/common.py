"""Shared shapes for OpenLPU slices: stream-register views and the slice port convention.

Every functional slice is a ``wiring.Component`` with these members (from the slice's side):

``sr_east_in``  ``In(stream_column(params))``
    The eastward streams in the SR column on the slice's west side (what it can read).
``sr_west_in``  ``In(stream_column(params))``
    The westward streams in the SR column on the slice's east side.
``drive_east``  ``Out(stream_drive(params))``
    Values the slice drives into the SR column on its east side this cycle (``en`` per
    superlane and stream); they replace the passing eastward value at the next clock edge.
``drive_west``  ``Out(stream_drive(params))``
    Same for the SR column on its west side (westward streams).
``instr_<role>`` ``In(issue_signature())`` for each queue role of the slice kind
    The instruction issued by that queue's ICU this cycle (superlane 0 executes it now; the
    slice itself delays it by one register per superlane for superlanes 1, 2, ...).
``error``  ``Out(ERROR_BITS)``
    ``openlpu.isa.ErrorFlag`` bits raised this cycle (the register block makes them sticky).

All indexing is ``[superlane][stream]``; ``data`` is an array of ``lanes`` unsigned bytes.
"""

from amaranth.hdl import Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from openlpu import isa

__all__ = ["ERROR_BITS", "stream_slot", "stream_column", "drive_slot", "stream_drive",
           "issue_signature", "host_bus_signature", "instruction_line", "decode_stage"]

ERROR_BITS = 8


def stream_slot(params) -> data.StructLayout:
    """One stream in one superlane of one SR column: ``lanes`` bytes and a valid bit."""
    return data.StructLayout({
        "data":  data.ArrayLayout(unsigned(8), params.lanes),
        "valid": 1,
    })


def stream_column(params) -> data.ArrayLayout:
    """All streams of one direction in one SR column: ``[superlane][stream]``."""
    return data.ArrayLayout(data.ArrayLayout(stream_slot(params), params.streams), params.superlanes)


def drive_slot(params) -> data.StructLayout:
    """A slice's output onto one stream in one superlane: enable and ``lanes`` bytes."""
    return data.StructLayout({
        "data": data.ArrayLayout(unsigned(8), params.lanes),
        "en":   1,
    })


def stream_drive(params) -> data.ArrayLayout:
    """A slice's outputs onto all streams of one direction: ``[superlane][stream]``."""
    return data.ArrayLayout(data.ArrayLayout(drive_slot(params), params.streams), params.superlanes)


def issue_signature() -> wiring.Signature:
    """An instruction issued by an ICU: ``valid`` and the 32-bit ``word`` (slice's side: In)."""
    return wiring.Signature({
        "valid": Out(1),
        "word":  Out(isa.INSTR_BITS),
    })


def host_bus_signature() -> wiring.Signature:
    """The host bus, seen from the host (the chip takes it as ``In``). See docs/architecture.md."""
    return wiring.Signature({
        "addr":    Out(isa.HOST_ADDR_BITS),
        "w_en":    Out(1),
        "w_data":  Out(32),
        "r_en":    Out(1),
        "r_data":  In(32),
        "r_valid": In(1),
    })


def instruction_line(m, port, role, length):
    """Delay line of an issue port: entry ``i`` is ``(valid, word)`` of the instruction issued
    ``i`` cycles ago (entry 0 is the port itself). Superlane ``c`` executes entry ``c``."""
    stages = [(port.valid, port.word)]
    for i in range(1, length):
        valid = Signal(name=f"{role}_valid_d{i}")
        word = Signal(isa.INSTR_BITS, name=f"{role}_word_d{i}", reset_less=True)
        m.d.sync += [valid.eq(stages[-1][0]), word.eq(stages[-1][1])]
        stages.append((valid, word))
    return stages


def decode_stage(stage, mnemonic):
    """``(is mnemonic, view of its fields)`` for one ``instruction_line`` entry."""
    valid, word = stage
    view = data.View(isa.layout(mnemonic), word)
    return valid & (view.opcode == isa.BY_MNEMONIC[mnemonic].opcode), view
