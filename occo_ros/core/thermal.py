"""Thermal images (raw counts, 8-bit or temperatures) to float32 [0, 1] for the network.

``normalize_thermal(image, lo, hi)`` maps raw values linearly, ``lo`` -> 0 and ``hi`` -> 1,
clipped. :class:`ThermalNormalizer` chooses ``lo``/``hi`` per frame:

* ``'fixed'``: the given ``lo``/``hi`` (raw units). Without them, uint8 uses 0..255 and
  uint16 0..65535; float images need them.
* ``'minmax'``: the frame's minimum and maximum.
* ``'percentile'``: the frame's ``percentiles`` (default 1 and 99, numpy's linear
  interpolation), robust to a few hot or dead pixels.
* ``'smoothed'``: the percentile range, smoothed over frames by an exponential moving
  average (``smoothing`` = weight of the newest frame, time constant ~ 1/smoothing frames),
  so video does not flicker. A frame whose range does not overlap the smoothed one is
  ignored (a glitch); ``jump_frames`` such frames in a row (a gain switch, a flat-field
  correction, a new scene) restart the average from the current frame. ``reset()`` restarts
  it on request.

Inputs: (H, W) or (H, W, 1) uint8, uint16, float32 or float64; strided views (e.g. from
occo_ros.core.codec) are read in place. Output: a new C-contiguous float32 (H, W) array in [0, 1].
NaN and +-inf (float input only) are left out of the statistics and map to 0. A degenerate
range (``hi == lo``, e.g. a flat frame) maps values above ``lo`` to 1 and the rest to 0
instead of dividing by zero.

Speed: integer percentiles come from an exact histogram over [min, max] (cv2.calcHist), not
a sort; float percentiles are estimated from a regular grid of at most ~65k pixels (typically
within 1 % of the range of the exact value).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from occo_ros.params import THERMAL_MODES

MODES = THERMAL_MODES
_DTYPES = (np.uint8, np.uint16, np.float32, np.float64)
_FLOAT_SAMPLE = 65536  # float percentiles: about this many pixels, on a regular grid


def normalize_thermal(image: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """``(image - lo) / (hi - lo)`` clipped to [0, 1] as float32 (H, W); NaN/inf map to 0.

    ``lo``, ``hi``: raw values (counts, degrees, ...) mapped to 0 and 1; ``hi == lo`` gives
    1 above ``lo`` and 0 elsewhere. Raises ValueError for ``hi < lo``, non-finite bounds or
    an unsupported image.
    """
    image = _as_thermal(image)
    lo, hi = float(lo), float(hi)
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi < lo:
        raise ValueError(f'thermal range needs finite lo <= hi, got lo={lo}, hi={hi}')
    return _normalize(image, lo, hi, _nonfinite(image))


class ThermalNormalizer:
    """Per-frame thermal normalisation with one of :data:`MODES` (see the module docstring).

    ``lo``/``hi`` are used by ``'fixed'`` only (they are accepted and checked in every mode
    so one parameter set can switch modes). ``percentiles``: (low, high) in [0, 100], used by
    ``'percentile'`` and ``'smoothed'``. ``smoothing`` in (0, 1] and ``jump_frames`` >= 1:
    ``'smoothed'`` only. Not thread-safe: one instance per image stream.
    """

    def __init__(self, mode: str = 'smoothed', lo: float | None = None,
                 hi: float | None = None, percentiles: tuple[float, float] = (1.0, 99.0),
                 smoothing: float = 0.1, jump_frames: int = 3) -> None:
        if mode not in MODES:
            raise ValueError(f'unknown thermal normalisation mode {mode!r}; allowed: '
                             f'{", ".join(MODES)}')
        if (lo is None) != (hi is None):
            raise ValueError(f'give both lo and hi or neither, got lo={lo}, hi={hi}')
        if lo is not None and not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f'thermal range needs finite lo < hi, got lo={lo}, hi={hi}')
        low, high = (float(p) for p in percentiles)
        if not 0.0 <= low < high <= 100.0:
            raise ValueError(f'percentiles={tuple(percentiles)} must satisfy '
                             '0 <= low < high <= 100')
        if not 0.0 < smoothing <= 1.0:
            raise ValueError(f'smoothing={smoothing} must be in (0, 1]')
        if jump_frames < 1:
            raise ValueError(f'jump_frames={jump_frames} must be at least 1')
        self.mode = mode
        self.lo, self.hi = lo, hi
        self.percentiles = (low, high)
        self.smoothing = float(smoothing)
        self.jump_frames = int(jump_frames)
        self._range: tuple[float, float] | None = None
        self._jumps = 0

    @property
    def range(self) -> tuple[float, float] | None:
        """The (lo, hi) raw range of the last frame; None before the first one."""
        return self._range

    def reset(self) -> None:
        """Forget the smoothed range; the next frame starts afresh."""
        self._range = None
        self._jumps = 0

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Update the range from ``image`` and return it normalised, float32 (H, W) [0, 1]."""
        image = _as_thermal(image)
        bad = _nonfinite(image)
        lo, hi = self._update(image, bad)
        return _normalize(image, lo, hi, bad)

    def update(self, image: np.ndarray) -> tuple[float, float]:
        """Update the range from ``image`` without normalising it; returns (lo, hi).

        For statistics taken from one image and applied to another, e.g. the raw thermal
        frame and its registered version, whose zero border must not count:
        ``normalize_thermal(warped, *normalizer.update(raw))``.
        """
        image = _as_thermal(image)
        return self._update(image, _nonfinite(image))

    def _update(self, image: np.ndarray, bad: np.ndarray | None) -> tuple[float, float]:
        if self.mode == 'fixed':
            self._range = _fixed_range(image, self.lo, self.hi)
        elif self.mode == 'minmax':
            self._range = _min_max(image, bad)
        elif self.mode == 'percentile':
            self._range = _percentile_range(image, bad, self.percentiles)
        else:
            self._range = self._smooth(_percentile_range(image, bad, self.percentiles))
        return self._range

    def _smooth(self, frame: tuple[float, float]) -> tuple[float, float]:
        if self._range is None:
            return frame
        lo, hi = self._range
        if frame[0] > hi or frame[1] < lo:  # no overlap: a glitch or a real jump
            self._jumps += 1
            if self._jumps < self.jump_frames:
                return self._range
            self._jumps = 0
            return frame
        self._jumps = 0
        a = self.smoothing
        return lo + a * (frame[0] - lo), hi + a * (frame[1] - hi)


