"""What is published is checked (issue 20), without ROS: the network's output in the frame
step and at load, camera_info, the registration's coverage, decoded-size limits of the
offline tools, leftovers of killed runs and a few messages.

The bad models are small real ONNX graphs (onnx.helper) run by ONNX Runtime through
occo_ros.engines.create_engine, as the node loads them.
"""

from __future__ import annotations

from pathlib import Path
import pickle
import signal
import struct
import subprocess
import sys
from types import SimpleNamespace
import warnings
import zlib

import cv2
import numpy as np
import onnx
from onnx import TensorProto, helper
import pytest
import yaml

from occo_ros.calibration.file import CalibrationError, registration_from_params
from occo_ros.cli import bag
from occo_ros.cli import fuse as fuse_folder
from occo_ros.core import codec
from occo_ros.core.registration import Registration
from occo_ros.core.stats import ChangeLog
from occo_ros.core.thermal import ThermalNormalizer
from occo_ros.engines import EngineError, EngineSpec, create_engine
from occo_ros.io.bags import BagError, InputBag, OutputBag
from occo_ros.params import SPECS, FusionSettings, check_params
from occo_ros.pipeline import FusionPipeline
from occo_ros.util.atomic_file import atomic_write_bytes

pytestmark = [pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]


# -- small real ONNX models -----------------------------------------------------------------
def onnx_model(path: Path, nodes: list) -> Path:
    """An FIFN-shaped graph (inputs visible_y, infrared, output fused_y; dynamic N, H, W)
    whose body is ``nodes`` (constants zero, half, one, hundred)."""
    dims = ['batch', 1, 'height', 'width']
    inputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, dims)
              for name in ('visible_y', 'infrared')]
    output = helper.make_tensor_value_info('fused_y', TensorProto.FLOAT, None)
    constants = [helper.make_tensor(name, TensorProto.FLOAT, [], [value]) for name, value in
                 (('zero', 0.0), ('half', 0.5), ('one', 1.0), ('hundred', 100.0))]
    graph = helper.make_graph(nodes, 'bad_fifn', inputs, [output], constants)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def mean_body(out: str = 'fused_y') -> list:
    """out = (visible + infrared) / 2: a model that fuses."""
    return [helper.make_node('Add', ['visible_y', 'infrared'], ['sum']),
            helper.make_node('Mul', ['sum', 'half'], [out])]


def wide(body: list) -> list:
    """``body`` plus 'wide': whether the input is wider than 100 px (the deployment sizes,
    not the 64x64 dry run at load)."""
    index = helper.make_tensor('width_index', TensorProto.INT64, [], [3])
    return body + [helper.make_node('Shape', ['infrared'], ['shape']),
                   helper.make_node('Constant', [], ['width_index'], value=index),
                   helper.make_node('Gather', ['shape', 'width_index'], ['width']),
                   helper.make_node('Cast', ['width'], ['width_f'], to=TensorProto.FLOAT),
                   helper.make_node('Greater', ['width_f', 'hundred'], ['wide'])]


def nan_on_real_frames(path: Path) -> Path:
    """Fuses on the small dry run at load, NaN ((x / 0) * 0) at deployment sizes: an fp16
    engine overflowing on real frames looks like this."""
    return onnx_model(path, wide(mean_body('mean')) + [
        helper.make_node('Where', ['wide', 'zero', 'one'], ['gap']),
        helper.make_node('Div', ['mean', 'gap'], ['blown']),
        helper.make_node('Mul', ['blown', 'gap'], ['fused_y'])])


def visible_on_real_frames(path: Path) -> Path:
    """Fuses on the small dry run at load, passes the visible Y on at deployment sizes."""
    return onnx_model(path, wide(mean_body('mean')) + [
        helper.make_node('Where', ['wide', 'visible_y', 'mean'], ['fused_y'])])


def two_channels(path: Path) -> Path:
    return onnx_model(path, [helper.make_node('Concat', ['visible_y', 'infrared'],
                                              ['fused_y'], axis=1)])


def always_nan(path: Path) -> Path:
    return onnx_model(path, [helper.make_node('Sub', ['infrared', 'one'], ['below']),
                             helper.make_node('Sqrt', ['below'], ['fused_y'])])


