"""Tests of occo-train (training/train.py, training/config.py) on tiny synthetic data."""

from __future__ import annotations

import json
import os
from pathlib import Path
import re
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from occo_ros.model.checkpoint import load_checkpoint
from training import train
from training.config import ConfigError, TrainConfig, build_parser, parse_config

pytestmark = [pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]


def make_data(root: Path, count: int = 4, size: int = 48) -> tuple[Path, Path]:
    """`count` random pairs under root/data/{ir,vi} and masks under root/masks."""
    rng = np.random.default_rng(0)
    data, masks = root / 'data', root / 'masks'
    for folder in (data / 'ir', data / 'vi', masks / 'mask_vi', masks / 'mask_ir'):
        folder.mkdir(parents=True)
    for index in range(count):
        stem = f'p{index}'
        # Smooth images (blurred noise): closer to real scenes than white noise.
        rgb = cv2.GaussianBlur(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), (5, 5), 2)
        ir = cv2.GaussianBlur(rng.integers(0, 256, (size, size), dtype=np.uint8), (5, 5), 2)
        cv2.imwrite(str(data / 'vi' / f'{stem}.png'), rgb)
        cv2.imwrite(str(data / 'ir' / f'{stem}.png'), ir)
        mask_vi = np.zeros((size, size), np.uint8)
        mask_ir = np.zeros((size, size), np.uint8)
        mask_vi[8:24, 8:24] = 255
        mask_ir[16:40, 16:40] = 255
        cv2.imwrite(str(masks / 'mask_vi' / f'{stem}.png'), mask_vi)
        cv2.imwrite(str(masks / 'mask_ir' / f'{stem}.png'), mask_ir)
    return data, masks


def base_args(tmp_path: Path, data: Path, out: str = 'run', **options) -> list[str]:
    args = ['--train-roots', str(data), '--out-dir', str(tmp_path / out), '--crop', '32',
            '--workers', '0', '--epochs', '5', '--device', 'cpu', '--log-every', '1',
            '--image-every', '1']
    for key, value in options.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    return args


def test_help_documents_every_option(capsys):
    text = build_parser().format_help()
    for name in TrainConfig.__dataclass_fields__:
        assert '--' + name.replace('_', '-') in text
    for action in build_parser()._actions:
        assert action.help, f'option {action.option_strings} has no help'


