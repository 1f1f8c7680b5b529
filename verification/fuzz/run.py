"""Run fuzz programs on the reference model and on the Verilator RTL, and compare the results.

:class:`ModelRunner` and :class:`RtlRunner` load a :class:`~.program.FuzzProgram` (every word of
every instruction memory, every MEM word), start it with the program's cycle limit
(:meth:`~.program.FuzzProgram.cycle_limit`), let in-flight effects finish
(``isa.drain_cycles``) and return an :class:`Outcome`: done or timeout, STATUS, CYCLES, ERRORS,
ERROR_CYCLE and the whole MEM of every slice. :func:`compare` lists every difference;
:func:`check` runs one program on both.

The RTL keeps state across runs that a fresh model does not have (the MXM's weight buffers and
accumulator, the VXM constant registers): before every program :class:`RtlRunner` runs a short
*scrub* program that zeroes them (``LW`` of every row and ``IW`` from the never-driven stream
column 0, ``ABC`` of every accumulator row on that zero vector, ``VLC`` of zero in every ALU),
so every program starts from the state of a new model. After a timeout the RTL is reset.

One :class:`RtlRunner` holds one Verilator model (one cached build per preset, never rebuilt per
program); a campaign uses one per worker process.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from openlpu import hostmap, isa
from openlpu.host.backend import DeviceTimeout
from openlpu.isa import HostReg
from openlpu.params import LpuParams

from .program import HALT, FuzzProgram

__all__ = ["Outcome", "ModelRunner", "RtlRunner", "compare", "check", "CheckResult"]

OP = isa.BY_MNEMONIC
_REGS = (HostReg.STATUS, HostReg.CYCLES, HostReg.ERRORS, HostReg.ERROR_CYCLE)


@dataclass
class Outcome:
    """What one backend did with one program."""
    backend: str
    outcome: str                 # "done", "timeout" or "hazard" (the model cannot express it)
    status: int = 0
    cycles: int = 0
    errors: int = 0
    error_cycle: int = 0
    mem: np.ndarray | None = None    # [global slice][address][lane], after the run
    detail: str = ""

    def summary(self) -> str:
        if self.outcome == "hazard":
            return f"{self.backend}: schedule hazard ({self.detail})"
        names = "|".join(f.name for f in isa.ErrorFlag if self.errors & f) or "none"
        return (f"{self.backend}: {self.outcome}, CYCLES {self.cycles}, ERRORS {names}, "
                f"ERROR_CYCLE {self.error_cycle}, STATUS {self.status}")


def _mem_addrs(p: LpuParams) -> list[int]:
    """Host addresses of every MEM host word, in [slice][address][superlane][group] order."""
    return [hostmap.mem_addr(p, sl, a // p.mem_words, a % p.mem_words, c, g)
            for sl in range(2 * p.mem_slices) for a in range(p.mem_addr_words)
            for c in range(p.superlanes) for g in range(p.host_lane_groups)]


def _pack_mem(p: LpuParams, mem: np.ndarray) -> list[int]:
    n = p.host_word_lanes
    b = mem.reshape(-1, n).astype(np.uint32)
    words = np.zeros(len(b), dtype=np.uint32)
    for i in range(n):
        words |= b[:, i] << (8 * i)
    return words.tolist()


def _unpack_mem(p: LpuParams, words) -> np.ndarray:
    n = p.host_word_lanes
    w = np.asarray(words, dtype=np.uint32)
    b = np.stack([(w >> (8 * i)) & 0xFF for i in range(n)], axis=1).astype(np.uint8)
    return b.reshape(2 * p.mem_slices, p.mem_addr_words, p.vl)


class ModelRunner:
    """The reference model: a new :class:`~openlpu.verification.model.LpuModel` per program.

    ``perturb`` (for testing the comparison) is applied to every outcome before it is returned.
    """

    name = "model"

    def __init__(self, params: LpuParams, perturb=None):
        self.params = params
        self.perturb = perturb

    def run(self, prog: FuzzProgram) -> Outcome:
        from openlpu.host.backends.model import ModelBackend
        from openlpu.verification.model.chip import ScheduleHazard
        p = self.params
        dev = ModelBackend(p)
        dev.model.imem[:] = prog.image(p)
        dev.model.mem[:] = prog.mem_image(p)
        try:
            dev.run(prog.cycle_limit(p))
            outcome = "done"
        except DeviceTimeout:
            outcome = "timeout"
        except ScheduleHazard as e:
            return Outcome(self.name, "hazard", detail=str(e))
        regs = {r: dev.read(hostmap.reg_addr(r)) for r in _REGS}
        out = Outcome(self.name, outcome, regs[HostReg.STATUS], regs[HostReg.CYCLES],
                      regs[HostReg.ERRORS], regs[HostReg.ERROR_CYCLE],
                      dev.model.mem.copy() if outcome == "done" else None)
        if self.perturb is not None:
            out = self.perturb(out)
        return out


class RtlRunner:
    """The chip compiled by Verilator (``host.backends.verilator_sim``, cached build)."""

    name = "verilator"

    def __init__(self, params: LpuParams, backend=None):
        self.params = params
        if backend is None:
            from openlpu.host.backends import open_backend
            backend = open_backend("verilator", params)
        self.backend = backend
        self._addrs = _mem_addrs(params)
        self._imem_addrs = np.array([[hostmap.imem_addr(params, q.index, i)
                                      for i in range(params.imem_words)] for q in params.queues])
        self._scrub = self._scrub_writes()
        self._mem_state = None       # host words of MEM as last read back (None: unknown)

    def close(self):
        self.backend.close()

    def _scrub_writes(self) -> list:
        p = self.params
        east0 = dict(stream=0, dir=int(isa.Dir.EAST))
        progs = {}
        mxm = [q for q in p.queues if q.slice.kind == "mxm"]
        for q in mxm:
            if q.role == "weights":
                progs[q.name] = [OP["LW"].encode(row=r, **east0) for r in range(p.vl)] \
                    + [OP["IW"].encode()]
            elif q.role == "compute":
                progs[q.name] = [OP["NOP"].encode(count=p.vl + 2)] + \
                    [OP["ABC"].encode(acc=a, accumulate=0, **east0) for a in range(p.mxm_acc_words)]
        for q in p.queues:
            if q.slice.kind == "vxm":
                progs[q.name] = [OP["VLC"].encode(a_stream=0, a_dir=0, a_chain=0, b_stream=0,
                                                  b_dir=0, b_mode=0, out_dir=0, dtype=2, imm=0)]
        writes = []
        for q in p.queues:
            words = progs.get(q.name, []) + [HALT]
            writes += [(hostmap.imem_addr(p, q.index, i), w) for i, w in enumerate(words)]
        return writes

    def scrub(self) -> None:
        """Zero the MXM weights and accumulator and the VXM constants (see the module doc)."""
        b = self.backend
        b.write_many(self._scrub)
        b.run(10 * (self.params.vl + self.params.mxm_acc_words) + 1000)
        b.tick(isa.drain_cycles(self.params))

    def run(self, prog: FuzzProgram) -> Outcome:
        p, b = self.params, self.backend
        self.scrub()
        # each queue up to its first HALT (the words after it are never issued), all of it
        # when it has none; the MEM host words that differ from what the RTL holds
        image = prog.image(p)
        writes = []
        for qi, row in enumerate(image):
            halts = np.flatnonzero(row == HALT)
            n = int(halts[0]) + 1 if len(halts) else len(row)
            writes += zip(self._imem_addrs[qi, :n].tolist(), row[:n].tolist())
        mem_words = np.array(_pack_mem(p, prog.mem_image(p)), dtype=np.uint32)
        todo = (np.arange(len(mem_words)) if self._mem_state is None
                else np.flatnonzero(mem_words != self._mem_state))
        writes += [(self._addrs[i], int(mem_words[i])) for i in todo]
        b.write_many(writes)
        self._mem_state = None
        try:
            b.run(prog.cycle_limit(p))
            outcome = "done"
        except DeviceTimeout:
            outcome = "timeout"
        if outcome == "done":
            b.tick(isa.drain_cycles(p))
        regs = {r: b.read(hostmap.reg_addr(r)) for r in _REGS}
        mem = None
        if outcome == "done":
            words = b.read_many(self._addrs)
            self._mem_state = np.array(words, dtype=np.uint32)
            mem = _unpack_mem(p, words)
        else:
            b.reset()                    # still running: stop it before the next program
        return Outcome(self.name, outcome, regs[HostReg.STATUS], regs[HostReg.CYCLES],
                       regs[HostReg.ERRORS], regs[HostReg.ERROR_CYCLE], mem)


def compare(ref: Outcome, dut: Outcome, limit: int = 8) -> list[str]:
    """Every difference between two outcomes (at most ``limit`` MEM bytes listed); empty when
    they agree. A program the model flags as a schedule hazard is not compared."""
    if "hazard" in (ref.outcome, dut.outcome):
        return []
    diffs = []
    if ref.outcome != dut.outcome:
        return [f"outcome: {ref.backend} {ref.outcome}, {dut.backend} {dut.outcome}"]
    regs = ["errors", "error_cycle"]
    if ref.outcome == "done":
        regs += ["cycles", "status"]
    for r in regs:
        a, b = getattr(ref, r), getattr(dut, r)
        if a != b:
            if r == "errors":
                a, b = repr(isa.ErrorFlag(a)), repr(isa.ErrorFlag(b))
            diffs.append(f"{r.upper()}: {ref.backend} {a}, {dut.backend} {b}")
    if ref.outcome == "done":
        if ref.mem is None or dut.mem is None or ref.mem.shape != dut.mem.shape:
            diffs.append("MEM: not read back from both")
        else:
            bad = np.argwhere(ref.mem != dut.mem)
            if len(bad):
                where = ", ".join(f"slice {s} addr {a} lane {l}: {ref.mem[s, a, l]} vs "
                                  f"{dut.mem[s, a, l]}" for s, a, l in bad[:limit])
                diffs.append(f"MEM: {len(bad)} byte(s) differ ({where})")
    return diffs


@dataclass
class CheckResult:
    """One program on both backends."""
    program: FuzzProgram
    model: Outcome
    rtl: Outcome
    diffs: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.diffs

    @property
    def skipped(self) -> bool:
        return self.model.outcome == "hazard"


def check(prog: FuzzProgram, model: ModelRunner, rtl: RtlRunner) -> CheckResult:
    """Run ``prog`` on both and compare."""
    m = model.run(prog)
    if m.outcome == "hazard":
        return CheckResult(prog, m, Outcome(rtl.name, "hazard", detail="not run"), [])
    r = rtl.run(prog)
    return CheckResult(prog, m, r, compare(m, r))
