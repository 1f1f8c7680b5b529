"""MEM allocation: free word ranges in every bank of every MEM slice, and striped tensors.

:class:`MemAllocator` keeps, for each ``(global MEM slice, bank)`` of a chip, the free word
ranges. A compiler asks it for a tensor's stripes over the banks it chooses
(:meth:`MemAllocator.stripe`): stripe ``i`` of ``S`` holds the stored words ``w`` with
``w % S == i`` densely (stride 1), so a tensor of ``W`` words needs ``ceil((W - i) / S)`` words
in the bank of stripe ``i``. The result is a list of ``(slice, bank, base, stride)`` stripes, the
stripe form of :class:`~openlpu.firmware.package.TensorDesc` planes.

When a tensor does not fit, :class:`AllocError` (a :class:`~openlpu.firmware.schedule.CompileError`)
says which tensor, how many words it needs in how many stripes, the largest free run of the
banks asked for and the free words of the whole MEM; nothing is allocated then.
"""

from __future__ import annotations

from openlpu.params import LpuParams

from .schedule import CompileError

__all__ = ["MemAllocator", "AllocError"]


class AllocError(CompileError):
    """A tensor does not fit the free MEM words it was asked for."""


class MemAllocator:
    """Free word ranges of every bank of every MEM slice of ``params``.

    ``where`` (e.g. ``"matmul 16x384x384 on preset 'default'"``) starts every error message.
    """

    def __init__(self, params: LpuParams, where: str = ""):
        self.params = params
        self.where = where or f"preset {params.name!r}"
        # (slice, bank) -> sorted list of free [start, end) ranges
        self._free = {(s.index, b): [(0, params.mem_words)]
                      for s in params.mem_slice_list for b in range(params.mem_banks)}
        self._owned: dict[str, list] = {}           # name -> [(slice, bank, start, end)]

    # -- queries -----------------------------------------------------------------------------
    @property
    def units(self) -> list:
        """Every ``(slice, bank)``, slices in global order."""
        return list(self._free)

    def free_words(self, units=None) -> int:
        """Free words in ``units`` (default: the whole MEM)."""
        return sum(e - s for u in (units or self._free) for s, e in self._free[u])

    def largest_run(self, unit) -> int:
        """Longest free range of one ``(slice, bank)``."""
        return max((e - s for s, e in self._free[unit]), default=0)

    def fits(self, words: int, units) -> bool:
        """Whether :meth:`stripe` of ``words`` over ``units`` would succeed."""
        units = list(units)
        n = len(units)
        if not n or len(set(units)) != n:
            return False
        return all(self.largest_run(u) >= -(-(words - i) // n) for i, u in enumerate(units))

    def owner(self, unit, word: int):
        """Name of the tensor that holds ``word`` of ``unit``, or None."""
        for name, ranges in self._owned.items():
            for sl, b, s, e in ranges:
                if (sl, b) == tuple(unit) and s <= word < e:
                    return name
        return None

    # -- allocation --------------------------------------------------------------------------
    def _check_unit(self, unit):
        if tuple(unit) not in self._free:
            raise AllocError(f"{self.where}: MEM slice {unit[0]} bank {unit[1]} does not exist")
        return tuple(unit)

    def reserve(self, name: str, unit, start: int, count: int) -> tuple:
        """Claim words ``[start, start + count)`` of one ``(slice, bank)`` for ``name`` (e.g.
        constants at fixed addresses); returns the stripe ``(slice, bank, start, 1)``."""
        unit = self._check_unit(unit)
        end = start + count
        for i, (s, e) in enumerate(self._free[unit]):
            if s <= start and end <= e:
                self._free[unit][i:i + 1] = [r for r in ((s, start), (end, e)) if r[1] > r[0]]
                self._owned.setdefault(name, []).append((*unit, start, end))
                return (*unit, start, 1)
        raise AllocError(f"{self.where}: {name} needs words [{start}, {end}) of MEM slice "
                         f"{unit[0]} bank {unit[1]}, which are not free")

    def stripe(self, name: str, words: int, units) -> list:
        """Allocate ``words`` stored words of ``name`` striped over ``units`` (a list of
        distinct ``(slice, bank)``, stripe ``i`` in ``units[i]``), first fit in each bank.

        Returns the stripes ``[(slice, bank, base, 1), ...]``. Raises :class:`AllocError`
        (nothing allocated) if a stripe does not fit its bank's largest free run.
        """
        units = [self._check_unit(u) for u in units]
        n = len(units)
        if n == 0:
            raise AllocError(f"{self.where}: {name} was given no MEM banks")
        if len(set(units)) != n:
            raise AllocError(f"{self.where}: {name}: a bank given twice in {units}")
        if words < n:
            raise AllocError(f"{self.where}: {name} has {words} word(s), fewer than its {n} "
                             f"stripes")
        if not self.fits(words, units):
            raise AllocError(self.describe_shortage(name, words, units))
        out = []
        for i, u in enumerate(units):
            need = -(-(words - i) // n)
            start = next(s for s, e in self._free[u] if e - s >= need)
            out.append(self.reserve(name, u, start, need))
        return out

    def free(self, name: str) -> None:
        """Return every range held by ``name`` to the free lists (merging neighbours)."""
        for sl, b, s, e in self._owned.pop(name, []):
            ranges = sorted(self._free[(sl, b)] + [(s, e)])
            merged = []
            for r in ranges:
                if merged and merged[-1][1] == r[0]:
                    merged[-1] = (merged[-1][0], r[1])
                else:
                    merged.append(r)
            self._free[(sl, b)] = merged

    def describe_shortage(self, name: str, words: int, units, stripes: int | None = None,
                          note: str = "") -> str:
        """The message of a tensor of ``words`` words that does not fit ``units`` (the banks it
        may use) in ``stripes`` stripes (default: one per unit)."""
        p = self.params
        units = list(units)
        k = stripes or max(1, len(units))
        per = -(-words // k)
        head = (f"{self.where}: {name} needs {words} words ({words * p.vl} bytes) in "
                f"{'at least ' if stripes else ''}{k} stripe{'s' if k > 1 else ''}"
                f"{f' of {per} words' if k > 1 else ''}")
        total = f"{self.free_words()} free of {self.capacity} in all"
        note = f"; {note}" if note else ""
        if not units:
            return f"{head}; no MEM bank is left for it ({total}{note})"
        by_bank = {}
        for s, b in units:
            by_bank.setdefault(b, []).append(p.mem_slice_list[s].name)
        desc = "; ".join(f"bank {b} of {', '.join(names)}" for b, names in sorted(by_bank.items()))
        largest = max(self.largest_run(u) for u in units)
        return (f"{head}; the largest free run in {desc} is {largest} words "
                f"({self.free_words(units)} free there, {total}{note})")

    @property
    def capacity(self) -> int:
        """Words of the whole MEM (every bank of every slice)."""
        return len(self._free) * self.params.mem_words
