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

from .asm import check_fields

__all__ = ["Schedule", "CompileError"]


class CompileError(ValueError):
    """A workload cannot be compiled for the given preset (shape does not fit, ...)."""


class Schedule:
    """Instructions placed at issue cycles, per queue."""

    def __init__(self, params: LpuParams):
        self.params = params
        self._slots: dict[str, dict[int, tuple]] = {q.name: {} for q in params.queues}

    def place(self, queue: str, cycle: int, mnemonic: str, **fields) -> None:
        q = self.params.queue(queue)
        idef = isa.BY_MNEMONIC[mnemonic]
        if not isa.allowed(idef, q.role):
            raise CompileError(f"{mnemonic} cannot be issued by queue {queue}")
        if cycle < 0:
            raise CompileError(f"{queue}: {mnemonic} scheduled at negative cycle {cycle}")
        slots = self._slots[queue]
        if cycle in slots:
            raise CompileError(f"{queue}: cycle {cycle} already holds {slots[cycle][0].mnemonic}, "
                               f"cannot place {mnemonic}")
        try:
            idef.encode(**fields)
            check_fields(self.params, idef, fields)
        except (isa.IsaError, ValueError) as e:
            raise CompileError(f"{queue} @ {cycle}: {e}") from None
        slots[cycle] = (idef, fields)

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
        for slots in self._slots.values():
            for t, (idef, _) in slots.items():
                end = max(end, t + max(idef.d_func(p) or 0, 0) + p.superlanes - 1, t + 1)
        return end

    def emit(self) -> tuple[dict[str, list[int]], int]:
        """Return ``({queue: words}, predicted_cycles)``."""
        halt_at = self.last_effect
        nop = isa.BY_MNEMONIC["NOP"]
        out = {}
        for qname, slots in self._slots.items():
            words, now = [], 0

            def gap(n):
                while n > 0:
                    k = min(n, isa.NOP_MAX)
                    words.append(nop.encode(count=k))
                    n -= k
            for t in sorted(slots):
                idef, f = slots[t]
                gap(t - now)
                words.append(idef.encode(**f))
                now = t + 1
            gap(halt_at - now)
            words.append(isa.BY_MNEMONIC["HALT"].encode())
            if len(words) > self.params.imem_words:
                raise CompileError(f"queue {qname} needs {len(words)} instruction words; preset "
                                   f"{self.params.name!r} has {self.params.imem_words} per queue")
            out[qname] = words
        return out, halt_at + 1
