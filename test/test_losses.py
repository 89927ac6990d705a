"""Tests of the OCCO training objective (training/losses.py) and the VGG19 extractors."""

from __future__ import annotations

import functools

from conftest import assert_tensors_close
import pytest
import torch

from occo_ros.model.network import FIFN
from training import losses
from training.vgg import (
    LUMA_WEIGHTS,
    VGGFeatures,
    build_extractor,
    build_loss_extractors,
    load_vgg19_state,
    random_vgg19_state,
)

pytestmark = [pytest.mark.core]


@functools.cache
def random_extractors() -> tuple:
    """The seeded random VGG19 loss extractors (φ_obj, φ_bg, record), built once per process
    (0.5 CPU s): also test_contrastive's. Frozen and in eval (tested below)."""
    return build_loss_extractors(None)


@pytest.fixture(scope='module')
def extractors():
    return random_extractors()


@pytest.fixture(scope='module')
def vgg19_state() -> dict[str, torch.Tensor]:
    """A full random VGG19 state (20 M normal draws); a test that changes it takes a copy."""
    return random_vgg19_state(seed=3)


def test_ssim_loss_is_zero_for_identical_images():
    image = torch.rand(2, 1, 24, 24, generator=torch.Generator().manual_seed(0))
    assert losses.ssim_loss(image, image, image).item() == pytest.approx(0.0, abs=1e-6)


def test_ssim_drops_for_different_images_and_is_symmetric():
    gen = torch.Generator().manual_seed(1)
    x, y = torch.rand(1, 1, 32, 32, generator=gen), torch.rand(1, 1, 32, 32, generator=gen)
    assert losses.ssim(x, y).item() < 0.5
    assert losses.ssim(x, y).item() == pytest.approx(losses.ssim(y, x).item(), abs=1e-6)


def test_gaussian_window_matches_definition():
    window = losses.gaussian_window()
    assert window.shape == (11,)
    assert window.sum().item() == pytest.approx(1.0, abs=1e-6)
    # Ratio centre / one pixel off-centre is exp(1 / (2 sigma^2)).
    ratio = (window[5] / window[6]).item()
    assert ratio == pytest.approx(torch.exp(torch.tensor(1 / (2 * 1.5 ** 2))).item(), rel=1e-5)


def test_separable_filter_equals_the_2d_window():
    maps = torch.rand(2, 3, 30, 25, generator=torch.Generator().manual_seed(3))
    window = losses.gaussian_window()
    kernel = torch.outer(window, window)[None, None].expand(3, 1, 11, 11)
    expected = torch.nn.functional.conv2d(maps, kernel, groups=3)
    assert torch.allclose(losses.gaussian_filter_valid(maps, window), expected, atol=1e-6)


def test_intensity_loss_on_constructed_arrays():
    visible = torch.full((1, 1, 4, 4), 0.2)
    infrared = torch.full((1, 1, 4, 4), 0.1)
    infrared[..., :2] = 0.5                       # left half: infrared brighter than visible
    fused = torch.full((1, 1, 4, 4), 0.3)
    # mean((0.3-0.2)^2) = 0.01; mask on half the pixels, |0.3-0.5| = 0.2 -> 0.1.
    assert losses.intensity_loss(fused, visible, infrared).item() == pytest.approx(0.11)


def test_sobel_of_a_ramp():
    ramp = torch.arange(8.0).repeat(8, 1)[None, None] * 0.1   # +0.1 per column
    gx, gy = losses.sobel(ramp)
    assert torch.allclose(gx[..., 1:-1, 1:-1], torch.full((1, 1, 6, 6), 0.8), atol=1e-6)
    assert torch.allclose(gy, torch.zeros_like(gy), atol=1e-6)
    gx_t, gy_t = losses.sobel(ramp.transpose(2, 3))
    assert torch.allclose(gy_t[..., 1:-1, 1:-1], torch.full((1, 1, 6, 6), 0.8), atol=1e-6)


def test_gradient_loss_known_values():
    ramp = torch.arange(8.0).repeat(8, 1)[None, None] * 0.1
    flat = torch.zeros_like(ramp)
    assert losses.gradient_loss(ramp, ramp, flat).item() == pytest.approx(0.0, abs=1e-7)
    # F flat: the loss is the mean |Sobel| of the ramp, which is 0.8 except the replicated
    # borders (columns 0 and 7 see a half step: 0.4).
    expected = (6 * 0.8 + 2 * 0.4) / 8
    assert losses.gradient_loss(flat, ramp, flat).item() == pytest.approx(expected, rel=1e-5)


