"""Program packages: what the compiler emits and the host driver loads.

A package holds the instruction image of every queue, a constant MEM image, descriptors of the
input and output tensors, the parameter set it was built for and the predicted cycle count.

Binary format (little endian)::

    b"OLPUPKG\\0" | u32 format version | u32 payload length | payload (UTF-8 JSON) | u32 CRC-32

:meth:`Package.from_bytes` checks all of it (magic, version, length, checksum, JSON, parameters,
every instruction word, every tensor's placement) and raises :class:`PackageError` naming the
problem; nothing is written to a device before a package has passed these checks. It raises
nothing else, whatever the bytes: the payload is parsed strictly (UTF-8, no ``NaN`` /
``Infinity``, no non-finite numbers, no duplicate keys, at most :data:`MAX_JSON_DEPTH` levels
of nesting, at most :data:`MAX_PAYLOAD_BYTES`) and checked against a schema (exact key sets,
``int`` where an integer is meant and never a ``bool`` or a float, bounded sizes) before any
of it is used; the error names the field path, e.g. ``queues["mem_w0.read"][3]: instruction
word must be an integer, not 1.5``. The instruction images are checked by
:func:`openlpu.isa.check_queue`: a package that loads raises no ``BAD_INSTRUCTION`` or
``ADDR_RANGE`` for a reason of an instruction's fields.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import struct
import zlib
from dataclasses import dataclass, field

import numpy as np

from openlpu import isa
from openlpu.params import LpuParams, ParamsError

__all__ = ["Package", "TensorDesc", "PackageError", "FORMAT_VERSION", "FORMAT_VERSIONS",
           "MAGIC", "MAX_PREDICTED_CYCLES", "MAX_PAYLOAD_BYTES", "MAX_JSON_DEPTH", "MAX_STRIPES",
           "check_overlaps"]

MAGIC = b"OLPUPKG\0"
#: Format version written for a package with a striped tensor; one without is written as
#: version 1 (byte-identical to what drivers before tensor layouts write and read).
FORMAT_VERSION = 2
#: Versions this loader reads: 1 (every plane is ``(slice, bank)``) and 2 (planes may be striped).
FORMAT_VERSIONS = (1, 2)
#: Most stripes in one byte plane of a tensor.
MAX_STRIPES = 256
_HEADER = struct.Struct("<8sII")
DTYPES = {"int8": 1, "int32": 4}

#: Largest predicted cycle count a package may claim: what the 32-bit CYCLES register holds.
MAX_PREDICTED_CYCLES = 2**32 - 1
#: Largest JSON payload accepted (a full default-preset package is about 0.3 MB).
MAX_PAYLOAD_BYTES = 16 << 20
#: Deepest nesting of JSON arrays and objects accepted (a package needs 4; ``meta`` may nest).
MAX_JSON_DEPTH = 8
_MAX_NAME = 256                # characters of a package or tensor name
_MAX_TENSORS = 256             # inputs + outputs
_MAX_DIM = 2**31 - 1           # a tensor dimension


class PackageError(ValueError):
    """A program package is malformed, corrupt, or does not fit the target."""


@dataclass
class TensorDesc:
    """Placement of a 2-D tensor in MEM: a layout of byte planes, each striped over MEM banks.

    The stored matrix ``S`` is the tensor (or its transpose when ``transposed``), of shape
    ``(R, C)``. Column tile ``j`` (columns ``j*VL ..``) of row ``r`` is the stored vector word
    ``w = j*R + r``; byte plane ``b`` holds byte ``b`` (little endian) of each element.

    ``planes`` gives one entry per byte plane, in either of two forms:

    * ``(slice, bank)``: the plane is dense in one bank, word ``w`` at ``base + w`` (the original
      form; ``base`` is used only by planes of this form);
    * a list of stripes ``[(slice, bank, base, stride), ...]``: with ``S`` stripes, word ``w``
      lives in stripe ``w % S``, at word ``base + (w // S) * stride`` of that stripe's bank
      (``stride`` 1: dense). Consecutive words then come from different banks, usually of
      different slices, so each slice can feed its own stream.

    ``slice`` is a global MEM slice number (``LpuParams.mem_slice_list``), ``bank`` a bank of it,
    and words count within the bank. :attr:`layout` gives every plane in the stripe form.
    """
    name: str
    shape: tuple
    dtype: str
    planes: list
    base: int = 0
    transposed: bool = False

    @property
    def stored_shape(self) -> tuple:
        r, c = self.shape
        return (c, r) if self.transposed else (r, c)

    def tiles(self, vl: int) -> int:
        return max(1, -(-self.stored_shape[1] // vl))

    def words(self, vl: int) -> int:
        """Vector words in each byte plane (``R * tiles``)."""
        return self.stored_shape[0] * self.tiles(vl)

    @property
    def striped(self) -> bool:
        """Whether some plane is given in the stripe form (a package of format version 2)."""
        return any(not _is_pair(p) for p in self.planes)

    @property
    def layout(self) -> list:
        """Stripes ``[(slice, bank, base, stride), ...]`` of every byte plane."""
        return [[(p[0], p[1], self.base, 1)] if _is_pair(p) else [tuple(s) for s in p]
                for p in self.planes]

    def locate(self, plane: int, word: int) -> tuple:
        """``(slice, bank, word in bank)`` of stored vector word ``word`` of byte plane ``plane``."""
        stripes = self.layout[plane]
        sl, bank, base, stride = stripes[word % len(stripes)]
        return sl, bank, base + (word // len(stripes)) * stride

    def plane_words(self, plane: int, vl: int) -> list:
        """``(slice, bank, word in bank)`` of every stored word ``0 .. words-1`` of a plane."""
        stripes = self.layout[plane]
        n = len(stripes)
        return [(stripes[w % n][0], stripes[w % n][1],
                 stripes[w % n][2] + (w // n) * stripes[w % n][3]) for w in range(self.words(vl))]

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype,
                "planes": [list(p) if _is_pair(p) else [list(s) for s in p]
                           for p in self.planes],
                "base": self.base, "transposed": self.transposed}

    @classmethod
    def from_dict(cls, d: dict) -> "TensorDesc":
        planes = [tuple(int(x) for x in p) if len(p) == 2 and not isinstance(p[0], (list, tuple))
                  else [tuple(int(x) for x in s) for s in p] for p in d["planes"]]
        return cls(name=str(d["name"]), shape=tuple(int(x) for x in d["shape"]),
                   dtype=str(d["dtype"]), planes=planes, base=int(d.get("base", 0)),
                   transposed=bool(d.get("transposed", False)))

    def validate(self, params: LpuParams) -> None:
        """Check the descriptor against ``params``; raises :class:`PackageError` naming the
        tensor. Overlaps with other tensors are checked by :meth:`Package.validate`."""
        where = f"tensor {self.name!r}"
        if not isinstance(self.name, str) or not self.name:
            raise PackageError(f"tensor name {self.name!r} is not a non-empty string")
        seqs = (tuple, list)
        if (not isinstance(self.shape, seqs) or not all(_is_int(x) for x in self.shape)
                or not isinstance(self.planes, seqs)
                or not _is_int(self.base) or not isinstance(self.transposed, bool)):
            raise PackageError(f"{where}: shape, planes and base must be integers and "
                               f"transposed a bool")
        for i, p in enumerate(self.planes):
            if _is_pair(p):
                continue
            if (not isinstance(p, seqs) or not p or len(p) > MAX_STRIPES
                    or not all(isinstance(s, seqs) and len(s) == 4
                               and all(_is_int(x) for x in s) for s in p)):
                raise PackageError(f"{where}: byte plane {i} is neither (MEM slice, bank) nor a "
                                   f"list of 1..{MAX_STRIPES} stripes (MEM slice, bank, base, "
                                   f"stride)")
        if self.dtype not in DTYPES:
            raise PackageError(f"{where}: dtype {self.dtype!r} not one of {', '.join(DTYPES)}")
        if len(self.shape) != 2 or min(self.shape) < 1 or max(self.shape) > _MAX_DIM:
            raise PackageError(f"{where}: shape {self.shape} is not a non-empty 2-D shape")
        if len(self.planes) != DTYPES[self.dtype]:
            raise PackageError(f"{where}: {self.dtype} needs {DTYPES[self.dtype]} byte plane(s), "
                               f"got {len(self.planes)}")
        if self.base < 0:
            raise PackageError(f"{where}: base {self.base} is negative")
        words = self.words(params.vl)
        for b, stripes in enumerate(self.layout):
            n = len(stripes)
            if n > words:
                raise PackageError(f"{where}: byte plane {b} has {n} stripes for {words} "
                                   f"word(s); every stripe must hold a word")
            for i, (sl, bank, base, stride) in enumerate(stripes):
                if not 0 <= sl < 2 * params.mem_slices:
                    raise PackageError(f"{where}: MEM slice {sl} does not exist on preset "
                                       f"{params.name!r}")
                if not 0 <= bank < params.mem_banks:
                    raise PackageError(f"{where}: bank {bank} does not exist")
                if base < 0 or stride < 1:
                    raise PackageError(f"{where}: byte plane {b} stripe {i} has base {base} and "
                                       f"stride {stride} (base >= 0, stride >= 1)")
                count = -(-(words - i) // n)
                end = base + (count - 1) * stride + 1
                if end > params.mem_words:
                    what = (f"words [{base}, {end})" if stride == 1 else
                            f"{count} words from {base} in steps of {stride} (to {end - 1})")
                    raise PackageError(f"{where}: {what} of byte plane {b}"
                                       f"{f' stripe {i}' if n > 1 else ''} (MEM slice {sl}, "
                                       f"bank {bank}) do not fit a bank of {params.mem_words} "
                                       f"words")

    def _stripe_words(self, params: LpuParams):
        """``(plane, stripe, slice, bank, word indices)`` of every stripe (validated tensors)."""
        words = self.words(params.vl)
        for b, stripes in enumerate(self.layout):
            n = len(stripes)
            for i, (sl, bank, base, stride) in enumerate(stripes):
                count = -(-(words - i) // n)
                yield b, i, sl, bank, base + np.arange(count, dtype=np.int64) * stride


def _is_pair(p) -> bool:
    return isinstance(p, (tuple, list)) and len(p) == 2 and all(_is_int(x) for x in p)


def check_overlaps(params: LpuParams, tensors, mem_image=()) -> None:
    """Raise :class:`PackageError` if two tensors (or two words of one tensor, or a tensor and a
    constant word of the MEM image) use the same MEM word. The tensors must be valid. The work
    is bounded by the MEM size: the first word used twice stops it."""
    owners = {}                                 # (slice, bank) -> tensor index per word, or -1
    for ti, t in enumerate(tensors):
        for b, _, sl, bank, idx in t._stripe_words(params):
            own = owners.setdefault((sl, bank), np.full(params.mem_words, -1, dtype=np.int64))
            hit = np.nonzero(own[idx] >= 0)[0]
            if len(hit):
                word = int(idx[hit[0]])
                other = tensors[own[word]].name
                who = (f"tensor {t.name!r} uses" if own[word] == ti
                       else f"tensors {other!r} and {t.name!r} both use")
                raise PackageError(f"{who} word {word} of MEM slice {sl} bank {bank} twice "
                                   f"(byte plane {b})")
            own[idx] = ti
    for sl, addr, _ in mem_image:
        bank, word = params.mem_bank_of(addr), addr % params.mem_words
        own = owners.get((sl, bank))
        if own is not None and own[word] >= 0:
            raise PackageError(f"tensor {tensors[own[word]].name!r} and the constant MEM image "
                               f"both use word {word} of MEM slice {sl} bank {bank}")


@dataclass
class Package:
    """A compiled program for one parameter set."""
    name: str
    params: LpuParams
    queues: dict                       # queue name -> list of instruction words
    inputs: list                       # TensorDesc
    outputs: list                      # TensorDesc
    predicted_cycles: int
    mem_image: list = field(default_factory=list)   # (global slice, address, [VL bytes])
    meta: dict = field(default_factory=dict)        # e.g. {"macs": ...}

    # -- validation ------------------------------------------------------------------------
    def validate(self) -> None:
        """Check the package against its parameter set; raises :class:`PackageError`."""
        p = self.params
        if not isinstance(p, LpuParams):
            raise PackageError(f"params must be an LpuParams, not {type(p).__name__}")
        if not isinstance(self.name, str) or len(self.name) > _MAX_NAME:
            raise PackageError(f"package name must be a string of at most {_MAX_NAME} "
                               f"characters, not {self.name!r:.80}")
        if not isinstance(self.queues, dict):
            raise PackageError(f"queues must be a dict, not {type(self.queues).__name__}")
        for qname, words in self.queues.items():
            if not isinstance(qname, str):
                raise PackageError(f"queue name {qname!r} is not a string")
            try:
                p.queue(qname)
            except ParamsError as e:
                raise PackageError(str(e)) from None
            try:
                isa.check_queue(p, qname, words)
            except isa.IsaError as e:
                raise PackageError(str(e)) from None
        names = set()
        tensors = list(self.inputs) + list(self.outputs)
        if len(tensors) > _MAX_TENSORS:
            raise PackageError(f"{len(tensors)} tensors, more than {_MAX_TENSORS}")
        for t in tensors:
            if not isinstance(t, TensorDesc):
                raise PackageError(f"tensor {t!r:.80} is not a TensorDesc")
            if t.name in names:
                raise PackageError(f"tensor name {t.name!r} used twice")
            names.add(t.name)
            t.validate(p)
        seen = set()
        for entry in self.mem_image:
            if not isinstance(entry, (tuple, list)) or len(entry) != 3:
                raise PackageError(f"MEM image entry {entry!r:.80} is not (slice, address, data)")
            sl, addr, data = entry
            if not _is_int(sl) or not _is_int(addr):
                raise PackageError(f"MEM image entry ({sl!r}, {addr!r}): slice and address "
                                   f"must be integers")
            if not 0 <= sl < 2 * p.mem_slices or not 0 <= addr < p.mem_addr_words:
                raise PackageError(f"MEM image entry ({sl}, {addr}) out of range")
            if (sl, addr) in seen:
                raise PackageError(f"MEM image entry ({sl}, {addr}) given twice")
            seen.add((sl, addr))
            if not isinstance(data, (bytes, bytearray)) or len(data) != p.vl:
                raise PackageError(f"MEM image entry ({sl}, {addr}) has {len(data)} bytes, "
                                   f"not {p.vl}")
        check_overlaps(p, tensors, self.mem_image)
        if (not _is_int(self.predicted_cycles)
                or not 1 <= self.predicted_cycles <= MAX_PREDICTED_CYCLES):
            raise PackageError(f"predicted cycle count {self.predicted_cycles!r} is not valid "
                               f"(an integer 1..{MAX_PREDICTED_CYCLES}, what CYCLES holds)")

    # -- serialisation ---------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "params": self.params.to_dict(),
            "config_id": self.params.config_id,
            "queues": {k: [int(w) for w in v] for k, v in self.queues.items()},
            "inputs": [t.to_dict() for t in self.inputs],
            "outputs": [t.to_dict() for t in self.outputs],
            "predicted_cycles": self.predicted_cycles,
            "mem_image": [[sl, addr, bytes(data).hex()] for sl, addr, data in self.mem_image],
            "meta": self.meta,
        }

    @property
    def format_version(self) -> int:
        """2 if a tensor has a striped plane, else 1 (what :meth:`to_bytes` writes)."""
        return 2 if any(t.striped for t in list(self.inputs) + list(self.outputs)) else 1

    def to_bytes(self) -> bytes:
        self.validate()
        payload = json.dumps(self.to_dict(), sort_keys=True).encode()
        return (_HEADER.pack(MAGIC, self.format_version, len(payload)) + payload
                + struct.pack("<I", zlib.crc32(payload)))

    def save(self, path) -> None:
        with open(path, "wb") as f:
            f.write(self.to_bytes())

    @classmethod
    def load(cls, path) -> "Package":
        with open(path, "rb") as f:
            return cls.from_bytes(f.read())

    @classmethod
    def from_bytes(cls, blob: bytes) -> "Package":
        if len(blob) < _HEADER.size:
            raise PackageError(f"package truncated: {len(blob)} bytes, header needs {_HEADER.size}")
        magic, version, length = _HEADER.unpack_from(blob)
        if magic != MAGIC:
            raise PackageError(f"not an OpenLPU program package (magic {magic!r})")
        if version not in FORMAT_VERSIONS:
            raise PackageError(f"package format version {version} is not supported "
                               f"(this driver reads versions "
                               f"{', '.join(map(str, FORMAT_VERSIONS))})")
        end = _HEADER.size + length
        if len(blob) < end + 4:
            raise PackageError(f"package truncated: {len(blob)} bytes, expected {end + 4}")
        if len(blob) > end + 4:
            raise PackageError(f"package has {len(blob) - end - 4} trailing bytes")
        if length > MAX_PAYLOAD_BYTES:
            raise PackageError(f"package payload of {length} bytes exceeds "
                               f"{MAX_PAYLOAD_BYTES} bytes")
        payload = blob[_HEADER.size:end]
        (crc,) = struct.unpack_from("<I", blob, end)
        if zlib.crc32(payload) != crc:
            raise PackageError("package checksum mismatch: the file is corrupt")
        d = _parse_json(payload)
        pkg = _package_from_dict(cls, d, version)
        pkg.validate()
        return pkg


# -- strict reading of the payload ------------------------------------------------------------
# Every check below raises PackageError naming the field path ("queues[\"mem_w0.read\"][3]");
# only values that passed them reach LpuParams, TensorDesc and Package.



def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) or (
        type(v).__module__ == "numpy" and hasattr(type(v), "__index__")
        and type(v).__name__ != "bool_")


def _parse_json(payload: bytes):
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as e:
        raise PackageError(f"package payload is not UTF-8: {e}") from None

    def constant(name):
        raise PackageError(f"package payload holds {name}, which is not a number")

    def number(s):
        v = float(s)
        if not math.isfinite(v):
            raise PackageError(f"package payload holds the number {s[:40]}, which is not finite")
        return v

    def pairs(items):
        out = {}
        for k, v in items:
            if k in out:
                raise PackageError(f"package payload has the key {k[:80]!r} twice in one object")
            out[k] = v
        return out
    try:
        d = json.loads(text, parse_constant=constant, parse_float=number,
                       object_pairs_hook=pairs)
    except PackageError:
        raise
    except RecursionError:      # the C scanner's nesting guard (about 1000 levels)
        raise PackageError(f"package payload nests deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as e:     # JSONDecodeError, an integer of too many digits
        raise PackageError(f"package payload is not valid JSON: {e}") from None
    stack = [(d, 1)]            # the depth of what parsed, without recursion
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list)):
            if depth > MAX_JSON_DEPTH:
                raise PackageError(f"package payload nests deeper than {MAX_JSON_DEPTH} levels")
            stack.extend((v, depth + 1) for v in (node.values() if isinstance(node, dict)
                                                  else node))
    return d


def _path(path, key) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}[{json.dumps(key)}]" if path else key


def _fail(path, msg):
    raise PackageError(f"{path}: {msg}")


def _kind(v) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a bool",
            float: "a float", int: "an integer", type(None): "null"}.get(type(v), type(v).__name__)


def _obj(d, path, required, optional=()):
    if not isinstance(d, dict):
        _fail(path, f"must be an object, not {_kind(d)}")
    missing = [k for k in required if k not in d]
    if missing:
        _fail(path, f"missing key(s) {', '.join(map(repr, missing))}")
    extra = [k for k in d if k not in required and k not in optional]
    if extra:
        _fail(path, f"unknown key(s) {', '.join(repr(k[:80]) for k in extra[:5])}")
    return d


def _int(v, path, lo, hi, what="must be an integer"):
    if isinstance(v, bool) or not isinstance(v, int):
        _fail(path, f"{what}, not {_kind(v) if isinstance(v, (bool, dict, list)) else repr(v)[:80]}")
    if not lo <= v <= hi:
        _fail(path, f"{v if abs(v) < 10**20 else 'a huge integer'} out of range [{lo}, {hi}]")
    return v


def _str(v, path, max_len=_MAX_NAME):
    if not isinstance(v, str):
        _fail(path, f"must be a string, not {_kind(v)}")
    if len(v) > max_len:
        _fail(path, f"string of {len(v)} characters, more than {max_len}")
    return v


def _list(v, path, max_len):
    if not isinstance(v, list):
        _fail(path, f"must be an array, not {_kind(v)}")
    if len(v) > max_len:
        _fail(path, f"{len(v)} entries, more than {max_len}")
    return v


def _params(d, path) -> LpuParams:
    fields = {f.name: f for f in dataclasses.fields(LpuParams)}
    optional = set(fields) - {"name", "lanes", "superlanes", "streams", "mem_slices", "mem_banks",
                              "mem_words", "mxm_acc_words", "imem_words", "mxm_pipeline",
                              "vxm_alus", "sxm"}
    _obj(d, path, [f for f in fields if f not in optional], optional)
    for name, f in fields.items():
        if name not in d:
            continue
        kind = type(f.default)
        p = _path(path, name)
        if f.default is None:          # an optional count (``int | None``, e.g. vxm_fx_alus)
            if d[name] is not None:
                _int(d[name], p, 0, 1 << 16, "must be an integer or null")
        elif kind is bool:
            if not isinstance(d[name], bool):
                _fail(p, f"must be true or false, not {_kind(d[name])}")
        elif kind is int:
            _int(d[name], p, 0, 1 << 16)
        else:
            _str(d[name], p)
    try:
        return LpuParams.from_dict(d)
    except ParamsError as e:
        _fail(path, str(e))


def _tensor(t, path, params, version=FORMAT_VERSION) -> TensorDesc:
    _obj(t, path, ("name", "shape", "dtype", "planes", "base"), ("transposed",))
    name = _str(t["name"], _path(path, "name"))
    shape = _list(t["shape"], _path(path, "shape"), 2)
    if len(shape) != 2:
        _fail(_path(path, "shape"), f"must be 2 integers, not {len(shape)}")
    for i, x in enumerate(shape):
        _int(x, _path(_path(path, "shape"), i), 1, _MAX_DIM)
    dtype = _str(t["dtype"], _path(path, "dtype"))
    if dtype not in DTYPES:
        _fail(_path(path, "dtype"), f"{dtype[:20]!r} is not one of {', '.join(DTYPES)}")
    pp = _path(path, "planes")
    planes = _list(t["planes"], pp, 4)
    out = []
    for i, pl in enumerate(planes):
        ip = _path(pp, i)
        _list(pl, ip, MAX_STRIPES)
        if pl and isinstance(pl[0], list):          # stripes (format version 2)
            if version < 2:
                _fail(ip, f"a striped byte plane needs package format version 2, the package "
                          f"says {version}")
            stripes = []
            for k, s in enumerate(pl):
                sp = _path(ip, k)
                _list(s, sp, 4)
                if len(s) != 4:
                    _fail(sp, f"a stripe is 4 integers (MEM slice, bank, base, stride), "
                              f"not {len(s)}")
                stripes.append((
                    _int(s[0], _path(sp, 0), 0, 2 * params.mem_slices - 1,
                         "MEM slice must be an integer"),
                    _int(s[1], _path(sp, 1), 0, params.mem_banks - 1, "bank must be an integer"),
                    _int(s[2], _path(sp, 2), 0, params.mem_words - 1, "base must be an integer"),
                    _int(s[3], _path(sp, 3), 1, params.mem_words, "stride must be an integer")))
            out.append(stripes)
            continue
        if len(pl) != 2:
            _fail(ip, f"a byte plane is 2 integers (MEM slice, bank) or a list of stripes "
                      f"(MEM slice, bank, base, stride), not {len(pl)} entries")
        _int(pl[0], _path(ip, 0), 0, 2 * params.mem_slices - 1, "MEM slice must be an integer")
        _int(pl[1], _path(ip, 1), 0, params.mem_banks - 1, "bank must be an integer")
        out.append(tuple(pl))
    base = _int(t["base"], _path(path, "base"), 0, params.mem_words - 1)
    transposed = t.get("transposed", False)
    if not isinstance(transposed, bool):
        _fail(_path(path, "transposed"), f"must be true or false, not {transposed!r:.40}")
    return TensorDesc(name=name, shape=tuple(shape), dtype=dtype, planes=out, base=base,
                      transposed=transposed)


def _package_from_dict(cls, d, version=FORMAT_VERSION) -> "Package":
    _obj(d, "package", ("name", "params", "config_id", "queues", "inputs", "outputs",
                        "predicted_cycles", "mem_image"), ("meta",))
    name = _str(d["name"], "name")
    params = _params(d["params"], "params")
    config_id = _int(d["config_id"], "config_id", 0, 2**32 - 1)
    if params.config_id != config_id:
        raise PackageError(f"package parameter set does not match its config id "
                           f"(0x{config_id:08x}; the parameters give 0x{params.config_id:08x})")
    queues = _obj(d["queues"], "queues", (), [q.name for q in params.queues])
    for qname, words in queues.items():
        qp = _path("queues", qname)
        _list(words, qp, params.imem_words)
        for i, w in enumerate(words):
            _int(w, _path(qp, i), 0, 2**isa.INSTR_BITS - 1, "instruction word must be an integer")
    tensors = {}
    for key in ("inputs", "outputs"):
        lst = _list(d[key], key, _MAX_TENSORS)
        tensors[key] = [_tensor(t, _path(key, i), params, version)
                        for i, t in enumerate(lst)]
    cycles = _int(d["predicted_cycles"], "predicted_cycles", 1, MAX_PREDICTED_CYCLES,
                  "must be an integer (cycles)")
    image = []
    lst = _list(d["mem_image"], "mem_image", 2 * params.mem_slices * params.mem_addr_words)
    for i, e in enumerate(lst):
        ep = _path("mem_image", i)
        _list(e, ep, 3)
        if len(e) != 3:
            _fail(ep, f"must be [MEM slice, address, hex bytes], not {len(e)} entries")
        sl = _int(e[0], _path(ep, 0), 0, 2 * params.mem_slices - 1, "MEM slice must be an integer")
        addr = _int(e[1], _path(ep, 1), 0, params.mem_addr_words - 1, "address must be an integer")
        h = _str(e[2], _path(ep, 2), 2 * params.vl)
        if len(h) != 2 * params.vl or not re.fullmatch(r"[0-9a-fA-F]*", h):
            _fail(_path(ep, 2), f"must be {params.vl} bytes as {2 * params.vl} hex digits")
        image.append((sl, addr, bytes.fromhex(h)))
    meta = d.get("meta", {})
    if not isinstance(meta, dict):
        _fail("meta", f"must be an object, not {_kind(meta)}")
    return cls(name=name, params=params, queues={k: list(v) for k, v in queues.items()},
               inputs=tensors["inputs"], outputs=tensors["outputs"], predicted_cycles=cycles,
               mem_image=image, meta=meta)
