"""Program packages: what the compiler emits and the host driver loads.

A package holds the instruction image of every queue, a constant MEM image, descriptors of the
input and output tensors, the parameter set it was built for and the predicted cycle count.

Binary format (little endian)::

    b"OLPUPKG\\0" | u32 format version | u32 payload length | payload (UTF-8 JSON) | u32 CRC-32

:meth:`Package.from_bytes` checks all of it (magic, version, length, checksum, JSON, parameters,
every instruction word, every tensor's placement) and raises :class:`PackageError` naming the
problem; nothing is written to a device before a package has passed these checks.
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from dataclasses import dataclass, field

from openlpu import isa
from openlpu.params import LpuParams, ParamsError

__all__ = ["Package", "TensorDesc", "PackageError", "FORMAT_VERSION", "MAGIC"]

MAGIC = b"OLPUPKG\0"
FORMAT_VERSION = 1
_HEADER = struct.Struct("<8sII")
DTYPES = {"int8": 1, "int32": 4}


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
        return max(1, math.ceil(self.stored_shape[1] / vl))

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
        if self.dtype not in DTYPES:
            raise PackageError(f"{where}: dtype {self.dtype!r} not one of {', '.join(DTYPES)}")
        if len(self.shape) != 2 or min(self.shape) < 1:
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
        p = self.params
        for qname, words in self.queues.items():
            try:
                q = p.queue(qname)
            except ParamsError as e:
                raise PackageError(str(e)) from None
            if len(words) > p.imem_words:
                raise PackageError(f"queue {qname}: {len(words)} words exceed the instruction "
                                   f"memory ({p.imem_words} words)")
            from .asm import check_fields
            for i, w in enumerate(words):
                try:
                    idef, f = isa.decode(int(w))
                    why = isa.unavailable_reason(idef, q.role, p)
                    if why:
                        raise isa.IsaError(why)
                    check_fields(p, idef, f)
                except (isa.IsaError, ValueError) as e:
                    raise PackageError(f"queue {qname} word {i}: {e}") from None
        names = set()
        for t in list(self.inputs) + list(self.outputs):
            if t.name in names:
                raise PackageError(f"tensor name {t.name!r} used twice")
            names.add(t.name)
            t.validate(p)
        for sl, addr, data in self.mem_image:
            if not 0 <= sl < 2 * p.mem_slices or not 0 <= addr < p.mem_addr_words:
                raise PackageError(f"MEM image entry ({sl}, {addr}) out of range")
            if len(data) != p.vl:
                raise PackageError(f"MEM image entry ({sl}, {addr}) has {len(data)} bytes, "
                                   f"not {p.vl}")
        if not isinstance(self.predicted_cycles, int) or self.predicted_cycles < 1:
            raise PackageError(f"predicted cycle count {self.predicted_cycles!r} is not valid")

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
        payload = blob[_HEADER.size:end]
        (crc,) = struct.unpack_from("<I", blob, end)
        if zlib.crc32(payload) != crc:
            raise PackageError("package checksum mismatch: the file is corrupt")
        try:
            d = json.loads(payload)
            params = LpuParams.from_dict(d["params"])
            if params.config_id != d["config_id"]:
                raise PackageError("package parameter set does not match its config id")
            pkg = cls(
                name=str(d["name"]), params=params,
                queues={str(k): [int(w) for w in v] for k, v in d["queues"].items()},
                inputs=[TensorDesc.from_dict(t) for t in d["inputs"]],
                outputs=[TensorDesc.from_dict(t) for t in d["outputs"]],
                predicted_cycles=int(d["predicted_cycles"]),
                mem_image=[(int(sl), int(a), bytes.fromhex(h)) for sl, a, h in d["mem_image"]],
                meta=dict(d.get("meta", {})),
            )
        except PackageError:
            raise
        except (KeyError, TypeError, ValueError) as e:
            raise PackageError(f"package contents malformed: {e!r}") from None
        pkg.validate()
        return pkg
