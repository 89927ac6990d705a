"""occo-train: train the OCCO fusion network (FIFN) with L_pixel or L_pixel + L_con.

One process: ``occo-train --train-roots DATA/msrs --mask-roots MASKS/msrs ...``.
Several GPUs or nodes: ``torchrun --nproc-per-node N -m training.train ...`` (DDP; NCCL on
GPUs, gloo on CPU). --batch-size is the global batch, split evenly over the processes;
rank 0 alone logs, validates and writes checkpoints.

Files in --out-dir: ``last.pt`` (resumable: weights, optimizer, step, config, RNG-free
data position), ``best.pt`` (lean, best validation score), ``tb/`` (TensorBoard). All
checkpoints are written atomically by occo_ros.model.checkpoint.save_checkpoint and load with
torch.load(weights_only=True).

Outputs never destroy data (occo_ros.util.output_safety): --out-dir and --export-path must be
apart from every input; a non-empty --out-dir needs --resume (continue that run) or
--overwrite (replace only what occo-train wrote there), an existing --export-path needs
--overwrite (or --resume).

Exit status: 0 done; 2 bad configuration or data, or a refused output (see above); 3 too
many consecutive non-finite losses.
"""

from __future__ import annotations

from dataclasses import dataclass
import itertools
import math
import os
from pathlib import Path
import sys
import time

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from occo_ros.io.image_pairs import find_pairs, read_gray
from occo_ros.model.checkpoint import (
    RESERVED_KEYS,
    CheckpointError,
    load_checkpoint,
    read_checkpoint_meta,
    save_checkpoint,
)
from occo_ros.model.network import FIFN
from occo_ros.util.output_safety import (
    OutputError,
    check_file_output,
    check_folder_output,
    prepare_output_folder,
)

from . import metrics
from .config import ConfigError, TrainConfig, parse_config
from .data import INPUT_NORMALIZATION, CropDataset, load_pairs, to_tensor
from .losses import OCCOLoss
from .vgg import build_loss_extractors

EXIT_CONFIG = 2
EXIT_NONFINITE = 3
RUN_FILES = ('last.pt', 'best.pt', 'tb')   # what occo-train writes in --out-dir
# Validation score: sum of three of the quality-bar metrics whose scales are comparable
# (each about 0.5-1.5 on these data); higher is better.
VAL_METRICS = ('ssim', 'qabf', 'vif')


class NonFiniteLossError(RuntimeError):
    """Too many consecutive steps produced a NaN or infinite loss."""


@dataclass
class Runtime:
    """Where this process runs: device, rank and world size (1 without torchrun)."""

    device: torch.device
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """'auto' -> cuda:<local_rank> when CUDA is available, else cpu; otherwise as given."""
    if name == 'auto':
        name = f'cuda:{local_rank}' if torch.cuda.is_available() else 'cpu'
    elif name == 'cuda':
        name = f'cuda:{local_rank}'
    device = torch.device(name)
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise ConfigError(f'device={name!r} but CUDA is not available; use cpu or auto')
    return device


def setup_runtime(device_name: str) -> Runtime:
    """Join the torchrun process group when WORLD_SIZE > 1 (NCCL on CUDA, gloo on CPU)."""
    world_size = int(os.environ.get('WORLD_SIZE', '1'))
    local_rank = int(os.environ.get('LOCAL_RANK', '0'))
    device = resolve_device(device_name, local_rank)
    if world_size == 1:
        return Runtime(device)
    if device.type == 'cuda':
        torch.cuda.set_device(device)
    dist.init_process_group('nccl' if device.type == 'cuda' else 'gloo')
    return Runtime(device, dist.get_rank(), dist.get_world_size())


def amp_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype for `mode` on `device`; None = full precision (always on CPU)."""
    if device.type != 'cuda' or mode == 'off':
        return None
    if mode == 'auto':
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {'bf16': torch.bfloat16, 'fp16': torch.float16}[mode]


def load_eval_pairs(root: str, limit: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(stem, visible luma uint8, infrared uint8) of an eval folder, at most `limit` (0: all),
    evenly spaced over the sorted stems."""
    pairs = find_pairs(Path(root) / 'ir', Path(root) / 'vi').pairs
    if not pairs:
        raise ConfigError(f'eval_root {root} holds no ir/vi pairs')
    if limit and limit < len(pairs):
        pairs = [pairs[i] for i in np.linspace(0, len(pairs) - 1, limit).round().astype(int)]
    return [(p.stem, read_gray(p.vi_path), read_gray(p.ir_path)) for p in pairs]


