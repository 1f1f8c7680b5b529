"""The on-disk cache of generated chip Verilog (``verilator_sim.chip_verilog``)."""

import dataclasses

import pytest

from openlpu.host.backends import verilator_sim
from openlpu.params import preset
from openlpu.rtl import chip


@pytest.fixture
def generated(tmp_path, monkeypatch):
    """Cache in a temporary build folder; generation replaced by a fast stand-in that records
    its calls."""
    monkeypatch.setenv("OPENLPU_BUILD_DIR", str(tmp_path))
    calls = []

    def fake(params):
        calls.append(params)
        return f"module lpu_chip(); // {params.to_json()}\nendmodule\n"
    monkeypatch.setattr(chip, "generate_verilog", fake)
    return calls


def test_generated_once_then_read_from_disk(tmp_path, generated):
    p = preset("tiny")
    first = verilator_sim.chip_verilog(p)
    assert first == chip.generate_verilog(p) and len(generated) == 2
    files = list((tmp_path / "verilog").glob("tiny-*.v"))
    assert len(files) == 1 and files[0].read_text() == first
    files[0].write_text(first + "// from the cache\n")
    assert verilator_sim.chip_verilog(p).endswith("// from the cache\n")
    assert len(generated) == 2


def test_key_follows_params_and_sources(tmp_path, generated, monkeypatch):
    p = preset("tiny")
    verilator_sim.chip_verilog(p)
    verilator_sim.chip_verilog(dataclasses.replace(p, mem_words=32))
    assert len(generated) == 2
    monkeypatch.setattr(verilator_sim, "_rtl_source_digest", lambda: "other sources")
    verilator_sim.chip_verilog(p)
    assert len(generated) == 3
    assert len(list((tmp_path / "verilog").glob("tiny-*.v"))) == 3


def test_digest_covers_rtl_and_shared_definitions():
    d1 = verilator_sim._rtl_source_digest()
    assert d1 == verilator_sim._rtl_source_digest() and len(d1) == 64


def test_concurrent_requests_generate_once(tmp_path, monkeypatch):
    """Two requests for the same entry at once (as two pytest-xdist workers make): the second
    waits on the build lock and reads the first one's result instead of generating again."""
    import threading
    import time as _time
    monkeypatch.setenv("OPENLPU_BUILD_DIR", str(tmp_path))
    calls = []

    def slow(params):
        calls.append(params)
        _time.sleep(0.3)
        return "module lpu_chip();\nendmodule\n"
    monkeypatch.setattr(chip, "generate_verilog", slow)
    p = preset("tiny")
    out = []
    threads = [threading.Thread(target=lambda: out.append(verilator_sim.chip_verilog(p)))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(calls) == 1
    assert out == ["module lpu_chip();\nendmodule\n"] * 2
