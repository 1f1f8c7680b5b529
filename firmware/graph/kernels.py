"""Layout conversion kernels of the graph compiler.

:func:`emit_copy` moves an int8 row-wise tensor another kernel left in MEM into other MEM
banks: each stored word is READ, passed through a VXM ALU unchanged (``VOR`` with the
immediate 0) and WRITten to the new place, one flow per word committed by
:func:`~openlpu.firmware.dataflow.commit` (pipelined one word per cycle when the resources
allow). The graph compiler uses it when a consumer cannot read a tensor where its producer put
it (e.g. both operands of an elementwise op in one MEM slice, whose one read queue cannot feed
both in one cycle).
"""

from __future__ import annotations

from openlpu.isa import Dir

from ..chipstate import ChipState, Emitted, transactional
from ..package import TensorDesc
from ..schedule import CompileError

__all__ = ["emit_copy"]


@transactional
def emit_copy(state: ChipState, src: TensorDesc, name: str, *, earliest: int = 0,
              avoid_slices=(), unit=None, base: int | None = None) -> Emitted:
    """Copy the int8 tensor ``src`` into one ``(slice, bank)`` of a MEM slice not in
    ``avoid_slices`` nor holding ``src`` (west slices first, bank 0 first; the first with room),
    as tensor ``name``; every instruction at or after ``earliest`` (after ``src`` is written).
    With ``unit`` and ``base`` the copy goes to words ``base..`` of that ``(slice, bank)``
    (where a kernel with fixed MEM words reads its input). Returns the :class:`Emitted` with
    the new layout as its output."""
    from ..dataflow import INT8, Flow, MemSrc, commit
    p = state.params
    if src.dtype != "int8" or len(src.planes) != 1:
        raise CompileError(f"{state.where}: copy of {src.name!r}: only int8 tensors are copied")
    words = src.words(p.vl)
    held = {sl for sl, *_ in src.layout[0]}
    vx = p.slice("vxm").position
    units = [(s.index, bk) for bk in range(p.mem_banks) for s in p.mem_slice_list
             if s.index not in held and s.index not in set(avoid_slices)]
    if unit is not None:
        if unit[0] in held:
            raise CompileError(f"{state.where}: copy of {src.name!r} into the MEM slice it is "
                               f"read from")
        unit = tuple(unit)
        state.alloc.reserve(name, unit, base or 0, words)
        base = base or 0
    else:
        unit = next((u for u in units if state.alloc.fits(words, [u])), None)
        if unit is None:
            raise CompileError(f"{state.where}: copy of {src.name!r}: no MEM bank outside "
                               f"slices {sorted(held | set(avoid_slices))} has {words} free "
                               f"words")
        base = state.alloc.stripe(name, words, [unit])[0][2]
    dst = p.mem_slice_list[unit[0]]
    out_dir = Dir.EAST if dst.position > vx else Dir.WEST
    for w in range(words):
        sl, bk, word = src.locate(0, w)
        flow = Flow(p)
        a = MemSrc(((p.mem_slice_list[sl].name, bk * p.mem_words + word),), stream=0)
        y = flow.vxm("OR", a, dtype=INT8, out_dir=out_dir, b_imm=0)
        flow.write(y, [(dst.name, unit[1] * p.mem_words + base + w)])
        earliest = commit(state, flow, earliest) + 1
    out = TensorDesc(name, tuple(src.shape), "int8", [unit], base=base,
                     transposed=src.transposed)
    return Emitted(end=state.end, inputs=[src], outputs=[out], meta={"vectors": words})
