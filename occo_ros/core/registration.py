"""Registration: the thermal and RGB images resampled into one fusion frame.

Coordinates. A pixel ``i`` covers the continuous interval [i, i + 1) and its centre is at
i + 0.5; *normalised* coordinates divide continuous ones by the image size, so (u, v) =
(x / W, y / H) spans [0, 1] over any image whatever its resolution. OpenCV's pixel
coordinates (what cv2.findHomography, corner detectors and camera matrices use) put the
centre of pixel ``i`` at ``i``: x_opencv = x - 0.5.

Geometry (all sizes are (width, height) in pixels, like OpenCV):

* ``homography`` (3x3) maps normalised thermal coordinates to normalised RGB coordinates.
  The identity means both cameras see the same field of view (boresighted, same framing).
  A calibration in OpenCV pixels converts with :func:`pixel_to_normalized_homography`.
* ``crop = (x, y, w, h)`` in normalised RGB coordinates is the part of the RGB image that
  forms the fusion frame ((0, 0, 1, 1) = the whole RGB image). The frame is resampled to the
  requested size; a crop whose aspect differs from the size's is stretched. ``crop=None``
  (automatic) is :func:`aspect_crop`: the largest centred RGB crop with the output's aspect,
  chosen per RGB image size, so nothing is stretched.

The thermal image goes through one bilinear warp (outside its field of view: 0); the RGB
crop through slicing and cv2.resize (or one bilinear affine warp when its edges fall between
RGB pixels, so both images always share the exact geometry). A warp that is only a scale
and a shift of a pixel-aligned window is done as a slice + resize (much faster than a warp;
the identity is free: a view of the input). Downscaling by 2x or more first halves the image with
INTER_AREA (exact 2x2 averaging: OpenCV's general INTER_AREA is ~10x slower than bilinear),
then finishes with INTER_LINEAR, which averages correctly down to 2x.

Lens distortion. With a :class:`CameraModel` (K, D of a camera at a calibrated size) for a
camera, the homography and crop act on that camera's *undistorted* image (the pinhole image
with the same K, as cv2.undistort makes it), and the image goes through one precomputed
bilinear remap that undistorts, warps and resizes at once, straight from the raw image to the
requested size (K scales with the image size when the runtime images differ from the
calibrated size). As with the slice path, a remap that shrinks by 2x or more everywhere first
halves the raw image with exact 2x2 averaging (bilinear alone would alias there). The maps are
fixed-point for uint8 images (OpenCV's vectorised path) and float for uint16/float32 ones
(OpenCV has no vectorised fixed-point path for those: the float maps are ~2.4x faster and give
the same pixels).
"""

from __future__ import annotations

from collections.abc import Sequence
import math
from typing import NamedTuple

import cv2
import numpy as np

IDENTITY = np.eye(3)
IDENTITY.flags.writeable = False
FULL_CROP = (0.0, 0.0, 1.0, 1.0)
_ALIGN_TOL = 1e-6   # pixels: a window edge this close to an integer is on the pixel grid
_MAX_PLANS = 32
DISTORTION_MODELS = ('plumb_bob', 'rational_polynomial', 'equidistant')
#: Registration sanity (Registration.thermal_coverage): below MIN_COVERAGE of the fusion
#: frame covered by thermal pixels a calibration is refused (the fused image would be mostly
#: visible-only), below LOW_COVERAGE it is a WARN in health.
MIN_COVERAGE, LOW_COVERAGE = 0.25, 0.5


