"""Cycle-exact instruction placement and emission of per-queue instruction images.

A :class:`Schedule` holds, for every instruction queue, the instructions placed at absolute
issue cycles (superlane-0 frame). :meth:`Schedule.emit` turns each queue into words: gaps become
``NOP n``, and every queue ends with ``HALT`` at the same cycle, chosen after the last effect of the
program has reached the last superlane. The predicted cycle count is that cycle + 1, which is
exactly what the chip's ``CYCLES`` register reports.
"""

from __future__ import annotations

from openlpu import isa
from openlpu.params import LpuParams

__all__ = ["Schedule", "CompileError", "ImemOverflow"]


class CompileError(ValueError):
    """A workload cannot be compiled for the given preset (shape does not fit, ...)."""


class ImemOverflow(CompileError):
    """A queue's instruction image is longer than the chip's instruction memory."""


class Schedule:
    """Instructions placed at issue cycles, per queue."""

    def __init__(self, params: LpuParams):
        self.params = params
        self._slots: dict[str, dict[int, tuple]] = {q.name: {} for q in params.queues}
        self._checked: set = set()       # (queue, mnemonic, fields) that passed the checks

    def place(self, queue: str, cycle: int, mnemonic: str, **fields) -> None:
        """Place ``mnemonic`` with ``fields`` at ``cycle`` of ``queue``; raises
        :class:`CompileError` if the queue cannot issue it, its fields are invalid, or the cycle
        is taken. An instruction already checked in this queue is not checked again (the checks
        depend only on the queue, the mnemonic and the fields)."""
        if cycle < 0:
            raise CompileError(f"{queue}: {mnemonic} scheduled at negative cycle {cycle}")
        slots = self._slots.get(queue)
        key = (queue, mnemonic, tuple(fields.items()))
        if slots is None or key not in self._checked:
            self._check(queue, cycle, mnemonic, fields)
            self._checked.add(key)
            slots = self._slots[queue]
        if cycle in slots:
            raise CompileError(f"{queue}: cycle {cycle} already holds {slots[cycle][0].mnemonic}, "
                               f"cannot place {mnemonic}")
        slots[cycle] = (isa.BY_MNEMONIC[mnemonic], fields)

    def _check(self, queue, cycle, mnemonic, fields):
        q = self.params.queue(queue)
        idef = isa.BY_MNEMONIC[mnemonic]
        if not isa.allowed(idef, q.role):
            raise CompileError(f"{mnemonic} cannot be issued by queue {queue}")
        why = isa.unavailable_reason(idef, q.role, self.params)
        if why:
            raise CompileError(f"{queue}: {why}")
        try:    # a placed REPEAT's context (what it repeats) is checked by emit (check_queue)
            isa.check_instruction(self.params, q.role, idef, fields,
                                  repeat_context=False)
            idef.encode(**fields)
        except (isa.IsaError, ValueError) as e:
            raise CompileError(f"{queue} @ {cycle}: {e}") from None

    def busy(self, queue: str, cycle: int) -> bool:
        return cycle in self._slots[queue]

    def count(self, mnemonic: str) -> int:
        return sum(1 for slots in self._slots.values() for idef, _ in slots.values()
                   if idef.mnemonic == mnemonic)

    @property
    def last_effect(self) -> int:
        """Last cycle in which any placed instruction still acts, in the top superlane."""
        p = self.params
        end = 0
        reach = {}                       # instruction -> cycles it acts after its issue
        for slots in self._slots.values():
            for t, (idef, _) in slots.items():
                r = reach.get(idef.mnemonic)
                if r is None:
                    r = reach[idef.mnemonic] = max(max(idef.d_func(p) or 0, 0) + p.superlanes - 1, 1)
                if t + r > end:
                    end = t + r
        return end

    def emit(self, *, compress: bool = True) -> tuple[dict[str, list[int]], int]:
        """Return ``({queue: words}, predicted_cycles)``.

        With ``compress``, a run of instructions that differ only by a constant step of their
        address field (``isa.REPEAT_FIELD``) and issue at a constant interval becomes the first
        instruction plus one ``REPEAT``; on a chip without REPEAT (``params.icu_repeat``) every
        instruction stays its own word.
        """
        compress = compress and self.params.icu_repeat
        halt_at = self.last_effect
        nop = isa.BY_MNEMONIC["NOP"]
        rep = isa.BY_MNEMONIC["REPEAT"]
        f_count, f_interval, f_stride = rep.fields
        out = {}
        for qname, slots in self._slots.items():
            words, now = [], 0

            def gap(n):
                while n > 0:
                    k = min(n, isa.NOP_MAX)
                    words.append(nop.encode(count=k))
                    n -= k
            times = sorted(slots)
            i = 0
            while i < len(times):
                t = times[i]
                idef, f = slots[t]
                gap(t - now)
                words.append(idef.encode(**f))
                now = t + 1
                run = _repeat_run(slots, times, i, f_count, f_interval, f_stride) if compress else 0
                if run:
                    k, interval, stride = run
                    words.append(rep.encode(count=k, interval=interval, stride=stride))
                    now = t + k * interval + 1
                    i += k
                i += 1
            gap(halt_at - now)
            words.append(isa.BY_MNEMONIC["HALT"].encode())
            if len(words) > self.params.imem_words:
                raise ImemOverflow(f"queue {qname} needs {len(words)} instruction words; preset "
                                   f"{self.params.name!r} has {self.params.imem_words} per queue")
            try:        # REPEAT copies in range, instruction spacing (isa.ISSUE_SPACING)
                isa.check_queue(self.params, qname, words)
            except isa.IsaError as e:
                raise CompileError(str(e)) from None
            out[qname] = words
        return out, halt_at + 1


def _repeat_run(slots, times, i, f_count, f_interval, f_stride):
    """``(count, interval, stride)`` of the longest REPEAT-able run after ``times[i]``, or None."""
    t0 = times[i]
    idef, f0 = slots[t0]
    field = isa.REPEAT_FIELD.get(idef.mnemonic)
    if i + 1 >= len(times):
        return None
    interval = times[i + 1] - t0
    if not f_interval.min <= interval <= f_interval.max:
        return None
    stride = None
    k = 0
    while i + k + 1 < len(times) and k < f_count.max:
        t = times[i + k + 1]
        idef_k, fk = slots[t]
        if t != t0 + (k + 1) * interval or idef_k is not idef:
            break
        if any(fk[n] != f0[n] for n in f0 if n != field):
            break
        step = (fk[field] - f0[field]) if field else 0
        if stride is None:
            if field and step % (k + 1):
                break
            stride = step // (k + 1) if field else 0
            if not f_stride.min <= stride <= f_stride.max:
                break
        if field and fk[field] != f0[field] + (k + 1) * stride:
            break
        k += 1
    if k < 2:                # a REPEAT pays off from two copies on
        return None
    return k, interval, stride or 0


def issue_counts(words) -> dict:
    """How many times each instruction of a queue image issues (REPEAT copies included)."""
    counts = {}
    last = None
    for w in words:
        idef, f = isa.decode(int(w))
        if idef.mnemonic == "REPEAT":
            if last is not None:
                counts[last] = counts.get(last, 0) + f["count"]
            continue
        counts[idef.mnemonic] = counts.get(idef.mnemonic, 0) + 1
        if idef.mnemonic not in isa.CONTROL_MNEMONICS:
            last = idef.mnemonic
    return counts
