"""Training configuration for occo-train: one dataclass, overridable from a file and the CLI.

Precedence: dataclass defaults < ``--config FILE`` (YAML or JSON mapping) < command-line
options. Unknown keys in the file and unknown options on the command line are errors, and a
file value of the wrong type is an error naming the key, the value and the expected type.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field, fields
import json
from pathlib import Path
import typing

import yaml

LOSSES = ('pixel', 'full')
AMP_MODES = ('auto', 'off', 'bf16', 'fp16')
SMALL_IMAGE_POLICIES = ('pad', 'skip')
LR_SCHEDULES = ('constant', 'cosine')


class ConfigError(ValueError):
    """A configuration key or value is invalid; the message names it and what is allowed."""


def _opt(default, help_text: str, **kwargs):
    """A dataclass field carrying its --help text."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={'help': help_text})
    return field(default=default, metadata={'help': help_text, **kwargs})


@dataclass
class TrainConfig:
    """Every option of an OCCO training run (defaults: OCCO_METHOD.md §4, width 0.25)."""

    train_roots: list[str] = _opt(
        [], 'training folders, each holding ir/ and vi/ with the same file stems')
    mask_roots: list[str] = _opt(
        [], 'mask folders, one per training folder in the same order, each holding mask_vi/ '
        'and mask_ir/ (binary PNG, same stems); required for --loss full, optional for pixel '
        '(crops then need not contain objects)')
    target_roots: list[str] = _opt(
        [], 'dense target folders, one per training folder in the same order, each holding '
        'one gray <stem>.png per pair (e.g. the per-pair L_pixel optimum written by '
        'bench/bench_objective_ceiling.py --save-images); adds target_weight x mean|F - T| '
        'to the loss')
    target_weight: float = _opt(1.0, 'weight of the L1 term towards the dense targets (used '
                                'with --target-roots)')
    eval_root: str = _opt('', 'validation folder with ir/ and vi/ (full-size pairs, scored '
                          'each epoch with fast metrics); empty: no validation')
    out_dir: str = _opt('out/train', 'run folder: checkpoints, TensorBoard logs')
    export_path: str = _opt('', 'also write a lean checkpoint (weights + metadata, no '
                            'optimizer) of the best model here at the end; empty: do not')
    width: float = _opt(0.25, 'FIFN width multiplier (1.0 = OCCO; 0.25 = CPU node model)')
    loss: str = _opt('full', 'objective: pixel (L_pixel only) or full (L_pixel + L_con)',
                     choices=LOSSES)
    vgg_weights: str = _opt('', 'contrastive-loss extractor weights: a torchvision VGG19 '
                            'ImageNet state_dict, or the HED VGG16 file of `make hed-weights` '
                            '(~/.cache/occo_ros/vgg16_hed.pt); empty: fixed-seed random VGG19 '
                            '(fallback)')
    crop: int = _opt(256, 'square training crop side, pixels')
    crops_per_pair: int = _opt(2, 'random crops drawn from each pair per epoch')
    crop_tries: int = _opt(20, 'random crop positions tried to find one containing object '
                           'mask pixels before centring a crop on a mask pixel')
    min_mask_pixels: int = _opt(64, 'object-mask pixels a crop must contain')
    small_images: str = _opt('pad', 'images smaller than the crop: pad (reflect) or skip',
                             choices=SMALL_IMAGE_POLICIES)
    flip: bool = _opt(True, 'random horizontal flips')
    batch_size: int = _opt(12, 'crops per optimizer step over all processes (multiple of 4 '
                           'for --loss full; the contrastive loss splits it in quarters)')
    lr: float = _opt(1e-4, 'Adam learning rate (the start of the schedule)')
    grad_clip: float = _opt(0.0, 'clip the global L2 norm of the gradients to this before '
                            'each optimizer step (after fp16 loss-scale unscaling); '
                            'the norm is logged as train/grad_norm; 0: no clipping')
    lr_schedule: str = _opt('constant', 'constant (OCCO_METHOD.md §4) or cosine: decay from lr '
                            'to 0 over the run, i.e. over epochs / max_steps, or over '
                            'max_minutes when the time limit ends the run first (short '
                            'budgets get further with it; a resumed run decays over its own '
                            'max_minutes again)', choices=LR_SCHEDULES)
    epochs: int = _opt(25, 'passes over the training pairs')
    max_steps: int = _opt(0, 'stop after this many optimizer steps in total; 0: no limit')
    max_minutes: float = _opt(0.0, 'stop (after saving) when this much wall time has passed '
                              'in this run; 0: no limit')
    seed: int = _opt(0, 'random seed (weights, crops, flips)')
    device: str = _opt('auto', "'auto' (CUDA if present, else CPU), 'cpu', 'cuda', 'cuda:N'")
    amp: str = _opt('auto', 'mixed precision on CUDA: auto (bf16 if supported, else fp16), '
                    'off, bf16, fp16; always off on CPU', choices=AMP_MODES)
    workers: int = _opt(0, 'DataLoader worker processes per training process (0: load in '
                        'the training process; the pairs are in memory, crops are cheap)')
    threads: int = _opt(0, 'CPU threads for torch per process; 0: torch default. On a CPU '
                        'shared with other jobs 1 can be several times faster (no spinning '
                        'OpenMP threads waiting for descheduled ones)')
    ckpt_every: int = _opt(200, 'save the resumable checkpoint every this many steps')
    log_every: int = _opt(10, 'write TensorBoard scalars every this many steps')
    image_every: int = _opt(200, 'write TensorBoard image samples every this many steps')
    val_pairs: int = _opt(0, 'validate on at most this many eval pairs; 0: all')
    max_nan_steps: int = _opt(10, 'stop with an error after this many consecutive '
                              'non-finite losses (each one skips its step)')
    init_from: str = _opt('', 'start from the weights of this FIFN checkpoint (e.g. the '
                          'pixel-loss model before fine-tuning with the full loss); its width '
                          'overrides --width; optimizer and step start fresh')
    resume: str = _opt('', 'resumable checkpoint to continue from (architecture, optimizer, '
                       'step and RNG come from it); the run goes on in --out-dir as it is')
    overwrite: bool = _opt(False, 'replace what an earlier occo-train run wrote in --out-dir '
                           '(last.pt, best.pt, tb/; a folder holding anything else is refused) '
                           'and an existing --export-path file; without it (or --resume) a '
                           'non-empty --out-dir is refused')

    def validate(self) -> None:
        """Raise ConfigError for values that cannot work together."""
        if not self.train_roots:
            raise ConfigError('train_roots is empty: give at least one folder with ir/ and vi/')
        if self.mask_roots and len(self.mask_roots) != len(self.train_roots):
            raise ConfigError(
                f'mask_roots has {len(self.mask_roots)} entries, train_roots has '
                f'{len(self.train_roots)}: give one mask folder per training folder')
        if self.target_roots and len(self.target_roots) != len(self.train_roots):
            raise ConfigError(
                f'target_roots has {len(self.target_roots)} entries, train_roots has '
                f'{len(self.train_roots)}: give one target folder per training folder')
        if self.target_weight < 0:
            raise ConfigError(f'target_weight={self.target_weight}; expected >= 0')
        if self.loss not in LOSSES:
            raise ConfigError(f'loss={self.loss!r}; expected one of {LOSSES}')
        if self.loss == 'full' and not self.mask_roots:
            raise ConfigError('loss=full needs mask_roots (object masks); see occo-masks')
        if self.loss == 'full' and self.batch_size % 4:
            raise ConfigError(f'batch_size={self.batch_size}; loss=full needs a multiple of 4')
        if self.amp not in AMP_MODES:
            raise ConfigError(f'amp={self.amp!r}; expected one of {AMP_MODES}')
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f'lr_schedule={self.lr_schedule!r}; expected one of '
                              f'{LR_SCHEDULES}')
        if self.small_images not in SMALL_IMAGE_POLICIES:
            raise ConfigError(f'small_images={self.small_images!r}; expected one of '
                              f'{SMALL_IMAGE_POLICIES}')
        for name in ('crop', 'batch_size', 'crops_per_pair', 'crop_tries', 'epochs',
                     'ckpt_every', 'log_every', 'image_every', 'max_nan_steps'):
            if getattr(self, name) < 1:
                raise ConfigError(f'{name}={getattr(self, name)}; expected >= 1')
        if self.crop < 16:
            raise ConfigError(f'crop={self.crop}; expected >= 16 (the network pools 3 times)')
        if not 0 < self.width <= 4:
            raise ConfigError(f'width={self.width}; expected 0 < width <= 4')
        if self.lr <= 0:
            raise ConfigError(f'lr={self.lr}; expected > 0')
        if self.grad_clip < 0:
            raise ConfigError(f'grad_clip={self.grad_clip}; expected >= 0 (0: off)')

    def to_dict(self) -> dict:
        """Plain-types dict (stored in checkpoints)."""
        return asdict(self)


