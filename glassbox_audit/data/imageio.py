"""Reading images and masks from disk, with errors that name the file.

Files are read as bytes and decoded with OpenCV so that any path works (spaces, non-UTF-8
names) and every failure becomes a :class:`DataError` naming the file and the problem.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np

from ..errors import DataError

# A failed decode is reported once, as our DataError; OpenCV's own log line on stderr would
# be a second, less clear message for the same file.
cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)

__all__ = ["printable", "read_image", "read_mask", "resize_image", "resize_mask", "sha256_file"]

# A mask pixel this far from both 0 and 255 is "ambiguous": a few come from anti-aliased or
# JPEG-compressed borders; many mean the file is not a binary mask at all.
_AMBIGUOUS_LOW, _AMBIGUOUS_HIGH = 32, 223


def printable(text: str | Path) -> str:
    """``text`` with undecodable bytes of a file name shown as ``\\xNN``.

    Python keeps bytes of a non-UTF-8 file name as lone surrogates, which SQLite, hashing
    and UTF-8 files refuse; ids, stored paths and messages use this form instead, while
    the file itself is still opened by its real name.
    """
    try:
        raw = str(text).encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that never was a file-name byte
        return str(text).encode("utf-8", "backslashreplace").decode("utf-8")
    return raw.decode("utf-8", "backslashreplace")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_problem(buf: np.ndarray) -> str | None:
    """Why a PNG file is damaged, or None if every chunk is whole and its CRC matches.

    libpng reports a truncated or corrupted PNG by printing to stderr itself; walking the
    chunks first lets us name the problem in our one error line instead.
    """
    data = memoryview(buf)
    pos, n = len(_PNG_SIGNATURE), len(data)
    while True:
        if pos + 12 > n:
            return f"truncated PNG ({n} bytes, ends before its IEND chunk)"
        length, kind = struct.unpack_from(">I4s", data, pos)
        end = pos + 12 + length
        if end > n:
            return f"truncated PNG ({n} bytes, chunk {kind.decode('latin-1')!r} at byte {pos} is cut off)"
        (crc,) = struct.unpack_from(">I", data, end - 4)
        if zlib.crc32(data[pos + 4:end - 4]) != crc:
            return f"corrupt PNG (checksum error in chunk {kind.decode('latin-1')!r} at byte {pos})"
        if kind == b"IEND":
            return None
        pos = end


def _decode(path: Path, keep_depth: bool = False) -> np.ndarray:
    """The file's pixels; 16-bit scans are brought to 8 bits unless ``keep_depth``."""
    try:
        buf = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise DataError(f"{path}: cannot read file ({exc.strerror})") from None
    if buf.size == 0:
        raise DataError(f"{path}: empty file (0 bytes)")
    if buf[:8].tobytes() == _PNG_SIGNATURE and (problem := _png_problem(buf)):
        raise DataError(f"{path}: {problem}")
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise DataError(f"{path}: not a readable image (corrupt, truncated or unsupported format)")
    if img.dtype == np.uint16:
        if not keep_depth:
            img = np.round(img / 257.0).astype(np.uint8)  # 16-bit scans: keep the full range
    elif img.dtype != np.uint8:
        raise DataError(f"{path}: unsupported pixel type {img.dtype} (expected 8 or 16 bit)")
    return img


def read_image(path: Path) -> np.ndarray:
    """Return the image as uint8 RGB ``(H, W, 3)``; grayscale is repeated to three channels."""
    img = _decode(path)
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    channels = img.shape[2]
    if channels == 1:
        return cv2.cvtColor(img[:, :, 0], cv2.COLOR_GRAY2RGB)
    if channels == 3:
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    if channels == 4:
        return cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    raise DataError(f"{path}: unsupported number of channels ({channels})")


def read_mask(path: Path, threshold: int = 128, max_ambiguous: float = 0.02) -> np.ndarray:
    """Return the mask as bool ``(H, W)``: foreground where the value exceeds ``threshold``.

    Masks are binarised in their own bit depth. Label masks, holding 0 and one other value
    (0/1 in 8 bits; 0/1, 0/1000 or 0/65535 in 16 bits), are read as that value being
    foreground, never as all background. Other masks are thresholded at ``threshold`` on
    the 8-bit scale (``threshold`` x 257 for 16 bits). A colour mask is reduced to its
    brightest channel. A mask with more than ``max_ambiguous`` of its pixels far from both
    ends of its range is refused as not binary.
    """
    m = _decode(path, keep_depth=True)
    if m.ndim == 3:
        m = m[:, :, :3].max(axis=2) if m.shape[2] >= 3 else m[:, :, 0]
    top = int(m.max())
    if top <= 1:
        return m >= 1
    scale = 257 if m.dtype == np.uint16 else 1
    if m.dtype == np.uint16 and np.count_nonzero((m != 0) & (m != top)) == 0:
        return m == top  # a 16-bit label mask: 0 and one label value
    low, high = _AMBIGUOUS_LOW * scale, _AMBIGUOUS_HIGH * scale
    ambiguous = np.count_nonzero((m > low) & (m < high)) / m.size
    if ambiguous > max_ambiguous:
        raise DataError(
            f"{path}: mask is not binary ({ambiguous:.1%} of pixels between "
            f"{low} and {high}; expected values 0 and {255 * scale})"
        )
    return m > threshold * scale


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """Resize to ``size x size`` for the network (area filter when shrinking, to avoid aliasing)."""
    h, w = image.shape[:2]
    interp = cv2.INTER_AREA if size < max(h, w) else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interp)


def resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """Resize a bool mask to the network size as a float target in [0, 1] (soft borders)."""
    return cv2.resize(mask.astype(np.float32), (size, size), interpolation=cv2.INTER_AREA)
