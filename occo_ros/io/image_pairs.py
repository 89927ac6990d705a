"""Paired infrared / visible image folders: find pairs by file stem and read them as 8-bit.

A pair is ``ir/<stem>.<ext>`` + ``vi/<stem>.<ext>``; the extensions may differ between the
two folders and are matched case-insensitively (png, jpg, jpeg, bmp, tif, tiff). Files
without a partner are returned to the caller (who logs them), not silently dropped.

Gray conversion follows FUSION_METRICS.md §2.1: a 3-channel image becomes BT.601 luma
Y = 0.299 R + 0.587 G + 0.114 B, rounded half up to an integer 0-255.
16-bit images are refused: raw thermal counts need a scene-dependent normalisation
(occo_ros' thermal module), and a fixed rescale would make every metric meaningless.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from occo_ros.core.codec import file_image_size
from occo_ros.core.color import LUMA_WEIGHTS
from occo_ros.params import SPECS

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff')
#: Largest width x height an offline tool decodes: the node's max_input_pixels default, so
#: a small file that decodes to gigabytes is refused from its header by every tool alike.
MAX_INPUT_PIXELS = SPECS['max_input_pixels'].default


class ImageReadError(RuntimeError):
    """An image file exists but cannot be decoded as an 8-bit image; the message names it."""


class ImageTooLargeError(ImageReadError):
    """An image file whose header says more pixels than the limit; it was not decoded."""


class ImagePair(NamedTuple):
    """One infrared / visible pair; ``stem`` is the shared file name without extension."""

    stem: str
    ir_path: Path
    vi_path: Path


class PairScan(NamedTuple):
    """Result of a folder scan: pairs sorted by stem, and the files that have no partner."""

    pairs: list[ImagePair]
    unpaired: list[Path]


def images_by_stem(folder: str | Path) -> dict[str, Path]:
    """Map stem -> image file in ``folder``; two images with one stem raise ValueError."""
    folder = Path(folder)
    if not folder.is_dir():
        raise NotADirectoryError(f'image folder {folder} does not exist or is not a folder')
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        if path.stem in found:
            raise ValueError(
                f'two images with stem {path.stem!r} in {folder}: {found[path.stem].name} '
                f'and {path.name}; keep one so the pairing is unambiguous')
        found[path.stem] = path
    return found


def find_pairs(ir_dir: str | Path, vi_dir: str | Path) -> PairScan:
    """Pair ``ir_dir/<stem>.*`` with ``vi_dir/<stem>.*``.

    Returns PairScan(pairs sorted by stem, unpaired files sorted by path). Raises
    NotADirectoryError for a missing folder and ValueError for a stem used twice in a folder.
    """
    ir_files = images_by_stem(ir_dir)
    vi_files = images_by_stem(vi_dir)
    common = sorted(ir_files.keys() & vi_files.keys())
    pairs = [ImagePair(stem, ir_files[stem], vi_files[stem]) for stem in common]
    unpaired = sorted([p for s, p in ir_files.items() if s not in vi_files]
                      + [p for s, p in vi_files.items() if s not in ir_files])
    return PairScan(pairs, unpaired)


def find_pairs_in_roots(roots: Sequence[str | Path], ir_name: str = 'ir',
                        vi_name: str = 'vi') -> PairScan:
    """Pairs of every ``root/ir_name`` + ``root/vi_name``, concatenated in the order of roots.

    A stem found under two roots raises ValueError naming both files, because callers key
    caches and output files by stem.
    """
    pairs: list[ImagePair] = []
    unpaired: list[Path] = []
    seen: dict[str, Path] = {}
    for root in roots:
        scan = find_pairs(Path(root) / ir_name, Path(root) / vi_name)
        for pair in scan.pairs:
            if pair.stem in seen:
                raise ValueError(f'stem {pair.stem!r} occurs in two roots: {seen[pair.stem]} '
                                 f'and {pair.ir_path}; rename one of them')
            seen[pair.stem] = pair.ir_path
        pairs += scan.pairs
        unpaired += scan.unpaired
    return PairScan(pairs, unpaired)


def _read_8bit(path: str | Path, max_pixels: int = MAX_INPUT_PIXELS) -> np.ndarray:
    """Decode an image as stored: uint8 HxW or HxWxC in OpenCV's BGR(A) channel order.
    A PNG, JPEG or TIFF whose header says more than ``max_pixels`` pixels is refused before
    decoding (ImageTooLargeError)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'image file {path} does not exist')
    data = path.read_bytes()
    size = file_image_size(data)
    if size is not None and size[0] * size[1] > max_pixels:
        raise ImageTooLargeError(
            f'image file {path} is {size[0]}x{size[1]} = {size[0] * size[1]} pixels, above '
            f'the limit of {max_pixels} (--max-input-pixels raises it)')
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ImageReadError(f'cannot decode image file {path} (corrupt or unsupported format)')
    if image.dtype != np.uint8:
        raise ImageReadError(
            f'image file {path} has {image.dtype} pixels, expected 8-bit (uint8); convert '
            f'16-bit thermal frames to 8 bits first (scene normalisation, not a rescale)')
    if image.ndim == 3 and image.shape[2] not in (1, 3, 4):
        raise ImageReadError(f'image file {path} has {image.shape[2]} channels, expected 1, 3 '
                             f'or 4')
    return image


def bt601_luma(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma of a uint8 HxWx3 RGB image, rounded half up: uint8 HxW."""
    luma = rgb.astype(np.float64) @ LUMA_WEIGHTS
    return np.floor(luma + 0.5).astype(np.uint8)


def read_gray(path: str | Path, max_pixels: int = MAX_INPUT_PIXELS) -> np.ndarray:
    """Read an image as uint8 HxW gray levels (3/4-channel: BT.601 luma, alpha ignored)."""
    image = _read_8bit(path, max_pixels)
    if image.ndim == 2:
        return image
    if image.shape[2] == 1:
        return image[:, :, 0]
    return bt601_luma(image[:, :, 2::-1])


def read_rgb(path: str | Path, max_pixels: int = MAX_INPUT_PIXELS) -> np.ndarray:
    """Read an image as uint8 HxWx3 RGB (a gray file is replicated to three channels)."""
    image = _read_8bit(path, max_pixels)
    if image.ndim == 2 or image.shape[2] == 1:
        return np.repeat(image.reshape(image.shape[0], image.shape[1], 1), 3, axis=2)
    return np.ascontiguousarray(image[:, :, 2::-1])
