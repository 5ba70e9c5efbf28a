"""Safe, torch-free reader for PyTorch checkpoint files (``torch.save`` output, ``.pt`` / ``.pth``).

Weight files come from strangers, so they are never unpickled unrestricted: the unpickler resolves
only a fixed allow-list of globals (``collections.OrderedDict``, the ``torch._utils._rebuild_*``
tensor/parameter rebuild functions, the ``torch.*Storage`` dtype markers and a few inert
constructors), each mapped to a local stand-in. Nothing from torch is imported, and any other
global (``os.system``, ``builtins.eval``, ``subprocess.Popen``, ...) aborts the load with
:class:`UnsafeCheckpointError` before anything is called.

Supported layouts (see ``torch/serialization.py``):

* zip format (torch >= 1.6 default): ``<any folder>/data.pkl`` holds the pickle, whose persistent
  ids ``('storage', storage_type, key, location, numel)`` refer to the raw little-endian (or per the
  ``byteorder`` record) storages in ``<folder>/data/<key>``. Members are normally stored
  uncompressed and are read straight from the file into numpy buffers.
* legacy format (``_use_new_zipfile_serialization=False`` / torch < 1.6): pickled magic number,
  protocol version, sys_info; the object pickle with persistent ids
  ``('storage', storage_type, root_key, location, numel, view_metadata)``; the pickled list of
  storage keys; then per key an int64 element count followed by the raw bytes.

The very old tar format (torch <= 0.3) and TorchScript archives are rejected with
:class:`CheckpointFormatError`.

Tensors become numpy arrays (storage offset, sizes and strides honoured); bfloat16 is widened to
float32, every other dtype keeps its numpy equivalent.
"""
from __future__ import annotations

import io
import os
import pickle
import re
import struct
import tarfile
import zipfile
import zlib
from collections import OrderedDict
from typing import Any, BinaryIO

import numpy as np

__all__ = [
    "CheckpointFormatError",
    "UnsafeCheckpointError",
    "load_pt_state_dict",
    "load_pt_object",
]

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER
PROTOCOL_VERSION = 1001  # torch.serialization.PROTOCOL_VERSION

# Keys under which training scripts commonly nest the actual state dict.
STATE_DICT_KEYS = ("state_dict", "model", "params", "net")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


class _OneLineError(ValueError):
    """Messages are collapsed to one line (they may quote names taken from the file)."""

    def __init__(self, message: str) -> None:
        super().__init__(_one_line(message))


class CheckpointFormatError(_OneLineError):
    """The file is not a (supported) torch checkpoint or is corrupt."""


class UnsafeCheckpointError(_OneLineError):
    """The checkpoint's pickle references a global outside the allow-list."""


# ---------------------------------------------------------------------------------------------
# Stand-ins for the torch objects a checkpoint pickle may reference
# ---------------------------------------------------------------------------------------------

class _Inert:
    """Base for stand-ins: refuses pickle BUILD (``__setstate__``) so a crafted pickle cannot
    overwrite their fields."""

    __slots__ = ()

    def __setstate__(self, state):  # pragma: no cover - exercised via the unpickler
        raise CheckpointFormatError(f"unexpected BUILD on {type(self).__name__}")


class _StorageType(_Inert):
    """Stand-in for ``torch.FloatStorage`` & co: carries the element dtype only."""

    __slots__ = ("name", "dtype")

    def __init__(self, name: str, dtype: np.dtype) -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "dtype", dtype)

    def __call__(self, *args, **kwargs):
        raise CheckpointFormatError(f"storage type {self.name} may not be called")

    def __repr__(self) -> str:
        return f"_StorageType({self.name})"


# numpy dtype of one storage element; bfloat16 is read as uint16 and widened later.
_BF16 = "bfloat16"
_STORAGE_DTYPES: dict[str, Any] = {
    "DoubleStorage": np.dtype("<f8"),
    "FloatStorage": np.dtype("<f4"),
    "HalfStorage": np.dtype("<f2"),
    "BFloat16Storage": _BF16,
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
    "ComplexFloatStorage": np.dtype("<c8"),
    "ComplexDoubleStorage": np.dtype("<c16"),
}


