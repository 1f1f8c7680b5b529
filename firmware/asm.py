"""Assembler and disassembler for OpenLPU instruction queues.

Text format::

    ; comment (also '#')
    .queue mem_w0.read          ; following lines go to this queue
        READ 5, s1, W           ; positional fields, in ISA-table order
        READ addr=6, stream=s1, dir=W   ; or named fields
        NOP 3
        HALT

The mnemonic is separated from its operands by spaces or tabs; operands by commas (an empty
operand is an error). Field syntax: streams ``s3`` or ``3``; directions ``E``/``W`` (or
``EAST``/``WEST``); stream groups ``g1`` or ``1``; everything else a decimal, ``0x``, ``0b`` or
``0o`` number (ASCII digits). Every instruction and queue is checked against the chip by
:func:`openlpu.isa.check_instruction` and :func:`openlpu.isa.check_queue`. Errors raise
:class:`AsmError` with the line number. :func:`disassemble` produces text that assembles back
to the same words.
"""

from __future__ import annotations

import re

from openlpu import isa
from openlpu.isa import Dir
from openlpu.params import LpuParams, ParamsError

__all__ = ["AsmError", "assemble", "disassemble", "format_instr"]


class AsmError(ValueError):
    """Malformed assembly text or an instruction that does not fit the target."""


_PREFIX = {"stream": "s", "group": "g"}


_NUMBER = re.compile(r"[+-]?(?:0[xX][0-9a-fA-F]+|0[bB][01]+|0[oO][0-7]+|[0-9]+)")


def _parse_value(field: isa.Field, token: str) -> int:
    tok = token.strip()
    if field.kind == "dir":
        up = tok.upper()
        for d in Dir:
            if up in (d.name, d.name[0]):
                return int(d)
        raise ValueError(f"direction must be E or W, not {token!r} (field {field.name})")
    pre = _PREFIX.get(field.kind)
    if pre and tok[:1].lower() == pre:
        tok = tok[1:]
    try:
        if not _NUMBER.fullmatch(tok):
            raise ValueError
        return int(tok, 0)
    except ValueError:
        raise ValueError(f"field {field.name}: {token!r} is not a number") from None


def _operands(rest: str, col0: int) -> list[tuple[str, int]]:
    """Split the operand text (starting at 1-based column ``col0`` of the line) at commas into
    ``(operand, column)``; an empty operand is an error naming its position and column."""
    if not rest.strip():
        return []
    out = []
    pos = 0
    for k, part in enumerate(rest.split(",")):
        col = col0 + pos + (len(part) - len(part.lstrip()))
        if not part.strip():
            raise ValueError(f"operand {k + 1} is empty (column {col0 + pos})")
        out.append((part.strip(), col))
        pos += len(part) + 1
    return out


