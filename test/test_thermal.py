"""Thermal normalisation to [0, 1] (occo_ros.core.thermal)."""

import warnings

import numpy as np
import pytest

from occo_ros.core.thermal import MODES, ThermalNormalizer, normalize_thermal

pytestmark = [pytest.mark.core]


@pytest.fixture(autouse=True)
def no_numpy_warnings():
    """Division by zero or NaN comparisons must not even warn."""
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        yield


def scene(height=64, width=80, base=7000, span=1500, noise=20.0, seed=0):
    """A smooth uint16 'thermal' scene with sensor noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    values = base + span * np.sin(xx / 9.0) * np.cos(yy / 7.0) + rng.normal(0, noise, xx.shape)
    return values.astype(np.uint16)


def test_normalize_thermal_by_hand():
    image = np.array([[100, 150, 200], [250, 50, 175]], np.uint16)
    out = normalize_thermal(image, 100, 200)
    np.testing.assert_allclose(out, [[0.0, 0.5, 1.0], [1.0, 0.0, 0.75]], atol=1e-6)
    assert out.dtype == np.float32 and out.flags.c_contiguous


@pytest.mark.parametrize('dtype', [np.uint8, np.uint16, np.float32, np.float64])
def test_normalize_thermal_every_dtype(dtype):
    image = np.array([[10, 20], [30, 40]], dtype)
    np.testing.assert_allclose(normalize_thermal(image, 20, 40), [[0, 0], [0.5, 1]], atol=1e-6)


def test_normalize_thermal_reads_strided_views():
    image = scene()
    padded = np.zeros((64, 96), np.uint16)
    padded[:, :80] = image
    view = padded[:, :80]
    np.testing.assert_array_equal(normalize_thermal(view, 6000, 9000),
                                  normalize_thermal(image, 6000, 9000))


def test_equal_bounds_are_a_step_not_a_division_by_zero():
    image = np.array([[5, 6, 7]], np.uint16)
    np.testing.assert_array_equal(normalize_thermal(image, 6, 6), [[0, 0, 1]])


@pytest.mark.parametrize('lo, hi', [(10, 5), (float('nan'), 5), (0, float('inf'))])
def test_normalize_thermal_rejects_bad_bounds(lo, hi):
    with pytest.raises(ValueError, match='finite lo <= hi'):
        normalize_thermal(np.zeros((2, 2), np.uint16), lo, hi)


def test_fixed_mode_uses_given_range():
    normalizer = ThermalNormalizer('fixed', lo=1000, hi=3000)
    out = normalizer(np.array([[500, 1000, 2000, 3000, 4000]], np.uint16))
    np.testing.assert_allclose(out, [[0, 0, 0.5, 1, 1]], atol=1e-6)
    assert normalizer.range == (1000, 3000)


def test_fixed_mode_defaults_to_the_integer_range():
    out8 = ThermalNormalizer('fixed')(np.array([[0, 51, 255]], np.uint8))
    np.testing.assert_allclose(out8, [[0, 0.2, 1]], atol=1e-6)
    normalizer = ThermalNormalizer('fixed')
    out16 = normalizer(np.array([[0, 13107, 65535]], np.uint16))
    np.testing.assert_allclose(out16, [[0, 0.2, 1]], atol=1e-6)
    assert normalizer.range == (0.0, 65535.0)


def test_fixed_mode_float_needs_bounds():
    with pytest.raises(ValueError, match='needs lo and hi'):
        ThermalNormalizer('fixed')(np.zeros((2, 2), np.float32))


def test_minmax_mode():
    normalizer = ThermalNormalizer('minmax')
    out = normalizer(np.array([[10, 20], [30, 50]], np.uint16))
    np.testing.assert_allclose(out, [[0, 0.25], [0.5, 1]], atol=1e-6)
    assert normalizer.range == (10, 50)


def test_bounds_are_ignored_outside_fixed_mode():
    # one parameter set (thermal_min/max always given) must be able to switch modes
    normalizer = ThermalNormalizer('minmax', lo=0, hi=65535)
    normalizer(np.array([[10, 50]], np.uint16))
    assert normalizer.range == (10, 50)


def test_percentile_mode_by_hand():
    # 0..100: the 10th and 90th percentiles are 10 and 90
    image = np.arange(101, dtype=np.uint16).reshape(1, 101)
    normalizer = ThermalNormalizer('percentile', percentiles=(10, 90))
    out = normalizer(image)
    assert normalizer.range == pytest.approx((10, 90))
    assert out[0, 50] == pytest.approx(0.5)
    assert out[0, 5] == 0 and out[0, 95] == 1


@pytest.mark.parametrize('dtype, low, high', [
    (np.uint16, 7000, 9000), (np.uint16, 0, 65536), (np.uint16, 30000, 30003),
    (np.uint8, 0, 256), (np.uint8, 200, 202),
])
@pytest.mark.parametrize('percentiles', [(1, 99), (0, 100), (2.5, 97.5), (33.3, 33.4)])
def test_histogram_percentiles_equal_numpy(dtype, low, high, percentiles):
    rng = np.random.default_rng(int(low) + int(percentiles[0] * 10))
    image = rng.integers(low, high, (61, 83)).astype(dtype)
    normalizer = ThermalNormalizer('percentile', percentiles=percentiles)
    normalizer(image)
    np.testing.assert_allclose(normalizer.range, np.percentile(image, percentiles), atol=1e-6)


def test_histogram_percentiles_equal_numpy_at_camera_size():
    image = scene(512, 640, seed=3)
    image[:5, :5] = 60000  # a few hot pixels the percentiles must ignore
    normalizer = ThermalNormalizer('percentile')
    normalizer(image)
    np.testing.assert_allclose(normalizer.range, np.percentile(image, (1, 99)), atol=1e-6)
    assert normalizer.range[1] < 9000


def test_float_percentiles_come_from_a_subsample_close_to_numpy():
    rng = np.random.default_rng(4)
    image = rng.normal(30.0, 4.0, (512, 640)).astype(np.float32)
    normalizer = ThermalNormalizer('percentile')
    normalizer(image)
    exact = np.percentile(image, (1, 99))
    # a ~65k-pixel grid: within 1 % of the range (documented), not exact
    np.testing.assert_allclose(normalizer.range, exact, atol=0.01 * (exact[1] - exact[0]))


def test_smoothed_mode_converges_as_an_exponential_average():
    normalizer = ThermalNormalizer('smoothed', percentiles=(0, 100), smoothing=0.2)
    normalizer(np.array([[1000, 2000]], np.uint16))
    target = np.array([[1500, 2500]], np.uint16)  # overlaps: no jump
    for frame in range(1, 31):
        normalizer(target)
        expected_gap = 500 * 0.8 ** frame
        assert normalizer.range == pytest.approx((1500 - expected_gap, 2500 - expected_gap))
    assert normalizer.range == pytest.approx((1500, 2500), abs=1.0)


def test_smoothed_mode_ignores_a_single_outlier_frame():
    normalizer = ThermalNormalizer('smoothed', smoothing=0.1)
    steady = scene(seed=5)
    for _ in range(5):
        normalizer(steady)
    before = normalizer.range
    glitch = normalizer(scene(base=30000, seed=6))  # one frame from another range
    assert normalizer.range == before
    assert glitch.mean() == 1.0  # shown against the steady range: saturated, not rescaled
    normalizer(steady)
    assert normalizer.range == pytest.approx(before, abs=2.0)


def test_smoothed_mode_bounds_the_effect_of_a_hot_object():
    normalizer = ThermalNormalizer('smoothed', percentiles=(0, 100), smoothing=0.1)
    normalizer(np.array([[1000, 2000]], np.uint16))
    normalizer(np.array([[1000, 12000]], np.uint16))  # overlapping, much hotter maximum
    assert normalizer.range == pytest.approx((1000, 3000))


def test_smoothed_mode_restarts_after_a_lasting_jump():
    normalizer = ThermalNormalizer('smoothed', smoothing=0.1, jump_frames=3)
    for _ in range(4):
        normalizer(scene(seed=7))
    old = normalizer.range
    jumped = scene(base=30000, seed=8)
    normalizer(jumped)
    normalizer(jumped)
    assert normalizer.range == old
    normalizer(jumped)
    probe = ThermalNormalizer('percentile')
    probe(jumped)
    assert normalizer.range == pytest.approx(probe.range)


def test_reset_starts_from_the_next_frame():
    normalizer = ThermalNormalizer('smoothed')
    normalizer(scene(seed=9))
    normalizer.reset()
    assert normalizer.range is None
    frame = scene(base=8000, seed=10)
    normalizer(frame)
    probe = ThermalNormalizer('percentile')
    probe(frame)
    assert normalizer.range == probe.range


@pytest.mark.parametrize('mode', ['minmax', 'percentile', 'smoothed'])
def test_nonfinite_values_are_ignored_and_map_to_zero(mode):
    image = np.linspace(20.0, 40.0, 64 * 80, dtype=np.float32).reshape(64, 80)
    image[3, 4] = np.nan
    image[5, 6] = np.inf
    image[7, 8] = -np.inf
    normalizer = ThermalNormalizer(mode, percentiles=(0, 100))
    out = normalizer(image)
    assert normalizer.range == pytest.approx((20.0, 40.0))
    assert out[3, 4] == 0 and out[5, 6] == 0 and out[7, 8] == 0
    assert np.isfinite(out).all() and out.max() == 1.0


def test_sparse_finite_values_are_found_beyond_the_subsample():
    image = np.full((600, 600), np.nan, np.float32)
    image[1, 1], image[2, 2] = 10.0, 30.0  # not on the statistics grid
    normalizer = ThermalNormalizer('percentile', percentiles=(0, 100))
    out = normalizer(image)
    assert normalizer.range == (10.0, 30.0)
    assert out[2, 2] == 1.0 and out.sum() == 1.0


@pytest.mark.parametrize('mode', MODES)
def test_all_nan_image_gives_zeros(mode):
    image = np.full((8, 8), np.nan, np.float32)
    out = ThermalNormalizer(mode, lo=0.0, hi=1.0)(image)
    np.testing.assert_array_equal(out, 0.0)


@pytest.mark.parametrize('mode', MODES)
@pytest.mark.parametrize('dtype', [np.uint8, np.uint16, np.float32])
def test_flat_image_does_not_divide_by_zero(mode, dtype):
    image = np.full((16, 16), 100, dtype)
    lo, hi = (0, 200) if mode == 'fixed' else (None, None)
    out = ThermalNormalizer(mode, lo=lo, hi=hi)(image)
    assert np.isfinite(out).all()
    expected = 0.5 if mode == 'fixed' else 0.0
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_update_then_normalize_another_image():
    raw = scene(seed=11)
    warped = raw.copy()
    warped[:, :10] = 0  # a registration border must not drag the range down
    normalizer = ThermalNormalizer('minmax')
    lo, hi = normalizer.update(raw)
    assert (lo, hi) == (raw.min(), raw.max())
    out = normalize_thermal(warped, lo, hi)
    np.testing.assert_array_equal(out[:, 10:], normalize_thermal(raw, lo, hi)[:, 10:])
    assert (out[:, :10] == 0).all()


def test_single_channel_axis_is_accepted():
    image = scene()
    np.testing.assert_array_equal(normalize_thermal(image[:, :, None], 6000, 9000),
                                  normalize_thermal(image, 6000, 9000))


@pytest.mark.parametrize('kwargs, words', [
    ({'mode': 'auto'}, ["'auto'", 'fixed, minmax, percentile, smoothed']),
    ({'mode': 'fixed', 'lo': 5}, ['both lo and hi']),
    ({'mode': 'fixed', 'lo': 5, 'hi': 5}, ['lo < hi']),
    ({'mode': 'percentile', 'percentiles': (99, 1)}, ['0 <= low < high <= 100']),
    ({'mode': 'percentile', 'percentiles': (-1, 50)}, ['0 <= low < high <= 100']),
    ({'mode': 'smoothed', 'smoothing': 0.0}, ['smoothing=0.0', '(0, 1]']),
    ({'mode': 'smoothed', 'smoothing': 1.5}, ['smoothing=1.5']),
    ({'mode': 'smoothed', 'jump_frames': 0}, ['jump_frames=0']),
])
def test_invalid_settings_raise(kwargs, words):
    with pytest.raises(ValueError) as info:
        ThermalNormalizer(**kwargs)
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize('image, words', [
    (np.zeros((4, 4, 3), np.uint16), ['(H, W)', '(4, 4, 3)']),
    (np.zeros((4, 4), np.int32), ['int32']),
    (np.zeros((0, 4), np.uint16), ['empty']),
])
def test_invalid_images_raise(image, words):
    with pytest.raises(ValueError) as info:
        ThermalNormalizer('minmax')(image)
    for word in words:
        assert word in str(info.value)
