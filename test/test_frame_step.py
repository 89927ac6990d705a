"""The frame step (FusionPipeline.fuse_frame): every input form gives the pixels of the array
path, and every bad frame is a result with its reason, never an exception.

The engine is the real shipped model (PyTorch backend, CPU) at a small network size so each
frame takes milliseconds; real MSRS pairs from ../shared/data where the data matters.
"""

from __future__ import annotations

from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from occo_ros.core.codec import DecodedImage, array_to_image_fields
from occo_ros.core.color import compose_rgb
from occo_ros.engines import EngineSpec
from occo_ros.engines.base import EngineError
from occo_ros.params import PARAMS, FusionSettings, make_params
from occo_ros.pipeline import (
    BAD_CAMERA_INFO,
    BAD_PAIR,
    BAD_RGB,
    BAD_THERMAL,
    ENGINE_ERROR,
    FusionPipeline,
    create_pipeline,
)

pytestmark = [pytest.mark.core]

#: the shipped model on CPU, at the network size of small_params
SMALL_ENGINE = {'backend': 'torch', 'device': 'cpu', 'input_width': 64, 'input_height': 48}


def small_params(**overrides) -> FusionSettings:
    """The node's defaults at a small size (network size of SMALL_ENGINE)."""
    values = {spec.name: spec.default for spec in PARAMS}
    values.update(SMALL_ENGINE, output_width=80, output_height=64)
    values.update(overrides)
    return make_params(values)


@pytest.fixture(scope='module')
def engine():
    pipeline = create_pipeline(small_params(), EngineSpec.from_params(SMALL_ENGINE))
    yield pipeline.engine
    pipeline.engine.close()


def msg(array: np.ndarray, encoding: str) -> SimpleNamespace:
    """A duck-typed sensor_msgs/Image (what rosbags and tests hand the codec)."""
    return SimpleNamespace(**array_to_image_fields(array, encoding))


def camera_info(width: int, height: int, **fields) -> SimpleNamespace:
    values = dict(width=width, height=height, distortion_model='plumb_bob', d=[0.1, 0, 0, 0, 0],
                  k=[200.0, 0, width / 2, 0, 200, height / 2, 0, 0, 1],
                  r=[1.0, 0, 0, 0, 1, 0, 0, 0, 1],
                  p=[200.0, 0, width / 2, 0, 0, 200, height / 2, 0, 0, 0, 1, 0])
    values.update(fields)
    return SimpleNamespace(**values)


@pytest.fixture
def pair():
    rng = np.random.default_rng(0)
    thermal = rng.integers(7000, 11000, (120, 160), dtype=np.uint16)
    rgb = rng.integers(0, 255, (150, 200, 3), dtype=np.uint8)
    return thermal, rgb


def test_every_input_form_gives_the_array_paths_pixels(engine, pair):
    thermal, rgb = pair
    bgr = np.ascontiguousarray(rgb[:, :, ::-1])
    expected = FusionPipeline.from_settings(small_params(), engine).fuse(thermal, rgb, 'rgb')
    ok, jpeg = cv2.imencode('.png', bgr)      # lossless: the same pixels after decoding
    assert ok
    forms = [
        (msg(thermal, 'mono16'), msg(rgb, 'rgb8')),
        (msg(thermal, 'mono16'), msg(bgr, 'bgr8')),
        (thermal, DecodedImage(rgb, 'rgb')),
        (msg(thermal, 'mono16'), SimpleNamespace(format='png', data=jpeg.tobytes())),
    ]
    for thermal_in, rgb_in in forms:
        pipeline = FusionPipeline.from_settings(small_params(), engine)
        result = pipeline.fuse_frame(thermal_in, rgb_in)
        assert result.ok and result.reason is None and result.problems == ()
        np.testing.assert_array_equal(result.pixels, expected.rgb)
        np.testing.assert_array_equal(result.fused_y, expected.fused_y)
        assert set(result.times_ms) == {'decode', 'preprocess', 'inference', 'compose'}
        assert all(t >= 0 for t in result.times_ms.values())


