"""The machine model every kernel is scheduled on: one :class:`ChipState` per program.

A :class:`ChipState` owns the :class:`~openlpu.firmware.schedule.Schedule` (the queue slots)
and every other resource table of one program:

* stream-register slots: ``(direction, stream, column, cycle)`` -> the value that holds it (a
  value is named by where and when it was driven, so several consumers of one value share its
  slots; two different values on one slot are a conflict);
* MEM bank ports: ``(slice, "r"/"w", cycle)`` -> bank, recorded by every READ and WRITE placed
  (a READ and a WRITE of one bank of one slice in one cycle are a conflict);
* MEM words: the :class:`~openlpu.firmware.memalloc.MemAllocator` (tensor addresses) and the
  program's MEM image (constants);
* interval resources (accumulator rows, MXM weight buffers, VXM constant registers): cycle
  ranges claimed by owners, overlapping claims are a conflict.

Claiming a taken slot raises :class:`CompileError` naming the resource and the cycle, so a kernel
placed on a state that already holds another kernel cannot silently overwrite it.

The timing rule lives here once (:func:`lead`): an instruction issued at ``t`` by the slice at
floorplan position ``p`` drives its stream result at ``t + d_func`` into the stream-register
column next to ``p``; a slice at position ``q`` whose instruction samples its stream operand
``d_skew`` cycles after issue must issue at ``t + d_func + |q - p| - d_skew``. Both latencies
come from :mod:`openlpu.isa` (``InstrDef.d_func`` / ``InstrDef.d_skew``), positions from
:mod:`openlpu.params`.

Kernels are *emitters* on a state (``emit_matmul``, ``emit_elementwise``, ...): they place their
instructions at or after an ``earliest`` cycle, allocate their tensors from the state's allocator
and return what they produced (end cycle, tensor layouts). :meth:`ChipState.package` turns the
state into a :class:`~openlpu.firmware.package.Package`.
"""

from __future__ import annotations

import bisect
import functools
from dataclasses import dataclass, field

from openlpu import isa
from openlpu.isa import Dir
from openlpu.params import LpuParams

from .memalloc import MemAllocator
from .schedule import CompileError, Schedule

__all__ = ["ChipState", "Emitted", "transactional", "lead", "position", "stream_path",
           "CompileError"]


@dataclass
class Emitted:
    """What an emitter produced on a :class:`ChipState`.

    ``end``: first cycle after the kernel's last instruction issued (a kernel emitted with
    ``earliest=end`` may read what this one wrote); ``inputs`` / ``outputs``: the
    :class:`~openlpu.firmware.package.TensorDesc` of the tensors it reads and writes; ``meta``:
    kernel figures (MACs, busy cycles, layout notes) for the package.
    """
    end: int
    inputs: list = field(default_factory=list)
    outputs: list = field(default_factory=list)
    meta: dict = field(default_factory=dict)


def transactional(emit):
    """Make the emitter ``emit(state, ...)`` all or nothing: it runs on ``state.fork()``, whose
    tables the state takes only when it returns (an emitter that raises leaves the state as it
    was)."""
    @functools.wraps(emit)
    def wrapper(state, *args, **kw):
        fork = state.fork()
        out = emit(fork, *args, **kw)
        state.adopt(fork)
        return out
    return wrapper


def position(params: LpuParams, where) -> int:
    """Floorplan position of ``where``: a slice name, a ``SliceInfo`` or a position."""
    if isinstance(where, int):
        return where
    if isinstance(where, str):
        return params.slice(where).position
    return where.position


