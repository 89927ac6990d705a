"""Procedural night street seen by a thermal and an RGB camera (no ROS).

The live source of the demo and of the tests. ``SyntheticScene(config).thermal(t)`` returns a
uint16 frame of raw radiometric counts like a FLIR Boson/Lepton stream (sky ~7000-7250, street
and buildings ~7400-8000, people ~9500-11000, engines, wheels and exhausts up to ~12500, with
temporal noise, fixed-pattern noise and vignetting); ``.rgb(t)`` returns a dark uint8 BGR frame
of the same street at night (lit windows, street lights with halos and pools of light,
headlights), where people and car bodies are barely visible. People walk and vehicles drive
across the street at constant speed and wrap around. Every frame is a pure function of
(seed, t): the same (seed, t) always gives the same pixels, so frames of the two cameras can be
paired at any timestamps.

Geometry. The two cameras share one optical centre and axis. The RGB image spans normalised
coordinates u = x / width, v = y / height in [0, 1], where x, y are continuous pixel coordinates
(pixel i covers [i, i + 1)). The thermal camera sees the centred sub-rectangle
``SyntheticScene.thermal_crop`` = (x, y, w, h) of the RGB view that has the thermal aspect ratio
(full RGB height when the thermal image is relatively narrower; for 640x512 inside 1280x720:
(0.1484375, 0.0, 0.703125, 1.0)): relative to that crop the thermal image maps by the identity.
In the conventions of occo_ros.core.registration (homography: normalised thermal -> normalised
*whole* RGB coordinates; crop: the part of the RGB image that forms the fusion frame) a node fed
by this scene is configured with ``crop = thermal_crop`` and
``homography = thermal_homography`` = [[w, 0, x], [0, h, y], [0, 0, 1]]; the registration then
only resizes both images. ``camera_matrix`` gives matching pinhole intrinsics (RGB HFOV 90
degrees).

Speed. Backgrounds with baked-in sensor noise (``noise_frames`` per camera) and one sprite per
object, camera and walking phase (with a few noise variants) are rendered once in the
constructor (1-2 s and ~30 MB at the default sizes). A frame is then one array copy plus two
OpenCV calls per visible object: about 0.5 ms for one default thermal + RGB pair on one core.
``objects(t)`` reports where every object is in both images (for tests and inspection).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
import math
from pathlib import Path
import struct
import sys
import zlib

import cv2
import numpy as np

# Street layout in normalised RGB coordinates (v grows downwards).
_HORIZON_V = 0.5
_CAMERA_HEIGHT_M = 3.0          # camera on a mast: sets how large people and cars appear
_BUILDING_BASE_V = 0.535
_FAR_CURB_V = 0.585
_CENTRE_LINE_V = 0.715
_NEAR_CURB_V = 0.85
_FAR_WALK_V = (0.55, 0.58)      # foot rows of people on the far sidewalk
_NEAR_WALK_V = (0.88, 0.97)     # foot rows of people on the near sidewalk
_FAR_LANE_V = 0.655             # wheel contact rows; far lane drives left, near lane right
_NEAR_LANE_V = 0.79
_LAMP_HEIGHT_M = 7.0
_RGB_HFOV_DEG = 90.0

# Thermal camera, raw counts (uint16).
_T_SKY_TOP, _T_SKY_HORIZON = 7000.0, 7250.0
_T_SIDEWALK, _T_ROAD, _T_CURB, _T_MARKING = 7700.0, 7900.0, 7650.0, 7830.0
_T_POLE, _T_LAMP = 7450.0, 9200.0
_T_NOISE = 10.0                 # temporal noise std
_T_BLUR_PX = 0.8                # optics blur of the bolometer image

# RGB camera: shading = albedo * illumination + emission, in 8-bit display values.
_AMBIENT_BGR = np.array([20.0, 18.0, 16.0], np.float32)     # moonlight / sky glow, bluish
_SODIUM_BGR = np.array([0.55, 0.8, 1.0], np.float32)        # colour of the street lights
_RGB_BLUR_PX = 0.6

_WALK_PHASES = 8                # pre-rendered poses of one gait cycle
_SPRITE_VARIANTS = 3            # noise variants of each sprite, picked per frame
_SUPERSAMPLING = 4              # sprites are drawn 4x larger and averaged down (soft edges)
_GLOW_CUTOFF = 2.5              # glows are truncated Gaussians, zero beyond 2.5 sigma

_MAX_OBJECTS = 64
_MIN_SIDE, _MAX_SIDE = 16, 8192
_THERMAL, _RGB = 'thermal', 'rgb'


@dataclass(frozen=True)
class SceneConfig:
    """What the synthetic scene shows; validated on construction (ValueError).

    thermal_size, rgb_size: (width, height) in pixels, each side in [16, 8192].
    people, vehicles: number of moving objects of each kind, 0..64.
    seed: 0..2**32 - 1; with t it fixes every pixel.
    noise: add sensor noise (temporal, and for the thermal camera fixed-pattern noise and
        vignetting); False gives clean frames.
    noise_frames: noisy backgrounds pre-rendered per camera and picked per frame, 1..64
        (memory: noise_frames x one frame of each camera).
    """

    thermal_size: tuple[int, int] = (640, 512)
    rgb_size: tuple[int, int] = (1280, 720)
    people: int = 4
    vehicles: int = 2
    seed: int = 0
    noise: bool = True
    noise_frames: int = 8

    def __post_init__(self) -> None:
        for name in ('thermal_size', 'rgb_size'):
            size = getattr(self, name)
            if (not isinstance(size, (tuple, list)) or len(size) != 2
                    or not all(_is_int(s) and _MIN_SIDE <= s <= _MAX_SIDE for s in size)):
                raise ValueError(f'{name} must be (width, height) with integer sides in '
                                 f'[{_MIN_SIDE}, {_MAX_SIDE}], got {size!r}')
            object.__setattr__(self, name, (int(size[0]), int(size[1])))
        for name, low, high in (('people', 0, _MAX_OBJECTS), ('vehicles', 0, _MAX_OBJECTS),
                                ('seed', 0, 2**32 - 1), ('noise_frames', 1, 64)):
            value = getattr(self, name)
            if not _is_int(value) or not low <= value <= high:
                raise ValueError(f'{name} must be an integer in [{low}, {high}], got {value!r}')
        if not isinstance(self.noise, bool):
            raise ValueError(f'noise must be True or False, got {self.noise!r}')


@dataclass(frozen=True)
class SceneObject:
    """Where one moving object is at a time t.

    position: ground contact point (u, v) in normalised RGB coordinates.
    thermal_box, rgb_box: (x0, y0, x1, y1) integer pixel box of the object's opaque part
        (alpha >= 0.5, glows and headlight beams excluded) in each image, x1 and y1 exclusive;
        not clipped, so it may lie partly or wholly outside the image.
    """

    ident: int
    kind: str                       # 'person' or 'vehicle'
    position: tuple[float, float]
    thermal_box: tuple[int, int, int, int]
    rgb_box: tuple[int, int, int, int]


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


# --------------------------------------------------------------------------------------------
# Cameras


@dataclass(frozen=True)
class _View:
    """One camera: its pixel size and the rectangle of normalised RGB coordinates it sees."""

    width: int
    height: int
    region: tuple[float, float, float, float]

    def x(self, u: float) -> float:
        return (u - self.region[0]) / self.region[2] * self.width

    def y(self, v: float) -> float:
        return (v - self.region[1]) / self.region[3] * self.height

    def px_per_m(self, v_ground: float) -> float:
        """Pixels per metre for an upright object standing on the ground at row v_ground."""
        return (v_ground - _HORIZON_V) * self.height / self.region[3] / _CAMERA_HEIGHT_M

    def grid(self) -> tuple[np.ndarray, np.ndarray]:
        """Pixel-centre coordinates: u of shape (1, W) and v of shape (H, 1), float32."""
        x, y, w, h = self.region
        u = x + (np.arange(self.width, dtype=np.float32) + 0.5) * (w / self.width)
        v = y + (np.arange(self.height, dtype=np.float32) + 0.5) * (h / self.height)
        return u[None, :], v[:, None]

    def fill(self, image: np.ndarray, rect: Sequence[float], value: object) -> None:
        """Set the pixels of rect = (u0, v0, u1, v1), clipped to the image, to value."""
        x0, x1 = (min(max(round(self.x(u)), 0), self.width) for u in (rect[0], rect[2]))
        y0, y1 = (min(max(round(self.y(v)), 0), self.height) for v in (rect[1], rect[3]))
        image[y0:y1, x0:x1] = value


def _thermal_region(thermal_size: tuple[int, int],
                    rgb_size: tuple[int, int]) -> tuple[float, float, float, float]:
    """Centred rectangle of the RGB view with the thermal aspect ratio, normalised (x, y, w, h)."""
    ratio = (thermal_size[0] / thermal_size[1]) / (rgb_size[0] / rgb_size[1])
    if ratio <= 1.0:
        return ((1.0 - ratio) / 2.0, 0.0, ratio, 1.0)
    return (0.0, (1.0 - 1.0 / ratio) / 2.0, 1.0, 1.0 / ratio)


# --------------------------------------------------------------------------------------------
# Static street (buildings, lamps, road) shared by both cameras


@dataclass(frozen=True)
class _Window:
    rect: tuple[float, float, float, float]
    light: float                    # 0 = dark, else emission scale in (0, 1]
    tint: tuple[float, float, float]


@dataclass(frozen=True)
class _Building:
    rect: tuple[float, float, float, float]
    counts: float
    albedo: tuple[float, float, float]
    windows: tuple[_Window, ...]


@dataclass(frozen=True)
class _Layout:
    buildings: tuple[_Building, ...]
    lamps: tuple[float, ...]        # u of each lamp pole on the far sidewalk
    dashes: tuple[tuple[float, float], ...]     # (u0, u1) of the centre line dashes
    aspect: float                   # RGB width / height: u units per v unit of one metre


def _metres_to_u(metres: float, v_ground: float, aspect: float) -> float:
    return metres * (v_ground - _HORIZON_V) / _CAMERA_HEIGHT_M / aspect


def _metres_to_v(metres: float, v_ground: float) -> float:
    return metres * (v_ground - _HORIZON_V) / _CAMERA_HEIGHT_M


def _make_layout(rng: np.random.Generator, aspect: float) -> _Layout:
    base = _BUILDING_BASE_V
    floor_v = _metres_to_v(3.2, base)
    window_u, window_v = _metres_to_u(1.3, base, aspect), _metres_to_v(1.6, base)
    pitch_u = _metres_to_u(3.0, base, aspect)
    buildings = []
    u = -0.02
    while u < 1.02:
        width = float(rng.uniform(0.07, 0.17))
        top = float(rng.uniform(0.15, 0.42))
        windows = []
        floors = int((base - top - floor_v) / floor_v)
        columns = int((width - pitch_u) / pitch_u)
        lit_fraction = rng.uniform(0.08, 0.25)
        for row in range(floors):
            v0 = base - floor_v * (row + 1) - 0.3 * floor_v
            for col in range(columns):
                u0 = u + pitch_u * (col + 0.75)
                lit = rng.random() < lit_fraction
                tint = ((0.35, 0.7, 1.0) if rng.random() < 0.8 else (1.0, 0.75, 0.5))
                windows.append(_Window((u0, v0, u0 + window_u, v0 + window_v),
                                       float(rng.uniform(0.4, 1.0)) if lit else 0.0, tint))
        grey = rng.uniform(0.2, 0.45)
        albedo = tuple(float(grey * c) for c in rng.uniform(0.85, 1.15, 3))
        buildings.append(_Building((u, top, u + width, base), float(rng.uniform(7500, 7800)),
                                   albedo, tuple(windows)))
        u += width
    spacing = float(rng.uniform(0.25, 0.35))
    lamps = tuple(float(x) for x in np.arange(rng.uniform(0.0, spacing), 1.0, spacing))
    dash_u = _metres_to_u(3.0, _CENTRE_LINE_V, aspect)
    start = float(rng.uniform(-3 * dash_u, 0.0))
    dashes = tuple((float(d), float(d + dash_u)) for d in np.arange(start, 1.0, 3 * dash_u))
    return _Layout(tuple(buildings), lamps, dashes, aspect)


def _lamp_geometry(u_pole: float, aspect: float) -> dict[str, tuple[float, float, float, float]]:
    """Rectangles (u0, v0, u1, v1) of one street light standing on the far sidewalk."""
    base = (_BUILDING_BASE_V + _FAR_CURB_V) / 2.0
    top = base - _metres_to_v(_LAMP_HEIGHT_M, base)
    half_pole = _metres_to_u(0.09, base, aspect)
    arm = _metres_to_u(1.2, base, aspect)
    head_u, head_v = _metres_to_u(0.5, base, aspect), _metres_to_v(0.25, base)
    return {
        'pole': (u_pole - half_pole, top, u_pole + half_pole, base),
        'arm': (u_pole, top, u_pole + arm, top + _metres_to_v(0.12, base)),
        'head': (u_pole + arm - head_u, top, u_pole + arm, top + head_v),
    }


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cell_px: float) -> np.ndarray:
    """Zero-mean, roughly unit-std noise that varies over about cell_px pixels, float32."""
    small = (max(2, round(shape[1] / cell_px)), max(2, round(shape[0] / cell_px)))
    field = cv2.resize(rng.standard_normal(small[::-1], dtype=np.float32), shape[::-1],
                       interpolation=cv2.INTER_CUBIC)
    return (field - field.mean()) / max(float(field.std()), 1e-6)


def _ground_bands(view: _View, image: np.ndarray, values: Sequence[object]) -> None:
    """Paint the sidewalks, the road and the curbs with values = (sidewalk, road, curb)."""
    sidewalk, road, curb = values
    view.fill(image, (-1, _BUILDING_BASE_V, 2, _FAR_CURB_V), sidewalk)
    view.fill(image, (-1, _FAR_CURB_V, 2, _NEAR_CURB_V), road)
    view.fill(image, (-1, _NEAR_CURB_V, 2, 2), sidewalk)
    for v in (_FAR_CURB_V, _NEAR_CURB_V):
        view.fill(image, (-1, v - _metres_to_v(0.15, v), 2, v), curb)


def _thermal_background(view: _View, layout: _Layout, rng: np.random.Generator,
                        noise: bool) -> np.ndarray:
    """Static thermal scene in counts, float32 (H, W), with fixed-pattern noise if noise."""
    u, v = view.grid()
    shape = (view.height, view.width)
    sky = _T_SKY_TOP + (_T_SKY_HORIZON - _T_SKY_TOP) * np.clip(v / _HORIZON_V, 0.0, 1.0)
    image = np.broadcast_to(sky, shape).astype(np.float32)
    _ground_bands(view, image, (_T_SIDEWALK, _T_ROAD, _T_CURB))
    for u0, u1 in layout.dashes:
        view.fill(image, (u0, _CENTRE_LINE_V - 0.003, u1, _CENTRE_LINE_V + 0.003), _T_MARKING)
    for building in layout.buildings:
        view.fill(image, building.rect, building.counts)
        for window in building.windows:
            # Glass reflects the cold sky; a lit (heated) room shows through a little.
            view.fill(image, window.rect, building.counts - 120.0 + 220.0 * window.light)
    for u_pole in layout.lamps:
        parts = _lamp_geometry(u_pole, layout.aspect)
        view.fill(image, parts['pole'], _T_POLE)
        view.fill(image, parts['arm'], _T_POLE)
        view.fill(image, parts['head'], _T_LAMP)
    scale = view.height / 100.0
    image += 25.0 * _smooth_noise(rng, shape, 6.0 * scale) * (v > _HORIZON_V)
    image += 10.0 * _smooth_noise(rng, shape, 1.5 * scale)
    image = cv2.GaussianBlur(image, (0, 0), _T_BLUR_PX)
    if noise:
        # Vignetting: 150 counts darker in the corners than in the image centre.
        x = np.linspace(-1.0, 1.0, view.width, dtype=np.float32)[None, :]
        y = np.linspace(-1.0, 1.0, view.height, dtype=np.float32)[:, None]
        image -= 75.0 * (x * x + y * y)
        image += rng.normal(0.0, 8.0, (1, view.width)).astype(np.float32)    # column offsets
        image += rng.normal(0.0, 3.0, (view.height, 1)).astype(np.float32)   # row offsets
        image += rng.normal(0.0, 5.0, shape).astype(np.float32)              # pixel offsets
    return image


def _gaussian(u: np.ndarray, v: np.ndarray, centre: tuple[float, float],
              sigma: tuple[float, float], aspect: float) -> np.ndarray:
    """exp(-d^2 / 2) on the (u, v) grid, sigmas in v units (u is scaled by the aspect)."""
    du = (u - centre[0]) * aspect / sigma[0]
    dv = (v - centre[1]) / sigma[1]
    return np.exp(-0.5 * (du * du + dv * dv))


def _rgb_background(view: _View, layout: _Layout, rng: np.random.Generator) -> np.ndarray:
    """Static night RGB scene, float32 (H, W, 3) BGR display values (not clipped)."""
    u, v = view.grid()
    shape = (view.height, view.width)
    aspect = layout.aspect
    albedo = np.zeros((*shape, 3), np.float32)
    emission = np.zeros((*shape, 3), np.float32)
    # Sky: dark blue at the top, orange light pollution near the horizon.
    glow = np.clip(v / _HORIZON_V, 0.0, 1.0)[..., None] ** 3
    emission[:] = (np.array([14.0, 8.0, 6.0], np.float32)
                   + glow * np.array([14.0, 20.0, 30.0], np.float32))

    def paint(rect: Sequence[float], alb: object, emit: object = 0.0) -> None:
        view.fill(albedo, rect, alb)
        view.fill(emission, rect, emit)

    _ground_bands(view, albedo, (0.45, 0.3, 0.6))
    view.fill(emission, (-1, _BUILDING_BASE_V, 2, 2), 0.0)
    for u0, u1 in layout.dashes:
        paint((u0, _CENTRE_LINE_V - 0.003, u1, _CENTRE_LINE_V + 0.003), 0.8)
    for building in layout.buildings:
        paint(building.rect, building.albedo)
        for window in building.windows:
            light = np.array(window.tint, np.float32) * (210.0 * window.light)
            paint(window.rect, 0.05, light)
    illumination = np.broadcast_to(_AMBIENT_BGR, (*shape, 3)).astype(np.float32)
    for u_pole in layout.lamps:
        parts = _lamp_geometry(u_pole, aspect)
        paint(parts['pole'], 0.25)
        paint(parts['arm'], 0.25)
        head = parts['head']
        paint(head, 0.0, 255.0)
        centre = ((head[0] + head[2]) / 2.0, (head[1] + head[3]) / 2.0)
        # Pool of light on the sidewalk and road below, and on the facades around the head.
        pool = (1.6 * _gaussian(u, v, (centre[0], 0.6), (0.11, 0.035), aspect)
                + 0.8 * _gaussian(u, v, centre, (0.05, 0.09), aspect))
        illumination += (110.0 * pool)[..., None] * _SODIUM_BGR
        halo = (200.0 * _gaussian(u, v, centre, (0.006, 0.006), aspect)
                + 90.0 * _gaussian(u, v, centre, (0.018, 0.018), aspect)
                + 30.0 * _gaussian(u, v, centre, (0.06, 0.06), aspect))
        emission += halo[..., None] * _SODIUM_BGR
    scale = view.height / 100.0
    texture = (1.0 + 0.08 * _smooth_noise(rng, shape, 6.0 * scale)
               + 0.1 * _smooth_noise(rng, shape, 0.5 * scale))
    image = albedo * texture[..., None] * illumination + emission
    return cv2.GaussianBlur(image, (0, 0), _RGB_BLUR_PX)


# --------------------------------------------------------------------------------------------
# Sprites of moving objects


@dataclass(frozen=True)
class _Part:
    """One opaque shape of an object in metres (x forward, y up from the ground)."""

    shape: str                      # 'poly' (points), 'circle' (x, y, r),
    geometry: tuple                 # 'ellipse' (x, y, rx, ry), 'line' (x0, y0, x1, y1, width)
    counts: float
    bgr: tuple[float, float, float]


@dataclass(frozen=True)
class _Glow:
    """Additive light or heat around (x, y) metres, a Gaussian truncated at 2.5 sigma."""

    x: float
    y: float
    sigma: tuple[float, float]
    counts: float
    bgr: tuple[float, float, float]


@dataclass(frozen=True)
class _Sprite:
    """A pre-rendered object: frame = frame * inverse_alpha / full + premultiplied[k]."""

    inverse_alpha: np.ndarray       # (h, w) uint16 or (h, w, 3) uint8, (1 - alpha) * full scale
    premultiplied: tuple[np.ndarray, ...]   # alpha * value (+ glows), one per noise variant
    anchor: tuple[float, float]     # ground contact point in sprite pixels (x, y)
    box: tuple[int, int, int, int]  # opaque box in sprite pixels, exclusive end


def _part_bounds(part: _Part) -> tuple[float, float, float, float]:
    g = part.geometry
    if part.shape == 'poly':
        xs, ys = [p[0] for p in g], [p[1] for p in g]
        return min(xs), min(ys), max(xs), max(ys)
    if part.shape == 'circle':
        return g[0] - g[2], g[1] - g[2], g[0] + g[2], g[1] + g[2]
    if part.shape == 'ellipse':
        return g[0] - g[2], g[1] - g[3], g[0] + g[2], g[1] + g[3]
    half = g[4] / 2.0
    return (min(g[0], g[2]) - half, min(g[1], g[3]) - half,
            max(g[0], g[2]) + half, max(g[1], g[3]) + half)


def _draw_part(layer: np.ndarray, part: _Part, to_px: Callable[[float, float], tuple],
               scale: float, colour: tuple) -> None:
    """Rasterise part on layer (sub-pixel precise via cv2's fixed-point shift)."""
    shift = 4
    fixed = float(1 << shift)

    def point(x: float, y: float) -> tuple[int, int]:
        px, py = to_px(x, y)
        return round(px * fixed), round(py * fixed)

    g = part.geometry
    if part.shape == 'poly':
        points = np.array([point(x, y) for x, y in g], np.int32)
        cv2.fillPoly(layer, [points], colour, cv2.LINE_8, shift)
    elif part.shape == 'circle':
        cv2.circle(layer, point(g[0], g[1]), max(1, round(g[2] * scale * fixed)), colour, -1,
                   cv2.LINE_8, shift)
    elif part.shape == 'ellipse':
        axes = (max(1, round(g[2] * scale * fixed)), max(1, round(g[3] * scale * fixed)))
        cv2.ellipse(layer, point(g[0], g[1]), axes, 0.0, 0.0, 360.0, colour, -1, cv2.LINE_8,
                    shift)
    else:
        cv2.line(layer, point(g[0], g[1]), point(g[2], g[3]), colour,
                 max(1, round(g[4] * scale)), cv2.LINE_8, shift)


def _rasterise(parts: Sequence[_Part], glows: Sequence[_Glow], px_per_m: float, camera: str,
               flip: bool, rng: np.random.Generator, noise: bool) -> _Sprite:
    """Render an object (anchor = ground point x = 0, y = 0) for one camera at px_per_m."""
    thermal = camera == _THERMAL
    blur = _T_BLUR_PX if thermal else _RGB_BLUR_PX
    bounds = [_part_bounds(p) for p in parts]
    bounds += [(g.x - _GLOW_CUTOFF * g.sigma[0], g.y - _GLOW_CUTOFF * g.sigma[1],
                g.x + _GLOW_CUTOFF * g.sigma[0], g.y + _GLOW_CUTOFF * g.sigma[1]) for g in glows]
    pad = (3.0 * blur + 1.0) / px_per_m
    x_lo, y_lo = min(b[0] for b in bounds) - pad, min(b[1] for b in bounds) - pad
    x_hi, y_hi = max(b[2] for b in bounds) + pad, max(b[3] for b in bounds) + pad
    width = max(1, math.ceil((x_hi - x_lo) * px_per_m))
    height = max(1, math.ceil((y_hi - y_lo) * px_per_m))
    scale = px_per_m * _SUPERSAMPLING
    channels = 1 if thermal else 3

    def to_px(x: float, y: float) -> tuple[float, float]:
        return (x - x_lo) * scale, (y_hi - y) * scale

    big = (height * _SUPERSAMPLING, width * _SUPERSAMPLING)
    mask = np.zeros(big, np.float32)
    value = np.zeros(big if thermal else (*big, channels), np.float32)
    for part in parts:          # painter's order: later parts cover earlier ones
        _draw_part(mask, part, to_px, scale, (1.0,))
        _draw_part(value, part, to_px, scale, (part.counts,) if thermal else part.bgr)
    alpha = cv2.GaussianBlur(cv2.resize(mask, (width, height), interpolation=cv2.INTER_AREA),
                             (0, 0), blur)
    premultiplied = cv2.GaussianBlur(
        cv2.resize(value, (width, height), interpolation=cv2.INTER_AREA), (0, 0), blur)
    xs = x_lo + (np.arange(width, dtype=np.float32) + 0.5) / px_per_m
    ys = y_hi - (np.arange(height, dtype=np.float32) + 0.5) / px_per_m
    floor = math.exp(-0.5 * _GLOW_CUTOFF**2)
    for glow in glows:
        d2 = (((xs[None, :] - glow.x) / glow.sigma[0]) ** 2
              + ((ys[:, None] - glow.y) / glow.sigma[1]) ** 2)
        g = np.maximum(np.exp(-0.5 * d2) - floor, 0.0) / (1.0 - floor)
        premultiplied += g * glow.counts if thermal else g[..., None] * np.float32(glow.bgr)
    if not thermal:
        alpha = np.repeat(alpha[..., None], 3, axis=2)
    dtype = np.uint16 if thermal else np.uint8
    full = float(np.iinfo(dtype).max)
    # The sprite covers the background's noise by alpha, so it brings its own.
    signal = premultiplied / np.maximum(alpha, 1e-3)
    std = alpha * (_T_NOISE if thermal else _rgb_noise_std(signal))
    variants = [_quantise(premultiplied, std, rng if noise else None, dtype)
                for _ in range(_SPRITE_VARIANTS if noise else 1)]
    inverse = np.rint((1.0 - alpha) * full).astype(dtype)
    anchor = (-x_lo * px_per_m, y_hi * px_per_m)
    if flip:
        inverse = np.ascontiguousarray(inverse[:, ::-1])
        variants = [np.ascontiguousarray(p[:, ::-1]) for p in variants]
        anchor = (width - anchor[0], anchor[1])
    opaque = (1.0 - inverse.reshape(height, width, -1)[..., 0] / full)
    rows, cols = np.nonzero(opaque >= min(0.5, 0.5 * float(opaque.max())))
    box = (int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1)
    return _Sprite(inverse, tuple(variants), anchor, box)


def _quantise(image: np.ndarray, std: float | np.ndarray, rng: np.random.Generator | None,
              dtype: type) -> np.ndarray:
    """image plus Gaussian noise of std (none when rng is None), rounded and clipped to dtype."""
    if rng is not None:
        image = image + std * rng.standard_normal(image.shape, np.float32)
    return np.clip(np.rint(image), 0, np.iinfo(dtype).max).astype(dtype)


def _rgb_noise_std(signal: np.ndarray) -> np.ndarray:
    """Night-gain sensor noise std of an 8-bit value: read noise plus shot noise."""
    return np.sqrt(4.0 + 0.12 * np.clip(signal, 0.0, 255.0))


def _person_parts(height_m: float, swing: float, counts: dict[str, float],
                  colours: dict[str, tuple]) -> list[_Part]:
    """Side view of a walking person facing +x; swing in [-1, 1] is the leg angle phase."""
    k = height_m / 1.75
    hip, shoulder = (0.0, 0.93 * k), (0.0, 1.42 * k)
    leg, arm = 0.9 * k, 0.62 * k
    angle, arm_angle = math.radians(25.0) * swing, math.radians(-18.0) * swing

    def limb(origin: tuple[float, float], length: float, a: float) -> tuple[float, float]:
        return origin[0] + length * math.sin(a), origin[1] - length * math.cos(a)

    def line(p0: tuple, p1: tuple, width: float, part: str) -> _Part:
        return _Part('line', (*p0, *p1, width * k), counts[part], colours[part])

    def leg_parts(a: float, part: str) -> list[_Part]:
        knee = limb(hip, 0.48 * k, a)
        foot = limb(knee, leg - 0.48 * k, a)
        toe = (foot[0] + 0.2 * k, foot[1])
        return [line(hip, knee, 0.19, part), line(knee, foot, 0.13, part),
                line(foot, toe, 0.09, part)]

    far_hand, near_hand = limb(shoulder, arm, -arm_angle), limb(shoulder, arm, arm_angle)
    return [
        *leg_parts(-angle, 'far_leg'),
        line(shoulder, far_hand, 0.09, 'far_arm'),
        _Part('ellipse', (0.0, 1.18 * k, 0.15 * k, 0.3 * k), counts['torso'], colours['torso']),
        _Part('ellipse', (0.0, 0.95 * k, 0.14 * k, 0.12 * k), counts['leg'], colours['leg']),
        *leg_parts(angle, 'leg'),
        line((0.0, 1.42 * k), (0.02 * k, 1.56 * k), 0.12, 'head'),
        _Part('circle', (0.03 * k, 1.64 * k, 0.115 * k), counts['head'], colours['head']),
        line(shoulder, near_hand, 0.09, 'arm'),
        _Part('circle', (*near_hand, 0.05 * k), counts['hand'], colours['head']),
    ]


def _vehicle_parts(length_m: float, counts: float, paint: tuple) -> tuple[list, list]:
    """Side view of a car facing +x, centred on x = 0, its parts and glows."""
    k = length_m / 4.4
    wheel_r, lamp_y = 0.32, 0.68

    def x(along: float) -> float:
        """Position of a point `along` metres from the rear of a 4.4 m car."""
        return (along - 2.2) * k

    def pts(*xy: float) -> tuple:
        return tuple((x(xy[i]), xy[i + 1]) for i in range(0, len(xy), 2))

    tyre, hub = (4.0, 4.0, 5.0), (14.0, 14.0, 15.0)
    parts = [
        _Part('poly', pts(0.05, 0.3, 0.0, 0.55, 0.1, 0.85, 1.2, 0.92, 3.3, 0.92, 4.35, 0.78,
                          4.4, 0.55, 4.35, 0.3), counts, paint),
        _Part('poly', pts(3.4, 0.35, 3.4, 0.9, 4.35, 0.78, 4.4, 0.35), counts + 2400.0, paint),
        _Part('poly', pts(1.15, 0.9, 1.6, 1.45, 3.0, 1.45, 3.45, 0.9), counts - 500.0, paint),
        _Part('poly', pts(1.3, 0.95, 1.68, 1.38, 2.2, 1.38, 2.2, 0.95), 7300.0, (6.0, 5.0, 5.0)),
        _Part('poly', pts(2.3, 0.95, 2.3, 1.38, 2.95, 1.38, 3.3, 0.95), 7300.0, (6.0, 5.0, 5.0)),
        _Part('ellipse', (x(4.33), lamp_y, 0.08, 0.07), 9000.0, (255.0, 255.0, 255.0)),
        _Part('ellipse', (x(0.05), 0.74, 0.05, 0.08), 8600.0, (40.0, 40.0, 235.0)),
        _Part('circle', (x(0.15), 0.22, 0.07), 12000.0, (5.0, 5.0, 5.0)),
    ]
    for along in (0.85, 3.55):
        parts += [_Part('circle', (x(along), wheel_r, wheel_r), 10200.0, tyre),
                  _Part('circle', (x(along), wheel_r, 0.13), 11400.0, hub)]
    glows = [
        _Glow(x(4.4), lamp_y, (0.25, 0.18), 0.0, (150.0, 170.0, 180.0)),        # headlight
        _Glow(x(4.4) + 1.8, 0.05, (1.0, 0.1), 0.0, (60.0, 75.0, 85.0)),         # beam on road
        _Glow(x(0.0), 0.74, (0.18, 0.14), 0.0, (10.0, 10.0, 90.0)),             # tail light
        _Glow(x(3.9), 0.6, (0.5, 0.35), 500.0, (0.0, 0.0, 0.0)),                # engine heat
        _Glow(x(0.0) - 0.15, 0.22, (0.3, 0.1), 600.0, (0.0, 0.0, 0.0)),         # exhaust
    ]
    return parts, glows


@dataclass(frozen=True)
class _Mover:
    """An object moving along row v at constant speed, wrapping around in u."""

    kind: str
    v: float
    u0: float
    speed_u: float                  # normalised RGB widths per second, signed
    span: tuple[float, float]       # u range it wraps over (off screen at both ends)
    cycle_hz: float                 # gait cycles per second (0 for vehicles)
    phase0: float
    sprites: dict                   # camera -> tuple of _Sprite, one per pose

    def u(self, t: float) -> float:
        low, high = self.span
        return low + (self.u0 - low + self.speed_u * t) % (high - low)

    def sprite(self, camera: str, t: float) -> _Sprite:
        poses = self.sprites[camera]
        return poses[math.floor((t * self.cycle_hz + self.phase0) * len(poses)) % len(poses)]


def _make_people(count: int, rng: np.random.Generator, views: dict, aspect: float,
                 noise: bool) -> list[_Mover]:
    movers = []
    for _ in range(count):
        band = _NEAR_WALK_V if rng.random() < 0.5 else _FAR_WALK_V
        v = float(rng.uniform(*band))
        height = float(rng.uniform(1.55, 1.9))
        direction = 1 if rng.random() < 0.5 else -1
        speed = float(rng.uniform(0.9, 1.6))
        warmth = float(rng.uniform(-250.0, 250.0))
        counts = {'torso': 9800.0, 'leg': 9650.0, 'far_leg': 9500.0, 'arm': 9850.0,
                  'far_arm': 9700.0, 'head': 10800.0, 'hand': 10300.0}
        counts = {key: value + warmth for key, value in counts.items()}
        # Dark, nearly grey clothes: at night they barely stand out from the ground.
        cloth = tuple(float(c) for c in rng.uniform(5.0, 12.0) * rng.uniform(0.85, 1.15, 3))
        trousers = tuple(float(c) for c in rng.uniform(3.0, 8.0) * rng.uniform(0.9, 1.1, 3))
        colours = {'torso': cloth, 'arm': cloth, 'far_arm': tuple(0.8 * c for c in cloth),
                   'leg': trousers, 'far_leg': tuple(0.8 * c for c in trousers),
                   'head': (10.0, 12.0, 15.0)}
        poses = [_person_parts(height, math.sin(2.0 * math.pi * p / _WALK_PHASES), counts,
                               colours) for p in range(_WALK_PHASES)]
        sprites = {camera: tuple(_rasterise(parts, (), view.px_per_m(v), camera, direction < 0,
                                            rng, noise) for parts in poses)
                   for camera, view in views.items()}
        movers.append(_Mover('person', v, float(rng.random()),
                             _metres_to_u(speed * direction, v, aspect),
                             _wrap_span([sprites], views[_RGB].width),
                             speed / (1.4 * height / 1.75), float(rng.random()), sprites))
    return movers


def _make_vehicles(count: int, rng: np.random.Generator, views: dict, aspect: float,
                   noise: bool) -> list[_Mover]:
    """Cars on two lanes; the cars of a lane share speed and wrap span, evenly spaced, so
    they never run into each other (unless there are too many to fit)."""
    movers = []
    lanes = ((_NEAR_LANE_V, 1), (_FAR_LANE_V, -1))
    per_lane = [(count + 1 - i) // 2 for i in range(2)]
    for (v, direction), n in zip(lanes, per_lane):
        if n == 0:
            continue
        speed_u = _metres_to_u(float(rng.uniform(4.0, 9.0)) * direction, v, aspect)
        offset = float(rng.random())
        cars = []
        for _ in range(n):
            paint = tuple(float(c) for c in rng.uniform(5.0, 14.0) * rng.uniform(0.7, 1.3, 3))
            parts, glows = _vehicle_parts(float(rng.uniform(4.0, 4.8)),
                                          float(rng.uniform(8100.0, 8500.0)), paint)
            cars.append({camera: (_rasterise(parts, glows, view.px_per_m(v), camera,
                                             direction < 0, rng, noise),)
                         for camera, view in views.items()})
        low, high = _wrap_span(cars, views[_RGB].width)
        movers += [_Mover('vehicle', v, low + (offset + i / n) % 1.0 * (high - low), speed_u,
                          (low, high), 0.0, 0.0, sprites) for i, sprites in enumerate(cars)]
    return movers


def _wrap_span(sprite_sets: list[dict], rgb_width: int) -> tuple[float, float]:
    """u range to wrap over so that the widest of these sprites is off screen at both ends."""
    widest = max(s.inverse_alpha.shape[1] for sprites in sprite_sets for s in sprites[_RGB])
    return -widest / rgb_width, 1.0 + widest / rgb_width


def _paste(frame: np.ndarray, sprite: _Sprite, origin: tuple[int, int], variant: int) -> None:
    """Blend sprite into frame in place with its top-left corner at origin (x, y), clipped."""
    h, w = sprite.inverse_alpha.shape[:2]
    x0, y0 = max(origin[0], 0), max(origin[1], 0)
    x1, y1 = min(origin[0] + w, frame.shape[1]), min(origin[1] + h, frame.shape[0])
    if x0 >= x1 or y0 >= y1:
        return
    sx, sy = x0 - origin[0], y0 - origin[1]
    region = frame[y0:y1, x0:x1]
    inverse = sprite.inverse_alpha[sy:sy + y1 - y0, sx:sx + x1 - x0]
    premultiplied = sprite.premultiplied[variant % len(sprite.premultiplied)]
    full = 65535.0 if frame.dtype == np.uint16 else 255.0
    cv2.multiply(region, inverse, dst=region, scale=1.0 / full)
    cv2.add(region, premultiplied[sy:sy + y1 - y0, sx:sx + x1 - x0], dst=region)


# --------------------------------------------------------------------------------------------
# Public scene


class SyntheticScene:
    """A night street with warm people and vehicles, rendered by a thermal and an RGB camera.

    thermal(t) and rgb(t) are pure functions of (config, t): t is any finite time in seconds
    (e.g. seconds since the node started; give both cameras the same t for a synchronous
    pair). Each call returns a new C-contiguous array the caller owns. Rendering only reads
    what the constructor built, so one scene may serve several threads.
    """

    def __init__(self, config: SceneConfig | None = None) -> None:
        self.config = config if config is not None else SceneConfig()
        cfg = self.config
        self._crop = _thermal_region(cfg.thermal_size, cfg.rgb_size)
        self._views = {_THERMAL: _View(*cfg.thermal_size, self._crop),
                       _RGB: _View(*cfg.rgb_size, (0.0, 0.0, 1.0, 1.0))}
        aspect = cfg.rgb_size[0] / cfg.rgb_size[1]

        def stream(index: int) -> np.random.Generator:
            # Independent streams: e.g. the number of people does not change the street.
            return np.random.default_rng([cfg.seed, index])

        layout = _make_layout(stream(0), aspect)
        thermal = _thermal_background(self._views[_THERMAL], layout, stream(1), cfg.noise)
        rgb = _rgb_background(self._views[_RGB], layout, stream(2))
        frames = cfg.noise_frames if cfg.noise else 1
        noise = stream(3) if cfg.noise else None
        self._backgrounds = {
            _THERMAL: np.stack([_quantise(thermal, _T_NOISE, noise, np.uint16)
                                for _ in range(frames)]),
            _RGB: np.stack([_quantise(rgb, _rgb_noise_std(rgb), noise, np.uint8)
                            for _ in range(frames)]),
        }
        movers = (_make_people(cfg.people, stream(4), self._views, aspect, cfg.noise)
                  + _make_vehicles(cfg.vehicles, stream(5), self._views, aspect, cfg.noise))
        # Far objects first so that nearer ones cover them.
        self._draw_order = sorted(range(len(movers)), key=lambda i: movers[i].v)
        self._movers = movers

    @property
    def thermal_crop(self) -> tuple[float, float, float, float]:
        """(x, y, w, h) of the thermal view in normalised RGB coordinates, in [0, 1]."""
        return self._crop

    @property
    def thermal_homography(self) -> np.ndarray:
        """3x3 float64 map from normalised thermal to normalised RGB coordinates (the
        occo_ros.core.registration convention): a scale and shift onto thermal_crop."""
        x, y, w, h = self._crop
        return np.array([[w, 0.0, x], [0.0, h, y], [0.0, 0.0, 1.0]])

    def camera_matrix(self, which: str) -> np.ndarray:
        """3x3 float64 pinhole K of 'thermal' or 'rgb' (ROS camera_info: pixel centres at
        integers). Both cameras share the optical centre; RGB HFOV is 90 degrees."""
        if which not in self._views:
            raise ValueError(f"camera must be 'thermal' or 'rgb', got {which!r}")
        rgb_w, rgb_h = self.config.rgb_size
        f_rgb = rgb_w / 2.0 / math.tan(math.radians(_RGB_HFOV_DEG) / 2.0)
        view = self._views[which]
        f = f_rgb * view.width / (view.region[2] * rgb_w)
        # The principal point is where the RGB image centre (u, v) = (0.5, 0.5) falls.
        return np.array([[f, 0.0, view.x(0.5) - 0.5],
                         [0.0, f, view.y(0.5) - 0.5],
                         [0.0, 0.0, 1.0]])

    def thermal(self, t: float) -> np.ndarray:
        """Thermal frame at time t seconds: uint16 raw counts, shape (height, width)."""
        return self._render(_THERMAL, t)

    def rgb(self, t: float) -> np.ndarray:
        """RGB frame at time t seconds: uint8 BGR (bgr8), shape (height, width, 3)."""
        return self._render(_RGB, t)

    def objects(self, t: float) -> list[SceneObject]:
        """Every moving object at time t with its boxes in both images, ordered by ident."""
        t = self._check_time(t)
        found = []
        for ident, mover in enumerate(self._movers):
            u = mover.u(t)
            boxes = {}
            for camera, view in self._views.items():
                sprite = mover.sprite(camera, t)
                ox, oy = self._origin(view, sprite, u, mover.v)
                b = sprite.box
                boxes[camera] = (ox + b[0], oy + b[1], ox + b[2], oy + b[3])
            found.append(SceneObject(ident, mover.kind, (u, mover.v), boxes[_THERMAL],
                                     boxes[_RGB]))
        return found

    @staticmethod
    def _origin(view: _View, sprite: _Sprite, u: float, v: float) -> tuple[int, int]:
        return (math.floor(view.x(u) - sprite.anchor[0] + 0.5),
                math.floor(view.y(v) - sprite.anchor[1] + 0.5))

    @staticmethod
    def _check_time(t: float) -> float:
        if isinstance(t, bool) or not isinstance(t, (int, float, np.integer, np.floating)) \
                or not math.isfinite(t):
            raise ValueError(f't must be a finite number of seconds, got {t!r}')
        return float(t)

    def _render(self, camera: str, t: float) -> np.ndarray:
        t = self._check_time(t)
        # Noise frame and sprite variants: a hash of (seed, t, camera), so frames are
        # reproducible yet differ from one timestamp to the next.
        key = zlib.crc32(struct.pack('<Qd?', self.config.seed, t, camera == _RGB))
        backgrounds = self._backgrounds[camera]
        frame = backgrounds[key % len(backgrounds)].copy()
        view = self._views[camera]
        for ident in self._draw_order:
            mover = self._movers[ident]
            sprite = mover.sprite(camera, t)
            origin = self._origin(view, sprite, mover.u(t), mover.v)
            _paste(frame, sprite, origin, (key >> 8) + ident)
        return frame


# --------------------------------------------------------------------------------------------
# Command line: write a few frames to look at


def _size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(s) for s in text.lower().split('x'))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f'expected WIDTHxHEIGHT, e.g. 640x512, got {text!r}') from None
    return width, height


