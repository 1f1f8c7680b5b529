"""The package loader raises only PackageError, naming the field, for any payload with a correct
CRC: malformed variants one by one, then a seeded mutation loop."""

import copy
import json
import struct
import zlib

import numpy as np
import pytest

from openlpu import isa
from openlpu.firmware import package
from openlpu.firmware.compiler import compile_matmul
from openlpu.firmware.package import MAX_PREDICTED_CYCLES, Package, PackageError
from openlpu.params import preset

P = preset("tiny")


def _blob(payload: bytes) -> bytes:
    """A package blob with a correct header and CRC around ``payload``."""
    return (package._HEADER.pack(package.MAGIC, package.FORMAT_VERSION, len(payload)) + payload
            + struct.pack("<I", zlib.crc32(payload)))


def _dumps(d) -> bytes:
    return json.dumps(d, sort_keys=True).encode()


@pytest.fixture(scope="module")
def good():
    pkg = compile_matmul(P, 3, 5, 7)
    pkg.mem_image = [(0, 3, bytes(range(P.vl)))]
    return pkg.to_dict()


def _set(path, value):
    def mutate(d):
        node = d
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = value
    return mutate


def _del(path):
    def mutate(d):
        node = d
        for k in path[:-1]:
            node = node[k]
        del node[path[-1]]
    return mutate


