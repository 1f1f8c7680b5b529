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

from openlpu import isa
from openlpu.params import LpuParams, ParamsError

__all__ = ["Package", "TensorDesc", "PackageError", "FORMAT_VERSION", "MAGIC",
           "MAX_PREDICTED_CYCLES", "MAX_PAYLOAD_BYTES", "MAX_JSON_DEPTH"]

MAGIC = b"OLPUPKG\0"
FORMAT_VERSION = 1
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
    """Placement of a 2-D tensor in MEM.

    The stored matrix ``S`` is the tensor (or its transpose when ``transposed``), of shape
    ``(R, C)``. Column tile ``j`` (columns ``j*VL ..``) of row ``r`` is the vector word
    ``base + j*R + r`` of every plane; plane ``b`` holds byte ``b`` (little endian) of each
    element. ``planes`` lists ``(global MEM slice, bank)`` per byte plane; ``base`` is the word
    within that bank.
    """
    name: str
    shape: tuple
    dtype: str
    planes: list
    base: int
    transposed: bool = False

    @property
    def stored_shape(self) -> tuple:
        r, c = self.shape
        return (c, r) if self.transposed else (r, c)

    def tiles(self, vl: int) -> int:
        return max(1, -(-self.stored_shape[1] // vl))

    def words(self, vl: int) -> int:
        """Vector words used in each plane."""
        return self.stored_shape[0] * self.tiles(vl)

    def to_dict(self) -> dict:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype,
                "planes": [list(p) for p in self.planes], "base": self.base,
                "transposed": self.transposed}

    @classmethod
    def from_dict(cls, d: dict) -> "TensorDesc":
        return cls(name=str(d["name"]), shape=tuple(int(x) for x in d["shape"]),
                   dtype=str(d["dtype"]), planes=[tuple(int(x) for x in p) for p in d["planes"]],
                   base=int(d["base"]), transposed=bool(d.get("transposed", False)))

    def validate(self, params: LpuParams) -> None:
        where = f"tensor {self.name!r}"
        if not isinstance(self.name, str) or not self.name:
            raise PackageError(f"tensor name {self.name!r} is not a non-empty string")
        seqs = (tuple, list)
        if (not isinstance(self.shape, seqs) or not all(_is_int(x) for x in self.shape)
                or not isinstance(self.planes, seqs)
                or not all(isinstance(p, seqs) and len(p) == 2 and all(_is_int(x) for x in p)
                           for p in self.planes)
                or not _is_int(self.base) or not isinstance(self.transposed, bool)):
            raise PackageError(f"{where}: shape, planes and base must be integers and "
                               f"transposed a bool")
        if self.dtype not in DTYPES:
            raise PackageError(f"{where}: dtype {self.dtype!r} not one of {', '.join(DTYPES)}")
        if len(self.shape) != 2 or min(self.shape) < 1 or max(self.shape) > _MAX_DIM:
            raise PackageError(f"{where}: shape {self.shape} is not a non-empty 2-D shape")
        if len(self.planes) != DTYPES[self.dtype]:
            raise PackageError(f"{where}: {self.dtype} needs {DTYPES[self.dtype]} byte plane(s), "
                               f"got {len(self.planes)}")
        for sl, bank in self.planes:
            if not 0 <= sl < 2 * params.mem_slices:
                raise PackageError(f"{where}: MEM slice {sl} does not exist on preset "
                                   f"{params.name!r}")
            if not 0 <= bank < params.mem_banks:
                raise PackageError(f"{where}: bank {bank} does not exist")
        end = self.base + self.words(params.vl)
        if self.base < 0 or end > params.mem_words:
            raise PackageError(f"{where}: words [{self.base}, {end}) do not fit a bank of "
                               f"{params.mem_words} words")


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

    def to_bytes(self) -> bytes:
        self.validate()
        payload = json.dumps(self.to_dict(), sort_keys=True).encode()
        return (_HEADER.pack(MAGIC, FORMAT_VERSION, len(payload)) + payload
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
        if version != FORMAT_VERSION:
            raise PackageError(f"package format version {version} is not supported "
                               f"(this driver reads version {FORMAT_VERSION})")
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
        pkg = _package_from_dict(cls, d)
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
        if kind is bool:
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


def _tensor(t, path, params) -> TensorDesc:
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
    for i, pl in enumerate(planes):
        _list(pl, _path(pp, i), 2)
        if len(pl) != 2:
            _fail(_path(pp, i), f"a byte plane is 2 integers (MEM slice, bank), not {len(pl)}")
        _int(pl[0], _path(_path(pp, i), 0), 0, 2 * params.mem_slices - 1,
             "MEM slice must be an integer")
        _int(pl[1], _path(_path(pp, i), 1), 0, params.mem_banks - 1, "bank must be an integer")
    base = _int(t["base"], _path(path, "base"), 0, params.mem_words - 1)
    transposed = t.get("transposed", False)
    if not isinstance(transposed, bool):
        _fail(_path(path, "transposed"), f"must be true or false, not {transposed!r:.40}")
    return TensorDesc(name=name, shape=tuple(shape), dtype=dtype,
                      planes=[tuple(pl) for pl in planes], base=base, transposed=transposed)


def _package_from_dict(cls, d) -> "Package":
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
        tensors[key] = [_tensor(t, _path(key, i), params) for i, t in enumerate(lst)]
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