def _raw_dtype(dtype) -> np.dtype:
    """Little-endian on-disk element dtype (bfloat16 -> uint16 bit pattern)."""
    return np.dtype("<u2") if dtype is _BF16 else dtype


class _Storage(_Inert):
    """A (possibly view of a) storage referenced by persistent id; data is read after unpickling."""

    __slots__ = ("key", "dtype", "numel", "offset")

    def __init__(self, key: str, dtype, numel: int, offset: int = 0) -> None:
        object.__setattr__(self, "key", key)        # root storage key
        object.__setattr__(self, "dtype", dtype)
        object.__setattr__(self, "numel", numel)    # elements visible through this storage
        object.__setattr__(self, "offset", offset)  # element offset into the root storage


class _TensorRef(_Inert):
    """Result of a tensor rebuild during unpickling: metadata only, materialised later."""

    __slots__ = ("storage", "offset", "size", "stride", "negate")

    def __init__(self, storage: _Storage, offset: int, size: tuple, stride: tuple,
                 negate: bool = False) -> None:
        object.__setattr__(self, "storage", storage)
        object.__setattr__(self, "offset", offset)
        object.__setattr__(self, "size", size)
        object.__setattr__(self, "stride", stride)
        object.__setattr__(self, "negate", negate)


def _as_int_tuple(value, what: str) -> tuple:
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value,)
    if not isinstance(value, (tuple, list)) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise CheckpointFormatError(f"tensor {what} must be a tuple of ints, got {value!r:.80}")
    return tuple(value)


def _rebuild_tensor(storage, storage_offset, size, stride) -> _TensorRef:
    if not isinstance(storage, _Storage):
        raise CheckpointFormatError(f"tensor rebuilt from a non-storage object {type(storage).__name__}")
    if not isinstance(storage_offset, int) or isinstance(storage_offset, bool):
        raise CheckpointFormatError("tensor storage offset must be an int")
    size = _as_int_tuple(size, "size")
    stride = _as_int_tuple(stride, "stride")
    if len(size) != len(stride):
        raise CheckpointFormatError(f"tensor size {size} and stride {stride} differ in rank")
    if storage_offset < 0 or any(s < 0 for s in size) or any(s < 0 for s in stride):
        raise CheckpointFormatError(f"negative tensor offset/size/stride {storage_offset} {size} {stride}")
    if all(s > 0 for s in size):
        last = storage_offset + sum((n - 1) * st for n, st in zip(size, stride))
        if last >= storage.numel:
            raise CheckpointFormatError(
                f"tensor (offset {storage_offset}, size {size}, stride {stride}) exceeds its storage "
                f"of {storage.numel} elements")
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                       backward_hooks=None, metadata=None) -> _TensorRef:
    ref = _rebuild_tensor(storage, storage_offset, size, stride)
    if isinstance(metadata, dict) and metadata.get("neg"):
        object.__setattr__(ref, "negate", True)  # torch "neg bit" view; 'conj' is a no-op for reals
    return ref


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    if not isinstance(data, _TensorRef):
        raise CheckpointFormatError("parameter rebuilt from a non-tensor object")
    return data


def _rebuild_parameter_with_state(data, requires_grad=False, backward_hooks=None, state=None):
    return _rebuild_parameter(data)


