"""Thermal -> RGB calibration methods behind ``occo-calibrate`` (no ROS import).

Every method returns a homography ``h_px`` from thermal OpenCV pixel coordinates to RGB
OpenCV pixel coordinates (pixel centres at integers), between the images as given (undistort
them first when the cameras have lens distortion), plus a per-pair error in RGB pixels:

* :func:`calibrate_points`: a least-squares (RANSAC from 8 points) fit to corresponding
  points; error = reprojection error of the points.
* :func:`calibrate_target`: the inner corners of a checkerboard (or circle centres of a
  circle grid) found in both modalities, thermal inverted when the pattern is only found so
  (a heated board shows hot squares bright where the visible image is dark), fitted as above.
* ``refine_edges`` (occo_ros.calibration.edges): an exhaustive coarse search over scale,
  rotation and shift of the start (its capture range), then ECC on gradient magnitudes,
  coarse to fine, per pair, combined robustly; a result it cannot vouch for is refused with
  CalibrationFailed. Its number is an edge distance, not a registration accuracy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np


class CalibrationFailed(RuntimeError):
    """A method could not produce a homography; the message says why and what to try."""


@dataclass
class PairResult:
    """One pair's contribution: its name, error in RGB pixels, and notes (e.g. not found)."""

    name: str
    error_px: float
    note: str = ''
    extra: dict = field(default_factory=dict)


@dataclass
class MethodResult:
    """A homography (thermal px -> RGB px), its per-pair results and the mean error."""

    h_px: np.ndarray
    pairs: list[PairResult]
    error_kind: str

    @property
    def error_px(self) -> float:
        errors = [p.error_px for p in self.pairs if np.isfinite(p.error_px)]
        return float(np.mean(errors)) if errors else float('nan')


# -- geometry helpers -------------------------------------------------------------------------
def scale_matrix(from_size: tuple[int, int], to_size: tuple[int, int]) -> np.ndarray:
    """OpenCV pixel coordinates of an image of ``from_size`` -> the same points in the image
    resized to ``to_size`` (pixel-centre aware: x' = (x + 0.5) * s - 0.5)."""
    sx, sy = to_size[0] / from_size[0], to_size[1] / from_size[1]
    return np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])


def image_corners(size: tuple[int, int]) -> np.ndarray:
    """The four outer corners of an image of ``size`` in OpenCV pixel coordinates (4, 2)."""
    width, height = size
    return np.array([[-0.5, -0.5], [width - 0.5, -0.5], [width - 0.5, height - 0.5],
                     [-0.5, height - 0.5]])


