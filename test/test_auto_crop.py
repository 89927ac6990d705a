"""The automatic (default) crop: the largest centred RGB crop with the output's aspect, so a
16:9 camera is not squashed into a 5:4 fused image; an explicit crop still wins.

Expected crops, pixels and camera matrices are computed here from the definitions (pixel i
covers [i, i + 1); OpenCV centres at integers), not from the module.
"""

from __future__ import annotations

from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from occo_ros.calibration.file import registration_from_params
from occo_ros.core.registration import Registration, aspect_crop
from occo_ros.params import PARAMS, SPECS, make_params
from occo_ros.pipeline import FusionPipeline

pytestmark = [pytest.mark.core]

DEFAULTS = {spec.name: spec.default for spec in PARAMS}


@pytest.mark.parametrize('rgb_size, output_size, kept', [
    ((1280, 720), (640, 512), (900, 720)),     # 16:9 camera, 5:4 output: sides cut
    ((640, 480), (640, 512), (600, 480)),      # 4:3 camera
    ((1024, 1024), (640, 512), (1024, 819.2)),  # square camera: top and bottom cut
    ((1280, 1024), (640, 512), (1280, 1024)),  # same aspect: the whole image
])
def test_aspect_crop_is_the_largest_centred_crop_with_the_output_aspect(
        rgb_size, output_size, kept):
    x, y, w, h = aspect_crop(rgb_size, output_size)
    assert (w * rgb_size[0], h * rgb_size[1]) == pytest.approx(kept)
    assert (w * rgb_size[0]) / (h * rgb_size[1]) == pytest.approx(output_size[0] / output_size[1])
    assert (x, y) == pytest.approx(((1 - w) / 2, (1 - h) / 2))
    assert max(w, h) == pytest.approx(1.0)     # the largest: it touches two image edges


def test_default_parameters_use_the_automatic_crop_and_an_explicit_crop_wins():
    assert SPECS['crop'].default == [0.0, 0.0, 0.0, 0.0]
    assert registration_from_params(make_params(DEFAULTS)).crop is None
    explicit = (0.1, 0.0, 0.8, 1.0)
    assert registration_from_params(make_params(dict(DEFAULTS, crop=list(explicit)))).crop == \
        pytest.approx(explicit)


def test_automatic_crop_keeps_the_centred_pixels_unstretched():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8)
    fused = Registration(crop=None, output_size=(640, 512)).crop_rgb(rgb)
    centred = rgb[:, 190:1090]                   # (1280 - 900) / 2 = 190
    assert np.array_equal(fused, cv2.resize(centred, (640, 512), interpolation=cv2.INTER_LINEAR))


def test_automatic_crop_thermal_follows_the_rgb_size():
    registration = Registration(crop=None, output_size=(640, 512))
    thermal = np.zeros((512, 640), np.float32)
    thermal[256, 320] = 1.0                      # thermal pixel (320, 256)
    with pytest.raises(ValueError, match='rgb_size'):
        registration.warp_thermal(thermal)
    warped = registration.warp_thermal(thermal, rgb_size=(1280, 720))
    explicit = Registration(crop=aspect_crop((1280, 720), (640, 512)), output_size=(640, 512))
    assert np.array_equal(warped, explicit.warp_thermal(thermal))
    # identity homography: the thermal image spans the whole 16:9 view, the frame its
    # centred 900 of 1280 columns: thermal u = 320.5 / 640 is RGB column u * 1280, which is
    # (u * 1280 - 190) * 640 / 900 in the frame (continuous; OpenCV centre 0.5 less)
    row = warped[256]
    x = (row * np.arange(640)).sum() / row.sum()
    assert x == pytest.approx((320.5 / 640 * 1280 - 190) * 640 / 900 - 0.5, abs=0.05)


def test_fused_camera_info_of_the_default_crop_keeps_square_pixels():
    """A 16:9 camera with fx == fy gives a fused camera_info with fx == fy, principal point
    in the centre (before: fx 450, fy 640 for 1280x720 into 640x512)."""
    pipeline = FusionPipeline.from_settings(make_params(DEFAULTS), engine=None)
    k = [900.0, 0.0, 639.5, 0.0, 900.0, 359.5, 0.0, 0.0, 1.0]
    info = SimpleNamespace(width=1280, height=720, k=k, p=k[:3] + [0.0] + k[3:6] + [0.0]
                           + k[6:] + [0.0], d=[0.0] * 5, r=[1.0, 0, 0, 0, 1, 0, 0, 0, 1],
                           distortion_model='plumb_bob')
    fused = pipeline.fused_camera_info(info)
    fx, _, cx, _, fy, cy = fused['k'][:6]
    assert fx == pytest.approx(640.0) and fy == pytest.approx(640.0)
    assert (cx, cy) == pytest.approx((319.5, 255.5))
    assert (fused['width'], fused['height']) == (640, 512)
