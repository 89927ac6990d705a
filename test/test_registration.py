"""Registration of thermal and RGB images into the fusion frame (occo_ros.core.registration).

Expected positions are computed here from the documented conventions (pixel i covers
[i, i + 1), normalised u = x / W, OpenCV pixel centres at integers), not from the module.
"""

import cv2
import numpy as np
import pytest

from occo_ros.core.registration import Registration, pixel_to_normalized_homography

pytestmark = [pytest.mark.core]


def dot(size, center, sigma=1.5, peak=10000.0, dtype=np.float32, channels=None):
    """A Gaussian dot centred at OpenCV pixel coordinates ``center`` in a (W, H) image: the
    outer product of its column and row profiles (one exp per row and column, not per pixel
    of a 1920 x 1536 frame)."""
    width, height = size
    across, down = (np.exp(-(np.arange(count) - middle) ** 2 / (2 * sigma ** 2))
                    for count, middle in ((width, center[0]), (height, center[1])))
    blob = (peak * np.outer(down, across)).astype(dtype)
    return blob if channels is None else np.repeat(blob[:, :, None], channels, axis=2)


def centroid(image):
    image = image.astype(np.float64)
    if image.ndim == 3:
        image = image.mean(axis=2)
    image = np.where(image > 0.02 * image.max(), image, 0.0)
    yy, xx = np.mgrid[0:image.shape[0], 0:image.shape[1]]
    return np.array([(xx * image).sum(), (yy * image).sum()]) / image.sum()


def to_normalized(point, size):
    return (point[0] + 0.5) / size[0], (point[1] + 0.5) / size[1]


def from_normalized(uv, size):
    return np.array([uv[0] * size[0] - 0.5, uv[1] * size[1] - 0.5])


def apply(h, uv):
    p = h @ np.array([uv[0], uv[1], 1.0])
    return p[:2] / p[2]


def expected_in_frame(point, thermal_size, homography, crop, out_size):
    """Thermal OpenCV pixel -> fusion-frame OpenCV pixel, from the definitions."""
    u, v = apply(homography, to_normalized(point, thermal_size))
    x, y, w, h = crop
    return from_normalized(((u - x) / w, (v - y) / h), out_size)


def rotation_about_center(degrees, scale=1.0):
    c, s = np.cos(np.radians(degrees)) * scale, np.sin(np.radians(degrees)) * scale
    to_center = np.array([[1, 0, -0.5], [0, 1, -0.5], [0, 0, 1.0]])
    return np.linalg.inv(to_center) @ np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]]) @ to_center


HOMOGRAPHIES = {
    'shift': np.array([[1, 0, 0.07], [0, 1, -0.05], [0, 0, 1.0]]),
    'scale': np.array([[1.2, 0, -0.1], [0, 0.9, 0.05], [0, 0, 1.0]]),
    'rotation': rotation_about_center(12.0, 1.05),
    'perspective': np.array([[1.05, 0.03, 0.01], [-0.02, 0.98, 0.02], [0.08, -0.06, 1.0]]),
}


@pytest.mark.parametrize('name', sorted(HOMOGRAPHIES))
@pytest.mark.parametrize('crop', [(0.0, 0.0, 1.0, 1.0), (0.13, 0.08, 0.71, 0.8)])
@pytest.mark.parametrize('dtype', [np.float32, np.uint16])
def test_known_homography_moves_a_dot_where_expected(name, crop, dtype):
    thermal_size, out_size = (160, 128), (200, 150)
    registration = Registration(HOMOGRAPHIES[name], crop, output_size=out_size)
    for point in [(80.0, 64.0), (50.3, 40.7), (110.6, 90.2)]:
        warped = registration.warp_thermal(dot(thermal_size, point, dtype=dtype))
        assert warped.dtype == dtype and warped.shape == (150, 200)
        expected = expected_in_frame(point, thermal_size, HOMOGRAPHIES[name], crop, out_size)
        np.testing.assert_allclose(centroid(warped), expected, atol=0.15)


@pytest.mark.parametrize('size, interpolation', [
    ((320, 256), cv2.INTER_LINEAR),   # upscale
    ((120, 96), cv2.INTER_LINEAR),    # mild downscale
    ((80, 64), cv2.INTER_AREA),       # exactly 2x: box average
])
def test_identity_full_crop_equals_cv2_resize(size, interpolation):
    thermal = np.random.default_rng(0).integers(0, 65536, (128, 160), dtype=np.uint16)
    warped = Registration(output_size=size).warp_thermal(thermal)
    np.testing.assert_array_equal(warped, cv2.resize(thermal, size, interpolation=interpolation))


