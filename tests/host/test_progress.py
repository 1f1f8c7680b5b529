"""Progress lines of long steps (host/progress.py) and the cached Verilog path that uses them."""

import threading

import pytest

from openlpu.host import progress


def test_step_prints_start_heartbeat_and_end(capsys, monkeypatch):
    monkeypatch.setenv("OPENLPU_PROGRESS", "1")
    monkeypatch.setenv("OPENLPU_PROGRESS_EVERY", "0.05")
    seen = threading.Event()
    beats = []

    def detail():
        beats.append(1)
        if len(beats) >= 2:
            seen.set()
        return "last log line"

    with progress.step("building thing", detail=detail):
        assert seen.wait(10), "no heartbeat within 10 s"
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "[openlpu] building thing ..."
    assert any(line.startswith("[openlpu] building thing: still running, ")
               and line.endswith("(last log line)") for line in err[1:-1])
    assert err[-1].startswith("[openlpu] building thing: done in ")


def test_step_reports_failure_and_reraises(capsys, monkeypatch):
    monkeypatch.setenv("OPENLPU_PROGRESS", "1")
    with pytest.raises(KeyError):
        with progress.step("failing step"):
            raise KeyError("x")
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith("[openlpu] failing step: failed after ")


def test_cached_and_silenced(capsys, monkeypatch):
    monkeypatch.setenv("OPENLPU_PROGRESS", "1")
    progress.cached("Verilog of preset 'tiny'", "/tmp/x.v")
    assert capsys.readouterr().err == "[openlpu] Verilog of preset 'tiny': cached (/tmp/x.v)\n"
    monkeypatch.setenv("OPENLPU_PROGRESS", "0")
    progress.cached("anything")
    with progress.step("quiet step"):
        pass
    assert capsys.readouterr().err == ""


def test_chip_verilog_says_generated_then_cached(tmp_path, capsys, monkeypatch):
    from openlpu.host.backends import verilator_sim
    from openlpu.params import preset
    from openlpu.rtl import chip
    monkeypatch.setenv("OPENLPU_PROGRESS", "1")
    monkeypatch.setenv("OPENLPU_BUILD_DIR", str(tmp_path))
    # the lines are what is tested, not the Verilog: a fast stand-in for the generator
    monkeypatch.setattr(chip, "generate_verilog", lambda p: "module lpu_chip();\nendmodule\n")
    verilator_sim.chip_verilog(preset("tiny"))
    err = capsys.readouterr().err
    assert "[openlpu] generating the Verilog of preset 'tiny' (VL 8) ..." in err
    assert "generating the Verilog of preset 'tiny' (VL 8): done in " in err
    verilator_sim.chip_verilog(preset("tiny"))
    assert "[openlpu] Verilog of preset 'tiny': cached (" in capsys.readouterr().err