def _field_type(f) -> type:
    return typing.get_type_hints(TrainConfig)[f.name]


def _check_type(key: str, value, expected) -> object:
    """Return value converted to the field type, or raise ConfigError."""
    if expected == list[str]:
        if isinstance(value, str):
            return [value]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
    elif expected is bool:
        if isinstance(value, bool):
            return value
    elif expected is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif expected is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif expected is str and isinstance(value, str):
        return value
    raise ConfigError(f'config key {key!r} = {value!r}: expected {expected}')


def load_config_file(path: str | Path) -> dict:
    """Read a YAML or JSON mapping of config keys; unknown keys or wrong types raise."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f'cannot read config file {path}: {exc}') from exc
    data = json.loads(text) if path.suffix == '.json' else yaml.safe_load(text)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f'config file {path} must hold a mapping of keys, got '
                          f'{type(data).__name__}')
    known = {f.name: f for f in fields(TrainConfig)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f'unknown config keys in {path}: {unknown}; known: {sorted(known)}')
    return {k: _check_type(k, v, _field_type(known[k])) for k, v in data.items()}


def build_parser() -> argparse.ArgumentParser:
    """argparse parser with one option per TrainConfig field (defaults: None = not given)."""
    parser = argparse.ArgumentParser(
        prog='occo-train',
        description='Train the OCCO fusion network (FIFN) on paired infrared/visible '
                    'images. Options override --config, which overrides the defaults.',
        epilog='Exit status: 0 done; 2 bad configuration or data, or a refused output (an '
               '--out-dir or --export-path overlapping an input, a non-empty --out-dir '
               'without --resume or --overwrite, a folder holding files occo-train did not '
               'write); 3 too many consecutive non-finite losses.')
    parser.add_argument('--config', help='YAML or JSON file of config keys (field names '
                        'below with underscores); unknown keys are errors')
    defaults = TrainConfig()
    for f in fields(TrainConfig):
        ftype = _field_type(f)
        flag = '--' + f.name.replace('_', '-')
        help_text = f"{f.metadata['help']} (default: {getattr(defaults, f.name)!r})"
        kwargs = {'dest': f.name, 'help': help_text, 'default': None}
        if ftype is bool:
            kwargs['action'] = argparse.BooleanOptionalAction
        elif ftype == list[str]:
            kwargs['nargs'] = '+'
        else:
            kwargs['type'] = ftype
        if 'choices' in f.metadata:
            kwargs['choices'] = f.metadata['choices']
        parser.add_argument(flag, **kwargs)
    return parser


def parse_config(argv: list[str] | None = None) -> TrainConfig:
    """Resolve defaults, --config and command-line options into a validated TrainConfig."""
    args = vars(build_parser().parse_args(argv))
    values = load_config_file(args.pop('config')) if args.get('config') else {}
    args.pop('config', None)
    values.update({k: v for k, v in args.items() if v is not None})
    cfg = TrainConfig(**values)
    cfg.validate()
    return cfg
