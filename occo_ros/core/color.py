"""BT.601 colour conversion of OCCO_METHOD.md section 1, and the fusion's split/recombine.

Forward (R, G, B, Y, Cb, Cr in [0, 1] for float images; delta = 0.5, or 128 for uint8)::

    Y  = 0.299 R + 0.587 G + 0.114 B
    Cb = 0.564 (B - Y) + delta
    Cr = 0.713 (R - Y) + delta

Inverse, clamped to the image range::

    R = Y + 1.403 (Cr - delta)
    G = Y - 0.714 (Cr - delta) - 0.344 (Cb - delta)
    B = Y + 1.773 (Cb - delta)

These are OpenCV's COLOR_RGB2YCrCb / COLOR_YCrCb2RGB coefficients, but the public channel
order here is **Y, Cb, Cr** (the name's order), not OpenCV's Y, Cr, Cb. The rounded
coefficients are not exact inverses: a float round trip is off by up to ~3e-4 (spec, kept).
uint8 results are saturated and within one count of the exact value (rounding plus OpenCV's
fixed-point arithmetic, like cvtColor's); a uint8 round trip is off by at most 2.

Every conversion is one cv2.transform with a 3x4 matrix built from the coefficients above
(faster than cvtColor for uint8), with the columns or rows permuted for BGR(A) images so no
channel swap is ever copied.

The fusion pipeline uses the pair :func:`luma_chroma` (visible image -> Y for the network +
its YCbCr image) and :func:`compose_rgb` (fused Y + that YCbCr -> 8-bit colour image).

Composition (:data:`COLOR_MODES`): 'keep_chroma' swaps the fused luma in and keeps Cb/Cr, so
a dark, weakly coloured pixel that the infrared makes bright keeps its small chroma at a much
higher luma and turns pastel (HSV saturation about /4 where the luma quadruples).
'preserve_saturation' (the default) scales Cb/Cr by the luma gain g = Y_fused / Y_visible:
then RGB_out = Y_fused + g (RGB_visible - Y_visible) = g RGB_visible, so HSV saturation and
hue are the visible pixel's, and the BT.601 luma is the fused one. Two limits:

* near-black visible pixels (Y < :data:`DARK_LUMA`) carry sensor noise, not colour: their
  gain is (Y_fused + s) / (Y_visible + s) with s = DARK_LUMA - Y_visible, at most
  (255 + DARK_LUMA) / DARK_LUMA, so noise is not blown up into colour (they stay less
  saturated than the visible pixel);
* gamut: g is lowered where a channel would pass 255 (bright fused luma, strong colour), so
  the fused luma and the hue are kept and saturation gives way (never clipping, which would
  shift hue and darken the pixel).

It is one compiled pass over the pixels (numba, see :func:`_kernel`), computed from the
visible Y, Cb, Cr and the fused Y in float32 and rounded once to the output channels.
"""

from __future__ import annotations

import logging
import threading

import cv2
import numpy as np

from occo_ros.params import COLOR_MODES

_LOG = logging.getLogger('occo_ros.core.color')

#: BT.601 luma weights for R, G, B (OCCO_METHOD.md §1): the one definition in the project.
LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114])
# rows Y, Cb, Cr; columns R, G, B
_FORWARD = np.array([LUMA_WEIGHTS,
                     0.564 * (np.array([0.0, 0.0, 1.0]) - LUMA_WEIGHTS),
                     0.713 * (np.array([1.0, 0.0, 0.0]) - LUMA_WEIGHTS)])
# rows R, G, B; columns Y, Cb, Cr
_INVERSE = np.array([[1.0, 0.0, 1.403],
                     [1.0, -0.344, -0.714],
                     [1.0, 1.773, 0.0]])
