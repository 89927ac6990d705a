"""FIFN, the feature interaction fusion network of OCCO.

Paper: Li, Bian, Zhang, Song, Li, Wu, "OCCO: LVM-guided Infrared and Visible Image Fusion
Framework based on Object-aware and Contextual COntrastive Learning", arXiv 2503.18635,
International Journal of Computer Vision (IJCV) 2025.

This is a clean-room implementation written from the specification in
docs/OCCO_METHOD.md §2 (restated from the authors' public release); no code was copied.
Decisions of ours: the width multiplier (`scaled_widths`), building only the spatial gate
that is used, keeping the attention context in float32 (`attention_context`), and running
the attention's token Linears and LayerNorm channel-first (`pixelwise_linear`).

Data flow (B = batch, C_l = width of level l, H_l x W_l = H x W halved l - 1 times, floor):
    visible Y (B, 1, H, W) -> Encoder -> V_1..V_4      infrared (B, 1, H, W) -> Encoder -> I_1..I_4
    FIFB_l(V_l, I_l) -> F_l (B, C_l, H_l, W_l)
    decoder: F_4 -> DecoderStep(skip F_3) -> DecoderStep(skip F_2) -> DecoderStep(skip F_1)
    head: Conv1x1 C_1 -> 1 -> raw fused Y (B, 1, H, W), no activation (see InferenceFIFN)
"""

from __future__ import annotations

import math

import torch
from torch import nn
import torch.nn.functional as F

#: The width rule of `scaled_widths` (ours, OCCO_METHOD.md §2), also stored in checkpoints.
WIDTH_RULE = ('C_l(w) = max(8, 8 * round_half_up(w * C_l / 8)); '
              'heads_l(w) = max(1, min(h_l, C_l(w) // 8))')


