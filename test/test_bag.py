"""Tests of occo-bag (occo_ros.cli.bag, occo_ros.io.bags): offline bag-to-bag fusion without ROS.

Input bags are written here with rosbags' own Writer and Kilted type store (as a recorder
would) and outputs are read back with rosbags' Reader and with the official mcap readers. The
network is a randomly initialised width-0.25 FIFN run by ONNX Runtime at a small input size
(40x32) so the file stays fast; the fused pixels are compared with the fusion pipeline run
directly on the same decoded images.
"""

from __future__ import annotations

import os
from pathlib import Path
import signal
import subprocess
import sys
import time
import tracemalloc

import cv2
from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory
import numpy as np
import pytest
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
import yaml

from occo_ros.cli.bag import build_parser, main
from occo_ros.core import codec
from occo_ros.core.pairing import ApproximateTimePairer
from occo_ros.engines import EngineError, EngineSpec
from occo_ros.io.bags import BagError, InputBag, OutputBag
from occo_ros.offline.bag_fusion import BagTopics, camera_info_beside, fuse_bag
from occo_ros.params import FusionSettings, build_params, load_params_file
from occo_ros.pipeline import FusionPipeline, create_pipeline
from occo_ros.synthetic.scene import SceneConfig, SyntheticScene

pytestmark = [pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
THERMAL, RGB, RGB_INFO = '/thermal/image_raw', '/rgb/image_raw', '/rgb/camera_info'
COMPRESSED = '/rgb/image_raw/compressed'
IMAGE, COMPRESSED_IMAGE = 'sensor_msgs/msg/Image', 'sensor_msgs/msg/CompressedImage'
CAMERA_INFO = 'sensor_msgs/msg/CameraInfo'
STORE = get_typestore(Stores.ROS2_KILTED)
MS = 1_000_000


# -- building and reading bags (independently of occo_ros.io.bags) ----------------------------
def header(stamp: int, frame_id: str):
    t = STORE.types
    return t['std_msgs/msg/Header'](
        stamp=t['builtin_interfaces/msg/Time'](sec=stamp // 10**9, nanosec=stamp % 10**9),
        frame_id=frame_id)


def image(array: np.ndarray, encoding: str, stamp: int, frame_id: str, store=STORE) -> bytes:
    fields = codec.array_to_image_fields(array, encoding)
    fields['data'] = np.frombuffer(fields['data'], np.uint8)
    msg = store.types[IMAGE](header=header(stamp, frame_id), **fields)
    return bytes(store.serialize_cdr(msg, IMAGE))


def jpeg(bgr: np.ndarray, stamp: int, frame_id: str) -> bytes:
    data = cv2.imencode('.jpg', bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    msg = STORE.types[COMPRESSED_IMAGE](header=header(stamp, frame_id), format='jpeg',
                                        data=np.frombuffer(data, np.uint8))
    return bytes(STORE.serialize_cdr(msg, COMPRESSED_IMAGE))


def camera_info(k: np.ndarray, width: int, height: int, stamp: int) -> bytes:
    t = STORE.types
    p = np.hstack([k, np.zeros((3, 1))])
    msg = t[CAMERA_INFO](
        header=header(stamp, 'rgb_optical_frame'), height=height, width=width,
        distortion_model='plumb_bob', d=np.zeros(5), k=k.ravel(), r=np.eye(3).ravel(),
        p=p.ravel(), binning_x=0, binning_y=0,
        roi=t['sensor_msgs/msg/RegionOfInterest'](x_offset=0, y_offset=0, height=0, width=0,
                                                  do_rectify=False))
    return bytes(STORE.serialize_cdr(msg, CAMERA_INFO))


def write_bag(path: Path, messages: list[tuple[str, str, int, bytes]],
              storage: StoragePlugin = StoragePlugin.MCAP, definitions: dict | None = None
              ) -> Path:
    """``messages``: (topic, type, log time ns, CDR bytes), written in the given order.
    ``definitions``: topic -> (msgdef, rihs01) to record instead of the Kilted ones."""
    with Writer(path, version=9, storage_plugin=storage) as writer:
        connections = {}
        for topic, msgtype, log_time, raw in messages:
            if topic not in connections:
                if definitions and topic in definitions:
                    msgdef, rihs01 = definitions[topic]
                    connections[topic] = writer.add_connection(topic, msgtype, msgdef=msgdef,
                                                               rihs01=rihs01)
                else:
                    connections[topic] = writer.add_connection(topic, msgtype, typestore=STORE)
            writer.write(connections[topic], log_time, raw)
    return path


def read_bag(path: Path) -> dict[str, list[tuple[int, object, bytes]]]:
    """topic -> [(log time, message, raw bytes)] in log-time order."""
    found: dict[str, list] = {}
    with Reader(path) as reader:
        for conn, log_time, raw in reader.messages():
            msg = STORE.deserialize_cdr(raw, conn.msgtype)
            found.setdefault(conn.topic, []).append((log_time, msg, bytes(raw)))
    return found


def stamp_of(msg) -> int:
    return msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec


def pixels(msg) -> np.ndarray:
    return codec.decode_image(msg).array


def leftovers(directory: Path) -> list[str]:
    """Temporary output directories left behind."""
    return [p.name for p in directory.iterdir() if p.name.endswith('.occo-bag-tmp')]


# -- fixtures --------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def exported(tmp_path_factory, tiny_export) -> Path:
    """The 32x40 export of the run's checkpoint (made once per run, see conftest.py), in
    this module's engine cache."""
    return tiny_export((32, 40), into=tmp_path_factory.mktemp('cache'))


@pytest.fixture(scope='module')
def model(tiny_checkpoint, exported) -> dict:
    """Node parameters for a random width-0.25 checkpoint on ONNX Runtime at 40x32."""
    return {'model_path': str(tiny_checkpoint), 'backend': 'onnxruntime', 'num_threads': 1,
            'engine_cache_dir': str(exported.parent), 'input_width': 40, 'input_height': 32}


def model_args(model: dict, path: Path | None = None) -> list[str]:
    """occo-bag's model options; ``path``: the checkpoint's export instead, for a child
    process that then never imports torch (the checkpoint path is tested in this process)."""
    return ['--model', str(path or model['model_path']), '--backend', model['backend'],
            '--num-threads', '1', '--engine-cache-dir', model['engine_cache_dir'],
            '--input-width', '40', '--input-height', '32', '--no-progress']


@pytest.fixture(scope='module')
def msrs_pairs(shared_data) -> list[tuple[np.ndarray, np.ndarray]]:
    """Five real registered pairs: (infrared gray uint8, visible RGB uint8), 640x480."""
    ir_dir, vi_dir = shared_data / 'eval' / 'msrs' / 'ir', shared_data / 'eval' / 'msrs' / 'vi'
    names = sorted(p.name for p in ir_dir.iterdir())[:5]
    return [(cv2.imread(str(ir_dir / n), cv2.IMREAD_GRAYSCALE),
             cv2.cvtColor(cv2.imread(str(vi_dir / n), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB))
            for n in names]


def settings_and_engine(model: dict,
                        size: tuple[int, int]) -> tuple[FusionSettings, EngineSpec]:
    """occo-bag's fusion settings and engine for ``model`` at an output of ``size`` (W, H)."""
    return (build_params(model, {'output_width': size[0], 'output_height': size[1]}),
            EngineSpec.from_params(model))


@pytest.fixture(scope='module')
def pipeline(model):
    """One shared pipeline for library-level runs (engine loaded once)."""
    made = create_pipeline(*settings_and_engine(model, (80, 64)))
    yield made
    made.engine.close()


def fuse_80x64(tmp_path: Path, model: dict, pipeline, **options):
    """fuse_bag of tmp_path/in into tmp_path/out at an 80x64 output, with ``pipeline``."""
    return fuse_bag(tmp_path / 'in', tmp_path / 'out', settings_and_engine(model, (80, 64))[0],
                    BagTopics(THERMAL, RGB), pipeline=pipeline, **options)


def synthetic_messages(pairs: int, rng: np.random.Generator, scene: SyntheticScene,
                       distinct: int = 0) -> list[tuple[str, str, int, bytes]]:
    """``pairs`` thermal mono16 + RGB bgr8 frames at 30 Hz, stamps jittered by +-3 ms,
    logged 20 ms (thermal) and 5 ms (RGB) after their stamps. ``distinct`` > 0 renders only
    that many frames and reuses them (fast for long bags)."""
    frames = distinct or pairs
    thermal = [scene.thermal(i / 30) for i in range(frames)]
    rgb = [scene.rgb(i / 30) for i in range(frames)]
    messages = []
    for i in range(pairs):
        base = 10**9 + i * 33_333_333
        t_stamp = base + int(rng.integers(-3 * MS, 3 * MS))
        r_stamp = base + int(rng.integers(-3 * MS, 3 * MS))
        messages.append((THERMAL, IMAGE, t_stamp + 20 * MS,
                         image(thermal[i % frames], 'mono16', t_stamp, 'thermal_optical_frame')))
        messages.append((RGB, IMAGE, r_stamp + 5 * MS,
                         image(rgb[i % frames], 'bgr8', r_stamp, 'rgb_optical_frame')))
    return sorted(messages, key=lambda m: m[2])


# -- fusion of real pairs: the same pixels as the pipeline run directly ----------------------
def test_real_pairs_fuse_to_the_pipelines_pixels_with_camera_info_and_copies(
        tmp_path, model, msrs_pairs):
    k = np.array([[500.0, 0.0, 319.5], [0.0, 500.0, 239.5], [0.0, 0.0, 1.0]])
    messages = [(RGB_INFO, CAMERA_INFO, 1, camera_info(k, 640, 480, 1))]
    for i, (ir, vi) in enumerate(msrs_pairs):
        stamp = 5 * 10**9 + i * 100 * MS
        messages.append((THERMAL, IMAGE, stamp + 12 * MS, image(ir, 'mono8', stamp, 'ir')))
        messages.append((RGB, IMAGE, stamp + 10 * MS,
                         image(vi, 'rgb8', stamp + 2 * MS, 'rgb_optical_frame')))
    messages.sort(key=lambda m: m[2])
    write_bag(tmp_path / 'in', messages)

    args = ['--output-width', '160', '--output-height', '120', '--copy-inputs']
    assert main([str(tmp_path / 'in'), str(tmp_path / 'out'), '--thermal-topic', THERMAL,
                 '--rgb-topic', RGB, *model_args(model), *args]) == 0

    out = read_bag(tmp_path / 'out')
    fused, infos = out['/fused/image'], out['/fused/camera_info']
    assert len(fused) == len(infos) == len(msrs_pairs)
    direct = create_pipeline(*settings_and_engine(model, (160, 120)))
    for (log_time, msg, _), (ir, vi), (info_time, info, _) in zip(fused, msrs_pairs, infos):
        rgb_time = next(t for t, m, _ in read_bag(tmp_path / 'in')[RGB]
                        if stamp_of(m) == stamp_of(msg))
        assert log_time == info_time == rgb_time + 2 * MS  # the thermal message completed it
        assert msg.header.frame_id == info.header.frame_id == 'rgb_optical_frame'
        assert (msg.encoding, msg.width, msg.height) == ('rgb8', 160, 120)
        assert stamp_of(info) == stamp_of(msg)
        expected = direct.fuse(ir, vi, 'rgb').rgb
        assert np.array_equal(pixels(msg), expected)
        want_k, _ = direct.registration.adapt_camera_matrices(k, np.hstack([k, np.zeros((3, 1))]),
                                                              (640, 480))
        assert (info.width, info.height) == (160, 120)
        assert np.allclose(np.asarray(info.k).reshape(3, 3), want_k)
    direct.engine.close()
    assert [stamp_of(m) for _, m, _ in fused] == [5 * 10**9 + i * 100 * MS + 2 * MS
                                                  for i in range(len(msrs_pairs))]
    # copies are the recorded bytes at the recorded log times
    source = read_bag(tmp_path / 'in')
    for topic in (THERMAL, RGB, RGB_INFO):
        assert [(t, raw) for t, _, raw in out[topic]] == [(t, raw) for t, _, raw in
                                                          source[topic]]
    # other tools decode the output: the official mcap + mcap_ros2 readers
    with (tmp_path / 'out' / 'out.mcap').open('rb') as stream:
        decoded = [(channel.topic, ros_msg) for _, channel, _, ros_msg in make_reader(
            stream, decoder_factories=[DecoderFactory()]).iter_decoded_messages()]
    official = [m for topic, m in decoded if topic == '/fused/image']
    assert len(official) == len(fused)
    for theirs, (_, ours, _) in zip(official, fused):
        assert (theirs.encoding, theirs.width, theirs.height) == ('rgb8', 160, 120)
        assert bytes(theirs.data) == ours.data.tobytes()


def test_compressed_rgb_from_sqlite3_via_python_m(tmp_path, model, exported, msrs_pairs):
    messages = []
    for i, (ir, vi) in enumerate(msrs_pairs):
        stamp = 10**9 + i * 50 * MS
        messages.append((THERMAL, IMAGE, stamp + 1, image(ir, 'mono8', stamp, 'ir')))
        messages.append((COMPRESSED, COMPRESSED_IMAGE, stamp + 2,
                         jpeg(cv2.cvtColor(vi, cv2.COLOR_RGB2BGR), stamp + MS, 'rgb')))
    write_bag(tmp_path / 'in', messages, StoragePlugin.SQLITE3)
    proc = subprocess.run(
        [sys.executable, '-m', 'occo_ros.cli.bag', str(tmp_path / 'in'), str(tmp_path / 'out'),
         '--thermal-topic', THERMAL, '--rgb-topic', COMPRESSED, '--storage', 'sqlite3',
         '--output-width', '160', '--output-height', '120', '--output-encoding', 'bgr8',
         *model_args(model, exported)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert 'fused 5 pairs' in proc.stdout
    assert (tmp_path / 'out' / 'out.db3').is_file()
    fused = read_bag(tmp_path / 'out')['/fused/image']
    direct = create_pipeline(*settings_and_engine(model, (160, 120)))
    source = read_bag(tmp_path / 'in')
    for (_, msg, _), (_, ir_msg, _), (_, jpeg_msg, _) in zip(
            fused, source[THERMAL], source[COMPRESSED]):
        rgb = codec.decode_compressed(jpeg_msg.format, jpeg_msg.data)
        expected = direct.fuse(codec.decode_image(ir_msg).array, rgb.array, rgb.order)
        assert msg.encoding == 'bgr8' and stamp_of(msg) == stamp_of(jpeg_msg)
        assert np.array_equal(pixels(msg), expected.in_encoding('bgr8'))
    direct.engine.close()
    assert len(fused) == 5


# -- synthetic cameras: the node's pairing on jittered stamps, params file ---------------------
def test_synthetic_9_and_30_hz_pairs_like_the_node_with_a_params_file(tmp_path, model):
    scene = SyntheticScene(SceneConfig(thermal_size=(80, 64), rgb_size=(128, 72), people=2,
                                       vehicles=1))
    rng = np.random.default_rng(7)
    messages = [m for m in synthetic_messages(45, rng, scene)
                if m[0] == RGB or (m[2] // 33_333_333) % 10 in (0, 3, 6)]  # thermal ~9 Hz
    write_bag(tmp_path / 'in', messages)
    params = tmp_path / 'fusion.yaml'
    params.write_text(yaml.safe_dump({
        '/**': {'ros__parameters': {'slop': 0.02, 'thermal_mode': 'percentile'}},
        '/robot/occo_fusion': {'ros__parameters': {
            'homography': scene.thermal_homography.ravel().tolist(),
            'crop': list(scene.thermal_crop), 'output_width': 96, 'output_height': 64}},
        'other_node': {'ros__parameters': {'slop': 9.0}}}))
    assert main([str(tmp_path / 'in'), str(tmp_path / 'out'), '--thermal-topic',
                 'thermal/image_raw', '--rgb-topic', RGB, '--params-file', str(params),
                 *model_args(model), '--output-width', '80']) == 0

    pairer = ApproximateTimePairer(0.02, 10)  # the node's pairer, in log-time order
    expected = []
    for topic, _, log_time, raw in messages:
        msg = STORE.deserialize_cdr(raw, IMAGE)
        pair = pairer.add('thermal' if topic == THERMAL else 'rgb', stamp_of(msg), msg)
        if pair is not None:
            expected.append((log_time, pair.rgb_stamp_ns))
    fused = read_bag(tmp_path / 'out')['/fused/image']
    assert [(t, stamp_of(m)) for t, m, _ in fused] == expected
    thermal_count = sum(m[0] == THERMAL for m in messages)
    assert len(expected) >= thermal_count - 1  # nearly every thermal frame finds a partner
    assert all((m.width, m.height) == (80, 64) for _, m, _ in fused)  # CLI beats the file


def test_params_file_sections_types_and_the_shipped_config(tmp_path):
    notes = []
    path = tmp_path / 'p.yaml'
    path.write_text('/**:\n  ros__parameters:\n    slop: 1\n    queue_size: 4\n'
                    '    diagnostic_updater:\n      period: 2.0\n'
                    'occo_fusion:\n  ros__parameters:\n    queue_size: 7\n')
    values = load_params_file(path, notes.append)
    assert values == {'slop': 1.0, 'queue_size': 7}
    assert isinstance(values['slop'], float)
    assert notes == [f'{path}: diagnostic_updater.period is not a parameter of occo_fusion; '
                     'ignored']
    assert build_params(values, {'slop': 0.2}).slop == 0.2
    path.write_text('/**:\n  ros__parameters:\n    queue_size: many\n')
    with pytest.raises(ValueError, match="queue_size='many' must be an integer"):
        load_params_file(path)
    path.write_text('camera_driver:\n  ros__parameters:\n    fps: 30\n')
    with pytest.raises(ValueError, match='sections: camera_driver'):
        load_params_file(path)
    # config/fusion.yaml holds exactly the node's defaults
    shipped = load_params_file(REPO / 'config' / 'fusion.yaml')
    assert build_params(shipped) == build_params()


def test_fuse_bag_takes_an_engine_or_a_pipeline_and_a_bad_engine_is_a_usage_error(
        tmp_path, model, pipeline, capsys):
    settings, engine = settings_and_engine(model, (80, 64))
    for options in ({}, {'engine': engine, 'pipeline': pipeline}):
        with pytest.raises(ValueError, match='one of engine'):
            fuse_bag(tmp_path / 'in', tmp_path / 'out', settings, BagTopics(THERMAL, RGB),
                     **options)
    # the EngineSpec is built before any work: a device it refuses is exit 2, one line
    assert main([str(tmp_path / 'in'), str(tmp_path / 'out'), '--thermal-topic', THERMAL,
                 '--rgb-topic', RGB, '--device', 'gpu7']) == 2
    assert 'gpu7' in capsys.readouterr().err
    assert not (tmp_path / 'out').exists()


def test_help_explains_every_option():
    parser = build_parser()
    for action in parser._actions:
        assert action.help and len(action.help) > 10, action.option_strings
    text = parser.format_help()
    for option in ('--thermal-topic', '--rgb-topic', '--model', '--backend', '--overwrite',
                   '--storage', '--copy-inputs', '--output-topic', '--params-file', '--slop',
                   '--queue-size', '--output-width', '--input-height', '--crop',
                   '--thermal-mode'):
        assert option in text


def test_topic_names():
    assert camera_info_beside('/rgb/image_raw/compressed') == '/rgb/camera_info'
    assert camera_info_beside('/fused/image') == '/fused/camera_info'
    topics = BagTopics('thermal/image_raw', 'cam/rgb', 'fused/image')
    assert (topics.thermal, topics.rgb_info, topics.output_info) == (
        '/thermal/image_raw', '/cam/camera_info', '/fused/camera_info')
    with pytest.raises(ValueError, match='same'):
        BagTopics('/a', 'a')


# -- flat memory -----------------------------------------------------------------------------
def test_memory_stays_flat_with_bag_length(tmp_path, model, pipeline):
    scene = SyntheticScene(SceneConfig(thermal_size=(80, 64), rgb_size=(80, 64), people=1,
                                       vehicles=0, noise_frames=2))
    rng = np.random.default_rng(0)
    lengths = (150, 600)
    for n in (20, *lengths):
        write_bag(tmp_path / f'in{n}', synthetic_messages(n, rng, scene, distinct=4))
    params = settings_and_engine(model, (80, 64))[0]
    topics = BagTopics(THERMAL, RGB)
    fuse_bag(tmp_path / 'in20', tmp_path / 'warm', params, topics, pipeline=pipeline)
    peaks = {}
    for n in lengths:
        tracemalloc.start()
        summary = fuse_bag(tmp_path / f'in{n}', tmp_path / f'out{n}', params, topics,
                           pipeline=pipeline)
        peaks[n] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert summary.fused == n
    # one kept frame pair alone is ~41 kB: 450 more pairs would add ~18 MB if retained
    assert peaks[600] - peaks[150] < 400_000, peaks  # measured: ~60 kB; 5% kept: ~570 kB


# -- bad input -------------------------------------------------------------------------------
def test_missing_topics_list_what_the_bag_has(tmp_path, model, capsys):
    write_bag(tmp_path / 'in', [
        (THERMAL, IMAGE, 1, image(np.zeros((8, 8), np.uint16), 'mono16', 1, 't')),
        (RGB_INFO, CAMERA_INFO, 2, camera_info(np.eye(3), 8, 8, 2))])
    rc = main([str(tmp_path / 'in'), str(tmp_path / 'out'), '--thermal-topic', THERMAL,
               '--rgb-topic', '/color/image', *model_args(model)])
    err = capsys.readouterr().err
    assert rc == 1
    assert 'no topic /color/image' in err
    assert f'{THERMAL} (sensor_msgs/msg/Image, 1 messages)' in err
    assert f'{RGB_INFO} (sensor_msgs/msg/CameraInfo, 1 messages)' in err
    assert not (tmp_path / 'out').exists() and not leftovers(tmp_path)


def test_bad_messages_are_skipped_counted_and_named(tmp_path, model, pipeline):
    rng = np.random.default_rng(1)
    scene = SyntheticScene(SceneConfig(thermal_size=(80, 64), rgb_size=(80, 64)))
    messages = synthetic_messages(12, rng, scene, distinct=2)
    thermal_at = [i for i, m in enumerate(messages) if m[0] == THERMAL]
    bad_stamp = 10**9 + 3 * 33_333_333
    messages[thermal_at[3]] = (THERMAL, IMAGE, messages[thermal_at[3]][2],
                               image(np.zeros((64, 80, 3), np.uint8), 'rgb8', bad_stamp, 't')
                               .replace(b'rgb8', b'bayr'))  # unsupported encoding
    messages[thermal_at[5]] = (THERMAL, IMAGE, messages[thermal_at[5]][2], b'\x00\x01\x00')
    rgb_at = [i for i, m in enumerate(messages) if m[0] == RGB]
    messages[rgb_at[7]] = (RGB, IMAGE, messages[rgb_at[7]][2],      # a driver that does not
                           image(np.zeros((64, 80, 3), np.uint8), 'bgr8', 0, 'r'))  # stamp
    write_bag(tmp_path / 'in', messages)
    warnings = []
    summary = fuse_80x64(tmp_path, model, pipeline, log=warnings.append)
    # refused on arrival, as the node does: no bad message ever enters pairing
    assert summary.fused == 9 and summary.pairs == 9
    assert summary.bad == {'thermal': 2, 'rgb': 0, 'stamp': 1, 'pair': 0, 'engine': 0}
    assert summary.bad_kinds == {f'{THERMAL}: encoding': 1, f'{THERMAL}: cdr': 1,
                                 f'{RGB}: zero_stamp': 1}
    assert summary.unpaired == {'thermal': 1, 'rgb': 2}  # the partners of the bad ones
    assert any(THERMAL in w and '1.099999999 s' in w and "'bayr'" in w for w in warnings), \
        warnings
    assert len(read_bag(tmp_path / 'out')['/fused/image']) == 9
    assert 'skipped: thermal 2, RGB 0, stamps 1' in summary.report()


class FailingOnce:
    """The real engine, except that one inference raises EngineError, as a GPU running out of
    memory on one frame would (which cannot be caused on purpose here)."""

    def __init__(self, engine, fail_at: int) -> None:
        self.engine, self.fail_at, self.calls = engine, fail_at, 0

    def infer(self, visible_y, infrared):
        self.calls += 1
        if self.calls == self.fail_at:
            raise EngineError('CUDA error: out of memory (simulated)')
        return self.engine.infer(visible_y, infrared)

    def __getattr__(self, name):
        return getattr(self.engine, name)


def test_an_engine_error_on_one_frame_is_counted_and_the_bag_goes_on(
        tmp_path, model, pipeline):
    rng = np.random.default_rng(6)
    scene = SyntheticScene(SceneConfig(thermal_size=(80, 64), rgb_size=(80, 64)))
    write_bag(tmp_path / 'in', synthetic_messages(6, rng, scene, distinct=2))
    failing = FusionPipeline(FailingOnce(pipeline.engine, 3), pipeline.registration,
                             pipeline.normalizer, pipeline.input_size, pipeline.output_size)
    warnings = []
    summary = fuse_80x64(tmp_path, model, failing, log=warnings.append)
    assert summary.pairs == 6 and summary.fused == 5
    assert summary.bad == {'thermal': 0, 'rgb': 0, 'stamp': 0, 'pair': 0, 'engine': 1}
    assert summary.bad_kinds == {f'{THERMAL} + {RGB}: EngineError': 1}
    assert any('inference failed' in w and 'out of memory' in w for w in warnings), warnings
    assert len(read_bag(tmp_path / 'out')['/fused/image']) == 5
    assert 'inference failures 1' in summary.report()


def test_truncated_mcap_fuses_what_it_holds_and_exits_3(tmp_path, model, capsys):
    rng = np.random.default_rng(2)
    scene = SyntheticScene(SceneConfig(thermal_size=(80, 64), rgb_size=(80, 64)))
    write_bag(tmp_path / 'in', synthetic_messages(150, rng, scene, distinct=3))  # 3 chunks
    storage = tmp_path / 'in' / 'in.mcap'
    os.truncate(storage, storage.stat().st_size * 6 // 10)
    rc = main([str(tmp_path / 'in'), str(tmp_path / 'out'), '--thermal-topic', THERMAL,
               '--rgb-topic', RGB, *model_args(model), '--output-width', '80',
               '--output-height', '64'])
    err = capsys.readouterr().err
    assert rc == 3, err
    assert 'no usable index' in err and 'damaged' in err
    with InputBag(tmp_path / 'in') as bag:  # what the scan recovers: complete chunks only
        readable = bag.topics[THERMAL].count
        assert 0 < readable < 150 and bag.damage
    fused = read_bag(tmp_path / 'out')['/fused/image']
    assert readable - 2 <= len(fused) <= readable
    assert not leftovers(tmp_path)


def test_bag_without_metadata_is_read_through_its_files(tmp_path, model, pipeline):
    rng = np.random.default_rng(3)
    scene = SyntheticScene(SceneConfig(thermal_size=(80, 64), rgb_size=(80, 64)))
    write_bag(tmp_path / 'in', synthetic_messages(10, rng, scene, distinct=2))
    (tmp_path / 'in' / 'metadata.yaml').unlink()
    notes = []
    summary = fuse_80x64(tmp_path, model, pipeline, log=notes.append)
    assert summary.fused == 10 and summary.damage is None
    assert any('no metadata.yaml' in n for n in notes)
    # a single storage file is a bag too
    summary = fuse_bag(tmp_path / 'in' / 'in.mcap', tmp_path / 'out2',
                       settings_and_engine(model, (80, 64))[0], BagTopics(THERMAL, RGB),
                       pipeline=pipeline)
    assert summary.fused == 10


def test_truncated_sqlite3_is_a_clear_error(tmp_path, model, capsys):
    """SQLite cannot open a truncated database at all: occo-bag says so and writes nothing."""
    scene = SyntheticScene(SceneConfig(thermal_size=(80, 64), rgb_size=(80, 64)))
    write_bag(tmp_path / 'in', synthetic_messages(100, np.random.default_rng(6), scene,
                                                  distinct=2), StoragePlugin.SQLITE3)
    storage = tmp_path / 'in' / 'in.db3'
    os.truncate(storage, storage.stat().st_size * 6 // 10)
    assert main([str(tmp_path / 'in'), str(tmp_path / 'out'), '--thermal-topic', THERMAL,
                 '--rgb-topic', RGB, *model_args(model)]) == 1
    err = capsys.readouterr().err
    assert f'cannot read {storage}' in err and 'malformed' in err
    assert not (tmp_path / 'out').exists() and not leftovers(tmp_path)


def snapshot(folder: Path) -> dict:
    """Every file under ``folder`` with its bytes."""
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob('*'))
            if p.is_file()}


def test_existing_output_needs_overwrite_and_only_a_bag_occo_bag_wrote_is_replaced(
        tmp_path, model, capsys):
    rng = np.random.default_rng(4)
    scene = SyntheticScene(SceneConfig(thermal_size=(80, 64), rgb_size=(80, 64)))
    messages = synthetic_messages(4, rng, scene, distinct=1)
    write_bag(tmp_path / 'in', messages)
    inputs = snapshot(tmp_path / 'in')
    out = tmp_path / 'out'

    def run(target: Path, *extra: str) -> int:
        return main([str(tmp_path / 'in'), str(target), '--thermal-topic', THERMAL,
                     '--rgb-topic', RGB, *model_args(model), '--output-width', '80',
                     '--output-height', '64', *extra])

    assert run(out) == 0
    first = snapshot(out)
    assert run(out) == 2                                  # exists: needs --overwrite
    assert 'pass --overwrite' in capsys.readouterr().err and snapshot(out) == first
    assert run(out, '--overwrite') == 0
    assert len(read_bag(out)['/fused/image']) == 4
    for target in (tmp_path / 'in', tmp_path / 'in' / 'sub', tmp_path):  # overlaps the input
        assert run(target, '--overwrite') == 2
        assert 'overlaps the input' in capsys.readouterr().err
    recorded = write_bag(tmp_path / 'recorded', messages)  # a bag occo-bag did not write
    (out / 'notes.txt').write_text('keep me')             # a user's file in occo-bag's bag
    notes = tmp_path / 'notes'
    notes.mkdir()
    (notes / 'todo.txt').write_text('keep me')
    for target, why in ((recorded, 'no record of what wrote it'), (out, 'notes.txt'),
                        (notes, 'no record of what wrote it')):
        before = snapshot(target)
        assert run(target, '--overwrite') == 2
        assert why in capsys.readouterr().err
        assert snapshot(target) == before
    assert snapshot(tmp_path / 'in') == inputs
    assert not leftovers(tmp_path)


def test_no_pair_within_slop_fails_without_output(tmp_path, model, capsys):
    write_bag(tmp_path / 'in', [
        (THERMAL, IMAGE, 1, image(np.zeros((8, 8), np.uint16), 'mono16', 10**9, 't')),
        (RGB, IMAGE, 2, image(np.zeros((8, 8, 3), np.uint8), 'bgr8', 2 * 10**9, 'r'))])
    assert main([str(tmp_path / 'in'), str(tmp_path / 'out'), '--thermal-topic', THERMAL,
                 '--rgb-topic', RGB, *model_args(model)]) == 1
    err = capsys.readouterr().err
    assert 'no pair was fused' in err and 'thermal stamps 1.000000000 s' in err
    assert '--slop' in err
    assert not (tmp_path / 'out').exists() and not leftovers(tmp_path)


def test_sigterm_mid_run_leaves_no_output(tmp_path, model, exported):
    rng = np.random.default_rng(5)
    scene = SyntheticScene(SceneConfig(thermal_size=(80, 64), rgb_size=(80, 64)))
    write_bag(tmp_path / 'in', synthetic_messages(1500, rng, scene, distinct=2))
    proc = subprocess.Popen(
        [sys.executable, '-m', 'occo_ros.cli.bag', str(tmp_path / 'in'), str(tmp_path / 'out'),
         '--thermal-topic', THERMAL, '--rgb-topic', RGB, *model_args(model, exported)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 90
    while not leftovers(tmp_path) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, proc.communicate()[1]
    proc.send_signal(signal.SIGTERM)  # as soon as the temporary output exists
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert 'stopping at the next message' in err and 'interrupted; nothing written' in err
    assert not (tmp_path / 'out').exists() and not leftovers(tmp_path), err


# -- what recorders produce ------------------------------------------------------------------
def test_the_bags_own_type_definition_is_used_when_it_differs(tmp_path, model, pipeline):
    """A bag whose Image definition (and hash) is not Kilted's: read with its own."""
    text = STORE.generate_msgdef(IMAGE, ros_version=2)[0].replace(
        'uint8[] data\n', 'uint8[] data\nstring camera_serial\n', 1)
    custom = get_typestore(Stores.EMPTY)
    custom.register(get_types_from_msg(text, IMAGE))
    definitions = {THERMAL: (text, custom.hash_rihs01(IMAGE))}
    assert definitions[THERMAL][1] != STORE.hash_rihs01(IMAGE)

    def thermal(stamp: int) -> bytes:
        fields = codec.array_to_image_fields(np.full((64, 80), stamp % 997, np.uint16),
                                             'mono16')
        fields['data'] = np.frombuffer(fields['data'], np.uint8)
        msg = custom.types[IMAGE](header=custom.types['std_msgs/msg/Header'](
            stamp=custom.types['builtin_interfaces/msg/Time'](sec=1, nanosec=stamp),
            frame_id='t'), camera_serial='FLIR-1234', **fields)
        return bytes(custom.serialize_cdr(msg, IMAGE))

    rgb = np.zeros((64, 80, 3), np.uint8)
    write_bag(tmp_path / 'in', [m for i in range(3) for m in (
        (THERMAL, IMAGE, 2 * i, thermal(i * 40 * MS)),
        (RGB, IMAGE, 2 * i + 1, image(rgb, 'bgr8', 10**9 + i * 40 * MS, 'r')))],
        definitions=definitions)
    summary = fuse_80x64(tmp_path, model, pipeline, copy_inputs=True)
    assert summary.fused == 3 and summary.bad['thermal'] == 0
    with Reader(tmp_path / 'out') as reader:  # the copy keeps the bag's own definition
        copied = next(c for c in reader.connections if c.topic == THERMAL)
        assert copied.digest == definitions[THERMAL][1]


def test_rclpy_serialized_messages_are_read(tmp_path, model, pipeline):
    """Bags recorded from a live ROS graph hold rclpy/rmw serialised bytes."""
    pytest.importorskip('rclpy')
    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import Image

    def rclpy_image(array: np.ndarray, encoding: str, stamp: int) -> bytes:
        msg = Image(**codec.array_to_image_fields(array, encoding))
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 10**9)
        msg.header.frame_id = 'f'
        return serialize_message(msg)

    scene = SyntheticScene(SceneConfig(thermal_size=(80, 64), rgb_size=(80, 64)))
    write_bag(tmp_path / 'in', [m for i in range(3) for m in (
        (THERMAL, IMAGE, 2 * i, rclpy_image(scene.thermal(i), 'mono16', 10**9 + i * 10**8)),
        (RGB, IMAGE, 2 * i + 1, rclpy_image(scene.rgb(i), 'bgr8', 10**9 + i * 10**8)))])
    summary = fuse_80x64(tmp_path, model, pipeline)
    assert summary.fused == 3 and sum(summary.bad.values()) == 0


def test_output_bag_is_invisible_until_committed(tmp_path):
    out = OutputBag(tmp_path / 'b')
    conn = out.add_topic(THERMAL, IMAGE)
    out.write(conn, 1, image(np.zeros((4, 4), np.uint16), 'mono16', 1, 't'))
    assert not (tmp_path / 'b').exists() and leftovers(tmp_path)
    out.discard()
    assert not (tmp_path / 'b').exists() and not leftovers(tmp_path)
    with pytest.raises(BagError, match='directory name without .mcap'):
        OutputBag(tmp_path / 'b.mcap')
