"""Packages of every preset load back as they were saved, including the optional parameter
fields (the VXM ALU counts of ``mini_lite`` and ``base``), which the strict loader checks."""

import json
import struct
import zlib

import pytest

from openlpu.firmware import package
from openlpu.firmware.compiler import compile_matmul
from openlpu.firmware.package import Package, PackageError
from openlpu.params import PRESETS, LpuParams, preset


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_round_trips(name):
    p = preset(name)
    pkg = compile_matmul(p, 2, 3, 2)
    back = Package.from_bytes(pkg.to_bytes())
    assert back.params == p and back.to_bytes() == pkg.to_bytes()


def _blob(d) -> bytes:
    payload = json.dumps(d, sort_keys=True).encode()
    return (package._HEADER.pack(package.MAGIC, package.FORMAT_VERSION, len(payload)) + payload
            + struct.pack("<I", zlib.crc32(payload)))


@pytest.mark.parametrize("value,ok", [(1, True), (None, True), (1.5, False), ("1", False),
                                      (True, False), (-1, False)])
def test_optional_alu_count_is_checked(value, ok):
    d = compile_matmul(preset("base"), 2, 3, 2).to_dict()
    d["params"]["vxm_fx_alus"] = value
    if ok:                              # a valid parameter set: its config id goes with it
        d["config_id"] = LpuParams.from_dict(d["params"]).config_id
        assert Package.from_bytes(_blob(d)).params.vxm_fx_alus == value
    else:
        with pytest.raises(PackageError, match=r"params\.vxm_fx_alus|params\[.vxm_fx_alus.\]"):
            Package.from_bytes(_blob(d))