# position of R, G, B (and alpha, ignored) in each input order
_CHANNELS = {'rgb': (0, 1, 2), 'bgr': (2, 1, 0), 'rgba': (0, 1, 2, 3), 'bgra': (2, 1, 0, 3)}
COLOR_ORDERS = tuple(_CHANNELS)
LUMA_ORDERS = COLOR_ORDERS + ('gray',)
OUTPUT_ORDERS = ('rgb', 'bgr')
#: Visible luma (8-bit) below which chroma counts as noise: its gain is damped (docstring).
#: 12 (under 5 % of the range) is the largest limit that keeps the saturation of the pixels
#: the infrared lifts at >= 0.8 of the visible's on eval/msrs (issue 21: 0.82; 24 gave 0.66,
#: 8 gave 0.89). Those night frames carry a green sensor cast in the dark (HSV saturation
#: ~0.5 at luma ~11) that people the infrared lights up keep as a green tint: the visible
#: camera's colour, not a whitish silhouette (contact sheets in models/MODEL_CARD.md).
DARK_LUMA = 12


def _delta(dtype: np.dtype) -> float:
    return 128.0 if dtype == np.uint8 else 0.5


def _forward_matrix(order: str, delta: float) -> np.ndarray:
    """3 x (channels + 1): image in ``order`` -> Y, Cb, Cr."""
    channels = _CHANNELS[order]
    matrix = np.zeros((3, len(channels) + 1))
    for rgb_index, position in enumerate(channels[:3]):
        matrix[:, position] = _FORWARD[:, rgb_index]
    matrix[1:, -1] = delta
    return matrix


def _inverse_matrix(order: str, delta: float) -> np.ndarray:
    """3 x 4: Y, Cb, Cr -> image in ``order`` ('rgb' or 'bgr')."""
    linear = _INVERSE[list(_CHANNELS[order])]
    return np.hstack([linear, -linear @ np.array([[0.0], [delta], [delta]])])


_FORWARD_U8 = {order: _forward_matrix(order, 128.0) for order in COLOR_ORDERS}
_INVERSE_U8 = {order: _inverse_matrix(order, 128.0) for order in OUTPUT_ORDERS}


def rgb_to_ycbcr(image: np.ndarray) -> np.ndarray:
    """RGB (H, W, 3) -> Y, Cb, Cr (H, W, 3), same dtype.

    uint8 (chroma offset 128) or float32/float64 in [0, 1] (offset 0.5).
    """
    image = _check_color(image, 'rgb_to_ycbcr')
    return cv2.transform(image, _forward_matrix('rgb', _delta(image.dtype)))


def ycbcr_to_rgb(image: np.ndarray) -> np.ndarray:
    """Y, Cb, Cr (H, W, 3) -> RGB (H, W, 3), same dtype, clamped to [0, 1] (float) or
    saturated to [0, 255] (uint8)."""
    image = _check_color(image, 'ycbcr_to_rgb')
    rgb = cv2.transform(image, _inverse_matrix('rgb', _delta(image.dtype)))
    if rgb.dtype != np.uint8:
        np.clip(rgb, 0.0, 1.0, out=rgb)
    return rgb


def luma_chroma(image: np.ndarray, order: str = 'rgb') -> tuple[np.ndarray, np.ndarray]:
    """Split a uint8 visible image into luminance and the colour that compose_rgb needs.

    ``image``: (H, W, 3|4) uint8 in ``order`` ('rgb', 'bgr', 'rgba', 'bgra'; alpha is
    ignored) or (H, W) for 'gray'. Returns ``y``, uint8 (H, W) C-contiguous (divide by 255
    for the network), and ``ycbcr``, uint8 (H, W, 3) Y, Cb, Cr of the image (gray: Cb = Cr
    = 128), to hand to :func:`compose_rgb` with the fused luminance.
    """
    if order not in LUMA_ORDERS:
        raise ValueError(f'unknown channel order {order!r}; allowed: {", ".join(LUMA_ORDERS)}')
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f'luma_chroma needs a uint8 image, got {image.dtype}')
    if order == 'gray':
        if image.ndim != 2:
            raise ValueError(f"a 'gray' image must have shape (H, W), got {image.shape}")
        return np.ascontiguousarray(image), np.full(image.shape + (3,), 128, np.uint8)
    channels = len(_CHANNELS[order])
    if image.ndim != 3 or image.shape[2] != channels:
        raise ValueError(f'an {order!r} image must have shape (H, W, {channels}), got '
                         f'{image.shape}')
    ycbcr = cv2.transform(image, _FORWARD_U8[order])
    return cv2.extractChannel(ycbcr, 0), ycbcr