Q = "mem_w0.read"
VARIANTS = [   # (mutation of the package dict, message regex)
    (_set(["queues"], []), r"^queues: must be an object, not an array"),
    (_set(["queues"], "x"), r"^queues: must be an object, not a string"),
    (_set(["queues", Q, 3], 1.5),
     r'^queues\["mem_w0.read"\]\[3\]: instruction word must be an integer, not 1.5$'),
    (_set(["queues", Q, 0], True), r'queues\["mem_w0.read"\]\[0\]: instruction word must be an '
                                   r'integer, not a bool'),
    (_set(["queues", Q, 0], "8"), r'queues\["mem_w0.read"\]\[0\]: instruction word must be an '
                                  r"integer, not '8'"),
    (_set(["queues", Q, 0], -1), r'queues\["mem_w0.read"\]\[0\]: -1 out of range \[0, 4294967295\]'),
    (_set(["queues", Q, 0], 2**32), r'queues\["mem_w0.read"\]\[0\]: 4294967296 out of range'),
    (_set(["queues", Q], {"0": 1}), r'queues\["mem_w0.read"\]: must be an array, not an object'),
    (_set(["queues", Q], [1] * (P.imem_words + 1)), r'queues\["mem_w0.read"\]: 257 entries, more than 256'),
    (_set(["queues", "nowhere.read"], [1]), r"queues: unknown key\(s\) 'nowhere.read'"),
    (_set(["queues", Q, 0], isa.BY_MNEMONIC["READ"].encode(addr=P.mem_addr_words, stream=0, dir=0)),
     r"queue mem_w0.read word 0: READ: addr=128 out of range for preset 'tiny'"),
    (_set(["inputs", 0, "planes", 0], [1]),
     r'^inputs\[0\]\["planes"\]\[0\]: a byte plane is 2 integers \(MEM slice, bank\) or a list '
     r'of stripes \(MEM slice, bank, base, stride\), not 1 entries'),
    (_set(["inputs", 0, "planes", 0], [1, 0, 0]),
     r'inputs\[0\]\["planes"\]\[0\]: a byte plane is 2 integers .* not 3 entries'),
    # striped planes (format version 2)
    (_set(["inputs", 0, "planes", 0], [[0, 0, 0]]),
     r'^inputs\[0\]\["planes"\]\[0\]\[0\]: a stripe is 4 integers \(MEM slice, bank, base, '
     r'stride\), not 3'),
    (_set(["inputs", 0, "planes", 0], [[0, 0, 0, 1, 5]]),
     r'^inputs\[0\]\["planes"\]\[0\]\[0\]: 5 entries, more than 4'),
    (_set(["inputs", 0, "planes", 0], [[0, 0, 0, 1], 7]),
     r'^inputs\[0\]\["planes"\]\[0\]\[1\]: must be an array, not an integer'),
    (_set(["inputs", 0, "planes", 0], [[4, 0, 0, 1]]),
     r'^inputs\[0\]\["planes"\]\[0\]\[0\]\[0\]: 4 out of range \[0, 3\]'),
    (_set(["inputs", 0, "planes", 0], [[0, 2, 0, 1]]),
     r'^inputs\[0\]\["planes"\]\[0\]\[0\]\[1\]: 2 out of range \[0, 1\]'),
    (_set(["inputs", 0, "planes", 0], [[0, 0, P.mem_words, 1]]),
     r'^inputs\[0\]\["planes"\]\[0\]\[0\]\[2\]: 64 out of range \[0, 63\]'),
    (_set(["inputs", 0, "planes", 0], [[0, 0, 0, 0]]),
     r'^inputs\[0\]\["planes"\]\[0\]\[0\]\[3\]: 0 out of range \[1, 64\]'),
    (_set(["inputs", 0, "planes", 0], [[0, 0, 0, True]]),
     r'^inputs\[0\]\["planes"\]\[0\]\[0\]\[3\]: stride must be an integer, not a bool'),
    (_set(["inputs", 0, "planes", 0], [[0, 0, 0, 1]] * (package.MAX_STRIPES + 1)),
     r'^inputs\[0\]\["planes"\]\[0\]: 257 entries, more than 256'),
    (_set(["inputs", 0, "planes", 0], [[0, 0, P.mem_words - 2, 1]]),   # A has 3 words
     r"^tensor 'A': words \[62, 65\) of byte plane 0 \(MEM slice 0, bank 0\) do not fit a bank "
     r"of 64 words"),
    (_set(["inputs", 0, "planes", 0], [[0, 0, 62, 2], [1, 0, 0, 1]]),  # stripe 0: words 62, 64
     r"^tensor 'A': 2 words from 62 in steps of 2 \(to 64\) of byte plane 0 stripe 0 \(MEM "
     r"slice 0, bank 0\) do not fit a bank of 64 words"),
    (_set(["inputs", 0, "planes", 0], [[0, 0, 0, 1]] * 4),             # 4 stripes, 3 words
     r"^tensor 'A': byte plane 0 has 4 stripes for 3 word\(s\)"),
    (_set(["inputs", 0, "planes", 0], [[0, 0, 0, 2], [0, 0, 2, 1]]),   # words 0, 2 | 2
     r"^tensor 'A' uses word 2 of MEM slice 0 bank 0 twice"),
    (_set(["inputs", 1, "planes", 0], [[0, 0, 2, 1]]),                 # B over A's last word
     r"^tensors 'A' and 'B' both use word 2 of MEM slice 0 bank 0 twice"),
    (_set(["inputs", 0, "planes", 0], [0, 0, 0, 1]),
     r'inputs\[0\]\["planes"\]\[0\]: a byte plane is 2 integers .* not 4 entries'),
    (_set(["inputs", 0, "planes", 0], [0.5, 0]), r'inputs\[0\]\["planes"\]\[0\]\[0\]: MEM slice must be an integer'),
    (_set(["inputs", 0, "planes", 0], [9, 0]), r'inputs\[0\]\["planes"\]\[0\]\[0\]: 9 out of range \[0, 3\]'),
    (_set(["inputs", 0, "planes"], [[0, 0]] * 5), r'inputs\[0\]\["planes"\]: 5 entries'),
    (_set(["inputs", 0, "transposed"], "no"), r'inputs\[0\]\["transposed"\]: must be true or false'),
    (_set(["inputs", 0, "transposed"], 1), r'inputs\[0\]\["transposed"\]: must be true or false'),
    (_set(["inputs", 0, "shape"], [3]), r'inputs\[0\]\["shape"\]: must be 2 integers, not 1'),
    (_set(["inputs", 0, "shape"], [3, 0]), r'inputs\[0\]\["shape"\]\[1\]: 0 out of range'),
    (_set(["inputs", 0, "shape"], [3, 10**30]), r'inputs\[0\]\["shape"\]\[1\]: a huge integer out of range'),
    (_set(["inputs", 0, "shape"], [3.0, 5]), r'inputs\[0\]\["shape"\]\[0\]: must be an integer, not 3.0'),
    (_set(["inputs", 0, "base"], "0"), r'inputs\[0\]\["base"\]: must be an integer'),
    (_set(["inputs", 0, "dtype"], "float32"), r'inputs\[0\]\["dtype"\]: .float32. is not one of'),
    (_set(["inputs", 0, "extra"], 1), r"inputs\[0\]: unknown key\(s\) 'extra'"),
    (_del(["inputs", 0, "name"]), r"inputs\[0\]: missing key\(s\) 'name'"),
    (_set(["inputs", 0], [1, 2]), r"inputs\[0\]: must be an object, not an array"),
    (_set(["outputs"], {}), r"^outputs: must be an array, not an object"),
    (_set(["outputs", 0, "name"], "A"), r"tensor name 'A' used twice"),
    (_set(["predicted_cycles"], "20"), r"^predicted_cycles: must be an integer \(cycles\), not '20'"),
    (_set(["predicted_cycles"], True), r"^predicted_cycles: must be an integer \(cycles\), not a bool"),
    (_set(["predicted_cycles"], 20.0), r"^predicted_cycles: must be an integer \(cycles\), not 20.0"),
    (_set(["predicted_cycles"], 0), r"^predicted_cycles: 0 out of range \[1, 4294967295\]"),
    (_set(["predicted_cycles"], MAX_PREDICTED_CYCLES + 1), r"^predicted_cycles: 4294967296 out of range"),
    (_set(["predicted_cycles"], None), r"^predicted_cycles: must be an integer \(cycles\), not None"),
    (_set(["name"], 5), r"^name: must be a string, not an integer"),
    (_set(["name"], "x" * 1000), r"^name: string of 1000 characters"),
    (_set(["config_id"], 1.0), r"^config_id: must be an integer"),
    (_set(["config_id"], 12345), r"parameter set does not match its config id"),
    (_set(["params", "lanes"], "4"), r'^params\["lanes"\]: must be an integer'),
    (_set(["params", "lanes"], True), r'^params\["lanes"\]: must be an integer, not a bool'),
    (_set(["params", "sxm"], 0), r'^params\["sxm"\]: must be true or false'),
    (_set(["params", "lanes"], 3), r'^params: tiny: lanes must be a power of two'),
    (_set(["params", "bogus"], 3), r"^params: unknown key\(s\) 'bogus'"),
    (_del(["params", "lanes"]), r"^params: missing key\(s\) 'lanes'"),
    (_set(["params"], [1]), r"^params: must be an object"),
    (_set(["mem_image", 0], [0, 3]), r"^mem_image\[0\]: must be \[MEM slice, address, hex bytes\]"),
    (_set(["mem_image", 0, 2], "zz" * P.vl), r"^mem_image\[0\]\[2\]: must be 8 bytes as 16 hex digits"),
    (_set(["mem_image", 0, 2], "00"), r"^mem_image\[0\]\[2\]: must be 8 bytes"),
    (_set(["mem_image", 0, 1], P.mem_addr_words), r"^mem_image\[0\]\[1\]: 128 out of range"),
    (lambda d: d["mem_image"].append([0, 3, "00" * P.vl]), r"MEM image entry \(0, 3\) given twice"),
    (_set(["meta"], []), r"^meta: must be an object, not an array"),
    (_set(["extra"], 1), r"^package: unknown key\(s\) 'extra'"),
    (_del(["queues"]), r"^package: missing key\(s\) 'queues'"),
]


