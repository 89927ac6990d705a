"""occo-eval (training.evaluate) end to end, its error paths, and the paired-folder reader."""

import csv
import json
from pathlib import Path
import subprocess
import sys

import cv2
import numpy as np
import pytest

from occo_ros.core.color import compose_rgb, luma_chroma
from occo_ros.engines import EngineSpec
from occo_ros.engines.base import EngineInfo, FusionEngine
from occo_ros.io.image_pairs import (
    ImageReadError,
    find_pairs,
    find_pairs_in_roots,
    read_gray,
    read_rgb,
)
from training.baselines import fuse_average
from training.evaluate import QUALITY_BAR, fuse_pair, main, metrics_won, parse_args
from training.metrics import METRICS

pytestmark = [pytest.mark.slow]


def write(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)
    return path


def scene(seed: int, shape=(48, 52)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, shape, dtype=np.uint8)


def read_rows(out: Path) -> list[dict]:
    with (out / 'metrics.csv').open() as handle:
        return list(csv.DictReader(handle))


# --- paired folders --------------------------------------------------------------------------


def test_find_pairs_matches_stems_across_extensions_and_reports_the_rest(tmp_path):
    write(tmp_path / 'ir' / 'a.PNG', scene(0))
    write(tmp_path / 'vi' / 'a.jpg', scene(1))
    write(tmp_path / 'ir' / 'b.png', scene(2))
    write(tmp_path / 'vi' / 'c.bmp', scene(3))
    (tmp_path / 'vi' / 'notes.txt').write_text('not an image')
    scan = find_pairs(tmp_path / 'ir', tmp_path / 'vi')
    assert [(p.stem, p.ir_path.name, p.vi_path.name) for p in scan.pairs] == [
        ('a', 'a.PNG', 'a.jpg')]
    assert [p.name for p in scan.unpaired] == ['b.png', 'c.bmp']


def test_find_pairs_errors_name_the_problem(tmp_path):
    write(tmp_path / 'ir' / 'a.png', scene(0))
    write(tmp_path / 'ir' / 'a.tif', scene(0))
    (tmp_path / 'vi').mkdir()
    with pytest.raises(ValueError, match="two images with stem 'a'.*a.png and a.tif"):
        find_pairs(tmp_path / 'ir', tmp_path / 'vi')
    with pytest.raises(NotADirectoryError, match='missing'):
        find_pairs(tmp_path / 'missing', tmp_path / 'vi')


def test_find_pairs_in_roots_refuses_a_stem_in_two_roots(tmp_path):
    for root in ('one', 'two'):
        write(tmp_path / root / 'ir' / 'x.png', scene(0))
        write(tmp_path / root / 'vi' / 'x.png', scene(1))
    write(tmp_path / 'two' / 'ir' / 'y.png', scene(0))
    write(tmp_path / 'two' / 'vi' / 'y.png', scene(1))
    assert [p.stem for p in find_pairs_in_roots([tmp_path / 'two']).pairs] == ['x', 'y']
    with pytest.raises(ValueError, match="stem 'x' occurs in two roots"):
        find_pairs_in_roots([tmp_path / 'one', tmp_path / 'two'])


def test_read_gray_uses_rounded_bt601_luma_and_read_rgb_keeps_rgb_order(tmp_path):
    rgb = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30]]], np.uint8)
    path = write(tmp_path / 'c.png', rgb[:, :, ::-1])               # files store BGR
    # 0.299*255 = 76.245, 0.587*255 = 149.685, 0.114*255 = 29.07, 2.99+11.74+3.42 = 18.15
    np.testing.assert_array_equal(read_gray(path), [[76, 150, 29, 18]])
    np.testing.assert_array_equal(read_rgb(path), rgb)
    gray = write(tmp_path / 'g.png', np.array([[5, 6]], np.uint8))
    np.testing.assert_array_equal(read_rgb(gray), [[[5, 5, 5], [6, 6, 6]]])


def test_read_errors_name_the_file(tmp_path):
    broken = tmp_path / 'broken.png'
    broken.write_bytes(b'not a png')
    with pytest.raises(ImageReadError, match='broken.png'):
        read_gray(broken)
    deep = write(tmp_path / 'deep.png', np.zeros((4, 4), np.uint16))
    with pytest.raises(ImageReadError, match='deep.png has uint16 pixels, expected 8-bit'):
        read_gray(deep)
    with pytest.raises(FileNotFoundError, match='gone.png'):
        read_rgb(tmp_path / 'gone.png')


