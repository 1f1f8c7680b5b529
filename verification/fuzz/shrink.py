"""Greedy shrinking of a failing fuzz program.

:func:`shrink` takes a program and a predicate (``still_fails(program) -> bool``, normally "the
model and the RTL still disagree in the same way", :func:`mismatch_predicate`) and repeats,
until nothing changes or the evaluation budget is spent:

* drop whole queues (they HALT at once);
* drop runs of words of a queue (halving the run length down to single words);
* replace words by simpler ones that keep the later words' cycles: an instruction by ``NOP 1``,
  ``NOP n`` by ``NOP 1``, a ``REPEAT`` by one with count 1, a missing HALT by a HALT;
* drop MEM words, then zero their bytes (halves, then single lanes).

Every candidate is checked with the predicate; only failing candidates are kept, so the result
still fails. :func:`write_replay` saves it as JSON for ``python -m openlpu.verification.fuzz
replay FILE``.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

from openlpu import isa

from .program import HALT, FuzzProgram
from .run import compare

__all__ = ["shrink", "mismatch_predicate", "write_replay"]

OP = isa.BY_MNEMONIC
NOP1 = OP["NOP"].encode(count=1)


def _kinds(diffs) -> set:
    return {d.split(":", 1)[0] for d in diffs}


def mismatch_predicate(model, rtl, diffs=None):
    """``still_fails(program)``: the runners disagree, with at least one of the kinds of
    difference in ``diffs`` (e.g. ``ERROR_CYCLE``) when given."""
    want = _kinds(diffs) if diffs else None

    def still_fails(prog: FuzzProgram) -> bool:
        m = model.run(prog)
        if m.outcome == "hazard":
            return False
        d = compare(m, rtl.run(prog))
        return bool(d) and (want is None or bool(_kinds(d) & want))
    return still_fails


def _simpler(word: int):
    """Simpler replacements of one word (same issue time for the words after it, or less)."""
    try:
        idef, f = isa.decode(word)
    except isa.IsaError:
        return [NOP1]
    m = idef.mnemonic
    if m == "NOP":
        return [NOP1] if f["count"] > 1 else []
    if m == "REPEAT":
        out = []
        if f["count"] > 1:
            out.append(idef.encode(**{**f, "count": 1}))
        if f["interval"] > 1:
            out.append(idef.encode(**{**f, "interval": 1}))
        return out
    if m in ("HALT",):
        return []
    return [NOP1]


def shrink(prog: FuzzProgram, still_fails, max_evals: int = 400, log=None) -> FuzzProgram:
    """The smallest program found that ``still_fails`` (``prog`` itself must fail)."""
    best = copy.deepcopy(prog)
    evals = [0]

    def attempt(cand) -> bool:
        nonlocal best
        if evals[0] >= max_evals:
            return False
        evals[0] += 1
        if still_fails(cand):
            best = cand
            if log:
                log(f"shrink: {best.size()} after {evals[0]} runs")
            return True
        return False

    changed = True
    while changed and evals[0] < max_evals:
        changed = False
        # whole queues
        for name in list(best.queues):
            cand = copy.deepcopy(best)
            del cand.queues[name]
            cand.fill.pop(name, None)
            changed |= attempt(cand)
        # runs of words
        for name in list(best.queues):
            n = len(best.queues.get(name, []))
            size = max(1, n // 2)
            while size >= 1:
                i = 0
                while i < len(best.queues.get(name, [])):
                    words = best.queues[name]
                    if words[i:i + size] == [HALT] and i + size == len(words):
                        i += size
                        continue
                    cand = copy.deepcopy(best)
                    del cand.queues[name][i:i + size]
                    if not cand.queues[name]:
                        del cand.queues[name]
                    if attempt(cand):
                        changed = True
                        if name not in best.queues:
                            break
                    else:
                        i += size
                if name not in best.queues:
                    break
                size //= 2
        # simpler words
        for name in list(best.queues):
            i = 0
            while name in best.queues and i < len(best.queues[name]):
                for w in _simpler(best.queues[name][i]):
                    cand = copy.deepcopy(best)
                    cand.queues[name][i] = w
                    if attempt(cand):
                        changed = True
                        break
                i += 1
        for name in list(best.fill):
            cand = copy.deepcopy(best)
            del cand.fill[name]
            cand.queues.setdefault(name, []).append(HALT)
            changed |= attempt(cand)
        # MEM
        for key in list(best.mem):
            cand = copy.deepcopy(best)
            del cand.mem[key]
            changed |= attempt(cand)
        for key in list(best.mem):
            data = bytearray(best.mem[key])
            size = max(1, len(data) // 2)
            while size >= 1 and key in best.mem:
                for i in range(0, len(data), size):
                    cur = bytearray(best.mem[key])
                    if not any(cur[i:i + size]):
                        continue
                    cur[i:i + size] = bytes(size)
                    cand = copy.deepcopy(best)
                    cand.mem[key] = bytes(cur)
                    changed |= attempt(cand)
                size //= 2
    best.notes = list(prog.notes) + [f"shrunk from {prog.size()} to {best.size()} "
                                     f"(words, MEM words, MEM bytes) in {evals[0]} runs"]
    return best


def write_replay(prog: FuzzProgram, folder, name: str | None = None) -> Path:
    """Save ``prog`` as ``<folder>/<name>.json`` (default name from preset and seed)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    name = name or f"{prog.preset}-seed{prog.seed}"
    path = folder / f"{name}.json"
    tmp = path.with_suffix(f".tmp-{os.getpid()}")
    prog.save(tmp)
    os.replace(tmp, path)
    return path
