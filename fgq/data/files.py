"""Reading (and, for the test fixtures, writing) the files of the real datasets, with one-line errors that name
the file. Every loader goes through these so a missing or corrupt file never surfaces as a bare traceback."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
from PIL import Image

from fgq.io import atomic_write


class DataError(ValueError):
    """A dataset file or folder that cannot be used; the message names it and says what to do."""


def require_dir(path: str | Path, key: str) -> Path:
    """``path`` must be an existing folder; ``key`` is the config key the user sets (named in the error)."""
    if path in (None, "", "???"):
        raise DataError(f"{key} is not set: give the dataset's location ({key}=PATH)")
    path = Path(path)
    if not path.is_dir():
        raise DataError(f"{key}={path}: no such folder (set {key}=PATH)")
    return path


def require_file(path: Path) -> Path:
    if not Path(path).is_file():
        raise DataError(f"{path}: file not found")
    return Path(path)


def read_json(path: Path):
    try:
        return json.loads(require_file(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not valid JSON ({err})") from None


def read_gzip_json(path: Path):
    """``.jgz`` annotations (gzip-compressed JSON)."""
    try:
        with gzip.open(require_file(path), "rt", encoding="utf-8") as f:
            return json.load(f)
    except (OSError, EOFError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not a gzip JSON file ({err})") from None


def read_rgb(path: Path) -> Image.Image:
    try:
        with Image.open(require_file(path)) as img:
            img.load()
            return img.convert("RGB")
    except OSError as err:
        raise DataError(f"{path}: cannot read the image ({err})") from None


def read_png_uint16(path: Path) -> np.ndarray:
    """A 16-bit single-channel PNG (depth in mm or metres × 256) as ``uint16 [H, W]``."""
    try:
        with Image.open(require_file(path)) as img:
            img.load()
            array = np.asarray(img)
    except OSError as err:
        raise DataError(f"{path}: cannot read the depth PNG ({err})") from None
    if array.ndim != 2:
        raise DataError(f"{path}: expected a single-channel 16-bit depth PNG, got shape {array.shape}")
    return array.astype(np.uint16)


def read_matrix_txt(path: Path, rows: int, cols: int) -> np.ndarray:
    """A whitespace-separated text matrix of exactly ``rows × cols`` numbers (float64)."""
    try:
        values = np.array(require_file(path).read_text().split(), dtype=np.float64)
    except ValueError as err:
        raise DataError(f"{path}: not a text matrix ({err})") from None
    if values.size != rows * cols:
        raise DataError(f"{path}: expected {rows}×{cols} numbers, found {values.size}")
    return values.reshape(rows, cols)


def read_npy(path: Path) -> np.ndarray:
    try:
        return np.load(require_file(path), allow_pickle=False)
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: cannot read the .npy array ({err})") from None


# Writers: used by the fixture generators; atomic, so a crash leaves no half-written file.

def write_gzip_json(path: Path, data) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(gzip.compress(json.dumps(data).encode())))


def write_json(path: Path, data) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(json.dumps(data, indent=1)))


def write_rgb(path: Path, image: np.ndarray) -> Path:
    """``image``: float ``[H, W, 3]`` in [0, 1] or uint8; the format follows the suffix (.png, .jpg)."""
    array = image if image.dtype == np.uint8 else np.clip(np.round(image * 255), 0, 255).astype(np.uint8)
    fmt = "JPEG" if Path(path).suffix.lower() in (".jpg", ".jpeg") else "PNG"
    return atomic_write(path, lambda tmp: Image.fromarray(array).save(tmp, format=fmt, quality=95))


def write_png_uint16(path: Path, array: np.ndarray) -> Path:
    if array.dtype != np.uint16 or array.ndim != 2:
        raise ValueError(f"write_png_uint16: need a 2-D uint16 array, got {array.dtype} {array.shape}")
    return atomic_write(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG"))


def write_matrix_txt(path: Path, matrix: np.ndarray) -> Path:
    text = "\n".join(" ".join(f"{v:.10g}" for v in row) for row in np.atleast_2d(matrix)) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text))
