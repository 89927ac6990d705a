"""BT.601 colour conversion of OCCO_METHOD.md section 1 (occo_ros.core.color)."""

import cv2
import numpy as np
import pytest

from occo_ros.core.color import (
    COLOR_MODES,
    DARK_LUMA,
    compose_rgb,
    luma_chroma,
    prepare_compose,
    rgb_to_ycbcr,
    ycbcr_to_rgb,
)
from occo_ros.params import SPECS

pytestmark = [pytest.mark.core]


def spec_forward(rgb, delta):
    """The spec's formulas, written out channel by channel, in float64."""
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cr = 0.713 * (r - y) + delta
    cb = 0.564 * (b - y) + delta
    return np.stack([y, cb, cr], axis=-1)


def spec_offsets(ycbcr, delta):
    """R - Y, G - Y, B - Y of the spec's inverse, written out in float64."""
    cb, cr = (ycbcr[..., i].astype(np.float64) - delta for i in (1, 2))
    return np.stack([1.403 * cr, -0.714 * cr - 0.344 * cb, 1.773 * cb], axis=-1)


def spec_inverse(ycbcr, delta, top):
    y = ycbcr[..., :1].astype(np.float64)
    return np.clip(y + spec_offsets(ycbcr, delta), 0, top)


def random_rgb(height=37, width=53, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize('dtype, atol', [(np.float64, 1e-12), (np.float32, 1e-6)])
def test_float_forward_matches_the_spec(dtype, atol):
    rgb = (random_rgb() / 255.0).astype(dtype)
    out = rgb_to_ycbcr(rgb)
    assert out.dtype == dtype
    np.testing.assert_allclose(out, spec_forward(rgb, 0.5), atol=atol)


def test_uint8_forward_is_the_spec_within_one_count():
    rgb = random_rgb()
    out = rgb_to_ycbcr(rgb)
    assert out.dtype == np.uint8
    difference = np.abs(out.astype(np.float64) - spec_forward(rgb, 128.0))
    # rounding (0.5) plus OpenCV's fixed-point arithmetic: never a full count off
    assert difference.max() < 1.0
    assert difference.mean() < 0.3


def test_float_inverse_matches_the_spec_and_clamps():
    ycbcr = np.random.default_rng(1).random((29, 31, 3))  # many out of gamut
    out = ycbcr_to_rgb(ycbcr)
    np.testing.assert_allclose(out, spec_inverse(ycbcr, 0.5, 1.0), atol=1e-12)
    assert out.min() == 0.0 and out.max() == 1.0


def test_uint8_inverse_is_the_saturated_spec_within_one_count():
    ycbcr = np.random.default_rng(2).integers(0, 256, (29, 31, 3), dtype=np.uint8)
    out = ycbcr_to_rgb(ycbcr)
    assert out.dtype == np.uint8
    difference = np.abs(out - spec_inverse(ycbcr, 128.0, 255.0))
    assert difference.max() < 1.0
    assert difference.mean() < 0.3


def test_opencv_uses_the_same_coefficients_in_y_cr_cb_order():
    rgb = (random_rgb(seed=3) / 255.0).astype(np.float32)
    opencv = cv2.cvtColor(rgb, cv2.COLOR_RGB2YCrCb)
    np.testing.assert_allclose(rgb_to_ycbcr(rgb), opencv[..., [0, 2, 1]], atol=1e-6)
    back = cv2.cvtColor(opencv, cv2.COLOR_YCrCb2RGB)
    np.testing.assert_allclose(ycbcr_to_rgb(rgb_to_ycbcr(rgb)), np.clip(back, 0, 1), atol=1e-6)


def test_float_round_trip():
    rgb = np.random.default_rng(4).random((41, 43, 3)).astype(np.float32)
    error = np.abs(ycbcr_to_rgb(rgb_to_ycbcr(rgb)) - rgb)
    # the spec's rounded inverse (1.403 vs 1/0.713 = 1.4025) costs up to ~3e-4, < 0.1/255
    assert error.max() < 3.5e-4


def test_uint8_round_trip():
    rgb = random_rgb(seed=5)
    error = np.abs(ycbcr_to_rgb(rgb_to_ycbcr(rgb)).astype(int) - rgb)
    assert error.max() <= 2  # three 8-bit quantisations in between
    assert error.mean() < 0.5


@pytest.mark.parametrize('order, convert', [
    ('rgb', None), ('bgr', cv2.COLOR_RGB2BGR), ('rgba', cv2.COLOR_RGB2RGBA),
    ('bgra', cv2.COLOR_RGB2BGRA),
])
def test_luma_chroma_reads_every_channel_order(order, convert):
    rgb = random_rgb(seed=6)
    image = rgb if convert is None else cv2.cvtColor(rgb, convert)
    if image.shape[2] == 4:
        image[..., 3] = np.random.default_rng(7).integers(0, 256, image.shape[:2])
    y, ycbcr = luma_chroma(image, order)
    # 4-channel input takes another OpenCV code path: equal within one count
    assert np.abs(ycbcr.astype(int) - rgb_to_ycbcr(rgb)).max() <= 1
    np.testing.assert_array_equal(y, ycbcr[..., 0])
    assert y.dtype == np.uint8 and y.flags.c_contiguous and y.shape == rgb.shape[:2]


def test_luma_chroma_of_gray():
    gray = random_rgb(seed=8)[..., 0]
    y, ycbcr = luma_chroma(gray, 'gray')
    np.testing.assert_array_equal(y, gray)
    assert (ycbcr[..., 1:] == 128).all()
    out = compose_rgb(y, ycbcr)
    np.testing.assert_array_equal(out, np.repeat(gray[:, :, None], 3, axis=2))


@pytest.mark.parametrize('order', ['rgb', 'bgr'])
def test_compose_with_the_original_luma_gives_the_image_back(order):
    rgb = random_rgb(seed=9)
    image = rgb if order == 'rgb' else rgb[..., ::-1]
    y, ycbcr = luma_chroma(image, order)
    np.testing.assert_array_equal(compose_rgb(y, ycbcr, 'rgb', 'keep_chroma'),
                                  ycbcr_to_rgb(ycbcr))
    assert np.abs(compose_rgb(y, ycbcr, 'rgb').astype(int) - rgb).max() <= 2
    np.testing.assert_array_equal(compose_rgb(y, ycbcr, 'bgr'),
                                  compose_rgb(y, ycbcr, 'rgb')[..., ::-1])


def test_keep_chroma_replaces_luma_and_keeps_chroma():
    # a mid-gray-ish image keeps the new luminance in gamut, so it is recovered
    rgb = np.random.default_rng(10).integers(90, 170, (32, 48, 3), dtype=np.uint8)
    _, ycbcr = luma_chroma(rgb)
    original = ycbcr.copy()
    fused = np.random.default_rng(11).uniform(0.4, 0.6, (32, 48)).astype(np.float32)
    out = compose_rgb(fused, ycbcr, mode='keep_chroma')
    np.testing.assert_array_equal(ycbcr, original)  # input untouched
    back = rgb_to_ycbcr(out).astype(int)
    assert np.abs(back[..., 0] - np.round(fused * 255)).max() <= 1
    assert np.abs(back[..., 1:] - original[..., 1:]).max() <= 2


def test_compose_clamps_luma_outside_zero_one():
    _, ycbcr = luma_chroma(np.full((4, 4, 3), 128, np.uint8))
    y = np.array([[-0.5, 0.0, 1.0, 2.0]] * 4, np.float32)
    out = compose_rgb(y, ycbcr)
    np.testing.assert_array_equal(out[:, 0], out[:, 1])
    np.testing.assert_array_equal(out[:, 3], out[:, 2])
    assert out[0, 0].tolist() == [0, 0, 0] and out[0, 3].tolist() == [255, 255, 255]


def test_real_visible_image_round_trip(shared_data):
    paths = sorted((shared_data / 'eval' / 'msrs' / 'vi').glob('*.png'))[:3]
    if not paths:
        pytest.skip(f'no visible images in {shared_data / "eval" / "msrs" / "vi"}')
    for path in paths:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        y, ycbcr = luma_chroma(bgr, 'bgr')
        # OpenCV's gray conversion uses the same luma weights (fixed point: +-1)
        assert np.abs(y.astype(int) - cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)).max() <= 1
        error = np.abs(compose_rgb(y / 255.0, ycbcr, 'bgr', 'keep_chroma').astype(int) - bgr)
        assert error.max() <= 2 and error.mean() < 0.5
        # preserve_saturation: near white, the gamut bound on the rounded chroma may take a
        # few percent of it (a count or two of headroom)
        error = np.abs(compose_rgb(y / 255.0, ycbcr, 'bgr').astype(int) - bgr)
        assert error.max() <= 4 and error.mean() < 0.5


