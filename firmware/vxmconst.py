"""Helpers shared by the VXM kernels (attention, softmax, RMSNorm): argument checks, VXM
instruction fields, and loading int32 constants into VXM ALU constant registers.

A VXM ALU's 32-bit constant register is filled by four ``VLC`` shift-in instructions
(``imm[0] = 1``, int8 operand): each shifts the register left by 8 bits and inserts one byte.
The four bytes (most significant first) are stored as four constant MEM words (the byte in every
lane) and READ, one per cycle, onto a byte stream that flows into the VXM.
"""

from __future__ import annotations

from openlpu import isa
from openlpu.isa import Dir

from .schedule import CompileError

__all__ = ["load_const", "CONST_WORDS", "vxm_fields", "check_vxm_kernel"]

CONST_WORDS = 4          # MEM words (and VLC cycles) per int32 constant


def vxm_fields(**f) -> dict:
    """All fields of a VXM instruction: ``f`` over the defaults (operand ``a`` on stream 0
    flowing east, not chained; ``b`` from a stream; result east; int32)."""
    base = dict(a_stream=0, a_dir=Dir.EAST, a_chain=0, b_stream=0, b_dir=0,
                b_mode=isa.VXM_B_STREAM, out_dir=Dir.EAST, dtype=2, imm=0)
    base.update(f)
    return base


def check_vxm_kernel(params, where: str, kind: str, dims: dict) -> None:
    """Raise :class:`CompileError` unless every value of ``dims`` (name -> value) is a positive
    integer and the preset has the 4-ALU VXM and the 8 streams per direction the VXM kernels
    use. ``where`` names the kernel and shape in the messages, ``kind`` the kernel alone."""
    p = params
    for name, v in dims.items():
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise CompileError(f"{kind} {name} must be a positive integer, not {v!r}")
    if p.vxm_alus < 4:
        raise CompileError(f"{where}: needs a VXM with 4 ALUs; preset {p.name!r} has "
                           f"{p.vxm_alus}")
    if p.streams < 8:
        raise CompileError(f"{where}: needs 8 streams per direction, preset has {p.streams}")


def load_const(sched, params, image: list, alu: int, value: int, t: int, *, src, addr: int,
               stream: int) -> int:
    """Shift the int32 ``value`` into the constant register of VXM ALU ``alu``.

    Words ``addr .. addr+3`` of MEM slice ``src`` (a :class:`SliceInfo`; the address includes
    the bank bit) receive the bytes MSB first (appended to ``image`` as ``(slice, addr, bytes)``);
    their READs are placed so that the VXM samples word ``k`` on ``stream`` at cycle ``t + k``,
    where ``VLC`` (shift-in) issues on ``vxm.alu{alu}``. Returns ``t + 4``, the first cycle at
    which an instruction of that ALU sees the complete constant.
    """
    p = params
    vx = p.slice("vxm")
    lat = isa.BY_MNEMONIC["READ"].d_func(p) + abs(src.position - vx.position)
    d = Dir.WEST if src.position > vx.position else Dir.EAST
    value = int(value)
    if not -(1 << 31) <= value < (1 << 32):
        raise ValueError(f"constant {value} does not fit 32 bits")
    for k in range(CONST_WORDS):
        byte = (value >> (8 * (3 - k))) & 0xFF
        image.append((src.index, addr + k, bytes([byte]) * p.vl))
        sched.place(f"{src.name}.read", t + k - lat, "READ", addr=addr + k, stream=stream, dir=d)
        sched.place(f"vxm.alu{alu}", t + k, "VLC", a_stream=stream, a_dir=d, a_chain=0,
                    b_stream=0, b_dir=0, b_mode=isa.VXM_B_STREAM, out_dir=Dir.EAST, dtype=0,
                    imm=1)
    return t + CONST_WORDS
