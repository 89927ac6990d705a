"""The ``edges`` method of occo-calibrate: a thermal -> RGB homography refined from a start by
matching edges (no ROS import). See occo_ros.calibration.methods for the method family, the
result types and the geometry helpers it shares.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
import time

import cv2
import numpy as np

from occo_ros.calibration.methods import (
    CalibrationFailed,
    MethodResult,
    PairResult,
    corner_error,
    identity_px,
    image_corners,
    scale_matrix,
    to_gray_float,
    transform,
)

#: Images are brought to at most this width for the edge refinement (speed; the homography
#: is returned at the original resolution).
EDGE_WORK_WIDTH = 640
_EDGE_TRUNCATE_PX = 10.0
#: The coarse search of `edges` (at the work resolution): its shift, rotation and scale
#: limits about the start.
SEARCH_SHIFT_PX = 48.0
SEARCH_DEGREES = 6.0
SEARCH_SCALE = 0.08
_SEARCH_WIDTH = 160
_MAX_DRIFT_PX = 12.0


# -- edge refinement --------------------------------------------------------------------------
def gradient_magnitude(image: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """Smoothed gradient magnitude, compressed (square root) and clipped at its 80th
    percentile (scaled to 1 there): an edge map in which the strong edges of either modality
    do not dominate the correlation (on MSRS pairs, clipping at the 99th percentile instead
    left about 1.4x the corner error)."""
    gray = to_gray_float(image)
    if sigma > 0:
        gray = cv2.GaussianBlur(gray, (0, 0), sigma)
    gx = cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3)
    magnitude = np.sqrt(cv2.magnitude(gx, gy))
    scale = np.percentile(magnitude, 80)
    return np.minimum(magnitude / max(float(scale), 1e-6), 1.0).astype(np.float32)


def _work_size(size: tuple[int, int]) -> tuple[int, int]:
    if size[0] <= EDGE_WORK_WIDTH:
        return size
    scale = EDGE_WORK_WIDTH / size[0]
    return EDGE_WORK_WIDTH, max(8, round(size[1] * scale))


def _ecc_pyramid(thermal: np.ndarray, rgb: np.ndarray, h_px: np.ndarray, levels: int,
                 iterations: int, perspective: bool) -> tuple[np.ndarray, float]:
    """ECC on gradient magnitudes, coarse to fine; returns (refined h_px, correlation).

    The thermal image is first warped into the RGB frame with ``h_px``; ECC then finds the
    residual warp W (RGB px -> pre-warped px): translation at the coarsest level, affine
    above, a full homography at the finest only with ``perspective`` (one cross-modal pair
    constrains perspective poorly). The result is W^-1 h_px.
    """
    size = _size(rgb)
    pre = cv2.warpPerspective(thermal, h_px, size, flags=cv2.INTER_LINEAR)
    valid = cv2.warpPerspective(np.ones_like(thermal), h_px, size, flags=cv2.INTER_NEAREST)
    valid = cv2.erode((valid > 0).astype(np.uint8), np.ones((9, 9), np.uint8))
    warp = np.eye(3)
    correlation = float('nan')
    for level in range(levels - 1, -1, -1):
        level_size = (max(16, round(size[0] * 0.5 ** level)),
                      max(16, round(size[1] * 0.5 ** level)))
        down = scale_matrix(size, level_size)
        motion = cv2.MOTION_TRANSLATION if level == levels - 1 and levels > 1 else \
            cv2.MOTION_HOMOGRAPHY if level == 0 and perspective else cv2.MOTION_AFFINE
        level_warp = down @ warp @ np.linalg.inv(down)
        level_warp = (level_warp / level_warp[2, 2])[:3 if motion == cv2.MOTION_HOMOGRAPHY
                                                     else 2].astype(np.float32)
        criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, iterations, 1e-5)
        correlation, level_warp = cv2.findTransformECC(
            gradient_magnitude(cv2.resize(rgb, level_size, interpolation=cv2.INTER_AREA)),
            gradient_magnitude(cv2.resize(pre, level_size, interpolation=cv2.INTER_AREA)),
            level_warp, motion, criteria,
            cv2.resize(valid, level_size, interpolation=cv2.INTER_NEAREST), 5)
        if level_warp.shape[0] == 2:
            level_warp = np.vstack([level_warp, [0.0, 0.0, 1.0]])
        warp = np.linalg.inv(down) @ level_warp.astype(np.float64) @ down
    h = np.linalg.inv(warp) @ h_px
    return h / h[2, 2], float(correlation)


def _about_centre(size: tuple[int, int], scale: float, degrees: float) -> np.ndarray:
    """Scale and rotate about the centre of an image of ``size`` (OpenCV pixels)."""
    centre = np.array([(size[0] - 1) / 2, (size[1] - 1) / 2])
    a = np.radians(degrees)
    m = np.array([[scale * np.cos(a), -scale * np.sin(a), 0.0],
                  [scale * np.sin(a), scale * np.cos(a), 0.0], [0.0, 0.0, 1.0]])
    m[:2, 2] = centre - m[:2, :2] @ centre
    return m


def _inner_box(h: np.ndarray, thermal_size: tuple[int, int], size: tuple[int, int],
               inset: int) -> tuple[int, int, int, int] | None:
    """Integer box (x0, y0, x1, y1) inside both the image of ``size`` and the thermal field of
    view mapped by ``h``, ``inset`` px from their borders; None when nothing is left."""
    tl, tr, br, bl = transform(h, image_corners(thermal_size))
    x0 = int(np.ceil(max(tl[0], bl[0], 0.0))) + inset
    y0 = int(np.ceil(max(tl[1], tr[1], 0.0))) + inset
    x1 = int(np.floor(min(tr[0], br[0], size[0] - 1.0))) - inset
    y1 = int(np.floor(min(bl[1], br[1], size[1] - 1.0))) - inset
    return (x0, y0, x1, y1) if x1 - x0 >= 16 and y1 - y0 >= 16 else None


@dataclass
class CoarseSearch:
    """Where the coarse search put the thermal image (work resolution) and how sure it is."""

    h_work: np.ndarray
    scale: float
    degrees: float
    shift_px: tuple[float, float]
    at_limit: str
    agreeing: int
    pairs: int


def _coarse_search(pairs: list[tuple[str, np.ndarray, np.ndarray]],
                   start: np.ndarray) -> CoarseSearch:
    """Exhaustive search of the residual similarity (scale, rotation about the centre, shift)
    at ~160 px wide that maximises the normalised correlation of edge maps summed over the
    pairs (:data:`SEARCH_SHIFT_PX`, :data:`SEARCH_DEGREES`, :data:`SEARCH_SCALE`); the
    capture range of ECC alone is a few pixels, this brings the start inside it."""
    thermal_size, size = _size(pairs[0][1]), _size(pairs[0][2])
    factor = _SEARCH_WIDTH / size[0]
    coarse = (_SEARCH_WIDTH, max(16, round(size[1] * factor)))
    t_coarse = (max(16, round(thermal_size[0] * factor)),
                max(16, round(thermal_size[1] * factor)))
    down, t_down = scale_matrix(size, coarse), scale_matrix(thermal_size, t_coarse)
    start_coarse = down @ start @ np.linalg.inv(t_down)
    margin = int(np.ceil(SEARCH_SHIFT_PX * factor))
    slack = int(np.ceil(max(coarse) / 2 * (SEARCH_SCALE + np.radians(SEARCH_DEGREES))))
    box = _inner_box(start_coarse, t_coarse, coarse, slack)
    if box is None:
        raise CalibrationFailed('the start leaves too little overlap between the thermal '
                                'field of view and the RGB image to search in')
    x0, y0, x1, y1 = box
    maps = []
    for _, thermal, rgb in pairs:
        rgb_edges = gradient_magnitude(cv2.resize(rgb, coarse, interpolation=cv2.INTER_AREA))
        region = cv2.copyMakeBorder(rgb_edges, margin, margin, margin, margin,
                                    cv2.BORDER_CONSTANT, value=0.0)
        maps.append((gradient_magnitude(cv2.resize(thermal, t_coarse,
                                                   interpolation=cv2.INTER_AREA)),
                     region[y0:y1 + 2 * margin, x0:x1 + 2 * margin]))
    scales = 1.0 + np.linspace(-SEARCH_SCALE, SEARCH_SCALE, 2 * round(SEARCH_SCALE / 0.02) + 1)
    angles = np.linspace(-SEARCH_DEGREES, SEARCH_DEGREES, 2 * round(SEARCH_DEGREES) + 1)
    best_total = (-np.inf, 0, 0, (0, 0))
    best_pair = [(-np.inf, 0, 0, (0, 0))] * len(maps)
    for i, scale in enumerate(scales):
        for j, degrees in enumerate(angles):
            similarity = _about_centre(coarse, scale, degrees)
            warp = np.linalg.inv(similarity) @ start_coarse
            total = 0.0
            for k, (thermal_edges, region) in enumerate(maps):
                moved = cv2.warpPerspective(thermal_edges, warp, coarse, flags=cv2.INTER_LINEAR)
                score = cv2.matchTemplate(region, moved[y0:y1, x0:x1], cv2.TM_CCOEFF_NORMED)
                score = np.nan_to_num(score, nan=-1.0)
                peak = np.unravel_index(int(np.argmax(score)), score.shape)
                if score[peak] > best_pair[k][0]:
                    best_pair[k] = (float(score[peak]), i, j, peak)
                total = total + score
            peak = np.unravel_index(int(np.argmax(total)), total.shape)
            if total[peak] > best_total[0]:
                best_total = (float(total[peak]), i, j, peak)

    def homography(i: int, j: int, peak: tuple[int, int]) -> np.ndarray:
        # RGB coarse px -> pre-warped coarse px: W(q) = S (q - shift)
        shift = np.array([[1.0, 0.0, margin - peak[1]], [0.0, 1.0, margin - peak[0]],
                          [0.0, 0.0, 1.0]])
        w = _about_centre(coarse, scales[i], angles[j]) @ shift
        h = np.linalg.inv(down) @ np.linalg.inv(w) @ down @ start
        return h / h[2, 2]

    _, i, j, peak = best_total
    h_work = homography(i, j, peak)
    limits = [what for what, hit in (
        (f'shift {SEARCH_SHIFT_PX:g} px', margin in (abs(peak[0] - margin),
                                                     abs(peak[1] - margin))),
        (f'rotation {SEARCH_DEGREES:g} deg', j in (0, len(angles) - 1)),
        (f'scale {SEARCH_SCALE:.0%}', i in (0, len(scales) - 1))) if hit]
    tolerance = 2.5 / factor   # coarse pixels apart
    agreeing = sum(corner_error(homography(*p[1:]), h_work, thermal_size) <= tolerance
                   for p in best_pair)
    return CoarseSearch(h_work, float(scales[i]), float(angles[j]),
                        ((margin - peak[1]) / factor, (margin - peak[0]) / factor),
                        ', '.join(limits), int(agreeing), len(maps))


def edge_distance(thermal: np.ndarray, rgb: np.ndarray, h_px: np.ndarray) -> float:
    """Mean distance (RGB pixels, each truncated at 10) from the strongest edges of the
    thermal image, mapped by ``h_px``, to the nearest strong RGB edge."""
    rgb_edges = strong_edges(rgb)
    distance = cv2.distanceTransform((~rgb_edges).astype(np.uint8), cv2.DIST_L2, 3)
    ys, xs = np.nonzero(strong_edges(thermal))
    mapped = transform(h_px, np.stack([xs, ys], axis=1).astype(np.float64))
    cols, rows = np.round(mapped[:, 0]).astype(int), np.round(mapped[:, 1]).astype(int)
    inside = (cols >= 0) & (rows >= 0) & (cols < rgb.shape[1]) & (rows < rgb.shape[0])
    if not inside.any():
        return float('nan')
    return float(np.minimum(distance[rows[inside], cols[inside]], _EDGE_TRUNCATE_PX).mean())


def strong_edges(image: np.ndarray) -> np.ndarray:
    """Canny edges whose gradient is in the top 10 % of the image's (low threshold: half)."""
    gray = (cv2.GaussianBlur(to_gray_float(image), (0, 0), 1.0) * 255).astype(np.uint8)
    magnitude = cv2.magnitude(cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3),
                              cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3))
    high = max(float(np.percentile(magnitude, 90)), 1.0)
    return cv2.Canny(gray, high / 2, high, L2gradient=True) > 0