def lead(params: LpuParams, producer, src, dst, consumer=None, *, chain: bool = False) -> int:
    """THE timing rule: cycles from the issue of ``producer`` at ``src`` to the issue of
    ``consumer`` at ``dst`` that samples its stream result.

    ``d_func(producer) + |dst - src| - d_skew(consumer)``; with ``chain`` (a VXM ALU reading
    the output column of its own slice, ``src == dst``) one register hop: ``d_func + 1 -
    d_skew``. ``producer`` / ``consumer`` are
    mnemonics (or :class:`isa.InstrDef`); ``producer=None`` means a value already driven (its
    drive cycle is the reference), ``consumer=None`` the cycle the value is in the column of
    ``dst`` (``d_skew`` 0). ``src`` and ``dst`` are slice names, ``SliceInfo`` or positions.
    """
    d = 0
    if producer is not None:
        pdef = isa.BY_MNEMONIC[producer] if isinstance(producer, str) else producer
        d = pdef.d_func(params)
        if d is None:
            raise CompileError(f"{pdef.mnemonic} drives no stream result")
    skew = 0
    if consumer is not None:
        cdef = isa.BY_MNEMONIC[consumer] if isinstance(consumer, str) else consumer
        skew = cdef.d_skew or 0
    dist = abs(position(params, dst) - position(params, src))
    if chain:
        if dist:
            raise CompileError("a chained operand must come from the same slice")
        dist = 1
    return d + dist - skew


def stream_path(d: Dir, stream: int, pos: int, t_drive: int, q_far: int):
    """The stream-register slots ``(dir, stream, column, cycle)`` a value driven at ``t_drive``
    by the slice at ``pos`` flowing ``d`` occupies until the slice at ``q_far`` samples it."""
    if d == Dir.EAST:
        return [(d, stream, c, t_drive + c - pos) for c in range(pos + 1, max(q_far, pos + 1) + 1)]
    return [(d, stream, c, t_drive + 1 + pos - c) for c in range(min(q_far + 1, pos), pos + 1)]