def main(argv: list[str] | None = None) -> int:
    """Write thermal (8-bit view and raw 16-bit) and RGB PNGs of a few frames to --out."""
    parser = argparse.ArgumentParser(
        prog='python -m occo_ros.synthetic.scene',
        description='Render frames of the synthetic night street (thermal + RGB) to PNG files: '
                    'thermal_NNN.png (counts mapped to 8 bits with one fixed window taken '
                    'from the first frame), thermal16_NNN.png (raw uint16 counts) and '
                    'rgb_NNN.png (BGR as published).')
    parser.add_argument('--out', type=Path, required=True,
                        help='output folder, created if missing')
    parser.add_argument('--frames', type=int, default=4, help='number of frames (default 4)')
    parser.add_argument('--interval', type=float, default=0.5,
                        help='seconds between frames (default 0.5)')
    parser.add_argument('--seed', type=int, default=0, help='scene seed (default 0)')
    parser.add_argument('--people', type=int, default=4, help='walking people (default 4)')
    parser.add_argument('--vehicles', type=int, default=2, help='driving vehicles (default 2)')
    parser.add_argument('--thermal-size', type=_size, default=(640, 512),
                        help='thermal WIDTHxHEIGHT (default 640x512)')
    parser.add_argument('--rgb-size', type=_size, default=(1280, 720),
                        help='RGB WIDTHxHEIGHT (default 1280x720)')
    parser.add_argument('--no-noise', action='store_true', help='render without sensor noise')
    args = parser.parse_args(argv)
    if args.frames < 1:
        parser.error(f'--frames must be at least 1, got {args.frames}')
    try:
        scene = SyntheticScene(SceneConfig(args.thermal_size, args.rgb_size, args.people,
                                           args.vehicles, args.seed, not args.no_noise))
    except ValueError as error:
        parser.error(str(error))
    args.out.mkdir(parents=True, exist_ok=True)
    window = None
    for index in range(args.frames):
        t = index * args.interval
        thermal = scene.thermal(t)
        if window is None:
            low, high = np.percentile(thermal, (0.5, 99.9))
            window = (float(low), max(float(high), float(low) + 1.0))
        view = np.clip((thermal - window[0]) * (255.0 / (window[1] - window[0])), 0, 255)
        cv2.imwrite(str(args.out / f'thermal_{index:03d}.png'), view.astype(np.uint8))
        cv2.imwrite(str(args.out / f'thermal16_{index:03d}.png'), thermal)
        cv2.imwrite(str(args.out / f'rgb_{index:03d}.png'), scene.rgb(t))
    print(f'wrote {args.frames} thermal and RGB frames to {args.out}; thermal crop in RGB '
          f'(x, y, w, h) = {scene.thermal_crop}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