@pytest.mark.parametrize("mutate, message", VARIANTS)
def test_malformed_contents_raise_package_error(good, mutate, message):
    d = copy.deepcopy(good)
    mutate(d)
    with pytest.raises(PackageError, match=message):
        Package.from_bytes(_blob(_dumps(d)))


def _text_variant(good, marker_value):
    d = copy.deepcopy(good)
    d["predicted_cycles"] = "@@"
    return _dumps(d).replace(b'"@@"', marker_value)


@pytest.mark.parametrize("raw, message", [
    (b"1e400", r"the number 1e400, which is not finite"),
    (b"-1e400", r"the number -1e400, which is not finite"),
    (b"Infinity", r"holds Infinity, which is not a number"),
    (b"-Infinity", r"holds -Infinity, which is not a number"),
    (b"NaN", r"holds NaN, which is not a number"),
    (b"1" * 5000, r"not valid JSON"),
    (b"[" * 100_000 + b"]" * 100_000, r"nests deeper than 8 levels"),
    (b"{" * 50_000, r"not valid JSON"),
    (b"[" * 9 + b"]" * 9, r"nests deeper than 8 levels"),
    (b'"' + b'\\"' * 200_000, r"not valid JSON"),          # an unterminated string
    (b"20, \"name\": \"again\"", r"has the key 'name' twice"),
    (b"20 garbage", r"not valid JSON"),
])
def test_malformed_json_raises_package_error(good, raw, message):
    with pytest.raises(PackageError, match=message):
        Package.from_bytes(_blob(_text_variant(good, raw)))