class _TypeMarker(_Inert):
    """Stand-in for ``torch.Tensor`` / ``torch.nn.parameter.Parameter`` (class objects)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        object.__setattr__(self, "name", name)

    def __call__(self, data=None, requires_grad=True):
        # Parameter(data, requires_grad) is data with a flag; anything else is unexpected.
        if isinstance(data, _TensorRef):
            return data
        raise CheckpointFormatError(f"{self.name} may only wrap a tensor")


_TENSOR = _TypeMarker("torch.Tensor")
_PARAMETER = _TypeMarker("torch.nn.parameter.Parameter")
_REBUILD_FUNCS = (_rebuild_tensor, _rebuild_tensor_v2, _rebuild_parameter, _rebuild_parameter_with_state)


def _rebuild_from_type_v2(func, new_type, args, state):
    """``torch._tensor._rebuild_from_type_v2``: only for plain Tensor/Parameter and our rebuilders."""
    if func not in _REBUILD_FUNCS and func is not _PARAMETER:
        raise CheckpointFormatError("_rebuild_from_type_v2 with an unexpected rebuild function")
    if new_type is not _TENSOR and new_type is not _PARAMETER:
        raise CheckpointFormatError("_rebuild_from_type_v2 with an unexpected tensor subclass")
    if not isinstance(args, tuple):
        raise CheckpointFormatError("_rebuild_from_type_v2 arguments must be a tuple")
    return func(*args)


def _torch_size(values=()):
    return _as_int_tuple(tuple(values), "Size")


def _codecs_encode(text, encoding="latin1", errors="strict"):
    """``_codecs.encode`` as emitted by protocol-2 pickles of ``bytes``: latin-1 only."""
    if not isinstance(text, str) or str(encoding).lower().replace("-", "") not in ("latin1", "iso88591"):
        raise CheckpointFormatError("_codecs.encode is only allowed as latin-1 bytes encoding")
    return text.encode("latin-1")


def _build_allowed_globals() -> dict[tuple[str, str], Any]:
    allowed: dict[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): OrderedDict,
        ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
        ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
        ("torch.tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,  # pre-1.8 module name
        ("torch", "Tensor"): _TENSOR,
        ("torch._tensor", "Tensor"): _TENSOR,
        ("torch.nn.parameter", "Parameter"): _PARAMETER,
        ("torch", "Size"): _torch_size,
        ("_codecs", "encode"): _codecs_encode,
        ("torch", "UntypedStorage"): _StorageType("UntypedStorage", np.dtype("u1")),
        ("torch.storage", "UntypedStorage"): _StorageType("UntypedStorage", np.dtype("u1")),
    }
    for name, dtype in _STORAGE_DTYPES.items():
        for module in ("torch", "torch.cuda"):  # old GPU checkpoints pickle torch.cuda.FloatStorage
            allowed[(module, name)] = _StorageType(name, dtype)
    return allowed


_ALLOWED_GLOBALS = _build_allowed_globals()


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler whose only reachable globals are the stand-ins above."""

    def __init__(self, file: BinaryIO, path: str, persistent_load=None) -> None:
        super().__init__(file, encoding="utf-8")
        self._path = path
        self._persistent = persistent_load

    def find_class(self, module: str, name: str):
        obj = _ALLOWED_GLOBALS.get((module, name))
        if obj is None:
            raise UnsafeCheckpointError(_one_line(
                f"refusing to load {self._path}: its pickle references the forbidden global "
                f"{module}.{name} (only tensor/storage rebuild functions and collections.OrderedDict "
                f"are allowed)"))
        return obj

    def persistent_load(self, pid):
        if self._persistent is None:
            raise CheckpointFormatError(f"unexpected persistent id in {self._path}")
        return self._persistent(pid)


def _unpickle(file: BinaryIO, path: str, persistent_load=None):
    try:
        return _RestrictedUnpickler(file, path, persistent_load).load()
    except UnsafeCheckpointError:
        raise
    except CheckpointFormatError as exc:  # raised by a stand-in, which does not know the file
        if str(exc).startswith(path):
            raise
        raise CheckpointFormatError(_one_line(f"{path}: {exc}")) from None
    except RecursionError:
        raise CheckpointFormatError(f"{path}: pickle nesting too deep") from None
    except Exception as exc:  # corrupt / crafted pickle: pickle.UnpicklingError, EOFError, TypeError...
        raise CheckpointFormatError(_one_line(
            f"{path} is not a readable torch checkpoint: {type(exc).__name__}: {exc}")) from None