@pytest.mark.parametrize('call, words', [
    (lambda: luma_chroma(np.zeros((4, 4, 3), np.uint8), 'yuv'), ["'yuv'", 'rgb, bgr']),
    (lambda: luma_chroma(np.zeros((4, 4, 3), np.float32)), ['uint8', 'float32']),
    (lambda: luma_chroma(np.zeros((4, 4, 4), np.uint8), 'rgb'), ['(H, W, 3)', '(4, 4, 4)']),
    (lambda: luma_chroma(np.zeros((4, 4, 3), np.uint8), 'gray'), ['(H, W)']),
    (lambda: compose_rgb(np.zeros((4, 4)), np.zeros((4, 4, 3), np.uint8), 'rgba'),
     ["'rgba'", 'rgb, bgr']),
    (lambda: compose_rgb(np.zeros((4, 5)), np.zeros((4, 4, 3), np.uint8)), ['(4, 5)']),
    (lambda: compose_rgb(np.zeros((4, 4), np.int32), np.zeros((4, 4, 3), np.uint8)),
     ['int32']),
    (lambda: compose_rgb(np.zeros((4, 4)), np.zeros((4, 4, 2), np.uint8)), ['(H, W, 3)']),
    (lambda: rgb_to_ycbcr(np.zeros((4, 4), np.uint8)), ['(H, W, 3)']),
    (lambda: ycbcr_to_rgb(np.zeros((4, 4, 3), np.int16)), ['int16']),
])
def test_invalid_input_raises(call, words):
    with pytest.raises(ValueError) as info:
        call()
    for word in words:
        assert word in str(info.value)


