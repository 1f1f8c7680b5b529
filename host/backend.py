"""The backend interface of the host driver.

A backend moves 32-bit words over the host bus of one device: the reference model, the RTL in
Amaranth's simulator, the RTL compiled by Verilator, or an FPGA behind a serial bridge. The
:class:`~openlpu.host.device.Device` only talks to this interface, so the same driver code runs
on every backend.

Run limits: :meth:`Backend.run` takes a cycle limit and a wall-clock limit
(:data:`DEFAULT_TIMEOUT_S` when not given) and every backend checks the wall clock while it
waits, in chunks (never only at the end), so no run blocks much longer than its wall-clock
limit, whatever the program does. A closed backend refuses every further call with
:class:`BackendClosed`.
"""

from __future__ import annotations

import functools
import math
import numbers
import time
from abc import ABC, abstractmethod

from openlpu import isa
from openlpu.hostmap import reg_addr
from openlpu.params import LpuParams

__all__ = ["Backend", "BackendClosed", "DeviceTimeout", "CycleLimitExceeded", "WallClockTimeout",
           "DEFAULT_TIMEOUT_S", "MAX_TIMEOUT_S", "MAX_CYCLE_LIMIT", "RunLimits", "run_limits"]

DEFAULT_TIMEOUT_S = 600.0        # wall-clock limit of one run when the caller gives none
MAX_TIMEOUT_S = 24 * 3600.0      # the largest wall-clock limit a caller may ask for
MAX_CYCLE_LIMIT = (1 << 32) - 1  # the largest cycle limit (CYCLES and the bridge's WAIT: 32 bits)


class BackendClosed(RuntimeError):
    """A call on a backend after its :meth:`Backend.close`."""


class DeviceTimeout(TimeoutError):
    """The device did not report DONE within the allowed cycles or wall-clock time.

    Attributes (``None`` where unknown): ``backend`` (its name), ``cycles`` (cycles run when
    the run was given up), ``max_cycles`` (the cycle limit), ``elapsed_s`` and ``timeout_s``
    (wall-clock seconds spent and allowed), ``package`` (the package's name, set by
    :class:`~openlpu.host.device.Device`).
    """

    def __init__(self, message: str | None = None, *, backend=None, cycles=None,
                 max_cycles=None, elapsed_s=None, timeout_s=None, package=None):
        self.backend, self.cycles, self.max_cycles = backend, cycles, max_cycles
        self.elapsed_s, self.timeout_s, self.package = elapsed_s, timeout_s, package
        super().__init__(message if message is not None else self._describe())

    def _describe(self) -> str:
        what = f"{self.backend}: " if self.backend else ""
        if self.package is not None:
            what += f"package {self.package!r} "
        return what + self._reason()

    def _reason(self) -> str:
        return f"not done after {self.cycles} cycles (cycle limit {self.max_cycles})"

    def with_package(self, package: str) -> "DeviceTimeout":
        """The same timeout, naming ``package``."""
        return type(self)(backend=self.backend, cycles=self.cycles, max_cycles=self.max_cycles,
                          elapsed_s=self.elapsed_s, timeout_s=self.timeout_s, package=package)


class CycleLimitExceeded(DeviceTimeout):
    """The cycle limit passed before DONE."""


class WallClockTimeout(DeviceTimeout):
    """The wall-clock limit passed before DONE (and before the cycle limit)."""

    def _reason(self) -> str:
        return (f"not done after {self.elapsed_s:.1f} s of wall-clock time (limit "
                f"{self.timeout_s:g} s), {self.cycles} cycles run (cycle limit "
                f"{self.max_cycles})")


class RunLimits:
    """A checked cycle limit and wall-clock deadline of one run (see :func:`run_limits`)."""

    __slots__ = ("max_cycles", "timeout_s", "t0", "deadline")

    def __init__(self, max_cycles: int, timeout_s: float):
        self.max_cycles, self.timeout_s = max_cycles, timeout_s
        self.t0 = time.monotonic()
        self.deadline = self.t0 + timeout_s

    def expired(self) -> bool:
        return time.monotonic() >= self.deadline

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def timeout(self, backend: str, cycles: int) -> DeviceTimeout:
        """The exception for a run given up after ``cycles`` cycles: a cycle-limit timeout if
        ``cycles`` reached the limit, else a wall-clock one."""
        cls = CycleLimitExceeded if cycles >= self.max_cycles else WallClockTimeout
        return cls(backend=backend, cycles=int(cycles), max_cycles=self.max_cycles,
                   elapsed_s=self.elapsed(), timeout_s=self.timeout_s)


