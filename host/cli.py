"""The ``openlpu`` command line: run, inspect, disassemble and draw compiled programs.

Subcommands (each has ``--help``)::

    openlpu compile SPEC.py -o prog.lpu [--preset P]   a Python file defining program(params)
    openlpu compile MODEL.onnx -o prog.lpu [--preset P]   a quantized ONNX model
    openlpu run prog.lpu --backend model|amaranth|verilator|serial [--inputs in.npz]
                         [--outputs out.npz] [--max-cycles N] [--timeout S] [--port DEV]
    openlpu disasm prog.lpu [--queue Q]
    openlpu inspect prog.lpu [--json]
    openlpu timeline prog.lpu -o timeline.png [--start C] [--cycles N]
    openlpu generate [--prompt DIGITS] --tokens N [--backend model|verilator]

A program is a package file (``Package.save``; ``docs/architecture.md``, *Packages*). ``run``
prints the measured cycles beside the predicted ones and the MXM utilization (cycles in which
an MXM starts a vector product, ``ABC``, over all cycles). ``timeline`` draws what every queue
issues in which cycle (the static issue times of :func:`openlpu.isa.queue_issues`, exact for
programs without ``SYNC``; the compiler writes none) with matplotlib.

Every error a user can cause (a missing or malformed file, an input that does not fit, a
program over its limits) ends the command with exit status 2 and one line naming it.
"""

from __future__ import annotations

import argparse
import json
import math
import runpy
import sys
import time
from pathlib import Path

import numpy as np

from openlpu import isa

__all__ = ["main", "program_figures", "queue_timeline", "UNIT_OF"]


class CliError(Exception):
    """A problem with the command's arguments or files (exit status 2)."""


# -- figures of a package -----------------------------------------------------------------------

#: What kind of unit an instruction keeps busy (timeline colours and the inspect counts).
UNIT_OF = {
    **dict.fromkeys(("READ", "WRITE", "GATHER", "SCATTER"), "mem"),
    **dict.fromkeys(("LW", "LWW", "LWT", "IW", "ABC", "ACC"), "mxm"),
    **dict.fromkeys(("SHIFT", "PERMUTE", "TRANSPOSE", "DISTRIBUTE"), "sxm"),
}
_COLOURS = {"mem": "tab:blue", "mxm": "tab:red", "vxm": "tab:green", "sxm": "tab:purple",
            "control": "tab:gray"}


def _unit(mnemonic: str) -> str:
    if mnemonic in isa.CONTROL_MNEMONICS:
        return "control"
    return UNIT_OF.get(mnemonic, "vxm" if mnemonic.startswith("V") else "control")


def queue_timeline(words):
    """``[(cycle, mnemonic)]`` of every instruction a queue image issues, in order, up to its
    first ``SYNC`` (after it the times depend on another queue: the second value says whether
    the walk stopped at one)."""
    out = []
    for _, idef, _, t in isa.queue_issues(words):
        if t is None:
            return out, True
        out.append((t, idef.mnemonic))
    return out, False


def program_figures(pkg) -> dict:
    """Static figures of a package: words and issues per queue, ABC issues, MEM use."""
    queues = {}
    abc = 0
    for name, words in pkg.queues.items():
        issues, synced = queue_timeline(words)
        counts = {}
        for _, mn in issues:
            counts[mn] = counts.get(mn, 0) + 1
        abc += counts.get("ABC", 0)
        queues[name] = {"words": len(words), "issues": len(issues), "counts": counts,
                        "stops_at_sync": synced}
    mem = {}                                     # "mem_w0 bank 1" -> tensor words there
    p = pkg.params
    for t in list(pkg.inputs) + list(pkg.outputs):
        for plane in range(len(t.planes)):
            for sl, bank, _ in t.plane_words(plane, p.vl):
                key = f"{p.mem_slice_list[sl].name} bank {bank}"
                mem[key] = mem.get(key, 0) + 1
    return {"preset": pkg.params.name, "predicted_cycles": pkg.predicted_cycles,
            "imem_words": pkg.params.imem_words, "abc_issues": abc, "queues": queues,
            "tensor_words": mem}


# -- commands -------------------------------------------------------------------------------------

def _load(path):
    from openlpu.firmware.package import Package, PackageError
    p = Path(path)
    if not p.is_file():
        raise CliError(f"{path}: no such program file")
    try:
        return Package.load(p)
    except PackageError as e:
        raise CliError(f"{path}: not a valid program: {e}") from None