def compose_rgb(y: np.ndarray, ycbcr: np.ndarray, order: str = 'rgb',
                mode: str = COLOR_MODES[0]) -> np.ndarray:
    """Fused luminance + the visible image's colour -> uint8 (H, W, 3) in ``order``.

    ``y``: (H, W) float32/float64 in [0, 1] (values outside are clamped) or uint8.
    ``ycbcr``: the uint8 (H, W, 3) second result of :func:`luma_chroma` (not modified); its Y
    is replaced by ``y`` and, in mode 'preserve_saturation', Cb/Cr are scaled by the luma
    gain (module docstring); the result is converted with the BT.601 inverse, saturated.
    ``order``: 'rgb' (rgb8) or 'bgr' (bgr8). ``mode``: one of :data:`COLOR_MODES`.
    """
    if order not in OUTPUT_ORDERS:
        raise ValueError(f'unknown output order {order!r}; allowed: {", ".join(OUTPUT_ORDERS)}')
    check_color_mode(mode)
    y = np.asarray(y)
    ycbcr = np.asarray(ycbcr)
    if ycbcr.dtype != np.uint8 or ycbcr.ndim != 3 or ycbcr.shape[2] != 3:
        raise ValueError(f'ycbcr must be uint8 (H, W, 3) from luma_chroma, got {ycbcr.dtype} '
                         f'{ycbcr.shape}')
    if y.shape != ycbcr.shape[:2]:
        raise ValueError(f'y has shape {y.shape} but ycbcr is {ycbcr.shape[:2]} (H, W)')
    if y.dtype != np.uint8 and y.dtype.kind != 'f':
        raise ValueError(f'y must be float in [0, 1] or uint8, got {y.dtype}')
    if mode == 'preserve_saturation':
        return _compose_saturated(y, ycbcr, order)
    if y.dtype != np.uint8:
        # round and saturate to 0..255 in one pass (NaN -> 0)
        y = cv2.addWeighted(y, 255.0, y, 0.0, 0.0, dtype=cv2.CV_8U)
    merged = ycbcr.copy()
    cv2.insertChannel(y, merged, 0)
    return cv2.transform(merged, _INVERSE_U8[order])


def check_color_mode(mode: str) -> None:
    """Raise ValueError unless ``mode`` is one of :data:`COLOR_MODES`."""
    if mode not in COLOR_MODES:
        raise ValueError(f'unknown colour mode {mode!r}; allowed: {", ".join(COLOR_MODES)}')


def prepare_compose(mode: str = COLOR_MODES[0]) -> None:
    """Make :func:`compose_rgb` in ``mode`` ready, so a stream's first frame does not wait
    for it: preserve_saturation's kernel is compiled on the first use on a machine (about
    1.5 s), then loaded from numba's on-disk cache (about 1 CPU s with numba's import)."""
    check_color_mode(mode)
    if mode == 'preserve_saturation':
        compose_rgb(np.zeros((1, 1), np.uint8), np.full((1, 1, 3), 128, np.uint8), mode=mode)


# Numba, not OpenCV or numpy: the gain, its gamut bound and the inverse conversion take ~20
# passes over the planes with those (2-3 ms per 640x512 frame on the development CPU, most
# of it loads and stores); one compiled, vectorised pass over the pixels takes ~0.5 ms.
# nogil: the node's worker thread fuses while the executor thread keeps taking messages.
# Not parallel: numba's default threading layer must not be entered from two threads at once.
_KERNEL = None
_KERNEL_LOCK = threading.Lock()