def test_pixel_loss_weights():
    gen = torch.Generator().manual_seed(2)
    v, i, f = (torch.rand(1, 1, 16, 16, generator=gen) for _ in range(3))
    terms = losses.pixel_loss(f, v, i)
    expected = terms['ssim'] + 10 * terms['int'] + terms['grad']
    assert terms['pixel'].item() == pytest.approx(expected.item(), rel=1e-6)


def test_region_masks_partition_the_image():
    gen = torch.Generator().manual_seed(3)
    mask_vi = torch.rand(2, 1, 9, 9, generator=gen) * 0.9      # not binary: thresholded
    mask_ir = (torch.rand(2, 1, 9, 9, generator=gen) > 0.5).float()
    regions = losses.region_masks(mask_vi, mask_ir)
    total = sum(regions.values())
    assert torch.equal(total, torch.ones_like(total))
    for region in regions.values():
        assert set(region.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(regions['S'], ((mask_vi > 0.5) & (mask_ir > 0.5)).float())
    assert torch.equal(regions['Ui'], ((mask_vi <= 0.5) & (mask_ir > 0.5)).float())


def test_contextual_distance_identical_is_minimal():
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(2, 16, 6, 6, generator=gen)
    y = torch.randn(2, 16, 6, 6, generator=gen)
    same = losses.contextual_bilateral_distance(x, x).item()
    different = losses.contextual_bilateral_distance(x, y).item()
    assert 0.0 <= same < 1e-3
    assert different > same + 0.5
    # A permutation of the positions is the same feature set: still minimal.
    shuffled = x.flatten(2)[:, :, torch.randperm(36, generator=gen)].view_as(x)
    assert losses.contextual_bilateral_distance(x, shuffled).item() == pytest.approx(
        0.0, abs=1e-3)


def test_contrastive_term_prefers_the_positive(extractors):
    obj_vgg, _, _ = extractors
    phi = losses.ObjectFeatureDistance(obj_vgg)
    gen = torch.Generator().manual_seed(5)
    # 64 px: relu5_4 has 4x4 positions (fewer make random deep features input-independent).
    visible = torch.rand(4, 1, 64, 64, generator=gen)
    infrared = torch.rand(4, 1, 64, 64, generator=gen)
    regions = {'M': torch.ones(4, 1, 64, 64)}
    images = {'V': visible, 'I': infrared}
    term = (('cl', 'V', 'I', 'M', 'obj', 1.0),)
    near_positive = losses.contrastive_terms(visible, images, regions, phi, term)['cl'].item()
    near_negative = losses.contrastive_terms(infrared, images, regions, phi, term)['cl'].item()
    assert near_positive < 0.05
    assert near_negative > 3 * near_positive


def test_background_distance_is_scaled_mse(extractors):
    _, bg_vgg, _ = extractors
    phi = losses.BackgroundFeatureDistance(bg_vgg)
    gen = torch.Generator().manual_seed(6)
    a, b = torch.rand(1, 1, 8, 8, generator=gen), torch.rand(1, 1, 8, 8, generator=gen)
    fa, fb = phi.features(a)['relu1_1'], phi.features(b)['relu1_1']
    expected = ((fa - fb) ** 2).mean() / 16
    assert phi.distance(fa, fb).item() == pytest.approx(expected.item(), rel=1e-5)


def test_loss_networks_are_frozen_and_stay_in_eval(extractors):
    obj_vgg, bg_vgg, record = extractors
    loss = losses.OCCOLoss('full', obj_vgg, bg_vgg)
    loss.train()
    assert not loss.training and not obj_vgg.training
    assert not any(p.requires_grad for p in loss.parameters())
    assert record['kind'] == 'random'


@pytest.mark.slow
def test_full_loss_reaches_every_fifn_parameter(extractors):
    obj_vgg, bg_vgg, _ = extractors
    torch.manual_seed(0)
    model = FIFN(width=0.25)
    loss_fn = losses.OCCOLoss('full', obj_vgg, bg_vgg)
    gen = torch.Generator().manual_seed(7)
    visible = torch.rand(4, 1, 64, 64, generator=gen)
    infrared = torch.rand(4, 1, 64, 64, generator=gen)
    mask_vi = torch.zeros(4, 1, 64, 64)
    mask_ir = torch.zeros(4, 1, 64, 64)
    mask_vi[:, :, 8:40, 8:40] = 1
    mask_ir[:, :, 24:56, 24:56] = 1              # S, Uv, Ui and B all non-empty
    out = loss_fn(model(visible, infrared), visible, infrared, mask_vi, mask_ir)
    out.total.backward()
    assert torch.isfinite(out.total)
    for key in ('cl_uv', 'cl_ui', 'cl_s_v', 'cl_s_i', 'cl_b', 'con', 'pixel'):
        assert torch.isfinite(out.terms[key]) and out.terms[key].item() > 0, key
    missing = [name for name, p in model.named_parameters()
               if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f'no gradient for {missing}'


def test_full_loss_needs_masks_and_extractors(extractors):
    obj_vgg, bg_vgg, _ = extractors
    with pytest.raises(ValueError, match='obj_vgg'):
        losses.OCCOLoss('full')
    with pytest.raises(ValueError, match="'pixel' or 'full'"):
        losses.OCCOLoss('contrastive')
    x = torch.rand(4, 1, 16, 16)
    with pytest.raises(ValueError, match='mask_vi'):
        losses.OCCOLoss('full', obj_vgg, bg_vgg)(x, x, x)


@pytest.mark.slow
def test_loss_is_float32_also_under_autocast(extractors):
    # Like the model's autocast tests: a bf16 network output under autocast (the GPU
    # training path) must give the float32 loss and gradient, not a bf16 SSIM.
    obj_vgg, bg_vgg, _ = extractors
    loss_fn = losses.OCCOLoss('full', obj_vgg, bg_vgg)
    gen = torch.Generator().manual_seed(3)
    smooth = torch.nn.functional.avg_pool2d   # blurred noise: small local variances
    visible = smooth(torch.rand(4, 1, 70, 70, generator=gen), 7, 1)
    infrared = smooth(torch.rand(4, 1, 70, 70, generator=gen), 7, 1)
    fused16 = ((visible + infrared) / 2).bfloat16()
    mask_vi, mask_ir = torch.zeros(4, 1, 64, 64), torch.zeros(4, 1, 64, 64)
    mask_vi[:, :, 8:40, 8:40] = 1
    mask_ir[:, :, 24:56, 24:56] = 1
    reference = fused16.float().requires_grad_(True)
    expected = loss_fn(reference, visible, infrared, mask_vi, mask_ir)
    expected.total.backward()
    with torch.autocast('cpu', dtype=torch.bfloat16):
        # Autocast alone runs the SSIM filters in bf16 and gets another number.
        bf16_ssim = losses.ssim_loss(fused16.float(), visible, infrared)
        assert bf16_ssim.dtype == torch.bfloat16
        assert abs(bf16_ssim.item() - expected.terms['ssim'].item()) > 1e-3
        low = fused16.clone().requires_grad_(True)
        out = loss_fn(low, visible, infrared, mask_vi, mask_ir)
    out.total.backward()
    for name, value in out.terms.items():
        assert value.dtype == torch.float32, name
        assert_tensors_close(value, expected.terms[name], rtol=1e-5, atol=1e-6)
    assert_tensors_close(low.grad.float(), reference.grad, rtol=1e-2, atol=1e-6)


def test_vgg_weights_file_round_trip_and_gray_conversion(tmp_path, vgg19_state):
    path = tmp_path / 'vgg19.pth'
    torch.save(vgg19_state, path)
    loaded = load_vgg19_state(path)
    rgb_net = build_extractor(loaded, 3, 'relu1_1')
    gray_net = build_extractor(loaded, 1, 'relu1_1')
    x = torch.rand(1, 1, 8, 8)
    # Convolution is linear: the converted 1-channel conv on x equals the RGB conv on
    # (0.299 x, 0.587 x, 0.114 x).
    weighted = torch.cat([w * x for w in LUMA_WEIGHTS], dim=1)
    assert torch.allclose(gray_net(x, ('relu1_1',))['relu1_1'],
                          rgb_net(weighted, ('relu1_1',))['relu1_1'], atol=1e-6)


def test_vgg_weights_file_errors(tmp_path, vgg19_state):
    with pytest.raises(FileNotFoundError):
        load_vgg19_state(tmp_path / 'missing.pth')
    state = dict(vgg19_state)
    del state['features.34.weight']
    torch.save(state, tmp_path / 'partial.pth')
    with pytest.raises(ValueError, match='features.34.weight missing'):
        load_vgg19_state(tmp_path / 'partial.pth')
    (tmp_path / 'junk.pth').write_bytes(b'not a checkpoint')
    with pytest.raises(ValueError, match='cannot read'):
        load_vgg19_state(tmp_path / 'junk.pth')


def test_vgg_layer_shapes():
    net = VGGFeatures(3, 'relu4_4')
    feats = net(torch.rand(1, 3, 32, 32), ('relu1_1', 'relu4_4'))
    assert feats['relu1_1'].shape == (1, 64, 32, 32)
    assert feats['relu4_4'].shape == (1, 512, 4, 4)
    with pytest.raises(ValueError, match='deeper'):
        net(torch.rand(1, 3, 32, 32), ('relu5_4',))
