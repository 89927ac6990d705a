"""occo-masks: per-modality binary object masks for OCCO training (OCCO_METHOD.md §5).

Writes ``OUT/mask_vi/<stem>.png`` and ``OUT/mask_ir/<stem>.png`` (uint8 0/255, the pair's
size) and a contact sheet ``OUT/contact_sheet.png`` for inspection.

Two ways to find candidate objects, then one discernment rule:

* ``--method gdino-sam``: Grounding DINO (text-prompted boxes) + SAM (box-prompted masks)
  through Hugging Face transformers, run on each modality separately from local weights the
  user names (never downloaded: local_files_only=True and HF_HUB_OFFLINE=1).
* ``--method fallback`` (weight-free): hot objects in the thermal image (pixels well above a
  smooth local background, cleaned by morphology, connected components kept by size) plus
  salient regions of the visible luma (spectral-residual saliency, Hou & Zhang 2007,
  above 3x its mean, cleaned the same way). A heuristic stand-in for the detector.
* Precomputed mask folders from any other source need no tool: occo-train reads mask_vi/
  and mask_ir/ PNGs directly and thresholds them (> 127) on load (training.data).

Mask discernment (both methods): every candidate object O (from either modality; candidates
may overlap) is tested in each modality by its local contrast against a ring R around it
(R = O dilated by max(ring, sqrt(area)/4) pixels, minus every candidate object):

    d = |mean(O) - mean(R)| / sqrt((var(O) + var(R)) / 2 + noise^2)

(images in [0, 1], noise = 0.02, about 5 gray levels). The object goes into that modality's
mask when d >= threshold (default 1.0): objects seen by both sensors land in both masks (the
shared region S of OCCO), objects seen by one sensor only (a pedestrian in the dark) in one.
The fallback also drops components touching the top image border (sky, canopy, roofs in
road scenes) and keeps components of 0.02 % to 15 % of the image area.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
import os
from pathlib import Path
import sys

import cv2
import numpy as np
from tqdm import tqdm

from occo_ros.io.image_pairs import ImageReadError, find_pairs, read_gray, read_rgb

NOISE_FLOOR = 0.02
DEFAULT_PROMPTS = 'person. car. bicycle. motorcycle. bus. truck.'


@dataclass(frozen=True)
class DiscernmentRule:
    """Per-modality contrast test of an object against a ring around it (module docstring).

    Args:
        threshold: minimum contrast d for an object to count as seen in a modality.
        ring: ring width in pixels (at least 3; scaled up for large objects, see `ring_for`).
        noise: noise floor of the contrast denominator, in [0, 1] intensity units.
    """

    threshold: float = 1.0
    ring: int = 8
    noise: float = NOISE_FLOOR

    def ring_for(self, area: int) -> int:
        """Ring width for an object of `area` pixels: max(ring, 0.25 sqrt(area))."""
        return max(self.ring, int(0.25 * np.sqrt(area)))


def local_contrast(image: np.ndarray, region: np.ndarray, ring: np.ndarray,
                   noise: float = NOISE_FLOOR) -> float:
    """Contrast d of bool `region` against bool `ring` in float image (HxW, [0, 1]).

    Returns 0.0 when the ring is empty (no surround to compare with).
    """
    if not ring.any() or not region.any():
        return 0.0
    inside, outside = image[region], image[ring]
    spread = np.sqrt((inside.var() + outside.var()) / 2 + noise ** 2)
    return float(abs(inside.mean() - outside.mean()) / spread)


def discern(objects: Sequence[np.ndarray], visible: np.ndarray, infrared: np.ndarray,
            rule: DiscernmentRule = DiscernmentRule()) -> tuple[np.ndarray, np.ndarray]:
    """Split object masks into a visible and an infrared mask.

    Args:
        objects: bool HxW masks, one per candidate object (they may overlap).
        visible, infrared: float32 HxW in [0, 1].

    Returns:
        (mask_vi, mask_ir): bool HxW unions of the objects discernible in each modality.
    """
    mask_vi = np.zeros(visible.shape, bool)
    mask_ir = np.zeros(visible.shape, bool)
    if not objects:
        return mask_vi, mask_ir
    any_object = np.logical_or.reduce(objects)
    for region in objects:
        area = int(region.sum())
        if not area:
            continue
        width = rule.ring_for(area)
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * width + 1, 2 * width + 1))
        ring = cv2.dilate(region.astype(np.uint8), kernel).astype(bool) & ~any_object
        if local_contrast(visible, region, ring, rule.noise) >= rule.threshold:
            mask_vi |= region
        if local_contrast(infrared, region, ring, rule.noise) >= rule.threshold:
            mask_ir |= region
    return mask_vi, mask_ir


def components(mask: np.ndarray, min_area: int, max_fraction: float,
               drop_top_border: bool = False) -> list[np.ndarray]:
    """Connected components of bool `mask` with min_area <= area <= max_fraction*H*W.

    drop_top_border: also drop components touching the top row (sky, canopy, roofs in
    road scenes; people and vehicles rarely touch it). Returns bool HxW masks.
    """
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), 8)
    max_area = max_fraction * mask.size
    kept = []
    for label in range(1, count):
        if not min_area <= stats[label, cv2.CC_STAT_AREA] <= max_area:
            continue
        if drop_top_border and stats[label, cv2.CC_STAT_TOP] == 0:
            continue
        kept.append(labels == label)
    return kept


def _clean(mask: np.ndarray, close: int) -> np.ndarray:
    """Open 3x3 (remove speckle), close `close` px (join parts), fill holes: bool HxW."""
    mask = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (close, close))
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    filled = np.zeros_like(mask)
    cv2.drawContours(filled, contours, -1, 1, thickness=cv2.FILLED)
    return filled.astype(bool)


@dataclass(frozen=True)
class FallbackProposer:
    """Weight-free object candidates: hot thermal blobs and visible spectral-residual saliency.

    Args:
        hot_k: a thermal pixel is hot when (ir - background) > hot_k * robust std of that
            residual and also > hot_min (intensity units).
        hot_min: minimum absolute excess over the background, [0, 1] units.
        background_frac: Gaussian sigma of the thermal background, as a fraction of the
            image height (objects much smaller than this stand out from it).
        saliency_k: a visible pixel is salient when its saliency > saliency_k * mean saliency.
        min_area_frac: smallest component kept, fraction of the image area (>= 20 px).
        max_area_frac: largest component kept, fraction of the image area.
    """

    hot_k: float = 3.0
    hot_min: float = 0.08
    background_frac: float = 0.08
    saliency_k: float = 3.0
    min_area_frac: float = 2e-4
    max_area_frac: float = 0.15

    def hot_mask(self, infrared: np.ndarray) -> np.ndarray:
        """Bool HxW: pixels clearly warmer than their smooth surroundings."""
        sigma = max(3.0, self.background_frac * infrared.shape[0])
        background = cv2.GaussianBlur(infrared, (0, 0), sigma)
        residual = infrared - background
        spread = 1.4826 * np.median(np.abs(residual - np.median(residual)))
        return residual > max(self.hot_k * spread, self.hot_min)

    def salient_mask(self, visible: np.ndarray) -> np.ndarray:
        """Bool HxW: spectral-residual salient pixels of the visible luma."""
        height, width = visible.shape
        scale = 128.0 / max(height, width)
        small = cv2.resize(visible, (max(8, round(width * scale)), max(8, round(height * scale))),
                           interpolation=cv2.INTER_AREA)
        spectrum = np.fft.fft2(small)
        log_amplitude = np.log(np.abs(spectrum) + 1e-8)
        residual = log_amplitude - cv2.blur(log_amplitude, (3, 3))
        saliency = np.abs(np.fft.ifft2(np.exp(residual + 1j * np.angle(spectrum)))) ** 2
        saliency = cv2.GaussianBlur(saliency.astype(np.float32), (0, 0), 2.5)
        saliency = cv2.resize(saliency, (width, height), interpolation=cv2.INTER_LINEAR)
        return saliency > self.saliency_k * saliency.mean()

    def __call__(self, visible: np.ndarray, infrared: np.ndarray,
                 visible_rgb: np.ndarray) -> list[np.ndarray]:
        """Candidate objects (bool HxW masks): hot thermal blobs, then salient visible ones.

        visible, infrared: float32 HxW in [0, 1]; visible_rgb is unused (same signature as
        the detector pipeline). Components touching the top border are dropped.
        """
        close = max(3, int(0.01 * visible.shape[0]) | 1)
        min_area = max(20, int(self.min_area_frac * visible.size))
        return [obj for mask in (self.hot_mask(infrared), self.salient_mask(visible))
                for obj in components(_clean(mask, close), min_area, self.max_area_frac,
                                      drop_top_border=True)]


class GroundedSamProposer:
    """Candidate objects from Grounding DINO boxes refined by SAM, on each modality.

    Both models load from local folders written by `save_pretrained` (model + processor)
    with local_files_only=True, so nothing is downloaded (the occo-masks CLI also sets
    HF_HUB_OFFLINE=1 for its own process). The thermal image is fed as 3-channel gray.

    Args:
        gdino_path: folder of a GroundingDinoForObjectDetection checkpoint and its processor.
        sam_path: folder of a SamModel checkpoint and its processor.
        prompts: Grounding DINO text prompt, classes separated by ' . '.
        box_threshold: minimum box confidence.
        text_threshold: minimum text-token confidence.
        device: torch device string.
    """

    def __init__(self, gdino_path: str | Path, sam_path: str | Path,
                 prompts: str = DEFAULT_PROMPTS, box_threshold: float = 0.35,
                 text_threshold: float = 0.25, device: str = 'cpu') -> None:
        try:
            import torch
            from transformers import (
                AutoModelForZeroShotObjectDetection,
                AutoProcessor,
                SamModel,
                SamProcessor,
            )
        except ImportError as exc:
            raise RuntimeError('--method gdino-sam needs the transformers package '
                               f'(pip install transformers): {exc}') from exc
        for name, path in (('Grounding DINO', gdino_path), ('SAM', sam_path)):
            if not Path(path).is_dir():
                raise FileNotFoundError(f'{name} model folder not found: {path} (give a local '
                                        'folder; weights are never downloaded)')
        self.torch = torch
        self.device = torch.device(device)
        self.gdino_processor = AutoProcessor.from_pretrained(gdino_path, local_files_only=True)
        self.gdino = AutoModelForZeroShotObjectDetection.from_pretrained(
            gdino_path, local_files_only=True).to(self.device).eval()
        self.sam_processor = SamProcessor.from_pretrained(sam_path, local_files_only=True)
        self.sam = SamModel.from_pretrained(sam_path, local_files_only=True).to(
            self.device).eval()
        self.prompts = prompts
        self.box_threshold, self.text_threshold = box_threshold, text_threshold

    def boxes(self, rgb: np.ndarray) -> np.ndarray:
        """(K, 4) float boxes x0, y0, x1, y1 in pixels of uint8 HxWx3 `rgb` for the prompts."""
        from PIL import Image
        inputs = self.gdino_processor(images=Image.fromarray(rgb), text=self.prompts,
                                      return_tensors='pt').to(self.device)
        with self.torch.no_grad():
            outputs = self.gdino(**inputs)
        result = self.gdino_processor.post_process_grounded_object_detection(
            outputs, inputs['input_ids'], threshold=self.box_threshold,
            text_threshold=self.text_threshold, target_sizes=[rgb.shape[:2]])[0]
        return result['boxes'].detach().cpu().numpy().reshape(-1, 4)

    def segment(self, rgb: np.ndarray, boxes: np.ndarray) -> list[np.ndarray]:
        """One bool HxW mask per box (SAM, single-mask output)."""
        if not len(boxes):
            return []
        from PIL import Image
        inputs = self.sam_processor(images=Image.fromarray(rgb), input_boxes=[boxes.tolist()],
                                    return_tensors='pt').to(self.device)
        with self.torch.no_grad():
            outputs = self.sam(**inputs, multimask_output=False)
        masks = self.sam_processor.post_process_masks(
            outputs.pred_masks.cpu(), inputs['original_sizes'].cpu(),
            inputs['reshaped_input_sizes'].cpu())[0]          # (K, 1, H, W) bool
        return [m[0].numpy().astype(bool) for m in masks]

    def __call__(self, visible: np.ndarray, infrared: np.ndarray,
                 visible_rgb: np.ndarray) -> list[np.ndarray]:
        """Candidate objects (bool HxW masks) found in the visible and the thermal image."""
        thermal_rgb = np.repeat(np.round(infrared * 255).astype(np.uint8)[:, :, None], 3, 2)
        objects = []
        for rgb in (visible_rgb, thermal_rgb):
            objects += [m for m in self.segment(rgb, self.boxes(rgb)) if m.any()]
        return objects


def overlay(visible_rgb: np.ndarray, mask_vi: np.ndarray, mask_ir: np.ndarray) -> np.ndarray:
    """RGB uint8 image with visible-only objects green, infrared-only red, shared yellow."""
    out = visible_rgb.astype(np.float32)
    colours = {(True, False): (0, 255, 0), (False, True): (255, 0, 0), (True, True): (255, 255, 0)}
    for (in_vi, in_ir), colour in colours.items():
        region = (mask_vi == in_vi) & (mask_ir == in_ir) & (mask_vi | mask_ir)
        out[region] = 0.5 * out[region] + 0.5 * np.array(colour, np.float32)
    return out.astype(np.uint8)


def contact_sheet(rows: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
                  tile_width: int = 320) -> np.ndarray:
    """RGB uint8 sheet, one row per pair: visible, infrared, overlay of the masks.

    rows: (visible_rgb uint8 HxWx3, infrared uint8 HxW, mask_vi bool, mask_ir bool).
    """
    lines = []
    for rgb, infrared, mask_vi, mask_ir in rows:
        height = round(rgb.shape[0] * tile_width / rgb.shape[1])
        tiles = [rgb, np.repeat(infrared[:, :, None], 3, axis=2),
                 overlay(rgb, mask_vi, mask_ir)]
        lines.append(np.concatenate([cv2.resize(t, (tile_width, height),
                                                interpolation=cv2.INTER_AREA)
                                     for t in tiles], axis=1))
    width = max(line.shape[1] for line in lines)
    return np.concatenate([np.pad(line, ((0, 2), (0, width - line.shape[1]), (0, 0)))
                           for line in lines], axis=0)


def build_parser() -> argparse.ArgumentParser:
    """The occo-masks command line."""
    parser = argparse.ArgumentParser(
        prog='occo-masks',
        description='Write per-modality binary object masks (mask_vi/, mask_ir/) for OCCO '
                    'training, plus a contact sheet for inspection.')
    parser.add_argument('--ir', required=True, help='folder of infrared images')
    parser.add_argument('--vi', required=True, help='folder of visible RGB images (same stems)')
    parser.add_argument('--out', required=True,
                        help='output folder; receives mask_vi/, mask_ir/ and contact_sheet.png')
    parser.add_argument('--method', choices=('fallback', 'gdino-sam'), default='fallback',
                        help='object candidates: weight-free heuristics (fallback) or Grounding '
                             'DINO + SAM from local weights (gdino-sam) (default: fallback)')
    parser.add_argument('--gdino', help='gdino-sam: local Grounding DINO folder (model + '
                        'processor, as written by save_pretrained)')
    parser.add_argument('--sam', help='gdino-sam: local SAM folder (model + processor)')
    parser.add_argument('--prompts', default=DEFAULT_PROMPTS,
                        help=f'gdino-sam: text prompt (default: {DEFAULT_PROMPTS!r})')
    parser.add_argument('--box-threshold', type=float, default=0.35,
                        help='gdino-sam: minimum box confidence, 0-1 (default: 0.35)')
    parser.add_argument('--text-threshold', type=float, default=0.25,
                        help='gdino-sam: minimum text-token confidence, 0-1 (default: 0.25)')
    parser.add_argument('--device', default='cpu',
                        help="gdino-sam: torch device, e.g. 'cpu', 'cuda' (default: cpu)")
    parser.add_argument('--contrast-threshold', type=float, default=1.0,
                        help='discernment: minimum object/ring contrast d for an object to '
                             "enter a modality's mask (default: 1.0)")
    parser.add_argument('--ring', type=int, default=8,
                        help='discernment: minimum ring width around an object, pixels '
                             '(default: 8)')
    parser.add_argument('--sheet-pairs', type=int, default=12,
                        help='pairs shown in the contact sheet, evenly spaced (default: 12; '
                             '0: no sheet)')
    parser.add_argument('--skip-existing', action='store_true',
                        help='keep pairs whose two mask files already exist')
    return parser


def make_proposer(args: argparse.Namespace):
    """The candidate finder the options ask for."""
    if args.method == 'fallback':
        return FallbackProposer()
    if not args.gdino or not args.sam:
        raise ValueError('--method gdino-sam needs --gdino and --sam model folders')
    return GroundedSamProposer(args.gdino, args.sam, args.prompts, args.box_threshold,
                               args.text_threshold, args.device)


def write_mask(path: Path, mask: np.ndarray) -> None:
    """Write a bool mask as a 0/255 8-bit PNG; raise OSError when it cannot be written."""
    if not cv2.imwrite(str(path), mask.astype(np.uint8) * 255):
        raise OSError(f'cannot write mask {path}')


def main(argv: list[str] | None = None) -> int:
    """Entry point of occo-masks; returns the exit status (0 ok, 2 bad input)."""
    args = build_parser().parse_args(argv)
    if args.method == 'gdino-sam':
        # This process never talks to the Hugging Face hub (set before transformers loads).
        os.environ.setdefault('HF_HUB_OFFLINE', '1')
    try:
        scan = find_pairs(args.ir, args.vi)
        proposer = make_proposer(args)
    except (ValueError, RuntimeError, OSError) as exc:
        print(f'occo-masks: error: {exc}', file=sys.stderr)
        return 2
    for path in scan.unpaired:
        print(f'skipped (unpaired): {path}', file=sys.stderr)
    rule = DiscernmentRule(args.contrast_threshold, args.ring)
    out = Path(args.out)
    for folder in ('mask_vi', 'mask_ir'):
        (out / folder).mkdir(parents=True, exist_ok=True)
    sheet_stems = set()
    if args.sheet_pairs and scan.pairs:
        picks = np.linspace(0, len(scan.pairs) - 1, min(args.sheet_pairs, len(scan.pairs)))
        sheet_stems = {scan.pairs[i].stem for i in picks.round().astype(int)}
    rows, counts = [], {'written': 0, 'kept': 0, 'empty': 0, 'unreadable': 0, 'mismatch': 0}
    for pair in tqdm(scan.pairs, desc='occo-masks', unit='pair'):
        paths = [out / folder / f'{pair.stem}.png' for folder in ('mask_vi', 'mask_ir')]
        if args.skip_existing and all(p.is_file() for p in paths):
            counts['kept'] += 1
            continue
        try:
            rgb, infrared = read_rgb(pair.vi_path), read_gray(pair.ir_path)
        except (ImageReadError, FileNotFoundError) as exc:
            tqdm.write(f'skipped (unreadable): {exc}')
            counts['unreadable'] += 1
            continue
        if rgb.shape[:2] != infrared.shape:
            tqdm.write(f'skipped (size mismatch): {pair.ir_path} {infrared.shape[::-1]} vs '
                       f'{pair.vi_path} {rgb.shape[1::-1]} (WxH)')
            counts['mismatch'] += 1
            continue
        visible = read_gray(pair.vi_path).astype(np.float32) / 255
        infrared_f = infrared.astype(np.float32) / 255
        mask_vi, mask_ir = discern(proposer(visible, infrared_f, rgb), visible, infrared_f,
                                   rule)
        write_mask(paths[0], mask_vi)
        write_mask(paths[1], mask_ir)
        counts['written'] += 1
        counts['empty'] += not (mask_vi.any() or mask_ir.any())
        if pair.stem in sheet_stems:
            rows.append((rgb, infrared, mask_vi, mask_ir))
    if rows:
        sheet = contact_sheet(rows)
        cv2.imwrite(str(out / 'contact_sheet.png'), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    print('occo-masks: ' + ', '.join(f'{v} {k}' for k, v in counts.items())
          + f', {len(scan.unpaired)} unpaired; empty pairs are skipped by training')
    return 0


if __name__ == '__main__':
    sys.exit(main())