def run_limits(max_cycles, timeout_s=None) -> RunLimits:
    """Check a run's limits and start its wall clock.

    ``max_cycles`` must be an integer in ``[1, MAX_CYCLE_LIMIT]``; ``timeout_s`` ``None``
    (:data:`DEFAULT_TIMEOUT_S`) or a positive number of seconds up to :data:`MAX_TIMEOUT_S`.
    Raises ``TypeError`` or ``ValueError`` naming the argument.
    """
    if isinstance(max_cycles, bool) or not isinstance(max_cycles, numbers.Integral):
        raise TypeError(f"max_cycles must be a positive int, not {type(max_cycles).__name__} "
                        f"{max_cycles!r}")
    max_cycles = int(max_cycles)
    if not 1 <= max_cycles <= MAX_CYCLE_LIMIT:
        raise ValueError(f"max_cycles must be in [1, {MAX_CYCLE_LIMIT}], not {max_cycles}")
    if timeout_s is None:
        timeout_s = DEFAULT_TIMEOUT_S
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, numbers.Real):
        raise TypeError(f"timeout_s must be a positive number of seconds, not "
                        f"{type(timeout_s).__name__} {timeout_s!r}")
    timeout_s = float(timeout_s)
    if not (math.isfinite(timeout_s) and 0 < timeout_s <= MAX_TIMEOUT_S):
        raise ValueError(f"timeout_s must be in (0, {MAX_TIMEOUT_S:g}] seconds, not {timeout_s}")
    return RunLimits(max_cycles, timeout_s)


# methods that touch the device: refused after close() in every backend (see __init_subclass__)
_DEVICE_METHODS = ("write", "read", "write_many", "write_words", "read_many", "run", "tick",
                   "reset")


def _guarded(fn):
    @functools.wraps(fn)
    def method(self, *args, **kwargs):
        if getattr(self, "_backend_closed", False):
            raise BackendClosed(f"{self.name} backend is closed: {fn.__name__}() refused "
                                f"(open a new device)")
        return fn(self, *args, **kwargs)
    method._closed_guard = True
    return method


def _closing(fn):
    @functools.wraps(fn)
    def close(self):
        if getattr(self, "_backend_closed", False):
            return
        try:
            fn(self)
        finally:
            self._backend_closed = True
    close._closed_guard = True
    return close


class Backend(ABC):
    """One device reachable over the host bus.

    Every subclass's ``write``, ``read``, ``write_many``, ``read_many``, ``run``, ``tick`` and
    ``reset`` raise :class:`BackendClosed` once ``close()`` has been called; ``close()`` is
    idempotent.
    """

    name = "abstract"

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for attr in _DEVICE_METHODS:
            fn = cls.__dict__.get(attr)
            if callable(fn) and not getattr(fn, "_closed_guard", False):
                setattr(cls, attr, _guarded(fn))
        fn = cls.__dict__.get("close")
        if callable(fn) and not getattr(fn, "_closed_guard", False):
            cls.close = _closing(fn)

    def __init__(self, params: LpuParams):
        self.params = params
        self.last_run_cycles = 0

    @property
    def closed(self) -> bool:
        return getattr(self, "_backend_closed", False)

    @abstractmethod
    def write(self, addr: int, data: int) -> None:
        """Write one 32-bit word at host address ``addr``."""

    @abstractmethod
    def read(self, addr: int) -> int:
        """Read one 32-bit word from host address ``addr``."""

    def write_many(self, pairs) -> None:
        """Write ``(addr, data)`` pairs in order (backends may batch them)."""
        for addr, data in pairs:
            self.write(addr, data)

    def write_words(self, addrs, data) -> None:
        """Write ``data[i]`` at ``addrs[i]`` in order: two equally long sequences or 1-D numpy
        arrays of integers (a MEM image, many words at once). The same effect as
        ``write_many(zip(addrs, data))``, which is what this default does; a backend may move
        the words in bulk (the Verilator backend stores MEM words straight into its memories).
        """
        addrs, data = list(addrs), list(data)
        if len(addrs) != len(data):
            raise ValueError(f"write_words: {len(addrs)} addresses but {len(data)} data words")
        self.write_many(zip((int(a) for a in addrs), (int(d) for d in data)))

    def read_many(self, addrs) -> list[int]:
        """Read the words at ``addrs`` in order (backends may batch them)."""
        return [self.read(a) for a in addrs]

    def run(self, max_cycles: int, timeout_s: float | None = None) -> None:
        """Start the loaded program and return when ``STATUS.DONE`` is set.

        Raises :class:`CycleLimitExceeded` if the device is still running after
        ``max_cycles`` clock cycles, :class:`WallClockTimeout` after ``timeout_s`` seconds
        (default :data:`DEFAULT_TIMEOUT_S`); both are :class:`DeviceTimeout`. Sets
        ``last_run_cycles``. Backends override this with a loop that does not involve Python
        per cycle where they can; this one polls ``STATUS``.
        """
        lim = run_limits(max_cycles, timeout_s)
        self.write(reg_addr(isa.HostReg.CTRL), isa.Ctrl.START)
        waited = 0
        while not self.read(reg_addr(isa.HostReg.STATUS)) & isa.Status.DONE:
            waited += 1 + isa.HOST_READ_LATENCY
            if waited >= lim.max_cycles or lim.expired():
                raise lim.timeout(self.name, waited)
        self.last_run_cycles = waited

    def close(self) -> None:
        """Release the device; every later call raises :class:`BackendClosed`."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


Backend.close = _closing(Backend.close)
for _attr in ("write_many", "write_words", "read_many", "run"):
    setattr(Backend, _attr, _guarded(getattr(Backend, _attr)))
