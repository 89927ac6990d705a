"""Training data for OCCO: paired infrared / visible folders, object masks, random crops.

Input normalisation is the one inference uses (recorded in every checkpoint as
INPUT_NORMALIZATION): visible = BT.601 luma of the 8-bit RGB image (rounded to 8 bits, as
`occo_ros.io.image_pairs.read_gray` and the node's pipeline compute it) / 255; infrared =
8-bit gray / 255 (a 3-channel infrared file becomes its BT.601 luma). No per-image min-max.

Pairs are held in memory as uint8 (about 4 bytes per pixel per pair with masks). Bad pairs
are skipped and counted with a message naming the files: unpaired stems, unreadable images,
infrared/visible size mismatch, missing or mismatched masks, empty masks (when masks are
required), and images smaller than the crop when the small-image policy is 'skip'.

Optional dense targets: one precomputed gray image per pair (e.g. the pair's L_pixel
optimum, written by bench/bench_objective_ceiling.py --save-images), cropped with the pair;
the trainer adds an L1 term towards it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from occo_ros.io.image_pairs import ImageReadError, find_pairs, read_gray

INPUT_NORMALIZATION = {
    'visible': 'BT.601 luma Y = 0.299R + 0.587G + 0.114B of the 8-bit RGB image, rounded '
               'to uint8, divided by 255',
    'infrared': '8-bit gray (BT.601 luma if the file has 3 channels) divided by 255',
    'range': [0.0, 1.0],
    'per_image_minmax': False,
}
MASK_FOLDERS = ('mask_vi', 'mask_ir')
MASK_THRESHOLD = 127        # mask files are 0/255; anything above this is object


@dataclass
class PairImages:
    """One pair in memory: uint8 HxW visible luma and infrared, bool HxW masks or None,
    uint8 HxW dense target or None."""

    stem: str
    visible: np.ndarray
    infrared: np.ndarray
    mask_vi: np.ndarray | None = None
    mask_ir: np.ndarray | None = None
    target: np.ndarray | None = None

    @property
    def objects(self) -> np.ndarray:
        """Union of both object masks, bool HxW."""
        return self.mask_vi | self.mask_ir


@dataclass
class LoadReport:
    """What `load_pairs` kept and skipped (each problem lists 'file: reason' strings)."""

    loaded: int = 0
    padded: list[str] = field(default_factory=list)
    problems: dict[str, list[str]] = field(default_factory=dict)

    def skip(self, kind: str, message: str) -> None:
        self.problems.setdefault(kind, []).append(message)

    @property
    def skipped(self) -> int:
        return sum(len(v) for k, v in self.problems.items() if k != 'unpaired')

    def summary(self) -> str:
        """One line: counts per outcome."""
        parts = [f'{self.loaded} pairs loaded']
        if self.padded:
            parts.append(f'{len(self.padded)} padded to the crop size')
        parts += [f'{len(v)} {k}' for k, v in sorted(self.problems.items())]
        return ', '.join(parts)


def read_mask(path: Path) -> np.ndarray:
    """Read a mask image as bool HxW (gray > 127); raises FileNotFoundError/ImageReadError."""
    return read_gray(path) > MASK_THRESHOLD


def _image_path(folder: Path, stem: str) -> Path | None:
    """The image file for `stem` in `folder` (png preferred), or None."""
    for ext in ('.png', '.bmp', '.tif', '.tiff', '.jpg', '.jpeg'):
        candidate = folder / f'{stem}{ext}'
        if candidate.is_file():
            return candidate
    return None


def _pad_to(image: np.ndarray, height: int, width: int, reflect: bool) -> np.ndarray:
    """Pad bottom/right to at least height x width (reflect for images, zeros for masks)."""
    dh, dw = max(0, height - image.shape[0]), max(0, width - image.shape[1])
    if not dh and not dw:
        return image
    if reflect:
        return cv2.copyMakeBorder(image, 0, dh, 0, dw, cv2.BORDER_REFLECT_101)
    return np.pad(image, ((0, dh), (0, dw)))


def _load_one(pair, mask_root: Path | None, target_root: Path | None, crop: int,
              small_images: str, report: LoadReport) -> PairImages | None:
    """Read and check one pair; None (and a report entry) when it must be skipped."""
    try:
        visible, infrared = read_gray(pair.vi_path), read_gray(pair.ir_path)
    except (ImageReadError, FileNotFoundError) as exc:
        report.skip('unreadable', str(exc))
        return None
    if visible.shape != infrared.shape:
        report.skip('size mismatch', f'{pair.ir_path} is {infrared.shape[1]}x'
                    f'{infrared.shape[0]} but {pair.vi_path} is {visible.shape[1]}x'
                    f'{visible.shape[0]} (WxH); register the pair first')
        return None
    item = PairImages(pair.stem, visible, infrared)
    if mask_root is not None:
        masks = []
        for folder in MASK_FOLDERS:
            path = _image_path(mask_root / folder, pair.stem)
            if path is None:
                report.skip('missing mask', f'{mask_root / folder}/{pair.stem}.png missing')
                return None
            try:
                mask = read_mask(path)
            except (ImageReadError, FileNotFoundError) as exc:
                report.skip('unreadable', str(exc))
                return None
            if mask.shape != visible.shape:
                report.skip('size mismatch', f'mask {path} is {mask.shape[1]}x{mask.shape[0]}'
                            f', pair {pair.stem} is {visible.shape[1]}x{visible.shape[0]}')
                return None
            masks.append(mask)
        item.mask_vi, item.mask_ir = masks
        if not item.objects.any():
            report.skip('empty masks', f'{pair.stem}: no object pixels in either mask')
            return None
    if target_root is not None:
        path = _image_path(target_root, pair.stem)
        if path is None:
            report.skip('missing target', f'{target_root}/{pair.stem}.png missing')
            return None
        try:
            item.target = read_gray(path)
        except (ImageReadError, FileNotFoundError) as exc:
            report.skip('unreadable', str(exc))
            return None
        if item.target.shape != visible.shape:
            report.skip('size mismatch', f'target {path} is {item.target.shape[1]}x'
                        f'{item.target.shape[0]}, pair {pair.stem} is {visible.shape[1]}x'
                        f'{visible.shape[0]}')
            return None
    height, width = visible.shape
    if height < crop or width < crop:
        if small_images == 'skip':
            report.skip('too small', f'{pair.vi_path} is {width}x{height}, smaller than the '
                        f'{crop}x{crop} crop')
            return None
        report.padded.append(pair.stem)
        item.visible = _pad_to(item.visible, crop, crop, reflect=True)
        item.infrared = _pad_to(item.infrared, crop, crop, reflect=True)
        if item.target is not None:
            item.target = _pad_to(item.target, crop, crop, reflect=True)
        if mask_root is not None:
            item.mask_vi = _pad_to(item.mask_vi, crop, crop, reflect=False)
            item.mask_ir = _pad_to(item.mask_ir, crop, crop, reflect=False)
    return item


def load_pairs(roots: Sequence[str | Path], mask_roots: Sequence[str | Path] | None = None,
               crop: int = 256, small_images: str = 'pad',
               log: Callable[[str], None] = print,
               target_roots: Sequence[str | Path] | None = None
               ) -> tuple[list[PairImages], LoadReport]:
    """Load every valid pair of `roots` (each with ir/ and vi/), with masks if given.

    Args:
        roots: training folders.
        mask_roots: one folder per root holding mask_vi/ and mask_ir/, or None (no masks).
        crop: crop side; smaller images are padded (reflect) or skipped per `small_images`.
        small_images: 'pad' or 'skip'.
        log: receives one message per skipped file and a summary line.
        target_roots: one folder per root holding a dense target <stem>.png per pair, or
            None (no targets).

    Returns:
        (pairs, report). Raises ValueError if no usable pair remains.
    """
    if mask_roots is not None and len(mask_roots) != len(roots):
        raise ValueError(f'{len(mask_roots)} mask roots for {len(roots)} roots; give one each')
    if target_roots is not None and len(target_roots) != len(roots):
        raise ValueError(f'{len(target_roots)} target roots for {len(roots)} roots; give one '
                         'each')
    if small_images not in ('pad', 'skip'):
        raise ValueError(f"small_images={small_images!r}; expected 'pad' or 'skip'")
    report = LoadReport()
    pairs: list[PairImages] = []
    stems: set[str] = set()
    for index, root in enumerate(roots):
        root = Path(root)
        scan = find_pairs(root / 'ir', root / 'vi')
        for path in scan.unpaired:
            report.skip('unpaired', f'{path} has no partner with the same stem')
        mask_root = Path(mask_roots[index]) if mask_roots is not None else None
        target_root = Path(target_roots[index]) if target_roots is not None else None
        for pair in scan.pairs:
            if pair.stem in stems:
                report.skip('duplicate stem', f'{pair.ir_path}: stem already loaded from '
                            'another root')
                continue
            item = _load_one(pair, mask_root, target_root, crop, small_images, report)
            if item is not None:
                pairs.append(item)
                stems.add(pair.stem)
    report.loaded = len(pairs)
    for kind, messages in sorted(report.problems.items()):
        for message in messages:
            log(f'skipped ({kind}): {message}')
    log(f'training data: {report.summary()}')
    if not pairs:
        raise ValueError(f'no usable training pairs in {[str(r) for r in roots]}: '
                         f'{report.summary()}')
    return pairs, report


def choose_crop(objects: np.ndarray, crop: int, rng: np.random.Generator,
                tries: int = 20, min_pixels: int = 64) -> tuple[int, int]:
    """Top-left (y, x) of a crop x crop window of an image at least crop x crop in size.

    Up to `tries` uniform windows are drawn and the first holding >= min_pixels pixels of
    the bool mask `objects` is taken; if none does, the window is drawn among those
    containing a random object pixel (so it always contains one; `objects` must not be
    empty).
    """
    height, width = objects.shape
    for _ in range(tries):
        y, x = rng.integers(0, height - crop + 1), rng.integers(0, width - crop + 1)
        if np.count_nonzero(objects[y:y + crop, x:x + crop]) >= min_pixels:
            return int(y), int(x)
    pixels = np.flatnonzero(objects)
    py, px = divmod(int(pixels[rng.integers(len(pixels))]), width)
    y = rng.integers(max(0, py - crop + 1), min(py, height - crop) + 1)
    x = rng.integers(max(0, px - crop + 1), min(px, width - crop) + 1)
    return int(y), int(x)


def uniform_crop(shape: tuple[int, int], crop: int,
                 rng: np.random.Generator) -> tuple[int, int]:
    """Top-left (y, x) of a uniformly random crop x crop window in an image of `shape`."""
    return (int(rng.integers(0, shape[0] - crop + 1)), int(rng.integers(0, shape[1] - crop + 1)))


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 or bool HxW -> float32 (1, H, W) in [0, 1] (uint8 / 255; bool as 0/1)."""
    if image.dtype == np.bool_:
        return torch.from_numpy(image.astype(np.float32))[None]
    return torch.from_numpy(image.astype(np.float32) / np.float32(255.0))[None]