def _decode(value):
    """Protocol-2 pickles from Python 2 may hold ``bytes`` for internal strings."""
    return value.decode("ascii", errors="backslashreplace") if isinstance(value, bytes) else value


def _same_dtype(a, b) -> bool:
    return a is b or (not isinstance(a, str) and not isinstance(b, str) and a == b)


# ---------------------------------------------------------------------------------------------
# Container handling
# ---------------------------------------------------------------------------------------------

def _is_tensor_dict(obj) -> bool:
    return isinstance(obj, dict) and len(obj) > 0 and all(
        isinstance(v, _TensorRef) for v in obj.values())


def _select_state_dict(obj, path: str) -> "OrderedDict[str, _TensorRef]":
    """Unwrap {'state_dict'|'model'|'params'|'net': {...}} (repeatedly) and strip 'module.'."""
    for _ in range(8):
        if not isinstance(obj, dict) or _is_tensor_dict(obj):
            break
        candidates = [obj[k] for k in STATE_DICT_KEYS if isinstance(obj.get(k), dict)]
        if not candidates:
            break
        obj = next((c for c in candidates if _is_tensor_dict(c)), candidates[0])
    if not isinstance(obj, dict):
        raise CheckpointFormatError(
            f"{path}: checkpoint holds a {type(obj).__name__}, not a state dict of tensors")
    for key, value in obj.items():
        if not isinstance(key, str):
            raise CheckpointFormatError(f"{path}: state dict key {key!r:.60} is not a string")
        if not isinstance(value, _TensorRef):
            raise CheckpointFormatError(_one_line(
                f"{path}: entry {key!r:.80} is a {type(value).__name__}, not a tensor (nested state "
                f"dicts are looked for under {', '.join(STATE_DICT_KEYS)})"))
    items = list(obj.items())
    if items and all(k.startswith("module.") for k, _ in items):
        items = [(k[len("module."):], v) for k, v in items]
    return OrderedDict(items)


def _iter_tensor_refs(obj, depth: int = 0):
    if depth > 64:
        return
    if isinstance(obj, _TensorRef):
        yield obj
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from _iter_tensor_refs(value, depth + 1)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            yield from _iter_tensor_refs(value, depth + 1)


def _replace_refs(obj, arrays: dict[int, np.ndarray], used: set[int] | None = None, depth: int = 0):
    """Rebuild ``obj`` with tensor refs replaced by arrays; a tensor object pickled twice (pickle
    memo) yields independent copies."""
    used = set() if used is None else used
    if depth > 64:
        return obj
    if isinstance(obj, _TensorRef):
        arr = arrays[id(obj)]
        if id(obj) in used:
            return arr.copy()
        used.add(id(obj))
        return arr
    if isinstance(obj, OrderedDict):
        return OrderedDict((k, _replace_refs(v, arrays, used, depth + 1)) for k, v in obj.items())
    if isinstance(obj, dict):
        return {k: _replace_refs(v, arrays, used, depth + 1) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_replace_refs(v, arrays, used, depth + 1) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_replace_refs(v, arrays, used, depth + 1) for v in obj)
    return obj


# ---------------------------------------------------------------------------------------------
# Tensor materialisation
# ---------------------------------------------------------------------------------------------

