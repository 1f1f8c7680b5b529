"""A fuzz program: per-queue instruction words, initial MEM contents, and its cycle limit.

A :class:`FuzzProgram` is what the generator emits, the runner loads into a backend and the
shrinker reduces; it is saved as JSON (``to_json`` / ``from_json``, also a listing per queue for
people to read) so a failing program can be replayed with
``python -m openlpu.verification.fuzz replay FILE``.

Words are raw 32-bit instruction words (so deliberately undecodable or out-of-range words are
representable); each queue's image is its words followed by its ``fill`` word up to the end of
the instruction memory (``HALT`` unless the program tests an IMEM overrun). Queues the program
does not list hold ``HALT`` at word 0.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from openlpu import isa
from openlpu.firmware.asm import format_instr
from openlpu.params import LpuParams, preset

__all__ = ["FuzzProgram", "HALT", "cycle_budget", "FORMAT"]

HALT = isa.BY_MNEMONIC["HALT"].encode()
FORMAT = "openlpu-fuzz-1"
#: cycles above the cycle budget (plus isa.drain_cycles) after which a run counts as hung
LIMIT_MARGIN = 64


def _word_cost(word: int) -> tuple[int, bool]:
    """(cycles a queue spends on ``word`` at most, whether it stops the queue)."""
    try:
        idef, f = isa.decode(word)
    except isa.IsaError:
        return 1, False
    m = idef.mnemonic
    if m == "NOP":
        return f["count"], False
    if m == "REPEAT":
        return 1 + f["count"] * f["interval"], False
    return 1, m == "HALT"


def cycle_budget(params: LpuParams, queues: dict, fill: dict) -> int:
    """An upper bound on the cycles a run of these queues can take without hanging.

    Every cycle of a run that is not hung (some queue neither parked on SYNC nor halted) uses
    at least one cycle of some queue's words (a NOP ``n`` at most ``n``, a REPEAT at most
    ``1 + count * interval``, any other word 1), so the sum over the queues, up to their first
    HALT (or the end of the instruction memory), bounds the run; a run still going after it is
    hung (every live queue parked on a SYNC that no NOTIFY can release).
    """
    total = 0
    for q in params.queues:
        words = list(queues.get(q.name, [HALT]))
        words += [fill.get(q.name, HALT)] * (params.imem_words - len(words))
        for w in words[:params.imem_words]:
            cost, stop = _word_cost(int(w))
            total += cost
            if stop:
                break
    return total


@dataclass
class FuzzProgram:
    """One random program for preset ``preset``."""
    preset: str
    queues: dict                                   # queue name -> [32-bit words]
    mem: dict = field(default_factory=dict)        # (global slice, address) -> VL bytes
    fill: dict = field(default_factory=dict)       # queue name -> word after its program
    seed: int | None = None
    notes: list = field(default_factory=list)      # what the generator put in (informational)

    @property
    def params(self) -> LpuParams:
        return preset(self.preset)

    def cycle_limit(self, params: LpuParams | None = None) -> int:
        """Cycles after which a run of this program is hung (see :func:`cycle_budget`)."""
        p = params or self.params
        return cycle_budget(p, self.queues, self.fill) + isa.drain_cycles(p) + LIMIT_MARGIN

    def image(self, params: LpuParams) -> np.ndarray:
        """Instruction memories, ``[queue index][word]`` (every word of every queue)."""
        out = np.full((len(params.queues), params.imem_words), HALT, dtype=np.uint32)
        for q in params.queues:
            words = self.queues.get(q.name)
            if words is None:
                continue
            fill = self.fill.get(q.name, HALT)
            row = list(words)[:params.imem_words]
            row += [fill] * (params.imem_words - len(row))
            out[q.index] = row
        return out

    def mem_image(self, params: LpuParams) -> np.ndarray:
        """Initial MEM, ``[global slice][address][lane]`` (zero where not given)."""
        out = np.zeros((2 * params.mem_slices, params.mem_addr_words, params.vl), dtype=np.uint8)
        for (sl, addr), data in self.mem.items():
            out[sl, addr] = np.frombuffer(bytes(data), dtype=np.uint8)
        return out

    def size(self) -> tuple:
        """What the shrinker minimises: (non-trivial words, MEM words, non-zero MEM bytes)."""
        words = sum(1 for ws in self.queues.values() for w in ws if w != HALT)
        nz = sum(int(np.count_nonzero(np.frombuffer(bytes(d), dtype=np.uint8)))
                 for d in self.mem.values())
        return words, len(self.mem), nz

    # -- JSON ------------------------------------------------------------------------------
    def listing(self) -> dict:
        out = {}
        for name, words in self.queues.items():
            lines = []
            for w in words:
                try:
                    idef, f = isa.decode(int(w))
                    lines.append(format_instr(idef, f))
                except isa.IsaError as e:
                    lines.append(f".word 0x{int(w):08x}  ; {e}")
            out[name] = lines
        return out

    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "preset": self.preset,
            "seed": self.seed,
            "notes": list(self.notes),
            "queues": {k: [int(w) for w in v] for k, v in self.queues.items()},
            "fill": {k: int(v) for k, v in self.fill.items()},
            "mem": [[int(sl), int(a), bytes(d).hex()] for (sl, a), d in sorted(self.mem.items())],
            "listing": self.listing(),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_dict(cls, d: dict) -> "FuzzProgram":
        if d.get("format") != FORMAT:
            raise ValueError(f"not a fuzz program file (format {d.get('format')!r}, expected "
                             f"{FORMAT!r})")
        p = preset(d["preset"])
        prog = cls(preset=d["preset"],
                   queues={str(k): [int(w) for w in v] for k, v in d["queues"].items()},
                   mem={(int(sl), int(a)): bytes.fromhex(h) for sl, a, h in d.get("mem", [])},
                   fill={str(k): int(v) for k, v in d.get("fill", {}).items()},
                   seed=d.get("seed"), notes=list(d.get("notes", [])))
        for name in prog.queues:
            p.queue(name)                              # raises naming the known queues
        for (sl, a), data in prog.mem.items():
            if not (0 <= sl < 2 * p.mem_slices and 0 <= a < p.mem_addr_words and len(data) == p.vl):
                raise ValueError(f"MEM entry ({sl}, {a}) does not fit preset {p.name!r}")
        return prog

    @classmethod
    def from_json(cls, text: str) -> "FuzzProgram":
        return cls.from_dict(json.loads(text))

    def save(self, path) -> None:
        with open(path, "w") as f:
            f.write(self.to_json())

    @classmethod
    def load(cls, path) -> "FuzzProgram":
        with open(path) as f:
            return cls.from_json(f.read())
