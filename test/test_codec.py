"""sensor_msgs/Image and CompressedImage <-> numpy (occo_ros.core.codec), no ROS needed."""

import array
import types

import cv2
from hypothesis import given, settings
from hypothesis import strategies as st
import numpy as np
import pytest

from occo_ros.core.codec import (
    ENCODINGS,
    RGB_ENCODINGS,
    THERMAL_ENCODINGS,
    ImageDecodeError,
    array_to_image_fields,
    check_compressed,
    check_image,
    decode_compressed,
    decode_image,
    jpeg_fields,
)

pytestmark = [pytest.mark.core]

# encoding -> (dtype, channels, order), written out here independently of the module
PLAIN = {
    'mono8': (np.uint8, 1, 'gray'),
    '8UC1': (np.uint8, 1, 'gray'),
    'mono16': (np.uint16, 1, 'gray'),
    '16UC1': (np.uint16, 1, 'gray'),
    '32FC1': (np.float32, 1, 'gray'),
    'bgr8': (np.uint8, 3, 'bgr'),
    '8UC3': (np.uint8, 3, 'bgr'),
    'rgb8': (np.uint8, 3, 'rgb'),
    'bgra8': (np.uint8, 4, 'bgra'),
    '8UC4': (np.uint8, 4, 'bgra'),
    'rgba8': (np.uint8, 4, 'rgba'),
}
CONTAINERS = {
    'bytes': bytes,
    'array.array': lambda raw: array.array('B', raw),           # rclpy
    'numpy': lambda raw: np.frombuffer(raw, np.uint8).copy(),   # rosbags
}


def random_image(encoding, height, width, seed=0):
    dtype, channels, _ = PLAIN[encoding]
    rng = np.random.default_rng(seed)
    shape = (height, width) if channels == 1 else (height, width, channels)
    if dtype == np.float32:
        return rng.normal(20.0, 5.0, shape).astype(np.float32)
    return rng.integers(0, np.iinfo(dtype).max + 1, shape, dtype=dtype)


def message(pixels, encoding, pad=0, big_endian=False, container=bytes):
    """An Image-like object with ``pad`` junk bytes after each row, built by hand."""
    height, width = pixels.shape[:2]
    dtype = pixels.dtype.newbyteorder('>' if big_endian else '<')
    rows = pixels.astype(dtype).reshape(height, -1).view(np.uint8)
    junk = np.full((height, pad), 0xAB, np.uint8)
    raw = np.hstack([rows, junk]).tobytes()
    return types.SimpleNamespace(height=height, width=width, encoding=encoding,
                                 is_bigendian=int(big_endian), step=rows.shape[1] + pad,
                                 data=container(raw))


def buffer_of(msg):
    return np.frombuffer(msg.data, np.uint8)


@pytest.mark.parametrize('encoding', sorted(PLAIN))
@pytest.mark.parametrize('width', [641, 33, 1])
def test_round_trip_every_plain_encoding(encoding, width):
    pixels = random_image(encoding, 7, width)
    fields = array_to_image_fields(pixels, encoding)
    assert fields['step'] == width * PLAIN[encoding][1] * np.dtype(PLAIN[encoding][0]).itemsize
    assert isinstance(fields['data'], bytes)
    assert fields['is_bigendian'] == 0
    decoded, order = decode_image(types.SimpleNamespace(**fields))
    assert order == PLAIN[encoding][2]
    assert decoded.dtype == PLAIN[encoding][0]
    np.testing.assert_array_equal(decoded, pixels)


@pytest.mark.parametrize('encoding', sorted(PLAIN))
@pytest.mark.parametrize('container', sorted(CONTAINERS))
def test_padded_rows_decode_as_read_only_views(encoding, container):
    pixels = random_image(encoding, 5, 33, seed=1)
    # rows padded to a multiple of the element size (what drivers do; see the odd-step test)
    msg = message(pixels, encoding, pad=8, container=CONTAINERS[container])
    decoded = decode_image(msg).array
    np.testing.assert_array_equal(decoded, pixels)
    assert np.shares_memory(decoded, buffer_of(msg)), 'expected a zero-copy view'
    assert not decoded.flags.writeable
    assert decoded.strides[0] == msg.step


