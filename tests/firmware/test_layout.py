"""Tensor layouts: byte planes striped over MEM slices and banks, in packages and host images.

Locations are checked against the layout rule written out here (word ``w`` of a plane with
``S`` stripes in stripe ``w % S`` at ``base + (w // S) * stride``), and tensors go through the
host image code into the reference model's MEM and back.
"""

import struct

import numpy as np
import pytest

from openlpu.firmware import package
from openlpu.firmware.compiler import compile_matmul
from openlpu.firmware.package import Package, PackageError, TensorDesc
from openlpu.host import image
from openlpu.host.backends.model import ModelBackend
from openlpu.params import preset

P = preset("tiny")              # VL 8, 4 MEM slices x 2 banks x 64 words


def _striped(name="X", shape=(10, 20), dtype="int32", transposed=False):
    # 10 rows x 3 tiles = 30 words per plane; every plane a different layout
    planes = [
        [(0, 0, 0, 1), (1, 0, 5, 1), (2, 1, 0, 2)],       # 3 stripes, one strided
        [(3, 1, 10, 1)],                                   # one dense stripe
        [(0, 1, 0, 3), (0, 1, 1, 3), (0, 1, 2, 3)],       # 3 stripes interleaved in one bank
        (1, 1),                                            # (slice, bank) with the tensor base
    ]
    planes = planes[:package.DTYPES[dtype]]
    return TensorDesc(name, shape, dtype, planes, base=20, transposed=transposed)


def test_locate_follows_the_layout_rule():
    d = _striped()
    assert d.words(P.vl) == 30
    lay = d.layout
    assert lay[3] == [(1, 1, 20, 1)]
    for b, stripes in enumerate(lay):
        S = len(stripes)
        for w in range(30):
            sl, bank, base, stride = stripes[w % S]
            assert d.locate(b, w) == (sl, bank, base + (w // S) * stride)
        assert d.plane_words(b, P.vl) == [d.locate(b, w) for w in range(30)]
    # plane 2: three stripes of stride 3 in one bank fill words 0..29 densely
    assert sorted(word for _, _, word in d.plane_words(2, P.vl)) == list(range(30))


def test_dict_round_trip_keeps_both_plane_forms():
    d = _striped()
    assert TensorDesc.from_dict(d.to_dict()) == TensorDesc(
        d.name, d.shape, d.dtype, [list(p) if isinstance(p, list) else p for p in d.planes],
        base=d.base)
    assert d.striped and not TensorDesc("Y", (2, 2), "int8", [(0, 0)], base=0).striped


def _package(inputs=(), outputs=(), params=P):
    return Package(name="layout", params=params, queues={}, inputs=list(inputs),
                   outputs=list(outputs), predicted_cycles=1)


def test_striped_packages_are_format_2_and_load():
    pkg = _package(inputs=[_striped()])
    blob = pkg.to_bytes()
    assert struct.unpack_from("<I", blob, 8)[0] == 2 == pkg.format_version
    back = Package.from_bytes(blob)
    assert back.to_bytes() == blob and back.inputs[0].layout == pkg.inputs[0].layout


def test_single_bank_packages_stay_format_1():
    pkg = compile_matmul(P, 3, 5, 7)
    blob = pkg.to_bytes()
    assert struct.unpack_from("<I", blob, 8)[0] == 1
    assert all(not t.striped for t in pkg.inputs + pkg.outputs)
    assert Package.from_bytes(blob).to_bytes() == blob


def test_format_1_with_a_striped_plane_is_rejected():
    blob = _package(inputs=[_striped()]).to_bytes()
    payload = blob[package._HEADER.size:-4]
    bad = (package._HEADER.pack(package.MAGIC, 1, len(payload)) + payload
           + struct.pack("<I", __import__("zlib").crc32(payload)))
    with pytest.raises(PackageError, match=r'inputs\[0\]\["planes"\]\[0\]: a striped byte plane '
                                           r'needs package format version 2, the package says 1'):
        Package.from_bytes(bad)


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.planes.__setitem__(0, [(0, 0, 0, 1), (1, 0, 60, 1), (2, 1, 0, 2)]),
     r"tensor 'X': words \[60, 70\) of byte plane 0 stripe 1 \(MEM slice 1, bank 0\) do not fit"),
    (lambda d: d.planes.__setitem__(1, [(3, 1, 10, 0)]), r"stride 0 \(base >= 0, stride >= 1\)"),
    (lambda d: d.planes.__setitem__(1, [(8, 1, 10, 1)]), r"MEM slice 8 does not exist"),
    (lambda d: d.planes.__setitem__(1, [(3, 1, 10)]), r"byte plane 1 is neither"),
    (lambda d: d.planes.__setitem__(1, []), r"byte plane 1 is neither"),
    (lambda d: d.planes.__setitem__(1, [(3, 1, 0, 1)] * 31), r"31 stripes for 30 word"),
    (lambda d: d.planes.__setitem__(1, [(0, 0, 1, 1)]),
     r"tensor 'X' uses word 1 of MEM slice 0 bank 0 twice \(byte plane 1\)"),
    (lambda d: d.planes.__setitem__(2, [(0, 1, 0, 3), (0, 1, 1, 3), (0, 1, 1, 3)]),
     r"tensor 'X' uses word 1 of MEM slice 0 bank 1 twice"),
])
def test_bad_layouts_are_rejected_naming_the_tensor(mutate, message):
    d = _striped()
    mutate(d)
    with pytest.raises(PackageError, match=message):
        _package(inputs=[d]).validate()


