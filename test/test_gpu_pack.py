"""The cheap part of `make gpu-rehearsal`: a tiny gpu_pack from the real data (one pair per
set, a random VGG16 in the HED file format), its checksum check, and the GPU scripts'
argument and environment handling (bench/gpu_pack.py, bench/gpu_train.sh, gpu_check.sh).
The full rehearsal (clean clone, image-only venv, network cut, both scripts on the CPU) is
`make gpu-rehearsal`.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

pytestmark = [pytest.mark.bench]

REPO = Path(__file__).resolve().parents[1]


def _load(name: str):
    sys.path.insert(0, str(REPO / 'bench'))
    try:
        spec = importlib.util.spec_from_file_location(name, REPO / 'bench' / f'{name}.py')
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(REPO / 'bench'))
    return module


@pytest.fixture(scope='module')
def gpu_pack():
    return _load('gpu_pack')


@pytest.fixture(scope='module')
def packed(gpu_pack, shared_data, tmp_path_factory):
    """One pair per set, masks drawn here, a random VGG16 in the converted-HED format."""
    from occo_ros.io.image_pairs import find_pairs
    from training.vgg import HED_VGG16_KIND, conv_shapes

    tmp_path = tmp_path_factory.mktemp('gpu_pack')
    masks = tmp_path / 'masks'
    for name in gpu_pack.SETS:
        pair = find_pairs(shared_data / 'train' / name / 'ir',
                          shared_data / 'train' / name / 'vi').pairs[0]
        shape = cv2.imread(str(pair.ir_path), cv2.IMREAD_GRAYSCALE).shape
        for sub in ('mask_vi', 'mask_ir'):
            (masks / name / sub).mkdir(parents=True)
            mask = np.zeros(shape, np.uint8)
            mask[10:60, 20:90] = 255
            cv2.imwrite(str(masks / name / sub / f'{pair.stem}.png'), mask)
    generator = torch.Generator().manual_seed(0)
    state = {key: torch.randn(shape, generator=generator) * 0.05
             for key, shape in conv_shapes('vgg16').items()}
    hed = tmp_path / 'vgg16_hed.pt'
    torch.save({'kind': HED_VGG16_KIND, 'state_dict': state, 'source': {'test': True}}, hed)
    probe, gpu_pack.PROBE_SIZE = gpu_pack.PROBE_SIZE, (32, 32)   # a cheap feature probe
    try:
        manifest = gpu_pack.pack(shared_data, masks, hed, tmp_path / 'pack', pairs=1)
    finally:
        gpu_pack.PROBE_SIZE = probe
    return tmp_path / 'pack', manifest, state


@pytest.fixture
def tiny_pack(packed, tmp_path):
    """A copy of the module's pack that a test may alter."""
    pack, manifest, state = packed
    shutil.copytree(pack, tmp_path / 'pack')
    return tmp_path / 'pack', manifest, state


def test_pack_holds_luma_masks_and_int8_weights_that_verify(gpu_pack, tiny_pack, tmp_path):
    pack, manifest, state = tiny_pack
    assert manifest['data']['train/msrs'] == {'pairs': 1, 'of': 200,
                                              'codec': 'luma, JPEG quality 95'}
    assert manifest['data']['eval/msrs']['codec'] == 'luma, lossless PNG'
    eval_vi = next((pack / 'data' / 'eval' / 'msrs' / 'vi').iterdir())
    assert cv2.imread(str(eval_vi), cv2.IMREAD_UNCHANGED).ndim == 2   # luma only
    assert len(list((pack / 'masks' / 'roadscene' / 'mask_ir').iterdir())) == 1
    difference = manifest['hed']['feature_difference_vs_fp32']
    assert set(difference) == {'relu1_1', 'relu4_4', 'relu5_4'}

    hed_out = tmp_path / 'unpacked' / 'vgg16_hed.pt'
    gpu_pack.verify(pack, hed_out)
    unpacked = torch.load(hed_out, weights_only=True)
    assert unpacked['kind'] == 'vgg16-hed' and unpacked['source']['test'] is True
    weight = state['features.0.weight']
    step = weight.abs().flatten(1).amax(dim=1).view(-1, 1, 1, 1) / 127
    error = (unpacked['state_dict']['features.0.weight'] - weight).abs()
    assert bool((error <= step / 2 + 1e-7).all())   # int8 per channel: half a step at most