@pytest.mark.parametrize('encoding', ['mono16', '16UC1', '32FC1'])
@pytest.mark.parametrize('pad', [0, 6])
def test_big_endian_data_is_converted_to_native_values(encoding, pad):
    pixels = random_image(encoding, 6, 33, seed=2)
    msg = message(pixels, encoding, pad=pad, big_endian=True)
    decoded = decode_image(msg).array
    assert decoded.dtype == np.dtype(PLAIN[encoding][0])  # native order, usable by OpenCV
    assert decoded.dtype.isnative
    np.testing.assert_array_equal(decoded, pixels)
    # the same bytes read as little-endian would be wrong: the flag matters
    msg.is_bigendian = 0
    assert not np.array_equal(decode_image(msg, allow_nonfinite=True).array, pixels)


def test_big_endian_flag_is_irrelevant_for_bytes():
    pixels = random_image('bgr8', 4, 5)
    msg = message(pixels, 'bgr8', big_endian=True)
    np.testing.assert_array_equal(decode_image(msg).array, pixels)


def test_odd_step_for_16_bit_rows_is_copied_for_opencv():
    # step 2*W + 1: every other row starts at an odd address, which OpenCV refuses
    pixels = random_image('mono16', 4, 5)
    msg = message(pixels, 'mono16', pad=1)
    decoded = decode_image(msg).array
    np.testing.assert_array_equal(decoded, pixels)
    assert decoded.flags.aligned
    assert cv2.minMaxLoc(decoded)[:2] == (pixels.min(), pixels.max())


def yuv_bytes(bgr, code, pad=0):
    packed = cv2.cvtColor(bgr, code).reshape(bgr.shape[0], -1)
    junk = np.zeros((bgr.shape[0], pad), np.uint8)
    return np.hstack([packed, junk]).tobytes(), packed.shape[1] + pad


@pytest.mark.parametrize('encoding, to_yuv, from_yuv', [
    ('yuv422', cv2.COLOR_BGR2YUV_UYVY, cv2.COLOR_YUV2BGR_UYVY),
    ('yuv422_yuy2', cv2.COLOR_BGR2YUV_YUY2, cv2.COLOR_YUV2BGR_YUY2),
])
@pytest.mark.parametrize('pad', [0, 4])
def test_yuv422_matches_opencv(encoding, to_yuv, from_yuv, pad):
    bgr = random_image('bgr8', 6, 34, seed=3)
    raw, step = yuv_bytes(bgr, to_yuv, pad)
    msg = types.SimpleNamespace(height=6, width=34, encoding=encoding, is_bigendian=0,
                                step=step, data=raw)
    decoded, order = decode_image(msg)
    assert order == 'bgr'
    reference = cv2.cvtColor(cv2.cvtColor(bgr, to_yuv), from_yuv)
    np.testing.assert_array_equal(decoded, reference)


@pytest.mark.parametrize('encoding, layout', [('yuv422', 'UYVY'), ('yuv422_yuy2', 'YUYV')])
def test_yuv422_byte_order(encoding, layout):
    # two pixels, neutral chroma: pixel 0 is dark (Y0 = 40), pixel 1 bright (Y1 = 200)
    values = {'Y': [40, 200], 'U': [128], 'V': [128]}
    counters = {'Y': 0, 'U': 0, 'V': 0}
    raw = []
    for name in layout:
        raw.append(values[name][counters[name]])
        counters[name] += 1
    msg = types.SimpleNamespace(height=1, width=2, encoding=encoding, is_bigendian=0, step=4,
                                data=bytes(raw))
    pixels = decode_image(msg).array.astype(float)
    # BT.601 video range: (Y - 16) * 255 / 219, gray because chroma is neutral
    np.testing.assert_allclose(pixels[0, 0], [(40 - 16) * 255 / 219] * 3, atol=1.5)
    np.testing.assert_allclose(pixels[0, 1], [(200 - 16) * 255 / 219] * 3, atol=1.5)


def test_rclpy_image_round_trip():
    msgs = pytest.importorskip('sensor_msgs.msg', reason='rclpy sensor_msgs not installed')
    pixels = random_image('mono16', 512, 640)
    msg = msgs.Image(**array_to_image_fields(pixels, 'mono16'))
    assert isinstance(msg.data, array.array)
    decoded = decode_image(msg).array
    np.testing.assert_array_equal(decoded, pixels)
    assert np.shares_memory(decoded, np.frombuffer(msg.data, np.uint8))