@pytest.mark.parametrize('encoding', ['rgb8', 'bgr8', 'mono8'])
def test_output_encoding_and_image_fields(engine, pair, encoding):
    thermal, rgb = pair
    expected = FusionPipeline.from_settings(small_params(), engine).fuse(thermal, rgb, 'rgb')
    result = FusionPipeline.from_settings(small_params(), engine).fuse_frame(
        thermal, DecodedImage(rgb, 'rgb'), encoding=encoding)
    np.testing.assert_array_equal(result.pixels, expected.in_encoding(encoding))
    fields = result.image_fields()
    assert (fields['width'], fields['height'], fields['encoding']) == (80, 64, encoding)
    assert fields['data'] == expected.in_encoding(encoding).tobytes()


def test_an_unknown_output_encoding_is_the_callers_mistake(engine, pair):
    with pytest.raises(ValueError, match="'yuv422'"):
        FusionPipeline.from_settings(small_params(), engine).fuse_frame(*pair, encoding='yuv422')


def test_camera_info_is_adapted_and_a_bad_one_costs_only_the_camera_info(engine, pair):
    thermal, rgb = pair
    pipeline = FusionPipeline.from_settings(small_params(), engine)
    result = pipeline.fuse_frame(thermal, DecodedImage(rgb, 'rgb'), camera_info(200, 150))
    assert result.ok and result.camera_info == pipeline.fused_camera_info(camera_info(200, 150))
    # the default (automatic) crop keeps the centred 187.5x150 of 200x150 (the output's 5:4)
    assert result.camera_info['width'] == 80
    assert result.camera_info['k'][0] == pytest.approx(200 * 80 / 187.5)
    assert result.camera_info['k'][4] == pytest.approx(200 * 64 / 150)

    bad = camera_info(200, 150, k=[1.0, 2.0])          # 2 numbers where K needs 9
    result = pipeline.fuse_frame(thermal, DecodedImage(rgb, 'rgb'), bad)
    assert result.ok and result.pixels is not None and result.camera_info is None
    assert [p.reason for p in result.problems] == [BAD_CAMERA_INFO]
    assert result.problems[0].stream == 'camera_info'


def test_bad_images_are_results_with_their_reasons(engine, pair):
    thermal, rgb = pair
    pipeline = FusionPipeline.from_settings(small_params(), engine)
    good_rgb = msg(rgb, 'rgb8')
    nan = thermal.astype(np.float32)
    nan[3, 3] = np.nan
    cases = [
        (dict(array_to_image_fields(thermal, 'mono16'), encoding='weird16'), good_rgb,
         [(BAD_THERMAL, 'encoding')], 'weird16'),
        (dict(array_to_image_fields(thermal, 'mono16'), data=b'\0' * 10), good_rgb,
         [(BAD_THERMAL, 'data')], 'data is 10 bytes'),
        (array_to_image_fields(nan, '32FC1'), good_rgb, [(BAD_THERMAL, 'nonfinite')], 'NaN'),
        (array_to_image_fields(rgb, 'rgb8'), good_rgb, [(BAD_THERMAL, 'channels')],
         'one channel'),
        (array_to_image_fields(thermal, 'mono16'), msg(thermal, 'mono16'),
         [(BAD_RGB, 'dtype')], '8-bit'),
        (array_to_image_fields(thermal, 'mono16'), SimpleNamespace(format='jpeg', data=b'xx'),
         [(BAD_RGB, 'compressed')], 'could not decode'),
        (dict(array_to_image_fields(thermal, 'mono16'), step=3),
         dict(array_to_image_fields(rgb, 'rgb8'), height=0, width=0, step=0, data=b''),
         [(BAD_THERMAL, 'step'), (BAD_RGB, 'size')], 'step'),
    ]
    for thermal_fields, rgb_in, expected, text in cases:
        rgb_msg = SimpleNamespace(**rgb_in) if isinstance(rgb_in, dict) else rgb_in
        result = pipeline.fuse_frame(SimpleNamespace(**thermal_fields), rgb_msg)
        assert not result.ok and result.pixels is None
        assert [(p.reason, p.kind) for p in result.problems] == expected
        assert result.reason == expected[0][0]
        assert text in result.problems[0].message
    # the pipeline is unharmed: a good pair still fuses
    assert pipeline.fuse_frame(thermal, DecodedImage(rgb, 'rgb')).ok


