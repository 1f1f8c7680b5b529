import struct

import pytest

from openlpu.firmware.compiler import compile_matmul
from openlpu.firmware.package import FORMAT_VERSION, Package, PackageError


@pytest.fixture
def blob(params):
    return compile_matmul(params, 3, 5, 7).to_bytes()


def test_round_trip(blob):
    pkg = Package.from_bytes(blob)
    assert pkg.to_bytes() == blob


def test_truncated(blob):
    with pytest.raises(PackageError, match="truncated"):
        Package.from_bytes(blob[:-10])
    with pytest.raises(PackageError, match="truncated"):
        Package.from_bytes(blob[:5])


def test_corrupt_payload_fails_checksum(blob):
    bad = bytearray(blob)
    bad[40] ^= 0x01
    with pytest.raises(PackageError, match="checksum"):
        Package.from_bytes(bytes(bad))


def test_wrong_magic_and_version(blob):
    with pytest.raises(PackageError, match="not an OpenLPU program package"):
        Package.from_bytes(b"XXXXXXXX" + blob[8:])
    bad = blob[:8] + struct.pack("<I", FORMAT_VERSION + 1) + blob[12:]
    with pytest.raises(PackageError, match="format version"):
        Package.from_bytes(bad)


def test_trailing_bytes(blob):
    with pytest.raises(PackageError, match="trailing"):
        Package.from_bytes(blob + b"\0")


def test_invalid_instruction_word_is_rejected(params):
    pkg = compile_matmul(params, 2, 2, 2)
    pkg.queues["mxm_w.weights"][0] = 0x3F            # unknown opcode
    with pytest.raises(PackageError, match="mxm_w.weights word 0: unknown opcode"):
        pkg.to_bytes()


def test_tensor_out_of_range_is_rejected(params):
    pkg = compile_matmul(params, 2, 2, 2)
    pkg.inputs[0].base = params.mem_words - 1
    with pytest.raises(PackageError, match="tensor 'A'.*do not fit"):
        pkg.validate()
    pkg = compile_matmul(params, 2, 2, 2)
    pkg.outputs[0].planes[0] = (99, 1)
    with pytest.raises(PackageError, match="MEM slice 99 does not exist"):
        pkg.validate()
