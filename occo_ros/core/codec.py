"""sensor_msgs/Image and CompressedImage <-> numpy, without importing ROS.

Messages are duck-typed: :func:`decode_image` reads the attributes ``height``, ``width``,
``encoding``, ``is_bigendian``, ``step`` and ``data`` of any object (rclpy's Image, whose
``data`` is an ``array.array('B')``; rosbags' deserialised Image, whose ``data`` is a numpy
uint8 array; or a ``types.SimpleNamespace`` with ``bytes``).

Decoded images come with their channel order, one of :data:`ORDERS`, so callers never guess
whether three channels are RGB or BGR:

============================  =======  ========  ===========================
encoding                      dtype    channels  order
============================  =======  ========  ===========================
mono8, 8UC1                   uint8    1         'gray' (shape (H, W))
mono16, 16UC1                 uint16   1         'gray'
32FC1                         float32  1         'gray'
bgr8, 8UC3                    uint8    3         'bgr'
rgb8                          uint8    3         'rgb'
bgra8, 8UC4                   uint8    4         'bgra'
rgba8                         uint8    4         'rgba'
yuv422 (UYVY), yuv422_yuy2    uint8    3         'bgr' (converted)
============================  =======  ========  ===========================

8UC3/8UC4 carry no channel meaning in ROS; they are read as BGR(A), OpenCV's order, which is
also what cv_bridge does when it converts them to bgr8 (a plain copy).

Arrival checks: :func:`check_image` and :func:`check_compressed` raise the same
:class:`ImageDecodeError` as decoding would, plus a refusal of encodings the stream does not
take (:data:`THERMAL_ENCODINGS`, :data:`RGB_ENCODINGS`) and of images above a pixel limit,
without decoding: they read the message's fields, the length of its data and, for compressed
images, the dimensions and bit depth in the PNG or JPEG header (so a small file that would
decode to a huge image is refused before any memory is spent on it).

Zero copy: for every encoding except the yuv422 ones the array is a read-only view of the
message's buffer (padded rows included: the row stride is ``step``), as long as the data is
in the machine's byte order. Multi-byte data in the other byte order (``is_bigendian``) is
returned as a byte-swapped copy in native order, because OpenCV cannot read non-native
arrays; so is data whose ``step`` is not a multiple of the element size (OpenCV refuses
such rows). yuv422 images are converted to BGR with OpenCV (BT.601 video range, like cv_bridge),
which is a copy by nature. Keep the message alive while the view is in use, and copy the
array before modifying it.
"""

from __future__ import annotations

import sys
from typing import Any, NamedTuple

import cv2
import numpy as np

ORDERS = ('gray', 'bgr', 'rgb', 'bgra', 'rgba')

# encoding -> (dtype, channels, order) for encodings that map straight onto an array
_PLAIN = {
    'mono8': (np.dtype(np.uint8), 1, 'gray'),
    '8UC1': (np.dtype(np.uint8), 1, 'gray'),
    'mono16': (np.dtype(np.uint16), 1, 'gray'),
    '16UC1': (np.dtype(np.uint16), 1, 'gray'),
    '32FC1': (np.dtype(np.float32), 1, 'gray'),
    'bgr8': (np.dtype(np.uint8), 3, 'bgr'),
    '8UC3': (np.dtype(np.uint8), 3, 'bgr'),
    'rgb8': (np.dtype(np.uint8), 3, 'rgb'),
    'bgra8': (np.dtype(np.uint8), 4, 'bgra'),
    '8UC4': (np.dtype(np.uint8), 4, 'bgra'),
    'rgba8': (np.dtype(np.uint8), 4, 'rgba'),
}
# packed 4:2:2, two bytes per pixel; ROS 'yuv422' is UYVY (U Y0 V Y1)
_YUV422 = {
    'yuv422': cv2.COLOR_YUV2BGR_UYVY,
    'yuv422_yuy2': cv2.COLOR_YUV2BGR_YUY2,
}
ENCODINGS = tuple(_PLAIN) + tuple(_YUV422)
#: what each input stream of the fusion node takes (thermal: one channel; RGB: colour or gray)
THERMAL_ENCODINGS = ('mono16', '16UC1', 'mono8', '8UC1', '32FC1')
RGB_ENCODINGS = ('bgr8', '8UC3', 'rgb8', 'bgra8', '8UC4', 'rgba8', 'yuv422', 'yuv422_yuy2',
                 'mono8', '8UC1')
