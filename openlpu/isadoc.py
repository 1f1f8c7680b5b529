"""Generate the instruction reference of ``docs/isa.md`` from :mod:`openlpu.isa`.

``python -m openlpu.isadoc --write`` rewrites the part of docs/isa.md between the markers; the
test suite checks that the committed file is current, so the document cannot drift from the
table the RTL, model, assembler and compiler use.
"""

from __future__ import annotations

import sys
from pathlib import Path

from . import isa
from .params import PRESETS

BEGIN = "<!-- BEGIN GENERATED: python -m openlpu.isadoc --write -->"
END = "<!-- END GENERATED -->"
DOC = Path(__file__).resolve().parent.parent / "docs" / "isa.md"


def _latency(idef, attr):
    if attr == "d_skew":
        return "-" if idef.d_skew is None else str(idef.d_skew)
    vals = {name: idef.d_func(p) for name, p in PRESETS.items()}
    if all(v is None for v in vals.values()):
        return "-"
    if len(set(vals.values())) == 1:
        return str(next(iter(vals.values())))
    return ", ".join(f"{v} ({n})" for n, v in vals.items())


def _size_options(idef) -> str:
    """The line saying which ``LpuParams`` switches remove ``idef`` (``isa.unavailable``) and
    which presets lack it; empty for instructions every chip has."""
    options = [o for o, mns in isa.SIZE_OPTION_INSTRUCTIONS.items() if idef.mnemonic in mns]
    if not options:
        return ""
    lacking = [n for n, p in PRESETS.items() if idef.mnemonic in isa.unavailable(p)]
    return (f"**Size option:** absent on chips with "
            f"{' or '.join(f'`{o}=False`' for o in options)}"
            f"{' (preset ' + ', '.join(f'`{n}`' for n in lacking) + ')' if lacking else ''}; "
            f"see *Instructions a chip may lack*\n")


def _meanings() -> list:
    """The table of field meanings (``isa.FIELD_MEANINGS``): what each is, its chip range."""
    out = ["### Field meanings\n",
           "The meaning column of each instruction's table names one of these "
           "(`isa.field_meaning`); `isa.check_instruction` checks every field against it.\n",
           "| meaning | what it is and its legal range on a chip |", "|---|---|"]
    for name, text in isa.FIELD_MEANINGS.items():
        out.append(f"| `{name}` | {text} |")
    out.append("")
    return out


def _vxm_unit(idef) -> str:
    """The line saying which VXM function unit ``idef`` needs (``isa.VXM_UNITS``) and on which
    ALUs of the presets that leave it out of some ALUs it runs; empty if it needs none."""
    unit = isa.VXM_UNIT_OF.get(idef.mnemonic)
    if unit is None:
        return ""
    option = isa.VXM_UNITS[unit][0]
    fewer = [f"`{n}`: {', '.join(isa.vxm_alus_with(p, idef.mnemonic)) or 'none'}"
             for n, p in PRESETS.items() if p.vxm_alus and isa.vxm_unit_alus(p, unit) < p.vxm_alus]
    return (f"**Function unit:** the {isa.VXM_UNIT_NAMES[unit]} (`{unit}`), only in the ALUs "
            f"`alu0` .. below `{option}`"
            f"{' (' + '; '.join(fewer) + ')' if fewer else ''}; see *VXM ALU classes*\n")


def generate() -> str:
    out = _meanings()
    roles = {}
    for kind, rs in isa.QUEUE_ROLES.items():
        for r in rs:
            roles.setdefault(r, []).append(kind)
    for idef in isa.INSTRUCTIONS:
        where = ("every queue" if "*" in idef.roles else
                 ", ".join(f"{'/'.join(roles.get(r, ['?']))} `{r}` queue" for r in idef.roles))
        out.append(f"### `{idef.mnemonic}`\n")
        operands = ", ".join(f.name for f in idef.fields)
        out.append(f"**Format:** `{idef.mnemonic}{' ' + operands if operands else ''}` "
                   f"&nbsp; **Opcode:** {idef.opcode} &nbsp; **Issued by:** {where}\n")
        out.append(f"{idef.summary}\n")
        if _size_options(idef):
            out.append(_size_options(idef))
        if _vxm_unit(idef):
            out.append(_vxm_unit(idef))
        out.append("| bits | field | range | meaning |")
        out.append("|---|---|---|---|")
        out.append(f"| {isa.OPCODE_BITS - 1}:0 | opcode | = {idef.opcode} | |")
        pos = isa.OPCODE_BITS
        for f in idef.fields:
            out.append(f"| {pos + f.bits - 1}:{pos} | {f.name} ({f.kind}) | {f.min}..{f.max} | "
                       f"`{isa.field_meaning(idef, f.name)}` |")
            pos += f.bits
        if pos < isa.INSTR_BITS:
            out.append(f"| {isa.INSTR_BITS - 1}:{pos} | reserved | 0 | |")
        ops = isa.VXM_OPERANDS.get(idef.mnemonic)
        if ops is not None and idef in isa.VXM_INSTRUCTIONS:
            out.append("")
            out.append(f"**Operands:** {_vxm_operands(ops)}")
        out.append("")
        out.append(f"**d_skew:** {_latency(idef, 'd_skew')} &nbsp; "
                   f"**d_func:** {_latency(idef, 'd_func')}\n")
    return "\n".join(out)


def _vxm_operands(ops) -> str:
    """One line on what a VXM instruction reads and drives (``isa.VXM_OPERANDS``)."""
    parts = ["a (dtype wide" + (", int32 only)" if ops.int32_only else ")")]
    if ops.uses_b:
        parts.append("b (" + ("1 byte stream in b_mode 0/1" if ops.b_bytes == 1 else "dtype wide")
                     + ")")
    else:
        parts.append("no b (b fields unused)")
    parts.append({"dtype": "result dtype wide on a_stream ..", "int8": "int8 result on a_stream",
                  "imm": "result of the lane type imm[1:0] on a_stream ..",
                  None: "no stream result"}[ops.result])
    if ops.imm == "cmp":
        parts.append("imm a comparison code 0..5")
    return "; ".join(parts) + "."


def render(current: str) -> str:
    head, _, rest = current.partition(BEGIN)
    _, _, tail = rest.partition(END)
    return f"{head}{BEGIN}\n\n{generate()}\n{END}{tail}"


if __name__ == "__main__":
    text = DOC.read_text()
    new = render(text)
    if "--write" in sys.argv:
        DOC.write_text(new)
    elif new != text:
        sys.exit("docs/isa.md is out of date: run python -m openlpu.isadoc --write")