def cmd_compile(args) -> int:
    from openlpu.firmware.package import Package
    from openlpu.params import preset
    spec = Path(args.spec)
    if not spec.is_file():
        raise CliError(f"{spec}: no such file")
    if spec.suffix == ".onnx":
        return _compile_onnx(spec, args)
    ns = runpy.run_path(str(spec))
    build = ns.get("program")
    if not callable(build):
        raise CliError(f"{spec}: defines no function program(params) returning a package")
    try:
        params = preset(args.preset)
    except (KeyError, ValueError) as e:
        raise CliError(str(e)) from None
    t0 = time.perf_counter()
    pkg = build(params)
    if not isinstance(pkg, Package):
        raise CliError(f"{spec}: program(params) returned {type(pkg).__name__}, not a Package")
    pkg.save(args.output)
    print(f"{args.output}: {pkg.name} for preset {params.name!r}, {pkg.predicted_cycles} "
          f"cycles predicted, compiled in {time.perf_counter() - t0:.2f} s")
    return 0


def _compile_onnx(path, args) -> int:
    """``openlpu compile MODEL.onnx``: the ONNX import (docs/compiler.md, *ONNX import*), then
    the graph compiler; the package's inputs and outputs are the graph's int8 tensors."""
    from openlpu.firmware.graph import GraphError, compile_graph
    from openlpu.firmware.graph.onnx_import import import_onnx
    from openlpu.firmware.schedule import CompileError
    from openlpu.params import preset
    try:
        params = preset(args.preset)
    except (KeyError, ValueError) as e:
        raise CliError(str(e)) from None
    t0 = time.perf_counter()
    try:
        pkg = compile_graph(import_onnx(path, params), params)
    except (GraphError, CompileError) as e:
        raise CliError(f"{path}: {e}") from None
    pkg.save(args.output)
    print(f"{args.output}: {pkg.name} for preset {params.name!r}, {pkg.predicted_cycles} "
          f"cycles predicted, compiled in {time.perf_counter() - t0:.2f} s")
    return 0


