import dataclasses
import json
import struct
import zlib

import pytest

from openlpu import isa
from openlpu.firmware import package
from openlpu.firmware.compiler import compile_matmul
from openlpu.firmware.package import FORMAT_VERSION, Package, PackageError
from openlpu.host.device import Device
from openlpu.params import preset


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


# -- size options: words of instructions the chip lacks -------------------------------------------

def _lite():
    return dataclasses.replace(preset("tiny"), icu_repeat=False, mem_gather=False,
                               name="tiny_lite")


@pytest.mark.parametrize("chip, queue, mnemonic, fields, option", [
    ("ice40", "mem_w1.read", "REPEAT", dict(count=2, interval=1, stride=1), "icu_repeat"),
    ("tiny_lite", "mxm_w.weights", "REPEAT", dict(count=1, interval=3, stride=1), "icu_repeat"),
    ("tiny_lite", "mem_e0.read", "GATHER",
     dict(addr=1, map_stream=0, map_dir=0, stream=1, dir=1), "mem_gather"),
    ("ice40", "mem_w0.write", "SCATTER",
     dict(addr=1, map_stream=0, map_dir=0, stream=1, dir=1), "mem_gather"),
])
def test_instruction_the_chip_lacks_is_rejected(chip, queue, mnemonic, fields, option):
    """Package validation (to_bytes, from_bytes, Device.load) names the queue, the word, the
    instruction and the option; the same word passes on ``tiny``."""
    word = isa.BY_MNEMONIC[mnemonic].encode(**fields)
    full = compile_matmul(preset("tiny"), 2, 2, 2)
    halt = isa.BY_MNEMONIC["HALT"].encode()
    # on tiny a REPEAT repeats the instruction before it (a leading REPEAT is an error)
    before = {"read": isa.BY_MNEMONIC["READ"].encode(addr=0, stream=0, dir=0),
              "weights": isa.BY_MNEMONIC["LW"].encode(row=0, stream=0, dir=0)}
    prefix = [before[queue.split(".")[1]]] if mnemonic == "REPEAT" else []
    full.queues[queue] = prefix + [word] + full.queues.get(queue, [halt])
    full.validate()
    assert Package.from_bytes(full.to_bytes()).queues[queue][len(prefix)] == word
    p = preset(chip) if chip == "ice40" else _lite()
    pkg = compile_matmul(p, 2, 2, 2)
    pkg.queues.setdefault(queue, [isa.BY_MNEMONIC["HALT"].encode()]).insert(0, word)
    msg = (rf"queue {queue} word 0: {mnemonic} is not implemented by preset '{p.name}' "
           rf"\({option}=False\)")
    with pytest.raises(PackageError, match=msg):
        pkg.validate()
    with pytest.raises(PackageError, match=msg):
        pkg.to_bytes()
    # a blob carrying such a word (serialised without validation) fails when it is read
    # back, and the driver refuses to load the package
    payload = json.dumps(pkg.to_dict(), sort_keys=True).encode()
    blob = (package._HEADER.pack(package.MAGIC, FORMAT_VERSION, len(payload)) + payload
            + struct.pack("<I", zlib.crc32(payload)))
    with pytest.raises(PackageError, match=msg):
        Package.from_bytes(blob)
    with Device.open("model", p) as dev, pytest.raises(PackageError, match=msg):
        dev.load(pkg)
