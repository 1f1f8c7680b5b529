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

Every check (package integrity, preset match, input shapes and ranges) happens before the first
word is written to the device.
"""

from __future__ import annotations

from openlpu import isa
from openlpu.firmware.package import Package, PackageError
from openlpu.hostmap import reg_addr

from . import image
from .backend import Backend

__all__ = ["Device", "DeviceError"]


class DeviceError(RuntimeError):
    """The device is not what the driver expects, or it reported an error during a run."""


class Device:
    """A chip behind a :class:`~openlpu.host.backend.Backend`."""

    def __init__(self, backend: Backend):
        self.backend = backend
        self.params = backend.params
        self.package: Package | None = None
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

    def close(self):
        self.backend.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- programs ---------------------------------------------------------------------------
    def load(self, pkg) -> None:
        """Load a :class:`Package` (or its bytes): instruction images and constant MEM image."""
        if isinstance(pkg, (bytes, bytearray)):
            pkg = Package.from_bytes(bytes(pkg))
        if not isinstance(pkg, Package):
            raise TypeError(f"expected a Package or its bytes, not {type(pkg).__name__}")
        pkg.validate()
        if pkg.params != self.params:
            raise PackageError(f"package {pkg.name!r} was built for preset {pkg.params.name!r} "
                               f"(config 0x{pkg.params.config_id:08x}), the device is "
                               f"{self.params.name!r} (config 0x{self.params.config_id:08x})")
        writes = image.load_writes(pkg)
        # queues the package does not mention must not run stale code: make them HALT at once
        halt = isa.BY_MNEMONIC["HALT"].encode()
        from openlpu.hostmap import imem_addr
        for q in self.params.queues:
            if q.name not in pkg.queues:
                writes.append((imem_addr(self.params, q.index, 0), halt))
        self.backend.write_many(writes)
        self.package = pkg

    def _need_package(self) -> Package:
        if self.package is None:
            raise DeviceError("no program loaded: call load() first")
        return self.package

    def write_inputs(self, inputs: dict) -> None:
        self.backend.write_many(image.input_writes(self._need_package(), inputs))

    def run(self, max_cycles: int | None = None) -> int:
        """Start the program, wait for DONE and for in-flight effects (:func:`isa.drain_cycles`),
        check ERRORS; returns the cycle count."""
        pkg = self._need_package()
        limit = max_cycles if max_cycles is not None else 4 * pkg.predicted_cycles + 1000
        self.backend.run(limit)
        # instructions issued before the last HALT may still be acting in the higher
        # superlanes: let them finish before ERRORS is read (simulators only; a board's serial
        # round trip takes far longer than that)
        tick = getattr(self.backend, "tick", None)
        if tick is not None:
            tick(isa.drain_cycles(self.params))
        errors = self.backend.read(reg_addr(isa.HostReg.ERRORS))
        if errors:
            names = ", ".join(f.name for f in isa.ErrorFlag if errors & f)
            at = self.backend.read(reg_addr(isa.HostReg.ERROR_CYCLE))
            raise DeviceError(f"{self.backend.name}: run of {pkg.name!r} raised {names} "
                              f"(first at cycle {at})")
        return self.cycles

    @property
    def cycles(self) -> int:
        return self.backend.read(reg_addr(isa.HostReg.CYCLES))

    def read_outputs(self) -> dict:
        pkg = self._need_package()
        return image.assemble_outputs(pkg, self.backend.read_many(image.output_reads(pkg)))

    def run_package(self, pkg, inputs: dict) -> tuple[int, dict]:
        """``load``, ``write_inputs``, ``run`` and ``read_outputs`` in one call: returns the
        cycle count and the outputs."""
        self.load(pkg)
        self.write_inputs(inputs)
        cycles = self.run()
        return cycles, self.read_outputs()