def _materialize(refs: list[_TensorRef], storages: dict[str, np.ndarray]) -> dict[int, np.ndarray]:
    """One independent, native-endian numpy array per tensor ref.

    ``storages`` maps root storage keys to freshly allocated typed buffers (on-disk byte order,
    bfloat16 as uint16). A tensor that is the only user of its storage and covers it contiguously
    is a reshape of the buffer; any other tensor is an ``as_strided`` view of it, copied.
    """
    users: dict[str, int] = {}
    for ref in refs:
        users[ref.storage.key] = users.get(ref.storage.key, 0) + 1
    out: dict[int, np.ndarray] = {}
    for ref in refs:
        if id(ref) in out:
            continue
        root = storages[ref.storage.key]
        start = ref.storage.offset + ref.offset
        size, stride = ref.size, ref.stride
        numel = 1
        for n in size:
            numel *= n
        expected, contiguous = 1, True
        for n, st in zip(reversed(size), reversed(stride)):
            contiguous &= n == 1 or st == expected
            expected *= n
        if numel == 0:
            arr = np.empty(size, dtype=root.dtype)
        elif contiguous and start == 0 and numel == root.size and users[ref.storage.key] == 1:
            arr = root.reshape(size)
        else:
            view = np.lib.stride_tricks.as_strided(
                root[start:], shape=size, strides=tuple(st * root.itemsize for st in stride),
                writeable=False)
            arr = np.array(view, copy=True, order="C")
        if ref.storage.dtype is _BF16:
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        elif arr.dtype == np.bool_:
            arr = arr.view(np.uint8) != 0  # normalise bytes other than 0/1
        elif not arr.dtype.isnative:
            arr = arr.astype(arr.dtype.newbyteorder("="))
        if ref.negate:
            arr = np.negative(arr)
        out[id(ref)] = arr
    return out


def _read_into(f: BinaryIO, nbytes: int, path: str) -> np.ndarray:
    buf = np.empty(nbytes, dtype=np.uint8)
    got = f.readinto(memoryview(buf)) if nbytes else 0
    if got != nbytes:
        raise CheckpointFormatError(f"{path}: truncated storage data ({got} of {nbytes} bytes)")
    return buf


# ---------------------------------------------------------------------------------------------
# zip format
# ---------------------------------------------------------------------------------------------

def _zip_prefix(names: list[str], path: str) -> str:
    pkl = [n for n in names if re.fullmatch(r"[^/]+/data\.pkl", n)]
    if len(pkl) != 1:
        if any(n.endswith("/constants.pkl") or n.endswith("/code/") for n in names):
            raise CheckpointFormatError(f"{path} is a TorchScript archive, not a torch.save checkpoint")
        raise CheckpointFormatError(
            f"{path} is a zip archive but not a torch.save checkpoint (expected one '<folder>/data.pkl', "
            f"found {len(pkl)})")
    return pkl[0][: -len("data.pkl")]


