"""Infrared-visible fusion quality metrics, as defined in shared/docs/FUSION_METRICS.md.

A = infrared source, B = visible luminance, F = fused luminance: uint8 HxW gray images of one
size (at least 41x41, the smallest size the 4-scale VIF accepts). Every metric is computed in
float64 on 0-255 values with the canonical conventions of FUSION_METRICS.md §2.3; the list,
each metric's direction and its convention (the text occo-eval prints under its tables) are
in :data:`METRICS`. MI, VIF, SCD, SSIM and MS-SSIM add the two sources' terms (SSIM and
MS-SSIM max 2); CC and MSE average them.

``legacy=True`` reproduces the TANG-legacy MATLAB toolkit (SeAFusion/PIAFusion-era tables)
where FUSION_METRICS.md documents how it differs; every deviation is listed in
:data:`LEGACY_DEVIATIONS`. Metrics not listed there are identical in both modes;
:data:`LEGACY_NOTES` says where such a canonical value still differs from TANG-legacy tables.

Undefined values are NaN, not errors: a Pearson r with a constant image (SCD, CC), VIF of a
flat source, Qabf when no image has any gradient. PSNR is inf when F equals both sources.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import cv2
import numpy as np

MIN_SIDE = 41                     # 4-scale VIFp: 17-px window, then 9, 5, 3 after decimations
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
SSIM_WINDOW, SSIM_SIGMA, SSIM_K1, SSIM_K2, DATA_RANGE = 11, 1.5, 0.01, 0.03, 255.0
VIF_NOISE_VAR = 2.0               # sigma_n², in 0-255 units
VIF_EPS = 1e-10                   # LIVE vifp_mscale clean-up threshold
QABF_SX_EPS = 1e-9                # Sobel responses are integers on 0-255 data: |s_x| < eps is 0
SOBEL_X = np.array([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
SOBEL_Y = np.array([[1.0, 2.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -2.0, -1.0]])


@dataclass(frozen=True)
class MetricInfo:
    """How to read one metric: direction and the convention printed under result tables."""

    higher_is_better: bool
    convention: str


METRICS: dict[str, MetricInfo] = {
    'EN': MetricInfo(True, 'entropy of F in bits, 256 bins'),
    'SD': MetricInfo(True, 'population standard deviation of F, 0-255'),
    'SF': MetricInfo(True, 'spatial frequency, mean-based denominators, 0-255'),
    'AG': MetricInfo(True, 'average gradient, np.gradient differences, /((H-1)(W-1)), 0-255'),
    'MI': MetricInfo(True, 'I(A;F) + I(B;F) in bits, 256-bin histograms, no stretching'),
    'SCD': MetricInfo(True, 'r(F-B, A) + r(F-A, B), Pearson'),
    'CC': MetricInfo(True, '(r(A,F) + r(B,F)) / 2, Pearson'),
    'VIF': MetricInfo(True, 'sum over sources of LIVE vifp_mscale, sigma_n² = 2 on 0-255'),
    'Qabf': MetricInfo(True, 'Xydeas-Petrović Q^AB/F, zero-padded Sobel, 0-255'),
    'Nabf': MetricInfo(False, 'Shreyamsha Kumar N^AB/F, Sobel/8, periodic border, T_d = 2, '
                              '0-255'),
    'SSIM': MetricInfo(True, 'SSIM(A,F) + SSIM(B,F) (sum, max 2), Wang 11x11 Gaussian '
                             'sigma 1.5, valid region, L = 255'),
    'MS-SSIM': MetricInfo(True, 'sum over sources (max 2) of Wang MS-SSIM, 5 scales (fewer '
                                'below 176 px), negative terms clamped to 0'),
    'MSE': MetricInfo(False, '(MSE(A,F) + MSE(B,F)) / 2 on 0-255'),
    'PSNR': MetricInfo(True, '10 log10(255² / MSE) dB'),
}

LEGACY_DEVIATIONS: dict[str, str] = {
    'SD': 'TANG-legacy: deviations computed in uint8 (rounded, negatives clipped to 0) and '
          'squares clipped at 255; not a true SD',
    'SF': 'TANG-legacy: computed on [0,1] data (= canonical SF / 255)',
    'MI': 'TANG-legacy: gray levels 254 and 255 merged in the joint histograms',
    'VIF': 'TANG-legacy: scale-1 products ref·ref, dist·dist, ref·dist saturated at 255',
    'Nabf': 'TANG-legacy: computed on [0,1] data (no gradient reaches T_d = 2)',
    'MSE': 'TANG-legacy: computed on [0,1] data (= canonical MSE / 255²)',
    'PSNR': 'TANG-legacy: 20 log10(255 / sqrt(MSE on [0,1])) = canonical PSNR + 48.13 dB',
}

# Metrics that stay canonical under legacy=True although TANG-legacy tables differ.
LEGACY_NOTES: dict[str, str] = {
    'Qabf': 'TANG-legacy ran it on [0,1] floats: per-image differences up to ~0.01, means '
            'within 1e-3',
    'SSIM': "TANG-legacy's SSIM column is MEF-SSIM, a different metric: not comparable",
    'MS-SSIM': "TANG's MS_SSIM is a 3-scale MEF-SSIM, a different metric: not comparable",
}


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Float HxW image in [0, 1] -> uint8, clamped and rounded half up: how every fused
    image is quantised before it is scored or saved (the inverse of training.data.to_tensor's
    scaling; here so that scoring needs no torch)."""
    return np.floor(np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _check_gray(name: str, image: np.ndarray) -> None:
    """Raise unless ``image`` is a uint8 HxW array."""
    if not isinstance(image, np.ndarray):
        raise TypeError(f'{name}: expected a numpy array, got {type(image).__name__}')
    if image.dtype != np.uint8 or image.ndim != 2:
        raise ValueError(f'{name}: expected a uint8 HxW gray image, got {image.dtype} '
                         f'with shape {image.shape}')


def _check_sources(ir: np.ndarray, vi: np.ndarray, fused: np.ndarray) -> None:
    """Raise unless the three images are uint8 HxW of one size, large enough for VIF."""
    for name, image in (('ir', ir), ('vi', vi), ('fused', fused)):
        _check_gray(name, image)
    if not ir.shape == vi.shape == fused.shape:
        raise ValueError(f'image sizes differ: ir {ir.shape}, vi {vi.shape}, '
                         f'fused {fused.shape}; all three must have one size')
    if min(ir.shape) < MIN_SIDE:
        raise ValueError(f'images of {ir.shape} are too small: the 4-scale VIF needs at least '
                         f'{MIN_SIDE}x{MIN_SIDE} pixels')


# --- filtering helpers -------------------------------------------------------------------


@cache
def _gaussian_1d(size: int, sigma: float) -> np.ndarray:
    """Normalised 1-D Gaussian; its outer product is MATLAB fspecial('gaussian', size, sigma)."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    kernel = np.exp(-x * x / (2.0 * sigma * sigma))
    kernel /= kernel.sum()
    kernel.flags.writeable = False              # shared by every caller through the cache
    return kernel


def _filter_valid(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Separable correlation with a symmetric odd 1-D kernel, 'valid' region only."""
    r = kernel.size // 2
    full = cv2.sepFilter2D(image, cv2.CV_64F, kernel, kernel, borderType=cv2.BORDER_REFLECT)
    return full[r:full.shape[0] - r, r:full.shape[1] - r]


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation over all pixels (MATLAB corr2); NaN when one input is constant."""
    dx = x - x.mean()
    dy = y - y.mean()
    denominator = np.sqrt((dx * dx).sum() * (dy * dy).sum())
    return float((dx * dy).sum() / denominator) if denominator > 0 else float('nan')


# --- single-image metrics of F -------------------------------------------------------------


def _entropy_bits(counts: np.ndarray) -> float:
    """Shannon entropy in bits of a histogram of counts."""
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum())


def entropy(fused: np.ndarray) -> float:
    """EN: entropy of the 256-bin histogram of uint8 ``fused``, in bits (0-8)."""
    _check_gray('fused', fused)
    return _entropy_bits(np.bincount(fused.ravel(), minlength=256))


def standard_deviation(fused: np.ndarray, legacy: bool = False) -> float:
    """SD of uint8 ``fused`` in gray levels (population form; see LEGACY_DEVIATIONS)."""
    _check_gray('fused', fused)
    f = fused.astype(np.float64)
    if not legacy:
        return float(f.std())
    # MATLAB uint8 - double -> uint8: round half away from zero, saturate to 0..255; the
    # square of a uint8 saturates at 255 as well.
    deviation = np.clip(np.floor(f - f.mean() + 0.5), 0, 255)
    return float(np.sqrt(np.minimum(deviation * deviation, 255).mean()))


def _spatial_frequency(f: np.ndarray) -> float:
    rf2 = np.mean(np.diff(f, axis=1) ** 2)
    cf2 = np.mean(np.diff(f, axis=0) ** 2)
    return float(np.sqrt(rf2 + cf2))


def spatial_frequency(fused: np.ndarray, legacy: bool = False) -> float:
    """SF of uint8 ``fused``: 0-255 units (legacy: on [0,1] data)."""
    _check_gray('fused', fused)
    scale = 255.0 if legacy else 1.0
    return _spatial_frequency(fused.astype(np.float64) / scale)


def average_gradient(fused: np.ndarray) -> float:
    """AG of uint8 ``fused``: sum of sqrt((Gx² + Gy²)/2) over (H-1)(W-1), 0-255 units."""
    _check_gray('fused', fused)
    gy, gx = np.gradient(fused.astype(np.float64))
    g = np.sqrt((gx * gx + gy * gy) / 2.0)
    h, w = fused.shape
    return float(g.sum() / ((h - 1) * (w - 1)))


# --- two-image building blocks -------------------------------------------------------------


def _mutual_information(x: np.ndarray, f: np.ndarray, f_counts: np.ndarray,
                        legacy: bool) -> float:
    """I(X;F) in bits from uint8 images; legacy merges levels 254/255 in the joint only."""
    x_joint, f_joint = x.ravel(), f.ravel()
    if legacy:
        x_joint = np.minimum(x_joint, 254)
        f_joint = np.minimum(f_joint, 254)
    joint = np.bincount(x_joint.astype(np.intp) * 256 + f_joint, minlength=65536)
    h_x = _entropy_bits(np.bincount(x.ravel(), minlength=256))
    return h_x + _entropy_bits(f_counts) - _entropy_bits(joint)


def mutual_information(ir: np.ndarray, vi: np.ndarray, fused: np.ndarray,
                       legacy: bool = False) -> float:
    """MI = I(A;F) + I(B;F) in bits, 256-bin histograms of the uint8 images."""
    _check_gray('ir', ir)
    _check_gray('vi', vi)
    _check_gray('fused', fused)
    f_counts = np.bincount(fused.ravel(), minlength=256)
    return (_mutual_information(ir, fused, f_counts, legacy)
            + _mutual_information(vi, fused, f_counts, legacy))


def _vifp(ref: np.ndarray, dist: np.ndarray, saturate_products: bool = False) -> float:
    """LIVE vifp_mscale of float64 0-255 images; ``saturate_products``: TANG-legacy bug."""
    num = den = 0.0
    for scale in range(1, 5):
        size = 2 ** (5 - scale) + 1
        kernel = _gaussian_1d(size, size / 5.0)
        if scale > 1:
            ref = _filter_valid(ref, kernel)[::2, ::2]
            dist = _filter_valid(dist, kernel)[::2, ::2]
        rr, dd, rd = ref * ref, dist * dist, ref * dist
        if saturate_products and scale == 1:
            # uint8 * uint8 in MATLAB saturates at 255 before the filtering.
            rr, dd, rd = (np.minimum(p, 255.0) for p in (rr, dd, rd))
        mu_r = _filter_valid(ref, kernel)
        mu_d = _filter_valid(dist, kernel)
        var_r = np.maximum(_filter_valid(rr, kernel) - mu_r * mu_r, 0.0)
        var_d = np.maximum(_filter_valid(dd, kernel) - mu_d * mu_d, 0.0)
        cov = _filter_valid(rd, kernel) - mu_r * mu_d

        g = cov / (var_r + VIF_EPS)
        sv = var_d - g * cov
        # LIVE clean-ups, in the reference order.
        flat_ref = var_r < VIF_EPS
        g[flat_ref] = 0.0
        sv[flat_ref] = var_d[flat_ref]
        var_r[flat_ref] = 0.0
        flat_dist = var_d < VIF_EPS
        g[flat_dist] = 0.0
        sv[flat_dist] = 0.0
        negative = g < 0
        sv[negative] = var_d[negative]
        g[negative] = 0.0
        sv[sv <= VIF_EPS] = VIF_EPS

        num += np.log10(1.0 + g * g * var_r / (sv + VIF_NOISE_VAR)).sum()
        den += np.log10(1.0 + var_r / VIF_NOISE_VAR).sum()
    return float(num / den) if den > 0 else float('nan')


def vif(ir: np.ndarray, vi: np.ndarray, fused: np.ndarray, legacy: bool = False) -> float:
    """Fusion VIF = VIFp(A,F) + VIFp(B,F) (sources are the references)."""
    _check_sources(ir, vi, fused)
    f = fused.astype(np.float64)
    return (_vifp(ir.astype(np.float64), f, legacy)
            + _vifp(vi.astype(np.float64), f, legacy))


def _ssim_maps(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Luminance and contrast-structure maps of Wang's SSIM ('valid', population moments)."""
    kernel = _gaussian_1d(SSIM_WINDOW, SSIM_SIGMA)
    c1 = (SSIM_K1 * DATA_RANGE) ** 2
    c2 = (SSIM_K2 * DATA_RANGE) ** 2
    mu_x = _filter_valid(x, kernel)
    mu_y = _filter_valid(y, kernel)
    mu_xx, mu_yy, mu_xy = mu_x * mu_x, mu_y * mu_y, mu_x * mu_y
    var_x = _filter_valid(x * x, kernel) - mu_xx
    var_y = _filter_valid(y * y, kernel) - mu_yy
    cov = _filter_valid(x * y, kernel) - mu_xy
    luminance = (2.0 * mu_xy + c1) / (mu_xx + mu_yy + c1)
    contrast_structure = (2.0 * cov + c2) / (var_x + var_y + c2)
    return luminance, contrast_structure


def _ssim(x: np.ndarray, f: np.ndarray) -> float:
    luminance, contrast_structure = _ssim_maps(x, f)
    return float(np.mean(luminance * contrast_structure))


def ms_ssim_scales(height: int, width: int) -> int:
    """Number of MS-SSIM scales for an image: 5, or fewer so the coarsest side stays >= 11."""
    scales = 1
    while scales < len(MS_SSIM_WEIGHTS) and min(height, width) >= SSIM_WINDOW * 2 ** scales:
        scales += 1
    return scales


def _halve(image: np.ndarray) -> np.ndarray:
    """Wang's MS-SSIM down-sampling: 2x2 mean (symmetric border), keep every second pixel."""
    padded = np.pad(image, ((0, 1), (0, 1)), mode='symmetric')
    mean = (padded[:-1, :-1] + padded[1:, :-1] + padded[:-1, 1:] + padded[1:, 1:]) / 4.0
    return mean[::2, ::2]


def _ms_ssim(x: np.ndarray, f: np.ndarray) -> tuple[float, float]:
    """(MS-SSIM, SSIM) of float64 images: Wang MS-SSIM and the SSIM of its first scale.

    Fewer scales (weights renormalised to 1) for small images. The coarsest scale
    contributes the full SSIM (mean of l·cs), as in Wang's msssim.m; negative terms, which
    a fractional power cannot take, are clamped to 0 as in pytorch-msssim. Returning the
    first scale's SSIM spares evaluate_fusion a second pass at full resolution.
    """
    scales = ms_ssim_scales(*x.shape)
    weights = np.array(MS_SSIM_WEIGHTS[:scales])
    if scales < len(MS_SSIM_WEIGHTS):
        weights /= weights.sum()
    result = 1.0
    single_scale = float('nan')
    for j in range(scales):
        luminance, contrast_structure = _ssim_maps(x, f)
        if j == 0:
            single_scale = float(np.mean(luminance * contrast_structure))
        if j < scales - 1:
            term = np.mean(contrast_structure)
            x, f = _halve(x), _halve(f)
        else:
            term = np.mean(luminance * contrast_structure)
        result *= max(float(term), 0.0) ** float(weights[j])
    return result, single_scale


def ssim(ir: np.ndarray, vi: np.ndarray, fused: np.ndarray) -> float:
    """Fusion SSIM = SSIM(A,F) + SSIM(B,F), Wang settings (max 2)."""
    _check_sources(ir, vi, fused)
    f = fused.astype(np.float64)
    return _ssim(ir.astype(np.float64), f) + _ssim(vi.astype(np.float64), f)


def ms_ssim(ir: np.ndarray, vi: np.ndarray, fused: np.ndarray) -> float:
    """Fusion MS-SSIM = MS-SSIM(A,F) + MS-SSIM(B,F), Wang 5 scales (max 2)."""
    _check_sources(ir, vi, fused)
    f = fused.astype(np.float64)
    return _ms_ssim(ir.astype(np.float64), f)[0] + _ms_ssim(vi.astype(np.float64), f)[0]


# --- edge-based metrics --------------------------------------------------------------------


def _qabf_edges(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sobel strength and orientation (arctan, pi/2 where s_x = 0), zero-padded 'same'."""
    sx = cv2.filter2D(image, cv2.CV_64F, SOBEL_X, borderType=cv2.BORDER_CONSTANT)
    sy = cv2.filter2D(image, cv2.CV_64F, SOBEL_Y, borderType=cv2.BORDER_CONSTANT)
    strength = np.sqrt(sx * sx + sy * sy)
    zero_x = np.abs(sx) < QABF_SX_EPS
    orientation = np.where(zero_x, np.pi / 2, np.arctan(sy / np.where(zero_x, 1.0, sx)))
    return strength, orientation


def _qabf_preservation(g_x: np.ndarray, a_x: np.ndarray, g_f: np.ndarray,
                       a_f: np.ndarray) -> np.ndarray:
    """Edge preservation Q^{XF} per pixel, with the shared g_X == g_F -> g_F quirk."""
    with np.errstate(divide='ignore', invalid='ignore'):
        relative = np.where(g_x > g_f, g_f / g_x, np.where(g_x < g_f, g_x / g_f, g_f))
    aligned = 1.0 - np.abs(a_x - a_f) / (np.pi / 2)
    q_g = 0.9994 / (1.0 + np.exp(-15.0 * (relative - 0.5)))
    q_a = 0.9879 / (1.0 + np.exp(-22.0 * (aligned - 0.8)))
    return q_g * q_a


def _qabf(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    (g_a, a_a), (g_b, a_b), (g_f, a_f) = _qabf_edges(a), _qabf_edges(b), _qabf_edges(f)
    total = (g_a + g_b).sum()
    if total == 0:
        return float('nan')
    weighted = (_qabf_preservation(g_a, a_a, g_f, a_f) * g_a
                + _qabf_preservation(g_b, a_b, g_f, a_f) * g_b)
    return float(weighted.sum() / total)


def qabf(ir: np.ndarray, vi: np.ndarray, fused: np.ndarray) -> float:
    """Xydeas & Petrović Q^{AB/F} in [0, 1] on 0-255 integer data."""
    _check_sources(ir, vi, fused)
    return _qabf(*(x.astype(np.float64) for x in (ir, vi, fused)))


def _nabf_edges(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sobel/8 strength and orientation with a periodic border; orientation 0 where flat."""
    padded = np.pad(image, 1, mode='wrap')
    gh = cv2.filter2D(padded, cv2.CV_64F, SOBEL_X / 8.0)[1:-1, 1:-1]
    gv = cv2.filter2D(padded, cv2.CV_64F, SOBEL_Y / 8.0)[1:-1, 1:-1]
    strength = np.sqrt(gh * gh + gv * gv)
    with np.errstate(divide='ignore', invalid='ignore'):
        orientation = np.arctan(gv / gh)              # +-inf -> +-pi/2 where gh = 0
    orientation[(gh == 0) & (gv == 0)] = 0.0
    return strength, orientation


def _nabf_preservation(g_x: np.ndarray, a_x: np.ndarray, g_f: np.ndarray,
                       a_f: np.ndarray) -> np.ndarray:
    """Shreyamsha Kumar's edge preservation Q^{XF} = sqrt(Q_g Q_alpha) per pixel."""
    with np.errstate(divide='ignore', invalid='ignore'):
        relative = np.where((g_x == 0) | (g_f == 0), 0.0,
                            np.minimum(g_x, g_f) / np.maximum(g_x, g_f))
    aligned = np.abs(np.abs(a_x - a_f) - np.pi / 2) * 2.0 / np.pi
    q_g = 0.9999 / (1.0 + np.exp(-19.0 * (relative - 0.5)))
    q_a = 0.9995 / (1.0 + np.exp(-22.0 * (aligned - 0.5)))
    return np.sqrt(q_g * q_a)


def _nabf(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    (g_a, a_a), (g_b, a_b), (g_f, a_f) = _nabf_edges(a), _nabf_edges(b), _nabf_edges(f)
    w_a = np.where(g_a >= 2.0, g_a ** 1.5, 0.001)    # T_d = 2, L = 1.5
    w_b = np.where(g_b >= 2.0, g_b ** 1.5, 0.001)
    artefact = (g_f > g_a) & (g_f > g_b)
    loss = ((1.0 - _nabf_preservation(g_a, a_a, g_f, a_f)) * w_a
            + (1.0 - _nabf_preservation(g_b, a_b, g_f, a_f)) * w_b)
    return float(loss[artefact].sum() / (w_a + w_b).sum())


def nabf(ir: np.ndarray, vi: np.ndarray, fused: np.ndarray, legacy: bool = False) -> float:
    """Fusion artefacts N^{AB/F} (lower is better), 0-255 data (legacy: [0,1] data)."""
    _check_sources(ir, vi, fused)
    scale = 255.0 if legacy else 1.0
    return _nabf(*(x.astype(np.float64) / scale for x in (ir, vi, fused)))


# --- pixel-difference metrics --------------------------------------------------------------


def mse(ir: np.ndarray, vi: np.ndarray, fused: np.ndarray, legacy: bool = False) -> float:
    """MSE = (MSE(A,F) + MSE(B,F)) / 2 in 0-255 units² (legacy: on [0,1] data)."""
    _check_sources(ir, vi, fused)
    scale = 255.0 if legacy else 1.0
    a, b, f = (x.astype(np.float64) / scale for x in (ir, vi, fused))
    return float((np.mean((a - f) ** 2) + np.mean((b - f) ** 2)) / 2.0)


def psnr(ir: np.ndarray, vi: np.ndarray, fused: np.ndarray, legacy: bool = False) -> float:
    """PSNR in dB: 10 log10(255² / MSE); legacy: 20 log10(255 / sqrt(MSE on [0,1]))."""
    error = mse(ir, vi, fused, legacy)
    if error == 0:
        return float('inf')
    if legacy:
        return float(20.0 * np.log10(255.0 / np.sqrt(error)))
    return float(10.0 * np.log10(DATA_RANGE ** 2 / error))


def scd(ir: np.ndarray, vi: np.ndarray, fused: np.ndarray) -> float:
    """SCD = r(F - B, A) + r(F - A, B), in [-2, 2]."""
    _check_sources(ir, vi, fused)
    a, b, f = (x.astype(np.float64) for x in (ir, vi, fused))
    return _pearson(f - b, a) + _pearson(f - a, b)


def correlation(ir: np.ndarray, vi: np.ndarray, fused: np.ndarray) -> float:
    """CC = (r(A,F) + r(B,F)) / 2, in [-1, 1]."""
    _check_sources(ir, vi, fused)
    a, b, f = (x.astype(np.float64) for x in (ir, vi, fused))
    return (_pearson(a, f) + _pearson(b, f)) / 2.0


def evaluate_fusion(ir: np.ndarray, vi: np.ndarray, fused: np.ndarray,
                    legacy: bool = False) -> dict[str, float]:
    """Every metric of :data:`METRICS` for one fused image, in that order.

    ir, vi, fused: uint8 HxW of one size (>= 41x41); vi is the visible luminance.
    """
    _check_sources(ir, vi, fused)
    f = fused.astype(np.float64)
    ms_ssim_a, ssim_a = _ms_ssim(ir.astype(np.float64), f)
    ms_ssim_b, ssim_b = _ms_ssim(vi.astype(np.float64), f)
    return {
        'EN': entropy(fused),
        'SD': standard_deviation(fused, legacy),
        'SF': spatial_frequency(fused, legacy),
        'AG': average_gradient(fused),
        'MI': mutual_information(ir, vi, fused, legacy),
        'SCD': scd(ir, vi, fused),
        'CC': correlation(ir, vi, fused),
        'VIF': vif(ir, vi, fused, legacy),
        'Qabf': qabf(ir, vi, fused),
        'Nabf': nabf(ir, vi, fused, legacy),
        'SSIM': ssim_a + ssim_b,
        'MS-SSIM': ms_ssim_a + ms_ssim_b,
        'MSE': mse(ir, vi, fused, legacy),
        'PSNR': psnr(ir, vi, fused, legacy),
    }


# --- colour of the fused image (issue 21) ----------------------------------------------------

#: A pixel is "lifted by the infrared" where the IR luma exceeds the visible luma by more
#: than this (8-bit counts): there a luma-swap composition turns dark colour pastel.
IR_LIFT = 60
#: Hue is compared only where the visible pixel has one: max - min channel of at least this
#: (8-bit counts); below it the hue is quantisation noise.
HUE_MIN_RANGE = 10
#: Per-image sums of color_stats, pooled over a set by color_summary ('lit': only lifted
#: pixels whose visible luma is at least occo_ros.core.color.DARK_LUMA, where chroma is signal).
COLOR_SUMS = ('lifted_px', 'sat_vi_sum', 'sat_fused_sum', 'hue_px', 'hue_shift_sum',
              'lit_px', 'sat_vi_lit_sum', 'sat_fused_lit_sum')


def colorfulness(rgb: np.ndarray) -> float:
    """Hasler & Suesstrunk (2003) colourfulness M of a uint8 RGB image, 0-255 units:
    sqrt(sd_rg² + sd_yb²) + 0.3 sqrt(mean_rg² + mean_yb²), rg = R - G, yb = (R + G) / 2 - B."""
    r, g, b = (c.astype(np.float64) for c in np.moveaxis(np.asarray(rgb), -1, 0))
    rg, yb = r - g, 0.5 * (r + g) - b
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


def color_stats(ir: np.ndarray, vi_rgb: np.ndarray, fused_rgb: np.ndarray) -> dict[str, float]:
    """Colour fidelity of one fused colour image against its visible source.

    ir: uint8 HxW infrared; vi_rgb, fused_rgb: uint8 HxWx3 RGB. On the pixels the infrared
    lifts (IR > BT.601 visible luma + IR_LIFT): the sums of HSV saturation (0-1) of the visible
    and of the fused image, and the sum of absolute hue differences in degrees over those
    of them with a visible hue (HUE_MIN_RANGE); plus both images' colourfulness. Sums (see
    COLOR_SUMS) so that a set is pooled over pixels by color_summary.
    """
    from occo_ros.core.color import DARK_LUMA, LUMA_WEIGHTS  # the one BT.601 definition

    luma = np.round(np.asarray(vi_rgb, np.float32) @ LUMA_WEIGHTS.astype(np.float32))
    lifted = ir.astype(np.float32) > luma + IR_LIFT
    lit = luma[lifted] >= DARK_LUMA
    vi_hsv = cv2.cvtColor(vi_rgb.astype(np.float32) / 255.0, cv2.COLOR_RGB2HSV)[lifted]
    fused_hsv = cv2.cvtColor(fused_rgb.astype(np.float32) / 255.0, cv2.COLOR_RGB2HSV)[lifted]
    spread = vi_rgb.max(axis=2).astype(np.int16) - vi_rgb.min(axis=2)
    hued = spread[lifted] >= HUE_MIN_RANGE
    shift = np.abs(fused_hsv[hued, 0] - vi_hsv[hued, 0]).astype(np.float64)
    shift = np.minimum(shift, 360.0 - shift)
    return {'lifted_px': float(lifted.sum()),
            'sat_vi_sum': float(vi_hsv[:, 1].sum(dtype=np.float64)),
            'sat_fused_sum': float(fused_hsv[:, 1].sum(dtype=np.float64)),
            'hue_px': float(hued.sum()), 'hue_shift_sum': float(shift.sum()),
            'lit_px': float(lit.sum()),
            'sat_vi_lit_sum': float(vi_hsv[lit, 1].sum(dtype=np.float64)),
            'sat_fused_lit_sum': float(fused_hsv[lit, 1].sum(dtype=np.float64)),
            'colorfulness_vi': colorfulness(vi_rgb), 'colorfulness_fused': colorfulness(fused_rgb)}


def color_summary(stats: list[dict[str, float]]) -> dict[str, float]:
    """Pool color_stats of a set: lifted pixels pooled over images (saturation of the visible
    and the fused image there, their ratio, the same ratio on the lifted pixels with a visible
    luma of at least DARK_LUMA, mean hue shift in degrees), colourfulness as the mean over
    images. NaN where no pixel qualifies."""
    sums = {key: sum(s[key] for s in stats) for key in COLOR_SUMS}
    pixels = sums['lifted_px']
    sat_vi = sums['sat_vi_sum'] / pixels if pixels else float('nan')
    sat_fused = sums['sat_fused_sum'] / pixels if pixels else float('nan')
    lit_ratio = (sums['sat_fused_lit_sum'] / sums['sat_vi_lit_sum']
                 if sums['sat_vi_lit_sum'] else float('nan'))
    return {'lifted_px': pixels, 'sat_vi': sat_vi, 'sat_fused': sat_fused,
            'sat_ratio': sat_fused / sat_vi if pixels and sat_vi else float('nan'),
            'lit_share': sums['lit_px'] / pixels if pixels else float('nan'),
            'sat_ratio_lit': lit_ratio,
            'hue_shift_deg': (sums['hue_shift_sum'] / sums['hue_px'] if sums['hue_px']
                              else float('nan')),
            'colorfulness_vi': float(np.mean([s['colorfulness_vi'] for s in stats])),
            'colorfulness_fused': float(np.mean([s['colorfulness_fused'] for s in stats]))}
