"""A calibration target rendered as a thermal and an RGB camera would see it (no ROS).

A planar checkerboard at a depth in front of a pinhole camera pair: the RGB camera at the
origin, the thermal camera ``baseline`` metres to its side and slightly rotated. A point of
the plane z = depth maps into each camera by the homography K R [e1, e2, (0, 0, depth) - C]
(board metres -> OpenCV pixels), so the exact thermal -> RGB homography of that plane is
known. Images are rendered 4x supersampled (area-averaged down); the thermal image is the
inverse of the visible one (a heated board's dark squares are warm), blurred and noisy, as
uint16 counts. :func:`about_center` builds the known homographies the tests and
bench/bench_calibration.py apply to real pairs.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

_SUPERSAMPLE = 4
_TEXTURE_SQUARE = 40  # texture pixels per board square


@dataclass(frozen=True)
class Camera:
    """A pinhole camera: focal length (px), image size, centre (m) and rotation (deg)."""

    focal_px: float
    size: tuple[int, int]
    center: tuple[float, float, float] = (0.0, 0.0, 0.0)
    rotation_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)  # about x, y, z

    @property
    def k(self) -> np.ndarray:
        width, height = self.size
        return np.array([[self.focal_px, 0.0, (width - 1) / 2],
                         [0.0, self.focal_px, (height - 1) / 2], [0.0, 0.0, 1.0]])

    def plane_homography(self, depth: float) -> np.ndarray:
        """Board coordinates (X, Y) metres on the plane z = depth -> OpenCV pixels."""
        rotation, _ = cv2.Rodrigues(np.radians(np.asarray(self.rotation_deg, np.float64)))
        cx, cy, cz = self.center
        plane = np.array([[1.0, 0.0, -cx], [0.0, 1.0, -cy], [0.0, 0.0, depth - cz]])
        return self.k @ rotation @ plane


#: A rig like the demo's: RGB 1280x720 (f 900 px), thermal 640x512 (f 600 px) 6 cm to the
#: side, rotated by a fraction of a degree.
RGB_CAMERA = Camera(900.0, (1280, 720))
THERMAL_CAMERA = Camera(600.0, (640, 512), center=(0.06, 0.0, 0.0),
                        rotation_deg=(0.3, -0.4, 0.8))


def rig_homography(depth: float, thermal: Camera = THERMAL_CAMERA,
                   rgb: Camera = RGB_CAMERA) -> np.ndarray:
    """The exact thermal px -> RGB px homography of the plane at ``depth`` metres."""
    h = rgb.plane_homography(depth) @ np.linalg.inv(thermal.plane_homography(depth))
    return h / h[2, 2]


def about_center(size: tuple[int, int], scale: float = 1.0, degrees: float = 0.0,
                 shift: tuple[float, float] = (0.0, 0.0),
                 perspective: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """A homography (OpenCV pixels of an image of ``size``) that scales and rotates about
    the image centre, then shifts by ``shift`` px; ``perspective`` = its last row's terms."""
    c = np.array([[1.0, 0.0, -(size[0] - 1) / 2], [0.0, 1.0, -(size[1] - 1) / 2],
                  [0.0, 0.0, 1.0]])
    a = np.radians(degrees)
    m = np.array([[scale * np.cos(a), -scale * np.sin(a), shift[0]],
                  [scale * np.sin(a), scale * np.cos(a), shift[1]],
                  [perspective[0], perspective[1], 1.0]])
    return np.linalg.inv(c) @ m @ c


def board_points(pattern: tuple[int, int], square_m: float,
                 offset_m: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """Inner corners (columns x rows, row by row) in board metres, centred on ``offset_m``."""
    cols, rows = pattern
    xs = (np.arange(cols) - (cols - 1) / 2) * square_m + offset_m[0]
    ys = (np.arange(rows) - (rows - 1) / 2) * square_m + offset_m[1]
    return np.array([(x, y) for y in ys for x in xs])


def render_board(camera: Camera, depth: float, pattern: tuple[int, int], square_m: float,
                 offset_m: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """Float image in [0, 1] of a checkerboard with ``pattern`` inner corners (white margin
    of one square) seen by ``camera``; the background is mid gray."""
    cols, rows = pattern[0] + 1, pattern[1] + 1
    square = _TEXTURE_SQUARE
    texture = np.ones(((rows + 2) * square, (cols + 2) * square), np.float32)
    for r in range(rows):
        for c in range(cols):
            if (r + c) % 2 == 0:
                texture[(r + 1) * square:(r + 2) * square, (c + 1) * square:(c + 2) * square] = 0
    # texture px (OpenCV, centre at integers) -> board metres
    scale = square_m / square
    to_board = np.array([[scale, 0.0, offset_m[0] - (cols / 2 + 1) * square_m + scale / 2],
                         [0.0, scale, offset_m[1] - (rows / 2 + 1) * square_m + scale / 2],
                         [0.0, 0.0, 1.0]])
    big = (camera.size[0] * _SUPERSAMPLE, camera.size[1] * _SUPERSAMPLE)
    up = np.array([[_SUPERSAMPLE, 0.0, (_SUPERSAMPLE - 1) / 2],
                   [0.0, _SUPERSAMPLE, (_SUPERSAMPLE - 1) / 2], [0.0, 0.0, 1.0]])
    h = up @ camera.plane_homography(depth) @ to_board
    image = cv2.warpPerspective(texture, h, big, flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=0.5)
    return cv2.resize(image, camera.size, interpolation=cv2.INTER_AREA)


def thermal_view(board: np.ndarray, seed: int = 0) -> np.ndarray:
    """A rendered board as a thermal camera shows a heated target: inverted contrast, a
    little optical blur and noise, uint16 counts."""
    rng = np.random.default_rng(seed)
    heat = cv2.GaussianBlur(1.0 - board, (0, 0), 0.8)
    counts = 22000 + 4000 * heat + rng.normal(0, 25, heat.shape)
    return np.clip(counts, 0, 65535).astype(np.uint16)


def rgb_view(board: np.ndarray, seed: int = 1) -> np.ndarray:
    """A rendered board as an RGB camera shows it: uneven light, noise, uint8 RGB."""
    rng = np.random.default_rng(seed)
    light = np.linspace(0.8, 1.0, board.shape[1], dtype=np.float32)[None, :]
    gray = 20 + 200 * board * light + rng.normal(0, 2.0, board.shape)
    return np.repeat(np.clip(gray, 0, 255).astype(np.uint8)[:, :, None], 3, axis=2)


def target_pair(depth: float, pattern: tuple[int, int] = (9, 6), square_m: float = 0.1,
                offset_m: tuple[float, float] = (0.0, 0.0), seed: int = 0,
                ) -> tuple[np.ndarray, np.ndarray]:
    """(thermal uint16, RGB uint8) of the board at ``depth`` seen by the default rig."""
    thermal = thermal_view(render_board(THERMAL_CAMERA, depth, pattern, square_m, offset_m),
                           seed)
    rgb = rgb_view(render_board(RGB_CAMERA, depth, pattern, square_m, offset_m), seed + 1)
    return thermal, rgb
