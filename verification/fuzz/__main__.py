"""Command line of the fuzzer.

    python -m openlpu.verification.fuzz campaign [--preset mini] [--n 1000] [--seed 0]
                                                 [--workers N | --scheduler host:port]
                                                 [--out build/fuzz] [--no-shrink]
    python -m openlpu.verification.fuzz replay FILE [FILE ...]
    python -m openlpu.verification.fuzz gen --preset mini --seed 7 [-o FILE]
    python -m openlpu.verification.fuzz shrink FILE [--out FOLDER]

``replay`` runs a saved program on the model and the Verilator RTL and prints both outcomes and
every difference; it exits with 1 when they disagree.
"""

from __future__ import annotations

import argparse
import sys

from .program import FuzzProgram


def _replay(files) -> int:
    from .run import ModelRunner, RtlRunner, check
    bad = 0
    rtl = {}
    for f in files:
        prog = FuzzProgram.load(f)
        p = prog.params
        if p.name not in rtl:
            rtl[p.name] = RtlRunner(p)
        res = check(prog, ModelRunner(p), rtl[p.name])
        print(f"{f}: preset {p.name}, seed {prog.seed}")
        print(f"  {res.model.summary()}")
        print(f"  {res.rtl.summary()}")
        if res.skipped:
            print("  SKIPPED (the model cannot express this schedule)")
        elif res.ok:
            print("  AGREE")
        else:
            bad += 1
            for d in res.diffs:
                print(f"  MISMATCH {d}")
    return 1 if bad else 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m openlpu.verification.fuzz",
                                 description="random differential testing: model vs RTL")
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("campaign", help="run many random programs")
    c.add_argument("--preset", default="mini")
    c.add_argument("--n", type=int, default=1000)
    c.add_argument("--seed", type=int, default=0, help="first seed")
    c.add_argument("--workers", type=int, default=None, help="local worker processes")
    c.add_argument("--scheduler", default=None, help="Dask scheduler address host:port")
    c.add_argument("--out", default="build/fuzz", help="folder for mismatching programs")
    c.add_argument("--no-shrink", action="store_true")
    c.add_argument("--batch", type=int, default=20, help="programs per task")
    r = sub.add_parser("replay", help="re-run saved programs on model and RTL")
    r.add_argument("files", nargs="+")
    g = sub.add_parser("gen", help="write one random program as JSON")
    g.add_argument("--preset", default="mini")
    g.add_argument("--seed", type=int, required=True)
    g.add_argument("-o", "--output", default=None)
    s = sub.add_parser("shrink", help="shrink a saved mismatching program")
    s.add_argument("file")
    s.add_argument("--out", default="build/fuzz")
    s.add_argument("--max-evals", type=int, default=400)
    a = ap.parse_args(argv)

    if a.cmd == "campaign":
        from .campaign import main_campaign
        if a.scheduler and a.workers:
            ap.error("--workers and --scheduler exclude each other")
        return main_campaign(a)
    if a.cmd == "replay":
        return _replay(a.files)
    if a.cmd == "gen":
        from .generate import generate
        text = generate(a.preset, a.seed).to_json()
        if a.output:
            with open(a.output, "w") as f:
                f.write(text)
        else:
            print(text)
        return 0
    if a.cmd == "shrink":
        from .run import ModelRunner, RtlRunner, check
        from .shrink import mismatch_predicate, shrink, write_replay
        prog = FuzzProgram.load(a.file)
        p = prog.params
        model, rtl = ModelRunner(p), RtlRunner(p)
        res = check(prog, model, rtl)
        if res.ok:
            print(f"{a.file}: model and RTL agree, nothing to shrink")
            return 0
        small = shrink(prog, mismatch_predicate(model, rtl, res.diffs), a.max_evals,
                       log=lambda m: print(m, flush=True))
        name = f"{p.name}-seed{prog.seed}-min"
        print(f"wrote {write_replay(small, a.out, name)} ({small.size()})")
        return 0
    return 2  # pragma: no cover


if __name__ == "__main__":
    sys.exit(main())