# --- inference helper ------------------------------------------------------------------------


class MaxEngine(FusionEngine):
    """Test double honouring the FusionEngine contract: the pixel-wise maximum of its inputs
    (exact on 8-bit values; it depends on both, as the frame step's output check asks)."""

    @property
    def info(self) -> EngineInfo:
        return EngineInfo('test', 'cpu', 'fp32', '')

    def infer(self, visible_y: np.ndarray, infrared: np.ndarray) -> np.ndarray:
        assert visible_y.dtype == infrared.dtype == np.float32
        assert visible_y.shape == infrared.shape == (1, 1, 48, 52)
        assert 0.0 <= visible_y.min() and visible_y.max() <= 1.0
        return np.maximum(visible_y, infrared)


def test_fuse_pair_is_the_frame_step_and_round_trips_8_bit_values():
    rgb = np.stack([scene(5), scene(7), scene(8)], axis=2)
    fused, color, seconds = fuse_pair(MaxEngine(), scene(6), rgb)
    y, ycbcr = luma_chroma(rgb, 'rgb')                    # the node's visible luminance
    expected = np.maximum(y, scene(6))
    np.testing.assert_array_equal(fused, expected)
    np.testing.assert_array_equal(color, compose_rgb(expected / 255.0, ycbcr, 'bgr'))
    assert seconds >= 0.0
    with pytest.raises(ValueError, match='needs 8-bit pixels'):  # the frame step's reason
        fuse_pair(MaxEngine(), scene(6), rgb.astype(np.uint16))


# --- the command line ------------------------------------------------------------------------


@pytest.fixture(scope='module')
def msrs_three(shared_data, tmp_path_factory):
    """Three real MSRS pairs and a folder of their average-fused luminances."""
    scan = find_pairs(shared_data / 'eval' / 'msrs' / 'ir', shared_data / 'eval' / 'msrs' / 'vi')
    root = tmp_path_factory.mktemp('msrs')
    for pair in scan.pairs[:3]:
        write(root / 'avg' / f'{pair.stem}.png',
              fuse_average(read_gray(pair.ir_path), read_gray(pair.vi_path)))
    return shared_data / 'eval' / 'msrs', root / 'avg', [p.stem for p in scan.pairs[:3]]


def test_a_spawned_metric_process_imports_no_torch():
    """occo-eval's metric processes are spawned: each imports training.evaluate (and the
    occo-eval script) again, so the module must not import torch (~3 CPU s per process)."""
    code = 'import sys, training.evaluate; print("torch" in sys.modules)'
    run = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1], timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == 'False'


def test_end_to_end_on_real_pairs_with_metric_processes(msrs_three, tmp_path, capsys):
    data, fused, stems = msrs_three
    out = tmp_path / 'out'
    assert main(['--ir', str(data / 'ir'), '--vi', str(data / 'vi'), '--fused', str(fused),
                 '--out', str(out), '--limit', '3', '--workers', '2']) == 0
    rows = read_rows(out)
    methods = ['avg', 'average', 'max', 'laplacian', 'gff']
    assert [(r['stem'], r['method']) for r in rows] == [(s, m) for s in stems for m in methods]
    for row in rows:
        assert all(np.isfinite(float(row[m])) for m in METRICS), row
    # The fused folder holds average fusions, so its scores equal the 'average' baseline's.
    for fused_row, baseline_row in zip(rows[0::5], rows[1::5]):
        assert all(fused_row[m] == baseline_row[m] for m in METRICS)

    summary = (out / 'summary.md').read_text()
    assert summary in capsys.readouterr().out
    assert '| method | EN ↑ |' in summary and 'Nabf ↓' in summary
    assert '3 image pairs' in summary and '**' in summary
    assert 'SSIM/MS-SSIM are sums over the two sources' in summary
    assert 'MI: I(A;F) + I(B;F) in bits' in summary
    # Equal scores are not wins: the average-fused folder wins nothing against 'average'.
    assert 'Quality bar (issue 3): avg beats each baseline' in summary
    assert '**not met**' in summary and '| average | 0 | - |' in summary
    grid = cv2.imread(str(out / 'grid.png'))
    assert grid is not None and grid.shape[0] > 3 * 240 and grid.shape[1] > 7 * 300
    timings = json.loads((out / 'timings.json').read_text())
    assert timings['stages']['metrics gff']['count'] == 3