def hsv(rgb):
    """Float HSV of a uint8 RGB image: hue in degrees, saturation and value in [0, 1]."""
    return cv2.cvtColor(rgb.astype(np.float32) / 255.0, cv2.COLOR_RGB2HSV)


def hue_difference(a, b):
    diff = np.abs(a - b)
    return np.minimum(diff, 360.0 - diff)


def dark_colours_lifted(seed=20, shape=(48, 64)):
    """Dark, clearly coloured visible pixels and a fused luma 2-6x theirs (issue 21's case:
    the infrared lights up a dark scene), plus the visible luma."""
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 70, shape + (3,), dtype=np.uint8)
    y, ycbcr = luma_chroma(rgb)
    fused = np.clip(y * rng.uniform(2.0, 6.0, shape), 0, 255).astype(np.uint8)
    return rgb, y, ycbcr, fused


def test_preserve_saturation_keeps_hue_and_saturation_where_the_luma_rises():
    rgb, y, ycbcr, fused = dark_colours_lifted()
    out = compose_rgb(fused, ycbcr)
    vis, res = hsv(rgb), hsv(out)
    # coloured, not near-black, and room for the full gain below 255 (else the gamut rules)
    gain = fused / np.maximum(y, 1.0)
    judged = ((y >= DARK_LUMA) & (rgb.max(axis=2) - rgb.min(axis=2).astype(int) >= 12)
              & (rgb.max(axis=2) * gain < 250))
    assert judged.sum() > 500
    assert np.abs(res[..., 1] - vis[..., 1])[judged].mean() < 0.02
    assert hue_difference(res[..., 0], vis[..., 0])[judged].mean() < 2.0
    # the old composition turns the same pixels pastel
    old = hsv(compose_rgb(fused, ycbcr, mode='keep_chroma'))
    assert old[..., 1][judged].mean() < 0.6 * vis[..., 1][judged].mean()