class CropDataset(Dataset):
    """Random crops of in-memory pairs: `crops_per_pair` items per pair per epoch.

    Item i of epoch e is drawn with its own generator seeded by (seed, e, i), so crops are
    reproducible across worker processes, distributed ranks and resumes. Call
    `set_epoch(e)` before each epoch.

    Items: {'visible', 'infrared'} float32 (1, crop, crop) in [0, 1], plus {'mask_vi',
    'mask_ir'} float32 {0, 1} when the pairs carry masks (crops then contain object pixels)
    and 'target' float32 in [0, 1] when they carry dense targets.
    """

    def __init__(self, pairs: Sequence[PairImages], crop: int = 256, crops_per_pair: int = 2,
                 tries: int = 20, min_mask_pixels: int = 64, flip: bool = True,
                 seed: int = 0) -> None:
        if not pairs:
            raise ValueError('CropDataset needs at least one pair')
        small = [p.stem for p in pairs if min(p.visible.shape) < crop]
        if small:
            raise ValueError(f'pairs smaller than the {crop}px crop: {small[:5]} (pad them)')
        self.pairs = list(pairs)
        self.with_masks = pairs[0].mask_vi is not None
        self.with_targets = pairs[0].target is not None
        self.crop, self.crops_per_pair = crop, crops_per_pair
        self.tries, self.min_mask_pixels = tries, min_mask_pixels
        self.flip, self.seed, self.epoch = flip, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.pairs) * self.crops_per_pair

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        pair = self.pairs[index // self.crops_per_pair]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        if self.with_masks:
            y, x = choose_crop(pair.objects, self.crop, rng, self.tries, self.min_mask_pixels)
        else:
            y, x = uniform_crop(pair.visible.shape, self.crop, rng)
        flip = self.flip and bool(rng.integers(2))
        images = {'visible': pair.visible, 'infrared': pair.infrared}
        if self.with_masks:
            images.update(mask_vi=pair.mask_vi, mask_ir=pair.mask_ir)
        if self.with_targets:
            images['target'] = pair.target
        item = {}
        for name, image in images.items():
            window = image[y:y + self.crop, x:x + self.crop]
            item[name] = to_tensor(np.ascontiguousarray(window[:, ::-1] if flip else window))
        return item