def test_unknown_options_and_keys_fail(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_config(['--train-roots', 'x', '--bogus', '1'])
    assert exit_info.value.code == 2
    (tmp_path / 'bad.yaml').write_text('train_roots: [x]\nlearning_rate: 0.1\n')
    with pytest.raises(ConfigError, match='learning_rate'):
        parse_config(['--config', str(tmp_path / 'bad.yaml')])
    (tmp_path / 'type.json').write_text(json.dumps({'train_roots': ['x'], 'crop': 'big'}))
    with pytest.raises(ConfigError, match="'crop'"):
        parse_config(['--config', str(tmp_path / 'type.json')])


def test_config_precedence_and_validation(tmp_path):
    (tmp_path / 'cfg.yaml').write_text('train_roots: [a, b]\nmask_roots: [ma, mb]\n'
                                       'lr: 0.5\ncrop: 64\nflip: false\n')
    cfg = parse_config(['--config', str(tmp_path / 'cfg.yaml'), '--crop', '32'])
    assert (cfg.lr, cfg.crop, cfg.flip, cfg.train_roots) == (0.5, 32, False, ['a', 'b'])
    with pytest.raises(ConfigError, match='mask_roots'):
        parse_config(['--train-roots', 'a', '--loss', 'full'])
    with pytest.raises(ConfigError, match='multiple of 4'):
        parse_config(['--train-roots', 'a', '--mask-roots', 'm', '--batch-size', '6'])
    with pytest.raises(ConfigError, match='one mask folder per'):
        parse_config(['--train-roots', 'a', 'b', '--mask-roots', 'm'])


def test_bad_data_exits_with_a_message(tmp_path, capsys):
    assert train.main(['--train-roots', str(tmp_path / 'missing'), '--loss', 'pixel',
                       '--out-dir', str(tmp_path / 'run')]) == train.EXIT_CONFIG
    assert 'missing' in capsys.readouterr().err


def test_full_loss_run_writes_checkpoints(tmp_path):
    data, masks = make_data(tmp_path)
    export = tmp_path / 'lean.pt'
    args = base_args(tmp_path, data, mask_roots=masks, batch_size=4, max_steps=2,
                     eval_root=data, export_path=export)
    assert train.main(args) == 0
    run = tmp_path / 'run'
    raw = torch.load(run / 'last.pt', weights_only=True)
    assert raw['training']['step'] == 2 and raw['training']['seed'] == 0
    assert raw['training']['config']['loss'] == 'full'
    assert raw['extractor']['kind'] == 'random'
    assert raw['input_normalization']['per_image_minmax'] is False
    assert 'optimizer' in raw and raw['optimizer']['state']
    assert not any(k.startswith('module.') for k in raw['state_dict'])
    model, meta = load_checkpoint(export)
    assert 'optimizer' not in meta and meta['model_args']['width'] == 0.25
    assert meta['training']['best']['step'] == 2
    assert set(meta['training']['best']) >= {'ssim', 'qabf', 'vif', 'score'}
    assert export.stat().st_size < (run / 'last.pt').stat().st_size
    assert list((run / 'tb').iterdir())
    assert not list(run.glob('.*.tmp'))


def test_scheduled_lr():
    assert train.scheduled_lr(1e-3, 'constant', 0.7) == 1e-3
    assert train.scheduled_lr(1e-3, 'cosine', 0.0) == pytest.approx(1e-3)
    assert train.scheduled_lr(1e-3, 'cosine', 0.5) == pytest.approx(5e-4)
    assert train.scheduled_lr(1e-3, 'cosine', 1.0) == pytest.approx(0.0, abs=1e-12)
    assert train.scheduled_lr(1e-3, 'cosine', 2.0) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(SystemExit):
        parse_config(['--train-roots', 'x', '--lr-schedule', 'linear'])
    with pytest.raises(ConfigError, match='lr_schedule'):
        TrainConfig(train_roots=['x'], loss='pixel', lr_schedule='linear').validate()


@pytest.mark.parametrize('schedule', ['constant', 'cosine'])
def test_resume_continues_exactly(tmp_path, monkeypatch, schedule):
    data, _ = make_data(tmp_path)
    common = {'loss': 'pixel', 'batch_size': 2, 'crops_per_pair': 2, 'lr_schedule': schedule,
              'max_steps': 5, 'ckpt_every': 3}
    assert train.main(base_args(tmp_path, data, 'straight', **common)) == 0
    # The split run crashes in its 4th step, after last.pt was saved at step 3.
    real_step, calls = train.Trainer.train_step, []

    def crashing_step(self, batch):
        calls.append(1)
        if len(calls) == 4:
            raise RuntimeError('simulated crash')
        return real_step(self, batch)

    monkeypatch.setattr(train.Trainer, 'train_step', crashing_step)
    with pytest.raises(RuntimeError, match='simulated crash'):
        train.main(base_args(tmp_path, data, 'split', **common))
    monkeypatch.setattr(train.Trainer, 'train_step', real_step)
    split = tmp_path / 'split' / 'last.pt'
    assert torch.load(split, weights_only=True)['training']['batch_in_epoch'] == 3
    assert train.main(base_args(tmp_path, data, 'split', resume=split, **common)) == 0
    straight, _ = load_checkpoint(tmp_path / 'straight' / 'last.pt')
    resumed, meta = load_checkpoint(split)
    assert meta['training']['step'] == 5
    # The last step (index 4 of 5) ran at the scheduled rate.
    last_lr = meta['optimizer']['param_groups'][0]['lr']
    assert last_lr == pytest.approx(train.scheduled_lr(1e-4, schedule, 4 / 5))
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-6), name
    # A run started from another run's weights records that lineage.
    parent = tmp_path / 'straight' / 'last.pt'
    common['max_steps'] = 1
    assert train.main(base_args(tmp_path, data, 'child', init_from=parent, **common)) == 0
    _, child = load_checkpoint(tmp_path / 'child' / 'last.pt')
    assert child['training']['init']['step'] == 5
    assert child['training']['init']['path'] == str(parent)


