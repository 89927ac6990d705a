"""Classical fusion baselines (training.baselines): exact small cases and identities."""

import numpy as np
import pytest

from training.baselines import (
    BASELINES,
    fuse_average,
    fuse_gff,
    fuse_laplacian,
    fuse_max,
    guided_filter,
    pyramid_levels,
)

pytestmark = [pytest.mark.core]


def random_image(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_average_rounds_half_up():
    ir = np.array([[0, 1, 255, 10]], np.uint8)
    vi = np.array([[0, 2, 254, 13]], np.uint8)
    # (0+0)/2 = 0, (1+2)/2 = 1.5 -> 2, (255+254)/2 = 254.5 -> 255, (10+13)/2 = 11.5 -> 12
    np.testing.assert_array_equal(fuse_average(ir, vi), [[0, 2, 255, 12]])


def test_max_is_pixelwise():
    ir = np.array([[0, 200], [7, 9]], np.uint8)
    vi = np.array([[3, 100], [7, 250]], np.uint8)
    np.testing.assert_array_equal(fuse_max(ir, vi), [[3, 200], [7, 250]])


@pytest.mark.parametrize('shape', [(67, 93), (480, 640), (20, 21)])
def test_laplacian_pyramid_of_identical_inputs_returns_the_input(shape):
    image = random_image(shape)
    np.testing.assert_array_equal(fuse_laplacian(image, image), image)


def test_pyramid_depth_depends_on_size():
    assert pyramid_levels(480, 640) == 4
    assert pyramid_levels(40, 640) == 2        # 40 -> 20 -> 10; a third halving gives 5 < 8
    assert pyramid_levels(12, 12) == 0         # too small: plain average of the two images


def test_laplacian_keeps_the_stronger_detail():
    # A textured image fused with a flat one keeps all the texture: every detail level comes
    # from the textured image, only the base is averaged with the flat image.
    texture = np.clip(random_image((64, 64)).astype(int) // 4 + 96, 0, 255).astype(np.uint8)
    flat = np.full_like(texture, 128)
    fused = fuse_laplacian(texture, flat).astype(float)
    assert np.std(fused - texture) < 3.0
    assert np.std(fuse_average(texture, flat).astype(float) - texture) > 5.0


def test_guided_filter_keeps_constants_and_becomes_a_box_mean_for_large_eps():
    guide = random_image((40, 50)).astype(float) / 255
    np.testing.assert_allclose(guided_filter(guide, np.full_like(guide, 0.3), 3, 1e-3), 0.3)
    p = random_image((40, 50), seed=1).astype(float) / 255
    smoothed = guided_filter(guide, p, 2, 1e9)
    # interior 5x5 box mean of the box means of p (a -> 0, b -> mean p): two box passes
    inner = np.mean([p[10 + i - 2:10 + i + 3, 20 + j - 2:20 + j + 3].mean()
                     for i in range(-2, 3) for j in range(-2, 3)])
    assert smoothed[10, 20] == pytest.approx(inner, abs=1e-6)


def test_gff_of_identical_inputs_is_the_input():
    image = random_image((60, 70))
    assert np.abs(fuse_gff(image, image).astype(int) - image).max() <= 1


def test_registry_methods_return_uint8_of_the_input_size():
    ir, vi = random_image((45, 77), 1), random_image((45, 77), 2)
    assert set(BASELINES) == {'average', 'max', 'laplacian', 'gff'}
    for name, fuse in BASELINES.items():
        fused = fuse(ir, vi)
        assert fused.dtype == np.uint8 and fused.shape == ir.shape, name


def test_bad_inputs_are_named():
    image = random_image((20, 20))
    with pytest.raises(ValueError, match=r'ir \(20, 20\) and vi \(20, 21\) differ'):
        fuse_gff(image, random_image((20, 21)))
    with pytest.raises(ValueError, match='vi: expected a uint8 HxW gray image, got float64'):
        fuse_average(image, image.astype(float))