@pytest.mark.parametrize("payload, message", [
    (b"\xff\xfe{}", r"not UTF-8"),
    (json.dumps({}).encode("utf-16"), r"not UTF-8"),
    (b"[]", r"^package: must be an object, not an array"),
    (b"", r"not valid JSON"),
    (b"null", r"^package: must be an object, not null"),
    (b'"[[[[[[[[[[[[[["', r"^package: must be an object, not a string"),   # brackets in a string
])
def test_malformed_payloads_raise_package_error(payload, message):
    with pytest.raises(PackageError, match=message):
        Package.from_bytes(_blob(payload))


def test_oversized_payload_is_refused_before_it_is_read():
    n = package.MAX_PAYLOAD_BYTES + 1
    blob = package._HEADER.pack(package.MAGIC, package.FORMAT_VERSION, n) + bytes(n + 4)
    with pytest.raises(PackageError, match="exceeds"):
        Package.from_bytes(blob)


def test_validate_bounds_predicted_cycles_and_types():
    pkg = compile_matmul(P, 2, 2, 2)
    for bad in (MAX_PREDICTED_CYCLES + 1, True, 3.0, "20", 0):
        pkg.predicted_cycles = bad
        with pytest.raises(PackageError, match="predicted cycle count"):
            pkg.to_bytes()
    pkg.predicted_cycles = MAX_PREDICTED_CYCLES
    assert Package.from_bytes(pkg.to_bytes()).predicted_cycles == MAX_PREDICTED_CYCLES
    pkg.queues["mem_w0.read"] = [1.5]
    with pytest.raises(PackageError, match="word 0: instruction word must be an integer, not 1.5"):
        pkg.validate()


def test_meta_and_optional_keys(good):
    d = copy.deepcopy(good)
    d["meta"] = {"scale": 0.125, "nested": {"a": [1, 2, {"b": None}]}}
    del d["inputs"][0]["transposed"]
    pkg = Package.from_bytes(_blob(_dumps(d)))
    assert pkg.meta["scale"] == 0.125 and pkg.inputs[0].transposed is False
    del d["meta"]
    assert Package.from_bytes(_blob(_dumps(d))).meta == {}


# -- seeded mutation loop -------------------------------------------------------------------------

_ODD = [None, True, False, 0, -1, 1, 2**32, 2**64, 1.5, -0.0, 1e300, "", "x", "0", [], {}, [0],
        [[0, 0]], {"a": 1}, "mem_w0.read", [1, 2, 3], "ff" * 8]


def _nodes(d, path=()):
    yield path, d
    if isinstance(d, dict):
        for k, v in d.items():
            yield from _nodes(v, path + (k,))
    elif isinstance(d, list):
        for i, v in enumerate(d):
            yield from _nodes(v, path + (i,))


def _mutate(rng, d):
    nodes = list(_nodes(d))
    path, node = nodes[int(rng.integers(len(nodes)))]
    if not path:
        return _ODD[int(rng.integers(len(_ODD)))]
    parent = d
    for k in path[:-1]:
        parent = parent[k]
    op = rng.random()
    if op < 0.6:
        parent[path[-1]] = copy.deepcopy(_ODD[int(rng.integers(len(_ODD)))])
    elif op < 0.75:
        del parent[path[-1]]
    elif op < 0.85 and isinstance(node, int) and not isinstance(node, bool):
        parent[path[-1]] = node + int(rng.choice([-1, 1, 2**31, -(2**31)]))
    elif isinstance(parent, dict):
        parent["k" + str(int(rng.integers(3)))] = 1
    else:
        parent.append(copy.deepcopy(node))
    return d


def test_mutations_raise_only_package_error(good):
    """A few hundred seeded mutations of a valid package, as JSON structures and as bytes of
    the payload (the CRC always fixed up): each loads or raises PackageError, nothing else."""
    rng = np.random.default_rng(12345)
    text = _dumps(good)
    outcome = {"loaded": 0, "rejected": 0}
    for i in range(400):
        if i % 2:
            payload = _dumps(_mutate(rng, copy.deepcopy(good)))
        else:
            b = bytearray(text)
            for _ in range(int(rng.integers(1, 4))):
                at = int(rng.integers(len(b)))
                r = rng.random()
                if r < 0.4:
                    b[at] = int(rng.choice(list(b'0123456789,.:[]{}"-eE \\ntfa')))
                elif r < 0.7:
                    del b[at]
                else:
                    b.insert(at, int(rng.integers(256)))
            payload = bytes(b)
        try:
            pkg = Package.from_bytes(_blob(payload))
        except PackageError:
            outcome["rejected"] += 1
            continue
        pkg.validate()
        outcome["loaded"] += 1
    assert outcome["rejected"] > 200, outcome
