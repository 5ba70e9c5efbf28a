"""Image file reading and writing with the conventions the benchmarks need.

Benchmark folders mix 8-bit RGB, single-channel grayscale, RGBA and the odd 16-bit
file; every reader in the project goes through :func:`read_image` so that all of
them see the same HWC uint8 RGB array (or a 2-D array for grayscale files when the
caller wants to score them on their own channel, as the SR papers' MATLAB scripts do).
"""
from __future__ import annotations

import os
import struct
import tempfile
from pathlib import Path
from typing import List, NamedTuple, Optional, Union

# OpenCV refuses to decode more than this many pixels (its default is 2^30); the commands check
# sizes from the file header first (image_header), this is the backstop. Set before cv2 loads.
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(1 << 28))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

try:  # decode failures are reported by our own one-line errors, not OpenCV's stderr warnings
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
except AttributeError:
    pass

from src.utils import publish  # noqa: E402

PathLike = Union[str, os.PathLike]

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})


class ImageHeader(NamedTuple):
    """What a file's header says, before any decoding: size, and gray or not where it tells."""

    width: int
    height: int
    gray: Optional[bool]   # None: the header does not say (decode to find out)


def _png_header(head: bytes) -> Optional[ImageHeader]:
    if head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", head[16:24])
    return ImageHeader(width, height, head[25] in (0, 4))  # colour type 0 gray, 4 gray + alpha


def _jpeg_header(fh) -> Optional[ImageHeader]:
    fh.seek(2)
    while True:
        marker = fh.read(2)
        if len(marker) < 2 or marker[0] != 0xFF:
            return None
        if marker[1] in (0xD8, 0x01) or 0xD0 <= marker[1] <= 0xD7:
            continue
        length = struct.unpack(">H", fh.read(2) or b"\0\0")[0]
        if 0xC0 <= marker[1] <= 0xCF and marker[1] not in (0xC4, 0xC8, 0xCC):
            seg = fh.read(6)
            if len(seg) < 6:
                return None
            height, width = struct.unpack(">HH", seg[1:5])
            return ImageHeader(width, height, seg[5] == 1)
        fh.seek(length - 2, 1)


def image_header(path: PathLike) -> Optional[ImageHeader]:
    """Width, height (and gray) from the header of a PNG, JPEG, BMP or WebP file; None if unknown.

    Reads a few bytes only, so a 30000x30000 image is sized without allocating its pixels.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(32)
            if head[:8] == b"\x89PNG\r\n\x1a\n":
                return _png_header(head)
            if head[:2] == b"\xff\xd8":
                return _jpeg_header(fh)
            if head[:2] == b"BM" and len(head) >= 26:
                width, height = struct.unpack("<ii", head[18:26])
                return ImageHeader(abs(width), abs(height), None)
            if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
                kind = head[12:16]
                if kind == b"VP8X":
                    width = 1 + int.from_bytes(head[24:27], "little")
                    height = 1 + int.from_bytes(head[27:30], "little")
                    return ImageHeader(width, height, None)
                if kind == b"VP8L":
                    bits = int.from_bytes(head[21:25], "little")
                    return ImageHeader((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1, None)
                if kind == b"VP8 ":
                    width, height = struct.unpack("<HH", head[26:30])
                    return ImageHeader(width & 0x3FFF, height & 0x3FFF, None)
    except (OSError, struct.error):
        return None
    return None


class ImageReadError(ValueError):
    """A missing, unreadable or undecodable image; str() is one line naming the file."""

    def __init__(self, path: PathLike, reason: str):
        self.path = str(path)
        self.reason = " ".join(str(reason).split())  # keep the message on one line
        super().__init__(f"cannot read image {self.path}: {self.reason}")


def _to_uint8(img: np.ndarray, path: PathLike) -> np.ndarray:
    """Bring any decoded sample type to 8 bits, rounding like MATLAB's im2uint8."""
    if img.dtype == np.uint8:
        return img
    if img.dtype == np.uint16:
        # 65535 / 255 == 257 exactly, so x / 257 maps full scale to full scale.
        return np.floor(img.astype(np.float64) / 257.0 + 0.5).astype(np.uint8)
    if np.issubdtype(img.dtype, np.floating):
        # Float TIFFs are conventionally on a 0..1 scale.
        scaled = np.clip(np.nan_to_num(img.astype(np.float64)), 0.0, 1.0) * 255.0
        return np.floor(scaled + 0.5).astype(np.uint8)
    raise ImageReadError(path, f"unsupported sample type {img.dtype}")


def jpeg_is_truncated(tail: bytes) -> bool:
    """True when a JPEG's last bytes hold no end-of-image marker (the file was cut short).

    libjpeg decodes a truncated file "successfully", filling the missing rows with gray, so the
    cut must be caught before decoding. FF D9 cannot occur inside entropy-coded data (FF is
    always stuffed there), so its absence from the tail means the file ends mid-scan; a few
    padding bytes after the marker are allowed.
    """
    return b"\xff\xd9" not in tail[-64:]


