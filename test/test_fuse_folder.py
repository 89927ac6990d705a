"""occo-fuse on real pairs from ../shared/data/eval: files, sizes, colour, same pixels as the
fusion pipeline, and the error paths."""

from pathlib import Path
import shutil

import cv2
import numpy as np
import pytest

from occo_ros.cli.fuse import main, parse_args
from occo_ros.core.registration import Registration
from occo_ros.core.thermal import ThermalNormalizer
from occo_ros.engines import EngineSpec, create_engine
from occo_ros.io.image_pairs import read_gray, read_rgb
from occo_ros.pipeline import FusionPipeline

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope='module')
def model(tiny_checkpoint, tmp_path_factory):
    """A copy of the run's random width-0.25 checkpoint (outputs must not overlap its folder,
    which one test tries)."""
    path = tmp_path_factory.mktemp('model') / 'w025.pt'
    shutil.copyfile(tiny_checkpoint, path)
    return path


@pytest.fixture
def folders(shared_data, tmp_path):
    """Two MSRS pairs and one RoadScene pair (another size) in temporary ir/ and vi/."""
    ir, vi = tmp_path / 'ir', tmp_path / 'vi'
    ir.mkdir()
    vi.mkdir()
    for dataset, count in (('msrs', 2), ('roadscene', 1)):
        for path in sorted((shared_data / 'eval' / dataset / 'ir').iterdir())[:count]:
            shutil.copy(path, ir)
            partner = next((shared_data / 'eval' / dataset / 'vi').glob(path.stem + '.*'))
            shutil.copy(partner, vi)
    return ir, vi


def test_fuses_every_pair_at_its_own_size_like_the_pipeline(folders, model, tmp_path):
    ir, vi = folders
    out = tmp_path / 'out'
    assert main(['--ir', str(ir), '--vi', str(vi), '--out', str(out), '--model', str(model),
                 '--backend', 'torch']) == 0
    engine = create_engine(EngineSpec(backend='torch', model_path=str(model)))
    for ir_path in sorted(ir.iterdir()):
        fused = cv2.imread(str(out / f'{ir_path.stem}.png'), cv2.IMREAD_UNCHANGED)
        infrared = read_gray(ir_path)
        visible = read_rgb(next(vi.glob(ir_path.stem + '.*')))
        assert fused.shape == visible.shape                 # colour, the pair's own size
        size = (infrared.shape[1], infrared.shape[0])
        pipeline = FusionPipeline(engine, Registration(output_size=size),
                                  ThermalNormalizer('fixed', lo=0.0, hi=255.0), size, size)
        expected = pipeline.fuse(infrared, visible, 'rgb').in_encoding('bgr8')
        np.testing.assert_array_equal(fused, expected)


def test_gray_output_and_fixed_network_size(folders, model, tmp_path):
    ir, vi = folders
    out = tmp_path / 'out'
    assert main(['--ir', str(ir), '--vi', str(vi), '--out', str(out), '--model', str(model),
                 '--backend', 'torch', '--size', '96x64', '--gray']) == 0
    for ir_path in ir.iterdir():
        fused = cv2.imread(str(out / f'{ir_path.stem}.png'), cv2.IMREAD_UNCHANGED)
        assert fused.ndim == 2 and fused.shape == read_gray(ir_path).shape


def test_unpaired_and_mismatched_files_are_reported(small_folders, model, tmp_path, capsys):
    ir, vi = small_folders
    (ir / 'lonely.png').write_bytes((ir / sorted(p.name for p in ir.iterdir())[0]).read_bytes())
    first = sorted(ir.iterdir())[0]
    small = cv2.resize(read_rgb(next(vi.glob(first.stem + '.*'))), (64, 48))
    for partner in vi.glob(first.stem + '.*'):
        partner.unlink()
    cv2.imwrite(str(vi / f'{first.stem}.png'), small)
    assert main(['--ir', str(ir), '--vi', str(vi), '--out', str(tmp_path / 'out'),
                 '--model', str(model), '--backend', 'torch']) == 1   # a pair was skipped
    err = capsys.readouterr().err
    assert 'lonely.png' in err and 'no partner' in err
    assert f'skipped {first.stem}: ' in err and '64x48' in err
    assert sorted(p.stem for p in (tmp_path / 'out').glob('*.png')) == \
        sorted(p.stem for p in ir.iterdir() if p.stem not in (first.stem, 'lonely'))


def test_missing_model_and_empty_folders_fail_clearly(folders, tmp_path, capsys):
    ir, vi = folders
    missing = tmp_path / 'nope.pt'
    assert main(['--ir', str(ir), '--vi', str(vi), '--out', str(tmp_path / 'o'),
                 '--model', str(missing)]) == 2
    assert str(missing) in capsys.readouterr().err
    empty = tmp_path / 'empty'
    empty.mkdir()
    assert main(['--ir', str(empty), '--vi', str(empty), '--out', str(tmp_path / 'o')]) == 1
    with pytest.raises(SystemExit):
        main(['--ir', str(ir), '--vi', str(vi), '--out', str(tmp_path / 'o'), '--size', '4x4'])


@pytest.fixture
def small_folders(folders):
    """The same real pairs shrunk to 80x64, so each run takes a fraction of a second."""
    for folder in folders:
        for path in folder.iterdir():
            image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            path.unlink()
            cv2.imwrite(str(path.with_suffix('.png')), cv2.resize(image, (80, 64)))
    return folders