def assemble(text: str, params: LpuParams, *, check: bool = True) -> dict[str, list[int]]:
    """Assemble text into ``{queue name: [words]}`` for the chip described by ``params``.

    Every instruction is checked by :func:`openlpu.isa.check_instruction` (fields in the
    ranges of the chip, a REPEAT against the instruction it repeats) and every queue by
    :func:`openlpu.isa.check_queue`; errors raise :class:`AsmError` with the line number.
    ``check=False`` leaves out these checks of the chip's ranges (fields must still fit their
    bits, instructions their queue and chip): for tests of the chip's own run-time checkers,
    which need words that raise ``ADDR_RANGE`` or ``BAD_INSTRUCTION``.
    """
    out: dict[str, list[int]] = {}
    lines: dict[str, list[int]] = {}       # queue -> line number of each word
    prev: dict[str, tuple | None] = {}     # queue -> last non-control instruction (REPEAT)
    current = None
    for lineno, raw in enumerate(text.splitlines(), 1):
        code = re.split(r"[;#]", raw, maxsplit=1)[0]
        line = code.strip()
        if not line:
            continue
        try:
            if line.startswith("."):
                parts = line.split()
                if parts[0] != ".queue" or len(parts) != 2:
                    raise ValueError(f"unknown directive {line!r} (expected '.queue NAME')")
                try:
                    current = params.queue(parts[1])
                except ParamsError as e:
                    raise ValueError(str(e)) from None
                if current.name in out:
                    raise ValueError(f"queue {current.name} defined twice")
                out[current.name] = []
                lines[current.name] = []
                prev[current.name] = None
                continue
            if current is None:
                raise ValueError("instruction before any '.queue' directive")
            m = re.match(r"(\S+)(\s*)(.*)$", line, re.S)
            mnemonic, rest = m.group(1), m.group(3)
            if "," in mnemonic or "=" in mnemonic:
                raise ValueError(f"{mnemonic!r}: a space or tab must separate the instruction "
                                 f"from its operands")
            idef = isa.BY_MNEMONIC.get(mnemonic.upper())
            if idef is None:
                raise ValueError(f"unknown instruction {mnemonic!r}")
            if not isa.allowed(idef, current.role):
                raise ValueError(f"{idef.mnemonic} is not allowed in queue {current.name} "
                                 f"(a {current.role} queue)")
            why = isa.unavailable_reason(idef, current.role, params)
            if why:
                raise ValueError(why)
            col0 = len(code) - len(code.lstrip()) + len(m.group(1)) + len(m.group(2)) + 1
            args = _operands(rest, col0)
            values = {}
            if idef.mnemonic == "NOP" and not args:
                args = [("1", col0)]
            if len(args) != len(idef.fields):
                raise ValueError(f"{idef.mnemonic} takes {len(idef.fields)} operand(s) "
                                 f"({', '.join(idef.field_names) or 'none'}), got {len(args)}")
            for i, (arg, col) in enumerate(args):
                if "=" in arg:
                    key, _, val = arg.partition("=")
                    key = key.strip()
                    fld = next((fl for fl in idef.fields if fl.name == key), None)
                    if fld is None:
                        raise ValueError(f"{idef.mnemonic} has no field {key!r} (column {col})")
                    if not val.strip():
                        raise ValueError(f"field {key} has no value (column {col})")
                else:
                    fld, val = idef.fields[i], arg
                if fld.name in values:
                    raise ValueError(f"field {fld.name} given twice (column {col})")
                values[fld.name] = _parse_value(fld, val)
            word = idef.encode(**values)
            if check:
                isa.check_instruction(params, current.role, idef, values, prev[current.name])
            if idef.mnemonic not in isa.CONTROL_MNEMONICS:
                prev[current.name] = (idef, values)
            out[current.name].append(word)
            lines[current.name].append(lineno)
            if len(out[current.name]) > params.imem_words:
                raise ValueError(f"queue {current.name} exceeds {params.imem_words} words")
        except (ValueError, isa.IsaError) as e:
            raise AsmError(f"line {lineno}: {e}") from None
    for name, words in out.items() if check else ():
        try:
            isa.check_queue(params, name, words)
        except isa.IsaError as e:
            where = getattr(e, "index", None)
            line = f"line {lines[name][where]}: " if where is not None else ""
            raise AsmError(f"{line}{e}") from None
    return out


def format_instr(idef: isa.InstrDef, f: dict) -> str:
    parts = []
    for fld in idef.fields:
        v = f[fld.name]
        if fld.kind == "dir":
            parts.append(Dir(v).name[0])
        elif fld.kind in _PREFIX:
            parts.append(f"{_PREFIX[fld.kind]}{v}")
        else:
            parts.append(str(v))
    return f"{idef.mnemonic} {', '.join(parts)}".rstrip()


def disassemble(queues: dict[str, list[int]]) -> str:
    """Text for ``{queue name: [words]}``; raises :class:`AsmError` on undecodable words."""
    lines = []
    for name, words in queues.items():
        lines.append(f".queue {name}")
        for i, w in enumerate(words):
            try:
                idef, f = isa.decode(int(w))
            except isa.IsaError as e:
                raise AsmError(f"{name}[{i}]: {e}") from None
            lines.append(f"    {format_instr(idef, f)}")
    return "\n".join(lines) + "\n"