def test_rosbags_image_round_trip():
    typesys = pytest.importorskip('rosbags.typesys', reason='rosbags not installed')
    store = typesys.get_typestore(typesys.Stores.ROS2_KILTED)
    image_type = store.types['sensor_msgs/msg/Image']
    header = store.types['std_msgs/msg/Header'](
        stamp=store.types['builtin_interfaces/msg/Time'](sec=1, nanosec=2), frame_id='rgb')
    pixels = random_image('rgb8', 9, 33)
    fields = array_to_image_fields(pixels, 'rgb8')
    fields['data'] = np.frombuffer(fields['data'], np.uint8)
    raw = store.serialize_cdr(image_type(header=header, **fields), 'sensor_msgs/msg/Image')
    msg = store.deserialize_cdr(raw, 'sensor_msgs/msg/Image')
    assert isinstance(msg.data, np.ndarray)
    decoded, order = decode_image(msg)
    assert order == 'rgb'
    np.testing.assert_array_equal(decoded, pixels)
    assert np.shares_memory(decoded, msg.data)


# -- malformed messages -----------------------------------------------------------------------
def good_fields(**changes):
    fields = array_to_image_fields(random_image('mono16', 4, 6), 'mono16')
    fields.update(changes)
    return types.SimpleNamespace(**fields)


@pytest.mark.parametrize('msg, reason, words', [
    (good_fields(encoding='bayer_rggb8'), 'encoding', ["'bayer_rggb8'", 'mono16', 'yuv422']),
    (good_fields(width=0), 'size', ['zero size', '0x4']),
    (good_fields(height=0), 'size', ['zero size', '6x0']),
    (good_fields(step=11), 'step', ['inconsistent step', '11', '12']),
    (good_fields(data=bytes(47)), 'data', ['data is 47 bytes', 'step x height', '48']),
    (good_fields(data=[0] * 48), 'data', ['bytes-like', 'list']),
    (good_fields(encoding='yuv422', width=3, step=6, data=bytes(24)), 'width',
     ['even width', '3']),
])
def test_malformed_messages_raise_specific_errors(msg, reason, words):
    for check in (decode_image, check_image):    # the arrival check finds the same problem
        with pytest.raises(ImageDecodeError) as info:
            check(msg)
        assert info.value.reason == reason
        for word in words:
            assert word in str(info.value)
        assert isinstance(info.value, ValueError)


def test_supported_encodings_are_listed_in_the_error():
    with pytest.raises(ImageDecodeError) as info:
        decode_image(good_fields(encoding='16SC1'))
    for encoding in ENCODINGS:
        assert encoding in str(info.value)


def test_nonfinite_32fc1_raises_unless_allowed():
    pixels = np.ones((4, 5), np.float32)
    pixels[0, 0] = np.nan
    pixels[1, 1] = np.inf
    pixels[2, 2] = -np.inf
    msg = types.SimpleNamespace(**array_to_image_fields(pixels, '32FC1'))
    with pytest.raises(ImageDecodeError, match='1 NaN and 2 infinite values of 20') as info:
        decode_image(msg)
    assert info.value.reason == 'nonfinite'
    decoded = decode_image(msg, allow_nonfinite=True).array
    np.testing.assert_array_equal(decoded, pixels)


def test_extra_trailing_data_is_accepted():
    pixels = random_image('mono8', 3, 4)
    msg = message(pixels, 'mono8')
    msg.data += bytes(5)
    np.testing.assert_array_equal(decode_image(msg).array, pixels)


# -- writing ----------------------------------------------------------------------------------
def test_fields_from_a_strided_view_are_packed():
    big = random_image('rgb8', 10, 20)
    view = big[2:8, 3:17]
    fields = array_to_image_fields(view, 'rgb8')
    assert fields['step'] == 14 * 3
    assert len(fields['data']) == 6 * 14 * 3
    np.testing.assert_array_equal(decode_image(types.SimpleNamespace(**fields)).array, view)


def test_fields_accept_single_channel_with_trailing_axis():
    pixels = random_image('mono16', 3, 5)
    fields = array_to_image_fields(pixels[:, :, None], 'mono16')
    assert (fields['height'], fields['width'], fields['step']) == (3, 5, 10)


