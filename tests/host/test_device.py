"""Host driver: bad input is rejected with a clear exception before anything reaches the device."""

import numpy as np
import pytest

from openlpu import isa
from openlpu.firmware.compiler import compile_matmul
from openlpu.firmware.package import PackageError
from openlpu.host.device import Device, DeviceError
from openlpu.host.image import InputError
from openlpu.hostmap import reg_addr
from openlpu.params import preset
from openlpu.verification.model import ModelBackend


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
    with pytest.raises(DeviceError, match="no program loaded"):
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