def run(ir, vi, out, model, *extra):
    return main(['--ir', str(ir), '--vi', str(vi), '--out', str(out), '--model', str(model),
                 '--backend', 'torch', *extra])


def snapshot(folder):
    """Every file under ``folder`` with its bytes."""
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob('*'))
            if p.is_file()}


def test_a_bad_pair_is_skipped_with_one_line_and_the_rest_are_fused(small_folders, model,
                                                                    tmp_path, capsys):
    ir, vi = small_folders
    cv2.imwrite(str(ir / 'tiny.png'), np.full((4, 4), 100, np.uint8))   # below 8x8
    cv2.imwrite(str(vi / 'tiny.png'), np.full((4, 4, 3), 100, np.uint8))
    (ir / 'broken.png').write_bytes(b'not a png')
    (vi / 'broken.png').write_bytes((vi / 'tiny.png').read_bytes())
    assert run(ir, vi, tmp_path / 'out', model) == 1
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if 'skipped' in line]
    assert len(lines) == 2, captured.err                  # one line per bad pair
    assert any(line.startswith('occo-fuse: skipped tiny: ') for line in lines)
    assert any(line.startswith('occo-fuse: skipped broken: ') for line in lines)
    assert 'Traceback' not in captured.err
    assert 'fused 3 of 5 pairs' in captured.out and 'skipped 2: ' in captured.out
    good = sorted(p.stem for p in ir.iterdir() if p.stem not in ('tiny', 'broken'))
    assert sorted(p.stem for p in (tmp_path / 'out').glob('*.png')) == good


def test_an_output_overlapping_an_input_is_refused_and_the_inputs_are_untouched(
        small_folders, model, tmp_path, capsys):
    ir, vi = small_folders
    before = snapshot(tmp_path)
    for out in (vi, ir, ir / 'fused', tmp_path, model, model.parent):
        assert run(ir, vi, out, model) == 2, out
        assert 'overlaps the input' in capsys.readouterr().err
        assert run(ir, vi, out, model, '--overwrite') == 2, out
    assert snapshot(tmp_path) == before
    assert not (ir / 'fused').exists()


def test_existing_outputs_need_overwrite_which_replaces_only_occo_fuse_files(
        small_folders, model, tmp_path, capsys):
    ir, vi = small_folders
    out = tmp_path / 'out'
    assert run(ir, vi, out, model) == 0
    first = snapshot(out)
    assert run(ir, vi, out, model) == 2                   # rerun without --overwrite
    assert 'pass --overwrite' in capsys.readouterr().err
    assert snapshot(out) == first
    stem = sorted(ir.iterdir())[0].stem                   # a pair gone from the inputs:
    for folder in (ir, vi):                               # its old output goes too
        for path in folder.glob(stem + '.*'):
            path.unlink()
    assert run(ir, vi, out, model, '--overwrite') == 0
    assert sorted(p.stem for p in out.glob('*.png')) == sorted(p.stem for p in ir.iterdir())
    (out / 'notes.txt').write_text('mine')                # a user's file beside them
    assert run(ir, vi, out, model, '--overwrite') == 2
    err = capsys.readouterr().err
    assert 'notes.txt' in err and 'did not write' in err
    assert (out / 'notes.txt').read_text() == 'mine' and len(list(out.glob('*.png'))) == 2
    user = tmp_path / 'photos'                            # a folder occo-fuse never wrote
    user.mkdir()
    (user / 'holiday.png').write_bytes(b'precious')
    for extra in ((), ('--overwrite',)):
        assert run(ir, vi, user, model, *extra) == 2
    assert snapshot(user) == {Path('holiday.png'): b'precious'}
    existing_file = tmp_path / 'file.png'
    existing_file.write_bytes(b'keep')
    assert run(ir, vi, existing_file, model, '--overwrite') == 2
    assert 'not a folder' in capsys.readouterr().err and existing_file.read_bytes() == b'keep'
    (tmp_path / 'empty').mkdir()                          # an empty folder is fine as it is
    assert run(ir, vi, tmp_path / 'empty', model) == 0


def test_help_documents_every_option_and_the_exit_status(capsys):
    with pytest.raises(SystemExit):
        main(['--help'])
    text = ' '.join(capsys.readouterr().out.split())
    for option in ('--ir', '--vi', '--out', '--overwrite', '--model', '--backend', '--device',
                   '--size', '--gray'):
        assert option in text
    for code in ('0 every pair fused', '1 one or more pairs skipped', '2 bad arguments',
                 '130 interrupted'):
        assert code in text


def test_engine_options_come_from_the_node_parameter_table(capsys):
    """occo-fuse's engine options are the node parameters (EngineSpec.add_arguments); --size
    sets the engine's input size (H, W)."""
    common = ['--ir', 'i', '--vi', 'v', '--out', 'o']
    assert parse_args(common)[1] == EngineSpec()       # the node's defaults, shipped model
    _, spec = parse_args([*common, '--model', 'm.onnx', '--backend', 'onnxruntime',
                          '--device', 'cpu', '--threads', '2', '--size', '96x64'])
    assert spec == EngineSpec(backend='onnxruntime', model_path='m.onnx', device='cpu',
                              num_threads=2, input_size=(64, 96))
    with pytest.raises(SystemExit) as exit_info:
        parse_args([*common, '--model', 'weights.txt'])
    assert exit_info.value.code == 2
    assert "model_path 'weights.txt'" in capsys.readouterr().err
