"""The OCCO training objective (OCCO_METHOD.md §3): L_total = L_pixel + L_con.

All images are (B, 1, H, W) float tensors: V = visible Y, I = infrared, F = raw network
output, values nominally in [0, 1] (F is not clamped, so gradients flow outside [0, 1]).
Masks are binary (B, 1, H, W) tensors in {0, 1}.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
import torch.nn.functional as F

from .vgg import IMAGENET_MEAN, IMAGENET_STD, VGGFeatures

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_C1 = 0.01 ** 2
SSIM_C2 = 0.03 ** 2
PIXEL_WEIGHTS = {'ssim': 1.0, 'int': 10.0, 'grad': 1.0}
CON_WEIGHT = 10.0
CX_BANDWIDTH = 1.0          # h of the contextual similarity
CX_EPS = 1e-5
OBJ_LAYERS = {'relu5_4': 1.0, 'relu4_4': 0.25}
BG_LAYER = 'relu1_1'
BG_SCALE = 1.0 / 16.0


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """Normalised 1-D Gaussian, shape (size,), sums to 1; the 2-D SSIM window is its outer
    product with itself."""
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-coords ** 2 / (2 * sigma ** 2))
    return (g / g.sum()).float()


def gaussian_filter_valid(maps: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Filter each channel of (B, C, H, W) with the 2-D window outer(window, window), valid
    positions only. Separable (a row pass, then a column pass): 2k instead of k^2
    multiplies per pixel, and one grouped conv per pass for all C maps."""
    channels = maps.shape[1]
    rows = window.to(maps).view(1, 1, 1, -1).expand(channels, 1, 1, -1)
    cols = window.to(maps).view(1, 1, -1, 1).expand(channels, 1, -1, 1)
    return F.conv2d(F.conv2d(maps, rows, groups=channels), cols, groups=channels)


def ssim(x: torch.Tensor, y: torch.Tensor, window: torch.Tensor | None = None) -> torch.Tensor:
    """Mean SSIM of (B, 1, H, W) images in [0, 1]; Gaussian 11x11 window, valid positions.

    Returns a scalar tensor (mean over the batch and all valid window positions).
    """
    if window is None:
        window = gaussian_window()
    # The five local moments in one filtering pass.
    moments = gaussian_filter_valid(torch.cat([x, y, x * x, y * y, x * y], dim=1), window)
    mu_x, mu_y, xx, yy, xy = moments.unbind(dim=1)
    var_x, var_y, cov = xx - mu_x ** 2, yy - mu_y ** 2, xy - mu_x * mu_y
    num = (2 * mu_x * mu_y + SSIM_C1) * (2 * cov + SSIM_C2)
    den = (mu_x ** 2 + mu_y ** 2 + SSIM_C1) * (var_x + var_y + SSIM_C2)
    return (num / den).mean()


SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