@pytest.mark.parametrize('mode', COLOR_MODES)
def test_published_luma_is_the_fused_luma_even_for_strong_colours(mode):
    # saturated colours of every luma, fused luma anywhere: the gamut limit lowers the
    # saturation instead of clipping a channel, so the BT.601 luma stays the fused one
    rng = np.random.default_rng(21)
    rgb = random_rgb(64, 64, seed=22)
    _, ycbcr = luma_chroma(rgb)
    fused = rng.integers(0, 256, (64, 64), dtype=np.uint8)
    out = compose_rgb(fused, ycbcr, mode=mode)
    error = np.abs(rgb_to_ycbcr(out)[..., 0].astype(int) - fused)
    if mode == 'preserve_saturation':
        assert error.max() <= 2
        # and the hue survives wherever some colour is left
        coloured = (out.max(axis=2) - out.min(axis=2).astype(int) >= 24) & (
            rgb.max(axis=2) - rgb.min(axis=2).astype(int) >= 24)
        assert hue_difference(hsv(out)[..., 0], hsv(rgb)[..., 0])[coloured].mean() < 3.0
    else:   # luma swap: clipped channels lose luma
        assert error.max() > 20


@pytest.mark.parametrize('mode', COLOR_MODES)
def test_gray_inputs_stay_gray(mode):
    gray = random_rgb(seed=23)[..., 0]
    fused = random_rgb(seed=24)[..., 0]
    for image, order in ((gray, 'gray'), (np.repeat(gray[..., None], 3, axis=2), 'rgb')):
        _, ycbcr = luma_chroma(image, order)
        out = compose_rgb(fused, ycbcr, mode=mode)
        np.testing.assert_array_equal(out, np.repeat(fused[..., None], 3, axis=2))


def test_near_black_chroma_noise_is_not_blown_up():
    # visible chroma of a couple of counts on a near-black pixel is sensor noise: lifted to
    # luma 200, its chroma grows by at most (255 + DARK_LUMA) / DARK_LUMA, not 200 / 2
    rgb = np.tile(np.array([[[4, 1, 2]]], np.uint8), (8, 8, 1))
    y, ycbcr = luma_chroma(rgb)
    out = compose_rgb(np.full((8, 8), 200, np.uint8), ycbcr)
    chroma_in = np.abs(ycbcr[..., 1:].astype(int) - 128).max()
    chroma_out = np.abs(rgb_to_ycbcr(out)[..., 1:].astype(int) - 128).max()
    assert chroma_in > 0
    assert chroma_out <= chroma_in * (255 + DARK_LUMA) / DARK_LUMA
    assert chroma_out < chroma_in * 200 / y.max() / 2
    assert hsv(out)[..., 1].max() < hsv(rgb)[..., 1].min()


def test_unchanged_luma_gives_the_visible_image_back():
    rgb = random_rgb(seed=25)
    y, ycbcr = luma_chroma(rgb)
    out = compose_rgb(y, ycbcr)
    assert np.abs(out.astype(int) - compose_rgb(y, ycbcr, mode='keep_chroma')).max() <= 2


def test_color_modes_are_the_parameter_choices():
    assert SPECS['color_mode'].choices == COLOR_MODES
    assert SPECS['color_mode'].default == COLOR_MODES[0]
    with pytest.raises(ValueError, match='preserve_saturation, keep_chroma'):
        compose_rgb(np.zeros((4, 4)), np.zeros((4, 4, 3), np.uint8), mode='hsv')