def _load_zip(file_path: str, path: str, select) -> Any:
    """``path`` is the name shown in messages, ``file_path`` the one opened."""
    with open(file_path, "rb") as f:
        try:
            zf = zipfile.ZipFile(f)
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise CheckpointFormatError(_one_line(f"{path}: corrupt zip archive: {exc}")) from None
        with zf:
            infos = {i.filename: i for i in zf.infolist()}
            prefix = _zip_prefix(list(infos), path)
            swap = False
            if prefix + "byteorder" in infos:
                order = zf.read(prefix + "byteorder")
                if order not in (b"little", b"big"):
                    raise CheckpointFormatError(f"{path}: unknown byteorder record {order[:16]!r}")
                swap = order == b"big"

            storages: dict[str, _Storage] = {}

            def persistent_load(pid):
                if not isinstance(pid, tuple) or len(pid) != 5 or _decode(pid[0]) != "storage":
                    raise CheckpointFormatError(f"{path}: unexpected persistent id {pid!r:.80}")
                stype, key, _location, numel = pid[1:]
                key = _decode(key)
                if not isinstance(stype, _StorageType) or not isinstance(key, str) \
                        or not isinstance(numel, int) or numel < 0:
                    raise CheckpointFormatError(f"{path}: malformed storage id {pid!r:.80}")
                st = storages.get(key)
                if st is None:
                    st = storages[key] = _Storage(key, stype.dtype, numel)
                elif not _same_dtype(st.dtype, stype.dtype):
                    raise CheckpointFormatError(f"{path}: storage {key!r:.40} used with two dtypes")
                return st

            try:
                pickle_bytes = zf.read(prefix + "data.pkl")
            except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
                raise CheckpointFormatError(_one_line(f"{path}: corrupt zip archive: {exc}")) from None
            obj = _unpickle(io.BytesIO(pickle_bytes), path, persistent_load)
            chosen = select(obj, path)
            refs = list(_iter_tensor_refs(chosen))

            buffers: dict[str, np.ndarray] = {}
            needed = sorted(dict.fromkeys(r.storage.key for r in refs),  # sequential disk reads
                            key=lambda k: infos[f"{prefix}data/{k}"].header_offset
                            if f"{prefix}data/{k}" in infos else -1)
            for key in needed:
                st = storages[key]
                raw = _raw_dtype(st.dtype)
                nbytes = st.numel * raw.itemsize
                name = f"{prefix}data/{key}"
                info = infos.get(name)
                if info is None:
                    if nbytes == 0:
                        buffers[key] = np.empty(0, raw)
                        continue
                    raise CheckpointFormatError(f"{path}: missing storage record {name}")
                if info.file_size < nbytes:
                    raise CheckpointFormatError(
                        f"{path}: storage record {name} has {info.file_size} bytes, expected {nbytes}")
                if info.compress_type == zipfile.ZIP_STORED and not info.flag_bits & 0x1:
                    f.seek(info.header_offset)
                    header = f.read(30)
                    if len(header) != 30 or header[:4] != b"PK\x03\x04":
                        raise CheckpointFormatError(f"{path}: bad local zip header for {name}")
                    name_len, extra_len = struct.unpack("<HH", header[26:30])
                    f.seek(info.header_offset + 30 + name_len + extra_len)
                    buf = _read_into(f, nbytes, path)
                else:  # compressed member (not written by torch, but valid zip): let zipfile inflate
                    try:
                        buf = np.frombuffer(bytearray(zf.read(name)), dtype=np.uint8)[:nbytes]
                    except Exception as exc:
                        raise CheckpointFormatError(_one_line(f"{path}: cannot read {name}: {exc}")) from None
                buffers[key] = buf.view(raw.newbyteorder(">") if swap else raw)
            arrays = _materialize(refs, buffers)
            return _replace_refs(chosen, arrays)


# ---------------------------------------------------------------------------------------------
# legacy format
# ---------------------------------------------------------------------------------------------

