"""Per-frame cost of fused/image/compressed: JPEG encoding of a 640x512 rgb8 image (issue 19).

What the node adds per fused frame while something subscribes to fused/image/compressed
(codec.jpeg_fields: RGB->BGR and cv2.imencode), on the real visible images of
../shared/data/eval/msrs/vi resized to the fused size (JPEG cost depends on the content), at
several qualities. Goal: <= 5 ms per frame on the development CPU. Nothing is encoded while
nobody subscribes (test_fusion_node checks the counter).

    python bench/bench_compressed.py [--size 640 512] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
import sys
import time

import cv2
import numpy as np

from occo_ros.core.codec import jpeg_fields

REPO = Path(__file__).resolve().parents[1]
IMAGES = REPO.parent / 'shared' / 'data' / 'eval' / 'msrs' / 'vi'


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--size', type=int, nargs=2, default=(640, 512), metavar=('W', 'H'))
    parser.add_argument('--repeat', type=int, default=5, help='encodes of each image')
    parser.add_argument('--qualities', type=int, nargs='+', default=(50, 80, 95))
    args = parser.parse_args(argv)
    paths = sorted(IMAGES.glob('*.png'))
    if not paths:
        sys.exit(f'no images in {IMAGES}')
    frames = [np.ascontiguousarray(cv2.cvtColor(
        cv2.resize(cv2.imread(str(p)), tuple(args.size), interpolation=cv2.INTER_AREA),
        cv2.COLOR_BGR2RGB)) for p in paths]
    jpeg_fields(frames[0], 'rgb8', 80)       # warm-up (libjpeg tables)
    results = {}
    for quality in args.qualities:
        times, sizes = [], []
        for frame in frames:
            for _ in range(args.repeat):
                start = time.perf_counter()
                fields = jpeg_fields(frame, 'rgb8', quality)
                times.append((time.perf_counter() - start) * 1e3)
            sizes.append(len(fields['data']))
        results[quality] = {'ms_p50': round(float(np.percentile(times, 50)), 2),
                            'ms_p99': round(float(np.percentile(times, 99)), 2),
                            'kb_mean': round(float(np.mean(sizes)) / 1024, 1)}
    raw_kb = args.size[0] * args.size[1] * 3 / 1024
    print(json.dumps({'size': list(args.size), 'images': len(frames), 'raw_kb': raw_kb,
                      'jpeg': results}))
    return 0


if __name__ == '__main__':
    sys.exit(main())