def transform(h: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 3x3 homography to (N, 2) points."""
    return cv2.perspectiveTransform(np.asarray(points, np.float64).reshape(-1, 1, 2),
                                    h).reshape(-1, 2)


def corner_error(h_a: np.ndarray, h_b: np.ndarray, thermal_size: tuple[int, int]) -> float:
    """Mean distance (RGB pixels) between where two homographies put the thermal image's
    four corners: the usual accuracy measure of a homography estimate."""
    corners = image_corners(thermal_size)
    return float(np.linalg.norm(transform(h_a, corners) - transform(h_b, corners),
                                axis=1).mean())


def identity_px(thermal_size: tuple[int, int], rgb_size: tuple[int, int]) -> np.ndarray:
    """The pixel homography of boresighted cameras with the same field of view (the node's
    normalised identity)."""
    return scale_matrix(thermal_size, rgb_size)


def overlap_crop(h_px: np.ndarray, thermal_size: tuple[int, int], rgb_size: tuple[int, int],
                 aspect: float | None = None) -> tuple[float, float, float, float]:
    """The largest axis-aligned crop (normalised RGB coordinates) inside both the RGB image
    and the thermal field of view, shrunk about its centre to ``aspect`` (width / height of
    the output image) when given."""
    tl, tr, br, bl = transform(h_px, image_corners(thermal_size))
    width, height = rgb_size
    x0 = max(tl[0], bl[0], -0.5) + 0.5
    x1 = min(tr[0], br[0], width - 0.5) + 0.5
    y0 = max(tl[1], tr[1], -0.5) + 0.5
    y1 = min(bl[1], br[1], height - 0.5) + 0.5
    if x1 - x0 < 2 or y1 - y0 < 2:
        raise CalibrationFailed('the thermal field of view does not overlap the RGB image; '
                                'the homography is wrong')
    if aspect is not None:
        if (x1 - x0) / (y1 - y0) > aspect:
            cx, half = (x0 + x1) / 2, (y1 - y0) * aspect / 2
            x0, x1 = cx - half, cx + half
        else:
            cy, half = (y0 + y1) / 2, (x1 - x0) / aspect / 2
            y0, y1 = cy - half, cy + half
    crop = (x0 / width, y0 / height, (x1 - x0) / width, (y1 - y0) / height)
    # keep it inside [0, 1] despite rounding
    x, y, w, h = (min(max(v, 0.0), 1.0) for v in crop)
    return x, y, min(w, 1.0 - x), min(h, 1.0 - y)


def to_gray_float(image: np.ndarray) -> np.ndarray:
    """Any camera image (gray, RGB, uint8/uint16/float) as float32 gray, unit range (a
    robust 0.5-99.5 percentile stretch, so raw 16-bit thermal counts work too)."""
    image = np.asarray(image)
    if image.ndim == 3:
        image = cv2.cvtColor(image[:, :, :3].astype(np.float32), cv2.COLOR_RGB2GRAY)
    image = image.astype(np.float32)
    finite = image[np.isfinite(image)]
    lo, hi = np.percentile(finite, (0.5, 99.5)) if finite.size else (0.0, 1.0)
    scaled = (np.nan_to_num(image) - np.float32(lo)) / np.float32(max(hi - lo, 1e-6))
    return np.clip(scaled, 0.0, 1.0).astype(np.float32)


# -- points and targets -----------------------------------------------------------------------
def fit_homography(thermal_points: np.ndarray, rgb_points: np.ndarray) -> np.ndarray:
    """Least squares homography from >= 4 correspondences (RANSAC, 3 px, from 8 points)."""
    thermal_points = np.asarray(thermal_points, np.float64).reshape(-1, 2)
    rgb_points = np.asarray(rgb_points, np.float64).reshape(-1, 2)
    if len(thermal_points) != len(rgb_points):
        raise CalibrationFailed(f'{len(thermal_points)} thermal points but {len(rgb_points)} '
                                'RGB points; they must correspond one to one')
    if len(thermal_points) < 4:
        raise CalibrationFailed(f'a homography needs at least 4 point pairs, got '
                                f'{len(thermal_points)}')
    method = cv2.RANSAC if len(thermal_points) >= 8 else 0
    h, _ = cv2.findHomography(thermal_points, rgb_points, method, 3.0)
    if h is None or not np.isfinite(h).all():
        raise CalibrationFailed('the points do not determine a homography (collinear or '
                                'repeated points?)')
    return h / h[2, 2]


def reprojection_errors(h: np.ndarray, thermal_points: np.ndarray,
                        rgb_points: np.ndarray) -> np.ndarray:
    """Distance (RGB pixels) from each mapped thermal point to its RGB point."""
    return np.linalg.norm(transform(h, thermal_points) - np.asarray(rgb_points).reshape(-1, 2),
                          axis=1)


def calibrate_points(pairs: Sequence[tuple[str, np.ndarray, np.ndarray]]) -> MethodResult:
    """``pairs`` of (name, thermal points (N, 2), RGB points (N, 2)): one homography fitted
    to all points; per pair the mean reprojection error of its points."""
    h = fit_homography(np.concatenate([p[1] for p in pairs]),
                       np.concatenate([p[2] for p in pairs]))
    results = [PairResult(name, float(reprojection_errors(h, t, r).mean()),
                          extra={'points': len(t)}) for name, t, r in pairs]
    return MethodResult(h, results, 'reprojection: mean distance of the mapped thermal '
                        'points from their RGB points, RGB pixels')


def find_target(image: np.ndarray, pattern: tuple[int, int],
                kind: str = 'checkerboard') -> tuple[np.ndarray, bool] | None:
    """Target points (N, 2) found in ``image`` (any camera image) and whether it had to be
    inverted, or None. ``pattern`` = inner corners (columns, rows) of a checkerboard, or
    circles per row and rows of a 'circles' (symmetric) / 'acircles' (asymmetric) grid."""
    gray = (to_gray_float(image) * 255).astype(np.uint8)
    for inverted in (False, True):
        view = 255 - gray if inverted else gray
        if kind == 'checkerboard':
            found, points = cv2.findChessboardCornersSB(
                view, pattern, flags=cv2.CALIB_CB_EXHAUSTIVE | cv2.CALIB_CB_ACCURACY)
        elif kind in ('circles', 'acircles'):
            flags = cv2.CALIB_CB_SYMMETRIC_GRID if kind == 'circles' \
                else cv2.CALIB_CB_ASYMMETRIC_GRID
            found, points = cv2.findCirclesGrid(view, pattern, flags=flags)
        else:
            raise ValueError(f"target kind {kind!r} is not 'checkerboard', 'circles' or "
                             "'acircles'")
        if found:
            return points.reshape(-1, 2).astype(np.float64), inverted
    return None


def _orderings(points: np.ndarray, pattern: tuple[int, int]) -> list[np.ndarray]:
    """The orderings of a detected grid that describe the same physical points: detectors
    may start at either end (and a square grid may come transposed)."""
    grid = points.reshape(pattern[1], pattern[0], 2)
    options = [grid, grid[::-1, ::-1]]
    if pattern[0] == pattern[1]:
        options += [np.rot90(grid, k) for k in (1, 3)]
    return [o.reshape(-1, 2) for o in options]


def match_target(thermal_points: np.ndarray, rgb_points: np.ndarray,
                 pattern: tuple[int, int], init_px: np.ndarray) -> np.ndarray:
    """The ordering of ``rgb_points`` that corresponds to ``thermal_points``: the one whose
    homography is closest to ``init_px`` (mounted cameras are not rotated 180 deg apart)."""
    best, best_distance = rgb_points, np.inf
    for candidate in _orderings(rgb_points, pattern):
        distance = np.linalg.norm(transform(init_px, thermal_points) - candidate, axis=1).mean()
        if distance < best_distance:
            best, best_distance = candidate, distance
    return best


def calibrate_target(pairs: Sequence[tuple[str, np.ndarray, np.ndarray]],
                     pattern: tuple[int, int], kind: str = 'checkerboard',
                     init_px: np.ndarray | None = None) -> MethodResult:
    """``pairs`` of (name, thermal image, RGB image) showing the target; pairs where it is
    not found in both are reported and skipped. Per pair: mean reprojection error."""
    found: list[tuple[str, np.ndarray, np.ndarray, bool]] = []
    skipped: list[PairResult] = []
    for name, thermal, rgb in pairs:
        in_thermal, in_rgb = find_target(thermal, pattern, kind), find_target(rgb, pattern, kind)
        if in_thermal is None or in_rgb is None:
            where = ' and '.join(m for m, f in (('thermal', in_thermal), ('RGB', in_rgb))
                                 if f is None)
            skipped.append(PairResult(name, float('nan'), f'target not found in {where}'))
            continue
        init = identity_px(_size(thermal), _size(rgb)) if init_px is None else init_px
        found.append((name, in_thermal[0], match_target(in_thermal[0], in_rgb[0], pattern,
                                                        init), in_thermal[1]))
    if not found:
        raise CalibrationFailed(
            f'the {pattern[0]}x{pattern[1]} {kind} target was found in no pair (in both '
            'images); check --pattern (inner corners for a checkerboard) and that the target '
            'is fully visible and warm/contrasted in the thermal image')
    result = calibrate_points([(n, t, r) for n, t, r, _ in found])
    for pair, (_, _, _, inverted) in zip(result.pairs, found):
        pair.extra['thermal_inverted'] = inverted
    result.pairs += skipped
    return result


def _size(image: np.ndarray) -> tuple[int, int]:
    return int(image.shape[1]), int(image.shape[0])
