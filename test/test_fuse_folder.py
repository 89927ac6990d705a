"""occo-fuse on real pairs from ../shared/data/eval: files, sizes, colour, same pixels as the
fusion pipeline, and the error paths."""

import shutil

import cv2
import numpy as np
import pytest
import torch

from occo_ros.checkpoint import save_checkpoint
from occo_ros.engines import EngineSpec, create_engine
from occo_ros.fuse_folder import main
from occo_ros.image_pairs import read_gray, read_rgb
from occo_ros.model import build_fifn
from occo_ros.pipeline import FusionPipeline
from occo_ros.registration import Registration
from occo_ros.thermal import ThermalNormalizer


@pytest.fixture(scope='module')
def model(tmp_path_factory):
    torch.manual_seed(0)
    return save_checkpoint(tmp_path_factory.mktemp('model') / 'w025.pt',
                           build_fifn(0.25).eval())


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


def test_unpaired_and_mismatched_files_are_reported(folders, model, tmp_path, capsys):
    ir, vi = folders
    (ir / 'lonely.png').write_bytes((ir / sorted(p.name for p in ir.iterdir())[0]).read_bytes())
    first = sorted(ir.iterdir())[0]
    small = cv2.resize(read_rgb(next(vi.glob(first.stem + '.*'))), (64, 48))
    for partner in vi.glob(first.stem + '.*'):
        partner.unlink()
    cv2.imwrite(str(vi / f'{first.stem}.png'), small)
    assert main(['--ir', str(ir), '--vi', str(vi), '--out', str(tmp_path / 'out'),
                 '--model', str(model), '--backend', 'torch']) == 0
    err = capsys.readouterr().err
    assert 'lonely.png' in err and 'no partner' in err
    assert f'{first.stem}' in err and '64x48' in err and 'skipped' in err


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