def decode_image(data: bytes, path: PathLike = "<bytes>", keep_gray: bool = False) -> np.ndarray:
    """Decode encoded image bytes to uint8 RGB (HWC), or 2-D gray when keep_gray.

    CMYK and grayscale JPEGs and PNGs named ``.JPEG`` decode correctly (the format is sniffed
    from the bytes); truncated JPEGs raise instead of coming back half gray.
    """
    if data[:2] == b"\xff\xd8" and jpeg_is_truncated(data):
        raise ImageReadError(path, "truncated JPEG (no end-of-image marker)")
    buf = np.frombuffer(data, dtype=np.uint8)
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED) if buf.size else None
    if img is None:
        raise ImageReadError(path, "not a decodable image (corrupt or unsupported format)")
    img = _to_uint8(img, path)
    if img.ndim == 3 and img.shape[2] in (1, 2):
        img = img[:, :, 0]  # gray, or gray + alpha: the alpha plane is dropped
    if img.ndim == 3:
        if img.shape[2] == 4:
            img = img[:, :, :3]  # alpha dropped, not composited
        elif img.shape[2] != 3:
            raise ImageReadError(path, f"unsupported channel count {img.shape[2]}")
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    elif img.ndim != 2:
        raise ImageReadError(path, f"unsupported array shape {img.shape}")
    if img.ndim == 2 and not keep_gray:
        img = to_rgb3(img)
    return np.ascontiguousarray(img)


def read_image(path: PathLike, keep_gray: bool = False) -> np.ndarray:
    """Read an image file as HWC uint8 RGB.

    Grayscale files come back as (H, W) when ``keep_gray`` is true, so callers can keep
    scoring them on their single channel; otherwise they are replicated to 3 channels.
    Alpha is dropped, 16-bit samples are rounded to 8 bits (x / 257). Bytes are read
    with Python and decoded by OpenCV so non-ASCII paths work too.

    Raises:
        ImageReadError: the file is missing, unreadable or cannot be decoded.
    """
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        raise ImageReadError(path, "file not found") from None
    except OSError as exc:
        raise ImageReadError(path, exc.strerror or type(exc).__name__) from None
    img = decode_image(data, path, keep_gray=keep_gray)
    if keep_gray and img.ndim == 3 and data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 25 and data[25] == 4:
        img = np.ascontiguousarray(img[:, :, 0])  # gray + alpha PNG: OpenCV expands it to colour
    return img


def is_gray(img: np.ndarray) -> bool:
    """True for a single-channel array: (H, W) or (H, W, 1)."""
    return img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 1)


def is_grayscale_file(path: PathLike) -> bool:
    """True when the file itself stores a single (luma) channel, alpha aside."""
    return read_image(path, keep_gray=True).ndim == 2


def to_rgb3(img: np.ndarray) -> np.ndarray:
    """Replicate a single-channel image to 3 channels (the model always sees RGB)."""
    if img.ndim == 2:
        return np.repeat(img[:, :, None], 3, axis=2)
    if img.ndim == 3 and img.shape[2] == 1:
        return np.repeat(img, 3, axis=2)
    if img.ndim == 3 and img.shape[2] == 3:
        return img
    raise ValueError(f"expected (H, W), (H, W, 1) or (H, W, 3) array, got shape {img.shape}")


def from_rgb3(img: np.ndarray, is_gray_input: bool) -> np.ndarray:
    """Undo :func:`to_rgb3` on a model output.

    For a grayscale input the mean of the 3 output channels is returned as (H, W): the
    model may not keep its channels exactly equal, and the mean is the least-squares
    gray estimate. Float outputs stay float (unrounded, the metric caller quantizes);
    uint8 outputs are rounded back to uint8. Colour inputs are returned unchanged.
    """
    if not is_gray_input:
        return img
    if img.ndim == 2:
        return img
    if img.ndim != 3:
        raise ValueError(f"expected an (H, W, C) array, got shape {img.shape}")
    if np.issubdtype(img.dtype, np.floating):
        return img.mean(axis=2, dtype=np.float64).astype(img.dtype)
    mean = img.astype(np.float64).mean(axis=2)
    return np.clip(np.floor(mean + 0.5), 0, 255).astype(np.uint8)


def write_image(path: PathLike, img: np.ndarray, overwrite: bool = False) -> Path:
    """Write an RGB (HWC) or gray (HW) uint8/uint16 image; format from the extension.

    Parent folders are created. The data goes to a temporary file in the target folder
    first and is moved into place with ``os.replace``, so a crash never leaves a
    half-written image behind.

    Raises:
        FileExistsError: the file exists and ``overwrite`` is false.
        TypeError: the array is not uint8/uint16 (quantize float outputs first).
    """
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in IMAGE_EXTENSIONS:
        raise ValueError(f"unsupported image extension {path.suffix!r} for {path}")
    if img.dtype not in (np.uint8, np.uint16):
        raise TypeError(f"write_image needs uint8/uint16 data, got {img.dtype} for {path}")
    if path.exists() and not overwrite:
        raise FileExistsError(f"refusing to overwrite existing file {path} (pass overwrite=True)")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 3 and img.shape[2] == 3:
        img = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2BGR)
    elif img.ndim != 2:
        raise ValueError(f"expected (H, W) or (H, W, 3) array, got shape {img.shape} for {path}")
    ok, encoded = cv2.imencode(ext, np.ascontiguousarray(img))
    if not ok:
        raise ValueError(f"OpenCV could not encode {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(encoded.tobytes())
        publish(tmp_name, path)
    except BaseException:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
        raise
    return path


def has_images(root: PathLike) -> bool:
    """True as soon as one image file is found under ``root`` (symlinked folders followed)."""
    for _, _, files in os.walk(root, followlinks=True):
        if any(os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS and not f.startswith(".") for f in files):
            return True
    return False


def list_images(root: PathLike, recursive: bool = True) -> List[Path]:
    """Image files under ``root`` (extension match, case-insensitive), sorted by relative path."""
    root = Path(root)
    if not root.is_dir():
        raise NotADirectoryError(f"image folder not found: {root}")
    candidates = root.rglob("*") if recursive else root.iterdir()
    found = [
        p for p in candidates
        if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file()
    ]
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())
