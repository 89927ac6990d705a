"""Tests of occo_ros.synthetic.scene: determinism, sizes, thermal/RGB contrast and geometry.

Rendering time is not asserted here (shared CI machines); see the module docstring.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from occo_ros.synthetic.scene import SceneConfig, SyntheticScene, main

pytestmark = [pytest.mark.core]

SMALL = {'thermal_size': (160, 128), 'rgb_size': (320, 180)}
MEDIUM = {'thermal_size': (320, 256), 'rgb_size': (640, 360)}


@pytest.fixture(scope='module')
def busy() -> SyntheticScene:
    """Many objects at a medium size, with sensor noise."""
    return SyntheticScene(SceneConfig(people=6, vehicles=2, seed=1, **MEDIUM))


@pytest.fixture(scope='module')
def empty() -> SyntheticScene:
    """The same street as `busy` without objects: its background at every t."""
    return SyntheticScene(SceneConfig(people=0, vehicles=0, seed=1, **MEDIUM))


# Building a scene (background, noise frames) is most of a test here, and frames are a pure
# function of the configuration and time (tested below): tests that need the same still
# street share one.
@pytest.fixture(scope='module')
def still_small() -> SyntheticScene:
    return SyntheticScene(SceneConfig(people=0, vehicles=0, noise=False, **SMALL))


@pytest.fixture(scope='module')
def still_medium() -> SyntheticScene:
    return SyntheticScene(SceneConfig(people=0, vehicles=0, noise=False, **MEDIUM))


def inside(box: tuple[int, int, int, int], size: tuple[int, int]) -> bool:
    return box[0] >= 0 and box[1] >= 0 and box[2] <= size[0] and box[3] <= size[1]


def crop_of(image: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    return image[box[1]:box[3], box[0]:box[2]]


def test_default_sizes_dtypes_and_crop() -> None:
    scene = SyntheticScene(SceneConfig(people=1, vehicles=1, noise_frames=1))
    thermal, rgb = scene.thermal(0.0), scene.rgb(0.0)
    assert thermal.dtype == np.uint16 and thermal.shape == (512, 640)
    assert rgb.dtype == np.uint8 and rgb.shape == (720, 1280, 3)
    assert thermal.flags.c_contiguous and rgb.flags.c_contiguous
    assert scene.thermal_crop == pytest.approx(((1 - 0.703125) / 2, 0.0, 0.703125, 1.0))
    # A night scene: dark RGB, background counts of a bolometer at night.
    assert rgb.mean() < 40
    assert 7000 <= np.median(thermal) <= 8000


@pytest.mark.parametrize('thermal_size, rgb_size', [((161, 117), (333, 197)),
                                                    ((300, 100), (200, 150)),
                                                    ((17, 16), (16, 19))])
def test_odd_sizes_and_general_crop(thermal_size: tuple, rgb_size: tuple) -> None:
    scene = SyntheticScene(SceneConfig(thermal_size, rgb_size, people=3, vehicles=2))
    assert scene.thermal(2.5).shape == thermal_size[::-1]
    assert scene.rgb(2.5).shape == (*rgb_size[::-1], 3)
    x, y, w, h = scene.thermal_crop
    # Centred, inside [0, 1], full height or full width, with the thermal aspect ratio.
    assert x == pytest.approx((1 - w) / 2) and y == pytest.approx((1 - h) / 2)
    assert 0 < w <= 1 and 0 < h <= 1 and max(w, h) == 1.0
    assert (w * rgb_size[0]) / (h * rgb_size[1]) == pytest.approx(
        thermal_size[0] / thermal_size[1])


def test_frames_are_a_pure_function_of_seed_and_time() -> None:
    config = SceneConfig(seed=7, **SMALL)
    first, second = SyntheticScene(config), SyntheticScene(config)
    reference = first.thermal(1.25), first.rgb(1.25)
    first.thermal(3.0), first.rgb(3.0)            # rendering other times changes nothing
    for scene in (first, second):
        assert np.array_equal(scene.thermal(1.25), reference[0])
        assert np.array_equal(scene.rgb(1.25), reference[1])
    assert first.objects(1.25) == second.objects(1.25)
    # Another seed gives another scene.
    other = SyntheticScene(SceneConfig(seed=8, **SMALL))
    assert not np.array_equal(other.rgb(1.25), reference[1])


def test_objects_move_between_times() -> None:
    scene = SyntheticScene(SceneConfig(seed=2, **SMALL))
    before, after = scene.objects(0.0), scene.objects(0.5)
    assert [o.kind for o in before] == ['person'] * 4 + ['vehicle'] * 2
    for a, b in zip(before, after):
        assert a.ident == b.ident and a.position[1] == b.position[1]   # stays in its row
        assert a.position[0] != b.position[0]
        assert a.rgb_box != b.rgb_box
    assert not np.array_equal(scene.thermal(0.0), scene.thermal(0.5))


def test_objects_wrap_around_and_come_back() -> None:
    scene = SyntheticScene(SceneConfig(seed=3, **SMALL))
    seen = {o.ident: [False, False] for o in scene.objects(0.0)}
    for t in np.arange(0.0, 400.0, 0.5):
        for o in scene.objects(float(t)):
            assert -1.0 < o.position[0] < 2.0
            seen[o.ident][0] |= inside(o.rgb_box, SMALL['rgb_size'])
            seen[o.ident][1] |= o.rgb_box[2] <= 0 or o.rgb_box[0] >= SMALL['rgb_size'][0]
    assert all(on and off for on, off in seen.values()), seen


def test_returned_frames_are_owned_by_the_caller() -> None:
    scene = SyntheticScene(SceneConfig(**SMALL))
    thermal, rgb = scene.thermal(0.0), scene.rgb(0.0)
    expected = thermal.copy(), rgb.copy()
    thermal[:] = 0
    rgb[:] = 0
    assert np.array_equal(scene.thermal(0.0), expected[0])
    assert np.array_equal(scene.rgb(0.0), expected[1])


def test_no_noise_gives_the_same_frame_at_every_time_without_objects(
        still_small: SyntheticScene) -> None:
    assert np.array_equal(still_small.rgb(0.0), still_small.rgb(9.0))
    noisy = SyntheticScene(SceneConfig(people=0, vehicles=0, **SMALL))
    # The noise frame is picked per timestamp from noise_frames (8) pre-rendered ones.
    frames = {noisy.thermal(n / 30).tobytes() for n in range(12)}
    assert len(frames) >= 4


def visible_people(scene: SyntheticScene, t: float) -> list:
    return [o for o in scene.objects(t) if o.kind == 'person'
            and inside(o.thermal_box, scene.config.thermal_size)
            and inside(o.rgb_box, scene.config.rgb_size)]


def test_people_and_vehicles_are_warm(busy: SyntheticScene, empty: SyntheticScene) -> None:
    checked = {'person': 0, 'vehicle': 0}
    for t in np.arange(0.0, 20.0, 2.0):
        thermal = busy.thermal(float(t)).astype(np.float64)
        background = empty.thermal(float(t)).astype(np.float64)
        for o in busy.objects(float(t)):
            if not inside(o.thermal_box, busy.config.thermal_size):
                continue
            warm = crop_of(thermal, o.thermal_box) - crop_of(background, o.thermal_box)
            assert warm.mean() > 300, (t, o)          # the box is warmer on average
            assert warm.max() > 1000, (t, o)          # and holds a clearly warm body
            hottest = crop_of(thermal, o.thermal_box).max()
            if o.kind == 'person' and o.thermal_box[3] - o.thermal_box[1] >= 40:
                assert 9500 <= hottest <= 11500, (t, o, hottest)
            if o.kind == 'vehicle':
                assert hottest >= 11000, (t, o, hottest)   # engine, wheels, exhaust
            checked[o.kind] += 1
    assert checked['person'] >= 10 and checked['vehicle'] >= 1, checked


def test_rgb_hides_people_that_thermal_shows(busy: SyntheticScene,
                                             empty: SyntheticScene) -> None:
    """Visibility = mean |change| over the person's silhouette / std of the street there.

    The silhouette is where the thermal frame is > 300 counts warmer than the empty street,
    carried into the RGB box by scaling (the boxes correspond through the crop).
    """
    thermal_snr, rgb_snr = [], []
    for t in np.arange(0.0, 30.0, 1.5):
        thermal, thermal_bg = (s.thermal(float(t)).astype(np.float32) for s in (busy, empty))
        grey, grey_bg = (s.rgb(float(t)).astype(np.float32).mean(axis=2) for s in (busy, empty))
        for o in visible_people(busy, float(t)):
            warm = crop_of(thermal, o.thermal_box) - crop_of(thermal_bg, o.thermal_box)
            body = warm > 300
            box = o.rgb_box
            rgb_body = cv2.resize(body.astype(np.uint8), (box[2] - box[0], box[3] - box[1]),
                                  interpolation=cv2.INTER_NEAREST) > 0
            change = np.abs(crop_of(grey, box) - crop_of(grey_bg, box))
            thermal_snr.append(warm[body].mean() / crop_of(thermal_bg, o.thermal_box).std())
            rgb_snr.append(change[rgb_body].mean() / crop_of(grey_bg, box).std())
    assert len(thermal_snr) >= 30
    assert min(thermal_snr) > 8.0, sorted(thermal_snr)[:5]          # every person stands out
    # Most are barely visible in RGB (a dark silhouette under a street light may show).
    assert np.median(rgb_snr) < 2.0, sorted(rgb_snr)
    assert np.median(thermal_snr) > 5.0 * np.median(rgb_snr)


def test_object_centres_agree_through_the_crop(busy: SyntheticScene) -> None:
    (tw, th), (rw, rh) = busy.config.thermal_size, busy.config.rgb_size
    cx, cy, cw, ch = busy.thermal_crop
    checked = 0
    for t in np.arange(0.0, 30.0, 0.7):
        for o in busy.objects(float(t)):
            if not inside(o.thermal_box, (tw, th)):
                continue
            rx, ry = (o.rgb_box[0] + o.rgb_box[2]) / 2, (o.rgb_box[1] + o.rgb_box[3]) / 2
            expected = ((rx / rw - cx) / cw * tw, (ry / rh - cy) / ch * th)
            actual = ((o.thermal_box[0] + o.thermal_box[2]) / 2,
                      (o.thermal_box[1] + o.thermal_box[3]) / 2)
            assert actual == pytest.approx(expected, abs=2.0), (t, o)
            checked += 1
    assert checked >= 30


@pytest.fixture(scope='module')
def lone_person() -> tuple[SyntheticScene, SyntheticScene]:
    """One person, no noise, and the same street without them."""
    config = {'people': 1, 'vehicles': 0, 'noise': False, 'seed': 5, **MEDIUM}
    street = {**config, 'people': 0}
    return SyntheticScene(SceneConfig(**config)), SyntheticScene(SceneConfig(**street))


@pytest.mark.parametrize('camera', ['thermal', 'rgb'])
def test_objects_are_drawn_inside_their_boxes(lone_person: tuple, camera: str) -> None:
    """A lone person's pixels (frame minus empty street) lie in the reported box."""
    scene, street = lone_person
    size = getattr(scene.config, f'{camera}_size')
    times = [t for t in np.arange(0.0, 60.0, 0.25)
             if inside(getattr(scene.objects(float(t))[0], f'{camera}_box'), size)]
    assert times, 'the person never crossed the image'
    for t in times[::max(1, len(times) // 5)]:
        render = getattr(scene, camera)
        change = np.abs(render(float(t)).astype(np.float64) - getattr(street, camera)(float(t)))
        if change.ndim == 3:
            change = change.sum(axis=2)
        box = getattr(scene.objects(float(t))[0], f'{camera}_box')
        # The box holds the opaque body; blurred edges (alpha < 0.5) may spill a little.
        grown = (box[0] - 2, box[1] - 2, box[2] + 2, box[3] + 2)
        assert crop_of(change, grown).sum() >= 0.97 * change.sum(), (t, box)
        assert crop_of(change, box).sum() >= 0.8 * change.sum(), (t, box)


def best_edge_shift(a: np.ndarray, b: np.ndarray, margin: int = 4) -> tuple[int, int]:
    """(dx, dy) in [-margin, margin] that best lays the edges of b over those of a.

    The margin stays below half the pitch of the building windows (periodic edges).
    """

    def edges(image: np.ndarray) -> np.ndarray:
        image = image.astype(np.float32)
        magnitude = np.hypot(cv2.Sobel(image, cv2.CV_32F, 1, 0),
                             cv2.Sobel(image, cv2.CV_32F, 0, 1))
        return magnitude / magnitude.mean()

    a, b = edges(a), edges(b)
    h, w, m = a.shape[0], a.shape[1], margin
    scores = {(dx, dy): float((a[m:-m, m:-m] * b[m + dy:h - m + dy, m + dx:w - m + dx]).mean())
              for dx in range(-m, m + 1) for dy in range(-m, m + 1)}
    return max(scores, key=scores.get)


def test_background_structures_align_between_cameras(still_medium: SyntheticScene) -> None:
    """Edges of the empty street in thermal and in the RGB crop match at zero shift."""
    scene = still_medium
    (tw, th), (rw, rh) = scene.config.thermal_size, scene.config.rgb_size
    x, y, w, h = scene.thermal_crop
    rgb = scene.rgb(0.0).astype(np.float32).mean(axis=2)
    rgb = rgb[round(y * rh):round((y + h) * rh), round(x * rw):round((x + w) * rw)]
    rgb = cv2.resize(rgb, (tw, th), interpolation=cv2.INTER_AREA)
    dx, dy = best_edge_shift(scene.thermal(0.0), rgb)
    assert abs(dx) <= 1 and abs(dy) <= 1, (dx, dy)


def test_registration_with_the_scene_geometry_aligns_the_images(
        still_medium: SyntheticScene) -> None:
    """The crop and homography the node is configured with put both images in register."""
    from occo_ros.core.registration import Registration

    scene = still_medium
    x, y, w, h = scene.thermal_crop
    assert scene.thermal_homography @ np.array([0.0, 0.0, 1.0]) == pytest.approx([x, y, 1.0])
    assert scene.thermal_homography @ np.array([1.0, 1.0, 1.0]) == pytest.approx(
        [x + w, y + h, 1.0])
    registration = Registration(scene.thermal_homography, scene.thermal_crop,
                                output_size=(288, 224))
    thermal = registration.warp_thermal(scene.thermal(0.0))
    grey = registration.crop_rgb(scene.rgb(0.0)).astype(np.float32).mean(axis=2)
    assert thermal.min() > 0            # the thermal image covers the whole fusion frame
    dx, dy = best_edge_shift(thermal, grey)
    assert abs(dx) <= 1 and abs(dy) <= 1, (dx, dy)


def test_camera_matrices_project_consistently_with_the_crop(
        still_small: SyntheticScene) -> None:
    scene = still_small
    k_rgb, k_thermal = scene.camera_matrix('rgb'), scene.camera_matrix('thermal')
    assert k_rgb.shape == (3, 3) and k_rgb[0, 0] == pytest.approx(SMALL['rgb_size'][0] / 2)
    assert math.degrees(2 * math.atan(SMALL['rgb_size'][0] / 2 / k_rgb[0, 0])) == \
        pytest.approx(90.0)
    (tw, th), (rw, rh) = SMALL['thermal_size'], SMALL['rgb_size']
    cx, cy, cw, ch = scene.thermal_crop
    points = np.random.default_rng(0).uniform([-2, -1, 4], [2, 1, 20], (50, 3))
    for point in points:
        # Pixel centres are integers in camera_info: continuous coordinate = pixel + 0.5.
        rgb = k_rgb @ point
        thermal = k_thermal @ point
        u, v = (rgb[0] / rgb[2] + 0.5) / rw, (rgb[1] / rgb[2] + 0.5) / rh
        assert thermal[0] / thermal[2] + 0.5 == pytest.approx((u - cx) / cw * tw)
        assert thermal[1] / thermal[2] + 0.5 == pytest.approx((v - cy) / ch * th)
    with pytest.raises(ValueError, match='ir'):
        scene.camera_matrix('ir')


@pytest.mark.parametrize('kwargs, field', [
    ({'thermal_size': (0, 512)}, 'thermal_size'),
    ({'thermal_size': (640,)}, 'thermal_size'),
    ({'rgb_size': (1280.0, 720)}, 'rgb_size'),
    ({'rgb_size': (100000, 720)}, 'rgb_size'),
    ({'rgb_size': 'hd'}, 'rgb_size'),
    ({'people': -1}, 'people'),
    ({'vehicles': 65}, 'vehicles'),
    ({'vehicles': True}, 'vehicles'),
    ({'seed': -3}, 'seed'),
    ({'noise': 'yes'}, 'noise'),
    ({'noise_frames': 0}, 'noise_frames'),
])
def test_invalid_config_raises(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        SceneConfig(**kwargs)


@pytest.mark.parametrize('t', [float('nan'), float('inf'), '1.0', None])
def test_invalid_time_raises(still_small: SyntheticScene, t: object) -> None:
    with pytest.raises(ValueError, match='finite'):
        still_small.thermal(t)
    with pytest.raises(ValueError, match='finite'):
        still_small.objects(t)


def test_cli_writes_viewable_pngs(tmp_path, capsys) -> None:
    out = tmp_path / 'frames'
    assert main(['--out', str(out), '--frames', '2', '--thermal-size', '64x48',
                 '--rgb-size', '128x72', '--seed', '4']) == 0
    thermal16 = cv2.imread(str(out / 'thermal16_001.png'), cv2.IMREAD_UNCHANGED)
    scene = SyntheticScene(SceneConfig((64, 48), (128, 72), seed=4))
    assert np.array_equal(thermal16, scene.thermal(0.5))
    view = cv2.imread(str(out / 'thermal_000.png'), cv2.IMREAD_UNCHANGED)
    assert view.dtype == np.uint8 and view.shape == (48, 64) and view.max() > view.min()
    assert np.array_equal(cv2.imread(str(out / 'rgb_001.png')), scene.rgb(0.5))
    assert 'thermal crop' in capsys.readouterr().out


@pytest.mark.parametrize('argv', [['--help'], ['--out', 'x', '--rgb-size', '12x'],
                                  ['--out', 'x', '--rgb-size', '8x8'],
                                  ['--out', 'x', '--frames', '0']])
def test_cli_help_and_bad_arguments(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == (0 if argv == ['--help'] else 2)
