"""Contact sheets of issue 21: IR | visible | fused before (keep_chroma) | fused after
(preserve_saturation), one PNG per pair, for the model card.

Each pair goes through occo-eval's frame step (fuse_folder.image_pair_pipeline) with the
shipped default model, once per color_mode.

    python -m bench.contact_sheets --out models/images SET/STEM [SET/STEM ...]

e.g. ``msrs/00004N roadscene/FLIR_00288`` (sets under ../shared/data/eval).
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from occo_ros.core.codec import DecodedImage
from occo_ros.core.color import COLOR_MODES
from occo_ros.engines import EngineSpec, create_engine
from occo_ros.io.image_pairs import images_by_stem, read_gray, read_rgb
from occo_ros.pipeline import image_pair_pipeline
from occo_ros.util.resources import default_model_path

REPO = Path(__file__).resolve().parents[1]
EVAL = REPO.parent / 'shared' / 'data' / 'eval'
TILE_HEIGHT = 140
LABEL_HEIGHT = 22
LABELS = ('IR', 'visible', 'before: keep_chroma', 'after: preserve_saturation')


def tile(bgr: np.ndarray, label: str) -> np.ndarray:
    width = round(bgr.shape[1] * TILE_HEIGHT / bgr.shape[0])
    image = cv2.resize(bgr, (width, TILE_HEIGHT), interpolation=cv2.INTER_AREA)
    strip = np.zeros((LABEL_HEIGHT, width, 3), np.uint8)
    cv2.putText(strip, label, (4, LABEL_HEIGHT - 7), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                (255, 255, 255), 1, cv2.LINE_AA)
    return np.vstack([strip, image])


def sheet(engine, set_name: str, stem: str) -> np.ndarray:
    ir = read_gray(images_by_stem(EVAL / set_name / 'ir')[stem])
    rgb = read_rgb(images_by_stem(EVAL / set_name / 'vi')[stem])
    size = (ir.shape[1], ir.shape[0])
    fused = []
    for mode in reversed(COLOR_MODES):            # keep_chroma (before) first
        pipeline = image_pair_pipeline(engine, size)
        pipeline.color_mode = mode
        frame = pipeline.fuse_frame(ir, DecodedImage(rgb, 'rgb'), encoding='bgr8')
        fused.append(frame.pixels)
    images = [cv2.cvtColor(ir, cv2.COLOR_GRAY2BGR), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
              *fused]
    labels = (f'{set_name}/{stem} IR',) + LABELS[1:]
    return np.hstack([tile(image, label) for image, label in zip(images, labels)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', type=Path, required=True)
    parser.add_argument('pairs', nargs='+', help='SET/STEM')
    args = parser.parse_args(argv)
    engine = create_engine(replace(EngineSpec(backend='torch', num_threads=1),
                                   model_path=str(default_model_path())))
    args.out.mkdir(parents=True, exist_ok=True)
    for pair in args.pairs:
        set_name, stem = pair.split('/')
        path = args.out / f'issue21_{set_name}_{stem}.png'
        cv2.imwrite(str(path), sheet(engine, set_name, stem), [cv2.IMWRITE_PNG_COMPRESSION, 9])
        print(f'{path} {path.stat().st_size / 1024:.0f} KB')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
