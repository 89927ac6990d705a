"""Fusion metrics (training.metrics) against hand-computed values and exact identities."""

import math

import numpy as np
import pytest

from training import metrics
from training.metrics import (
    LEGACY_DEVIATIONS,
    METRICS,
    average_gradient,
    correlation,
    entropy,
    evaluate_fusion,
    ms_ssim,
    ms_ssim_scales,
    mse,
    mutual_information,
    nabf,
    psnr,
    qabf,
    scd,
    spatial_frequency,
    ssim,
    standard_deviation,
    vif,
)

pytestmark = [pytest.mark.core]

SIZE = (48, 56)          # >= 41, the smallest size the 4-scale VIF accepts


def textured(seed: int, shape=SIZE, levels: int = 256) -> np.ndarray:
    """Smooth random structure plus noise: a uint8 image with edges of every orientation."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:shape[0], 0:shape[1]]
    base = 100 + 60 * np.sin(x / (3 + seed)) * np.cos(y / (4 + seed)) + rng.normal(0, 12, shape)
    return np.clip(base * levels / 256, 0, levels - 1).round().astype(np.uint8)


@pytest.fixture(scope='module')
def images():
    return textured(1), textured(2), textured(3)


def test_constant_image_has_no_information_contrast_or_detail():
    flat = np.full(SIZE, 93, np.uint8)
    assert entropy(flat) == 0.0
    assert standard_deviation(flat) == 0.0
    assert standard_deviation(flat, legacy=True) == 0.0
    assert spatial_frequency(flat) == 0.0
    assert average_gradient(flat) == 0.0


def test_entropy_in_bits():
    assert entropy(np.array([[0, 0, 7, 7]], np.uint8)) == pytest.approx(1.0)
    assert entropy(np.array([[1, 2, 3, 4], [4, 3, 2, 1]], np.uint8)) == pytest.approx(2.0)


def test_standard_deviation_population_and_legacy_saturation():
    # values 0 and 2: mean 1, population SD 1.
    half = np.array([[0, 2], [2, 0]], np.uint8)
    assert standard_deviation(half) == pytest.approx(1.0)
    # legacy: uint8(F - 1) clips -1 to 0, so the squares are 0, 1 -> sqrt(1/2).
    assert standard_deviation(half, legacy=True) == pytest.approx(math.sqrt(0.5))
    # values 0 and 100: deviations -50 -> 0 and 50 -> 50, whose square saturates at 255.
    wide = np.array([[0, 100]], np.uint8)
    assert standard_deviation(wide) == pytest.approx(50.0)
    assert standard_deviation(wide, legacy=True) == pytest.approx(math.sqrt(255 / 2))


def test_spatial_frequency_and_average_gradient_by_hand():
    # 2x2: horizontal differences 3, 0 -> RF² = 9/2; vertical 4, 1 -> CF² = 17/2.
    f = np.array([[0, 3], [4, 4]], np.uint8)
    assert spatial_frequency(f) == pytest.approx(math.sqrt(13.0))
    assert spatial_frequency(f, legacy=True) == pytest.approx(math.sqrt(13.0) / 255)
    # One-sided differences everywhere: (Gx, Gy) = (3, 4), (3, 1), (0, 4), (0, 1).
    expected = (math.sqrt(12.5) + math.sqrt(5) + math.sqrt(8) + math.sqrt(0.5)) / 1
    assert average_gradient(f) == pytest.approx(expected)
    # 3x3 ramp 0, 1, 4: Gx = 1 (one-sided), 2 (central (4-0)/2), 3 (one-sided); Gy = 0.
    ramp = np.array([[0, 1, 4]] * 3, np.uint8)
    assert average_gradient(ramp) == pytest.approx(3 * (1 + 2 + 3) / math.sqrt(2) / 4)
    assert spatial_frequency(ramp) == pytest.approx(math.sqrt((1 + 9) / 2))


def _mi_by_definition(x: np.ndarray, y: np.ndarray) -> float:
    """I(X;Y) = sum p(x,y) log2(p(x,y) / (p(x) p(y))), the KL form (not entropies)."""
    joint = np.zeros((256, 256))
    np.add.at(joint, (x.ravel(), y.ravel()), 1)
    joint /= joint.sum()
    px, py = joint.sum(1), joint.sum(0)
    nz = joint > 0
    return float((joint[nz] * np.log2(joint[nz] / np.outer(px, py)[nz])).sum())


def test_mutual_information_of_fused_equal_to_a_source(images):
    a, b, _ = images
    # F = A: I(A;A) = H(A), so MI = H(A) + I(B;A).
    expected = entropy(a) + _mi_by_definition(b, a)
    assert mutual_information(a, b, a) == pytest.approx(expected, abs=1e-9)
    f = textured(4)
    assert mutual_information(a, b, f) == pytest.approx(
        _mi_by_definition(a, f) + _mi_by_definition(b, f), abs=1e-9)


def test_legacy_mutual_information_merges_254_and_255_in_the_joint_only():
    a = np.array([[254, 255] * 4] * 8, np.uint8)
    b = np.zeros_like(a)
    # canonical: I(A;A) = H(A) = 1 bit; I(B;A) = 0.
    assert mutual_information(a, b, a) == pytest.approx(1.0)
    # legacy: both joint histograms collapse to one cell (joint entropy 0) while the
    # marginal H(A) stays 1 bit: I(A;A) = 1 + 1 - 0 = 2, I(B;A) = 0 + 1 - 0 = 1.
    assert mutual_information(a, b, a, legacy=True) == pytest.approx(3.0)


def test_scd_is_pearson_based_and_invariant_to_scale_and_inversion(images):
    a, b, f = (x // 2 for x in images)                  # values <= 127, so x2 stays uint8

    def r(x, y):
        return np.corrcoef(x.ravel().astype(float), y.ravel().astype(float))[0, 1]

    af, bf, ff = (x.astype(float) for x in (a, b, f))
    expected = r(ff - bf, af) + r(ff - af, bf)
    assert scd(a, b, f) == pytest.approx(expected, abs=1e-12)
    assert scd(a * 2, b * 2, f * 2) == pytest.approx(expected, abs=1e-12)
    assert scd(255 - a, 255 - b, 255 - f) == pytest.approx(expected, abs=1e-12)
    assert correlation(a, b, f) == pytest.approx((r(af, ff) + r(bf, ff)) / 2, abs=1e-12)
    assert math.isnan(scd(a, np.zeros_like(a), f))     # constant B: r undefined


def test_psnr_for_a_known_mse_and_the_legacy_offset():
    a = np.zeros(SIZE, np.uint8)
    f = np.full(SIZE, 10, np.uint8)
    assert mse(a, a, f) == pytest.approx(100.0)
    assert psnr(a, a, f) == pytest.approx(10 * math.log10(255 ** 2 / 100))
    assert mse(a, a, f, legacy=True) == pytest.approx(100 / 255 ** 2)
    assert psnr(a, a, a) == math.inf


def test_legacy_psnr_is_canonical_plus_48_13_db(images):
    a, b, f = images
    assert psnr(a, b, f, legacy=True) - psnr(a, b, f) == pytest.approx(
        20 * math.log10(255), abs=1e-9)
    assert 20 * math.log10(255) == pytest.approx(48.13, abs=0.005)


def test_ssim_of_a_source_with_itself_is_one(images):
    a, b, _ = images
    assert ssim(a, a, a) == pytest.approx(2.0)
    # F = A: SSIM(A,A) = 1, plus SSIM(B,A), which ssim(B, B, A) gives twice.
    assert ssim(a, b, a) == pytest.approx(1.0 + ssim(b, b, a) / 2)
    assert ssim(a, b, a) < 2.0


def test_evaluate_fusion_takes_ssim_from_the_first_ms_ssim_scale(images):
    scores = evaluate_fusion(*images)
    assert scores['SSIM'] == pytest.approx(ssim(*images), abs=1e-14)
    assert scores['MS-SSIM'] == pytest.approx(ms_ssim(*images), abs=1e-14)


def test_ms_ssim_of_identical_images_is_two_and_scales_shrink_for_small_images(images):
    a, b, f = images
    assert ms_ssim(a, a, a) == pytest.approx(2.0)
    assert 0.0 < ms_ssim(a, b, f) < 2.0
    assert ms_ssim_scales(480, 640) == 5
    assert ms_ssim_scales(176, 200) == 5
    assert ms_ssim_scales(175, 200) == 4         # 175 / 16 < 11: only 4 scales fit
    assert ms_ssim_scales(41, 41) == 2


def test_vif_of_a_source_with_itself_is_one(images):
    a, b, _ = images
    assert vif(a, a, a) == pytest.approx(2.0)
    assert vif(a, b, a) == pytest.approx(1.0 + vif(b, b, a) / 2)
    noisy = np.clip(a + np.random.default_rng(0).normal(0, 20, SIZE), 0, 255).astype(np.uint8)
    assert vif(a, a, noisy) < 2.0


def test_legacy_vif_saturation_only_matters_above_255(images):
    small = [x // 17 for x in images]             # values <= 15: products never exceed 255
    assert vif(*small, legacy=True) == pytest.approx(vif(*small), abs=1e-12)
    assert vif(*images, legacy=True) != pytest.approx(vif(*images), abs=1e-3)


def test_qabf_of_identical_images_and_range(images):
    a, b, f = images
    edges = np.kron(np.indices((6, 7)).sum(0) % 2 * 200 + 20, np.ones((8, 8))).astype(np.uint8)
    # F = A = B: the orientation term is at A = 1; g_A == g_F makes G = g_F (the shared
    # quirk), and every edge has g >= 20 here, so Q_g = Gamma_g (G = 1 would give 0.99885).
    expected = 0.9994 * 0.9879 / (1 + math.exp(-22 * (1 - 0.8)))
    assert qabf(edges, edges, edges) == pytest.approx(expected, abs=1e-9)
    assert 0.0 <= qabf(a, b, f) <= 1.0
    assert qabf(a, b, a) > qabf(a, b, np.full(SIZE, 128, np.uint8))


def test_nabf_zero_without_artefacts_and_positive_with_them(images):
    a, b, _ = images
    assert nabf(a, a, a) == 0.0
    noisy = np.clip(a + np.random.default_rng(0).normal(0, 40, SIZE), 0, 255).astype(np.uint8)
    value = nabf(a, b, noisy)
    assert 0.0 < value <= 1.0
    assert value > nabf(a, b, ((a.astype(int) + b) // 2).astype(np.uint8))


def test_evaluate_fusion_returns_every_metric_and_legacy_changes_only_listed_ones(images):
    a, b, f = (x.copy() for x in images)
    a[:2], a[2:4], f[:4, ::2], f[:4, 1::2] = 255, 254, 255, 254   # merged by legacy MI
    canonical = evaluate_fusion(a, b, f)
    legacy = evaluate_fusion(a, b, f, legacy=True)
    assert list(canonical) == list(METRICS)
    assert all(np.isfinite(v) for v in canonical.values())
    for name in METRICS:
        if name in LEGACY_DEVIATIONS:
            assert legacy[name] != pytest.approx(canonical[name]), name
        else:
            assert legacy[name] == canonical[name], name


def test_bad_inputs_are_named():
    good = textured(1)
    with pytest.raises(ValueError, match='fused: expected a uint8 HxW gray image, got float32'):
        evaluate_fusion(good, good, good.astype(np.float32))
    with pytest.raises(ValueError, match=r'sizes differ: ir \(48, 56\), vi \(48, 56\), fused'):
        evaluate_fusion(good, good, good[:, :50])
    with pytest.raises(ValueError, match='at least 41x41'):
        evaluate_fusion(good[:40], good[:40], good[:40])
    with pytest.raises(TypeError, match='ir: expected a numpy array'):
        metrics.qabf([[0]], good, good)


# --- colour of the fused image (issue 21) ----------------------------------------------------


def colour_scene():
    """Dark coloured visible image, infrared bright on its left half (the lifted pixels)."""
    rng = np.random.default_rng(30)
    vi = rng.integers(10, 60, SIZE + (3,), dtype=np.uint8)
    ir = np.zeros(SIZE, np.uint8)
    ir[:, :SIZE[1] // 2] = 200
    return ir, vi


def test_color_stats_of_the_visible_image_itself():
    ir, vi = colour_scene()
    stats = metrics.color_stats(ir, vi, vi)
    assert stats['lifted_px'] == SIZE[0] * SIZE[1] // 2
    assert stats['sat_fused_sum'] == pytest.approx(stats['sat_vi_sum'])
    summary = metrics.color_summary([stats, stats])
    assert summary['sat_ratio'] == pytest.approx(1.0)
    assert summary['sat_ratio_lit'] == pytest.approx(1.0)
    assert 0.0 < summary['lit_share'] < 1.0      # visible luma 10..60 around DARK_LUMA
    assert summary['hue_shift_deg'] == 0.0
    assert summary['colorfulness_fused'] == summary['colorfulness_vi'] > 0


def test_color_stats_of_a_gray_and_a_hue_rotated_image():
    ir, vi = colour_scene()
    gray = np.repeat(vi.mean(axis=2, keepdims=True).astype(np.uint8), 3, axis=2)
    summary = metrics.color_summary([metrics.color_stats(ir, vi, gray)])
    assert summary['sat_ratio'] == 0.0
    assert metrics.colorfulness(gray) == 0.0
    # R, G, B -> G, B, R turns every hue by 120 degrees
    summary = metrics.color_summary([metrics.color_stats(ir, vi, vi[..., [1, 2, 0]])])
    assert summary['hue_shift_deg'] == pytest.approx(120.0, abs=0.01)
    assert summary['sat_ratio'] == pytest.approx(1.0)


def test_colorfulness_is_hasler_suesstrunk():
    image = np.zeros((2, 2, 3), np.uint8)
    image[0, :, 0] = 200                  # two red pixels, two black
    rg, yb = np.array([200, 200, 0, 0.0]), np.array([100, 100, 0, 0.0])
    expected = math.hypot(rg.std(), yb.std()) + 0.3 * math.hypot(rg.mean(), yb.mean())
    assert metrics.colorfulness(image) == pytest.approx(expected)


def test_no_lifted_pixel_gives_nan_not_an_error():
    _, vi = colour_scene()
    summary = metrics.color_summary([metrics.color_stats(np.zeros(SIZE, np.uint8), vi, vi)])
    assert summary['lifted_px'] == 0 and math.isnan(summary['sat_ratio'])