def test_metrics_won_counts_strict_wins_on_the_quality_bar_metrics():
    baseline = {m: 1.0 for m in METRICS}
    candidate = dict(baseline, EN=2.0, SF=2.0, VIF=0.5, MI=9.0)
    # MI is not a quality-bar metric; VIF is lower; the rest are ties.
    assert metrics_won(candidate, baseline) == ['EN', 'SF']
    assert metrics_won({m: 3.0 for m in METRICS}, baseline) == list(QUALITY_BAR)


def test_legacy_table_states_the_legacy_units(msrs_three, tmp_path, capsys):
    data, fused, _ = msrs_three
    out = tmp_path / 'legacy'
    assert main(['--ir', str(data / 'ir'), '--vi', str(data / 'vi'), '--fused', str(fused),
                 '--out', str(out), '--limit', '1', '--legacy', '--baselines', 'none']) == 0
    summary = (out / 'summary.md').read_text()
    assert 'canonical PSNR + 48.13 dB' in summary and 'MEF-SSIM' in summary
    assert float(read_rows(out)[0]['PSNR']) > 60.0


def make_set(root: Path, stems=('p1', 'p2', 'p3')) -> tuple[Path, Path]:
    for i, stem in enumerate(stems):
        write(root / 'ir' / f'{stem}.png', scene(2 * i))
        write(root / 'vi' / f'{stem}.png', cv2.cvtColor(scene(2 * i + 1), cv2.COLOR_GRAY2BGR))
    return root / 'ir', root / 'vi'


def run(ir: Path, vi: Path, fused: Path, out: Path, *extra: str) -> int:
    return main(['--ir', str(ir), '--vi', str(vi), '--fused', str(fused), '--out', str(out),
                 '--baselines', 'average', *extra])


def average_folder(ir: Path, vi: Path, folder: Path) -> Path:
    for pair in find_pairs(ir, vi).pairs:
        write(folder / f'{pair.stem}.png',
              fuse_average(read_gray(pair.ir_path), read_gray(pair.vi_path)))
    return folder


def test_problems_are_named_counted_and_skipped(tmp_path, capsys):
    ir, vi = make_set(tmp_path)
    fused = average_folder(ir, vi, tmp_path / 'fused')
    write(ir / 'lonely.png', scene(9))                               # unpaired
    (ir / 'p2.png').write_bytes(b'garbage')                          # unreadable
    write(vi / 'p3.png', scene(9, (48, 60)))                         # size mismatch
    assert run(ir, vi, fused, tmp_path / 'out') == 0
    err = capsys.readouterr().err
    assert '1 image(s) without a partner' in err and 'lonely.png' in err
    assert 'p2.png' in err and 'cannot decode' in err
    assert f'{ir / "p3.png"} is 52x48 but {vi / "p3.png"} is 60x48' in err
    assert '2 pair(s) skipped' in err
    assert {row['stem'] for row in read_rows(tmp_path / 'out')} == {'p1'}
    assert '2 skipped, 1 unpaired' in (tmp_path / 'out' / 'summary.md').read_text()


def test_missing_fused_image_skips_the_pair(tmp_path, capsys):
    ir, vi = make_set(tmp_path)
    fused = average_folder(ir, vi, tmp_path / 'fused')
    (fused / 'p1.png').unlink()
    assert run(ir, vi, fused, tmp_path / 'out') == 0
    assert f"no fused image for stem 'p1' in {fused}" in capsys.readouterr().err
    assert {row['stem'] for row in read_rows(tmp_path / 'out')} == {'p2', 'p3'}


def test_nothing_evaluated_exits_non_zero(tmp_path, capsys):
    ir, vi = make_set(tmp_path, stems=('p1',))
    (tmp_path / 'empty').mkdir()
    assert run(ir, vi, tmp_path / 'empty', tmp_path / 'out') == 1
    assert 'nothing could be evaluated' in capsys.readouterr().err
    assert run(tmp_path / 'nowhere', vi, tmp_path / 'empty', tmp_path / 'out') == 2
    assert 'nowhere does not exist' in capsys.readouterr().err


