"""bench/bench_objective_ceiling.py: the per-image optimum of L_pixel, run as a script."""

import importlib
import json
from pathlib import Path
import subprocess
import sys

import cv2
import numpy as np
import pytest

from training.data import to_tensor
from training.losses import pixel_loss

pytestmark = [pytest.mark.bench]

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / 'bench' / 'bench_objective_ceiling.py'


def load_bench(name: str = 'bench_objective_ceiling'):
    """A script's module (bench/ is not a package: import it the way it runs)."""
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(SCRIPT.parent))


def loss_of(fused: np.ndarray, visible: np.ndarray, infrared: np.ndarray) -> float:
    v, i, f = (to_tensor(x)[None] for x in (visible, infrared, fused))
    return float(pixel_loss(f, v, i)['pixel'])


def test_optimum_lowers_the_pixel_loss_below_every_baseline(shared_data):
    bench = load_bench()
    ir = cv2.imread(str(shared_data / 'eval' / 'msrs' / 'ir' / '00004N.png'), 0)[:96, :128]
    vi = cv2.imread(str(shared_data / 'eval' / 'msrs' / 'vi' / '00004N.png'), 0)[:96, :128]
    halfway, optimum = bench.optimise_pixel_loss(vi, ir, iters=60, lr=0.01)
    assert optimum.dtype == np.uint8 and optimum.shape == ir.shape
    assert loss_of(optimum, vi, ir) <= loss_of(halfway, vi, ir) + 1e-3
    for name, fuse in bench.BASELINES.items():
        assert loss_of(optimum, vi, ir) < loss_of(fuse(ir, vi), vi, ir), name


def test_script_prints_wins_per_baseline(tmp_path, capsys):
    """One run as a script; the refusals through main() in this process (each subprocess
    would import torch again for a check made before or after the optimisation)."""
    rng = np.random.default_rng(0)
    for folder in ('ir', 'vi'):
        (tmp_path / 'set' / folder).mkdir(parents=True)
    image = cv2.GaussianBlur(rng.integers(0, 256, (64, 72), dtype=np.uint8), (5, 5), 2)
    cv2.imwrite(str(tmp_path / 'set' / 'ir' / 'a.png'), image)
    cv2.imwrite(str(tmp_path / 'set' / 'vi' / 'a.png'),
                cv2.cvtColor(255 - image, cv2.COLOR_GRAY2BGR))
    command = [sys.executable, str(SCRIPT), '--sets', str(tmp_path / 'set'), '--pairs', '1',
               '--iters', '6', '--json', str(tmp_path / 'means.json'),
               '--save-images', str(tmp_path / 'optimum')]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=True)
    assert '| L_pixel optimum @6 |' in result.stdout and '| gff |' in result.stdout
    saved = cv2.imread(str(tmp_path / 'optimum' / 'set' / 'a.png'), cv2.IMREAD_UNCHANGED)
    assert saved.shape == image.shape and saved.dtype == np.uint8
    main = load_bench().main
    with pytest.raises(FileExistsError, match='--overwrite'):
        main(command[2:])
    capsys.readouterr()
    assert main(command[2:-1] + [str(tmp_path / 'set' / 'ir')]) == 2
    assert 'overlaps an input' in capsys.readouterr().err
    means = json.loads((tmp_path / 'means.json').read_text())
    assert set(means['set']) == {'L_pixel optimum @3', 'L_pixel optimum @6', 'average', 'max',
                                 'laplacian', 'gff'}
    assert main(['--sets', str(tmp_path / 'none')]) == 2
    assert 'no ir/ folder' in capsys.readouterr().err


def test_ratio_table_from_eval_outputs(tmp_path, capsys):
    """The passing table from a script run; the failing and bad-input runs through main()."""
    script = REPO / 'bench' / 'bench_optimum_ratio.py'
    metrics = ('EN', 'SD', 'SF', 'AG', 'SCD', 'VIF', 'Qabf', 'SSIM')
    optimum = {'msrs': {'L_pixel optimum @200': dict.fromkeys(metrics, 2.0)}}
    (tmp_path / 'optimum.json').write_text(json.dumps(optimum))

    def write_eval(folder: Path, model_value: float) -> None:
        folder.mkdir()
        lines = ['stem,method,' + ','.join(metrics)]
        for stem, offset in (('a', -0.1), ('b', 0.1)):      # mean = model_value
            lines.append(f'{stem},net,' + ','.join([str(model_value + offset)] * 8))
            lines.append(f'{stem},average,' + ','.join(['1.0'] * 8))
        (folder / 'metrics.csv').write_text('\n'.join(lines) + '\n')

    write_eval(tmp_path / 'good', 1.95)
    write_eval(tmp_path / 'low', 1.5)
    base = [sys.executable, str(script), '--optimum', str(tmp_path / 'optimum.json')]
    good = subprocess.run(base + ['--eval', f'msrs={tmp_path / "good"}'],
                          capture_output=True, text=True, timeout=120)
    assert good.returncode == 0, good.stderr
    assert '| EN | 1.95 | 2 | 97.5% | yes |' in good.stdout
    main = load_bench('bench_optimum_ratio').main
    assert main(base[2:] + ['--eval', f'msrs={tmp_path / "low"}',
                            '--reference', f'msrs={tmp_path / "good"}']) == 1
    low = capsys.readouterr().out
    assert '| SSIM | 1.5 | 2 | 75.0% | **no** | 1.95 | **no** |' in low
    assert '16 check(s) failed' in low
    assert main(base[2:] + ['--eval', f'kaist={tmp_path / "good"}']) == 2
    assert "set 'kaist'" in capsys.readouterr().err