def visible_passthrough(path: Path) -> Path:
    return onnx_model(path, [helper.make_node('Identity', ['visible_y'], ['fused_y'])])


def load(path: Path, tmp_path: Path):
    return create_engine(EngineSpec(backend='onnxruntime', device='cpu', model_path=str(path),
                                    engine_cache_dir=str(tmp_path / 'cache')))


# -- the model contract at load --------------------------------------------------------------
@pytest.mark.parametrize('make, words', [
    (always_nan, 'non-finite'),
    (two_channels, 'has 2 channels'),
    (visible_passthrough, 'equals the visible luminance'),
])
def test_a_model_breaking_the_output_contract_is_refused_at_load(tmp_path, make, words):
    model = make(tmp_path / 'bad.onnx')
    with pytest.raises(EngineError) as caught:
        load(model, tmp_path)
    message = str(caught.value)
    assert f'{model} breaks the FIFN output contract on a 64x64 dry run' in message
    assert words in message and '\n' not in message


def test_the_shipped_model_passes_the_dry_run(tmp_path):
    engine = load(REPO / 'models' / 'fifn_w025_pixel.onnx', tmp_path)
    engine.close()


@pytest.fixture(scope='module')
def shipped_engine(tmp_path_factory):
    """The shipped model on ONNX Runtime, loaded once for the frame-step tests."""
    engine = load(REPO / 'models' / 'fifn_w025_pixel.onnx', tmp_path_factory.mktemp('shipped'))
    yield engine
    engine.close()


# -- the output check in the frame step ------------------------------------------------------
def frame_pipeline(engine) -> FusionPipeline:
    return FusionPipeline(engine, Registration(output_size=(160, 128)),
                          ThermalNormalizer('percentile', percentiles=(1.0, 99.0)),
                          (160, 128), (160, 128))


def camera_pair(seed: int = 0) -> tuple[np.ndarray, codec.DecodedImage]:
    rng = np.random.default_rng(seed)
    thermal = cv2.resize(rng.integers(20000, 30000, (16, 20)).astype(np.uint16), (320, 256))
    rgb = cv2.resize(rng.integers(0, 255, (9, 16, 3), dtype=np.uint8), (640, 360))
    return thermal, codec.DecodedImage(rgb, 'bgr')


@pytest.mark.parametrize('make, kind', [(nan_on_real_frames, 'contract'),
                                        (visible_on_real_frames, 'visible_only')])
def test_a_bad_output_is_not_a_frame(tmp_path, make, kind):
    engine = load(make(tmp_path / 'bad.onnx'), tmp_path)   # passes the dry run
    result = frame_pipeline(engine).fuse_frame(*camera_pair())
    assert not result.ok and result.reason == 'bad_output'
    assert result.problems[0].kind == kind
    assert result.problems[0].message.startswith('bad network output: ')


def test_a_good_model_is_never_a_bad_output(shipped_engine):
    pipeline = frame_pipeline(shipped_engine)
    for seed in range(5):
        assert pipeline.fuse_frame(*camera_pair(seed)).ok


# -- camera_info ------------------------------------------------------------------------------
def camera_info(**changes) -> SimpleNamespace:
    fields = dict(width=1280, height=720, distortion_model='plumb_bob', d=[0.0] * 5,
                  k=[640.0, 0, 639.5, 0, 640.0, 359.5, 0, 0, 1], r=[1.0, 0, 0, 0, 1, 0, 0, 0, 1],
                  p=[640.0, 0, 639.5, 0, 0, 640.0, 359.5, 0, 0, 0, 1, 0])
    return SimpleNamespace(**dict(fields, **changes))


