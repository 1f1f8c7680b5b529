"""Whole-chip test runs through a host-driver backend: the Verilator build of the chip (cached on
disk) or Amaranth's simulator.

Chip-level tests (programs loaded and run through the host bus, results read back through it)
check the chip's behaviour, so they run on Verilator: the first test of a preset builds its
model (1-3 minutes on a 2-core machine; cached under ``$OPENLPU_BUILD_DIR/verilator`` and
shared by every later run, see ``host/backends/verilator_sim.py``), and each pytest process
keeps one open backend per preset, cleared before every use. The same test functions also run
on ``amaranth`` (a fresh ``AmaranthBackend`` each time) for the small smoke tests that keep the
Amaranth-simulator path of the chip tested.

* :class:`ChipRun` names a preset and a simulator; :func:`chip_params` makes pytest parameters
  of them, with ids ``<preset>-<simulator>`` (the root ``conftest.py`` marks ids containing
  ``-verilator`` with the ``verilator`` marker).
* :func:`open_chip` gives a cleared chip: reset, every MEM and IMEM word written 0.
* :func:`run` starts the loaded program, waits for DONE with a cycle and a wall-clock limit,
  waits :func:`openlpu.isa.drain_cycles` more cycles (errors of instructions issued before the
  last HALT) and returns ``(CYCLES, ERRORS, ERROR_CYCLE)``.
* :func:`read_all_mem` reads every MEM byte through the host bus.
"""

from __future__ import annotations

import contextlib
from typing import NamedTuple

import numpy as np
import pytest

from openlpu import hostmap, isa
from openlpu.isa import HostReg
from openlpu.params import LpuParams

SIMS = ("verilator", "amaranth")
REGS = (HostReg.CYCLES, HostReg.ERRORS, HostReg.ERROR_CYCLE)
RUN_TIMEOUT_S = 120.0        # wall-clock limit of one run (a hung chip fails, never blocks)

_open: dict[str, object] = {}   # params JSON -> open Verilator backend of this process


class ChipRun(NamedTuple):
    """A chip configuration and the simulator a chip-level test runs it on."""
    p: LpuParams
    sim: str


def chip_params(*presets: LpuParams, sim: str = "verilator") -> list:
    """pytest parameters ``ChipRun(p, sim)`` for each of ``presets``, id ``<name>-<sim>``."""
    if sim not in SIMS:
        raise ValueError(f"unknown simulator {sim!r}; expected one of {', '.join(SIMS)}")
    return [pytest.param(ChipRun(p, sim), id=f"{p.name}-{sim}") for p in presets]


def mem_addrs(p: LpuParams) -> list[int]:
    """Host addresses of every MEM word, in (slice index, address, superlane, lane group) order."""
    return [hostmap.mem_addr(p, s, p.mem_bank_of(a), a % p.mem_words, c, g)
            for s in range(2 * p.mem_slices) for a in range(p.mem_addr_words)
            for c in range(p.superlanes) for g in range(p.host_lane_groups)]


def imem_addrs(p: LpuParams) -> list[int]:
    return [hostmap.imem_addr(p, q.index, i) for q in p.queues for i in range(p.imem_words)]


def clear(b, p: LpuParams) -> None:
    """Reset the chip and write 0 to every MEM and IMEM word (as after power-up in the model)."""
    b.reset()
    b.write_many([(a, 0) for a in mem_addrs(p) + imem_addrs(p)])


@contextlib.contextmanager
def open_chip(p: LpuParams, sim: str):
    """A cleared chip for ``p`` on ``sim``: the process's Verilator backend of ``p`` (opened,
    and built if not cached, on first use) or a new Amaranth-simulator backend."""
    from openlpu.host.backends import open_backend
    if sim == "verilator":
        key = p.to_json()
        if key not in _open:
            _open[key] = open_backend("verilator", p)
        b = _open[key]
        clear(b, p)
        yield b
    elif sim == "amaranth":
        b = open_backend("amaranth", p)
        try:
            yield b
        finally:
            b.close()
    else:
        raise ValueError(f"unknown simulator {sim!r}; expected one of {', '.join(SIMS)}")


def read_regs(b) -> tuple[int, int, int]:
    return tuple(b.read(hostmap.reg_addr(r)) for r in REGS)


def run(b, p: LpuParams, max_cycles: int = 200_000) -> tuple[int, int, int]:
    """START, wait for DONE (at most ``max_cycles`` cycles and :data:`RUN_TIMEOUT_S` seconds),
    then ``isa.drain_cycles(p)`` cycles; returns ``(CYCLES, ERRORS, ERROR_CYCLE)``."""
    b.run(max_cycles, timeout_s=RUN_TIMEOUT_S)
    b.tick(isa.drain_cycles(p))
    return read_regs(b)


def read_all_mem(b, p: LpuParams) -> np.ndarray:
    """Every MEM byte through the host bus: ``mem[slice index, address, lane]`` (uint8)."""
    words = b.read_many(mem_addrs(p))
    n = p.host_word_lanes
    mem = np.zeros((2 * p.mem_slices, p.mem_addr_words, p.vl), dtype=np.uint8)
    k = 0
    for s in range(2 * p.mem_slices):
        for a in range(p.mem_addr_words):
            for c in range(p.superlanes):
                for g in range(p.host_lane_groups):
                    base = c * p.lanes + n * g
                    mem[s, a, base:base + n] = hostmap.unpack_lanes(words[k], n)
                    k += 1
    return mem


def write_vector(b, p: LpuParams, slice_index: int, addr: int, vec) -> None:
    """One VL-byte MEM word through the host bus."""
    n = p.host_word_lanes
    b.write_many([(hostmap.mem_addr(p, slice_index, p.mem_bank_of(addr), addr % p.mem_words, c, g),
                   hostmap.pack_lanes(vec[c * p.lanes + n * g:c * p.lanes + n * g + n]))
                  for c in range(p.superlanes) for g in range(p.host_lane_groups)])


def read_vector(b, p: LpuParams, slice_index: int, addr: int) -> np.ndarray:
    n = p.host_word_lanes
    words = b.read_many([hostmap.mem_addr(p, slice_index, p.mem_bank_of(addr), addr % p.mem_words,
                                          c, g)
                         for c in range(p.superlanes) for g in range(p.host_lane_groups)])
    out = np.zeros(p.vl, dtype=np.uint8)
    k = 0
    for c in range(p.superlanes):
        for g in range(p.host_lane_groups):
            out[c * p.lanes + n * g:c * p.lanes + n * g + n] = hostmap.unpack_lanes(words[k], n)
            k += 1
    return out


def load_programs(b, p: LpuParams, programs: dict) -> None:
    """Write every queue: ``programs`` {queue name: words}; the other queues get HALT."""
    halt = isa.BY_MNEMONIC["HALT"].encode()
    b.write_many([(hostmap.imem_addr(p, q.index, i), w) for q in p.queues
                  for i, w in enumerate(programs.get(q.name, [halt]))])


def start(b) -> None:
    """Write CTRL.START (the run's cycle 0 is ``isa.start_delay`` cycles after this write)."""
    b.write(hostmap.reg_addr(HostReg.CTRL), int(isa.Ctrl.START))


def wait_done(b, max_polls: int = 10_000) -> None:
    """Poll STATUS until DONE; ``AssertionError`` after ``max_polls`` reads."""
    for _ in range(max_polls):
        if b.read(hostmap.reg_addr(HostReg.STATUS)) & isa.Status.DONE:
            return
    raise AssertionError(f"STATUS.DONE not set after {max_polls} polls")