def _load_legacy(file_path: str, path: str, select) -> Any:
    file_size = os.path.getsize(file_path)
    with open(file_path, "rb") as f:
        head = f.read(2)
        f.seek(0)
        if len(head) < 2 or head[0] != 0x80:  # pickle protocol >= 2 opcode PROTO
            raise CheckpointFormatError(f"{path} is not a torch checkpoint (neither zip nor pickle format)")
        magic = _unpickle(f, path)
        if magic != MAGIC_NUMBER:
            raise CheckpointFormatError(f"{path} is a pickle file but not a torch checkpoint (bad magic number)")
        version = _unpickle(f, path)
        if version != PROTOCOL_VERSION:
            raise CheckpointFormatError(f"{path}: unsupported torch protocol version {version!r:.40}")
        sys_info = _unpickle(f, path)
        if not isinstance(sys_info, dict):
            raise CheckpointFormatError(f"{path}: malformed sys_info record")

        storages: dict[str, _Storage] = {}   # root key -> root storage
        views: dict[str, _Storage] = {}

        def persistent_load(pid):
            if not isinstance(pid, tuple) or not pid:
                raise CheckpointFormatError(f"{path}: unexpected persistent id {pid!r:.80}")
            typename = _decode(pid[0])
            if typename == "module":
                raise CheckpointFormatError(
                    f"{path} contains a pickled nn.Module, not a state dict (save model.state_dict())")
            if typename != "storage" or len(pid) != 6:
                raise CheckpointFormatError(f"{path}: unexpected persistent id {pid!r:.80}")
            stype, key, _location, numel, view_metadata = pid[1:]
            key = _decode(key)
            if not isinstance(stype, _StorageType) or not isinstance(key, str) or not isinstance(numel, int) \
                    or numel < 0:
                raise CheckpointFormatError(f"{path}: malformed storage id {pid!r:.80}")
            root = storages.get(key)
            if root is None:
                root = storages[key] = _Storage(key, stype.dtype, numel)
            elif not _same_dtype(root.dtype, stype.dtype):
                raise CheckpointFormatError(f"{path}: storage {key!r:.40} used with two dtypes")
            if view_metadata is None:
                return root
            try:
                view_key, offset, view_size = view_metadata
                view_key = _decode(view_key)
                ok = isinstance(offset, int) and isinstance(view_size, int) and 0 <= offset \
                    and 0 <= view_size and offset + view_size <= root.numel
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise CheckpointFormatError(f"{path}: malformed storage view {view_metadata!r:.80}")
            view = views.get(view_key)
            if view is None:
                view = views[view_key] = _Storage(key, root.dtype, view_size, offset)
            return view

        obj = _unpickle(f, path, persistent_load)
        keys = _unpickle(f, path)
        if not isinstance(keys, list):
            raise CheckpointFormatError(f"{path}: malformed storage key list")
        chosen = select(obj, path)
        refs = list(_iter_tensor_refs(chosen))
        needed = {r.storage.key for r in refs}

        buffers: dict[str, np.ndarray] = {}
        for key in keys:
            key = _decode(key)
            st = storages.get(key)
            if st is None:
                raise CheckpointFormatError(f"{path}: storage key {key!r:.40} not referenced by the pickle")
            raw = _raw_dtype(st.dtype)
            count_bytes = f.read(8)
            if len(count_bytes) != 8:
                raise CheckpointFormatError(f"{path}: truncated storage data")
            (count,) = struct.unpack("<q", count_bytes)
            nbytes = count * raw.itemsize
            if count != st.numel:
                raise CheckpointFormatError(
                    f"{path}: storage {key} has {count} elements on disk, expected {st.numel}")
            if f.tell() + nbytes > file_size:
                raise CheckpointFormatError(f"{path}: truncated file (storage {key} incomplete)")
            if key in needed:
                buffers[key] = _read_into(f, nbytes, path).view(raw)
            else:
                f.seek(nbytes, os.SEEK_CUR)
        missing = needed - buffers.keys()
        if missing:
            raise CheckpointFormatError(f"{path}: no data for storage(s) {sorted(missing)[:3]}")
        arrays = _materialize(refs, buffers)
        return _replace_refs(chosen, arrays)


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------

def _dispatch(path, select):
    path = os.fspath(path)
    shown = _one_line(path) if path.isprintable() else repr(path)  # keep messages on one line
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such checkpoint file: {shown}")
    with open(path, "rb") as f:
        head = f.read(4)
    if zipfile.is_zipfile(path):
        return _load_zip(path, shown, select)
    if head == b"PK\x03\x04":
        raise CheckpointFormatError(f"{shown}: corrupt or truncated zip archive (no central directory)")
    if head[:1] != b"\x80" and tarfile.is_tarfile(path):
        raise CheckpointFormatError(
            f"{shown} is a tar archive (the torch<=0.3 checkpoint format is not supported)")
    return _load_legacy(path, shown, select)


def load_pt_state_dict(path: str | os.PathLike) -> "OrderedDict[str, np.ndarray]":
    """Read a ``torch.save``d state dict (zip or legacy format, ``.pt``/``.pth``) without torch.

    Returns an OrderedDict ``key -> numpy array`` in file order. A top-level dict that nests the
    state dict under ``'state_dict'``, ``'model'``, ``'params'`` or ``'net'`` is unwrapped (only the
    tensors of that state dict are read), and a ``'module.'`` prefix shared by every key
    (DataParallel) is removed.

    Raises:
        UnsafeCheckpointError: the pickle references a global outside the allow-list.
        CheckpointFormatError: not a torch checkpoint, corrupt, or not a dict of tensors.
    """
    return _dispatch(path, _select_state_dict)


def load_pt_object(path: str | os.PathLike) -> Any:
    """Read the whole pickled object of a checkpoint with the same restrictions; tensors become
    numpy arrays, containers keep their structure (no unwrapping)."""
    return _dispatch(path, lambda obj, shown: obj)