def _read_npz(path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise CliError(f"{path}: no such input file")
    try:
        with np.load(p, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise CliError(f"{path}: not a readable .npz file ({e})") from None


def cmd_run(args) -> int:
    from openlpu.host.device import Device, DeviceError
    pkg = _load(args.program)
    inputs = _read_npz(args.inputs) if args.inputs else {}
    missing = [t.name for t in pkg.inputs if t.name not in inputs]
    if missing:
        raise CliError(f"{args.program} needs inputs {', '.join(missing)}"
                       f"{' (give --inputs in.npz)' if not args.inputs else f' not in {args.inputs}'}")
    open_kw = {"port": args.port} if args.backend == "serial" else {}
    t0 = time.perf_counter()
    try:
        with Device.open(args.backend, pkg.params, **open_kw) as dev:
            dev.load(pkg)
            dev.write_inputs({t.name: inputs[t.name] for t in pkg.inputs})
            cycles = dev.run(max_cycles=args.max_cycles, timeout_s=args.timeout)
            outputs = dev.read_outputs()
    except (DeviceError, ValueError, TimeoutError) as e:
        raise CliError(f"{args.backend}: {e}") from None
    wall = time.perf_counter() - t0
    fig = program_figures(pkg)
    same = "equal" if cycles == pkg.predicted_cycles else "DIFFERENT"
    print(f"{pkg.name} on {args.backend} ({pkg.params.name}): {cycles} cycles, predicted "
          f"{pkg.predicted_cycles} ({same}); MXM utilization {100 * fig['abc_issues'] / cycles:.1f} %"
          f"; {wall:.2f} s")
    if args.outputs:
        np.savez(args.outputs, **outputs)
        print(f"outputs {', '.join(outputs)} written to {args.outputs}")
    else:
        for k, v in outputs.items():
            print(f"{k}: {v.dtype} {v.shape}")
    return 0 if cycles == pkg.predicted_cycles else 1


def cmd_disasm(args) -> int:
    from openlpu.firmware.asm import disassemble
    pkg = _load(args.program)
    queues = pkg.queues
    if args.queue:
        if args.queue not in queues:
            raise CliError(f"no queue {args.queue!r}; queues: {', '.join(queues)}")
        queues = {args.queue: queues[args.queue]}
    sys.stdout.write(disassemble(queues))
    return 0


def cmd_inspect(args) -> int:
    pkg = _load(args.program)
    fig = program_figures(pkg)
    if args.json:
        fig["tensors"] = [{"name": t.name, "role": role, "shape": list(t.shape),
                           "layout": [list(s) for s in t.layout]}
                          for role, ts in (("input", pkg.inputs), ("output", pkg.outputs))
                          for t in ts]
        print(json.dumps(fig, indent=1))
        return 0
    p = pkg.params
    print(f"{pkg.name}: preset {p.name!r} (VL {p.vl}), {pkg.predicted_cycles} cycles predicted, "
          f"{fig['abc_issues']} ABC issues (MXM utilization "
          f"{100 * fig['abc_issues'] / max(1, pkg.predicted_cycles):.1f} %)")
    print("tensors:")
    for role, ts in (("in ", pkg.inputs), ("out", pkg.outputs)):
        for t in ts:
            stripes = [s for plane in t.layout for s in plane]
            where = "; ".join(f"{p.mem_slice_list[s[0]].name} bank {s[1]} @{s[2]}"
                              + (f" stride {s[3]}" if s[3] != 1 else "") for s in stripes[:4])
            if len(stripes) > 4:
                where += f"; ... ({len(stripes)} stripes over {len(t.planes)} byte planes)"
            print(f"  {role} {t.name:10s} {'x'.join(map(str, t.shape)):>12s} {t.dtype:6s} "
                  f"{'transposed ' if t.transposed else ''}{where}")
    print("MEM words of the tensors, per bank: " + ", ".join(
        f"{k} {n}" for k, n in fig["tensor_words"].items()))
    if pkg.mem_image:
        print(f"constants: {len(pkg.mem_image)} MEM words")
    print(f"instruction words per queue (of {p.imem_words}), issues:")
    for name, q in fig["queues"].items():
        if not q["issues"]:
            continue
        top = ", ".join(f"{m} {n}" for m, n in sorted(q["counts"].items(), key=lambda kv: -kv[1])[:5])
        print(f"  {name:22s} {q['words']:6d} words {q['issues']:7d} issues  {top}"
              + ("  (stops at a SYNC)" if q["stops_at_sync"] else ""))
    return 0


def cmd_timeline(args) -> int:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Patch
    except ImportError:
        raise CliError("timeline needs matplotlib (pip install matplotlib)") from None
    pkg = _load(args.program)
    start = args.start
    stop = start + args.cycles if args.cycles else pkg.predicted_cycles
    rows = []
    for name, words in pkg.queues.items():
        issues, synced = queue_timeline(words)
        issues = [(t, mn) for t, mn in issues if start <= t < stop]
        if issues:
            rows.append((name, issues, synced))
    if not rows:
        raise CliError(f"nothing issues in cycles {start}..{stop - 1}")
    fig, ax = plt.subplots(figsize=(12, 0.32 * len(rows) + 1.4))
    for y, (name, issues, _) in enumerate(rows):
        by_unit = {}
        for t, mn in issues:                     # runs of consecutive cycles of one unit
            runs = by_unit.setdefault(_unit(mn), [])
            if runs and runs[-1][0] + runs[-1][1] == t:
                runs[-1][1] += 1
            else:
                runs.append([t, 1])
        for unit, runs in by_unit.items():
            ax.broken_barh([tuple(r) for r in runs], (y - 0.4, 0.8), color=_COLOURS[unit])
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([n + (" *" if s else "") for n, _, s in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(start, stop)
    ax.set_xlabel("cycle (superlane 0: an issue at t acts in superlane c at t + c)")
    ax.set_title(f"{pkg.name} on {pkg.params.name}: {pkg.predicted_cycles} cycles "
                 f"(one bar per issued instruction)", fontsize=9)
    ax.legend(handles=[Patch(color=c, label=u) for u, c in _COLOURS.items()], fontsize=7,
              loc="upper right", ncol=5)
    fig.tight_layout()
    fig.savefig(args.output, dpi=args.dpi)
    print(f"{args.output}: {len(rows)} queues, cycles {start}..{stop - 1}"
          + ("; * = the queue waits on a SYNC, later issues not drawn" if any(s for *_, s in rows) else ""))
    return 0


def cmd_generate(args) -> int:
    """The decoder generating tokens on the chip (``host/models/decoder_chip.py``): prefill of
    the prompt, one decode step per further token, each token printed as it comes; the last
    lines compare tokens and logits with the integer reference and the decode cycles with the
    weight-streaming bound."""
    from openlpu.host.demo import generate_and_check
    from openlpu.host.device import Device, DeviceError
    from openlpu.host.models.decoder import ReverseTask, Tokenizer, load_weights
    from openlpu.host.models.decoder_chip import DecoderPrograms, weight_bytes_per_token
    from openlpu.params import preset
    tok, task = Tokenizer(), ReverseTask()
    if args.prompt is None:
        prompt = task.heldout(1)[0][0]
    else:
        text = args.prompt
        if not (text.startswith("^") and text.endswith("=")):
            text = "^" + text.strip("^=") + "="
        try:
            prompt = tok.encode(text)
        except ValueError as e:
            raise CliError(str(e)) from None
    if args.tokens < 1:
        raise CliError(f"--tokens must be at least 1, not {args.tokens}")
    w = load_weights(float_path=None)
    if len(prompt) + args.tokens - 1 > w.cfg.context:
        raise CliError(f"prompt of {len(prompt)} tokens + {args.tokens} generated exceeds the "
                       f"context of {w.cfg.context}")
    p = preset(args.preset)
    progs = DecoderPrograms(w, p)
    print(f"decoder on {args.backend} ({p.name}): prompt {tok.decode(prompt)!r} "
          f"({len(prompt)} tokens), generating {args.tokens}", flush=True)
    t0 = time.perf_counter()

    def on_token(i, t, cycles):
        what = "prefill" if i == 0 else "decode"
        print(f"token {i + 1}/{args.tokens}: {tok.decode([t])!r}  ({what}, {cycles} cycles, "
              f"{time.perf_counter() - t0:.1f} s)", flush=True)
    try:
        with Device.open(args.backend, p) as dev:
            r = generate_and_check(dev, prompt, args.tokens, on_token=on_token, weights=w,
                                   programs=progs)
    except (DeviceError, ValueError, TimeoutError) as e:
        raise CliError(f"{args.backend}: {e}") from None
    g = r["gen"]
    print(f"generated: {tok.decode(g.tokens)!r}")
    exact = g.cycles == g.predicted
    print(f"cycles: measured == predicted in every step: {'yes' if exact else 'NO'}; "
          f"{len(progs)} programs compiled")
    if len(g.cycles) > 1:
        dec = g.cycles[1:]
        wb = weight_bytes_per_token(w.cfg)
        bpc = p.vl * isa.wide_load_feed_rows(p)
        print(f"prefill {g.cycles[0]} cycles; decode {sum(dec) / len(dec):.0f} cycles/token "
              f"(min {min(dec)}, max {max(dec)}); weight-streaming bound {wb} B / {bpc} B per "
              f"cycle = {math.ceil(wb / bpc)} cycles/token")
    ok = r["tokens_match"] and r["logits_match"]
    print(f"integer reference: {'MATCH' if ok else 'MISMATCH'} (tokens "
          f"{'equal' if r['tokens_match'] else 'differ: ' + tok.decode(r['ref_tokens'])}, "
          f"{r['mismatches']} logit elements differ)")
    return 0 if ok and exact else 1


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="openlpu", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)

    c = sub.add_parser("compile", help="compile a program spec (SPEC.py defines program(params)) "
                                       "or a quantized ONNX model (MODEL.onnx)")
    c.add_argument("spec")
    c.add_argument("-o", "--output", required=True)
    c.add_argument("--preset", default="default")
    c.set_defaults(fn=cmd_compile)

    r = sub.add_parser("run", help="run a program on a backend, print cycles and utilization")
    r.add_argument("program")
    r.add_argument("--backend", default="model",
                   choices=["model", "amaranth", "verilator", "serial"])
    r.add_argument("--inputs", help=".npz with one array per input tensor")
    r.add_argument("--outputs", help=".npz to write the output tensors to")
    r.add_argument("--max-cycles", type=int, default=None,
                   help="cycle limit (default: from the prediction, capped by the driver)")
    r.add_argument("--timeout", type=float, default=None, help="wall-clock limit in seconds")
    r.add_argument("--port", default=None, help="serial port (--backend serial)")
    r.set_defaults(fn=cmd_run)

    d = sub.add_parser("disasm", help="print a program's instructions, queue by queue")
    d.add_argument("program")
    d.add_argument("--queue", help="only this queue")
    d.set_defaults(fn=cmd_disasm)

    i = sub.add_parser("inspect", help="tensors, layouts, MEM use, instruction words per queue")
    i.add_argument("program")
    i.add_argument("--json", action="store_true")
    i.set_defaults(fn=cmd_inspect)

    t = sub.add_parser("timeline", help="draw which queue issues what in which cycle (PNG)")
    t.add_argument("program")
    t.add_argument("-o", "--output", required=True)
    t.add_argument("--start", type=int, default=0, help="first cycle drawn")
    t.add_argument("--cycles", type=int, default=0, help="cycles drawn (default: to the end)")
    t.add_argument("--dpi", type=int, default=120)
    t.set_defaults(fn=cmd_timeline)

    g = sub.add_parser("generate", help="the decoder generating tokens on the chip, checked "
                                        "against the integer reference")
    g.add_argument("--prompt", default=None,
                   help="digits to reverse, e.g. 12345 (default: the first held-out prompt)")
    g.add_argument("--tokens", type=int, required=True, help="tokens to generate")
    g.add_argument("--backend", default="model", choices=["model", "verilator"])
    g.add_argument("--preset", default="base")
    g.set_defaults(fn=cmd_generate)
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except CliError as e:
        print(f"openlpu {args.command}: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:             # output piped into e.g. `head`
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
