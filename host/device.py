"""The host driver: open a device on a backend, load a program package, run it.

Example::

    from openlpu.host.device import Device
    from openlpu.firmware.compiler import compile_matmul

    pkg = compile_matmul(params, 8, 8, 8)
    with Device.open("verilator", params) as dev:
        dev.load(pkg)
        dev.write_inputs({"A": A, "B": B})
        cycles = dev.run()
        C = dev.read_outputs()["C"]

Every check (package integrity, preset match, input shapes and ranges, call order, argument
types) happens before the first word is written to the device.

States (:class:`DeviceState`, ``Device.state``) and the calls each allows::

    OPEN            load
    LOADED          load, write_inputs, run (only a package without inputs)
    INPUTS_WRITTEN  load, write_inputs, run
    RAN             load, write_inputs, run (again, on MEM as the last run left it), read_outputs
    CLOSED          nothing (close() again is a no-op)

``load`` -> LOADED; a load that fails while writing -> OPEN (no program: the instruction memory
holds a mix); a load refused by its checks changes nothing. ``write_inputs`` -> INPUTS_WRITTEN;
after a run it also rewrites the package's constant MEM image, so the next run starts from the
same MEM contents (for everything the package defines) as the first. ``run`` -> RAN when the
chip reported DONE (also when it raised error flags: :class:`DeviceError`, outputs readable);
-> OPEN after a timeout (the driver resets the chip where the backend can, see :meth:`reset`).

Limits of ``run``: ``max_cycles`` defaults to ``4 * predicted_cycles + 1000`` capped at
:data:`DEFAULT_MAX_CYCLES`; ``timeout_s`` defaults to :data:`DEFAULT_TIMEOUT_S` (600 s), the
bound on how long any driver call blocks with default arguments, on every backend.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

import numpy as np

from openlpu import isa
from openlpu.firmware.package import Package, PackageError
from openlpu.hostmap import imem_addr, reg_addr

from . import image
from .backend import (DEFAULT_TIMEOUT_S, MAX_CYCLE_LIMIT, Backend, BackendClosed, DeviceTimeout,
                      run_limits)

__all__ = ["Device", "DeviceError", "DeviceStateError", "DeviceArgumentError", "DeviceState",
           "DeviceTimeout", "DEFAULT_MAX_CYCLES", "DEFAULT_TIMEOUT_S", "default_max_cycles"]

DEFAULT_MAX_CYCLES = 1 << 28     # cap of the default cycle limit, whatever the package predicts


def default_max_cycles(pkg: Package) -> int:
    """The cycle limit of ``run()`` when none is given: ``4 * predicted + 1000``, capped."""
    return min(4 * int(pkg.predicted_cycles) + 1000, DEFAULT_MAX_CYCLES)


class DeviceError(RuntimeError):
    """The device is not what the driver expects, or it reported an error during a run."""


class DeviceStateError(DeviceError):
    """A call the device's current :class:`DeviceState` does not allow; ``.call`` and
    ``.state`` name them."""

    def __init__(self, call: str, state: "DeviceState", hint: str):
        self.call, self.state = call, state
        super().__init__(f"{call}() is not allowed in state {state.name}: {hint}")


class DeviceArgumentError(DeviceError, TypeError, ValueError):
    """An argument of a driver call has the wrong type or value (raised before anything is
    written to the device)."""


class DeviceState(enum.Enum):
    """Where a :class:`Device` is in its life cycle (see the module docstring)."""
    CLOSED = "closed"
    OPEN = "open"                       # no program loaded
    LOADED = "loaded"                   # a program, no inputs written since load
    INPUTS_WRITTEN = "inputs written"   # inputs written, not run since
    RAN = "ran"                         # the last run finished: outputs readable


_HINTS = {
    DeviceState.CLOSED: "the device is closed (open a new one)",
    DeviceState.OPEN: "no program loaded: call load() first",
    DeviceState.LOADED: "no run since the program was loaded",
    DeviceState.INPUTS_WRITTEN: "inputs written but not run since: call run() first",
}


class Device:
    """A chip behind a :class:`~openlpu.host.backend.Backend`, with an explicit
    :class:`DeviceState`."""

    def __init__(self, backend: Backend):
        if not isinstance(backend, Backend):
            raise DeviceArgumentError(f"backend must be a Backend, not {type(backend).__name__}")
        self.backend = backend
        self.params = backend.params
        self._package: Package | None = None
        self._state = DeviceState.OPEN
        chip_id = backend.read(reg_addr(isa.HostReg.ID))
        if chip_id != isa.CHIP_ID:
            raise DeviceError(f"{backend.name}: chip ID 0x{chip_id:08x}, expected 0x{isa.CHIP_ID:08x}")
        config = backend.read(reg_addr(isa.HostReg.CONFIG_ID))
        if config != self.params.config_id:
            raise DeviceError(f"{backend.name}: device config id 0x{config:08x} does not match "
                              f"preset {self.params.name!r} (0x{self.params.config_id:08x})")

    @classmethod
    def open(cls, backend: str, params, **kwargs) -> "Device":
        from .backends import open_backend
        return cls(open_backend(backend, params, **kwargs))

    @property
    def state(self) -> DeviceState:
        return self._state

    @property
    def package(self) -> Package | None:
        """The loaded package (``None`` in states OPEN and CLOSED)."""
        return self._package

    def _require(self, call: str, *allowed: DeviceState) -> None:
        if self._state not in allowed:
            raise DeviceStateError(call, self._state, _HINTS.get(self._state, ""))

    def close(self):
        """Close the backend; every later call but ``close()`` raises :class:`DeviceStateError`."""
        if self._state is DeviceState.CLOSED:
            return
        self._state = DeviceState.CLOSED
        self._package = None
        self.backend.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def reset(self) -> None:
        """Stop the chip (reset its registers: every backend can, the serial one through the
        bridge's ``RESET`` request) and go to state OPEN. A backend without ``reset`` raises
        :class:`DeviceError` if the chip is still running."""
        self._require("reset", *_LIVE)
        self._package = None
        self._state = DeviceState.OPEN
        reset = getattr(self.backend, "reset", None)
        if callable(reset):
            reset()
        elif self.backend.read(reg_addr(isa.HostReg.STATUS)) & isa.Status.RUNNING:
            raise DeviceError(f"{self.backend.name}: the chip is still running and this backend "
                              f"cannot reset it: reset the board")

    # -- programs ---------------------------------------------------------------------------
    def load(self, pkg) -> None:
        """Load a :class:`Package` (or its bytes): instruction images and constant MEM image.

        Allowed in every state but CLOSED. Checks the package first (nothing is written if it
        is refused; the state is unchanged); a failure while writing leaves state OPEN."""
        self._require("load", *_LIVE)
        if isinstance(pkg, (bytes, bytearray)):
            pkg = Package.from_bytes(bytes(pkg))
        if not isinstance(pkg, Package):
            raise DeviceArgumentError(f"load() expects a Package or its bytes, not "
                                      f"{type(pkg).__name__}")
        pkg.validate()
        if pkg.params != self.params:
            raise PackageError(f"package {pkg.name!r} was built for preset {pkg.params.name!r} "
                               f"(config 0x{pkg.params.config_id:08x}), the device is "
                               f"{self.params.name!r} (config 0x{self.params.config_id:08x})")
        writes = image.load_writes(pkg)
        # queues the package does not mention must not run stale code: make them HALT at once
        halt = isa.BY_MNEMONIC["HALT"].encode()
        for q in self.params.queues:
            if q.name not in pkg.queues:
                writes.append((imem_addr(self.params, q.index, 0), halt))
        if self.backend.read(reg_addr(isa.HostReg.STATUS)) & isa.Status.RUNNING:
            raise DeviceError(f"{self.backend.name}: load of {pkg.name!r} refused: the chip is "
                              f"still running (call reset() first)")
        self._package = None                  # from here on the instruction memory is a mix
        self._state = DeviceState.OPEN
        self.backend.write_many(writes)
        self._package = pkg
        self._state = DeviceState.LOADED

    def write_inputs(self, inputs) -> None:
        """Write the package's input tensors (``{name: integer array}``) to MEM.

        Allowed in LOADED, INPUTS_WRITTEN and RAN (a new run of the same program; the constant
        MEM image is written again too). Inputs are checked before anything is written."""
        self._require("write_inputs", DeviceState.LOADED, DeviceState.INPUTS_WRITTEN,
                      DeviceState.RAN)
        if not isinstance(inputs, Mapping):
            raise DeviceArgumentError(f"write_inputs() expects a dict of input name -> integer "
                                      f"array, not {type(inputs).__name__}")
        pkg = self._package
        addrs, words = image.input_words(pkg, inputs)
        if self._state is DeviceState.RAN:
            const = image.const_words(pkg)
            addrs, words = np.concatenate([const[0], addrs]), np.concatenate([const[1], words])
        self.backend.write_words(addrs, words)     # one bulk call (the Verilator MEM back door)
        self._state = DeviceState.INPUTS_WRITTEN

    def run(self, max_cycles: int | None = None, timeout_s: float | None = None) -> int:
        """Start the program, wait for DONE and for in-flight effects (:func:`isa.drain_cycles`),
        check ERRORS; returns the cycle count.

        ``max_cycles`` (a positive int, at most :data:`MAX_CYCLE_LIMIT`; default
        :func:`default_max_cycles`) and ``timeout_s`` (seconds, default
        :data:`DEFAULT_TIMEOUT_S`) bound the run on every backend: past either, the driver
        raises :class:`DeviceTimeout` (:class:`~openlpu.host.backend.CycleLimitExceeded` or
        :class:`~openlpu.host.backend.WallClockTimeout`) naming the cycles run, the limit and
        the package, resets the chip where the backend can and goes to state OPEN.
        Allowed in INPUTS_WRITTEN, RAN, and LOADED for a package without inputs."""
        self._require("run", DeviceState.LOADED, DeviceState.INPUTS_WRITTEN, DeviceState.RAN)
        pkg = self._package
        if self._state is DeviceState.LOADED and pkg.inputs:
            raise DeviceStateError("run", self._state,
                                   f"package {pkg.name!r} takes inputs "
                                   f"({', '.join(t.name for t in pkg.inputs)}): call "
                                   f"write_inputs() first")
        try:
            lim = run_limits(default_max_cycles(pkg) if max_cycles is None else max_cycles,
                             timeout_s)
        except (TypeError, ValueError) as e:
            raise DeviceArgumentError(f"run(): {e}") from None
        try:
            self.backend.run(lim.max_cycles, lim.timeout_s)
        except DeviceTimeout as e:
            self._state = DeviceState.OPEN
            self._package = None
            err = e.with_package(pkg.name)
            try:
                self.reset()
            except (DeviceError, BackendClosed) as r:
                err.args = (f"{err.args[0]}; {r}",)
            raise err from None
        # instructions issued before the last HALT may still be acting in the higher
        # superlanes: let them finish before ERRORS is read (simulators only; a board's serial
        # round trip takes far longer than that)
        tick = getattr(self.backend, "tick", None)
        if tick is not None:
            tick(isa.drain_cycles(self.params))
        self._state = DeviceState.RAN
        errors = self.backend.read(reg_addr(isa.HostReg.ERRORS))
        if errors:
            names = ", ".join(f.name for f in isa.ErrorFlag if errors & f)
            at = self.backend.read(reg_addr(isa.HostReg.ERROR_CYCLE))
            raise DeviceError(f"{self.backend.name}: run of {pkg.name!r} raised {names} "
                              f"(first at cycle {at})")
        return self.cycles

    @property
    def cycles(self) -> int:
        """The chip's CYCLES register (the last run's cycle count)."""
        self._require("cycles", *_LIVE)
        return self.backend.read(reg_addr(isa.HostReg.CYCLES))

    def read_outputs(self) -> dict:
        """The last run's output tensors ``{name: ndarray}``; only in state RAN."""
        self._require("read_outputs", DeviceState.RAN)
        pkg = self._package
        return image.assemble_outputs(pkg, self.backend.read_many(image.output_reads(pkg)))

    def run_package(self, pkg, inputs, max_cycles: int | None = None,
                    timeout_s: float | None = None) -> tuple[int, dict]:
        """``load``, ``write_inputs``, ``run`` and ``read_outputs`` in one call: returns the
        cycle count and the outputs."""
        self.load(pkg)
        self.write_inputs(inputs)
        cycles = self.run(max_cycles, timeout_s)
        return cycles, self.read_outputs()


_LIVE = (DeviceState.OPEN, DeviceState.LOADED, DeviceState.INPUTS_WRITTEN, DeviceState.RAN)