class CameraModel(NamedTuple):
    """A camera's intrinsics as sensor_msgs/CameraInfo gives them: K (3x3), D, the
    distortion model ('plumb_bob', 'rational_polynomial' or 'equidistant' = fisheye) and the
    (width, height) K refers to."""

    k: np.ndarray
    d: np.ndarray
    distortion_model: str
    size: tuple[int, int]

    @classmethod
    def checked(cls, k: Sequence, d: Sequence, distortion_model: str,
                size: tuple[int, int]) -> CameraModel:
        """Validated model; raises ValueError naming what is wrong."""
        k = _matrix(k, (3, 3), 'K')
        d = np.asarray(d, dtype=np.float64).ravel()
        if not (np.isfinite(k).all() and np.isfinite(d).all()):
            raise ValueError(f'camera K and D must be finite, got K={k.tolist()} '
                             f'D={d.tolist()}')
        if k[0, 0] <= 0 or k[1, 1] <= 0 or k[0, 1] != 0 or k[1, 0] != 0 or k[2, 0] != 0 \
                or k[2, 1] != 0 or k[2, 2] != 1:
            raise ValueError(f'camera K must be [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] with '
                             f'fx, fy > 0; got {k.tolist()}')
        allowed = {'plumb_bob': (4, 5, 8, 12, 14), 'rational_polynomial': (8, 12, 14),
                   'equidistant': (4,)}
        if distortion_model not in allowed:
            raise ValueError(f'distortion model {distortion_model!r} is not one of '
                             f'{list(DISTORTION_MODELS)}')
        if len(d) not in allowed[distortion_model]:
            raise ValueError(f'{distortion_model} needs {allowed[distortion_model]} '
                             f'distortion coefficients, got {len(d)}')
        return cls(k, d, distortion_model, _check_size(size, 'camera size'))

    def scaled_to(self, size: tuple[int, int]) -> np.ndarray:
        """K for the same camera delivering images of ``size`` (pixel-centre aware)."""
        return np.linalg.inv(_pixel_to_normalized(size)) @ _pixel_to_normalized(
            self.size) @ self.k if size != self.size else self.k.copy()

    def distort(self, points: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """Undistorted OpenCV pixel coordinates (N, 2) of an image of ``size`` -> where they
        are in the raw (distorted) image."""
        k = self.scaled_to(size)
        normalized = cv2.undistortPoints(  # pixel -> ideal normalised camera coordinates
            points.reshape(-1, 1, 2).astype(np.float64), k, None)
        if self.distortion_model == 'equidistant':
            raw = cv2.fisheye.distortPoints(normalized, k, self.d)
        else:
            xyz = cv2.convertPointsToHomogeneous(normalized).astype(np.float64)
            raw, _ = cv2.projectPoints(xyz, np.zeros(3), np.zeros(3), k, self.d)
        return raw.reshape(-1, 2)


def pixel_to_normalized_homography(h_px: np.ndarray, thermal_size: tuple[int, int],
                                   rgb_size: tuple[int, int], name: str = 'h_px',
                                   ) -> np.ndarray:
    """A thermal->RGB homography in OpenCV pixel coordinates, in normalised coordinates.

    ``h_px`` maps thermal pixel coordinates (OpenCV convention: the centre of pixel (0, 0)
    is (0, 0), as cv2.findHomography gets them from detected corners) of a ``thermal_size``
    image to RGB pixel coordinates of an ``rgb_size`` image. Returns the 3x3 homography for
    :class:`Registration`, scaled so its bottom-right element is 1 where possible. ``name``
    names ``h_px`` in errors.
    """
    h_px = _check_homography(h_px, name)
    thermal = _pixel_to_normalized(_check_size(thermal_size, 'thermal_size'))
    rgb = _pixel_to_normalized(_check_size(rgb_size, 'rgb_size'))
    return _unit_scale(rgb @ h_px @ np.linalg.inv(thermal))


def aspect_crop(rgb_size: tuple[int, int],
                output_size: tuple[int, int]) -> tuple[float, float, float, float]:
    """The largest centred crop (x, y, w, h, normalised) of an ``rgb_size`` image whose
    aspect is ``output_size``'s: e.g. 1280x720 into 640x512 keeps the centred 900x720."""
    rgb_w, rgb_h = _check_size(rgb_size, 'rgb_size')
    out_w, out_h = _check_size(output_size, 'output_size')
    w = min(1.0, rgb_h * out_w / (out_h * rgb_w))
    h = min(1.0, rgb_w * out_h / (out_w * rgb_h))
    return ((1.0 - w) / 2, (1.0 - h) / 2, w, h)


class Registration:
    """Maps thermal and RGB images into the fusion frame (see the module docstring).

    ``output_size`` (W, H) is the default size of every method's result (the published
    image); ``size`` arguments override it (e.g. the network input size). Resampling plans
    are cached per input shape and size. ``thermal_camera`` / ``rgb_camera``: undistort that
    camera's images (see the module docstring). ``source`` names where the geometry came
    from (a calibration file, its method and error) for diagnostics.
    """

    def __init__(self, homography: np.ndarray | None = None,
                 crop: Sequence[float] | None = FULL_CROP, *, output_size: tuple[int, int],
                 thermal_camera: CameraModel | None = None,
                 rgb_camera: CameraModel | None = None,
                 source: dict[str, str] | None = None) -> None:
        self.homography = _check_homography(IDENTITY if homography is None else homography,
                                            'homography')
        self.crop = None if crop is None else _check_crop(crop)    # None: aspect_crop
        self.output_size = _check_size(output_size, 'output_size')
        self.thermal_camera = thermal_camera
        self.rgb_camera = rgb_camera
        self.source = dict(source or {'calibration': 'parameters homography and crop'})
        self._plans: dict = {}

    def crop_for(self, rgb_size: tuple[int, int] | None) -> tuple[float, float, float, float]:
        """The crop used with RGB images of ``rgb_size`` (needed by the automatic crop)."""
        if self.crop is not None:
            return self.crop
        if rgb_size is None:
            raise ValueError('the automatic crop (crop=None) depends on the RGB image size: '
                             'pass rgb_size')
        return aspect_crop(rgb_size, self.output_size)

    def thermal_matrix(self, thermal_size: tuple[int, int],
                       size: tuple[int, int] | None = None,
                       rgb_size: tuple[int, int] | None = None) -> np.ndarray:
        """3x3 map from thermal OpenCV pixel coordinates to fusion-frame pixel coordinates
        (``rgb_size``: the paired RGB image's, for the automatic crop)."""
        thermal = _pixel_to_normalized(_check_size(thermal_size, 'thermal_size'))
        return _unit_scale(self._frame_matrix(size, rgb_size) @ self.homography @ thermal)

    def rgb_matrix(self, rgb_size: tuple[int, int],
                   size: tuple[int, int] | None = None) -> np.ndarray:
        """3x3 affine map from RGB OpenCV pixel coordinates to fusion-frame pixel
        coordinates."""
        rgb = _pixel_to_normalized(_check_size(rgb_size, 'rgb_size'))
        return self._frame_matrix(size, rgb_size) @ rgb

    def warp_thermal(self, thermal: np.ndarray, size: tuple[int, int] | None = None,
                     rgb_size: tuple[int, int] | None = None) -> np.ndarray:
        """The thermal image (H, W) in the fusion frame, (size[1], size[0]), same dtype.

        Bilinear; pixels outside the thermal field of view are 0. Keep raw uint16 counts and
        normalise afterwards (fewer pixels, and the statistics can come from the raw frame,
        see thermal.ThermalNormalizer.update). The identity returns a view of ``thermal``.
        """
        thermal = np.asarray(thermal)
        if thermal.ndim == 3 and thermal.shape[2] == 1:
            thermal = thermal[:, :, 0]
        if thermal.ndim != 2 or thermal.size == 0:
            raise ValueError(f'thermal image must have shape (H, W), got {thermal.shape}')
        size = self._size(size)
        key = ('thermal', thermal.shape, thermal.dtype, size, self.crop_for(rgb_size))
        if key not in self._plans:
            matrix = self.thermal_matrix((thermal.shape[1], thermal.shape[0]), size, rgb_size)
            self._store(key, _plan(matrix, thermal, size, self.thermal_camera))
        return _resample(thermal, self._plans[key], size, cv2.BORDER_CONSTANT)

    def crop_rgb(self, rgb: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
        """The crop of the RGB image (H, W, C) or (H, W), resized to ``size``, same dtype.

        May return a view of ``rgb`` when no resize is needed; do not modify it in place.
        """
        rgb = np.asarray(rgb)
        if rgb.ndim not in (2, 3) or rgb.size == 0:
            raise ValueError(f'RGB image must have shape (H, W, C) or (H, W), got {rgb.shape}')
        size = self._size(size)
        key = ('rgb', rgb.shape, rgb.dtype, size)
        if key not in self._plans:
            matrix = self.rgb_matrix((rgb.shape[1], rgb.shape[0]), size)
            self._store(key, _plan(matrix, rgb, size, self.rgb_camera))
        # the crop lies inside the image: replicate its edge into the half-pixel fringe
        return _resample(rgb, self._plans[key], size, cv2.BORDER_REPLICATE)

    def adapt_camera_matrices(self, k: np.ndarray, p: np.ndarray, rgb_size: tuple[int, int],
                              size: tuple[int, int] | None = None,
                              ) -> tuple[np.ndarray, np.ndarray]:
        """The RGB camera's K (3x3) and P (3x4) for the fusion frame at ``size``.

        ``rgb_size`` is the (width, height) the RGB CameraInfo describes. Crop and resize act
        on pixel coordinates only: fx, fy (and P's Tx, Ty) scale, cx, cy shift and scale,
        accounting for pixel centres; distortion D and rectification R are unchanged (with an
        ``rgb_camera`` the fused image is undistorted: its D is zero, see ``undistorts_rgb``).
        """
        k = _matrix(k, (3, 3), 'K')
        p = _matrix(p, (3, 4), 'P')
        transform = self.rgb_matrix(rgb_size, size)
        return transform @ k, transform @ p

    def thermal_coverage(self, rgb_size: tuple[int, int] | None = None,
                         samples: int = 64) -> float:
        """Share (0-1) of the fusion frame that thermal pixels cover after the warp, on a
        ``samples`` x ``samples`` grid of frame points mapped back through the crop and the
        homography (lens distortion ignored). Without ``rgb_size`` an automatic crop is taken
        as the whole RGB image (an RGB camera with the output's aspect)."""
        x, y, w, h = FULL_CROP if self.crop is None and rgb_size is None \
            else self.crop_for(rgb_size)
        u = (np.arange(samples) + 0.5) / samples
        uu, vv = np.meshgrid(x + u * w, y + u * h)
        rgb = np.stack([uu.ravel(), vv.ravel(), np.ones(uu.size)])
        thermal = np.linalg.inv(self.homography) @ rgb
        with np.errstate(divide='ignore', invalid='ignore'):
            tx, ty = thermal[0] / thermal[2], thermal[1] / thermal[2]
        inside = (thermal[2] > 0) & (tx >= 0) & (tx <= 1) & (ty >= 0) & (ty <= 1)
        return float(inside.mean())

    @property
    def undistorts_rgb(self) -> bool:
        """Whether the RGB image is undistorted (the fused image then has no distortion)."""
        return self.rgb_camera is not None

    def _size(self, size: tuple[int, int] | None) -> tuple[int, int]:
        return self.output_size if size is None else _check_size(size, 'size')

    def _frame_matrix(self, size: tuple[int, int] | None,
                      rgb_size: tuple[int, int] | None) -> np.ndarray:
        """Normalised RGB coordinates -> fusion-frame OpenCV pixel coordinates."""
        width, height = self._size(size)
        x, y, w, h = self.crop_for(rgb_size)
        return np.array([[width / w, 0.0, -x * width / w - 0.5],
                         [0.0, height / h, -y * height / h - 0.5],
                         [0.0, 0.0, 1.0]])

    def _store(self, key: tuple, plan: tuple) -> None:
        if len(self._plans) >= _MAX_PLANS:  # sizes changing all the time: keep it bounded
            self._plans.clear()
        self._plans[key] = plan


def _plan(matrix: np.ndarray, image: np.ndarray, size: tuple[int, int],
          camera: CameraModel | None = None) -> tuple:
    """How to resample images like ``image`` (shape and dtype) with ``matrix`` (source ->
    destination OpenCV pixel coordinates): ('slice', rows, cols) for a scaled and shifted
    pixel-aligned window, else ('affine', 2x3) or ('perspective', 3x3); with a ``camera``
    model (matrix on the undistorted image) ('remap', halvings, map1, map2): undistortion
    and warp in one lookup, after ``halvings`` exact 2x2 reductions."""
    shape = image.shape
    if camera is not None:
        width, height = size
        grid = np.mgrid[0:height, 0:width][::-1].reshape(2, -1).T.astype(np.float64)
        undistorted = cv2.perspectiveTransform(grid[:, None], np.linalg.inv(matrix))
        raw = camera.distort(undistorted.reshape(-1, 2), (shape[1], shape[0]))
        return _remap_plan(raw.reshape(height, width, 2), shape, image.dtype)
    window = _aligned_window(matrix, shape, size)
    if window is not None:
        return ('slice',) + window
    if abs(matrix[2, 0]) < 1e-12 and abs(matrix[2, 1]) < 1e-12:
        return ('affine', matrix[:2] / matrix[2, 2])
    return ('perspective', matrix)


def _remap_plan(maps: np.ndarray, shape: tuple[int, ...], dtype: np.dtype) -> tuple:
    """('remap', halvings, map1, map2) for raw source coordinates ``maps`` (H, W, 2) of each
    destination pixel: halve the source while the map shrinks it by >= 2x everywhere (as
    _resample's slice path does), then the fastest exact map format for ``dtype``."""
    step_x = np.hypot(*np.diff(maps, axis=1).transpose(2, 0, 1)).min(initial=np.inf)
    step_y = np.hypot(*np.diff(maps, axis=0).transpose(2, 0, 1)).min(initial=np.inf)
    halvings, (height, width) = 0, shape[:2]
    while min(step_x, step_y) >= 2 ** (halvings + 1) and height % 2 == 0 and width % 2 == 0:
        halvings, height, width = halvings + 1, height // 2, width // 2
    # continuous coordinates halve: x_half + 0.5 = (x + 0.5) / 2
    maps = ((maps + 0.5) / 2 ** halvings - 0.5).astype(np.float32)
    if dtype == np.uint8:   # fixed-point maps (1/32 px): the vectorised 8-bit path
        return ('remap', halvings) + cv2.convertMaps(maps, None, cv2.CV_16SC2)
    return ('remap', halvings, maps[..., 0].copy(), maps[..., 1].copy())


def _aligned_window(matrix: np.ndarray, shape: tuple[int, ...],
                    size: tuple[int, int]) -> tuple[slice, slice] | None:
    """The source rows/columns that map exactly onto the destination, if ``matrix`` is a
    positive scale plus shift whose destination frame has pixel-aligned source edges."""
    if abs(matrix[0, 1]) > 1e-12 or abs(matrix[1, 0]) > 1e-12:
        return None
    if abs(matrix[2, 0]) > 1e-12 or abs(matrix[2, 1]) > 1e-12:
        return None
    affine = matrix[:2] / matrix[2, 2]
    bounds = []
    for axis, extent, dst in ((0, shape[1], size[0]), (1, shape[0], size[1])):
        scale, offset = affine[axis, axis], affine[axis, 2]
        if scale <= 0:
            return None
        # continuous coordinates: dst = scale * src + (offset + 0.5 - 0.5 * scale)
        shift = offset + 0.5 - 0.5 * scale
        start, stop = -shift / scale, (dst - shift) / scale
        first, last = round(start), round(stop)
        if abs(start - first) > _ALIGN_TOL or abs(stop - last) > _ALIGN_TOL:
            return None
        if not 0 <= first < last <= extent:
            return None
        bounds.append(slice(first, last))
    return bounds[1], bounds[0]


def _resample(image: np.ndarray, plan: tuple, size: tuple[int, int],
              border: int) -> np.ndarray:
    kind = plan[0]
    if kind == 'remap':
        for _ in range(plan[1]):
            image = cv2.resize(image, (image.shape[1] // 2, image.shape[0] // 2),
                               interpolation=cv2.INTER_AREA)
        return cv2.remap(image, plan[2], plan[3], cv2.INTER_LINEAR, borderMode=border,
                         borderValue=0)
    if kind == 'affine':
        return cv2.warpAffine(image, plan[1], size, flags=cv2.INTER_LINEAR,
                              borderMode=border, borderValue=0)
    if kind == 'perspective':
        return cv2.warpPerspective(image, plan[1], size, flags=cv2.INTER_LINEAR,
                                   borderMode=border, borderValue=0)
    window = image[plan[1], plan[2]]
    width, height = size
    # exact 2x2 box averaging while at least 2x too large (and evenly divisible)
    while (window.shape[1] >= 2 * width and window.shape[0] >= 2 * height
           and window.shape[1] % 2 == 0 and window.shape[0] % 2 == 0):
        window = cv2.resize(window, (window.shape[1] // 2, window.shape[0] // 2),
                            interpolation=cv2.INTER_AREA)
    if (window.shape[1], window.shape[0]) == size:
        return window
    return cv2.resize(window, size, interpolation=cv2.INTER_LINEAR)


def _pixel_to_normalized(size: tuple[int, int]) -> np.ndarray:
    """OpenCV pixel coordinates -> normalised coordinates of an image of ``size``."""
    width, height = size
    return np.array([[1.0 / width, 0.0, 0.5 / width],
                     [0.0, 1.0 / height, 0.5 / height],
                     [0.0, 0.0, 1.0]])


def _unit_scale(matrix: np.ndarray) -> np.ndarray:
    return matrix / matrix[2, 2] if abs(matrix[2, 2]) > 1e-12 else matrix


def _matrix(value: np.ndarray, shape: tuple[int, int], name: str) -> np.ndarray:
    array = np.asarray(value, dtype=np.float64)
    if array.size != shape[0] * shape[1]:
        raise ValueError(f'{name} must have {shape[0]}x{shape[1]} elements, got shape '
                         f'{array.shape}')
    return array.reshape(shape)


def _check_homography(value: np.ndarray, name: str) -> np.ndarray:
    h = _matrix(value, (3, 3), name)
    if not np.isfinite(h).all():
        raise ValueError(f'{name} has non-finite elements: {h.tolist()}')
    condition = np.linalg.cond(h)
    if not condition < 1e12:
        raise ValueError(f'{name} is not invertible (determinant {np.linalg.det(h):.3g}, '
                         f'condition number {condition:.3g}): {h.tolist()}')
    # the image must stay on one side of the line at infinity: w > 0 at the four corners
    corners = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 1.0], [0.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    w = corners @ h[2]
    if (w < 0).all():
        h = -h  # same homography, positive w
    elif not (w > 0).all():
        raise ValueError(f'{name} maps part of the image through infinity (projective w '
                         f'{w.round(6).tolist()} at the corners): {h.tolist()}')
    return _unit_scale(h)


def _check_crop(crop: Sequence[float]) -> tuple[float, float, float, float]:
    values = tuple(float(v) for v in crop)
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise ValueError(f'crop must be 4 finite numbers (x, y, w, h), got {crop!r}')
    x, y, w, h = values
    eps = 1e-9
    if w <= 0 or h <= 0:
        raise ValueError(f'crop {values} is empty: width and height must be positive')
    if x < 0 or y < 0 or x + w > 1 + eps or y + h > 1 + eps:
        raise ValueError(f'crop {values} lies outside the RGB image: need x, y >= 0, '
                         'x + w <= 1 and y + h <= 1 (normalised RGB coordinates)')
    return values


def _check_size(size: tuple[int, int], name: str) -> tuple[int, int]:
    try:
        width, height = size
        valid = int(width) == width and int(height) == height and width > 0 and height > 0
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise ValueError(f'{name} must be (width, height), two positive integers; got '
                         f'{size!r}')
    return int(width), int(height)