def test_arguments_are_validated(tmp_path, capsys):
    ir, vi = make_set(tmp_path, stems=('p1',))
    with pytest.raises(SystemExit) as exit_info:
        main(['--ir', str(ir), '--vi', str(vi), '--fused', str(ir), '--out', 'o',
              '--baselines', 'average,wavelet'])
    assert exit_info.value.code == 2
    assert "unknown baseline(s) ['wavelet']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(['--ir', str(ir), '--vi', str(vi), '--out', 'o'])      # neither model nor fused
    fused = average_folder(ir, vi, tmp_path / 'average')
    assert run(ir, vi, fused, tmp_path / 'out') == 2                  # label clashes
    assert 'pass --name' in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(['--help'])
    assert exit_info.value.code == 0
    assert '--legacy' in capsys.readouterr().out


def test_engine_options_come_from_the_node_parameter_table(capsys):
    """occo-eval's engine options are the node parameters (EngineSpec.add_arguments):
    same help text and checks; its own defaults torch / 1 thread; --threads still works."""
    common = ['--ir', 'i', '--vi', 'v', '--out', 'o']
    options = parse_args([*common, '--model', 'm.pt'])
    assert options.model == Path('m.pt') and options.fused_dir is None
    assert options.engine == EngineSpec(backend='torch', num_threads=1, model_path='m.pt')
    options = parse_args([*common, '--model', 'm.onnx', '--backend', 'onnxruntime',
                          '--threads', '3', '--device', 'cpu', '--precision', 'fp16'])
    assert options.engine == EngineSpec(backend='onnxruntime', num_threads=3, device='cpu',
                                        precision='fp16', model_path='m.onnx')
    for bad in (['--model', 'm.pt', '--fused', 'f'], ['--model', 'm.pt', '--device', 'gpu7']):
        with pytest.raises(SystemExit) as exit_info:
            parse_args([*common, *bad])
        assert exit_info.value.code == 2
    assert "device='gpu7'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args(['--help'])
    text = ' '.join(capsys.readouterr().out.split())
    assert "Node parameter backend; default 'torch'" in text
    assert 'Node parameter num_threads; default 1' in text


def test_model_scores_are_reproduced_from_its_written_images(tmp_path, capsys):
    engines = pytest.importorskip('occo_ros.engines')
    if not hasattr(engines, 'create_engine'):
        pytest.skip('occo_ros.engines.create_engine is not available in this checkout')
    torch = pytest.importorskip('torch')
    from occo_ros.model.checkpoint import save_checkpoint
    from occo_ros.model.network import build_fifn
    torch.manual_seed(0)
    model = save_checkpoint(tmp_path / 'tiny.pt', build_fifn(0.25))
    ir, vi = make_set(tmp_path, stems=('p1', 'p2'))
    out = tmp_path / 'out'
    assert main(['--ir', str(ir), '--vi', str(vi), '--model', str(model), '--out', str(out),
                 '--baselines', 'none', '--device', 'cpu']) == 0
    assert sorted(p.name for p in (out / 'color' / 'tiny').iterdir()) == ['p1.png', 'p2.png']
    with (out / 'color.csv').open() as handle:    # the colour measure of issue 21
        assert [row['stem'] for row in csv.DictReader(handle)] == ['p1', 'p2']
    assert 'Colour of tiny' in (out / 'summary.md').read_text()
    assert run(ir, vi, out / 'fused' / 'tiny', tmp_path / 'again', '--baselines', 'none') == 0
    assert read_rows(out) == read_rows(tmp_path / 'again')


def test_the_output_folder_never_overlaps_the_inputs_or_replaces_foreign_files(tmp_path,
                                                                               capsys):
    ir, vi = make_set(tmp_path, stems=('p1', 'p2'))
    fused = average_folder(ir, vi, tmp_path / 'avg')
    out = tmp_path / 'out'
    assert run(ir, vi, fused, out, '--baselines', 'none') == 0
    first = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert run(ir, vi, fused, out, '--baselines', 'none') == 2          # exists
    assert 'pass --overwrite' in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == first
    assert run(ir, vi, fused, out, '--baselines', 'none', '--overwrite') == 0
    (out / 'paper.md').write_text('my notes')
    assert run(ir, vi, fused, out, '--baselines', 'none', '--overwrite') == 2
    assert 'paper.md' in capsys.readouterr().err and (out / 'paper.md').exists()
    for target in (fused, ir, tmp_path):                                # inputs
        before = sorted(p.name for p in target.iterdir())
        assert run(ir, vi, fused, target, '--baselines', 'none', '--overwrite') == 2
        assert 'overlaps the input' in capsys.readouterr().err
        assert sorted(p.name for p in target.iterdir()) == before