def sobel(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sobel derivatives (gx, gy) of (B, 1, H, W) images; replicate padding keeps H x W."""
    kx = SOBEL_X.to(x)[None, None]
    ky = SOBEL_X.t().to(x)[None, None]
    padded = F.pad(x, (1, 1, 1, 1), mode='replicate')
    return F.conv2d(padded, kx), F.conv2d(padded, ky)


def ssim_loss(fused: torch.Tensor, visible: torch.Tensor, infrared: torch.Tensor,
              window: torch.Tensor | None = None) -> torch.Tensor:
    """L_ssim = (1 - SSIM(V, F)) + (1 - SSIM(I, F)); 0 when F equals both inputs."""
    return (1 - ssim(visible, fused, window)) + (1 - ssim(infrared, fused, window))


def intensity_loss(fused: torch.Tensor, visible: torch.Tensor,
                   infrared: torch.Tensor) -> torch.Tensor:
    """L_int = mean((F - V)^2) + mean(1[V < I] * |F - I|), means over all pixels."""
    brighter_ir = (visible < infrared).to(fused.dtype)
    return ((fused - visible) ** 2).mean() + (brighter_ir * (fused - infrared).abs()).mean()


def gradient_loss(fused: torch.Tensor, visible: torch.Tensor,
                  infrared: torch.Tensor) -> torch.Tensor:
    """L_grad = mean|max(|SxV|, |SxI|) - |SxF|| + the same with Sy."""
    loss = fused.new_zeros(())
    for gv, gi, gf in zip(sobel(visible), sobel(infrared), sobel(fused)):
        loss = loss + (torch.maximum(gv.abs(), gi.abs()) - gf.abs()).abs().mean()
    return loss


def pixel_loss(fused: torch.Tensor, visible: torch.Tensor,
               infrared: torch.Tensor) -> dict[str, torch.Tensor]:
    """L_pixel = 1 L_ssim + 10 L_int + 1 L_grad; returns the terms and 'pixel'."""
    terms = {'ssim': ssim_loss(fused, visible, infrared),
             'int': intensity_loss(fused, visible, infrared),
             'grad': gradient_loss(fused, visible, infrared)}
    terms['pixel'] = sum(PIXEL_WEIGHTS[k] * terms[k] for k in PIXEL_WEIGHTS)
    return terms


def region_masks(mask_vi: torch.Tensor, mask_ir: torch.Tensor) -> dict[str, torch.Tensor]:
    """Regions S (shared), Uv (visible only), Ui (infrared only), B (background).

    Inputs are thresholded at 0.5 first, so the four outputs are binary and sum to 1.
    """
    mv = (mask_vi > 0.5).to(torch.float32)
    mi = (mask_ir > 0.5).to(torch.float32)
    shared = mv * mi
    uv, ui = mv - shared, mi - shared
    return {'S': shared, 'Uv': uv, 'Ui': ui, 'B': 1 - uv - ui - shared}


def _contextual_similarity(dist: torch.Tensor) -> torch.Tensor:
    """Distances (B, N, M) -> contextual similarities normalised over j (the M axis)."""
    relative = dist / (dist.min(dim=2, keepdim=True).values + CX_EPS)
    w = torch.exp((1 - relative) / CX_BANDWIDTH)
    return w / w.sum(dim=2, keepdim=True)


def contextual_bilateral_distance(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Contextual-bilateral distance of feature maps x, y (B, C, H, W) -> scalar.

    Cosine distance (both sets centred by the mean of y) and squared-L2 distance between
    every position i of x and j of y are each turned into contextual similarities, mixed
    0.5/0.5; cx = mean_i max_j; distance = -log(cx + 1e-5), averaged over the batch.
    Lower for feature sets that match; computed in float32. [ours] Clamped at 0: cx <= 1,
    so only the 1e-5 offset can make it negative, and a negative value would flip the sign
    of the contrastive ratio.
    """
    x = x.float().flatten(2)                              # (B, C, N)
    y = y.float().flatten(2)                              # (B, C, M)
    y_mean = y.mean(dim=2, keepdim=True)
    xc = F.normalize(x - y_mean, dim=1)
    yc = F.normalize(y - y_mean, dim=1)
    cos_dist = 1 - torch.bmm(xc.transpose(1, 2), yc)      # (B, N, M)
    l2_dist = (x.pow(2).sum(1)[:, :, None] + y.pow(2).sum(1)[:, None, :]
               - 2 * torch.bmm(x.transpose(1, 2), y)).clamp_min(0)
    cx_sim = 0.5 * _contextual_similarity(cos_dist) + 0.5 * _contextual_similarity(l2_dist)
    cx = cx_sim.max(dim=2).values.mean(dim=1)             # (B,)
    return (-torch.log(cx + CX_EPS)).clamp_min(0).mean()


class ObjectFeatureDistance(nn.Module):
    """φ_obj: contextual-bilateral distance on VGG19 relu5_4 + 0.25 x relu4_4 features.

    Inputs (B, 1, H, W) in [0, 1] are repeated to 3 channels and ImageNet-normalised.
    """

    layer_weights = OBJ_LAYERS

    def __init__(self, vgg: VGGFeatures) -> None:
        super().__init__()
        self.vgg = vgg
        self.register_buffer('img_mean', torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer('img_std', torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """{layer: (B, C, h, w)} features of (B, 1, H, W) images."""
        x = (x.expand(-1, 3, -1, -1) - self.img_mean) / self.img_std
        return self.vgg(x, tuple(OBJ_LAYERS))

    @staticmethod
    def distance(fa: torch.Tensor, fb: torch.Tensor) -> torch.Tensor:
        return contextual_bilateral_distance(fa, fb)


class BackgroundFeatureDistance(nn.Module):
    """φ_bg: MSE of relu1_1 features of the 1-channel VGG19, x 1/16 (inputs not normalised)."""

    layer_weights = {BG_LAYER: 1.0}

    def __init__(self, vgg: VGGFeatures) -> None:
        super().__init__()
        self.vgg = vgg

    def features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """{'relu1_1': (B, 64, H, W)} features of (B, 1, H, W) images."""
        return self.vgg(x, (BG_LAYER,))

    @staticmethod
    def distance(fa: torch.Tensor, fb: torch.Tensor) -> torch.Tensor:
        return BG_SCALE * F.mse_loss(fa.float(), fb.float())


# Which image and region each CL term of L_con uses (OCCO_METHOD.md §3), and its weight:
# (name, positive, negative, region, extractor, weight); 'V' visible, 'I' infrared.
CL_TERMS = (
    ('cl_uv', 'V', 'I', 'Uv', 'obj', 1.0),
    ('cl_ui', 'I', 'V', 'Ui', 'obj', 1.0),
    ('cl_s_v', 'V', 'I', 'S', 'obj', 0.5),
    ('cl_s_i', 'I', 'V', 'S', 'obj', 0.5),
    ('cl_b', 'V', 'I', 'B', 'bg', 1.0),
)


def masked_features(phi: nn.Module, images: torch.Tensor,
                    masks: torch.Tensor) -> dict[str, torch.Tensor]:
    """phi features of images * masks ((N, 1, H, W) each) in one extractor pass.

    A crop whose mask is empty is all zeros once masked; all such crops share the features
    of one zero image, computed once (exact: the same input gives the same features, and
    F * 0 passes no gradient to F either way).
    """
    keep = masks.flatten(1).amax(dim=1) > 0
    if bool(keep.all()):
        return phi.features(images * masks)
    run = torch.cat([(images * masks)[keep], images.new_zeros((1, *images.shape[1:]))])
    # Row of `run` for each crop: its own, or the zero image (the last row).
    index = torch.where(keep, torch.cumsum(keep, 0) - 1, int(keep.sum()))
    return {layer: f[index] for layer, f in phi.features(run).items()}


def contrastive_terms(fused: torch.Tensor, images: dict[str, torch.Tensor],
                      regions: dict[str, torch.Tensor], phi: nn.Module,
                      terms: tuple) -> dict[str, torch.Tensor]:
    """CL(P, N, M, φ) = φ(anchor, positive) / Σ_k φ(anchor, negative_k), summed over layers,
    for each of `terms` (rows of CL_TERMS sharing the extractor phi).

    Anchors are F·M of the first batch quarter, the positive is P·M of the same crops, the
    four negatives are N·M of every quarter (each with its own mask). Each feature layer
    contributes its own ratio, weighted by phi.layer_weights.

    [ours] Cheaper than term by term, same values: every distinct masked image goes through
    the extractor once for all terms, in two passes (the anchors with autograd, the rest
    without): F·S is the anchor of two terms, and V·S, I·S are the positive of one term and
    the negatives of another. Crops with an empty region mask skip the extractor
    (masked_features).
    """
    batch = fused.shape[0]
    if batch % 4:
        raise ValueError(f'contrastive loss needs a batch that is a multiple of 4, got {batch}')
    quarter = batch // 4
    anchor_regions = list(dict.fromkeys(region for _, _, _, region, _, _ in terms))
    # (image, region) -> crops needed: all four quarters (negatives) or the first (positive).
    needed: dict[tuple[str, str], int] = {}
    for _, positive, negative, region, _, _ in terms:
        needed[(negative, region)] = batch
        needed.setdefault((positive, region), quarter)
    anchors = masked_features(
        phi, fused[:quarter].repeat(len(anchor_regions), 1, 1, 1),
        torch.cat([regions[r][:quarter] for r in anchor_regions]))
    with torch.no_grad():
        others = masked_features(
            phi, torch.cat([images[name][:count] for (name, _), count in needed.items()]),
            torch.cat([regions[region][:count] for (_, region), count in needed.items()]))
    start, offsets = 0, {}
    for key, count in needed.items():
        offsets[key], start = start, start + count
    out = {}
    for name, positive, negative, region, _, _ in terms:
        a = anchor_regions.index(region) * quarter
        loss = fused.new_zeros((), dtype=torch.float32)
        for layer, weight in phi.layer_weights.items():
            anchor = anchors[layer][a:a + quarter]
            p, n = offsets[(positive, region)], offsets[(negative, region)]
            pos = phi.distance(anchor, others[layer][p:p + quarter])
            negs = [phi.distance(anchor, f)
                    for f in others[layer][n:n + batch].split(quarter, dim=0)]
            loss = loss + weight * pos / (sum(negs) + CX_EPS)
        out[name] = loss
    return out


@dataclass
class LossOutput:
    """Total loss and its named terms (detached floats are taken by the logger)."""

    total: torch.Tensor
    terms: dict[str, torch.Tensor]


class OCCOLoss(nn.Module):
    """L_total = L_pixel + L_con (full) or L_pixel alone (pixel).

    Build once before the training loop: the VGG19 networks are frozen, in eval mode, and
    move with `.to(device)` together with this module.

    Args:
        mode: 'pixel' or 'full'.
        obj_vgg: 3-channel VGG19 up to relu5_4 (needed for 'full').
        bg_vgg: 1-channel VGG19 up to relu1_1 (needed for 'full').
    """

    def __init__(self, mode: str = 'full', obj_vgg: VGGFeatures | None = None,
                 bg_vgg: VGGFeatures | None = None) -> None:
        super().__init__()
        if mode not in ('pixel', 'full'):
            raise ValueError(f"loss mode {mode!r}; expected 'pixel' or 'full'")
        if mode == 'full' and (obj_vgg is None or bg_vgg is None):
            raise ValueError("loss mode 'full' needs obj_vgg and bg_vgg feature extractors")
        self.mode = mode
        self.phi_obj = ObjectFeatureDistance(obj_vgg) if mode == 'full' else None
        self.phi_bg = BackgroundFeatureDistance(bg_vgg) if mode == 'full' else None
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> OCCOLoss:
        """The loss networks stay in eval mode whatever the caller asks."""
        return super().train(False)

    def contrastive(self, fused: torch.Tensor, visible: torch.Tensor, infrared: torch.Tensor,
                    mask_vi: torch.Tensor, mask_ir: torch.Tensor) -> dict[str, torch.Tensor]:
        """L_con and its five CL terms (OCCO_METHOD.md §3)."""
        r = region_masks(mask_vi, mask_ir)
        images = {'V': visible, 'I': infrared}
        terms = {}
        for kind, phi in (('obj', self.phi_obj), ('bg', self.phi_bg)):
            terms.update(contrastive_terms(fused, images, r, phi,
                                           tuple(t for t in CL_TERMS if t[4] == kind)))
        terms['con'] = CON_WEIGHT * sum(weight * terms[name]
                                        for name, *_, weight in CL_TERMS)
        return terms

    def forward(self, fused: torch.Tensor, visible: torch.Tensor, infrared: torch.Tensor,
                mask_vi: torch.Tensor | None = None,
                mask_ir: torch.Tensor | None = None) -> LossOutput:
        """Loss of raw output `fused` for inputs `visible`, `infrared` (all (B, 1, H, W)).

        Always float32, also when called under autocast (autocast is switched off here):
        in bf16 the SSIM moment filters lose the small local variances SSIM is made of.
        """
        if self.mode == 'full' and (mask_vi is None or mask_ir is None):
            raise ValueError("loss mode 'full' needs mask_vi and mask_ir")
        with torch.autocast(fused.device.type, enabled=False):
            fused, visible, infrared = fused.float(), visible.float(), infrared.float()
            terms = pixel_loss(fused, visible, infrared)
            total = terms['pixel']
            if self.mode == 'full':
                terms.update(self.contrastive(fused, visible, infrared, mask_vi, mask_ir))
                total = total + terms['con']
        terms['total'] = total
        return LossOutput(total, terms)
