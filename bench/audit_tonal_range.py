"""Tonal-range audit (issue 21): where the fused image loses its blacks and whites.

Runs the shipped default model through the frame step's stages (occo_ros.pipeline:
preprocess, infer, compose) and prints, per data set, the mean over images of the 0.5th and
99.5th luma percentile at each stage:

* the sources: infrared (8-bit gray) and visible BT.601 luma;
* the network input: visible Y and infrared after normalisation (x 255);
* the network output (fused Y x 255, unrounded);
* the published image's BT.601 luma, with each color_mode;
* for reference, pixel-wise max(IR, visible), the target of the intensity loss.

Data sets: ../shared/data/eval/msrs and eval/roadscene as occo-eval fuses them
(fuse_folder.image_pair_pipeline: infrared /255, network at the pair's size) and the
synthetic night street (occo_ros.synthetic.scene, node defaults: smoothed percentile thermal
normalisation, 320x256 network, 640x512 output, the launch file's synthetic crop).

    python -m bench.audit_tonal_range [--limit N] [--frames N]

(from the repository root). Takes about 2 minutes on the 2-core development machine.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from bench.machine import cpu_description
from occo_ros.core.color import COLOR_MODES, compose_rgb
from occo_ros.engines import EngineSpec, create_engine
from occo_ros.io.image_pairs import find_pairs, read_gray, read_rgb
from occo_ros.params import SPECS, FusionSettings, check_params
from occo_ros.pipeline import FusionPipeline, image_pair_pipeline
from occo_ros.ros.launch_config import SYNTHETIC_CROP, SYNTHETIC_HOMOGRAPHY
from occo_ros.synthetic.scene import SyntheticScene
from occo_ros.util.resources import default_model_path

REPO = Path(__file__).resolve().parents[1]
EVAL = REPO.parent / 'shared' / 'data' / 'eval'
PERCENTILES = (0.5, 99.5)
STAGES = ('IR source', 'visible luma', 'network input IR', 'network input visible',
          'network output', *(f'published ({mode})' for mode in COLOR_MODES),
          'max(IR, visible)')


def luma(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma of a uint8 RGB image, float32."""
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)


def stage_images(pipeline: FusionPipeline, thermal: np.ndarray, rgb: np.ndarray,
                 ) -> dict[str, np.ndarray]:
    """Every stage's luma for one pair (sources at their own size, the rest as they come)."""
    prepared = pipeline.preprocess(thermal, rgb, 'rgb')
    fused = pipeline.infer(prepared)
    y_out = cv2.resize(fused, pipeline.output_size, interpolation=cv2.INTER_LINEAR)
    ir8 = thermal if thermal.dtype == np.uint8 else np.round(prepared.infrared[0, 0] * 255)
    visible = luma(rgb)
    images = {'IR source': ir8, 'visible luma': visible,
              'network input IR': prepared.infrared[0, 0] * 255,
              'network input visible': prepared.visible_y[0, 0] * 255,
              'network output': fused * 255}
    for mode in COLOR_MODES:
        images[f'published ({mode})'] = luma(compose_rgb(y_out, prepared.chroma, 'rgb', mode))
    if ir8.shape == visible.shape:
        images['max(IR, visible)'] = np.maximum(ir8.astype(np.float32), visible)
    return images


def audit(pairs) -> dict[str, tuple[float, float]]:
    """Mean over pairs of each stage's (0.5th, 99.5th) percentile; ``pairs`` yields
    (pipeline, thermal, rgb)."""
    values: dict[str, list] = {}
    for pipeline, thermal, rgb in pairs:
        for stage, image in stage_images(pipeline, thermal, rgb).items():
            values.setdefault(stage, []).append(np.percentile(image, PERCENTILES))
    return {stage: tuple(np.mean(v, axis=0)) for stage, v in values.items()}


def eval_pairs(engine, name: str, limit: int | None):
    scan = find_pairs(EVAL / name / 'ir', EVAL / name / 'vi')
    for pair in scan.pairs[:limit]:
        ir, rgb = read_gray(pair.ir_path), read_rgb(pair.vi_path)
        yield image_pair_pipeline(engine, (ir.shape[1], ir.shape[0])), ir, rgb


def synthetic_pairs(engine, frames: int):
    values = {name: spec.default for name, spec in SPECS.items()}
    values.update(crop=SYNTHETIC_CROP, homography=SYNTHETIC_HOMOGRAPHY)
    settings = FusionSettings.from_values(check_params(values))
    pipeline = FusionPipeline.from_settings(settings, engine)
    scene = SyntheticScene()
    for index in range(frames):
        t = 2.0 * index
        yield pipeline, scene.thermal(t), cv2.cvtColor(scene.rgb(t), cv2.COLOR_BGR2RGB)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--limit', type=int, default=None, help='pairs per eval set')
    parser.add_argument('--frames', type=int, default=10, help='synthetic frames (2 s apart)')
    args = parser.parse_args(argv)
    spec = replace(EngineSpec(backend='torch', num_threads=1),
                   model_path=str(default_model_path()))
    sets = {}
    for name in ('msrs', 'roadscene'):
        engine = create_engine(spec)    # torch: any input size
        sets[f'eval/{name}'] = audit(eval_pairs(engine, name, args.limit))
    sets['synthetic'] = audit(synthetic_pairs(create_engine(spec), args.frames))
    print(f'Tonal range, mean over images of the 0.5th / 99.5th luma percentile '
          f'({default_model_path().name}; {cpu_description()})\n')
    print('| stage | ' + ' | '.join(sets) + ' |')
    print('|---|' + '---:|' * len(sets))
    for stage in STAGES:
        cells = [f'{r[stage][0]:.1f} / {r[stage][1]:.1f}' if stage in r else '-'
                 for r in sets.values()]
        print(f'| {stage} | ' + ' | '.join(cells) + ' |')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