def test_fields_of_a_big_endian_array_say_so():
    pixels = random_image('mono16', 3, 5)
    fields = array_to_image_fields(pixels.astype('>u2'), 'mono16')
    assert fields['is_bigendian'] == 1
    np.testing.assert_array_equal(decode_image(types.SimpleNamespace(**fields)).array, pixels)


@pytest.mark.parametrize('pixels, encoding, words', [
    (np.zeros((4, 5), np.uint16), 'mono8', ['mono8 needs dtype uint8', 'uint16']),
    (np.zeros((4, 5, 3), np.uint8), 'mono8', ['(H, W)', '(4, 5, 3)']),
    (np.zeros((4, 5), np.uint8), 'rgb8', ['(H, W, 3)', '(4, 5)']),
    (np.zeros((4, 5, 3), np.float32), 'rgb8', ['dtype uint8', 'float32']),
    (np.zeros((4, 6, 2), np.uint8), 'yuv422', ["cannot write encoding 'yuv422'"]),
    (np.zeros((0, 5), np.uint8), 'mono8', ['empty']),
])
def test_fields_reject_arrays_that_do_not_fit(pixels, encoding, words):
    with pytest.raises(ValueError) as info:
        array_to_image_fields(pixels, encoding)
    for word in words:
        assert word in str(info.value)


# -- compressed -------------------------------------------------------------------------------
def smooth_bgr(height=48, width=64):
    yy, xx = np.mgrid[0:height, 0:width]
    return np.dstack([xx * 4 % 256, yy * 5 % 256, (xx + yy) * 2 % 256]).astype(np.uint8)


def encoded(ext, image):
    ok, data = cv2.imencode(ext, image)
    assert ok
    return data.tobytes()


@pytest.mark.parametrize('fmt', ['bgr8; jpeg compressed bgr8', 'rgb8; jpeg compressed bgr8',
                                 'jpeg'])
def test_compressed_jpeg_decodes_to_bgr(fmt):
    bgr = smooth_bgr()
    decoded, order = decode_compressed(fmt, array.array('B', encoded('.jpg', bgr)))
    assert order == 'bgr'
    assert decoded.shape == bgr.shape and decoded.dtype == np.uint8
    assert np.abs(decoded.astype(int) - bgr).mean() < 3.0


@pytest.mark.parametrize('image, fmt, order', [
    (smooth_bgr(), 'rgb8; png compressed bgr8', 'bgr'),
    (smooth_bgr()[:, :, 0], 'mono8; png compressed mono8', 'gray'),
    (np.arange(48 * 64, dtype=np.uint16).reshape(48, 64) * 13, 'mono16; png compressed ',
     'gray'),
    (np.dstack([smooth_bgr(), np.full((48, 64), 200, np.uint8)]), 'png', 'bgra'),
])
def test_compressed_png_is_lossless(image, fmt, order):
    decoded = decode_compressed(fmt, encoded('.png', image))
    assert decoded.order == order
    np.testing.assert_array_equal(decoded.array, image)


def test_compressed_depth_png_header_is_skipped():
    depth = (np.arange(30 * 40, dtype=np.uint16).reshape(30, 40) * 7)
    data = bytes(12) + encoded('.png', depth)
    decoded = decode_compressed('16UC1; compressedDepth png', np.frombuffer(data, np.uint8))
    np.testing.assert_array_equal(decoded.array, depth)


@pytest.mark.parametrize('fmt, data, words', [
    ('jpeg', encoded('.jpg', smooth_bgr())[:200] + bytes(100), ['could not decode 300 bytes']),
    ('png', b'not an image at all', ['could not decode 19 bytes', "'png'"]),
    ('jpeg', b'', ['no data']),
    ('16UC1; compressedDepth rvl', bytes(40), ['RVL']),
])
def test_corrupt_compressed_data_raises(fmt, data, words):
    with pytest.raises(ImageDecodeError) as info:
        decode_compressed(fmt, data)
    assert info.value.reason == 'compressed'
    for word in words:
        assert word in str(info.value)


# -- arrival checks (no decoding) ----------------------------------------------------------------
@pytest.mark.parametrize('encoding', sorted(PLAIN))
def test_arrival_check_passes_what_decodes(encoding):
    msg = message(random_image(encoding, 5, 6), encoding, pad=3)
    check_image(msg)
    check_image(msg, max_pixels=30)          # the limit itself is allowed