def refine_edges(pairs: Sequence[tuple[str, np.ndarray, np.ndarray]],
                 init_px: np.ndarray | None = None, levels: int = 3, iterations: int = 50,
                 perspective: bool = False, rounds: int = 2,
                 progress: Callable[[str], None] | None = None) -> MethodResult:
    """Edge-alignment refinement over ``pairs`` of (name, thermal image, RGB image) from
    ``init_px`` (default: the identity in normalised coordinates). Per pair ECC, coarse to
    fine; the pairs' homographies are combined by the per-corner median of where they put
    the thermal image's corners, after dropping clear divergences (more than 3 px and 3x the
    median distance from it, at the work resolution); ``rounds`` > 1 repeats this from the
    combined estimate (less dependence on the start). Pairs whose ECC fails are reported and
    skipped. Before ECC, :func:`_coarse_search` brings the start within ECC's reach; outside
    the search's range, or when the pairs disagree, CalibrationFailed says why."""
    if not pairs:
        raise CalibrationFailed('no image pairs to calibrate from')
    thermal_size, rgb_size = _size(pairs[0][1]), _size(pairs[0][2])
    init_px = identity_px(thermal_size, rgb_size) if init_px is None else init_px
    t_work, r_work = _work_size(thermal_size), _work_size(rgb_size)
    to_work = scale_matrix(rgb_size, r_work)
    from_work = scale_matrix(thermal_size, t_work)
    init_work = to_work @ init_px @ np.linalg.inv(from_work)
    small, results = [], []
    for name, thermal, rgb in pairs:
        if _size(thermal) != thermal_size or _size(rgb) != rgb_size:
            results.append(PairResult(name, float('nan'), 'image size differs from the '
                                      'first pair; skipped'))
            continue
        small.append((name, cv2.resize(to_gray_float(thermal), t_work,
                                       interpolation=cv2.INTER_AREA),
                      cv2.resize(to_gray_float(rgb), r_work, interpolation=cv2.INTER_AREA)))
    if not small:
        raise CalibrationFailed('no pair has the size of the first pair')
    search = _coarse_search(small, init_work)
    if progress:
        progress(f'coarse search: scale {search.scale:.3f}, rotation {search.degrees:+.1f} '
                 f'deg, shift ({search.shift_px[0]:+.0f}, {search.shift_px[1]:+.0f}) px; '
                 f'{search.agreeing} of {search.pairs} pairs agree')
    combined_work = search.h_work
    for _ in range(rounds):
        combined_work, estimates, keep, failed = _edges_round(
            small, combined_work, levels, iterations, perspective, progress)
    _check_capture(search, combined_work, keep, t_work)
    results += failed
    h_px = np.linalg.inv(to_work) @ combined_work @ from_work
    h_px /= h_px[2, 2]
    by_name = {name: (h, c, k) for (name, h, c), k in zip(estimates, keep)}
    for name, thermal, rgb in pairs:
        if name not in by_name:
            continue
        h_work, correlation, kept = by_name[name]
        results.append(PairResult(
            name, edge_distance(thermal, rgb, h_px),
            '' if kept else 'its own estimate disagreed with the others; not used',
            extra={'error_before_px': edge_distance(thermal, rgb, init_px),
                   'correlation': correlation}))
    order = [p[0] for p in pairs]
    results.sort(key=lambda r: order.index(r.name))
    return MethodResult(h_px, results, 'edge distance, not a registration accuracy: mean '
                        'distance of the mapped strong thermal edges from the nearest strong '
                        'RGB edge (truncated at 10), RGB pixels; not 0 when aligned, compare '
                        'error_before_px')