def test_an_engine_failure_is_a_result(engine, pair):
    """A 4x4 network input (below FIFN's minimum) makes the real engine raise EngineError."""
    thermal, rgb = pair
    pipeline = FusionPipeline.from_settings(small_params(), engine)
    pipeline.input_size = (4, 4)
    with pytest.raises(EngineError):
        pipeline.fuse(thermal, rgb, 'rgb')
    result = pipeline.fuse_frame(thermal, DecodedImage(rgb, 'rgb'))
    assert not result.ok and result.reason == ENGINE_ERROR
    assert 'EngineError' in result.problems[0].message and 'preprocess' in result.times_ms


def test_a_pair_the_registration_rejects_is_a_result(engine, pair):
    """An empty bare array passes as a gray image (no codec checks), the pipeline rejects it."""
    _, rgb = pair
    pipeline = FusionPipeline.from_settings(small_params(), engine)
    result = pipeline.fuse_frame(np.zeros((0, 5), np.uint8), DecodedImage(rgb, 'rgb'))
    assert not result.ok and result.reason == BAD_PAIR
    assert result.problems[0].stream == 'pair'


def test_a_bare_colour_array_needs_its_channel_order(engine, pair):
    thermal, rgb = pair
    with pytest.raises(TypeError, match='DecodedImage'):
        FusionPipeline.from_settings(small_params(), engine).fuse_frame(thermal, rgb)


def test_real_pairs_fuse_the_same_as_messages_and_as_arrays(engine, shared_data):
    """Real MSRS pairs as rclpy-like messages (thermal mono8, RGB bgr8) and as arrays."""
    ir_dir, vi_dir = shared_data / 'eval' / 'msrs' / 'ir', shared_data / 'eval' / 'msrs' / 'vi'
    names = sorted(p.name for p in ir_dir.iterdir())[:3]
    assert names, f'no MSRS pairs in {ir_dir}'
    by_message = FusionPipeline.from_settings(small_params(), engine)
    by_array = FusionPipeline.from_settings(small_params(), engine)
    for name in names:
        ir = cv2.imread(str(ir_dir / name), cv2.IMREAD_GRAYSCALE)
        bgr = cv2.imread(str(vi_dir / name), cv2.IMREAD_COLOR)
        a = by_message.fuse_frame(msg(ir, 'mono8'), msg(bgr, 'bgr8'), encoding='bgr8')
        b = by_array.fuse(ir, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), 'rgb')
        assert a.ok
        np.testing.assert_array_equal(a.pixels, b.in_encoding('bgr8'))


def test_the_color_mode_setting_decides_the_composition(engine, pair):
    # issue 21: FusionSettings.color_mode reaches compose; the network output is the same
    thermal, rgb = pair
    frames = {mode: FusionPipeline.from_settings(small_params(color_mode=mode), engine)
              .fuse(thermal, rgb, 'rgb') for mode in ('preserve_saturation', 'keep_chroma')}
    np.testing.assert_array_equal(frames['keep_chroma'].fused_y,
                                  frames['preserve_saturation'].fused_y)
    assert not np.array_equal(frames['keep_chroma'].rgb, frames['preserve_saturation'].rgb)
    pipeline = FusionPipeline.from_settings(small_params(), engine)
    assert pipeline.color_mode == 'preserve_saturation'
    prepared = pipeline.preprocess(thermal, rgb, 'rgb')
    y_out = cv2.resize(pipeline.infer(prepared), pipeline.output_size,
                       interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(frames['preserve_saturation'].rgb,
                                  compose_rgb(y_out, prepared.chroma))
    with pytest.raises(ValueError, match='colour mode'):
        FusionPipeline(engine, pipeline.registration, pipeline.normalizer, (64, 48), (80, 64),
                       color_mode='hsv')