def _as_thermal(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim != 2:
        raise ValueError(f'a thermal image must have shape (H, W) or (H, W, 1), got '
                         f'{image.shape}')
    if image.dtype not in _DTYPES:
        raise ValueError(f'thermal images must be uint8, uint16, float32 or float64, got '
                         f'{image.dtype}')
    if image.size == 0:
        raise ValueError(f'empty thermal image of shape {image.shape}')
    return image


def _nonfinite(image: np.ndarray) -> np.ndarray | None:
    """Mask of NaN/inf pixels of a float image, None when there are none (the usual case)."""
    if image.dtype.kind != 'f':
        return None
    finite = np.isfinite(image)
    return None if finite.all() else ~finite


def _normalize(image: np.ndarray, lo: float, hi: float,
               bad: np.ndarray | None) -> np.ndarray:
    if hi > lo:
        scale = 1.0 / (hi - lo)
        # one pass: convert to float32 while scaling and shifting
        out = cv2.addWeighted(image, scale, image, 0.0, -lo * scale, dtype=cv2.CV_32F)
        np.clip(out, 0.0, 1.0, out=out)
    else:
        out = np.greater(image, lo).astype(np.float32)
    if bad is not None:
        out[bad] = 0.0
    return out


def _fixed_range(image: np.ndarray, lo: float | None, hi: float | None) -> tuple[float, float]:
    if lo is not None:
        return float(lo), float(hi)
    if image.dtype.kind == 'f':
        raise ValueError("'fixed' thermal normalisation of float images needs lo and hi "
                         '(e.g. temperatures in degrees)')
    return 0.0, float(np.iinfo(image.dtype).max)


def _finite_values(image: np.ndarray, bad: np.ndarray | None) -> np.ndarray | None:
    """The finite pixels of a float image with some NaN/inf; None when there are none."""
    values = image[~bad]
    return values if values.size else None


def _min_max(image: np.ndarray, bad: np.ndarray | None) -> tuple[float, float]:
    if bad is None:
        lo, hi = cv2.minMaxLoc(image)[:2]
        return float(lo), float(hi)
    values = _finite_values(image, bad)
    if values is None:
        return 0.0, 0.0
    return float(values.min()), float(values.max())


def _percentile_range(image: np.ndarray, bad: np.ndarray | None,
                      percentiles: tuple[float, float]) -> tuple[float, float]:
    if image.dtype.kind == 'f':
        return _float_percentiles(image, bad, percentiles)
    lo, hi = cv2.minMaxLoc(image)[:2]
    if lo == hi:
        return float(lo), float(hi)
    # exact: one bin per integer value in [lo, hi]
    counts = cv2.calcHist([image], [0], None, [int(hi - lo) + 1], [lo, hi + 1]).ravel()
    cdf = np.cumsum(counts, dtype=np.float64)
    # numpy's 'linear' method: the order statistics at floor/ceil of p/100 * (n - 1)
    position = np.asarray(percentiles) / 100.0 * (cdf[-1] - 1.0)
    below = np.floor(position)
    ranks = np.minimum(np.concatenate([below, below + 1.0]), cdf[-1] - 1.0)
    values = np.searchsorted(cdf, ranks, side='right') + lo
    low, high = values[:2] + (values[2:] - values[:2]) * (position - below)
    return float(low), float(high)


def _float_percentiles(image: np.ndarray, bad: np.ndarray | None,
                       percentiles: tuple[float, float]) -> tuple[float, float]:
    stride = max(1, math.ceil(math.sqrt(image.size / _FLOAT_SAMPLE)))
    sample = image[::stride, ::stride]
    if bad is not None:
        # fall back to every pixel when the grid misses the few finite ones
        sample = _finite_values(sample, bad[::stride, ::stride])
        if sample is None:
            sample = _finite_values(image, bad)
        if sample is None:
            return 0.0, 0.0
    low, high = np.percentile(sample, percentiles)
    return float(low), float(high)
