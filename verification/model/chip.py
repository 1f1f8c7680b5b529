"""Cycle-accurate numpy reference model of an OpenLPU chip.

The model executes the same binary instruction queues as the RTL, with the same timing, in the
superlane-0 frame (superlane ``c`` of the RTL is superlane 0 delayed by ``c`` cycles; only the MXM
reduction crosses superlanes, and its latency is part of ``ABC``'s ``d_func``). It exposes the same
host bus as the RTL (:meth:`LpuModel.write` / :meth:`LpuModel.read`), so the host driver runs on it
unchanged through :class:`ModelBackend`.

The timing-closure registers of :class:`~openlpu.params.LpuParams` need nothing here beyond the
latencies of :mod:`openlpu.isa`: ``icu_issue_reg`` and ``host_start_reg`` move the whole run
(``isa.start_delay``) and the register block counts from its cycle 0, and ``mxm_act_reg``
moves all MXM state changes together (``ABC``'s ``d_func`` grows by one).

Checkers: two producers driving one stream slot in one cycle, reads of unwritten stream slots, MEM
bank conflicts, out-of-range addresses, bad instructions and IMEM overruns are recorded as
``ERRORS`` flags (like the RTL) and, with ``strict=True``, raised as :class:`ModelError`.

``LW``, ``LWW`` (``count`` rows at once, each as an ``LW``), ``LWT`` and ``IW`` take effect for the
whole vector at the end of their issue cycle. For
``LWT`` (a transposed weight load) this frame is exact only if an ``IW`` issues at least
``superlanes`` cycles after an ``LWT`` and an ``LWT`` at least ``superlanes`` cycles after an
``IW`` (in the RTL, superlane ``c`` writes its lanes of the column at ``t + c`` into the superlane
holding the column, which an ``IW`` copies at ``t_iw + col // lanes``); a program that breaks
either rule raises :class:`ScheduleHazard` (always, not only with ``strict=True``), since its RTL
behaviour cannot be expressed in the model's frame.
"""

from __future__ import annotations

import time

import numpy as np

from openlpu import hostmap, isa, vxm_ops
from openlpu.isa import Dir, ErrorFlag, HostReg, HostRegion
from openlpu.params import LpuParams

from .mem_ecc import MemEcc

__all__ = ["LpuModel", "ModelError", "ScheduleHazard"]

_OP = isa.BY_MNEMONIC
_VXM = set(isa.VXM_INSTRUCTIONS)
_SXM = set(isa.SXM_INSTRUCTIONS)
# which SXM result drives a slot two of them hit in one cycle (higher wins; rtl/sxm.py)
_SXM_PRIORITY = {"SHIFT": 4, "PERMUTE": 3, "DISTRIBUTE": 2, "TRANSPOSE": 1}


class ModelError(RuntimeError):
    """A checker fired while the model ran a program."""

    def __init__(self, flag: ErrorFlag, cycle: int, message: str):
        super().__init__(f"cycle {cycle}: {flag.name}: {message}")
        self.flag = flag
        self.cycle = cycle


class ScheduleHazard(RuntimeError):
    """A program relies on an ordering the superlane-0 frame of the model cannot express.

    Raised for an ``IW`` issued fewer than ``superlanes`` cycles after an ``LWT``, and for an
    ``LWT`` issued fewer than ``superlanes`` cycles after an ``IW`` (see ``LWT`` in docs/isa.md):
    on the RTL such an ``IW`` installs part of the column only.
    """

    def __init__(self, first: str, first_cycle: int, second: str, second_cycle: int,
                 superlanes: int):
        gap = second_cycle - first_cycle
        super().__init__(
            f"schedule hazard: {second} at cycle {second_cycle} issues {gap} cycle(s) after "
            f"{first} at cycle {first_cycle}; it must issue at least superlanes = {superlanes} "
            f"cycles later (the LWT column reaches the superlanes one per cycle)")
        self.first, self.first_cycle = first, first_cycle
        self.second, self.second_cycle = second, second_cycle


