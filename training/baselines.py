"""Classical infrared-visible fusion baselines to compare the network against.

Every method takes the infrared image and the visible luminance as uint8 HxW gray images of
one size and returns the fused luminance as uint8 HxW. Fractional results are rounded half
up and clipped to 0-255. :data:`BASELINES` maps the names used by occo-eval to the methods.

- average: (A + B) / 2.
- max: pixel-wise maximum of the two luminances.
- laplacian: Laplacian pyramid (Burt & Adelson) with :data:`PYRAMID_LEVELS` detail levels
  (fewer for images too small to halve that often); detail coefficients by larger absolute
  value, the base (coarsest Gaussian level) averaged.
- gff: guided-filter fusion (Li, Kang & Hu, IEEE TIP 2013) with the paper's parameters.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

PYRAMID_LEVELS = 4            # detail levels; the coarsest level of 640x480 is then 40x30
PYRAMID_MIN_SIDE = 8          # stop halving before a level gets smaller than this
GFF_AVERAGE_SIZE = 31         # two-scale decomposition: 31x31 mean filter
GFF_SALIENCY_RADIUS, GFF_SALIENCY_SIGMA = 5, 5.0   # Gaussian smoothing of |Laplacian|
GFF_BASE_RADIUS, GFF_BASE_EPS = 45, 0.3            # guided filter for the base-layer weights
GFF_DETAIL_RADIUS, GFF_DETAIL_EPS = 7, 1e-6        # guided filter for the detail-layer weights


def _check_inputs(ir: np.ndarray, vi: np.ndarray) -> None:
    """Raise unless ir and vi are uint8 HxW arrays of one size."""
    for name, image in (('ir', ir), ('vi', vi)):
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 2:
            raise ValueError(f'{name}: expected a uint8 HxW gray image, got '
                             f'{getattr(image, "dtype", type(image).__name__)} with shape '
                             f'{getattr(image, "shape", None)}')
    if ir.shape != vi.shape:
        raise ValueError(f'ir {ir.shape} and vi {vi.shape} differ in size')


def _to_uint8(image: np.ndarray) -> np.ndarray:
    """Round half up and clip a float image in 0-255 units to uint8."""
    return np.clip(np.floor(image + 0.5), 0, 255).astype(np.uint8)


def fuse_average(ir: np.ndarray, vi: np.ndarray) -> np.ndarray:
    """Pixel-wise mean, rounded half up."""
    _check_inputs(ir, vi)
    return ((ir.astype(np.uint16) + vi + 1) // 2).astype(np.uint8)


def fuse_max(ir: np.ndarray, vi: np.ndarray) -> np.ndarray:
    """Pixel-wise maximum of the two luminances."""
    _check_inputs(ir, vi)
    return np.maximum(ir, vi)


def _laplacian_pyramid(image: np.ndarray, levels: int) -> list[np.ndarray]:
    """[detail_0, ..., detail_{levels-1}, base] of a float64 image (exactly invertible)."""
    pyramid = []
    current = image
    for _ in range(levels):
        smaller = cv2.pyrDown(current)
        expanded = cv2.pyrUp(smaller, dstsize=(current.shape[1], current.shape[0]))
        pyramid.append(current - expanded)
        current = smaller
    pyramid.append(current)
    return pyramid


def pyramid_levels(height: int, width: int, levels: int = PYRAMID_LEVELS) -> int:
    """Detail levels actually used: at most ``levels``, coarsest side >= PYRAMID_MIN_SIDE."""
    used = 0
    while used < levels and min(height, width) >= 2 * PYRAMID_MIN_SIDE * 2 ** used:
        used += 1
    return used


def fuse_laplacian(ir: np.ndarray, vi: np.ndarray, levels: int = PYRAMID_LEVELS) -> np.ndarray:
    """Laplacian-pyramid fusion: max-abs detail selection, averaged base."""
    _check_inputs(ir, vi)
    used = pyramid_levels(*ir.shape, levels)
    pyr_ir = _laplacian_pyramid(ir.astype(np.float64), used)
    pyr_vi = _laplacian_pyramid(vi.astype(np.float64), used)
    fused = (pyr_ir[-1] + pyr_vi[-1]) / 2.0
    for detail_ir, detail_vi in zip(reversed(pyr_ir[:-1]), reversed(pyr_vi[:-1])):
        detail = np.where(np.abs(detail_ir) >= np.abs(detail_vi), detail_ir, detail_vi)
        fused = cv2.pyrUp(fused, dstsize=(detail.shape[1], detail.shape[0])) + detail
    return _to_uint8(fused)


def _box_mean(image: np.ndarray, radius: int) -> np.ndarray:
    """Mean over the (2r+1)² window clipped to the image (He et al.'s box filter)."""
    size = (2 * radius + 1, 2 * radius + 1)
    total = cv2.boxFilter(image, cv2.CV_64F, size, normalize=False,
                          borderType=cv2.BORDER_CONSTANT)
    count = cv2.boxFilter(np.ones_like(image), cv2.CV_64F, size, normalize=False,
                          borderType=cv2.BORDER_CONSTANT)
    return total / count


def guided_filter(guide: np.ndarray, image: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """Gray guided filter (He, Sun & Tang 2010) of float64 ``image`` steered by ``guide``.

    radius: window radius in pixels; eps: regularisation in the guide's units squared.
    """
    mean_guide = _box_mean(guide, radius)
    mean_image = _box_mean(image, radius)
    var_guide = _box_mean(guide * guide, radius) - mean_guide * mean_guide
    cov = _box_mean(guide * image, radius) - mean_guide * mean_image
    a = cov / (var_guide + eps)
    b = mean_image - a * mean_guide
    return _box_mean(a, radius) * guide + _box_mean(b, radius)


def _weighted_sum(sources: list[np.ndarray], maps: list[np.ndarray], layers: list[np.ndarray],
                  radius: int, eps: float) -> np.ndarray:
    """GFF layer fusion: guided-filter each map with its source, normalise, weight layers."""
    weights = [guided_filter(s, m, radius, eps) for s, m in zip(sources, maps)]
    total = weights[0] + weights[1]
    # The maps sum to >= 1 and the guided filter keeps constants, so the total stays near 1;
    # the guard only avoids dividing by an exact zero.
    total = np.where(np.abs(total) < 1e-12, 1e-12, total)
    return (weights[0] * layers[0] + weights[1] * layers[1]) / total


def fuse_gff(ir: np.ndarray, vi: np.ndarray) -> np.ndarray:
    """Guided-filter fusion (Li, Kang & Hu 2013), on [0,1] intensities.

    Base = 31x31 mean, detail = image - base; saliency = Gaussian (r 5, sigma 5) of the
    absolute 3x3 Laplacian; binary maps mark the most salient source (ties mark both);
    base weights = guided filter (r 45, eps 0.3) and detail weights = guided filter (r 7,
    eps 1e-6) of the maps steered by each source; weights normalised to sum 1 per pixel.
    """
    _check_inputs(ir, vi)
    sources = [x.astype(np.float64) / 255.0 for x in (ir, vi)]
    bases = [cv2.blur(s, (GFF_AVERAGE_SIZE, GFF_AVERAGE_SIZE), borderType=cv2.BORDER_REFLECT)
             for s in sources]
    saliency = [cv2.GaussianBlur(np.abs(cv2.Laplacian(s, cv2.CV_64F, ksize=1)),
                                 (2 * GFF_SALIENCY_RADIUS + 1,) * 2, GFF_SALIENCY_SIGMA)
                for s in sources]
    most = np.maximum(saliency[0], saliency[1])
    maps = [(s == most).astype(np.float64) for s in saliency]

    details = [s - b for s, b in zip(sources, bases)]
    fused = (_weighted_sum(sources, maps, bases, GFF_BASE_RADIUS, GFF_BASE_EPS)
             + _weighted_sum(sources, maps, details, GFF_DETAIL_RADIUS, GFF_DETAIL_EPS))
    return _to_uint8(fused * 255.0)


BASELINES: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    'average': fuse_average,
    'max': fuse_max,
    'laplacian': fuse_laplacian,
    'gff': fuse_gff,
}