def test_identity_at_the_same_size_is_a_view():
    thermal = np.random.default_rng(1).integers(0, 65536, (128, 160), dtype=np.uint16)
    warped = Registration(output_size=(160, 128)).warp_thermal(thermal)
    np.testing.assert_array_equal(warped, thermal)
    assert np.shares_memory(warped, thermal)


def test_size_argument_overrides_output_size():
    thermal = np.random.default_rng(2).integers(0, 65536, (128, 160), dtype=np.uint16)
    registration = Registration(output_size=(640, 512))
    assert registration.warp_thermal(thermal, (80, 64)).shape == (64, 80)
    assert registration.warp_thermal(thermal).shape == (512, 640)


def test_full_rgb_frame_equals_cv2_resize():
    rgb = np.random.default_rng(3).integers(0, 256, (720, 1280, 3), dtype=np.uint8)
    out = Registration(output_size=(640, 512)).crop_rgb(rgb)
    np.testing.assert_array_equal(out, cv2.resize(rgb, (640, 512), interpolation=cv2.INTER_LINEAR))


def test_outside_the_thermal_field_of_view_is_zero():
    # RGB u = thermal u + 0.25: the left quarter of the frame has no thermal data
    registration = Registration(np.array([[1, 0, 0.25], [0, 1, 0], [0, 0, 1.0]]),
                                output_size=(160, 128))
    warped = registration.warp_thermal(np.full((128, 160), 5000, np.uint16))
    assert (warped[:, :39] == 0).all()
    assert (warped[:, 41:] == 5000).all()


@pytest.mark.parametrize('crop', [(0.0, 0.0, 1.0, 1.0), (0.25, 0.125, 0.5, 0.75),
                                  (0.137, 0.211, 0.553, 0.617)])
@pytest.mark.parametrize('rgb_size', [(640, 512), (1280, 1024), (1920, 1536)])
def test_boresighted_thermal_and_rgb_land_on_the_same_pixel(crop, rgb_size):
    thermal_size, out_size = (160, 128), (240, 192)
    registration = Registration(crop=crop, output_size=out_size)
    for uv in [(0.45, 0.55), (0.31, 0.37), (0.62, 0.71)]:
        thermal = dot(thermal_size, from_normalized(uv, thermal_size), sigma=1.0)
        scale = rgb_size[0] / thermal_size[0]
        rgb = dot(rgb_size, from_normalized(uv, rgb_size), sigma=scale, peak=250,
                  dtype=np.uint8, channels=3)
        from_thermal = centroid(registration.warp_thermal(thermal))
        from_rgb = centroid(registration.crop_rgb(rgb))
        expected = expected_in_frame(from_normalized(uv, thermal_size), thermal_size,
                                     np.eye(3), crop, out_size)
        np.testing.assert_allclose(from_thermal, expected, atol=0.1)
        np.testing.assert_allclose(from_rgb, expected, atol=0.1)


def test_pixel_homography_conversion_matches_the_convention():
    thermal_size, rgb_size = (640, 512), (1280, 720)
    h_px = np.array([[1.9, 0.05, 30.0], [-0.03, 1.35, 12.0], [1e-5, 2e-5, 1.0]])
    h_norm = pixel_to_normalized_homography(h_px, thermal_size, rgb_size)
    for point in [(0.0, 0.0), (639.0, 511.0), (123.4, 321.9)]:
        rgb_px = apply(h_px, point)
        uv = apply(h_norm, to_normalized(point, thermal_size))
        np.testing.assert_allclose(uv, to_normalized(rgb_px, rgb_size), atol=1e-12)
    assert h_norm[2, 2] == pytest.approx(1.0)


def test_calibration_from_find_homography_registers_a_dot():
    # a thermal camera seeing the RGB image shifted, scaled and slightly rotated: calibrate
    # in pixels from four correspondences, then the warped dot lands on its RGB pixel
    thermal_size, rgb_size = (160, 128), (320, 240)
    truth = np.array([[1.8, 0.1, 20.0], [-0.08, 1.7, 15.0], [0.0, 0.0, 1.0]])
    thermal_pts = np.array([[10, 10], [150, 12], [148, 120], [8, 118]], np.float64)
    rgb_pts = np.array([apply(truth, p) for p in thermal_pts])
    h_px, _ = cv2.findHomography(thermal_pts, rgb_pts)
    registration = Registration(pixel_to_normalized_homography(h_px, thermal_size, rgb_size),
                                output_size=rgb_size)
    point = (70.3, 55.8)
    warped = registration.warp_thermal(dot(thermal_size, point))
    np.testing.assert_allclose(centroid(warped), apply(truth, point), atol=0.15)