class LpuModel:
    """Reference model of one chip with preset ``params``."""

    def __init__(self, params: LpuParams, *, strict: bool = False):
        self.params = p = params
        self.strict = strict
        self.vl = p.vl
        n_mem = 2 * p.mem_slices
        self.mem = np.zeros((n_mem, p.mem_addr_words, p.vl), dtype=np.uint8)
        # MEM ECC (mem_ecc): check bits beside self.mem, ECC registers (mem_ecc.py)
        self.mem_ecc = MemEcc(p, self.mem) if p.mem_ecc else None
        self.imem = np.zeros((len(p.queues), p.imem_words), dtype=np.uint32)
        self.acc = np.zeros((p.mxm_acc_words, p.vl), dtype=np.int32)
        self.shadow = np.zeros((p.vl, p.vl), dtype=np.int8)   # [row n][k]
        self.weights = np.zeros((p.vl, p.vl), dtype=np.int8)
        cols = p.sr_columns
        self.sr = {d: np.zeros((cols, p.streams, p.vl), dtype=np.uint8) for d in Dir}
        self.sr_valid = {d: np.zeros((cols, p.streams, p.superlanes), dtype=bool) for d in Dir}
        self.cycles = 0
        self.errors = 0
        self.error_cycle = 0
        self.running = False
        self.done = False
        self._mem_pos = {s.index: s.position for s in p.mem_slice_list}
        self.vxm_const = np.zeros((len(isa.VXM_ALU_ROLES), p.vl), dtype=np.int64)
        self._last_lwt = None        # (cycle, description) of the last LWT / IW, hazard checks
        self._last_iw = None

    # -- host bus ---------------------------------------------------------------------------
    def write(self, addr: int, data: int) -> None:
        region, f = hostmap.split(self.params, addr)
        data &= 0xFFFFFFFF
        if region == HostRegion.REGS:
            if f["reg"] == HostReg.CTRL:
                if data & isa.Ctrl.CLEAR_ERRORS:
                    self.errors = 0
                    self.error_cycle = 0
                    if self.mem_ecc:
                        self.mem_ecc.clear_counters()
                if data & isa.Ctrl.START:
                    self.start()
            elif f["reg"] == HostReg.ECC_INJECT and self.mem_ecc:
                self.mem_ecc.inject = data & isa.ECC_INJECT_MASK
            return
        if self.running:
            self._flag(ErrorFlag.HOST_WHILE_RUNNING, "host write while running")
            return
        if region == HostRegion.IMEM:
            if f["queue"] < len(self.params.queues) and f["word"] < self.params.imem_words:
                self.imem[f["queue"], f["word"]] = data
            return
        sl, lanes = self._mem_lanes(f)
        if sl is not None:
            row = f["bank"] * self.params.mem_words + f["word"]
            self.mem[f["slice"], row, lanes] = \
                hostmap.unpack_lanes(data, self.params.host_word_lanes)
            if self.mem_ecc:
                self.mem_ecc.host_write(sl, row, lanes.start, lanes.stop - lanes.start)
        if self.mem_ecc:
            self.mem_ecc.inject = 0      # taken by this host MEM write, whatever its address

    def read(self, addr: int) -> int:
        region, f = hostmap.split(self.params, addr)
        if region == HostRegion.REGS:
            reg = f["reg"]
            return {
                HostReg.ID: isa.CHIP_ID,
                HostReg.CONFIG_ID: self.params.config_id,
                HostReg.STATUS: (isa.Status.RUNNING if self.running else 0)
                | (isa.Status.DONE if self.done else 0),
                HostReg.CYCLES: self.cycles & 0xFFFFFFFF,
                HostReg.ERRORS: self.errors,
                HostReg.ERROR_CYCLE: self.error_cycle & 0xFFFFFFFF,
                **({HostReg.ECC_INJECT: self.mem_ecc.inject,
                    HostReg.ECC_CORRECTED: self.mem_ecc.corrected,
                    HostReg.ECC_UNCORRECTABLE: self.mem_ecc.uncorrectable}
                   if self.mem_ecc else {}),
            }.get(reg, 0)
        if region == HostRegion.IMEM:
            if f["queue"] < len(self.params.queues) and f["word"] < self.params.imem_words:
                return int(self.imem[f["queue"], f["word"]])
            return 0
        sl, lanes = self._mem_lanes(f)
        if sl is None:
            return 0
        row = f["bank"] * self.params.mem_words + f["word"]
        if self.mem_ecc:
            vals, bad = self.mem_ecc.host_read(sl, row, lanes.start, lanes.stop - lanes.start)
            if bad:
                self._flag(ErrorFlag.MEM_UNCORRECTABLE,
                           f"host read of MEM slice {sl} word {row}: uncorrectable ECC error")
            return hostmap.pack_lanes(vals)
        return hostmap.pack_lanes(self.mem[f["slice"], row, lanes])

    def _mem_lanes(self, f):
        p = self.params
        if (f["slice"] >= 2 * p.mem_slices or f["superlane"] >= p.superlanes
                or f["group"] >= p.host_lane_groups or f["rest"]):
            return None, None
        n = p.host_word_lanes
        base = f["superlane"] * p.lanes + n * f["group"]
        return f["slice"], slice(base, base + n)

    # -- execution --------------------------------------------------------------------------
    def _flag(self, flag: ErrorFlag, message: str, cycle: int | None = None):
        # ERROR_CYCLE is the cycle counter when the first error happens. ``cycle`` is the cycle
        # the error happens in, which for an error first seen in superlane c is c cycles after
        # the model's superlane-0 frame, so errors are not flagged in cycle order: keep the
        # smallest. The counter stops at the final count, so an error of an instruction still
        # completing after the last HALT reports CYCLES (``start`` caps it once that is known).
        cycle = self.cycles if cycle is None else cycle
        if not self.errors or cycle < self.error_cycle:
            self.error_cycle = cycle
        self.errors |= int(flag)
        if self.strict:
            raise ModelError(flag, cycle, message)

    def start(self, max_cycles: int = 1 << 24, deadline: float | None = None) -> None:
        """Run the loaded program to completion (the RTL's START; the model runs eagerly).

        Raises ``TimeoutError`` after ``max_cycles`` cycles, or once ``time.monotonic()``
        passes ``deadline`` (checked every 1024 cycles)."""
        self.cycles = 0
        self.errors = 0
        self.error_cycle = 0
        if self.mem_ecc:
            self.mem_ecc.clear_counters()
        self.done = False
        for d in Dir:
            self.sr_valid[d][:] = False
        self._last_lwt = self._last_iw = None
        self._recent_weights = []    # (cycle, "LW"/"LWT", row/column, vector) of the last S cycles
        self._transpose_free = {}    # SXM transpose queue -> first cycle a TRANSPOSE is accepted
        self.running = True
        try:
            self._run(max_cycles, deadline)
        finally:
            self.running = False
        self.done = True
        if self.errors:                   # the cycle counter stopped at the final count
            self.error_cycle = min(self.error_cycle, self.cycles)

    def _decode_queues(self):
        """Per queue: list of (InstrDef, fields) or an error marker, in program order."""
        progs = []
        memo = {}                         # (word, role) -> entry: most words repeat (NOPs)
        for q in self.params.queues:
            prog = []
            role = q.role
            for w in self.imem[q.index].tolist():
                entry = memo.get((w, role))
                if entry is None:
                    try:
                        idef, f = isa.decode(w)
                        why = isa.unavailable_reason(idef, q.role, self.params)
                        if why:
                            raise isa.IsaError(why)
                        entry = (idef, f)
                    except isa.IsaError as e:
                        entry = (None, str(e))
                    memo[(w, role)] = entry
                prog.append(entry)
            progs.append(prog)
        return progs

    def _lane_mask(self, superlane_mask: int) -> np.ndarray:
        p = self.params
        bits = np.array([(superlane_mask >> c) & 1 for c in range(p.superlanes)], dtype=bool)
        return np.repeat(bits, p.lanes)

    def _run(self, max_cycles: int, deadline: float | None = None) -> None:
        p = self.params
        queues = p.queues
        progs = self._decode_queues()
        n = len(queues)
        pc = [0] * n
        wait = [0] * n
        halted = [False] * n
        parked = [False] * n
        last = [None] * n            # last issued (idef, fields) per queue, for REPEAT
        rep = [None] * n             # active REPEAT: [idef, fields, count, interval, stride, j]
        masks = [self._lane_mask((1 << p.superlanes) - 1)] * n
        all_lanes = masks[0]
        pending = {}     # cycle -> callables run at the start of that cycle (drives, updates)
        d_abc = _OP["ABC"].d_func(p)

        def later(t, fn):
            pending.setdefault(t, []).append(fn)

        t = 0
        while not all(halted):
            if t >= max_cycles:
                self.cycles = t
                raise TimeoutError(f"model: program still running after {max_cycles} cycles")
            if deadline is not None and not t & 1023 and time.monotonic() >= deadline:
                self.cycles = t
                raise TimeoutError(f"model: program still running after {t} cycles at the "
                                   f"wall-clock deadline")
            self.cycles = t
            drives = {}      # (dir, column, stream) -> (vector, lane mask)
            issued = []
            notify = False
            for qi, q in enumerate(queues):
                if halted[qi] or parked[qi]:
                    continue
                if wait[qi]:
                    wait[qi] -= 1
                    continue
                if rep[qi] is not None:
                    r = rep[qi]
                    idef, f, count, interval, stride, j = r
                    if j % interval == interval - 1:
                        k = j // interval + 1
                        fk = dict(f)
                        fld = isa.REPEAT_FIELD.get(idef.mnemonic)
                        if fld:
                            bits = next(x.bits for x in idef.fields if x.name == fld)
                            fk[fld] = (f[fld] + k * stride) & ((1 << bits) - 1)
                        issued.append((q, idef, fk, masks[qi]))
                    r[5] += 1
                    if r[5] == count * interval:
                        rep[qi] = None
                    continue
                if pc[qi] >= p.imem_words:
                    self._flag(ErrorFlag.IMEM_OVERRUN, f"{q.name} ran past its last word", t)
                    halted[qi] = True
                    continue
                idef, f = progs[qi][pc[qi]]
                pc[qi] += 1
                if idef is None:
                    self._flag(ErrorFlag.BAD_INSTRUCTION, f"{q.name}[{pc[qi] - 1}]: {f}", t)
                    continue
                m = idef.mnemonic
                if m == "NOP":
                    wait[qi] = f["count"] - 1
                elif m == "HALT":
                    halted[qi] = True
                elif m == "SYNC":
                    parked[qi] = True
                elif m == "NOTIFY":
                    notify = True
                elif m == "CONFIG":
                    if q.slice.kind in isa.CONFIG_SLICE_KINDS:
                        masks[qi] = self._lane_mask(f["mask"])
                elif m == "REPEAT":
                    if last[qi] is None:
                        self._flag(ErrorFlag.BAD_INSTRUCTION,
                                   f"{q.name}[{pc[qi] - 1}]: REPEAT with no instruction before it", t)
                        continue
                    r = [last[qi][0], last[qi][1], f["count"], f["interval"], f["stride"], 0]
                    rep[qi] = r
                    if f["interval"] == 1:          # the first copy issues in this very cycle
                        fk = dict(r[1])
                        fld = isa.REPEAT_FIELD.get(r[0].mnemonic)
                        if fld:
                            bits = next(x.bits for x in r[0].fields if x.name == fld)
                            fk[fld] = (fk[fld] + f["stride"]) & ((1 << bits) - 1)
                        issued.append((q, r[0], fk, masks[qi]))
                    r[5] = 1
                    if r[5] == r[2] * r[3]:
                        rep[qi] = None
                else:
                    last[qi] = (idef, f)
                    issued.append((q, idef, f, masks[qi]))
            if notify:
                parked = [False] * n

            # updates scheduled for this cycle happen before this cycle's reads
            # (accumulator rows: reads are transparent to same-cycle updates)
            for fn in pending.pop(t, []):
                fn(drives)

            mem_ports = {}       # (slice, "r"/"w") -> (bank, lane mask)
            end_of_cycle = []    # MEM writes, LW, IW, VLC take effect at the clock edge
            for q, idef, f, lm in issued:
                self._execute(t, q, idef, f, lm if q.slice.kind in isa.CONFIG_SLICE_KINDS else all_lanes,
                              later, drives, mem_ports, d_abc, end_of_cycle)
            for fn in end_of_cycle:
                fn()
            for sl in range(2 * p.mem_slices):
                r, w = mem_ports.get((sl, "r")), mem_ports.get((sl, "w"))
                if r and w and r[0] == w[0] and (r[1] & w[1]).any():
                    self._flag(ErrorFlag.BANK_CONFLICT,
                               f"MEM slice {sl}: read and write on bank {r[0]} in one cycle", t)
            self._advance_streams(drives)
            t += 1
        self.cycles = t
        # instructions issued before the last HALT still complete (the RTL's slices keep running
        # after DONE): drain their scheduled effects so the checkers see them too
        while pending:
            drives = {}
            for fn in pending.pop(t, []):
                fn(drives)
            self._advance_streams(drives)
            t += 1

    # -- streams -------------------------------------------------------------------------------
    def _column(self, pos, d, output_side=False):
        """SR column a slice at ``pos`` reads for direction ``d`` (input side unless told)."""
        if d == Dir.EAST:
            return pos + 1 if output_side else pos
        return pos if output_side else pos + 1

    def _sample(self, t, pos, stream, d, what, lm=None, output_side=False):
        """The byte vector on ``stream`` at the slice's input (or output) side now."""
        p = self.params
        col = self._column(pos, d, output_side)
        if stream >= p.streams:
            self._flag(ErrorFlag.ADDR_RANGE, f"{what}: stream {stream} out of range", t)
            return np.zeros(self.vl, dtype=np.uint8)
        enabled = np.ones(p.superlanes, dtype=bool) if lm is None else lm[::p.lanes]
        unwritten = np.flatnonzero(enabled & ~self.sr_valid[d][col, stream])
        if len(unwritten):
            # superlane c samples at t + c: the error happens in the first unwritten one
            c = int(unwritten[0])
            self._flag(ErrorFlag.STREAM_UNWRITTEN,
                       f"{what}: stream {stream} {d.name} at SR column {col} was never written"
                       f" (superlane {c})", t + c)
        return self.sr[d][col, stream].copy()

    def _drive(self, t, drives, pos, stream, d, vec, what, lm=None, prio=0):
        """Drive ``vec`` on ``stream`` flowing ``d`` from the slice at ``pos`` this cycle.

        Two drives of one slot in one cycle (only results of one slice can meet: the VXM's
        ALUs, the SXM's units) raise STREAM_COLLISION and the slot takes the value of the
        producer with the higher ``prio``, as the RTL's drive multiplexers do (VXM: the later
        ALU, and an ALU's function pipeline over its simple one; SXM: SHIFT, PERMUTE,
        DISTRIBUTE, TRANSPOSE in that order)."""
        col = pos + 1 if d == Dir.EAST else pos
        if stream >= self.params.streams:
            self._flag(ErrorFlag.ADDR_RANGE, f"{what}: stream {stream} out of range", t)
            return
        lm = np.ones(self.vl, dtype=bool) if lm is None else lm
        key = (d, col, stream)
        if key in drives:
            old, old_lm, old_prio = drives[key]
            if (old_lm & lm).any():      # in the cycle of the double drive (now)
                self._flag(ErrorFlag.STREAM_COLLISION,
                           f"{what}: stream {stream} {d.name} into SR column {col} driven twice")
            vec = np.where(lm, vec, old) if prio >= old_prio else np.where(old_lm, old, vec)
            lm = lm | old_lm
            prio = max(prio, old_prio)
        drives[key] = (np.asarray(vec, dtype=np.uint8), lm, prio)

    def _advance_streams(self, drives):
        for d in Dir:
            sr, valid = self.sr[d], self.sr_valid[d]
            if d == Dir.EAST:       # east[i+1] <= east[i]
                sr[1:] = sr[:-1].copy()
                valid[1:] = valid[:-1].copy()
                sr[0] = 0
                valid[0] = False
            else:                   # west[i] <= west[i+1]
                sr[:-1] = sr[1:].copy()
                valid[:-1] = valid[1:].copy()
                sr[-1] = 0
                valid[-1] = False
        for (d, col, stream), (vec, lm, _) in drives.items():
            self.sr[d][col, stream][lm] = vec[lm]
            self.sr_valid[d][col, stream][lm[::self.params.lanes]] = True

    # -- execution -----------------------------------------------------------------------------
    def _execute(self, t, q, idef, f, lm, later, drives, mem_ports, d_abc, eoc):
        p = self.params
        pos = q.slice.position
        name = f"{q.name} {idef.mnemonic}"
        m = idef.mnemonic
        if m in ("READ", "WRITE", "GATHER", "SCATTER"):
            sl = q.slice.index
            addr = f["addr"]
            if addr >= p.mem_addr_words:
                self._flag(ErrorFlag.ADDR_RANGE, f"{name}: address {addr} >= {p.mem_addr_words}", t)
                return
            bank = p.mem_bank_of(addr)
            mem_ports[(sl, "r" if m in ("READ", "GATHER") else "w")] = (bank, lm)
            if m in ("READ", "WRITE"):
                rows = np.full(self.vl, addr)
            else:
                amap = self._sample(t, pos, f["map_stream"], Dir(f["map_dir"]), name, lm)
                word = (addr % p.mem_words + amap.astype(np.int64)) % p.mem_words
                rows = bank * p.mem_words + word
            lanes = np.arange(self.vl)
            if m in ("READ", "GATHER"):
                if self.mem_ecc:     # corrected data; a double error is flagged when read out
                    vec, bad_sl = self.mem_ecc.vector_read(sl, rows, lm)
                    if bad_sl is not None:
                        at = t + idef.d_func(p) + bad_sl
                        later(at, lambda _dr, at=at: self._flag(
                            ErrorFlag.MEM_UNCORRECTABLE, f"{name}: uncorrectable ECC error in "
                            f"word {addr} (superlane {bad_sl})", at))
                else:
                    vec = self.mem[sl, rows, lanes].copy()
                later(t + idef.d_func(p),
                      lambda dr: self._drive(t + 1, dr, pos, f["stream"], Dir(f["dir"]), vec, name, lm))
            else:
                vec = self._sample(t, pos, f["stream"], Dir(f["dir"]), name, lm)

                def store(rows=rows, vec=vec):
                    self.mem[sl, rows[lm], lanes[lm]] = vec[lm]
                    if self.mem_ecc:
                        self.mem_ecc.vector_store(sl, rows[lm], lanes[lm])
                eoc.append(store)
        elif m == "LW":
            vec = self._sample(t, pos, f["stream"], Dir(f["dir"]), name)
            if f["row"] >= p.vl:
                self._flag(ErrorFlag.ADDR_RANGE, f"{name}: row {f['row']} >= {p.vl}", t)
                return
            self._weight_write(t, "LW", f["row"], vec.view(np.int8), eoc)
        elif m == "LWW":
            row, s0, n = f["row"], f["stream"], f["count"]
            if row + n > p.vl or s0 + n > p.streams:
                self._flag(ErrorFlag.ADDR_RANGE, f"{name}: rows {row}..{row + n - 1} / streams "
                           f"{s0}..{s0 + n - 1} out of range (VL {p.vl}, {p.streams} streams)", t)
                return
            for i in range(n):       # row + i from stream + i: an LW of each, in one cycle
                vec = self._sample(t, pos, s0 + i, Dir(f["dir"]), name)
                self._weight_write(t, "LW", row + i, vec.view(np.int8), eoc)
        elif m == "LWT":
            vec = self._sample(t, pos, f["stream"], Dir(f["dir"]), name)
            col = f["col"]
            if col >= p.vl:
                self._flag(ErrorFlag.ADDR_RANGE, f"{name}: column {col} >= {p.vl}", t)
                return
            self._check_hazard(self._last_iw, t, f"{name} {col}")
            self._last_lwt = (t, f"{name} {col}")
            self._weight_write(t, "LWT", col, vec.view(np.int8), eoc)
        elif m == "IW":
            self._check_hazard(self._last_lwt, t, name)
            self._last_iw = (t, name)
            eoc.append(lambda: setattr(self, "weights", self.shadow.copy()))
        elif m == "ABC":
            x = self._sample(t, pos, f["stream"], Dir(f["dir"]), name).view(np.int8)
            row = f["acc"]
            if row >= p.mxm_acc_words:
                self._flag(ErrorFlag.ADDR_RANGE, f"{name}: accumulator row {row} >= "
                           f"{p.mxm_acc_words}", t)
                return
            y = (self.weights.astype(np.int64) @ x.astype(np.int64)).astype(np.int32)
            accumulate = f["accumulate"]

            def update(_dr, row=row, y=y, accumulate=accumulate):
                if accumulate:
                    self.acc[row] = (self.acc[row].astype(np.int64) + y).astype(np.int32)
                else:
                    self.acc[row] = y
            later(t + d_abc, update)
        elif m == "ACC":
            row = f["acc"]
            if row >= p.mxm_acc_words:
                self._flag(ErrorFlag.ADDR_RANGE, f"{name}: accumulator row {row} >= "
                           f"{p.mxm_acc_words}", t)
                return
            if f["group"] >= p.stream_groups:
                self._flag(ErrorFlag.ADDR_RANGE, f"{name}: stream group {f['group']} out of range", t)
                return
            d = Dir(f["dir"])

            # the row is read at issue (after same-cycle updates); drive a copy one cycle later
            snapshot = self.acc[row].copy()
            later(t + idef.d_func(p), lambda dr, s=snapshot: drive_snapshot(dr, s))

            def drive_snapshot(dr, snap):
                planes = snap.view(np.uint8).reshape(p.vl, 4).T.copy()
                for b in range(4):
                    self._drive(t + 1, dr, pos, 4 * f["group"] + b, d, planes[b], name)
        elif idef in _VXM:
            self._execute_vxm(t, q, idef, f, lm, later, eoc, name)
        elif idef in _SXM:
            self._execute_sxm(t, q, idef, f, later, name)
        else:  # pragma: no cover - the ISA table and this model must grow together
            raise NotImplementedError(f"model has no semantics for {m}")

    def _weight_write(self, t, kind, index, vec, eoc):
        """``LW`` row / ``LWT`` column ``index`` into the shadow buffer at the end of ``t``.

        In the RTL superlane ``c`` writes its part at ``t + c``: an ``LW`` of row ``r`` writes
        byte ``(r, k)`` at ``t + k // lanes``, an ``LWT`` of column ``col`` writes byte
        ``(n, col)`` at ``t + n // lanes``, and where the two meet, byte ``(r, col)``, the later
        write wins (the ``LWT`` in a tie). An ``LW`` and an ``LWT`` fewer than ``superlanes``
        cycles apart can therefore end in the other order than their issue cycles; the model
        keeps the superlane-0 frame for the rest of the vectors and gives that one byte to the
        RTL's winner (docs/architecture.md, MXM pipeline)."""
        L, S = self.params.lanes, self.params.superlanes
        if kind == "LW":
            eoc.append(lambda: self.shadow.__setitem__(index, vec))
        else:
            eoc.append(lambda: self.shadow.__setitem__((slice(None), index), vec))
        for t0, k0, i0, v0 in self._recent_weights:
            if t - t0 >= S or k0 == kind:
                continue
            if k0 == "LWT":                 # an earlier LWT of column i0, now LW of row index
                r, col = index, i0
                if t0 + r // L >= t + col // L:
                    eoc.append(lambda r=r, col=col, b=v0[r]: self.shadow.__setitem__((r, col), b))
            else:                           # an earlier LW of row i0, now LWT of column index
                r, col = i0, index
                if t0 + col // L > t + r // L:
                    eoc.append(lambda r=r, col=col, b=v0[col]: self.shadow.__setitem__((r, col), b))
        self._recent_weights = [e for e in self._recent_weights if t - e[0] < S] + \
            [(t, kind, index, vec)]

    def _check_hazard(self, first, t, what):
        """Raise :class:`ScheduleHazard` if ``what`` at ``t`` follows ``first`` too closely."""
        S = self.params.superlanes
        if first is not None and t - first[0] < S:
            raise ScheduleHazard(first[1], first[0], what, t, S)

    # -- VXM -----------------------------------------------------------------------------------
    def _sample_wide(self, t, pos, stream, d, nbytes, chain, what, lm):
        """Signed lane values of an operand of ``nbytes`` streams; chain reads the output side."""
        if stream + nbytes > self.params.streams:
            self._flag(ErrorFlag.ADDR_RANGE, f"{what}: streams {stream}..{stream + nbytes - 1} "
                       f"out of range", t)
            return np.zeros(self.vl, dtype=np.int64)
        raw = np.zeros(self.vl, dtype=np.int64)
        for b in range(nbytes):
            raw |= self._sample(t, pos, stream + b, d, what, lm, chain).astype(np.int64) << (8 * b)
        return vxm_ops.wrap(raw, {1: 0, 2: 1, 4: 2}[nbytes])

    def _execute_vxm(self, t, q, idef, f, lm, later, eoc, name):
        p = self.params
        m = idef.mnemonic
        alu = isa.VXM_ALU_ROLES.index(q.role)
        dtype = f["dtype"]
        needs32 = m in ("VREQ", "VEXP", "VRECIP", "VRSQRT")
        if dtype not in vxm_ops.DTYPE_BYTES or (needs32 and dtype != 2) or \
                (m == "VCAST" and (f["imm"] & 3) not in vxm_ops.DTYPE_BYTES):
            self._flag(ErrorFlag.BAD_INSTRUCTION, f"{name}: invalid data type", t)
            return
        w = vxm_ops.DTYPE_BYTES[dtype]
        pos = q.slice.position
        a = self._sample_wide(t, pos, f["a_stream"], Dir(f["a_dir"]), w, f["a_chain"], name, lm)
        if m == "VLC":
            if f["imm"] & 1:                    # shift-in
                bits = 8 * w
                new = ((self.vxm_const[alu] << bits) | (a & ((1 << bits) - 1))) & 0xFFFFFFFF
                new = vxm_ops.wrap(new, 2)
            else:
                new = a
            eoc.append(lambda: self.vxm_const.__setitem__(
                alu, np.where(lm, new, self.vxm_const[alu])))
            return
        unary = m in ("VRELU", "VABS", "VNEG", "VCAST", "VEXP", "VRECIP", "VRSQRT")
        b = None
        if not unary:
            mode = f["b_mode"]
            if mode in (isa.VXM_B_STREAM, isa.VXM_B_CHAIN):
                # VSEL's condition is one byte stream whatever the dtype
                wb = 1 if m == "VSEL" else w
                b = self._sample_wide(t, pos, f["b_stream"], Dir(f["b_dir"]), wb,
                                      mode == isa.VXM_B_CHAIN, name, lm)
            elif mode == isa.VXM_B_CONST:
                b = vxm_ops.wrap(self.vxm_const[alu], dtype)
            else:
                imm6 = (f["b_dir"] << 5) | f["b_stream"]
                b = np.full(self.vl, imm6 - 64 if imm6 >= 32 else imm6, dtype=np.int64)
        out_dtype = dtype
        op = m[1:]
        if op in ("ADD", "SUB", "MUL", "MULSHR", "MIN", "MAX", "AND", "OR", "XOR", "SHL", "SRA",
                  "SRL"):
            y = vxm_ops.binary_op(op, a, b, dtype, f["imm"])
        elif op in ("RELU", "ABS", "NEG"):
            y = vxm_ops.unary_op(op, a, dtype)
        elif op == "CMP":
            if f["imm"] not in vxm_ops.CMP_CODES:
                self._flag(ErrorFlag.BAD_INSTRUCTION, f"{name}: comparison code {f['imm']}", t)
                return
            y = vxm_ops.compare(f["imm"], a, b)
        elif op == "SEL":
            y = vxm_ops.select(b, a, vxm_ops.wrap(self.vxm_const[alu], dtype))
        elif op == "CAST":
            out_dtype = f["imm"] & 3
            y = vxm_ops.cast(a, out_dtype)
        elif op == "REQ":
            out_dtype = 0
            y = vxm_ops.requantize(a, b, f["imm"])
        elif op == "EXP":
            y = vxm_ops.fx_exp(a, f["imm"])
        elif op == "RECIP":
            y = vxm_ops.fx_recip(a)
        elif op == "RSQRT":
            y = vxm_ops.fx_rsqrt(a)
        else:  # pragma: no cover
            raise NotImplementedError(m)
        wo = vxm_ops.DTYPE_BYTES[out_dtype]
        s0 = f["a_stream"]
        if s0 + wo > p.streams:
            self._flag(ErrorFlag.ADDR_RANGE, f"{name}: result streams out of range", t)
            return
        u = np.asarray(y, dtype=np.int64) & ((1 << (8 * wo)) - 1)
        planes = [((u >> (8 * k)) & 0xFF).astype(np.uint8) for k in range(wo)]
        d = Dir(f["out_dir"])

        prio = 2 * alu + (idef.d_func(p) == isa.VXM_FUNC_LATENCY)   # later ALU, function unit win

        def drive(dr, planes=planes):
            for k in range(wo):
                self._drive(t, dr, pos, s0 + k, d, planes[k], name, lm, prio)
        later(t + idef.d_func(p), drive)

    # -- SXM -----------------------------------------------------------------------------------
    def _execute_sxm(self, t, q, idef, f, later, name):
        p = self.params
        pos = q.slice.position
        m = idef.mnemonic
        d_in, d_out = Dir(f["in_dir"]), Dir(f["out_dir"])
        dfunc = idef.d_func(p)
        if m == "TRANSPOSE":
            # one issued while the previous one still reads its rows (fewer than L cycles
            # after it) is not executed: BAD_INSTRUCTION in its issue cycle (rtl/sxm.py)
            if t < self._transpose_free.get(q.name, 0):
                self._flag(ErrorFlag.BAD_INSTRUCTION, f"{name}: TRANSPOSE issued fewer than "
                           f"{p.lanes} cycles after the previous one", t)
                return
            self._transpose_free[q.name] = t + p.lanes
            rows = []

            def sample_row(_dr):
                # row i is read at t + i (superlane-0 frame): errors carry that cycle
                rows.append(self._sample(t + len(rows), pos, f["in_stream"], d_in, name))
                if len(rows) == p.lanes:
                    blk = np.stack(rows).reshape(p.lanes, p.superlanes, p.lanes)  # [i][c][j]
                    out = blk.transpose(2, 1, 0).reshape(p.lanes, p.vl)          # [j][c][i]
                    for j in range(p.lanes):
                        later(t + dfunc + j, lambda dr, v=out[j]: self._drive(
                            t, dr, pos, f["out_stream"], d_out, v, name,
                            prio=_SXM_PRIORITY[m]))
            for i in range(p.lanes):
                later(t + i, sample_row) if i else sample_row(None)
            return
        x = self._sample(t, pos, f["in_stream"], d_in, name)
        lanes = np.arange(p.vl)
        if m == "SHIFT":
            src = lanes - f["amount"]
            y = np.where((src >= 0) & (src < p.vl), x[np.clip(src, 0, p.vl - 1)], 0)
        else:
            amap = self._sample(t, pos, f["map_stream"], Dir(f["map_dir"]), name).astype(np.int64)
            if m == "PERMUTE":
                y = np.where(amap < p.vl, x[np.minimum(amap, p.vl - 1)], 0)
            else:   # DISTRIBUTE: within each superlane
                base = (lanes // p.lanes) * p.lanes
                y = np.where(amap < p.lanes, x[base + np.minimum(amap, p.lanes - 1)], 0)
        y = y.astype(np.uint8)
        later(t + dfunc, lambda dr: self._drive(t, dr, pos, f["out_stream"], d_out, y, name,
                                                prio=_SXM_PRIORITY[m]))