def _check_capture(search: CoarseSearch, combined: np.ndarray, keep: np.ndarray,
                   thermal_size: tuple[int, int]) -> None:
    """Refuse a result that the edges cannot vouch for (see :func:`refine_edges`)."""
    hint = ('start closer: --init a points or target calibration (the capture range of '
            'edges is stated in occo-calibrate --help)')
    if search.at_limit:
        raise CalibrationFailed(f'the best coarse alignment lies at the limit of the search '
                                f'({search.at_limit} from the start): the start is probably '
                                f'further off than edges can capture; {hint}')
    if len(keep) >= 2 and 2 * int(np.sum(keep)) < len(keep):
        raise CalibrationFailed(f'the pairs disagree after refinement (only {int(np.sum(keep))} '
                                f'of {len(keep)} agree); {hint}')
    drift = corner_error(combined, search.h_work, thermal_size)
    if drift > _MAX_DRIFT_PX:
        raise CalibrationFailed(f'the refinement moved {drift:.1f} px away from the coarse '
                                f'alignment (more than {_MAX_DRIFT_PX:g}): it did not converge '
                                f'to it; {hint}')


def _edges_round(pairs: list[tuple[str, np.ndarray, np.ndarray]], start: np.ndarray,
                 levels: int, iterations: int, perspective: bool,
                 progress: Callable[[str], None] | None) -> tuple:
    """One round of :func:`refine_edges` at the work resolution: (combined homography,
    per-pair (name, homography, correlation), kept flags, failed PairResults)."""
    estimates: list[tuple[str, np.ndarray, float]] = []
    failed: list[PairResult] = []
    for name, thermal, rgb in pairs:
        begin = time.perf_counter()
        try:
            h_work, correlation = _ecc_pyramid(thermal, rgb, start, levels, iterations,
                                               perspective)
        except cv2.error as exc:
            failed.append(PairResult(name, float('nan'), 'ECC did not converge ('
                                     f'{str(exc).strip().splitlines()[-1]}); skipped'))
            continue
        estimates.append((name, h_work, correlation))
        if progress:
            progress(f'{name}: correlation {correlation:.3f} in '
                     f'{time.perf_counter() - begin:.1f} s')
    if not estimates:
        raise CalibrationFailed('edge alignment failed on every pair; start closer (--init '
                                'from a points or target calibration) or use scenes with '
                                'structure visible in both cameras')
    corners = image_corners(_size(pairs[0][1]))
    mapped = np.stack([transform(h, corners) for _, h, _ in estimates])
    spread = np.linalg.norm(mapped - np.median(mapped, axis=0), axis=2).mean(axis=1)
    keep = spread <= max(3.0, 3.0 * float(np.median(spread)))  # only clear divergences
    combined = cv2.getPerspectiveTransform(
        corners.astype(np.float32), np.median(mapped[keep], axis=0).astype(np.float32))
    return combined.astype(np.float64), estimates, keep, failed


def _size(image: np.ndarray) -> tuple[int, int]:
    return int(image.shape[1]), int(image.shape[0])