class ChipState:
    """Queue slots, stream slots, MEM banks and words, accumulator rows, weight buffers and
    constant registers of one program on ``params``; see the module docstring.

    It has the placing interface of :class:`Schedule` (``place``, ``busy``, ``count``,
    ``emit``), so helpers written for a schedule (e.g. ``vxmconst.load_const``) place on it.
    """

    def __init__(self, params: LpuParams, where: str = ""):
        self.params = params
        self.where = where or f"preset {params.name!r}"
        self.sched = Schedule(params)
        self.alloc = MemAllocator(params, self.where)
        self.image: list = []                    # (slice, address, bytes) of constants
        self.streams: dict = {}                  # (dir, stream, column, cycle) -> value id
        self.banks: dict = {}                    # (slice index, "r"/"w", cycle) -> bank
        self._claims: dict = {}                  # resource -> sorted [(start, end, owner)]
        self._mem_q: dict = {}                   # queue -> MEM slice index (READ/WRITE queues)
        self._lead: dict = {}                    # lead() memo
        self.stream_hi = -1                      # last cycle of a claimed stream slot
        for s in params.mem_slice_list:
            self._mem_q[f"{s.name}.read"] = s.index
            self._mem_q[f"{s.name}.write"] = s.index

    # -- the timing rule -----------------------------------------------------------------------
    def lead(self, producer, src, dst, consumer=None, *, chain: bool = False) -> int:
        """:func:`lead` on this state's chip (memoised: kernels ask the same few thousand
        times)."""
        key = (producer, src, dst, consumer, chain)
        try:
            return self._lead[key]
        except KeyError:
            v = self._lead[key] = lead(self.params, producer, src, dst, consumer, chain=chain)
            return v
        except TypeError:                   # an unhashable argument
            return lead(self.params, producer, src, dst, consumer, chain=chain)

    def read_into(self, queue: str, src, addr: int, stream: int, d: Dir, dst, t_sample: int,
                  consumer=None) -> int:
        """Place the READ of ``addr`` on ``queue`` (the read queue of the slice at ``src``) so
        that ``consumer`` at ``dst`` issuing at ``t_sample`` samples it on ``stream`` flowing
        ``d``; claims its bank port and stream slots. Returns the READ's cycle."""
        t = t_sample - self.lead("READ", src, dst, consumer)
        self.place(queue, t, "READ", addr=addr, stream=stream, dir=d)
        self.drive(d, stream, src, t + self.lead("READ", src, src), dst)
        return t

    def send(self, producer, src, t_issue: int, d: Dir, streams, dst, consumer=None) -> int:
        """Claim the slots of the stream result of ``producer`` issued at ``t_issue`` at ``src``
        on ``streams`` flowing ``d`` to ``dst``; returns the cycle ``consumer`` there issues."""
        t_drive = t_issue + self.lead(producer, src, src)
        for s in streams:
            self.drive(d, s, src, t_drive, dst)
        return t_issue + self.lead(producer, src, dst, consumer)

    def pos(self, where) -> int:
        return position(self.params, where)

    # -- queue slots and MEM bank ports --------------------------------------------------------
    def place(self, queue: str, cycle: int, mnemonic: str, **fields) -> None:
        """Place an instruction (:meth:`Schedule.place`); a READ or WRITE also claims its MEM
        bank port in that cycle (raises :class:`CompileError` on a read/write bank conflict)."""
        sl = self._mem_q.get(queue) if mnemonic in ("READ", "WRITE") else None
        if sl is not None:
            port = "r" if mnemonic == "READ" else "w"
            bank = self.params.mem_bank_of(fields["addr"])
            other = self.banks.get((sl, "w" if port == "r" else "r", cycle))
            if other == bank:
                raise CompileError(f"{self.where}: MEM slice {self.params.mem_slice_list[sl].name}"
                                   f" bank {bank} is read and written in cycle {cycle}")
        self.sched.place(queue, cycle, mnemonic, **fields)
        if sl is not None:
            self.banks[(sl, port, cycle)] = bank

    def busy(self, queue: str, cycle: int) -> bool:
        return self.sched.busy(queue, cycle)

    def count(self, mnemonic: str) -> int:
        return self.sched.count(mnemonic)

    def emit(self, *, compress: bool = True):
        return self.sched.emit(compress=compress)

    @property
    def last_effect(self) -> int:
        return self.sched.last_effect

    @property
    def end(self) -> int:
        """First cycle after every instruction placed so far has issued."""
        return max((max(s) + 1 for s in self.sched._slots.values() if s), default=0)

    # -- stream-register slots -------------------------------------------------------------------
    def stream_taken(self, slots, vid) -> bool:
        """Whether any of ``slots`` holds a value other than ``vid``."""
        get = self.streams.get
        return any(get(k, vid) != vid for k in slots)

    def drive(self, d: Dir, stream: int, src, t_drive: int, dst) -> None:
        """Claim the stream-register slots of a value driven at ``t_drive`` by the slice at
        ``src`` flowing ``d`` until the slice at ``dst`` samples it; raises
        :class:`CompileError` naming the stream, column and cycle of a slot another value
        holds."""
        pos = src if isinstance(src, int) else self.pos(src)
        q = dst if isinstance(dst, int) else self.pos(dst)
        vid = (d, stream, pos, t_drive)
        if d == Dir.EAST:
            slots = [(d, stream, c, t_drive + c - pos) for c in range(pos + 1, max(q, pos + 1) + 1)]
        else:
            slots = [(d, stream, c, t_drive + 1 + pos - c) for c in range(min(q + 1, pos), pos + 1)]
        if "stream registers (untracked)" in self._claims:
            self._check_opaque(slots[0][3] if slots else t_drive,
                               slots[-1][3] if slots else t_drive)
        get = self.streams.get
        bad = next((k for k in slots if get(k, vid) != vid), None)
        if bad is not None:
            raise CompileError(f"{self.where}: stream {bad[1]} {Dir(bad[0]).name} column {bad[2]} "
                               f"is taken in cycle {bad[3]} (by the value driven at "
                               f"{self.streams[bad][3]}), cannot drive another")
        self.streams.update(dict.fromkeys(slots, vid))
        if slots:
            self.stream_hi = max(self.stream_hi, slots[0][3], slots[-1][3])

    def opaque_streams(self, start: int, end: int, owner: str, *, after: int = -1) -> None:
        """Mark cycles ``start .. end`` as using stream registers whose slots a kernel placed by
        hand did not claim one by one: no value may be driven (:meth:`drive`, flows) in them.
        ``after`` is :attr:`stream_hi` when the kernel started: a slot claimed before it in
        ``start .. end`` (another kernel's value still in flight) raises."""
        if after >= start:
            raise CompileError(f"{self.where}: {owner} uses stream registers from cycle {start} "
                               f"on without tracking their slots, but stream slots are claimed "
                               f"up to cycle {after}; emit it from earliest={after + 1} on")
        self.claim("stream registers (untracked)", start, end, owner)

    def _check_opaque(self, t0: int, t1: int) -> None:
        for s, e, who in self._claims.get("stream registers (untracked)", ()):
            if s <= max(t0, t1) and min(t0, t1) <= e:
                raise CompileError(f"{self.where}: the stream registers in cycles {s}..{e} are "
                                   f"used by {who}, whose stream slots are not tracked; cannot "
                                   f"drive a value in cycle {max(s, min(t0, t1))}")

    def streams_opaque_in(self, t0: int, t1: int) -> bool:
        """Whether a cycle of ``t0 .. t1`` is in an :meth:`opaque_streams` range."""
        return any(s <= t1 and t0 <= e
                   for s, e, _ in self._claims.get("stream registers (untracked)", ()))

    # -- interval resources --------------------------------------------------------------------
    def claim(self, resource: str, start: int, end: int, owner: str = "") -> None:
        """Claim ``resource`` (e.g. ``"accumulator row 3"``, ``"vxm.alu0 constant register"``)
        for cycles ``start .. end`` inclusive; raises :class:`CompileError` naming the resource
        and the first cycle already claimed by someone else."""
        if end < start:
            raise CompileError(f"{self.where}: {resource}: empty claim {start}..{end}")
        lst = self._claims.setdefault(resource, [])
        i = bisect.bisect_left(lst, (start,))
        for j in (i - 1, i):
            if 0 <= j < len(lst):
                s, e, who = lst[j]
                if s <= end and start <= e:
                    raise CompileError(f"{self.where}: {resource} is taken in cycle "
                                       f"{max(s, start)} (claimed {s}..{e}"
                                       f"{f' by {who}' if who else ''}), cannot claim "
                                       f"{start}..{end}{f' for {owner}' if owner else ''}")
        lst.insert(i, (start, end, owner))

    def free_after(self, resource: str) -> int:
        """First cycle after the last claim of ``resource`` (0 if never claimed)."""
        lst = self._claims.get(resource)
        return max(e for _, e, _ in lst) + 1 if lst else 0

    def claims(self, resource: str) -> list:
        return list(self._claims.get(resource, ()))

    # -- the program ---------------------------------------------------------------------------
    def package(self, *, name: str, inputs, outputs, meta=None):
        """The validated :class:`Package` of everything placed: queue images, the predicted
        cycle count, the MEM image and the given tensor descriptors."""
        from .package import Package
        queues, cycles = self.emit()
        pkg = Package(name=name, params=self.params, queues=queues, inputs=list(inputs),
                      outputs=list(outputs), predicted_cycles=cycles, mem_image=list(self.image),
                      meta=dict(meta or {}))
        pkg.validate()
        return pkg

    def fork(self) -> "ChipState":
        """An independent copy (for trying a placement); :meth:`adopt` takes a fork's tables."""
        other = ChipState.__new__(ChipState)
        other.params, other.where = self.params, self.where
        other.sched = Schedule(self.params)
        other.sched._slots = {q: dict(s) for q, s in self.sched._slots.items()}
        other.sched._checked = set(self.sched._checked)
        other.alloc = MemAllocator(self.params, self.alloc.where)
        other.alloc._free = {u: list(r) for u, r in self.alloc._free.items()}
        other.alloc._owned = {n: list(r) for n, r in self.alloc._owned.items()}
        other.image = list(self.image)
        other.streams = dict(self.streams)
        other.banks = dict(self.banks)
        other._claims = {k: list(v) for k, v in self._claims.items()}
        other._mem_q = self._mem_q
        other._lead = self._lead
        other.stream_hi = self.stream_hi
        return other

    def adopt(self, fork: "ChipState") -> None:
        """Take every table of ``fork`` (a :meth:`fork` of this state with more placed)."""
        self.__dict__.update(fork.__dict__)
