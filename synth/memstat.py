"""The cost of MEM ECC: Yosys ``stat`` of one MEM slice with and without ``mem_ecc``.

Usage::

    python -m openlpu.synth.memstat --family ecp5 --preset ecp5
    python -m openlpu.synth.memstat --family ice40 --preset ice40
    python -m openlpu.synth.memstat --family ecp5 --preset ecp5 --set mem_gather=False

Synthesises one ``MemSlice`` (``mem_w0``, sweeps included) of the preset twice, as it is and with
``mem_ecc=True``, with ``synth_<family> -noflatten`` (Debian's ``yosys``, as
``synth/modstat.py``; ``YOSYS`` overrides it), no place and route, and prints the resources of
each and the difference. The figures are in ``docs/fpga.md`` (*MEM ECC*).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import tempfile
from collections import defaultdict

from .modstat import CATEGORIES, _yosys_stat, add_chip_arguments, chip_from_arguments

__all__ = ["mem_slice_stats", "main"]


def mem_slice_stats(family: str, params, *, yosys: str | None = None) -> dict:
    """``{category: count}`` of one MEM slice of ``params`` (all its submodules summed)."""
    from openlpu.rtl.mem import MemSlice
    yosys = yosys or os.environ.get("YOSYS") or shutil.which("yosys")
    if not yosys:
        raise RuntimeError("no yosys on PATH (apt-get install yosys, or set YOSYS)")
    with tempfile.TemporaryDirectory() as tmp:
        stats = _yosys_stat(MemSlice(params, params.mem_slice_list[0]), "mem_slice", family,
                            yosys, tmp)
    total = defaultdict(int)
    for counts in stats.values():
        for k, n in counts.items():
            total[k] += n
    return dict(total)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m openlpu.synth.memstat", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_chip_arguments(ap)
    args = ap.parse_args(argv)
    p = chip_from_arguments(args)
    rows = {}
    for ecc in (False, True):
        rows[ecc] = mem_slice_stats(args.family, dataclasses.replace(p, mem_ecc=ecc))
    cols = [name for _, name in CATEGORIES[args.family]
            if rows[False].get(name) or rows[True].get(name)]
    print(f"one MEM slice of preset {p.name!r} ({args.family}): " + ", ".join(cols))
    for label, r in (("without ECC", rows[False]), ("with ECC", rows[True])):
        print(f"{label:12s} " + "  ".join(f"{c} {r.get(c, 0)}" for c in cols))
    print(f"{'difference':12s} " + "  ".join(
        f"{c} {rows[True].get(c, 0) - rows[False].get(c, 0):+d}" for c in cols))
    return 0


if __name__ == "__main__":
    sys.exit(main())
