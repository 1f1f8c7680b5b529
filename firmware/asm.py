"""Assembler and disassembler for OpenLPU instruction queues.

Text format::

    ; comment (also '#')
    .queue mem_w0.read          ; following lines go to this queue
        READ 5, s1, W           ; positional fields, in ISA-table order
        READ addr=6, stream=s1, dir=W   ; or named fields
        NOP 3
        HALT

Field syntax: streams ``s3`` or ``3``; directions ``E``/``W`` (or ``EAST``/``WEST``); stream groups
``g1`` or ``1``; everything else a decimal or ``0x`` number. Errors raise :class:`AsmError` with
the line number. :func:`disassemble` produces text that assembles back to the same words.
"""

from __future__ import annotations

import re

from openlpu import isa
from openlpu.isa import Dir
from openlpu.params import LpuParams, ParamsError

__all__ = ["AsmError", "assemble", "disassemble", "format_instr", "check_fields"]


class AsmError(ValueError):
    """Malformed assembly text or an instruction that does not fit the target."""


_PREFIX = {"stream": "s", "group": "g"}


def _parse_value(field: isa.Field, token: str) -> int:
    tok = token.strip()
    if field.kind == "dir":
        up = tok.upper()
        for d in Dir:
            if up in (d.name, d.name[0]):
                return int(d)
        raise ValueError(f"direction must be E or W, not {token!r}")
    pre = _PREFIX.get(field.kind)
    if pre and tok.lower().startswith(pre):
        tok = tok[1:]
    try:
        return int(tok, 0)
    except ValueError:
        raise ValueError(f"field {field.name}: {token!r} is not a number") from None


def check_fields(params: LpuParams, idef: isa.InstrDef, f: dict) -> None:
    """Check field values against the geometry of ``params``; raises ``ValueError``."""
    limits = {
        "addr": params.mem_addr_words, "stream": params.streams, "row": params.vl,
        "acc": params.mxm_acc_words, "group": params.stream_groups,
    }
    for name, limit in limits.items():
        if name in f and f[name] >= limit:
            raise ValueError(f"{idef.mnemonic}: {name}={f[name]} out of range for preset "
                             f"{params.name!r} (must be < {limit})")


def assemble(text: str, params: LpuParams) -> dict[str, list[int]]:
    """Assemble text into ``{queue name: [words]}`` for the chip described by ``params``."""
    out: dict[str, list[int]] = {}
    current = None
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = re.split(r"[;#]", raw, maxsplit=1)[0].strip()
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
                continue
            if current is None:
                raise ValueError("instruction before any '.queue' directive")
            mnemonic, _, rest = line.partition(" ")
            idef = isa.BY_MNEMONIC.get(mnemonic.upper())
            if idef is None:
                raise ValueError(f"unknown instruction {mnemonic!r}")
            if not isa.allowed(idef, current.role):
                raise ValueError(f"{idef.mnemonic} is not allowed in queue {current.name} "
                                 f"(a {current.role} queue)")
            why = isa.unavailable_reason(idef, current.role, params)
            if why:
                raise ValueError(why)
            args = [a for a in (x.strip() for x in rest.split(",")) if a]
            values = {}
            if idef.mnemonic == "NOP" and not args:
                args = ["1"]
            if len(args) != len(idef.fields):
                raise ValueError(f"{idef.mnemonic} takes {len(idef.fields)} operand(s) "
                                 f"({', '.join(idef.field_names) or 'none'}), got {len(args)}")
            for i, arg in enumerate(args):
                if "=" in arg:
                    key, _, val = arg.partition("=")
                    key = key.strip()
                    fld = next((fl for fl in idef.fields if fl.name == key), None)
                    if fld is None:
                        raise ValueError(f"{idef.mnemonic} has no field {key!r}")
                else:
                    fld, val = idef.fields[i], arg
                if fld.name in values:
                    raise ValueError(f"field {fld.name} given twice")
                values[fld.name] = _parse_value(fld, val)
            check_fields(params, idef, values)
            out[current.name].append(idef.encode(**values))
            if len(out[current.name]) > params.imem_words:
                raise ValueError(f"queue {current.name} exceeds {params.imem_words} words")
        except (ValueError, isa.IsaError) as e:
            raise AsmError(f"line {lineno}: {e}") from None
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