def _saturated_pixels(y, scale, ycbcr, out, cb0, cr0, cb1, cr1, cb2, cr2):
    """The per-pixel composition of the module docstring (compiled by :func:`_kernel`):
    ``y`` (n) fused luma in counts / ``scale``, ``ycbcr`` (3n) visible Y, Cb, Cr, ``out``
    (3n) the three output channels, whose offsets from Y are (cbK Cb' + crK Cr'), K = 0, 1,
    2 (an inverse row)."""
    f32 = np.float32
    dark = f32(DARK_LUMA)
    for k in range(y.size):
        fused = f32(y[k]) * scale
        # rounded and saturated to 0..255 like cv2's conversions (NaN -> 0: not >= 0)
        fused = f32(np.int32(min(fused if fused >= f32(0.0) else f32(0.0), f32(255.0))
                             + f32(0.5)))
        visible = f32(ycbcr[3 * k])
        cb = f32(ycbcr[3 * k + 1]) - f32(128.0)
        cr = f32(ycbcr[3 * k + 2]) - f32(128.0)
        off0 = cb0 * cb + cr0 * cr
        off1 = cb1 * cb + cr1 * cr
        off2 = cb2 * cb + cr2 * cr
        # (Y_f + s) / (Y_v + s), s = max(DARK_LUMA - Y_v, 0), the numerator saturated at
        # 255 (only near-black pixels made nearly white, where the gamut rules)
        lift = max(dark - visible, f32(0.0))
        gain = min(fused + lift, f32(255.0)) / (visible + lift)
        # gamut: Y_f + gain * (largest channel offset) <= 255.5 (half a count of slack: the
        # rounded YCbCr of an in-gamut pixel may reach it); the offsets' luma is 0, so the
        # largest is >= 0
        spread = max(max(off0, off1), max(off2, f32(0.5)))
        gain = min(gain, (f32(255.5) - fused) / spread)
        out[3 * k] = np.uint8(np.int32(min(max(fused + gain * off0, f32(0.0)), f32(255.0))
                                       + f32(0.5)))
        out[3 * k + 1] = np.uint8(np.int32(min(max(fused + gain * off1, f32(0.0)),
                                               f32(255.0)) + f32(0.5)))
        out[3 * k + 2] = np.uint8(np.int32(min(max(fused + gain * off2, f32(0.0)),
                                               f32(255.0)) + f32(0.5)))


def _kernel():
    """:func:`_saturated_pixels` compiled (numba imported here: ~0.3 s that processes which
    never compose colour do not pay)."""
    global _KERNEL
    with _KERNEL_LOCK:
        if _KERNEL is None:
            import numba

            # error_model numpy: no zero-division branch, which would stop vectorisation (the
            # divisors are >= DARK_LUMA and >= 0.5 anyway); no fastmath: exact IEEE results
            options = dict(nogil=True, boundscheck=False, error_model='numpy')
            try:
                _KERNEL = numba.njit(cache=True, **options)(_saturated_pixels)
            except RuntimeError as exc:   # neither the package folder nor ~/.cache writable
                _LOG.warning('the colour kernel is compiled at every start (~1 s): numba '
                             'cannot cache it (%s); set NUMBA_CACHE_DIR to a writable folder',
                             exc)
                _KERNEL = numba.njit(**options)(_saturated_pixels)
        return _KERNEL


# per output order: the (Cb, Cr) coefficients of each output channel's offset from Y
_OFFSETS = {order: tuple(np.float32(c) for row in _INVERSE[list(_CHANNELS[order])]
                         for c in row[1:])
            for order in OUTPUT_ORDERS}


def _compose_saturated(y: np.ndarray, ycbcr: np.ndarray, order: str) -> np.ndarray:
    """Y = ``y`` (uint8, or float in [0, 1]) with the visible ``ycbcr``'s Cb/Cr scaled by
    the saturation-keeping luma gain (module docstring), converted to uint8 (H, W, 3) in
    ``order``."""
    out = np.empty(ycbcr.shape, np.uint8)
    scale = np.float32(1.0 if y.dtype == np.uint8 else 255.0)
    _kernel()(np.ascontiguousarray(y).reshape(-1), scale,
              np.ascontiguousarray(ycbcr).reshape(-1), out.reshape(-1), *_OFFSETS[order])
    return out


def _check_color(image: np.ndarray, name: str) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f'{name} needs an (H, W, 3) image, got {image.shape}')
    if image.dtype not in (np.uint8, np.float32, np.float64):
        raise ValueError(f'{name} needs uint8 or float32/float64 in [0, 1], got {image.dtype}')
    return image