def fuse_uint8(model: torch.nn.Module, visible: np.ndarray, infrared: np.ndarray,
               device: torch.device) -> np.ndarray:
    """Fuse uint8 HxW luma and infrared at full size; output uint8 HxW (clamped, rounded)."""
    with torch.no_grad():
        fused = model(to_tensor(visible)[None].to(device), to_tensor(infrared)[None].to(device))
    return metrics.to_uint8(fused.float()[0, 0].cpu().numpy())


def validate(model: torch.nn.Module, pairs: list, device: torch.device) -> dict[str, float]:
    """Mean VAL_METRICS over the eval pairs (eval mode, no_grad) and their sum 'score'."""
    was_training = model.training
    model.eval()
    scores = {name: [] for name in VAL_METRICS}
    for _, visible, infrared in pairs:
        fused = fuse_uint8(model, visible, infrared, device)
        for name in VAL_METRICS:
            scores[name].append(getattr(metrics, name)(infrared, visible, fused))
    model.train(was_training)
    result = {name: float(np.nanmean(values)) for name, values in scores.items()}
    result['score'] = sum(result[name] for name in VAL_METRICS)
    return result


def scheduled_lr(base_lr: float, schedule: str, progress: float) -> float:
    """Learning rate at `progress` (0 = start, 1 = end of the run): constant, or cosine from
    base_lr down to 0."""
    if schedule == 'constant':
        return base_lr
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))


def image_grid(batch: dict[str, torch.Tensor], fused: torch.Tensor, count: int = 4
               ) -> torch.Tensor:
    """(1, count*H, 4*W) grid: rows = crops; columns = visible, infrared, fused, masks."""
    columns = [batch['visible'][:count], batch['infrared'][:count],
               fused.detach().float().clamp(0, 1)[:count].cpu()]
    if 'mask_vi' in batch:
        # Mask column: visible-only 1/3, infrared-only 2/3, shared 1 (gray levels).
        columns.append((batch['mask_vi'][:count] + 2 * batch['mask_ir'][:count]) / 3)
    rows = torch.cat(columns, dim=3)            # (count, 1, H, k*W)
    return torch.cat(list(rows), dim=1)         # (1, count*H, k*W)


def replicas_checksum(model: torch.nn.Module, runtime: Runtime) -> float:
    """Sum of all parameters; raises RuntimeError if the DDP replicas disagree."""
    total = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum()
    if runtime.distributed:
        low, high = total.clone(), total.clone()
        dist.all_reduce(low, op=dist.ReduceOp.MIN)
        dist.all_reduce(high, op=dist.ReduceOp.MAX)
        if low.item() != high.item():
            raise RuntimeError(f'DDP replicas diverged: parameter sums {low.item()} .. '
                               f'{high.item()}')
    return total.item()