def test_two_tensors_on_one_word_and_a_constant_under_a_tensor():
    x = _striped()
    y = TensorDesc("Y", (2, 8), "int8", [[(2, 1, 7, 1)]])       # words 7, 8: X has 2, 4, 6..
    with pytest.raises(PackageError, match=r"tensors 'X' and 'Y' both use word 8 of MEM slice 2 "
                                           r"bank 1"):
        _package(inputs=[x], outputs=[y]).validate()
    pkg = _package(inputs=[x])
    pkg.mem_image = [(3, P.mem_words + 12, bytes(P.vl))]       # bank 1 word 12: X plane 1
    with pytest.raises(PackageError, match=r"tensor 'X' and the constant MEM image both use word "
                                           r"12 of MEM slice 3 bank 1"):
        pkg.validate()


@pytest.mark.parametrize("dtype, transposed", [("int32", False), ("int8", True)])
def test_striped_tensor_round_trip_through_the_model_mem(dtype, transposed):
    """input_writes into the model's MEM, output_reads of the same layout back: the tensor."""
    rng = np.random.default_rng(7)
    d = _striped(dtype=dtype, shape=(20, 10) if transposed else (10, 20), transposed=transposed)
    bits = 8 * package.DTYPES[dtype]
    x = rng.integers(-(1 << (bits - 1)), 1 << (bits - 1), size=d.shape, dtype=np.int64)
    x[0, :3] = [-(1 << (bits - 1)), (1 << (bits - 1)) - 1, 0]
    be = ModelBackend(P)
    be.write_many(image.input_writes(_package(inputs=[d]), {"X": x}))
    out = _package(outputs=[d])
    got = image.assemble_outputs(out, be.read_many(image.output_reads(out)))["X"]
    np.testing.assert_array_equal(got, x)
    # each word is where the layout says: stored row r, tile j of plane b at locate(b, j*R + r)
    s = x.T if transposed else x
    u = s & ((1 << bits) - 1)
    for b in range(package.DTYPES[dtype]):
        for w in (0, 1, 2, 13, 29):
            r, j = w % s.shape[0], w // s.shape[0]
            sl, bank, word = d.locate(b, w)
            single = TensorDesc("W", (1, P.vl), "int8", [(sl, bank)], base=word)
            one = _package(outputs=[single])
            lane = image.assemble_outputs(one, be.read_many(image.output_reads(one)))["W"][0]
            want = np.zeros(P.vl, dtype=np.int64)
            cols = s.shape[1] - j * P.vl
            want[:min(P.vl, cols)] = (u[r, j * P.vl:(j + 1) * P.vl] >> (8 * b)) & 0xFF
            np.testing.assert_array_equal(lane.astype(np.int64) & 0xFF, want)