def test_loss_outside_autocast_and_gradient_clipping(tmp_path, monkeypatch):
    data, _ = make_data(tmp_path)
    cfg = parse_config(base_args(tmp_path, data, loss='pixel', batch_size=2, grad_clip=1e-3))
    trainer = train.Trainer(cfg, train.Runtime(torch.device('cpu')))
    # amp_dtype is None on a CPU; CPU bf16 autocast stands in for the GPU's here.
    trainer.amp = torch.bfloat16
    seen, norms = [], []
    real_loss, real_step = trainer.loss_fn, trainer.optimizer.step

    def loss_spy(fused, *args):
        seen.append((torch.is_autocast_enabled('cpu'), fused.dtype))
        return real_loss(fused, *args)

    def step_spy(*args, **kwargs):
        norms.append(torch.cat([p.grad.flatten() for p in trainer.model.parameters()]).norm())
        return real_step(*args, **kwargs)

    monkeypatch.setattr(trainer, 'loss_fn', loss_spy)
    monkeypatch.setattr(trainer.optimizer, 'step', step_spy)
    batch = next(iter(trainer.loader))
    terms = trainer.train_step(batch)
    assert trainer._last_fused.dtype == torch.bfloat16      # the network ran under autocast
    assert seen == [(False, torch.float32)]                  # the loss did not
    assert terms['grad_norm'] > 1e-2                         # the norm before clipping
    assert norms[0].item() == pytest.approx(1e-3, rel=1e-3)  # what the optimizer saw
    trainer.cfg.grad_clip = 0.0
    terms = trainer.train_step(batch)
    assert 'grad_norm' not in terms and norms[1].item() > 1e-2
    with pytest.raises(ConfigError, match='grad_clip'):
        parse_config(['--train-roots', 'x', '--loss', 'pixel', '--grad-clip', '-1'])


def test_dense_target_term(tmp_path):
    data, _ = make_data(tmp_path)
    targets = tmp_path / 'targets'
    targets.mkdir()
    for path in (data / 'ir').iterdir():       # target: the infrared image
        cv2.imwrite(str(targets / path.name), cv2.imread(str(path), cv2.IMREAD_GRAYSCALE))
    cfg = parse_config(base_args(tmp_path, data, loss='pixel', batch_size=2,
                                 target_roots=targets, target_weight=3.0))
    trainer = train.Trainer(cfg, train.Runtime(torch.device('cpu')))
    batch = next(iter(trainer.loader))
    assert torch.equal(batch['target'], batch['infrared'])
    with torch.no_grad():
        fused = trainer.model(batch['visible'], batch['infrared'])
    terms = trainer.train_step(batch)
    assert terms['target'] == pytest.approx((fused - batch['infrared']).abs().mean().item(),
                                            rel=1e-5)
    assert terms['total'] == pytest.approx(terms['pixel'] + 3.0 * terms['target'], rel=1e-5)
    with pytest.raises(ConfigError, match='one target folder per'):
        parse_config(['--train-roots', 'a', 'b', '--loss', 'pixel', '--target-roots', 't'])


def test_nonfinite_losses_stop_the_run(tmp_path, capsys):
    data, _ = make_data(tmp_path)
    # An absurd learning rate sends the weights to ~1e30 after one step: every later
    # forward overflows, so each step is skipped until the limit stops the run.
    args = base_args(tmp_path, data, loss='pixel', batch_size=2, lr=1e30, max_nan_steps=2)
    assert train.main(args) == train.EXIT_NONFINITE
    err = capsys.readouterr()
    assert 'non-finite loss' in err.out + err.err
    assert '2 consecutive non-finite' in err.err


def test_two_process_ddp_on_gloo(tmp_path):
    data, _ = make_data(tmp_path)
    env = {**os.environ, 'PYTHONPATH': str(REPO), 'OMP_NUM_THREADS': '1'}
    command = [sys.executable, '-m', 'torch.distributed.run', '--standalone',
               '--nproc-per-node', '2', '-m', 'training.train',
               *base_args(tmp_path, data, loss='pixel', batch_size=4, max_steps=2,
                          ckpt_every=1)]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    checksums = dict(re.findall(r'rank (\d+): parameter checksum (\S+)', result.stdout))
    assert set(checksums) == {'0', '1'}, result.stdout
    assert checksums['0'] == checksums['1']
    run = tmp_path / 'run'
    # rank 0 alone claimed the folder (output_safety's manifest) and wrote the run
    assert sorted(p.name for p in run.iterdir()) == ['.occo-outputs.json', 'last.pt', 'tb']
    model, meta = load_checkpoint(run / 'last.pt')
    assert meta['training']['world_size'] == 2 and meta['training']['step'] == 2
    assert float(sum(p.detach().double().sum() for p in model.parameters())) == pytest.approx(
        float(checksums['0']), rel=1e-12)
