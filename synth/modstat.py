"""Where the FPGA resources go: Yosys ``stat`` per module of one preset's chip (hierarchy kept).

Usage::

    python -m openlpu.synth.modstat --family ice40 --preset ice40
    python -m openlpu.synth.modstat --family ecp5 --preset ecp5 --set mxm_pipeline=0

The chip (``LpuChip``) and the UART host bridge are synthesised separately with
``synth_<family> -noflatten`` (Debian's ``yosys``; ``YOSYS`` overrides it), so every slice, ICU
and the fabric keep their own counts. Flattening lets Yosys optimise across modules, so the sum
here is larger than a board build's count (``build.py``); use it to rank the consumers, not as
the fit figure. Writes ``build/synth/modstat-<family>-<preset>.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

from amaranth.back import verilog

from openlpu.params import preset as get_preset

__all__ = ["CATEGORIES", "parse_stat", "module_stats", "format_stats", "main"]

ROOT = Path(__file__).resolve().parent.parent

#: Yosys cell type (regular expression) -> resource category, per FPGA family.
CATEGORIES = {
    "ice40": [(r"SB_LUT4", "LUT4"), (r"SB_DFF\w*", "FF"), (r"SB_CARRY", "CARRY"),
              (r"SB_RAM40_4K", "BRAM"), (r"SB_MAC16", "DSP"), (r"SB_SPRAM256KA", "SPRAM")],
    "ecp5": [(r"LUT4", "LUT4"), (r"TRELLIS_FF", "FF"), (r"CCU2C", "CARRY"), (r"DP16KD", "BRAM"),
             (r"MULT18X18D", "DSP"), (r"TRELLIS_DPR16X4", "LUTRAM"), (r"PFUMX|L6MUX21", "MUX")],
}


def parse_stat(text: str, family: str) -> dict:
    """``{module: {category: count}}`` from Yosys ``stat`` output (own cells, no submodules)."""
    cats = [(re.compile(rf"^{pat}$"), name) for pat, name in CATEGORIES[family]]
    out, mod = {}, None
    for ln in text.splitlines():
        head = re.match(r"^=== (\S+) ===$", ln.strip())
        if head:
            mod = head.group(1)
            out[mod] = defaultdict(int)
            continue
        if ln.strip().startswith("=== design hierarchy"):
            mod = None
            continue
        cell = re.match(r"^\s+(\S+)\s+(\d+)$", ln)
        if mod and cell:
            for pat, name in cats:
                if pat.match(cell.group(1)):
                    out[mod][name] += int(cell.group(2))
                    break
    return {m: dict(v) for m, v in out.items()}


def _group(module: str, top: str) -> str:
    """The chip-level instance a module belongs to (``lpu_chip.mem_e0.sweep_read`` -> mem_e0)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == top else "(top)"


def _yosys_stat(design, name, family, yosys, workdir):
    v = Path(workdir) / f"{name}.v"
    v.write_text(verilog.convert(design, name=name, emit_src=False))
    stat = Path(workdir) / f"{name}.stat"
    script = f"read_verilog {v}; synth_{family} -top {name} -noflatten; tee -q -o {stat} stat"
    r = subprocess.run([yosys, "-q", "-p", script], capture_output=True, text=True, timeout=1800)
    if r.returncode != 0:
        raise RuntimeError(f"yosys failed on {name}: {r.stderr.strip()[-800:]}")
    return parse_stat(stat.read_text(), family)


def module_stats(family: str, params, *, yosys: str | None = None) -> dict:
    """Resource counts per chip-level instance (slices, ICUs, fabric, regs) plus the bridge."""
    from openlpu.rtl.bridge import HostBridge
    from openlpu.rtl.chip import LpuChip
    yosys = yosys or shutil.which("yosys")
    if not yosys:
        raise RuntimeError("no yosys on PATH (apt-get install yosys, or set YOSYS)")
    with tempfile.TemporaryDirectory() as tmp:
        chip = _yosys_stat(LpuChip(params), "lpu_chip", family, yosys, tmp)
        bridge = _yosys_stat(HostBridge(timeout=4000), "host_bridge", family, yosys, tmp)
    groups = defaultdict(lambda: defaultdict(int))
    for mod, counts in chip.items():
        for k, n in counts.items():
            groups[_group(mod, "lpu_chip")][k] += n
    for counts in bridge.values():
        for k, n in counts.items():
            groups["host_bridge (board top)"][k] += n
    return {g: dict(c) for g, c in sorted(groups.items())}


def format_stats(stats: dict, family: str) -> str:
    cols = [name for _, name in CATEGORIES[family]
            if any(c.get(name) for c in stats.values())]
    rows = [["instance"] + cols]
    total = defaultdict(int)
    for g, c in stats.items():
        rows.append([g] + [str(c.get(k, 0)) for k in cols])
        for k in cols:
            total[k] += c.get(k, 0)
    rows.append(["total"] + [str(total[k]) for k in cols])
    w = [max(len(r[i]) for r in rows) for i in range(len(cols) + 1)]
    lines = [" | ".join(x.rjust(w[i]) if i else x.ljust(w[i]) for i, x in enumerate(r))
             for r in rows]
    lines.insert(1, "-+-".join("-" * x for x in w))
    return "\n".join(lines)


def add_chip_arguments(ap: argparse.ArgumentParser) -> None:
    """``--family``, ``--preset`` and repeatable ``--set FIELD=VALUE`` (the chip to measure)."""
    ap.add_argument("--family", choices=sorted(CATEGORIES), required=True)
    ap.add_argument("--preset", required=True)
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="override a parameter of the preset (Python literal), repeatable")


def chip_from_arguments(args):
    """The preset of ``args.preset`` with the ``--set`` overrides applied."""
    import ast
    p = get_preset(args.preset)
    for item in args.set:
        k, _, v = item.partition("=")
        p = dataclasses.replace(p, **{k: ast.literal_eval(v)})
    return p


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m openlpu.synth.modstat", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_chip_arguments(ap)
    args = ap.parse_args(argv)
    p = chip_from_arguments(args)
    stats = module_stats(args.family, p)
    out = ROOT / "build" / "synth" / f"modstat-{args.family}-{args.preset}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"params": p.to_dict(), "modules": stats}, indent=2) + "\n")
    print(format_stats(stats, args.family))
    print(f"\nwritten {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