def spec_preserve_saturation(fused, ycbcr):
    """The module docstring's composition written out in float64: gain (Y_f + s) /
    (Y_v + s), s = max(DARK_LUMA - Y_v, 0), numerator at most 255, lowered so that no channel
    passes 255.5; RGB = Y_f + gain * (the visible pixel's offsets from its luma)."""
    y_f = fused.astype(np.float64)
    y_v = ycbcr[..., 0].astype(np.float64)
    lift = np.maximum(DARK_LUMA - y_v, 0)
    gain = np.minimum(y_f + lift, 255) / (y_v + lift)
    offsets = spec_offsets(ycbcr, 128)
    spread = np.maximum(offsets.max(axis=-1), 0.5)
    gain = np.minimum(gain, (255.5 - y_f) / spread)
    return np.clip(y_f[..., None] + gain[..., None] * offsets, 0, 255)


def test_preserve_saturation_is_the_documented_formula_in_every_order_and_layout():
    rgb = random_rgb(61, 67, seed=26)
    _, ycbcr = luma_chroma(rgb)
    fused = random_rgb(61, 67, seed=27)[..., 0]
    expected = spec_preserve_saturation(fused, ycbcr)
    out = compose_rgb(fused, ycbcr)
    # rounded once, from float32 arithmetic
    assert np.abs(out - expected).max() <= 0.5 + 1e-3
    np.testing.assert_array_equal(compose_rgb(fused, ycbcr, 'bgr'), out[..., ::-1])
    # views (a crop of a larger frame, every other column) are read as their values
    big, big_fused = np.zeros((80, 140, 3), np.uint8), np.zeros((80, 140), np.uint8)
    big[5:66, 3:137:2], big_fused[5:66, 3:137:2] = ycbcr, fused
    np.testing.assert_array_equal(
        compose_rgb(big_fused[5:66, 3:137:2], big[5:66, 3:137:2]), out)
    # float luma in [0, 1] is rounded to the same counts; NaN counts as 0 and infinities
    # saturate (the frame step refuses such output before; this keeps the kernel defined)
    luma = fused / np.float32(255)
    np.testing.assert_array_equal(compose_rgb(luma, ycbcr), out)
    np.testing.assert_array_equal(compose_rgb(luma.astype(np.float64), ycbcr), out)
    luma[:3], fused[:3] = np.nan, 0
    luma[3:6], fused[3:6] = np.inf, 255
    luma[6:9], fused[6:9] = -np.inf, 0
    np.testing.assert_array_equal(compose_rgb(luma, ycbcr), compose_rgb(fused, ycbcr))


def test_prepare_compose_readies_each_mode_and_refuses_others():
    for mode in COLOR_MODES:
        prepare_compose(mode)
    with pytest.raises(ValueError, match='unknown colour mode'):
        prepare_compose('hsv')


def test_without_a_writable_cache_the_kernel_is_compiled_and_says_so(monkeypatch, caplog):
    """A read-only install without a writable ~/.cache: numba finds no cache locator
    (RuntimeError from njit(cache=True)); the colour step still works."""
    from numba.core import caching

    from occo_ros.core import color

    # the class holding numba's cache locators (CacheImpl from numba 0.59, _CacheImpl before)
    impl = getattr(caching, 'CacheImpl', None) or caching._CacheImpl
    monkeypatch.setattr(impl, '_locator_classes', [])
    monkeypatch.setattr(color, '_KERNEL', None)
    rgb = random_rgb(seed=28)
    _, ycbcr = luma_chroma(rgb)
    fused = random_rgb(seed=29)[..., 0]
    with caplog.at_level('WARNING', logger='occo_ros.core.color'):
        out = compose_rgb(fused, ycbcr)
    assert 'NUMBA_CACHE_DIR' in caplog.text
    assert np.abs(out - spec_preserve_saturation(fused, ycbcr)).max() <= 0.5 + 1e-3