@pytest.mark.parametrize('changes, words', [
    ({'k': [float('nan')] + [0.0] * 8}, 'K must be 9 finite numbers'),
    ({'r': [float('inf')] * 9}, 'R must be 9 finite numbers'),
    ({'width': 640, 'height': 480}, 'describes 640x480 images, the RGB images are 1280x720'),
    ({'d': [0.0] * 1_000_000}, 'has 1000000 distortion coefficients, at most 14'),
])
def test_a_bad_camera_info_costs_only_the_camera_info(shipped_engine, changes, words):
    pipeline = frame_pipeline(shipped_engine)
    thermal, rgb = camera_pair()
    rgb = codec.DecodedImage(cv2.resize(rgb.array, (1280, 720)), 'bgr')
    good = pipeline.fuse_frame(thermal, rgb, camera_info())
    assert good.ok and good.camera_info is not None
    result = pipeline.fuse_frame(thermal, rgb, camera_info(**changes))
    assert result.ok and result.camera_info is None
    assert [p.reason for p in result.problems] == ['bad_camera_info']
    assert words in result.problems[0].message
    # a calibration at half the resolution is the same camera: K scales with it
    half = camera_info(width=640, height=360, k=[320.0, 0, 319.5, 0, 320.0, 179.5, 0, 0, 1],
                       p=[320.0, 0, 319.5, 0, 0, 320.0, 179.5, 0, 0, 0, 1, 0])
    scaled = pipeline.fuse_frame(thermal, rgb, half)
    assert scaled.camera_info['k'] == pytest.approx(good.camera_info['k'])


# -- registration coverage -------------------------------------------------------------------
def settings(**values) -> FusionSettings:
    return FusionSettings.from_values(check_params(
        dict({spec.name: spec.default for spec in SPECS.values()}, **values)))