class Trainer:
    """One training run: data, model, loss networks and optimizer built once, then the loop."""

    def __init__(self, cfg: TrainConfig, runtime: Runtime) -> None:
        self.cfg, self.rt = cfg, runtime
        self.log = tqdm.write if runtime.is_main else (lambda message: None)
        if cfg.batch_size % runtime.world_size:
            raise ConfigError(f'batch_size={cfg.batch_size} does not split over '
                              f'{runtime.world_size} processes')
        self.local_batch = cfg.batch_size // runtime.world_size
        if cfg.loss == 'full' and self.local_batch % 4:
            raise ConfigError(f'per-process batch {self.local_batch} must be a multiple of 4 '
                              'for loss=full (the contrastive loss uses batch quarters)')
        resume_meta = read_checkpoint_meta(cfg.resume) if cfg.resume else None
        self.init_record: dict | None = (resume_meta or {}).get('training', {}).get('init')
        torch.manual_seed(cfg.seed)
        self.model = self._initial_model(resume_meta).to(runtime.device).train()
        self._last_fused: torch.Tensor | None = None
        self.ddp = (DistributedDataParallel(self.model, device_ids=(
            [runtime.device.index] if runtime.device.type == 'cuda' else None))
            if runtime.distributed else self.model)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        self.amp = amp_dtype(cfg.amp, runtime.device)
        self.scaler = torch.amp.GradScaler('cuda', enabled=self.amp == torch.float16)
        if cfg.loss == 'full':
            obj_vgg, bg_vgg, self.extractor = build_loss_extractors(cfg.vgg_weights or None)
            if not cfg.vgg_weights:
                self.log('no --vgg-weights: contrastive features from the seeded random VGG19 '
                         'fallback; `make hed-weights` makes near-ImageNet VGG16 (HED) weights')
            self.loss_fn = OCCOLoss('full', obj_vgg, bg_vgg).to(runtime.device)
        else:
            self.loss_fn = OCCOLoss('pixel').to(runtime.device)
            self.extractor = {'kind': 'none (pixel loss)'}
        pairs, self.data_report = load_pairs(
            cfg.train_roots, cfg.mask_roots or None, cfg.crop, cfg.small_images, self.log,
            cfg.target_roots or None)
        self.dataset = CropDataset(pairs, cfg.crop, cfg.crops_per_pair, cfg.crop_tries,
                                   cfg.min_mask_pixels, cfg.flip, cfg.seed)
        self.sampler = DistributedSampler(self.dataset, runtime.world_size, runtime.rank,
                                          shuffle=True, seed=cfg.seed, drop_last=True)
        self.loader = DataLoader(self.dataset, self.local_batch, sampler=self.sampler,
                                 num_workers=cfg.workers, drop_last=True,
                                 persistent_workers=cfg.workers > 0)
        if len(self.loader) == 0:
            raise ConfigError(f'{len(self.dataset)} crops per epoch are fewer than one batch '
                              f'of {cfg.batch_size}')
        self.eval_pairs = (load_eval_pairs(cfg.eval_root, cfg.val_pairs)
                           if cfg.eval_root and runtime.is_main else [])
        self.step = self.epoch = self.batch_in_epoch = 0
        self.best = {'score': -math.inf, 'step': -1}
        self.nonfinite_total = self.nonfinite_run = 0
        if resume_meta:
            self._resume(cfg.resume)
        self.writer = (SummaryWriter(str(Path(cfg.out_dir) / 'tb'))
                       if runtime.is_main else None)

    def _initial_model(self, resume_meta: dict | None) -> FIFN:
        """Fresh FIFN(width), or the architecture of the resumed / init_from checkpoint."""
        cfg = self.cfg
        if resume_meta:
            width = resume_meta['model_args']['width']
            if width != cfg.width:
                self.log(f'resume: width {width} from {cfg.resume} overrides {cfg.width}')
            return FIFN(**resume_meta['model_args'])
        if cfg.init_from:
            model, meta = load_checkpoint(cfg.init_from)
            parent = meta.get('training', {})
            # Lineage: the starting checkpoint's own training record, recursively.
            self.init_record = {'path': cfg.init_from, 'step': parent.get('step'),
                                'config': parent.get('config'), 'init': parent.get('init')}
            self.log(f"initialised from {cfg.init_from} (width {meta['model_args']['width']})")
            return model
        return FIFN(width=cfg.width)

    def _resume(self, path: str) -> None:
        """Restore weights, optimizer, scaler, position and best score from `path`."""
        model, meta = load_checkpoint(path)
        if 'optimizer' not in meta:
            raise ConfigError(f'{path} is a lean checkpoint without optimizer state; resume '
                              "from the run folder's last.pt")
        self.model.load_state_dict(model.state_dict(), strict=True)
        self.optimizer.load_state_dict(meta['optimizer'])
        if meta.get('scaler'):
            self.scaler.load_state_dict(meta['scaler'])
        state = meta['training']
        self.step, self.epoch = state['step'], state['epoch']
        self.batch_in_epoch = state['batch_in_epoch']
        self.best = dict(state['best'])
        self.nonfinite_total = state['nonfinite_total']
        self.log(f'resumed from {path}: step {self.step}, epoch {self.epoch}, '
                 f'batch {self.batch_in_epoch}')

    def _meta(self, lean: bool) -> dict:
        """Checkpoint metadata (weights_only-safe types only)."""
        meta = {
            'input_normalization': INPUT_NORMALIZATION,
            'extractor': self.extractor,
            'training': {
                'config': self.cfg.to_dict(), 'step': self.step, 'epoch': self.epoch,
                'batch_in_epoch': self.batch_in_epoch, 'seed': self.cfg.seed,
                'best': self.best, 'nonfinite_total': self.nonfinite_total,
                'world_size': self.rt.world_size, 'pairs': self.data_report.loaded,
                'init': self.init_record,
            },
        }
        if not lean:
            meta['optimizer'] = self.optimizer.state_dict()
            meta['scaler'] = self.scaler.state_dict() if self.scaler.is_enabled() else {}
        return meta

    def save(self, name: str, lean: bool = False) -> Path:
        """Write out_dir/name (rank 0 only; atomic)."""
        return save_checkpoint(Path(self.cfg.out_dir) / name, self.model, **self._meta(lean))

    def export(self) -> None:
        """Copy the best (else the current) model, lean, to export_path."""
        best = Path(self.cfg.out_dir) / 'best.pt'
        if best.is_file():
            model, meta = load_checkpoint(best)
            meta = {k: v for k, v in meta.items() if k not in RESERVED_KEYS}
            save_checkpoint(self.cfg.export_path, model, **meta)
        else:
            save_checkpoint(self.cfg.export_path, self.model, **self._meta(lean=True))
        self.log(f'exported {self.cfg.export_path}')

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float] | None:
        """One optimizer step; None when the loss was not finite (step skipped)."""
        batch = {k: v.to(self.rt.device, non_blocking=True) for k, v in batch.items()}
        with torch.autocast(self.rt.device.type, dtype=self.amp or torch.float32,
                            enabled=self.amp is not None):
            fused = self.ddp(batch['visible'], batch['infrared'])
        # The loss outside autocast, in float32: in bf16 the SSIM moments lose the small
        # variances the term is made of (issue 15: SSIM term 0.070 vs 0.104 in fp32).
        out = self.loss_fn(fused.float(), batch['visible'], batch['infrared'],
                           batch.get('mask_vi'), batch.get('mask_ir'))
        if 'target' in batch:
            out.terms['target'] = (fused.float() - batch['target']).abs().mean()
            out.total = out.total + self.cfg.target_weight * out.terms['target']
            out.terms['total'] = out.total
        finite = torch.isfinite(out.total.detach()).float()
        if self.rt.distributed:
            # Every rank must skip together, or the gradient all-reduce would hang.
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        self.optimizer.zero_grad(set_to_none=True)
        if not finite.item():
            return None
        self.scaler.scale(out.total).backward()
        terms = {k: float(v.detach()) for k, v in out.terms.items()}
        if self.cfg.grad_clip:
            self.scaler.unscale_(self.optimizer)      # clip the true gradients, not scaled ones
            terms['grad_norm'] = float(torch.nn.utils.clip_grad_norm_(
                self.model.parameters(), self.cfg.grad_clip))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self._last_fused = fused
        return terms

    def _log_step(self, terms: dict[str, float], batch: dict, throughput: float,
                  lr: float) -> None:
        if self.step % self.cfg.log_every == 0:
            for name, value in terms.items():
                self.writer.add_scalar('train/grad_norm' if name == 'grad_norm' else
                                       f'loss/{name}', value, self.step)
            self.writer.add_scalar('train/crops_per_s', throughput, self.step)
            self.writer.add_scalar('train/lr', lr, self.step)
        if self.step % self.cfg.image_every == 0:
            self.writer.add_image('samples', image_grid(batch, self._last_fused), self.step)

    def _time_fraction(self, start: float) -> float:
        """Elapsed share of max_minutes (0: no limit); the ranks agree on the largest, so
        they stop together and use the same learning rate (else the replicas diverge)."""
        if not self.cfg.max_minutes:
            return 0.0
        fraction = torch.tensor((time.monotonic() - start) / (60 * self.cfg.max_minutes),
                                dtype=torch.float64)
        if self.rt.distributed:
            fraction = fraction.to(self.rt.device)
            dist.all_reduce(fraction, op=dist.ReduceOp.MAX)
        return float(fraction.item())

    def _set_lr(self, progress: float) -> float:
        lr = scheduled_lr(self.cfg.lr, self.cfg.lr_schedule, progress)
        for group in self.optimizer.param_groups:
            group['lr'] = lr
        return lr

    def _end_of_epoch(self) -> None:
        """Validate (rank 0), keep the best, save last.pt; all ranks wait for rank 0."""
        if self.rt.is_main:
            if self.eval_pairs:
                result = validate(self.model, self.eval_pairs, self.rt.device)
                for name, value in result.items():
                    self.writer.add_scalar(f'val/{name}', value, self.step)
                improved = result['score'] > self.best['score']
                if improved:
                    self.best = {'score': result['score'], 'step': self.step, **result}
                    self.save('best.pt', lean=True)
                    if self.cfg.export_path:
                        self.export()
                self.log(f'epoch {self.epoch} step {self.step}: val ' + ', '.join(
                    f'{k} {v:.4f}' for k, v in result.items()) + (' (best)' if improved else ''))
            self.save('last.pt')
        if self.rt.distributed:
            dist.barrier()

    def run(self) -> int:
        """The training loop; returns the exit status."""
        cfg, start = self.cfg, time.monotonic()
        crops = 0
        total_steps = cfg.epochs * len(self.loader)
        if cfg.max_steps:
            total_steps = min(total_steps, cfg.max_steps)
        bar = tqdm(total=total_steps, initial=self.step, disable=not self.rt.is_main,
                   desc='occo-train', unit='step', dynamic_ncols=True)
        stop = self.step >= total_steps
        time_fraction = 0.0
        while not stop and self.epoch < cfg.epochs:
            self.sampler.set_epoch(self.epoch)
            self.dataset.set_epoch(self.epoch)
            batches = itertools.islice(self.loader, self.batch_in_epoch, None)
            for batch in batches:
                lr = self._set_lr(max(self.step / total_steps, time_fraction))
                terms = self.train_step(batch)
                self.batch_in_epoch += 1
                if terms is None:
                    self.nonfinite_total += 1
                    self.nonfinite_run += 1
                    self.log(f'step {self.step}: non-finite loss, step skipped '
                             f'({self.nonfinite_run} in a row, {self.nonfinite_total} total)')
                    if self.nonfinite_run >= cfg.max_nan_steps:
                        raise NonFiniteLossError(
                            f'{self.nonfinite_run} consecutive non-finite losses at step '
                            f'{self.step}; lower lr or check the data')
                    continue
                self.nonfinite_run = 0
                self.step += 1
                crops += cfg.batch_size
                throughput = crops / max(time.monotonic() - start, 1e-9)
                if self.rt.is_main:
                    self._log_step(terms, batch, throughput, lr)
                    bar.update(1)
                    bar.set_postfix(loss=f"{terms['total']:.3f}", crops_s=f'{throughput:.1f}')
                    if self.step % cfg.ckpt_every == 0:
                        self.save('last.pt')
                time_fraction = self._time_fraction(start)
                stop = self.step >= total_steps or time_fraction >= 1.0
                if stop:
                    break
            if not stop:
                self.epoch += 1
                self.batch_in_epoch = 0
            self._end_of_epoch()
        bar.close()
        elapsed = time.monotonic() - start
        checksum = replicas_checksum(self.model, self.rt)
        if self.rt.is_main:
            if cfg.export_path and not self.eval_pairs:
                self.export()
            self.writer.close()
            self.log(f'done: {self.step} steps, {crops} crops in {elapsed:.0f} s '
                     f'({crops / max(elapsed, 1e-9):.2f} crops/s over {self.rt.world_size} '
                     f'process(es)); best {self.best}')
        # One write per line: the ranks share stdout, and print() writes the text and the
        # newline separately, so lines of two ranks could interleave.
        sys.stdout.write(f'rank {self.rt.rank}: parameter checksum {checksum!r}\n')
        sys.stdout.flush()
        return 0