def test_verify_names_an_altered_a_missing_and_an_extra_file(gpu_pack, tiny_pack):
    pack, manifest, _ = tiny_pack
    first = next(name for name in manifest['files'] if name.startswith('data/eval'))
    with (pack / first).open('ab') as handle:
        handle.write(b'\0')
    (pack / 'stray.txt').write_text('x')
    (pack / gpu_pack.HED_PACKED).unlink()
    with pytest.raises(gpu_pack.PackError) as caught:
        gpu_pack.verify(pack, None)
    message = str(caught.value)
    assert f'checksum differs: {first}' in message
    assert f'missing {gpu_pack.HED_PACKED}' in message and 'stray.txt' in message


def _script(name: str, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(['bash', str(REPO / 'bench' / name), *args], capture_output=True,
                          text=True, timeout=120, env={**os.environ, 'PYTHON': sys.executable,
                                                       **env})


def test_gpu_train_checks_the_pack_and_plans_the_published_runs(tiny_pack, tmp_path):
    pack, _, _ = tiny_pack
    done = _script('gpu_train.sh', {'GPU_PACK': str(pack), 'OUT': str(tmp_path / 'out')},
                   '--plan')
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout[done.stdout.index('{'):])
    for tag, start in (('w100', ['--width', '1.0']), ('w025', ['--init-from'])):
        command = plan['train'][tag]
        assert command[command.index('--loss') + 1] == 'full'
        assert command[command.index('--lr') + 1] == '1e-4'
        assert command[command.index('--batch-size') + 1] == '12'
        assert str(pack / 'masks' / 'msrs') in command
        assert command[command.index(start[0]):][:len(start)] == start
    summary = json.loads((tmp_path / 'out' / 'gpu_train.json').read_text(encoding='utf-8'))
    assert summary['steps'][0]['step'] == 'verify pack'

    (pack / 'MANIFEST.json').unlink()
    broken = _script('gpu_train.sh', {'GPU_PACK': str(pack), 'OUT': str(tmp_path / 'out2')},
                     '--plan')
    assert broken.returncode == 2 and 'make gpu-pack' in broken.stdout


@pytest.mark.parametrize(('name', 'env'), [('gpu_train.sh', {'TRAIN_MINUTES': 'five'}),
                                           ('gpu_check.sh', {'BUDGET_S': '5m'})])
def test_scripts_refuse_bad_budgets_before_any_work(name, env, tmp_path):
    done = _script(name, {**env, 'OUT': str(tmp_path)})
    assert done.returncode == 2
    assert 'TRAIN_MINUTES' in done.stderr or 'BUDGET_S' in done.stderr


def test_check_out_counts_what_the_device_brings_back(gpu_pack, tmp_path):
    for name in gpu_pack.GPU_CHECK_OUTPUTS:
        (tmp_path / name).write_text('x')
    assert gpu_pack.check_outputs(tmp_path, gpu_pack.GPU_CHECK_OUTPUTS) == []
    (tmp_path / 'gpu_check.md').write_text('')
    for index in range(6):
        (tmp_path / f'extra{index}.txt').write_text('x')
    (tmp_path / 'a' / 'b' / 'c').mkdir(parents=True)
    (tmp_path / 'a' / 'b' / 'c' / 'deep.txt').write_text('x')
    problems = gpu_pack.check_outputs(tmp_path, gpu_pack.GPU_CHECK_OUTPUTS)
    assert 'gpu_check.md not written' in problems
    assert any(problem.startswith('10 files') for problem in problems)
    assert any('deep.txt' in problem for problem in problems)