def test_a_registration_that_moves_the_thermal_image_off_the_frame_is_refused(tmp_path):
    off = [1.0, 0.0, 2.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]   # one image width to the right
    with pytest.raises(CalibrationError, match='covers 0% of the fused frame'):
        registration_from_params(settings(homography=off))
    calibration = tmp_path / 'far.yaml'
    calibration.write_text(yaml.safe_dump({
        'format': 'occo_ros_calibration', 'version': 1, 'method': 'points',
        'thermal_size': [640, 512], 'rgb_size': [1280, 720],
        'homography_px': [[1.0, 0.0, 5000.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
        'crop': [0.0, 0.0, 1.0, 1.0], 'output_size': [640, 512]}))
    with pytest.raises(CalibrationError) as caught:
        registration_from_params(settings(calibration_file=str(calibration)))
    assert str(calibration) in str(caught.value) and 'at least 25% is needed' in str(caught.value)
    half = [1.0, 0.0, 0.6, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    assert registration_from_params(settings(homography=half)).thermal_coverage() \
        == pytest.approx(0.4, abs=0.02)


# -- offline tools: decoded-size limit ------------------------------------------------------
def png_bomb(path: Path, side: int = 20000) -> Path:
    """A real gray PNG of side x side zeros: a few hundred kB on disk, 400 MB decoded."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack('>I', len(data)) + kind + data
                + struct.pack('>I', zlib.crc32(kind + data) & 0xFFFFFFFF))
    compressor, rows, body = zlib.compressobj(1), b'\x00' * (side + 1) * 100, []
    for _ in range(side // 100):
        body.append(compressor.compress(rows))
    body.append(compressor.flush())
    path.write_bytes(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', side, side,
                                                                       8, 0, 0, 0, 0))
                     + chunk(b'IDAT', b''.join(body)) + chunk(b'IEND', b''))
    return path


def test_image_sizes_come_from_the_header():
    for extension in ('.png', '.jpg', '.tif'):
        data = cv2.imencode(extension, np.zeros((37, 53, 3), np.uint8))[1].tobytes()
        assert codec.file_image_size(data) == (53, 37), extension


def test_occo_fuse_skips_a_decompression_bomb_in_one_line(tmp_path, capsys):
    ir, vi = tmp_path / 'ir', tmp_path / 'vi'
    ir.mkdir(), vi.mkdir()
    (vi / 'bomb.png').write_bytes(png_bomb(ir / 'bomb.png').read_bytes())
    rng = np.random.default_rng(0)
    cv2.imwrite(str(ir / 'good.png'), rng.integers(0, 255, (64, 80), dtype=np.uint8))
    cv2.imwrite(str(vi / 'good.png'), rng.integers(0, 255, (64, 80, 3), dtype=np.uint8))
    status = fuse_folder.main(['--ir', str(ir), '--vi', str(vi), '--out', str(tmp_path / 'o'),
                               '--model-path', str(REPO / 'models' / 'fifn_w025_pixel.onnx'),
                               '--backend', 'onnxruntime', '--device', 'cpu',
                               '--engine-cache-dir', str(tmp_path / 'cache')])
    err = capsys.readouterr().err
    assert status == fuse_folder.EXIT_PAIRS_FAILED
    lines = [line for line in err.splitlines() if 'bomb' in line]
    assert len(lines) == 1 and '20000x20000 = 400000000 pixels, above the limit of' in lines[0]
    assert '--max-input-pixels' in lines[0]
    assert (tmp_path / 'o' / 'good.png').is_file()


# -- no debris from killed runs --------------------------------------------------------------
KILLED_BAG = """
import os, signal, sys
from occo_ros.io.bags import OutputBag
out = OutputBag(sys.argv[1])
(out.temp_dir / 'partial.bin').write_bytes(b'x' * 100000)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_occo_bag_removes_what_a_killed_run_left(tmp_path, capsys):
    output = tmp_path / 'fused_bag'
    run = subprocess.run([sys.executable, '-c', KILLED_BAG, str(output)], timeout=120)
    assert run.returncode == -signal.SIGKILL
    left = list(tmp_path.glob('.fused_bag.*.occo-bag-tmp'))
    assert len(left) == 1
    foreign = tmp_path / '.fused_bag.abc.occo-bag-tmp'   # no manifest: named, not removed
    foreign.mkdir()
    status = bag.main([str(tmp_path / 'missing_input'), str(output), '--no-progress',
                       '--thermal-topic', '/t', '--rgb-topic', '/c'])
    err = capsys.readouterr().err
    assert status != 0
    assert not left[0].exists()
    assert f'removed {left[0]}, the temporary folder of an earlier occo-bag run' in err
    assert foreign.is_dir() and f'rm -r {foreign}' in err


KILLED_WRITE = """
import os, signal, sys
from occo_ros.util.atomic_file import atomic_write
def write(stream):
    stream.write(b'half of it')
    stream.flush()
    os.kill(os.getpid(), signal.SIGKILL)
atomic_write(sys.argv[1], write)
"""


def test_an_atomic_write_removes_what_a_killed_writer_left(tmp_path):
    target = tmp_path / 'model.onnx'
    subprocess.run([sys.executable, '-c', KILLED_WRITE, str(target)], timeout=120)
    assert len(list(tmp_path.glob('.model.onnx.*.tmp'))) == 1
    atomic_write_bytes(target, b'complete')
    assert sorted(p.name for p in tmp_path.iterdir()) == ['model.onnx']


# -- messages --------------------------------------------------------------------------------
def test_a_bag_missing_its_storage_file_names_it(tmp_path):
    path = tmp_path / 'bag'
    with OutputBag(path, storage='sqlite3') as out:
        out.add_topic('/x', 'std_msgs/msg/String')
        out.commit()
    (database,) = path.glob('*.db3')
    database.unlink()
    with pytest.raises(BagError) as caught:
        InputBag(path)
    assert f'metadata.yaml lists {database.name}, which is not there' in str(caught.value)


def test_a_raw_pickle_checkpoint_is_refused_without_torch_warnings(tmp_path, capfd):
    from occo_ros.model.checkpoint import CheckpointError, load_checkpoint

    path = tmp_path / 'raw.pt'
    path.write_bytes(pickle.dumps({'weights': [1, 2]}, protocol=4))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')   # also those this process has shown before
        with pytest.raises(CheckpointError, match='cannot read checkpoint'):
            load_checkpoint(path)
    assert [str(warning.message) for warning in caught] == []
    assert capfd.readouterr().err == ''


# -- parameter log ---------------------------------------------------------------------------
def test_a_flood_of_parameter_sets_is_a_line_per_period_with_the_newest_values():
    now, lines = [0.0], []
    log = ChangeLog(lines.append, period=2.0, clock=lambda: now[0])
    for index in range(1000):
        now[0] = index * 0.005       # 1,000 sets in 5 s
        log.changed({'slop': index})
    now[0] = 10.0
    log.flush()
    assert len(lines) <= 5 and lines[0] == "parameters changed: {'slop': 0}"
    assert lines[-1].endswith("{'slop': 999}") and 'sets merged' in lines[-1]
    log.flush()
    assert len(lines) <= 5
