"""The shared-pass contrastive term (training/losses.py) against the spec read literally.

OCCO_METHOD.md §3 defines each CL term on its own: anchors F·M of the first quarter, the
positive P·M, four negatives N·M, each through the extractor. The loss computes every
distinct masked image once and skips empty masks; these tests check it gives the same
values and the same gradient as the literal reading, also with empty regions.
"""

from __future__ import annotations

from conftest import assert_tensors_close
import pytest
from test_losses import random_extractors
import torch

from training import losses

pytestmark = [pytest.mark.core]


@pytest.fixture(scope='module')
def loss_fn() -> losses.OCCOLoss:
    obj_vgg, bg_vgg, _ = random_extractors()
    return losses.OCCOLoss('full', obj_vgg, bg_vgg)


def literal_term(fused, positive, negative, mask, phi) -> torch.Tensor:
    """One CL term exactly as the spec words it, with its own extractor calls."""
    quarter = fused.shape[0] // 4
    anchor = phi.features((fused * mask)[:quarter])
    loss = torch.zeros(())
    for layer, weight in phi.layer_weights.items():
        pos = phi.distance(anchor[layer], phi.features((positive * mask)[:quarter])[layer])
        negs = [phi.distance(anchor[layer], phi.features(n * m)[layer])
                for n, m in zip(negative.chunk(4), mask.chunk(4))]
        loss = loss + weight * pos / (sum(negs) + losses.CX_EPS)
    return loss


def literal_con(loss_fn, fused, visible, infrared, mask_vi, mask_ir) -> dict:
    r = losses.region_masks(mask_vi, mask_ir)
    obj, bg = loss_fn.phi_obj, loss_fn.phi_bg
    terms = {'cl_uv': literal_term(fused, visible, infrared, r['Uv'], obj),
             'cl_ui': literal_term(fused, infrared, visible, r['Ui'], obj),
             'cl_s_v': literal_term(fused, visible, infrared, r['S'], obj),
             'cl_s_i': literal_term(fused, infrared, visible, r['S'], obj),
             'cl_b': literal_term(fused, visible, infrared, r['B'], bg)}
    terms['con'] = 10 * (terms['cl_uv'] + terms['cl_ui'] + 0.5 * terms['cl_s_v']
                         + 0.5 * terms['cl_s_i'] + terms['cl_b'])
    return terms


def images_and_masks(empty_crops: tuple[int, ...], empty_shared: tuple[int, ...]):
    # Batch 4 (one anchor crop), 32 px: relu5_4 has 2x2 positions; small enough to be quick.
    gen = torch.Generator().manual_seed(11)
    visible = torch.rand(4, 1, 32, 32, generator=gen)
    infrared = torch.rand(4, 1, 32, 32, generator=gen)
    mask_vi, mask_ir = torch.zeros(4, 1, 32, 32), torch.zeros(4, 1, 32, 32)
    for crop in range(4):
        y, x = 2 + 3 * crop, 2 + 2 * crop
        mask_vi[crop, :, y:y + 12, x:x + 12] = 1
        mask_ir[crop, :, y + 5:y + 17, x + 6:x + 18] = 1
    for crop in empty_shared:                    # S empty, Uv and Ui not
        mask_ir[crop, :, :, :16] = 0
        mask_vi[crop, :, :, 16:] = 0
    for crop in empty_crops:                     # no object at all: only B
        mask_vi[crop], mask_ir[crop] = 0, 0
    return visible, infrared, mask_vi, mask_ir


@pytest.mark.slow
@pytest.mark.parametrize('empty_crops, empty_shared', [
    ((), ()),                   # every region non-empty in every crop
    ((1,), (2,)),               # empty regions among the negatives
    ((0,), (3,)),               # the anchor crop without objects
])
def test_shared_passes_equal_the_literal_terms(loss_fn, empty_crops, empty_shared):
    visible, infrared, mask_vi, mask_ir = images_and_masks(empty_crops, empty_shared)
    base = ((visible + infrared) / 2).requires_grad_(True)
    fused = base * 1.0
    ours = loss_fn.contrastive(fused, visible, infrared, mask_vi, mask_ir)
    ours['con'].backward()
    ours_grad = base.grad.clone()
    base.grad = None
    expected = literal_con(loss_fn, base * 1.0, visible, infrared, mask_vi, mask_ir)
    expected['con'].backward()
    for name, value in expected.items():
        assert_tensors_close(ours[name], value, rtol=1e-4, atol=1e-6, msg=name)
    assert_tensors_close(ours_grad, base.grad, rtol=1e-3, atol=1e-7)
    assert base.grad.abs().sum() > 0


def test_masked_features_share_one_zero_image(loss_fn):
    phi = loss_fn.phi_obj
    gen = torch.Generator().manual_seed(4)
    images = torch.rand(4, 1, 32, 32, generator=gen)
    masks = torch.zeros(4, 1, 32, 32)
    masks[1, :, 4:20, 4:20] = 1
    masks[3, :, 10:30, 0:12] = 1
    calls = []
    original = phi.features

    def counting(x):
        calls.append(x.shape[0])
        return original(x)

    phi.features = counting
    try:
        feats = losses.masked_features(phi, images, masks)
    finally:
        del phi.features
    assert calls == [3]                          # crops 1 and 3, plus one zero image
    direct = phi.features(images * masks)
    for layer, value in feats.items():
        assert_tensors_close(value, direct[layer], rtol=1e-4, atol=1e-5)


def test_batch_must_split_in_quarters(loss_fn):
    x = torch.rand(6, 1, 16, 16)
    with pytest.raises(ValueError, match='multiple of 4'):
        loss_fn.contrastive(x, x, x, torch.ones_like(x), torch.ones_like(x))
