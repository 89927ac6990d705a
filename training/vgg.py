"""Frozen VGG19 feature extractors for the OCCO contrastive loss (OCCO_METHOD.md §3).

VGG19 (Simonyan & Zisserman, 2015), convolutional part only, laid out like torchvision's
`vgg19().features` so that a torchvision ImageNet checkpoint (keys ``features.N.weight`` /
``features.N.bias``) loads as it is. Weights are never downloaded: the user names a file.

Fallback when no file is given: the same architecture with fixed-seed random weights
(Kaiming-normal, fan-out, zero bias; seed RANDOM_SEED). Random convolutional features are a
known but weaker perceptual prior than ImageNet features (they still respond to local
structure at several scales); the checkpoint records which extractor was used.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# BT.601 luma weights: the 1-channel first conv is this weighted sum of the RGB kernels.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)
RANDOM_SEED = 19
# Output channels per conv, 'M' = 2x2 max-pool (VGG19 configuration E).
VGG19_CFG = (64, 64, 'M', 128, 128, 'M', 256, 256, 256, 256, 'M',
             512, 512, 512, 512, 'M', 512, 512, 512, 512, 'M')


def _layer_names() -> dict[str, int]:
    """'reluB_K' -> index in the features Sequential (torchvision numbering)."""
    names, index, block, conv = {}, 0, 1, 0
    for item in VGG19_CFG:
        if item == 'M':
            block, conv, index = block + 1, 0, index + 1
        else:
            conv += 1
            names[f'relu{block}_{conv}'] = index + 1
            index += 2
    return names


LAYER_INDEX = _layer_names()


class VGG19Features(nn.Module):
    """VGG19 convolutional layers up to `last_layer`, frozen and in eval mode.

    Args:
        in_channels: 3 (RGB, expects ImageNet-normalised input) or 1 (first conv converted).
        last_layer: deepest ReLU built, e.g. 'relu5_4' or 'relu1_1'.

    forward(x, layers) with x (B, in_channels, H, W) -> {name: (B, C, H/2^k, W/2^k)} for the
    requested ReLU outputs (k = pools before the layer).
    """

    def __init__(self, in_channels: int = 3, last_layer: str = 'relu5_4') -> None:
        super().__init__()
        if last_layer not in LAYER_INDEX:
            raise ValueError(f'unknown VGG19 layer {last_layer!r}; known: {list(LAYER_INDEX)}')
        if in_channels not in (1, 3):
            raise ValueError(f'in_channels={in_channels}; expected 1 or 3')
        self.in_channels = in_channels
        self.last_layer = last_layer
        layers: list[nn.Module] = []
        channels = in_channels
        for item in VGG19_CFG:
            if len(layers) > LAYER_INDEX[last_layer]:
                break
            if item == 'M':
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(channels, item, 3, padding=1), nn.ReLU(inplace=False)]
                channels = item
        self.features = nn.Sequential(*layers[:LAYER_INDEX[last_layer] + 1])
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> VGG19Features:
        """A frozen extractor stays in eval mode."""
        return super().train(False)

    def forward(self, x: torch.Tensor, layers: tuple[str, ...]) -> dict[str, torch.Tensor]:
        wanted = {LAYER_INDEX[name]: name for name in layers}
        if max(wanted) >= len(self.features):
            raise ValueError(f'layers {layers} go deeper than {self.last_layer}')
        out = {}
        for index, module in enumerate(self.features):
            x = module(x)
            if index in wanted:
                out[wanted[index]] = x
                if len(out) == len(wanted):
                    break
        return out


def random_vgg19_state(seed: int = RANDOM_SEED) -> dict[str, torch.Tensor]:
    """Full 3-channel VGG19 conv weights, Kaiming-normal (fan-out, ReLU), zero bias, seeded."""
    generator = torch.Generator().manual_seed(seed)
    state, channels, index = {}, 3, 0
    for item in VGG19_CFG:
        if item == 'M':
            index += 1
            continue
        std = (2.0 / (item * 9)) ** 0.5
        state[f'features.{index}.weight'] = torch.randn(
            item, channels, 3, 3, generator=generator) * std
        state[f'features.{index}.bias'] = torch.zeros(item)
        channels, index = item, index + 2
    return state


def load_vgg19_state(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a torchvision VGG19 state_dict (weights_only); raise ValueError if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'VGG19 weights file not found: {path}')
    try:
        state = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt / unsafe files
        raise ValueError(f'cannot read VGG19 weights {path}: {exc}') from exc
    if isinstance(state, dict) and 'state_dict' in state:
        state = state['state_dict']
    expected = random_vgg19_state()
    if not isinstance(state, dict):
        raise ValueError(f'{path} holds {type(state).__name__}, expected a state_dict')
    for key, tensor in expected.items():
        if key not in state:
            raise ValueError(f'{path} is not a torchvision VGG19 checkpoint: {key} missing')
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise ValueError(f'{path}: {key} has shape {tuple(state[key].shape)}, expected '
                             f'{tuple(tensor.shape)}')
    return {key: state[key].float() for key in expected}


def build_extractor(state: dict[str, torch.Tensor], in_channels: int,
                    last_layer: str) -> VGG19Features:
    """VGG19Features filled from a full 3-channel state dict (first conv converted for 1)."""
    model = VGG19Features(in_channels, last_layer)
    own = model.state_dict()
    values = {key: state[key] for key in own}
    if in_channels == 1:
        rgb = values['features.0.weight']
        luma = torch.tensor(LUMA_WEIGHTS).view(1, 3, 1, 1)
        values['features.0.weight'] = (rgb * luma).sum(dim=1, keepdim=True)
    model.load_state_dict(values, strict=True)
    return model


def describe_weights(path: str | Path | None) -> dict:
    """Record of the extractor weights for checkpoints: kind, file and its SHA-256."""
    if not path:
        return {'kind': 'random', 'seed': RANDOM_SEED,
                'init': 'kaiming_normal fan_out relu, zero bias'}
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return {'kind': 'imagenet', 'path': str(path), 'sha256': digest}


def build_loss_extractors(weights_path: str | Path | None = None
                          ) -> tuple[VGG19Features, VGG19Features, dict]:
    """(φ_obj VGG19 to relu5_4 with 3 inputs, φ_bg VGG19 to relu1_1 with 1 input, record).

    weights_path: torchvision VGG19 ImageNet state_dict; None or '' = seeded random fallback.
    """
    state = load_vgg19_state(weights_path) if weights_path else random_vgg19_state()
    return (build_extractor(state, 3, 'relu5_4'), build_extractor(state, 1, 'relu1_1'),
            describe_weights(weights_path))