def scaled_widths(
    width: float,
    base_widths: tuple[int, ...] = (32, 64, 112, 160),
    base_heads: tuple[int, ...] = (4, 4, 4, 1),
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Channels and attention heads per level for width multiplier `width` (see WIDTH_RULE).

    Channels are multiples of 8 and every head keeps at least 8 channels. Rounding is half
    up (not Python's round-half-to-even) so the rule reads the same in any language.

    Args:
        width: width multiplier, > 0 (1.0 = OCCO, 0.5 and 0.25 for small devices).
        base_widths: channels per level at width 1.0.
        base_heads: attention heads per level at width 1.0, same length as base_widths.

    Returns:
        (channels, heads), one entry per level, e.g. width 0.25 -> ((8, 16, 32, 40), (1, 2, 4, 1)).

    Raises:
        ValueError: width not a finite positive number, or mismatched / empty base tuples.
    """
    if not (isinstance(width, (int, float)) and math.isfinite(width) and width > 0):
        raise ValueError(f'width must be a finite number > 0, got {width!r}')
    if len(base_widths) != len(base_heads) or len(base_widths) < 2:
        raise ValueError(
            f'base_widths {tuple(base_widths)} and base_heads {tuple(base_heads)} must have the '
            'same length, at least 2 levels')
    channels = tuple(max(8, 8 * math.floor(width * c / 8 + 0.5)) for c in base_widths)
    heads = tuple(max(1, min(h, c // 8)) for h, c in zip(base_heads, channels))
    for level, (c, h) in enumerate(zip(channels, heads), start=1):
        if c % h:
            raise ValueError(f'level {level}: {c} channels do not split into {h} heads')
    return channels, heads


def count_parameters(model: nn.Module) -> int:
    """Number of scalar parameters of `model` (trainable or not)."""
    return sum(p.numel() for p in model.parameters())


def conv3x3(in_channels: int, out_channels: int, groups: int = 1) -> nn.Conv2d:
    """3x3 convolution, stride 1, padding 1, with bias (the convention of the whole network)."""
    return nn.Conv2d(in_channels, out_channels, 3, padding=1, groups=groups)


class EncoderLevel(nn.Sequential):
    """One encoder level: Conv3x3 -> BatchNorm -> ReLU -> Conv3x3 -> BatchNorm -> ReLU.

    Shapes: (B, in_channels, H, W) -> (B, out_channels, H, W).
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            conv3x3(in_channels, out_channels), nn.BatchNorm2d(out_channels), nn.ReLU(),
            conv3x3(out_channels, out_channels), nn.BatchNorm2d(out_channels), nn.ReLU())


class Encoder(nn.Module):
    """One modality's encoder: EncoderLevel l feeds a 2x2 max-pool (floor) of its output to l+1.

    Shapes: (B, 1, H, W) -> list of (B, C_l, H_l, W_l), H_1 = H, H_l+1 = floor(H_l / 2).
    """

    def __init__(self, channels: tuple[int, ...]) -> None:
        super().__init__()
        inputs = (1, *channels[:-1])
        self.levels = nn.ModuleList(EncoderLevel(i, o) for i, o in zip(inputs, channels))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = []
        for index, level in enumerate(self.levels):
            x = level(x if index == 0 else F.max_pool2d(x, 2))
            features.append(x)
        return features


class CrossChannelWeights(nn.Module):
    """Channel weights computed from both modalities (FIFB step 1).

    Op order: concat [V, I] (B, 2C, H, W) -> global avg pool and global max pool, concat
    (B, 4C) -> Linear 4C->4C -> ReLU -> Linear 4C->2C -> Sigmoid -> split into
    wV, wI, each (B, C, 1, 1) in (0, 1).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(4 * channels, 4 * channels), nn.ReLU(),
            nn.Linear(4 * channels, 2 * channels), nn.Sigmoid())

    def forward(
        self, visible: torch.Tensor, infrared: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        both = torch.cat([visible, infrared], dim=1)                     # (B, 2C, H, W)
        pooled = torch.cat([both.mean(dim=(2, 3)), both.amax(dim=(2, 3))], dim=1)  # (B, 4C)
        weights = self.mlp(pooled)[:, :, None, None]                     # (B, 2C, 1, 1)
        return weights.chunk(2, dim=1)


class SpatialGate(nn.Module):
    """Spatial enhancement (FIFB step 2), one gate shared by both modalities.

    Op order: g(x) = Sigmoid(Conv1x1 C->1 (ReLU(Conv1x1 C->C (x)))); returns g(x) * x.
    Shapes: (B, C, H, W) -> (B, C, H, W) (the gate itself is (B, 1, H, W)).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.gate = nn.Sequential(
            nn.Conv2d(channels, channels, 1), nn.ReLU(), nn.Conv2d(channels, 1, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gate(x) * x


def pixelwise_linear(x: torch.Tensor, layer: nn.Linear) -> torch.Tensor:
    """`layer` applied to the C-vector of every pixel: (B, C_in, H, W) -> (B, C_out, H, W).

    OCCO_METHOD.md §2 writes FIFB's attention on tokens (B, N, C); we keep the tensors
    channel-first and run each token Linear as the 1x1 convolution it equals. Same
    parameters (checkpoints unchanged), same numbers, but no token transposes: ONNX Runtime
    on CPU ran the width-0.25 network in 14-28 % less time (docs/PERFORMANCE.md).
    """
    return F.conv2d(x, layer.weight[:, :, None, None], layer.bias)


def channel_layer_norm(x: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
    """`norm` (LayerNorm over C) on every pixel of (B, C, H, W), without a transpose.

    Computed in float32 like nn.LayerNorm under autocast (AMP training keeps its numbers);
    returned in x's dtype. The values also fit FP16: |x - mean| was at most 10 for the
    shipped model on the MSRS and RoadScene eval pairs.
    """
    with torch.autocast(x.device.type, enabled=False):
        x32 = x.float()
        centred = x32 - x32.mean(dim=1, keepdim=True)
        variance = centred.square().mean(dim=1, keepdim=True)
        normed = (centred * torch.rsqrt(variance + norm.eps) * norm.weight.float()[:, None, None]
                  + norm.bias.float()[:, None, None])
    return normed.to(x.dtype)


def attention_context(keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Efficient-attention context, always computed and returned in float32.

    ctx = softmax over the key-channel index i of (K^T V / sqrt(d)), i.e. each column j of
    the d x d matrix sums to 1. K^T V sums over all N = H * W tokens, so its magnitude grows
    with the image size and overflows float16 at large resolutions (about 17,800 at 1080p
    with random weights); hence inputs are cast up and autocast is switched off here.
    Exporters: this is the subgraph to pin to FP32 (a MatMul, a Mul and a Softmax on axis -2).

    Args:
        keys: (B, h, d, N) keys K, channel-first (row i = key channel i over all tokens),
            any float dtype.
        values: (B, h, d, N) values V, same shape.

    Returns:
        (B, h, d, d) float32 context, ctx[i, j] over key channel i and value channel j;
        callers cast it to their compute dtype.
    """
    with torch.autocast(keys.device.type, enabled=False):
        logits = keys.float() @ values.float().transpose(-2, -1)        # (B, h, d, d)
        return (logits * keys.shape[-2] ** -0.5).softmax(dim=-2)


class CrossAttentionBranch(nn.Module):
    """The layers of one modality m in EfficientCrossAttention (never shared between modalities).

    All maps are channel-first (see `pixelwise_linear`); "per pixel" = per token.
    project: C_m (B, C, H, W) -> ReLU(Linear C->C) = c_m per pixel -> queries c_m and,
        through Linear C->2C (no bias), keys K_m (first C outputs) and values V_m (last C
        outputs), each split into heads (B, h, d, N), d = C / h, N = H * W.
    merge: Linear 2C->C (concat [S_m, attended]) + the original map of m -> LayerNorm(C)
        per pixel, all (B, C, H, W).
    """

    def __init__(self, channels: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.context = nn.Linear(channels, channels)
        self.key_value = nn.Linear(channels, 2 * channels, bias=False)
        self.output = nn.Linear(2 * channels, channels)
        self.norm = nn.LayerNorm(channels)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, h, d, N); head k holds channels k*d ... (k+1)*d - 1."""
        batch, channels, height, width = x.shape
        return x.reshape(batch, self.heads, channels // self.heads, height * width)

    def project(
        self, gated: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        queries = F.relu(pixelwise_linear(gated, self.context))          # (B, C, H, W)
        keys, values = pixelwise_linear(queries, self.key_value).chunk(2, dim=1)
        return self.split_heads(queries), self.split_heads(keys), self.split_heads(values)

    def merge(
        self, enhanced: torch.Tensor, attended: torch.Tensor, original: torch.Tensor
    ) -> torch.Tensor:
        attended = attended.reshape(original.shape)                      # (B, C, H, W)
        merged = pixelwise_linear(torch.cat([enhanced, attended], dim=1), self.output)
        return channel_layer_norm(original + merged, self.norm)


class EfficientCrossAttention(nn.Module):
    """Cross path of FIFB (step 4): visible queries read the infrared context and vice versa.

    Per head: out_V = Q_V . ctx_I and out_I = Q_I . ctx_V, (N, d) . (d, d) -> (N, d), with
    ctx from `attention_context`; channel-first this is ctx^T . Q, (d, d) . (d, N). Then
    y_m = Linear 2C->C (concat [S_m, out_m]) is added to the original map of m and
    LayerNorm'ed per pixel.

    Inputs (all (B, C, H, W)): channel-gated C_V, C_I; spatially enhanced S_V, S_I;
    original V, I. Output: V', I', each (B, C, H, W).
    """

    def __init__(self, channels: int, heads: int) -> None:
        super().__init__()
        self.visible = CrossAttentionBranch(channels, heads)
        self.infrared = CrossAttentionBranch(channels, heads)

    def forward(
        self,
        gated: tuple[torch.Tensor, torch.Tensor],
        enhanced: tuple[torch.Tensor, torch.Tensor],
        originals: tuple[torch.Tensor, torch.Tensor],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        q_v, k_v, v_v = self.visible.project(gated[0])
        q_i, k_i, v_i = self.infrared.project(gated[1])
        ctx_v, ctx_i = attention_context(k_v, v_v), attention_context(k_i, v_i)
        out_v = ctx_i.to(q_v.dtype).transpose(-2, -1) @ q_v              # (B, h, d, N)
        out_i = ctx_v.to(q_i.dtype).transpose(-2, -1) @ q_i
        return (self.visible.merge(enhanced[0], out_v, originals[0]),
                self.infrared.merge(enhanced[1], out_i, originals[1]))


class FeatureMerge(nn.Module):
    """FIFB step 5: merge V' and I' into the fused level feature F_l.

    Op order on x = concat [V', I'] (B, 2C, H, W): residual = Conv1x1 2C->C (no bias);
    main = Conv1x1 2C->C -> depthwise Conv3x3 -> ReLU -> Conv1x1 C->C -> BatchNorm;
    F_l = BatchNorm(residual + main), no activation. Output (B, C, H, W).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.residual = nn.Conv2d(2 * channels, channels, 1, bias=False)
        self.main = nn.Sequential(
            nn.Conv2d(2 * channels, channels, 1), conv3x3(channels, channels, groups=channels),
            nn.ReLU(), nn.Conv2d(channels, channels, 1), nn.BatchNorm2d(channels))
        self.norm = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.residual(x) + self.main(x))


class FIFB(nn.Module):
    """Feature interaction fusion block of one level.

    Op order: CrossChannelWeights -> C_V = wV * V, C_I = wI * I; SpatialGate -> S_V, S_I;
    EfficientCrossAttention -> V', I'; FeatureMerge -> F_l.
    Shapes: V, I (B, C, H, W) -> F_l (B, C, H, W).
    """

    def __init__(self, channels: int, heads: int) -> None:
        super().__init__()
        self.channel_weights = CrossChannelWeights(channels)
        self.spatial_gate = SpatialGate(channels)
        self.cross_attention = EfficientCrossAttention(channels, heads)
        self.merge = FeatureMerge(channels)

    def forward(self, visible: torch.Tensor, infrared: torch.Tensor) -> torch.Tensor:
        w_v, w_i = self.channel_weights(visible, infrared)
        v_out, i_out = self.cross_attention(
            (w_v * visible, w_i * infrared),
            (self.spatial_gate(visible), self.spatial_gate(infrared)),
            (visible, infrared))
        return self.merge(torch.cat([v_out, i_out], dim=1))


def pad_to_match(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Reflect-pad x (B, C, h, w) to (B, C, height, width).

    floor(diff / 2) rows/columns go on the top/left, the rest on the bottom/right.

    In FIFN the upsampled map is 2 * floor(S / 2) for a skip of size S, so the difference is 0
    or 1 and the upsampled map is at least 2 wide (the deepest map is at least 1x1 for
    inputs >= 8x8): reflect padding, which needs pad < size, is therefore always valid, also
    at the minimum input size.
    """
    dh, dw = height - x.shape[-2], width - x.shape[-1]
    if dh == 0 and dw == 0:
        return x
    return F.pad(x, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2), mode='reflect')


class DecoderStep(nn.Module):
    """One decoder up-step.

    Op order: bilinear x2 upsampling of the deeper map (align_corners=True) -> reflect-pad to
    the skip's size (`pad_to_match`) -> concat [skip, upsampled] -> Conv3x3 -> ReLU ->
    Conv3x3 -> ReLU.
    Shapes: deep (B, C_deep, h, w), skip (B, C_skip, H, W) with h = floor(H / 2)
    -> (B, C_skip, H, W).
    """

    def __init__(self, deep_channels: int, skip_channels: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            conv3x3(skip_channels + deep_channels, skip_channels), nn.ReLU(),
            conv3x3(skip_channels, skip_channels), nn.ReLU())

    def forward(self, deep: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = F.interpolate(deep, scale_factor=2.0, mode='bilinear', align_corners=True)
        up = pad_to_match(up, skip.shape[-2], skip.shape[-1])
        return self.block(torch.cat([skip, up], dim=1))


class FIFN(nn.Module):
    """The OCCO fusion network: visible Y and infrared in, raw fused Y out.

    Args:
        width: width multiplier, > 0 (see `scaled_widths`; 1.0 = the published network).
        base_widths: channels per level at width 1.0.
        base_heads: attention heads per level at width 1.0.

    forward(visible_y, infrared): both (B, 1, H, W) in [0, 1], H and W >= 8 (any size,
    odd included) -> raw head output (B, 1, H, W), no activation, no clamp. Training uses
    this raw output; inference wraps the network in `InferenceFIFN`.
    """

    def __init__(
        self,
        width: float = 1.0,
        base_widths: tuple[int, ...] = (32, 64, 112, 160),
        base_heads: tuple[int, ...] = (4, 4, 4, 1),
    ) -> None:
        super().__init__()
        self.width = width
        self.base_widths = tuple(base_widths)
        self.base_heads = tuple(base_heads)
        self.channels, self.heads = scaled_widths(width, self.base_widths, self.base_heads)
        self.min_size = 2 ** (len(self.channels) - 1)
        self.visible_encoder = Encoder(self.channels)
        self.infrared_encoder = Encoder(self.channels)
        self.fusion = nn.ModuleList(FIFB(c, h) for c, h in zip(self.channels, self.heads))
        # Deepest step first: (C_4 -> C_3), (C_3 -> C_2), (C_2 -> C_1).
        self.decoder = nn.ModuleList(
            DecoderStep(deep, skip) for deep, skip in
            zip(self.channels[:0:-1], self.channels[-2::-1]))
        self.head = nn.Conv2d(self.channels[0], 1, 1)

    @property
    def model_args(self) -> dict:
        """Constructor keywords that rebuild this architecture (stored in checkpoints)."""
        return {'width': self.width, 'base_widths': list(self.base_widths),
                'base_heads': list(self.base_heads)}

    def check_inputs(self, visible_y: torch.Tensor, infrared: torch.Tensor) -> None:
        """Raise ValueError unless both are (B, 1, H, W) of one shape, H and W >= min_size."""
        if visible_y.dim() != 4 or visible_y.shape[1] != 1 or visible_y.shape != infrared.shape:
            raise ValueError(
                'expected visible_y and infrared of one shape (B, 1, H, W), got '
                f'{tuple(visible_y.shape)} and {tuple(infrared.shape)}')
        height, width = visible_y.shape[-2:]
        if height < self.min_size or width < self.min_size:
            raise ValueError(
                f'input size {height}x{width} (HxW) is too small: FIFN needs at least '
                f'{self.min_size}x{self.min_size}')

    def forward(self, visible_y: torch.Tensor, infrared: torch.Tensor) -> torch.Tensor:
        self.check_inputs(visible_y, infrared)
        visible, infra = self.visible_encoder(visible_y), self.infrared_encoder(infrared)
        fused = [fifb(v, i) for fifb, v, i in zip(self.fusion, visible, infra)]
        x = fused[-1]
        for step, skip in zip(self.decoder, fused[-2::-1]):
            x = step(x, skip)
        return self.head(x)


class InferenceFIFN(nn.Module):
    """The inference / export graph: FIFN followed by a clamp to [0, 1].

    The clamp is ours (OCCO_METHOD.md §2 "Output range"): the release min-max normalises
    each frame, which flickers on video. Shapes as FIFN; output values in [0, 1].
    """

    def __init__(self, fifn: FIFN) -> None:
        super().__init__()
        self.fifn = fifn

    def forward(self, visible_y: torch.Tensor, infrared: torch.Tensor) -> torch.Tensor:
        return self.fifn(visible_y, infrared).clamp(0.0, 1.0)


def build_fifn(width: float = 1.0) -> FIFN:
    """FIFN with the published base widths and heads at width multiplier `width`."""
    return FIFN(width=width)


def fifn_occo() -> FIFN:
    """The published network (width 1.0, 3,577,157 parameters)."""
    return build_fifn(1.0)


def fifn_half() -> FIFN:
    """Width 0.5: channels (16, 32, 56, 80), heads (2, 4, 4, 1); for Jetson-class GPUs."""
    return build_fifn(0.5)


def fifn_quarter() -> FIFN:
    """Width 0.25: channels (8, 16, 32, 40), heads (1, 2, 4, 1); for CPUs and small Jetsons."""
    return build_fifn(0.25)