_NATIVE_BIG_ENDIAN = sys.byteorder == 'big'
_COMPRESSED_DEPTH_HEADER = 12  # compressed_depth_image_transport: int32 format + 2 float32


class ImageDecodeError(ValueError):
    """A message cannot be turned into an image; ``reason`` is a short key for log throttling
    and counters ('encoding', 'size', 'too_large', 'step', 'data', 'nonfinite', 'width',
    'compressed')."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class DecodedImage(NamedTuple):
    """An image array and its channel order (one of :data:`ORDERS`); unpacks as a pair."""

    array: np.ndarray
    order: str


def decode_image(msg: Any, allow_nonfinite: bool = False) -> DecodedImage:
    """A sensor_msgs/Image (duck-typed) as an array, a view of ``msg.data`` where possible.

    Shapes: (H, W) for one channel, (H, W, C) otherwise; dtypes and orders per the module
    table. ``allow_nonfinite`` lets 32FC1 images with NaN/inf through (the thermal
    normaliser maps them to 0); by default they raise. Raises :class:`ImageDecodeError`
    naming the problem: unknown encoding, zero size, step too small, too little data, odd
    width for yuv422, non-finite 32FC1 values.
    """
    layout = _checked_layout(msg)
    array = _view(layout, msg.is_bigendian)
    if layout.encoding in _YUV422:
        return DecodedImage(cv2.cvtColor(array, _YUV422[layout.encoding]), layout.order)
    if array.dtype.kind == 'f' and not allow_nonfinite:
        _check_finite(array, layout.encoding)
    return DecodedImage(array, layout.order)


def check_image(msg: Any, encodings: tuple[str, ...] = ENCODINGS,
                max_pixels: int | None = None) -> None:
    """Raise :class:`ImageDecodeError` for a sensor_msgs/Image (duck-typed) that
    :func:`decode_image` would refuse, whose encoding is not in ``encodings`` (reason
    'encoding') or that has more than ``max_pixels`` pixels (reason 'too_large').

    Reads the fields and the data length only; 32FC1 values are scanned for NaN/inf in place
    (no copy for data in native byte order). Nothing is converted.
    """
    if msg.encoding not in encodings:
        problem = (f'encoding {msg.encoding!r} is not accepted on this stream'
                   if msg.encoding in ENCODINGS else f'unsupported encoding {msg.encoding!r}')
        raise ImageDecodeError('encoding', f'{problem}; accepted on this stream: '
                               f'{", ".join(encodings)}')
    layout = _checked_layout(msg, max_pixels)
    if layout.dtype.kind == 'f':
        _check_finite(_view(layout, msg.is_bigendian), layout.encoding)


class _Layout(NamedTuple):
    encoding: str
    dtype: np.dtype
    channels: int
    order: str
    shape: tuple
    step: int
    buffer: np.ndarray


def _checked_layout(msg: Any, max_pixels: int | None = None) -> _Layout:
    """The array layout a message declares, after checking that its data holds it."""
    encoding = msg.encoding
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if encoding in _PLAIN:
        dtype, channels, order = _PLAIN[encoding]
    elif encoding in _YUV422:
        dtype, channels, order = np.dtype(np.uint8), 2, 'bgr'
    else:
        raise ImageDecodeError(
            'encoding', f'unsupported encoding {encoding!r}; supported: {", ".join(ENCODINGS)}')
    if height <= 0 or width <= 0:
        raise ImageDecodeError('size', f'{encoding} image has zero size: {width}x{height} '
                               '(width x height)')
    _check_pixels(width, height, max_pixels, encoding)
    row_bytes = width * channels * dtype.itemsize
    if step < row_bytes:
        raise ImageDecodeError(
            'step', f'inconsistent step: {step} bytes per row, but a {width} pixels wide '
            f'{encoding} row needs width x bytes per pixel = {row_bytes}')
    buffer = _byte_buffer(msg.data)
    if buffer.size < step * height:
        raise ImageDecodeError(
            'data', f'data is {buffer.size} bytes, expected step x height = {step} x {height} '
            f'= {step * height} for a {width}x{height} {encoding} image')
    if encoding in _YUV422 and width % 2:
        raise ImageDecodeError('width', f'{encoding} needs an even width (two pixels share '
                               f'their chroma), got width {width}')
    shape = (height, width) if channels == 1 else (height, width, channels)
    return _Layout(encoding, dtype, channels, order, shape, step, buffer)


def _view(layout: _Layout, is_bigendian: Any) -> np.ndarray:
    """The pixels as an array: a read-only view of the data, or a native-order copy."""
    dtype = layout.dtype
    swapped = dtype.itemsize > 1 and bool(is_bigendian) != _NATIVE_BIG_ENDIAN
    strides = (layout.step, layout.channels * dtype.itemsize, dtype.itemsize)
    view_dtype = dtype.newbyteorder('S') if swapped else dtype
    array = np.ndarray(layout.shape, view_dtype, buffer=layout.buffer,
                       strides=strides[:len(layout.shape)])
    if swapped or not array.flags.aligned:
        return array.astype(dtype)  # native order, aligned: what OpenCV needs
    array.flags.writeable = False  # a view of the message: never modify it in place
    return array


def _check_pixels(width: int, height: int, max_pixels: int | None, what: str) -> None:
    if max_pixels is not None and width * height > max_pixels:
        raise ImageDecodeError(
            'too_large', f'{what} image of {width}x{height} = {width * height} pixels is above '
            f'the limit of {max_pixels} (parameter max_input_pixels)')


def array_to_image_fields(array: np.ndarray, encoding: str) -> dict:
    """The fields of a sensor_msgs/Image holding ``array``, for ``Image(header=h, **fields)``.

    ``array``: (H, W) or (H, W, 1) for one-channel encodings, (H, W, C) otherwise, with the
    dtype of the module table; yuv422 is not produced. ``data`` is ``bytes`` (assigning a
    numpy array to rclpy's Image.data is ~300x slower), rows are packed (``step`` = W x
    bytes per pixel) and ``is_bigendian`` states the array's byte order. Raises ValueError
    when the array does not fit the encoding.
    """
    if encoding not in _PLAIN:
        raise ValueError(f'cannot write encoding {encoding!r}; supported: {", ".join(_PLAIN)}')
    dtype, channels, _ = _PLAIN[encoding]
    array = np.asarray(array)
    if channels == 1 and array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    expected_ndim = 2 if channels == 1 else 3
    if array.ndim != expected_ndim or (channels > 1 and array.shape[2] != channels):
        wanted = '(H, W)' if channels == 1 else f'(H, W, {channels})'
        raise ValueError(f'{encoding} needs an array of shape {wanted}, got {array.shape}')
    if array.dtype.newbyteorder('=') != dtype:
        raise ValueError(f'{encoding} needs dtype {dtype.name}, got {array.dtype.name}')
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f'cannot write an empty image of shape {array.shape}')
    big_endian = array.dtype.byteorder == '>' or (array.dtype.byteorder == '='
                                                  and _NATIVE_BIG_ENDIAN)
    height, width = array.shape[:2]
    return {
        'height': height,
        'width': width,
        'encoding': encoding,
        'is_bigendian': int(big_endian and dtype.itemsize > 1),
        'step': width * channels * dtype.itemsize,
        'data': array.tobytes(),
    }


def jpeg_fields(pixels: np.ndarray, encoding: str, quality: int) -> dict:
    """The fields of a sensor_msgs/CompressedImage holding ``pixels`` (rgb8, bgr8 or mono8)
    as JPEG of ``quality`` (1-100): ``CompressedImage(header=h, **fields)``. ``format`` follows
    compressed_image_transport ('rgb8; jpeg compressed bgr8'), so image_transport republishers
    and RViz decode it."""
    if encoding == 'rgb8':
        pixels = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
    elif encoding not in ('bgr8', 'mono8'):
        raise ValueError(f'cannot JPEG-encode {encoding!r}; use rgb8, bgr8 or mono8')
    ok, jpeg = cv2.imencode('.jpg', pixels, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError(f'JPEG encoding of a {pixels.shape} image failed')
    packed = 'mono8' if encoding == 'mono8' else 'bgr8'
    return {'format': f'{encoding}; jpeg compressed {packed}', 'data': jpeg.tobytes()}


def decode_compressed(format: str, data: Any) -> DecodedImage:
    """A sensor_msgs/CompressedImage (``format``, ``data``) as an array.

    Reads what OpenCV reads (JPEG, PNG, TIFF, ...; the content decides, the format string is
    only used for compressed_depth_image_transport's ``'<enc>; compressedDepth png'``, whose
    12-byte header is skipped). compressed_image_transport formats such as ``'rgb8; jpeg
    compressed bgr8'`` name the original encoding and the compressed one; the decoded pixels
    are OpenCV's: uint8 (or uint16 for 16-bit PNG) with order 'bgr', 'bgra' or 'gray',
    whatever the original encoding was. Raises :class:`ImageDecodeError` for empty or
    undecodable data.
    """
    buffer = _compressed_payload(format, data)
    array = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED)
    if array is None:
        raise ImageDecodeError('compressed', f'could not decode {buffer.size} bytes of '
                               f'compressed image data (format {format!r})')
    if array.ndim == 2:
        return DecodedImage(array, 'gray')
    return DecodedImage(array, 'bgr' if array.shape[2] == 3 else 'bgra')


class CompressedHeader(NamedTuple):
    """What the header of a compressed image says: 'png' or 'jpeg', size, bits per sample."""

    kind: str
    width: int
    height: int
    bit_depth: int


def check_compressed(format: str, data: Any, max_pixels: int | None = None,
                     max_bit_depth: int = 8) -> CompressedHeader:
    """The PNG or JPEG header of a sensor_msgs/CompressedImage (``format``, ``data``), after
    checking it without decoding; raises :class:`ImageDecodeError`.

    Refused: empty data, anything but PNG or JPEG (reason 'compressed': only their size can
    be read before decoding), zero size ('size'), more than ``max_pixels`` pixels
    ('too_large') and more than ``max_bit_depth`` bits per sample ('encoding', e.g. a 16-bit
    PNG on a colour stream). A header that passes can still hide a corrupt body, which
    :func:`decode_compressed` reports.
    """
    buffer = _compressed_payload(format, data)
    if bytes(buffer[:8]) == _PNG_SIGNATURE:
        header = _png_header(buffer)
    elif bytes(buffer[:2]) == b'\xff\xd8':
        header = _jpeg_header(buffer)
    else:
        raise ImageDecodeError(
            'compressed', f'compressed image ({format!r}) is neither PNG nor JPEG (starts with '
            f'{bytes(buffer[:8])!r}); only these are accepted, their size is checked before '
            'decoding')
    if header.width <= 0 or header.height <= 0:
        raise ImageDecodeError('size', f'{header.kind} header says zero size: '
                               f'{header.width}x{header.height} (width x height)')
    _check_pixels(header.width, header.height, max_pixels, header.kind.upper())
    if header.bit_depth > max_bit_depth:
        raise ImageDecodeError(
            'encoding', f'{header.bit_depth}-bit {header.kind.upper()} is not accepted on this '
            f'stream; accepted: up to {max_bit_depth} bits per sample')
    return header


_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'
# JPEG start-of-frame markers (C4 = DHT, C8 = JPG extension, CC = DAC are not frames)
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_NO_LENGTH = frozenset(range(0xD0, 0xD8)) | {0x01}   # RSTn, TEM: no length field


def _png_header(buffer: np.ndarray) -> CompressedHeader:
    head = bytes(buffer[:26])  # signature, IHDR length and type, width, height, depth
    if len(head) < 26 or head[12:16] != b'IHDR':
        raise ImageDecodeError('compressed', 'PNG data ends or is corrupt before its IHDR '
                               'header: no image size')
    return CompressedHeader('png', int.from_bytes(head[16:20], 'big'),
                            int.from_bytes(head[20:24], 'big'), head[24])


def _jpeg_header(buffer: np.ndarray) -> CompressedHeader:
    """Walk the JPEG segments (skipping by their lengths, no decoding) to the frame header."""
    i, n = 2, buffer.size
    while i + 4 <= n:
        if buffer[i] != 0xFF:
            break
        marker = int(buffer[i + 1])
        if marker == 0xFF:            # fill byte
            i += 1
        elif marker in _JPEG_NO_LENGTH:
            i += 2
        elif marker in (0xD9, 0xDA):  # end of image / start of scan before any frame
            break
        elif marker in _JPEG_SOF:
            head = bytes(buffer[i + 4:i + 9])   # precision, height, width
            if len(head) < 5:
                break
            return CompressedHeader('jpeg', int.from_bytes(head[3:5], 'big'),
                                    int.from_bytes(head[1:3], 'big'), head[0])
        else:
            i += 2 + (int(buffer[i + 2]) << 8 | int(buffer[i + 3]))
    raise ImageDecodeError('compressed', f'JPEG data ({n} bytes) is corrupt or ends before '
                           'its frame header: no image size')


def _compressed_payload(format: str, data: Any) -> np.ndarray:
    """The image file in a CompressedImage's data (compressedDepth's header skipped)."""
    buffer = _byte_buffer(data)
    if 'compresseddepth' in format.replace(' ', '').lower():
        if 'rvl' in format.lower():
            raise ImageDecodeError('compressed', f'format {format!r}: RVL depth compression '
                                   'is not supported; publish compressedDepth as png')
        buffer = buffer[_COMPRESSED_DEPTH_HEADER:]
    if buffer.size == 0:
        raise ImageDecodeError('compressed', f'compressed image ({format!r}) has no data')
    return buffer


def _byte_buffer(data: Any) -> np.ndarray:
    """``data`` (bytes, bytearray, array.array, memoryview or a contiguous numpy array) as a
    flat uint8 array sharing its memory."""
    try:
        return np.frombuffer(data, np.uint8)
    except (TypeError, ValueError) as exc:
        raise ImageDecodeError('data', f'image data must be a contiguous bytes-like object, '
                               f'got {type(data).__name__}: {exc}') from None


def _check_finite(array: np.ndarray, encoding: str) -> None:
    if not np.isfinite(array).all():
        nan = int(np.isnan(array).sum())
        inf = int(np.isinf(array).sum())
        raise ImageDecodeError(
            'nonfinite', f'{encoding} image has {nan} NaN and {inf} infinite values of '
            f'{array.size}; pass allow_nonfinite=True to keep them')


def file_image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the header of a PNG, JPEG or TIFF file's bytes, without decoding;
    None for another format (or a header that cannot be read: the decoder then says why)."""
    buffer = np.frombuffer(data, np.uint8)
    try:
        if data[:8] == _PNG_SIGNATURE:
            header = _png_header(buffer)
        elif data[:2] == b'\xff\xd8':
            header = _jpeg_header(buffer)
        elif data[:4] in (b'II*\x00', b'MM\x00*'):
            return _tiff_size(data)
        else:
            return None
    except ImageDecodeError:
        return None
    return header.width, header.height


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    """ImageWidth (256) and ImageLength (257) of a classic TIFF's first IFD."""
    order = 'little' if data[:2] == b'II' else 'big'

    def number(start: int, size: int) -> int:
        return int.from_bytes(data[start:start + size], order)

    ifd = number(4, 4)
    found = {}
    for entry in range(ifd + 2, ifd + 2 + 12 * number(ifd, 2), 12):
        tag, kind = number(entry, 2), number(entry + 2, 2)
        if tag in (256, 257) and kind in (3, 4):   # SHORT or LONG
            found[tag] = number(entry + 8, 2 if kind == 3 else 4)
    return (found[256], found[257]) if len(found) == 2 else None