@pytest.mark.parametrize('encodings, encoding', [
    (THERMAL_ENCODINGS, 'bgr8'), (THERMAL_ENCODINGS, 'bgra8'), (THERMAL_ENCODINGS, 'rgb8'),
    (RGB_ENCODINGS, 'mono16'), (RGB_ENCODINGS, '32FC1'), (RGB_ENCODINGS, '16UC1'),
])
def test_an_encoding_the_stream_does_not_take_is_refused(encodings, encoding):
    msg = message(random_image(encoding, 4, 6), encoding)
    decode_image(msg)                         # a valid image, only not for this stream
    with pytest.raises(ImageDecodeError, match=f"'{encoding}' is not accepted") as info:
        check_image(msg, encodings)
    assert info.value.reason == 'encoding'


def test_yuv422_on_the_thermal_stream_is_refused():
    msg = types.SimpleNamespace(height=2, width=4, encoding='yuv422', is_bigendian=0, step=8,
                                data=bytes(16))
    check_image(msg, RGB_ENCODINGS)
    with pytest.raises(ImageDecodeError) as info:
        check_image(msg, THERMAL_ENCODINGS)
    assert info.value.reason == 'encoding'


def test_an_image_above_the_pixel_limit_is_refused_before_its_data_is_read():
    # 8000x8000 declared, 10 bytes sent: the size limit speaks first, nothing is allocated
    msg = types.SimpleNamespace(height=8000, width=8000, encoding='bgr8', is_bigendian=0,
                                step=24000, data=bytes(10))
    with pytest.raises(ImageDecodeError, match='8000x8000 = 64000000 pixels') as info:
        check_image(msg, max_pixels=4096 * 2160)
    assert info.value.reason == 'too_large' and 'max_input_pixels' in str(info.value)
    with pytest.raises(ImageDecodeError, match='31 pixels is above the limit of 30'):
        check_image(message(random_image('mono8', 1, 31), 'mono8'), max_pixels=30)


def test_nonfinite_32fc1_is_refused_at_arrival_also_big_endian():
    pixels = np.ones((3, 4), np.float32)
    pixels[1, 2] = np.nan
    for big_endian in (False, True):
        with pytest.raises(ImageDecodeError) as info:
            check_image(message(pixels, '32FC1', big_endian=big_endian), THERMAL_ENCODINGS)
        assert info.value.reason == 'nonfinite'


def with_size(png: bytes, width: int, height: int) -> bytes:
    """A PNG whose IHDR claims another size (a decompression bomb's header)."""
    return png[:16] + width.to_bytes(4, 'big') + height.to_bytes(4, 'big') + png[24:]


@pytest.mark.parametrize('ext, kind', [('.jpg', 'jpeg'), ('.png', 'png')])
@pytest.mark.parametrize('shape', [(1, 1), (7, 13, 3), (48, 64, 3), (3, 500)])
def test_compressed_header_gives_the_decoded_size(ext, kind, shape):
    image = np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)
    data = encoded(ext, image)
    header = check_compressed('jpeg', array.array('B', data), max_pixels=shape[0] * shape[1])
    decoded = decode_compressed('jpeg', data).array
    assert (header.kind, header.width, header.height, header.bit_depth) == \
        (kind, decoded.shape[1], decoded.shape[0], 8)


def test_jpeg_size_is_found_after_large_metadata_segments():
    jpeg = encoded('.jpg', smooth_bgr())
    app1 = b'\xff\xe1' + (2 + 60000).to_bytes(2, 'big') + bytes(60000)   # e.g. EXIF
    data = jpeg[:2] + app1 + app1 + jpeg[2:]
    assert decode_compressed('jpeg', data).array.shape == (48, 64, 3)   # still a valid JPEG
    assert check_compressed('jpeg', data)[1:3] == (64, 48)


def test_a_small_png_that_would_decode_huge_is_refused_from_its_header():
    bomb = with_size(encoded('.png', np.zeros((16, 16), np.uint8)), 20000, 20000)
    with pytest.raises(ImageDecodeError, match='PNG image of 20000x20000') as info:
        check_compressed('png', bomb, max_pixels=4096 * 2160)
    assert info.value.reason == 'too_large'