def prepare_run_folder(cfg: TrainConfig) -> None:
    """Check --out-dir and --export-path against the tools' output rule and claim the run
    folder (rank 0, before any data is loaded); raises OutputError."""
    out_dir = Path(cfg.out_dir).resolve()
    resume = Path(cfg.resume).resolve() if cfg.resume else None
    inputs = [*cfg.train_roots, *cfg.mask_roots, cfg.eval_root, cfg.init_from, cfg.vgg_weights]
    # A resumed run continues in its own folder: its checkpoint is no foreign input there.
    if resume is not None and out_dir not in resume.parents:
        inputs.append(cfg.resume)
    names = list(RUN_FILES)
    folder = dict(tool='occo-train', overwrite=cfg.overwrite, inputs=inputs,
                  resume=resume is not None, options='--resume or --overwrite')
    check_folder_output(out_dir, **folder)
    if cfg.export_path:
        check_file_output(cfg.export_path, cfg.overwrite or resume is not None,
                          [*inputs, cfg.resume])
        export = Path(cfg.export_path).resolve()
        if export.parent == out_dir:
            names.append(export.name)
    prepare_output_folder(out_dir, names=names, **folder)


def main(argv: list[str] | None = None) -> int:
    """Entry point of occo-train; returns the process exit status."""
    try:
        cfg = parse_config(argv)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        runtime = setup_runtime(cfg.device)
        if runtime.is_main:
            prepare_run_folder(cfg)
    except (ConfigError, OutputError) as exc:
        print(f'occo-train: error: {exc}', file=sys.stderr)
        return EXIT_CONFIG
    try:
        return Trainer(cfg, runtime).run()
    except (ConfigError, CheckpointError, ValueError, FileNotFoundError,
            NotADirectoryError) as exc:
        print(f'occo-train: error: {exc}', file=sys.stderr)
        return EXIT_CONFIG
    except NonFiniteLossError as exc:
        print(f'occo-train: error: {exc}', file=sys.stderr)
        return EXIT_NONFINITE
    finally:
        if runtime.distributed and dist.is_initialized():
            dist.destroy_process_group()


if __name__ == '__main__':
    sys.exit(main())