@pytest.mark.parametrize('crop', [(0.0, 0.0, 1.0, 1.0), (0.1, 0.15, 0.7, 0.6),
                                  (0.25, 0.25, 0.5, 0.5)])
def test_camera_matrices_follow_crop_and_resize(crop):
    rgb_size, out_size = (1280, 720), (400, 300)
    fx, fy, cx, cy, baseline = 800.0, 820.0, 641.3, 358.2, 0.12
    k = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]])
    p = np.hstack([k, [[-fx * baseline], [0.0], [0.0]]])
    registration = Registration(crop=crop, output_size=out_size)
    k_out, p_out = registration.adapt_camera_matrices(k, p, rgb_size)
    assert k_out.shape == (3, 3) and p_out.shape == (3, 4)
    np.testing.assert_allclose(k_out[2], [0, 0, 1])
    assert k_out[0, 1] == 0
    for point in [np.array([0.3, -0.2, 4.0]), np.array([-0.5, 0.3, 6.0])]:
        for matrix, adapted, homogeneous in ((k, k_out, point), (p, p_out, np.append(point, 1))):
            projected = matrix @ homogeneous
            rgb = dot(rgb_size, projected[:2] / projected[2], sigma=3.0, peak=250,
                      dtype=np.uint8)
            seen = centroid(registration.crop_rgb(rgb))
            predicted = adapted @ homogeneous
            np.testing.assert_allclose(seen, predicted[:2] / predicted[2], atol=0.1)


def test_affine_homography_with_negative_scale_factor_is_the_same_map():
    h = HOMOGRAPHIES['perspective']
    thermal = dot((160, 128), (60.0, 70.0))
    a = Registration(h, output_size=(160, 128)).warp_thermal(thermal)
    b = Registration(-2.0 * h, output_size=(160, 128)).warp_thermal(thermal)
    np.testing.assert_allclose(a, b, atol=1e-3)


@pytest.mark.parametrize('kwargs, words', [
    ({'homography': np.zeros((3, 3))}, ['not invertible']),
    ({'homography': [[1, 2, 3], [2, 4, 6], [0, 0, 1]]}, ['not invertible']),
    ({'homography': np.eye(2)}, ['3x3', '(2, 2)']),
    ({'homography': [[1, 0, 0], [0, 1, 0], [0, 0, np.nan]]}, ['non-finite']),
    ({'homography': [[1, 0, 0], [0, 1, 0], [-2, 0, 1]]}, ['through infinity']),
    ({'crop': (0.5, 0.0, 0.6, 1.0)}, ['outside the RGB image']),
    ({'crop': (-0.1, 0.0, 0.5, 0.5)}, ['outside the RGB image']),
    ({'crop': (0.1, 0.1, 0.0, 0.5)}, ['empty']),
    ({'crop': (0.1, 0.1, 0.5)}, ['4 finite numbers']),
    ({'output_size': (0, 512)}, ['output_size', 'positive integers']),
    ({'output_size': (-640, 512)}, ['output_size']),
    ({'output_size': (640.5, 512)}, ['output_size']),
    ({'output_size': 640}, ['output_size']),
])
def test_invalid_geometry_raises(kwargs, words):
    kwargs.setdefault('output_size', (640, 512))
    with pytest.raises(ValueError) as info:
        Registration(**kwargs)
    for word in words:
        assert word in str(info.value)


def test_invalid_images_and_sizes_raise():
    registration = Registration(output_size=(64, 48))
    with pytest.raises(ValueError, match=r'\(H, W\)'):
        registration.warp_thermal(np.zeros((48, 64, 3), np.uint16))
    with pytest.raises(ValueError, match='size must be'):
        registration.crop_rgb(np.zeros((48, 64, 3), np.uint8), (0, 10))
    with pytest.raises(ValueError, match='3x4'):
        registration.adapt_camera_matrices(np.eye(3), np.eye(3), (64, 48))
