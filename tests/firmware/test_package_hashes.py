"""Every kernel wrapper compiles the fixed cases of ``tests/firmware/package_hashes.py`` to
byte-identical packages: the sha256 of ``Package.to_bytes()`` recorded before the kernels were
moved onto one chip state (``firmware/chipstate.py``) still matches."""

import json

import pytest

from tests.firmware.package_hashes import CASES, DATA, compile_case, package_hash

_WANT = json.loads(DATA.read_text())


def test_every_case_is_recorded():
    assert sorted(_WANT) == sorted(c[0] for c in CASES)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_package_bytes_unchanged(case):
    cid, kernel, chip, args, kw = case
    pkg = compile_case(kernel, chip, args, kw)
    want = _WANT[cid]
    assert pkg.predicted_cycles == want["predicted_cycles"], cid
    assert package_hash(pkg) == want["sha256"], f"{cid}: package bytes changed"
