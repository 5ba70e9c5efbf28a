"""Tests for src/pt_reader.py: a torch-free, restricted reader of torch.save checkpoints.

These tests do not need torch: they use the committed fixtures (tests/fixtures/*.pt, *.pth,
expected_pt.npz, written by tests/fixtures/make_pt_fixtures.py) and files crafted here with a small
torch-free writer of both checkpoint layouts. Comparisons against torch itself run only when torch
is importable.
"""
from __future__ import annotations

import io
import os
import pickle
import re
import struct
import subprocess
import sys
import tarfile
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

from src.pt_reader import (
    CheckpointFormatError,
    UnsafeCheckpointError,
    load_pt_object,
    load_pt_state_dict,
)

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
SHARED = REPO / ".." / "shared" / "ipt_reference"
SMALL_PT = SHARED / "small_pretrain6.pt"
PRETRAIN6_LIST = SHARED / "state_dict_pretrain6.txt"
FIXTURE_MARKER = Path("/tmp/ipt_pt_reader_malicious_fixture_marker")  # see make_pt_fixtures.py

STATE_DICT_FIXTURES = ["sd_zip.pt", "sd_legacy.pt", "sd_bytesio_zip.pt", "nested_zip.pth", "nested_legacy.pth"]


@pytest.fixture(scope="module")
def expected():
    with np.load(FIXTURES / "expected_pt.npz") as data:
        return OrderedDict((k, data[k]) for k in data.files)


def assert_one_line(exc: BaseException, *needles: str) -> None:
    msg = str(exc)
    assert msg and "\n" not in msg, msg
    for needle in needles:
        assert needle in msg, (needle, msg)


# ---------------------------------------------------------------------------------------------
# A tiny torch-free writer of both layouts, to craft edge cases (and evil files)
# ---------------------------------------------------------------------------------------------

