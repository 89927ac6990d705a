"""The thermal -> RGB calibration file ``occo-calibrate`` writes and the node loads (no ROS).

A YAML mapping (format ``occo_ros_calibration``, version 1)::

    format: occo_ros_calibration
    version: 1
    method: edges                  # points, target or edges
    date: '2026-11-30T09:12:03Z'
    thermal_size: [640, 512]       # (width, height) the homography's thermal pixels refer to
    rgb_size: [1280, 720]
    homography_px: [[...], [...], [...]]  # thermal OpenCV pixels -> RGB OpenCV pixels
    homography: [9 numbers]        # the same map in normalised coordinates (the node's form,
                                   # registration.pixel_to_normalized_homography)
    crop: [x, y, w, h]             # fusion frame in normalised RGB coordinates
    output_size: [640, 512]        # the size the crop was chosen for
    error_px: 0.42                 # points/target: mean reprojection error, RGB pixels
    edge_distance_px: 2.1          # edges instead: mean edge distance, NOT an accuracy
    error_kind: ...                # what that number measures
    working_distance_m: null       # depth the homography is exact for (docs/CALIBRATION.md)
    pairs: [{name: ..., error_px: ...}, ...]   # edge_distance_px for edges
    thermal_camera: {k: [9], d: [...], distortion_model: plumb_bob}   # optional
    rgb_camera: {k: [9], d: [...], distortion_model: plumb_bob}       # optional

Pixel coordinates follow OpenCV (pixel centre at integers). With a camera entry, the
homography maps that camera's undistorted image (same K) and the node undistorts it first; K
refers to the image at ``thermal_size`` / ``rgb_size``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import datetime
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from occo_ros.core.registration import (
    FULL_CROP,
    MIN_COVERAGE,
    CameraModel,
    Registration,
    pixel_to_normalized_homography,
)
from occo_ros.params import IDENTITY, SPECS, FusionSettings

FORMAT, VERSION = 'occo_ros_calibration', 1
METHODS = ('points', 'target', 'edges')
_NORMALIZED_TOLERANCE = 1e-6


class CalibrationError(ValueError):
    """A calibration file that cannot be used; the message names the file and the field."""


@dataclass
class Calibration:
    """What a calibration file holds (see the module docstring)."""

    method: str
    thermal_size: tuple[int, int]
    rgb_size: tuple[int, int]
    homography_px: np.ndarray
    crop: tuple[float, float, float, float] = FULL_CROP
    output_size: tuple[int, int] = (640, 512)
    error_px: float = float('nan')
    error_kind: str = ''
    pairs: list[dict[str, Any]] = field(default_factory=list)
    thermal_camera: CameraModel | None = None
    rgb_camera: CameraModel | None = None
    working_distance_m: float | None = None
    date: str = ''

    @property
    def homography(self) -> np.ndarray:
        """The normalised thermal -> RGB homography the node applies."""
        return pixel_to_normalized_homography(self.homography_px, self.thermal_size,
                                              self.rgb_size, 'homography_px')

    @property
    def error_key(self) -> str:
        """The name of ``error_px`` in the file: an edges calibration's number is the
        distance between the two images' edges (never 0 across modalities), not a
        registration accuracy, so it is not called an error there."""
        return 'edge_distance_px' if self.method == 'edges' else 'error_px'

    def registration(self, output_size: tuple[int, int], name: str = '') -> Registration:
        """The Registration this calibration describes, producing ``output_size`` images."""
        source = {'calibration': name or f'{self.method} calibration',
                  'calibration_method': self.method,
                  f'calibration_{self.error_key}': f'{self.error_px:.3f}'}
        return Registration(self.homography, self.crop, output_size=output_size,
                            thermal_camera=self.thermal_camera, rgb_camera=self.rgb_camera,
                            source=source)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            'format': FORMAT, 'version': VERSION, 'method': self.method,
            'date': self.date or datetime.datetime.now(datetime.timezone.utc).strftime(
                '%Y-%m-%dT%H:%M:%SZ'),
            'thermal_size': list(self.thermal_size), 'rgb_size': list(self.rgb_size),
            'homography_px': [[float(v) for v in row] for row in self.homography_px],
            'homography': [float(v) for v in self.homography.ravel()],
            'crop': [float(v) for v in self.crop], 'output_size': list(self.output_size),
            self.error_key: float(self.error_px), 'error_kind': self.error_kind,
            'working_distance_m': self.working_distance_m,
            'pairs': [{k: (float(v) if isinstance(v, (float, np.floating)) else v)
                       for k, v in pair.items()} for pair in self.pairs]}
        for name in ('thermal_camera', 'rgb_camera'):
            camera = getattr(self, name)
            if camera is not None:
                data[name] = {'k': [float(v) for v in camera.k.ravel()],
                              'd': [float(v) for v in camera.d],
                              'distortion_model': camera.distortion_model}
        return data


def save_calibration(path: str | Path, calibration: Calibration) -> None:
    """Write ``calibration`` as YAML (the caller decides whether replacing is allowed)."""
    text = ('# occo_ros thermal -> RGB calibration, written by occo-calibrate.\n'
            '# Use it with the node/occo-bag parameter calibration_file.\n'
            + yaml.safe_dump(calibration.to_dict(), sort_keys=False, width=100))
    Path(path).write_text(text)


def load_calibration(path: str | Path) -> Calibration:
    """Read and validate a calibration file; raises CalibrationError naming the problem."""
    path = Path(path)

    def fail(message: str) -> CalibrationError:
        return CalibrationError(f'calibration file {path}: {message}')

    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise fail(f'cannot read it ({exc.strerror or exc})') from exc
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise fail(f'not valid YAML ({" ".join(str(exc).split())})') from exc
    if not isinstance(data, dict) or data.get('format') != FORMAT:
        raise fail(f'not an occo-calibrate file (needs "format: {FORMAT}")')
    if data.get('version') != VERSION:
        raise fail(f'version {data.get("version")!r} is not supported (this occo_ros reads '
                   f'version {VERSION})')
    missing = [k for k in ('method', 'thermal_size', 'rgb_size', 'homography_px')
               if k not in data]
    if missing:
        raise fail(f'missing {", ".join(missing)}')
    try:
        if data['method'] not in METHODS:
            raise ValueError(f'method {data["method"]!r} is not one of {list(METHODS)}')
        thermal_size = _size(data['thermal_size'], 'thermal_size')
        rgb_size = _size(data['rgb_size'], 'rgb_size')
        cameras = {name: _camera(data[name], size, name) if data.get(name) else None
                   for name, size in (('thermal_camera', thermal_size),
                                      ('rgb_camera', rgb_size))}
        calibration = Calibration(
            method=data['method'], thermal_size=thermal_size, rgb_size=rgb_size,
            homography_px=np.asarray(data['homography_px'], dtype=np.float64),
            crop=tuple(float(v) for v in data.get('crop', FULL_CROP)),
            output_size=_size(data.get('output_size', [640, 512]), 'output_size'),
            error_px=float(data.get('edge_distance_px', data.get('error_px', float('nan')))),
            error_kind=str(data.get('error_kind', '')), pairs=list(data.get('pairs') or []),
            working_distance_m=data.get('working_distance_m'), date=str(data.get('date', '')),
            **cameras)
        normalized = calibration.homography  # checks homography_px (3x3, invertible, ...)
        Registration(normalized, calibration.crop, output_size=calibration.output_size)
    except (TypeError, ValueError) as exc:
        raise fail(str(exc)) from exc
    if 'homography' in data:
        stored = np.asarray(data['homography'], dtype=np.float64).ravel()
        if stored.shape != (9,) or not np.allclose(stored / stored[8], normalized.ravel(),
                                                   atol=_NORMALIZED_TOLERANCE):
            raise fail('homography (normalised) does not match homography_px at the stored '
                       'thermal_size and rgb_size; was one edited by hand? Delete homography '
                       'to use homography_px')
    return calibration


def registration_from_params(params: FusionSettings) -> Registration:
    """The node's Registration: from ``calibration_file`` when set (which then must not be
    combined with non-default ``homography``/``crop``), else from those two parameters."""
    output_size = (params.output_width, params.output_height)
    if not params.calibration_file:
        crop = tuple(params.crop) if any(params.crop) else None   # all zeros: automatic
        return checked_coverage(Registration(np.asarray(params.homography).reshape(3, 3),
                                             crop, output_size=output_size))
    if tuple(params.homography) != IDENTITY or list(params.crop) != SPECS['crop'].default:
        raise CalibrationError(
            f'calibration_file={params.calibration_file} and the homography/crop parameters '
            'are both set; use one (the file holds the homography and crop)')
    calibration = load_calibration(params.calibration_file)
    return checked_coverage(calibration.registration(output_size, name=params.calibration_file))


def checked_coverage(registration: Registration) -> Registration:
    """``registration``, unless thermal pixels cover less than MIN_COVERAGE of its fusion
    frame (Registration.thermal_coverage): then CalibrationError naming where the geometry
    came from."""
    share = registration.thermal_coverage()
    if share < MIN_COVERAGE:
        raise CalibrationError(
            f'{registration.source["calibration"]}: the thermal image covers {share:.0%} of '
            f'the fused frame after the warp, at least {MIN_COVERAGE:.0%} is needed (a '
            'homography or crop that moves the thermal image off the frame): recalibrate or '
            'fix the homography/crop')
    return registration


def _size(value: Any, name: str) -> tuple[int, int]:
    if not (isinstance(value, (list, tuple)) and len(value) == 2
            and all(isinstance(v, int) and v > 0 for v in value)):
        raise ValueError(f'{name} must be [width, height], two positive integers; got '
                         f'{value!r}')
    return int(value[0]), int(value[1])


def _camera(value: Any, size: tuple[int, int], name: str) -> CameraModel:
    if not isinstance(value, dict) or not {'k', 'd'} <= set(value):
        raise ValueError(f'{name} must be a mapping with k (9 numbers), d and '
                         f'distortion_model; got {value!r}')
    try:
        return CameraModel.checked(value['k'], value['d'],
                                   value.get('distortion_model', 'plumb_bob'), size)
    except ValueError as exc:
        raise ValueError(f'{name}: {exc}') from exc