@pytest.mark.parametrize('fmt, data, reason, words', [
    ('png', encoded('.png', np.zeros((4, 5), np.uint16)), 'encoding', ['16-bit PNG']),
    # a frame header (SOF0) saying 12 bits per sample, 16x16
    ('jpeg', b'\xff\xd8\xff\xc0\x00\x11\x0c\x00\x10\x00\x10' + bytes(20), 'encoding',
     ['12-bit JPEG']),
    ('png', with_size(encoded('.png', np.zeros((4, 4), np.uint8)), 0, 4), 'size',
     ['zero size', '0x4']),
    ('bmp', encoded('.bmp', smooth_bgr()), 'compressed', ['neither PNG nor JPEG', "b'BM"]),
    ('jpeg', encoded('.jpg', smooth_bgr())[:30], 'compressed', ['ends before its frame']),
    ('png', encoded('.png', smooth_bgr())[:20], 'compressed', ['IHDR']),
    ('jpeg', b'', 'compressed', ['no data']),
    ('16UC1; compressedDepth rvl', bytes(40), 'compressed', ['RVL']),
])
def test_compressed_arrival_check_refusals(fmt, data, reason, words):
    with pytest.raises(ImageDecodeError) as info:
        check_compressed(fmt, data)
    assert info.value.reason == reason
    for word in words:
        assert word in str(info.value)


def test_compressed_depth_png_is_checked_after_its_header():
    data = bytes(12) + encoded('.png', np.zeros((30, 40), np.uint16))
    header = check_compressed('16UC1; compressedDepth png', data, max_bit_depth=16)
    assert header == ('png', 40, 30, 16)


@settings(max_examples=400, deadline=None)
@given(data=st.binary(max_size=64),
       prefix=st.sampled_from([b'', b'\xff\xd8', b'\xff\xd8\xff', b'\x89PNG\r\n\x1a\n']))
def test_compressed_check_of_any_bytes_raises_only_its_own_error(prefix, data):
    try:
        header = check_compressed('jpeg', prefix + data, max_pixels=10**6)
    except ImageDecodeError:
        return
    assert 0 < header.width * header.height <= 10**6


@settings(max_examples=400, deadline=None)
@given(height=st.integers(-2, 70000), width=st.integers(-2, 70000), step=st.integers(-2, 300),
       encoding=st.sampled_from(ENCODINGS + ('bayer_rggb8', '', 'mono 16')),
       big_endian=st.integers(0, 1), data=st.binary(max_size=600))
def test_image_check_of_any_fields_raises_only_its_own_error(height, width, step, encoding,
                                                             big_endian, data):
    msg = types.SimpleNamespace(height=height, width=width, step=step, encoding=encoding,
                                is_bigendian=big_endian, data=data)
    try:
        check_image(msg, max_pixels=10**6)
    except ImageDecodeError:
        return
    decode_image(msg)        # what passes the arrival check decodes


@pytest.mark.parametrize('encoding', ['rgb8', 'bgr8', 'mono8'])
def test_jpeg_fields_decode_back_to_the_image_in_its_channel_order(encoding):
    """fused/image/compressed: what the node publishes decodes (occo_ros's own decoder, as
    compressed_image_transport's format string says) to the same picture."""
    y, x = np.mgrid[0:64, 0:80]
    rgb = np.stack([x * 3, y * 3, (x + y) * 2], axis=-1).astype(np.uint8)
    pixels = {'rgb8': rgb, 'bgr8': rgb[..., ::-1], 'mono8': rgb[..., 0]}[encoding]
    fields = jpeg_fields(np.ascontiguousarray(pixels), encoding, 90)
    packed = 'mono8' if encoding == 'mono8' else 'bgr8'
    assert fields['format'] == f'{encoding}; jpeg compressed {packed}'
    decoded = decode_compressed(fields['format'], fields['data'])
    back = decoded.array if decoded.order != 'bgr' else decoded.array[..., ::-1]
    expected = rgb[..., 0] if encoding == 'mono8' else rgb
    assert back.shape == expected.shape
    assert np.abs(back.astype(int) - expected).mean() < 3
    with pytest.raises(ValueError, match='mono16'):
        jpeg_fields(np.zeros((4, 4), np.uint16), 'mono16', 80)