class G:
    """A global reference written as GLOBAL module\\nname (never resolved here)."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name

    def __call__(self, *args):  # pickle insists that a reduce function is callable
        raise AssertionError("not to be called")


class Store:
    """A storage: flat numpy array + torch storage type name (+ legacy view metadata)."""

    def __init__(self, arr: np.ndarray, type_name: str, view=None, key: str | None = None) -> None:
        self.arr, self.type_name, self.view = np.ascontiguousarray(arr).ravel(), type_name, view
        self.key = key  # force a storage key (legacy views share their root's key)


class T:
    """A tensor as torch pickles it: _rebuild_tensor_v2(storage, offset, size, stride, ...)."""

    def __init__(self, store: Store, offset: int, size, stride, func=("torch._utils", "_rebuild_tensor_v2")):
        self.store, self.offset, self.size, self.stride, self.func = store, offset, size, stride, func

    def __reduce__(self):
        if self.func[1] == "_rebuild_tensor_v2":
            args = (self.store, self.offset, tuple(self.size), tuple(self.stride), False, OrderedDict())
        else:
            args = (self.store, self.offset, tuple(self.size), tuple(self.stride))
        return G(*self.func), args


class Call:
    """Pickles as func(*args) for an arbitrary global: the evil part."""

    def __init__(self, module: str, name: str, *args) -> None:
        self.func, self.args = G(module, name), args

    def __reduce__(self):
        return self.func, self.args


def tensor(arr: np.ndarray, type_name: str) -> T:
    arr = np.asarray(arr)
    return T(Store(arr, type_name), 0, arr.shape, tuple(s // arr.itemsize for s in arr.strides))


class _Pickler(pickle._Pickler):  # the pure-Python pickler lets us emit GLOBALs for stand-ins
    def __init__(self, f, legacy: bool) -> None:
        super().__init__(f, protocol=2)
        self.legacy = legacy
        self.stores: dict[int, tuple[str, Store]] = {}

    def persistent_id(self, obj):
        if isinstance(obj, Store):
            key = obj.key or self.stores.setdefault(id(obj), (str(len(self.stores)), obj))[0]
            pid = ("storage", G("torch", obj.type_name), key, "cpu", obj.arr.size)
            return pid + (obj.view,) if self.legacy else pid
        return None

    def save(self, obj, save_persistent_id=True):
        if isinstance(obj, G):
            self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode("utf-8"))
            return
        super().save(obj, save_persistent_id)


def _pickle(obj, legacy: bool) -> tuple[bytes, list[tuple[str, Store]]]:
    buf = io.BytesIO()
    p = _Pickler(buf, legacy)
    p.dump(obj)
    return buf.getvalue(), list(p.stores.values())


def write_zip(path: Path, obj, folder: str = "archive", byteorder: str = "little",
              compression: int = zipfile.ZIP_STORED) -> Path:
    data, stores = _pickle(obj, legacy=False)
    with zipfile.ZipFile(path, "w", compression) as zf:
        zf.writestr(f"{folder}/data.pkl", data)
        zf.writestr(f"{folder}/.format_version", "1")
        zf.writestr(f"{folder}/byteorder", byteorder)
        for key, store in stores:
            arr = store.arr.astype(store.arr.dtype.newbyteorder("<" if byteorder == "little" else ">"))
            zf.writestr(f"{folder}/data/{key}", arr.tobytes())
        zf.writestr(f"{folder}/version", "3\n")
    return path


def write_legacy(path: Path, obj) -> Path:
    data, stores = _pickle(obj, legacy=True)
    with open(path, "wb") as f:
        pickle.dump(0x1950A86A20F9469CFC6C, f, protocol=2)
        pickle.dump(1001, f, protocol=2)
        pickle.dump({"protocol_version": 1001, "little_endian": True,
                     "type_sizes": {"short": 2, "int": 4, "long": 4}}, f, protocol=2)
        f.write(data)
        pickle.dump([key for key, _ in stores], f, protocol=2)
        for _, store in stores:
            f.write(struct.pack("<q", store.arr.size))
            f.write(store.arr.astype(store.arr.dtype.newbyteorder("<")).tobytes())
    return path


def writers():
    return pytest.mark.parametrize("write", [write_zip, write_legacy], ids=["zip", "legacy"])


# ---------------------------------------------------------------------------------------------
# Committed fixtures (made by torch)
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", STATE_DICT_FIXTURES)
def test_fixtures_give_exact_tensors(name, expected):
    sd = load_pt_state_dict(FIXTURES / name)
    assert isinstance(sd, OrderedDict)
    assert list(sd) == list(expected)  # file order, 'module.' stripped for the nested ones
    for key, want in expected.items():
        got = sd[key]
        assert isinstance(got, np.ndarray), key
        assert got.dtype == want.dtype and got.shape == want.shape, (key, got.dtype, got.shape)
        assert np.array_equal(got, want), key
        assert got.flags.c_contiguous and got.dtype.isnative, key


def test_fixture_dtypes_and_views(expected):
    sd = load_pt_state_dict(str(FIXTURES / "sd_zip.pt"))  # str path too
    assert sd["bf16"].dtype == np.float32 and sd["half"].dtype == np.float16
    assert sd["f64"].dtype == np.float64 and sd["i32"].dtype == np.int32
    assert sd["u8"].dtype == np.uint8 and sd["i8"].dtype == np.int8 and sd["mask"].dtype == np.bool_
    assert sd["body.position_encoding.position_ids"].dtype == np.int64
    np.testing.assert_array_equal(sd["body.position_encoding.position_ids"], np.arange(16)[None])
    np.testing.assert_array_equal(sd["base_slice"], sd["base"][1:, ::2])
    assert sd["scalar"].shape == () and sd["scalar"] == 2.5
    assert sd["empty"].shape == (0, 3)
    assert sd["proj.weight_t"].shape == (3, 5)
    # Arrays are independent and writable, even when their tensors shared a storage.
    sd["base"][...] = 0
    assert np.array_equal(sd["base_slice"], expected["base_slice"])
    for arr in sd.values():
        assert arr.flags.writeable


def test_load_pt_object_keeps_the_container():
    obj = load_pt_object(FIXTURES / "nested_legacy.pth")
    assert set(obj) == {"model", "optimizer"}
    assert next(iter(obj["model"])).startswith("module.")
    np.testing.assert_array_equal(obj["optimizer"]["state"][0]["exp_avg"], np.ones(3, np.float32))
    assert obj["optimizer"]["param_groups"][0]["lr"] == 1e-4
    obj = load_pt_object(FIXTURES / "nested_zip.pth")
    assert obj["epoch"] == 7 and obj["best"] == 31.5


@pytest.mark.parametrize("name", STATE_DICT_FIXTURES)
def test_fixtures_match_torch_load(name):
    torch = pytest.importorskip("torch")
    ref = torch.load(FIXTURES / name, weights_only=True, map_location="cpu")
    if "state_dict" in ref or "model" in ref:
        ref = ref.get("state_dict", ref.get("model"))
        ref = OrderedDict((k[len("module."):], v) for k, v in ref.items())
    sd = load_pt_state_dict(FIXTURES / name)
    assert list(sd) == list(ref)
    for key, t in ref.items():
        want = (t.float() if t.dtype == torch.bfloat16 else t).detach().numpy()
        assert sd[key].dtype == want.dtype and np.array_equal(sd[key], want), key


# ---------------------------------------------------------------------------------------------
# Malicious files
# ---------------------------------------------------------------------------------------------

@pytest.fixture
def no_system(monkeypatch):
    """Belt and braces: make os.system / posix.system explode if anything reached them."""
    import posix

    def boom(*args, **kwargs):
        raise AssertionError("os.system was called")

    monkeypatch.setattr(os, "system", boom)
    monkeypatch.setattr(posix, "system", boom)


@pytest.mark.parametrize("name", ["malicious_zip.pt", "malicious_legacy.pt"])
def test_malicious_fixtures_are_refused(name, no_system):
    if FIXTURE_MARKER.exists():
        FIXTURE_MARKER.unlink()
    assert b"system" in (FIXTURES / name).read_bytes()
    with pytest.raises(UnsafeCheckpointError) as info:
        load_pt_state_dict(FIXTURES / name)
    assert isinstance(info.value, ValueError)
    assert_one_line(info.value, name, "system")
    assert re.search(r"(posix|os|nt)\.system", str(info.value))
    with pytest.raises(UnsafeCheckpointError):
        load_pt_object(FIXTURES / name)
    assert not FIXTURE_MARKER.exists()


def _evil_objects(marker: Path):
    cmd = f"touch {marker}"
    good = tensor(np.arange(3, dtype=np.float32), "FloatStorage")
    return {
        "os.system": {"w": Call("os", "system", cmd)},
        "posix.system": OrderedDict(w=good, x=Call("posix", "system", cmd)),
        "builtins.eval": {"w": Call("builtins", "eval", f"__import__('os').system({cmd!r})")},
        "builtins.exec": {"w": Call("builtins", "exec", f"import os; os.system({cmd!r})")},
        "subprocess.Popen": {"w": Call("subprocess", "Popen", ["touch", str(marker)])},
        "nested in rebuild args": {"w": T(Store(np.zeros(3, np.float32), "FloatStorage"),
                                          Call("os", "system", cmd), (3,), (1,))},
        "fake torch module": {"w": Call("torch.serialization", "load", str(marker))},
        "getattr gadget": {"w": Call("builtins", "getattr", G("os", "system"), "__call__")},
    }


@pytest.mark.parametrize("case", list(_evil_objects(Path("/x"))))
@writers()
def test_crafted_malicious_pickles_are_refused(case, write, tmp_path, no_system):
    marker = tmp_path / "pwned"
    path = write(tmp_path / "evil.pt", _evil_objects(marker)[case])
    with pytest.raises(UnsafeCheckpointError) as info:
        load_pt_state_dict(path)
    assert_one_line(info.value, "evil.pt", "forbidden global")
    assert not marker.exists()


def test_stack_global_names_cannot_break_the_message(tmp_path, no_system):
    # Protocol 4 STACK_GLOBAL takes module/name from arbitrary strings (newlines included).
    def short(text: str) -> bytes:
        raw = text.encode()
        return pickle.SHORT_BINUNICODE + bytes([len(raw)]) + raw
    payload = (b"\x80\x04" + short("os\nfake") + short("system") + pickle.STACK_GLOBAL
               + short("touch /nonexistent") + pickle.TUPLE1 + pickle.REDUCE + pickle.STOP)
    path = tmp_path / "stack.pt"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("stack/data.pkl", payload)
    with pytest.raises(UnsafeCheckpointError) as info:
        load_pt_state_dict(path)
    assert_one_line(info.value, "stack.pt", "system")


def test_payload_is_real(tmp_path):
    """Sanity check of the test itself: the crafted payload does run under a naive unpickler."""
    marker = tmp_path / "pwned"
    data, _ = _pickle({"w": Call("os", "system", f"touch {marker}")}, legacy=False)
    pickle.loads(data)  # deliberately naive
    assert marker.exists()


class TWithState(T):
    """A tensor pickled with a BUILD state that would overwrite the stand-in's fields."""

    def __reduce__(self):
        return super().__reduce__() + ({"size": (10 ** 6,), "stride": (1,)},)


@writers()
def test_allowed_stand_ins_are_not_gadgets(write, tmp_path):
    # Calling an allowed storage-type marker is rejected ...
    path = write(tmp_path / "call.pt", {"w": Call("torch", "FloatStorage", 10)})
    with pytest.raises(CheckpointFormatError) as info:
        load_pt_state_dict(path)
    assert_one_line(info.value, "call.pt")
    # ... so is a BUILD that would rewrite a rebuilt tensor's metadata ...
    store = Store(np.zeros(4, np.float32), "FloatStorage")
    path = write(tmp_path / "build.pt", {"w": TWithState(store, 0, (4,), (1,))})
    with pytest.raises(CheckpointFormatError) as info:
        load_pt_state_dict(path)
    assert_one_line(info.value, "build.pt", "BUILD")
    # ... and a rebuild function fed something that is not a storage.
    path = write(tmp_path / "nostore.pt", {"w": Call("torch._utils", "_rebuild_tensor", 0, 0, (1,), (1,))})
    with pytest.raises(CheckpointFormatError) as info:
        load_pt_state_dict(path)
    assert_one_line(info.value, "nostore.pt", "non-storage")


# ---------------------------------------------------------------------------------------------
# Not torch files
# ---------------------------------------------------------------------------------------------

def _non_torch_files(tmp: Path) -> dict[str, Path]:
    files = {}

    def put(name, data):
        (tmp / name).write_bytes(data)
        files[name] = tmp / name

    put("notes.pt", b"hello, this is not a checkpoint\nsecond line\n")
    put("empty.pt", b"")
    # A MindSpore .ckpt is a protobuf 'Checkpoint' message: field 1 (value), tag, tensor bytes...
    put("mindspore.ckpt", b"\n\x1f\n\x0bconv.weight\x12\x10\n\x04\x08\x02\x10\x02\x12\x08\x00\x00\x80?"
        b"\x00\x00\x00@\x1a\x07Float32")
    put("random.pth", np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    put("plain_pickle.pt", pickle.dumps({"w": [1.0, 2.0]}, protocol=2))
    put("plain_pickle_p4.pt", pickle.dumps({"w": [1.0, 2.0]}, protocol=4))
    buf = io.BytesIO()
    np.savez(buf, w=np.ones(3))
    put("weights.npz.pt", buf.getvalue())
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w") as zf:
        zf.writestr("model/constants.pkl", b"\x80\x02).")
        zf.writestr("model/code/__torch__.py", "")
    put("scripted.pt", zbuf.getvalue())
    tbuf = io.BytesIO()
    with tarfile.open(fileobj=tbuf, mode="w") as tf:
        info = tarfile.TarInfo("storages")
        info.size = 3
        tf.addfile(info, io.BytesIO(b"abc"))
    put("old_tar.pt", tbuf.getvalue())
    good = (FIXTURES / "sd_zip.pt").read_bytes()
    put("truncated_zip.pt", good[: len(good) // 2])
    legacy = (FIXTURES / "sd_legacy.pt").read_bytes()
    put("truncated_legacy.pt", legacy[: len(legacy) - 40])
    put("legacy_header_only.pt", legacy[:60])
    return files


NON_TORCH_NAMES = [
    "notes.pt", "empty.pt", "mindspore.ckpt", "random.pth", "plain_pickle.pt", "plain_pickle_p4.pt",
    "weights.npz.pt", "scripted.pt", "old_tar.pt", "truncated_zip.pt", "truncated_legacy.pt",
    "legacy_header_only.pt"]


@pytest.mark.parametrize("name", NON_TORCH_NAMES)
def test_non_torch_files_give_one_line_format_error(name, tmp_path):
    path = _non_torch_files(tmp_path)[name]
    with pytest.raises(CheckpointFormatError) as info:
        load_pt_state_dict(path)
    assert isinstance(info.value, ValueError) and not isinstance(info.value, UnsafeCheckpointError)
    assert_one_line(info.value, name)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_pt_state_dict(tmp_path / "nope.pt")


# ---------------------------------------------------------------------------------------------
# Crafted layouts: containers, prefixes, views, byte order, compression, bounds
# ---------------------------------------------------------------------------------------------

@writers()
def test_unwrap_keys_and_module_prefix(write, tmp_path):
    w = np.arange(6, dtype=np.float32).reshape(2, 3)
    for container in ("state_dict", "model", "params", "net"):
        obj = {"epoch": 1, container: OrderedDict([("module.a", tensor(w, "FloatStorage")),
                                                   ("module.b", tensor(w[0], "FloatStorage"))])}
        sd = load_pt_state_dict(write(tmp_path / f"{container}.pt", obj))
        assert list(sd) == ["a", "b"], container
        np.testing.assert_array_equal(sd["a"], w)
    # Prefix kept when not every key has it; doubly wrapped containers are unwrapped.
    obj = {"model": {"state_dict": OrderedDict([("module.a", tensor(w, "FloatStorage")),
                                                ("b", tensor(w, "FloatStorage"))])}}
    assert list(load_pt_state_dict(write(tmp_path / "mixed.pt", obj))) == ["module.a", "b"]
    # A dict mixing tensors and other values, with no known container key, is not a state dict.
    path = write(tmp_path / "bad.pt", {"a": tensor(w, "FloatStorage"), "epoch": 3})
    with pytest.raises(CheckpointFormatError) as info:
        load_pt_state_dict(path)
    assert_one_line(info.value, "bad.pt", "epoch")
    path = write(tmp_path / "list.pt", [tensor(w, "FloatStorage")])
    with pytest.raises(CheckpointFormatError):
        load_pt_state_dict(path)


@writers()
def test_all_dtypes_strides_and_offsets(write, tmp_path):
    rng = np.random.default_rng(1)
    base = rng.standard_normal((4, 5)).astype(np.float32)
    store = Store(base, "FloatStorage")
    bf16_values = np.array([1.0, -2.5, 3.140625, 65280.0, -0.0], np.float32)
    cases = OrderedDict([
        ("f32", (tensor(base, "FloatStorage"), base)),
        ("slice", (T(store, 6, (3, 2), (5, 2)), base[1:, 1::2])),
        ("transposed", (T(store, 0, (5, 4), (1, 5)), base.T)),
        ("broadcast", (T(store, 2, (3, 4), (0, 1)), np.broadcast_to(base.ravel()[2:6], (3, 4)))),
        ("f64", (tensor(base.astype(np.float64), "DoubleStorage"), base.astype(np.float64))),
        ("f16", (tensor(base.astype(np.float16), "HalfStorage"), base.astype(np.float16))),
        ("bf16", (tensor((bf16_values.view(np.uint32) >> 16).astype(np.uint16), "BFloat16Storage"),
                  bf16_values)),
        ("i64", (tensor(np.array([-(2 ** 62), 2 ** 62, 1]), "LongStorage"), np.array([-(2 ** 62), 2 ** 62, 1]))),
        ("i32", (tensor(np.array([-7, 9], np.int32), "IntStorage"), np.array([-7, 9], np.int32))),
        ("i16", (tensor(np.array([-7, 9], np.int16), "ShortStorage"), np.array([-7, 9], np.int16))),
        ("u8", (tensor(np.array([0, 255], np.uint8), "ByteStorage"), np.array([0, 255], np.uint8))),
        ("i8", (tensor(np.array([-128, 127], np.int8), "CharStorage"), np.array([-128, 127], np.int8))),
        ("bool", (tensor(np.array([True, False, True]), "BoolStorage"), np.array([True, False, True]))),
        ("old_rebuild", (T(store, 1, (2,), (1,), func=("torch._utils", "_rebuild_tensor")), base.ravel()[1:3])),
    ])
    path = write(tmp_path / "dtypes.pt", OrderedDict((k, v[0]) for k, v in cases.items()))
    sd = load_pt_state_dict(path)
    assert list(sd) == list(cases)
    for key, (_, want) in cases.items():
        assert sd[key].dtype == want.dtype and sd[key].shape == want.shape, key
        assert np.array_equal(sd[key], want), key
        assert sd[key].flags.c_contiguous and sd[key].flags.writeable, key
    if write is write_zip:  # same file with big-endian storages and a byteorder record
        sd_be = load_pt_state_dict(write(tmp_path / "be.pt", OrderedDict((k, v[0]) for k, v in cases.items()),
                                         byteorder="big"))
        for key, (_, want) in cases.items():
            assert sd_be[key].dtype == want.dtype and sd_be[key].dtype.isnative, key
            assert np.array_equal(sd_be[key], want), key
        # Deflated members (not what torch writes, but a valid zip) and any folder name.
        sd_z = load_pt_state_dict(write(tmp_path / "z.pt", OrderedDict((k, v[0]) for k, v in cases.items()),
                                        folder="whatever-name", compression=zipfile.ZIP_DEFLATED))
        for key, (_, want) in cases.items():
            assert np.array_equal(sd_z[key], want), key


def test_legacy_storage_views(tmp_path):
    """Old torch (< 1.0) pickled storage views: view_metadata = (view_key, offset, size)."""
    root = np.arange(10, dtype=np.float32)
    store = Store(root, "FloatStorage")
    view = Store(root, "FloatStorage", view=("view_of_0", 4, 5), key="0")  # elements 4..8 of '0'
    obj = OrderedDict(a=T(store, 0, (10,), (1,)), b=T(view, 1, (2, 2), (2, 1)))
    sd = load_pt_state_dict(write_legacy(tmp_path / "views.pt", obj))
    np.testing.assert_array_equal(sd["a"], root)
    np.testing.assert_array_equal(sd["b"], np.array([[5, 6], [7, 8]], np.float32))


@writers()
def test_same_tensor_object_twice_gives_independent_arrays(write, tmp_path):
    t = tensor(np.arange(4, dtype=np.float32), "FloatStorage")
    sd = load_pt_state_dict(write(tmp_path / "tied.pt", OrderedDict(a=t, b=t)))  # pickle memo
    sd["a"][0] = 100
    np.testing.assert_array_equal(sd["b"], np.arange(4, dtype=np.float32))


@writers()
@pytest.mark.parametrize("offset,size,stride", [
    (0, (3, 4), (4, 1)),      # 12 elements from a 10-element storage
    (9, (2,), (1,)),          # runs past the end
    (0, (2, 2), (-1, 1)),     # negative stride
    (-1, (2,), (1,)),         # negative offset
    (0, (2, 2), (1,)),        # rank mismatch
])
def test_out_of_bounds_tensors_are_refused(write, offset, size, stride, tmp_path):
    store = Store(np.zeros(10, np.float32), "FloatStorage")
    path = write(tmp_path / "oob.pt", {"w": T(store, offset, size, stride)})
    with pytest.raises(CheckpointFormatError) as info:
        load_pt_state_dict(path)
    assert_one_line(info.value, "oob.pt")


def test_zip_storage_shorter_than_declared(tmp_path):
    path = write_zip(tmp_path / "short.pt", {"w": tensor(np.zeros(4, np.float32), "FloatStorage")})
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    members["archive/data/0"] = members["archive/data/0"][:8]
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    with pytest.raises(CheckpointFormatError):
        load_pt_state_dict(path)


@writers()
def test_written_files_match_torch_load(write, tmp_path):
    """Cross-check of the hand-written layouts (and so of the reader) against torch itself."""
    torch = pytest.importorskip("torch")
    base = np.arange(20, dtype=np.float32).reshape(4, 5)
    store = Store(base, "FloatStorage")
    obj = OrderedDict(a=tensor(base, "FloatStorage"), b=T(store, 6, (3, 2), (5, 2)),
                      c=tensor(np.array([1, 2], np.int64), "LongStorage"))
    path = write(tmp_path / "x.pt", obj)
    ref = torch.load(path, weights_only=True)
    sd = load_pt_state_dict(path)
    for key in obj:
        assert np.array_equal(sd[key], ref[key].numpy()), key


# ---------------------------------------------------------------------------------------------
# The real official-format checkpoint
# ---------------------------------------------------------------------------------------------

def _pretrain6_manifest() -> list[tuple[str, tuple, str]]:
    rows = []
    for line in PRETRAIN6_LIST.read_text().splitlines():
        key, shape, dtype = line.split("\t")
        rows.append((key, tuple(int(v) for v in re.findall(r"\d+", shape)), dtype))
    return rows


@pytest.mark.skipif(not SMALL_PT.exists(), reason="shared IPT reference files not present")
def test_official_small_pretrain6_checkpoint():
    sd = load_pt_state_dict(SMALL_PT)
    manifest = _pretrain6_manifest()
    assert len(manifest) == 381
    # small_pretrain6.pt is the 6-task model scaled down (small_config.json: n_feats 16, 2 encoder
    # and 2 decoder layers, 4 heads): the pretrain6 manifest minus transformer layers 2..11.
    layer = re.compile(r"\.layers\.(\d+)\.")
    kept = [row for row in manifest if not (m := layer.search(row[0])) or int(m.group(1)) < 2]
    dropped = [row for row in manifest if row not in kept]
    assert len(sd) == len(kept) == 141
    assert {int(layer.search(k).group(1)) for k, _, _ in dropped} == set(range(2, 12))
    assert list(sd) == [k for k, _, _ in kept]  # same names, official state_dict order
    for key, full_shape, dtype in kept:
        arr = sd[key]
        assert arr.dtype == np.dtype(dtype), key
        assert arr.ndim == len(full_shape), key
        # every dimension is either unchanged or divided by 4 (64 -> 16 features, 576 -> 144 dims)
        assert all(f in (s, 4 * s) for s, f in zip(arr.shape, full_shape)), (key, arr.shape, full_shape)
        assert np.all(np.isfinite(arr)) if arr.dtype.kind == "f" else True
    assert sd["head.0.0.weight"].shape == (16, 3, 3, 3)
    assert sd["body.encoder.layers.0.self_attn.in_proj_weight"].shape == (432, 144)
    np.testing.assert_array_equal(sd["body.position_encoding.position_ids"], np.arange(256)[None])


@pytest.mark.skipif(not SMALL_PT.exists(), reason="shared IPT reference files not present")
def test_official_small_pretrain6_matches_torch():
    torch = pytest.importorskip("torch")
    ref = torch.load(SMALL_PT, weights_only=True, map_location="cpu")
    sd = load_pt_state_dict(SMALL_PT)
    assert list(sd) == list(ref)
    for key, t in ref.items():
        assert sd[key].dtype == t.numpy().dtype and np.array_equal(sd[key], t.numpy()), key


# ---------------------------------------------------------------------------------------------
# torch independence
# ---------------------------------------------------------------------------------------------

def test_reader_works_with_torch_blocked():
    code = r"""
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError("torch is blocked in this test")
sys.meta_path.insert(0, _Block())
from src.pt_reader import load_pt_state_dict
for name in %r:
    sd = load_pt_state_dict("tests/fixtures/" + name)
    assert len(sd) == 17, (name, len(sd))
assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules)
print("ok")
""" % (STATE_DICT_FIXTURES,)
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_module_source_never_imports_torch():
    source = (REPO / "src" / "pt_reader.py").read_text()
    assert not re.search(r"^\s*(import torch|from torch)", source, re.M)
