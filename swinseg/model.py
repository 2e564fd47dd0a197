"""Swin-Unet (Cao et al. 2021) built from timm's Swin Transformer blocks.

The data path is the reference one: patch embedding -> 4 encoder stages (skips are the stage INPUTS at
1/4, 1/8 and 1/16 scale) -> LayerNorm -> PatchExpand -> 3 decoder stages (concat skip, Linear 2C -> C,
Swin blocks, PatchExpand except the last) -> LayerNorm -> 4x expand -> 1x1 conv to class logits.

The encoder uses timm's layout (PatchMerging at the START of stages 1-3), so its state dict is the one of
``timm.models.swin_transformer.SwinTransformer``; the decoder uses the reference names (``layers_up``,
``concat_back_dim``, ``norm_up``, ``up``, ``output``). ``swinseg.weights`` converts the other layouts.

A scale left out of ``config.skip_scales`` gets no skip: that decoder stage takes the upsampled features
alone and has no fusion Linear (``concat_back_dim.i`` is an Identity, as for the bottleneck).

``config.conv_skip`` > 0 (not in the published network) adds what a 4x4-patch transformer lacks for small
structures and sharp borders: a full-resolution convolutional skip. Two 3x3 convolutions on the image
(``conv_stem``) are concatenated with the 4x-expanded decoder output and fused by a 3x3 convolution
(``conv_fuse``) before the 1x1 ``output`` convolution.

``config.patch_embed: conv`` (not in the published network) replaces the 4x4 patch projection by two 3x3
stride-2 convolutions with a GELU between them (a convolutional stem, Xiao et al. 2021: "Early convolutions help
transformers see better"); timm's LayerNorm and token layout follow as before. With ``config.stem_skip`` the
stem's half-resolution features also join the decoder: the last expansion is 2x instead of 4x, its output is
concatenated with them and fused by a 3x3 convolution (``stem_fuse``), and the 1x1 ``output`` logits are resized
2x (bilinear): a high-resolution path at a quarter of ``conv_skip``'s pixels.
"""
from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from timm.layers import PatchEmbed, calculate_drop_path_rates, trunc_normal_
from timm.models.swin_transformer import SwinTransformerBlock, SwinTransformerStage, WindowAttention
from torch import nn

from swinseg.config import SwinUnetConfig, load_card
from swinseg.errors import SwinsegError

PATCH_SIZE = 4


def conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """3x3 convolution, instance norm, leaky ReLU (nnU-Net's block)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.InstanceNorm2d(out_channels, affine=True),
        nn.LeakyReLU(0.01, inplace=True),
    )


def conv_stem(in_channels: int, embed_dim: int) -> nn.Sequential:
    """The 4x downsampling of `patch_embed: conv`: 3x3 stride 2 to embed_dim / 2, GELU, 3x3 stride 2 to embed_dim."""
    half = max(embed_dim // 2, 1)
    return nn.Sequential(
        nn.Conv2d(in_channels, half, kernel_size=3, stride=2, padding=1),
        nn.GELU(),
        nn.Conv2d(half, embed_dim, kernel_size=3, stride=2, padding=1),
    )


class PatchExpand(nn.Module):
    """Upsample a (B, H, W, C) token map by `scale`: Linear(C -> scale^2 * C / ratio), each token becomes a
    scale x scale block of tokens (channel blocks in row-major order), then LayerNorm.

    ``scale=2`` with ``out_dim=C//2`` is the reference PatchExpand; ``scale=4`` with ``out_dim=C`` is the
    reference FinalPatchExpand_X4.
    """

    def __init__(self, dim: int, out_dim: int, scale: int) -> None:
        super().__init__()
        self.scale = scale
        self.out_dim = out_dim
        self.expand = nn.Linear(dim, scale * scale * out_dim, bias=False)
        self.norm = nn.LayerNorm(out_dim)

    def forward_blocks(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) -> normalised (B, H, W, s, s, out_dim) without the rearranging copy."""
        b, h, w, _ = x.shape
        return self.norm(self.expand(x).view(b, h, w, self.scale, self.scale, self.out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, _ = x.shape
        s = self.scale
        return self.forward_blocks(x).permute(0, 1, 3, 2, 4, 5).reshape(b, h * s, w * s, self.out_dim)


class DecoderStage(SwinTransformerStage):
    """timm's Swin stage (no downsample) followed by an optional 2x PatchExpand (reference BasicLayer_up)."""

    def __init__(self, *, upsample: bool, **kwargs) -> None:
        super().__init__(downsample=False, **kwargs)
        self.upsample = PatchExpand(self.dim, self.dim // 2, 2) if upsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(x)
        return self.upsample(x) if self.upsample is not None else x


class GatherWindowBlock(SwinTransformerBlock):
    """timm's SwinTransformerBlock with its data movement done by two gathers.

    timm rolls the map (cyclic shift), pads it, partitions it into windows, and undoes all three after the
    attention: up to seven copies of the activations per block. A (shifted) window partition is a fixed
    permutation of the tokens, so one ``index_select`` gives the windows and one with the inverse
    permutation puts them back. Attention, mask and weights are timm's; the output is identical.
    Requires the map to be divisible by the window, which SwinUnetConfig guarantees.
    """

    def init_window_index(self) -> None:
        h, w = self.input_resolution
        wh, ww = self.window_size
        sh, sw = self.shift_size
        rows = (torch.arange(h).view(h // wh, 1, wh, 1) + sh) % h  # window row, -, row in window, -
        cols = (torch.arange(w).view(1, w // ww, 1, ww) + sw) % w
        order = (rows * w + cols).flatten()  # token of the unshifted map at each windowed position
        self.register_buffer("window_order", order, persistent=False)
        self.register_buffer("window_inverse", torch.argsort(order), persistent=False)

    def _attn(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        order, inverse = self.window_order, self.window_inverse
        windows = _permute(x.reshape(b, h * w, c), order, inverse).view(-1, self.window_area, c)
        out = self.attn(windows, mask=self.attn_mask).view(b, h * w, c)
        return _permute(out, inverse, order).view(b, h, w, c)


def _permute(x: torch.Tensor, order: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
    """x[:, order]: through _PermuteTokens where a gradient is wanted, else the plain gather (the same values;
    a traced graph, swinseg.store's TorchScript, can hold only this one)."""
    if torch.is_grad_enabled() and x.requires_grad:
        return _PermuteTokens.apply(x, order, inverse)
    return x.index_select(1, order)


class _PermuteTokens(torch.autograd.Function):
    """x[:, order] whose gradient is again a gather (by the inverse permutation), not a scatter-add."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, order: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(inverse)
        return x.index_select(1, order)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (inverse,) = ctx.saved_tensors
        return grad.index_select(1, inverse), None, None


def use_gather_windows(module: nn.Module, enabled: bool = True) -> None:
    """Switch every Swin block under `module` between GatherWindowBlock (fast) and timm's original."""
    for block in module.modules():
        if isinstance(block, SwinTransformerBlock):
            if enabled:
                block.__class__ = GatherWindowBlock
                block.init_window_index()
            else:
                block.__class__ = SwinTransformerBlock


def _concat_up(up_blocks: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
    """Concatenate the 2x-expanded blocks (B, H, W, 2, 2, C) with a skip map (B, 2H, 2W, C) on channels.

    Equal to ``cat([rearranged(up_blocks), skip], -1)`` but with a single copy.
    """
    b, h, w, s, _, c = up_blocks.shape
    up = up_blocks.permute(0, 1, 3, 2, 4, 5)  # B, H, s, W, s, C (a view)
    skip = skip.view(b, h, s, w, s, skip.shape[-1])
    return torch.cat([up, skip], dim=-1).view(b, h * s, w * s, c + skip.shape[-1])


class SwinUnet(nn.Module):
    """Swin-Unet; ``forward`` maps (B, 1 or in_chans, H, W) images to (B, num_classes, H, W) logits."""

    def __init__(self, config: SwinUnetConfig, fused_attention: bool = True, init_weights: bool = True) -> None:
        """`init_weights=False`: parameters left uninitialised, for weights loaded right after (load_checkpoint);
        the reference initialisation of a 27M-parameter network took a fifth of a small scan's prediction."""
        super().__init__()
        with contextlib.nullcontext() if init_weights else _uninitialised():
            self._build(config)
        if init_weights:
            self.apply(_init_weights)
        self.set_fused_attention(fused_attention)
        use_gather_windows(self)

    def _build(self, config: SwinUnetConfig) -> None:
        self.config = config
        c = config
        n = len(c.depths)
        dims = [c.embed_dim * 2**i for i in range(n)]
        grid = c.img_size // PATCH_SIZE
        resolutions = [grid // 2**i for i in range(n)]
        dpr = calculate_drop_path_rates(c.drop_path_rate, list(c.depths), stagewise=True)

        self.patch_embed = PatchEmbed(
            img_size=c.img_size, patch_size=PATCH_SIZE, in_chans=c.in_chans, embed_dim=c.embed_dim,
            norm_layer=nn.LayerNorm, output_fmt="NHWC",
        )
        if c.patch_embed == "conv":
            self.patch_embed.proj = conv_stem(c.in_chans, c.embed_dim)
        common = dict(window_size=c.window_size, mlp_ratio=c.mlp_ratio, qkv_bias=True, norm_layer=nn.LayerNorm)
        self.layers = nn.ModuleList(
            SwinTransformerStage(
                dim=dims[max(i - 1, 0)], out_dim=dims[i], input_resolution=(resolutions[max(i - 1, 0)],) * 2,
                depth=c.depths[i], downsample=i > 0, num_heads=c.num_heads[i], drop_path=list(dpr[i]), **common,
            )
            for i in range(n)
        )
        self.norm = nn.LayerNorm(dims[-1])

        # Decoder: layers_up[0] is the bottleneck's PatchExpand, layers_up[i] mirrors encoder stage n-1-i.
        self.layers_up = nn.ModuleList([PatchExpand(dims[-1], dims[-1] // 2, 2)])
        self.concat_back_dim = nn.ModuleList([nn.Identity()])
        for i in range(1, n):
            level = n - 1 - i
            has_skip = PATCH_SIZE * 2**level in c.skip_scales
            self.concat_back_dim.append(nn.Linear(2 * dims[level], dims[level]) if has_skip else nn.Identity())
            self.layers_up.append(
                DecoderStage(
                    dim=dims[level], out_dim=dims[level], input_resolution=(resolutions[level],) * 2,
                    depth=c.depths[level], num_heads=c.num_heads[level], drop_path=list(dpr[level]),
                    upsample=i < n - 1, **common,
                )
            )
        self.norm_up = nn.LayerNorm(c.embed_dim)
        self.up = PatchExpand(c.embed_dim, c.embed_dim, 2 if c.stem_skip else PATCH_SIZE)
        if c.conv_skip:
            self.conv_stem = nn.Sequential(conv_block(c.in_chans, c.conv_skip), conv_block(c.conv_skip, c.conv_skip))
            self.conv_fuse = conv_block(c.embed_dim + c.conv_skip, c.conv_skip)
        if c.stem_skip:
            stem_channels = self.patch_embed.proj[0].out_channels
            self.stem_fuse = nn.Sequential(
                nn.Conv2d(c.embed_dim + stem_channels, c.embed_dim, kernel_size=3, padding=1), nn.GELU())
        head_channels = c.conv_skip or c.embed_dim
        self.output = nn.Conv2d(head_channels, c.num_classes, kernel_size=1, bias=False)

    def set_fused_attention(self, enabled: bool) -> None:
        """Use F.scaled_dot_product_attention inside timm's window attention (same maths, faster)."""
        for module in self.modules():
            if isinstance(module, WindowAttention):
                module.fused_attn = enabled

    def encoder_parameters(self) -> list[nn.Parameter]:
        """Parameters of the patch embedding, encoder stages and encoder norm (for --freeze-encoder)."""
        modules = [self.patch_embed, self.layers, self.norm]
        return [p for m in modules for p in m.parameters()]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.config
        if x.ndim != 4 or x.shape[-2:] != (c.img_size, c.img_size):
            raise SwinsegError(f"SwinUnet expects (B, C, {c.img_size}, {c.img_size}) input, got {tuple(x.shape)}")
        if x.shape[1] == 1 and c.in_chans != 1:
            x = x.expand(-1, c.in_chans, -1, -1)
        elif x.shape[1] != c.in_chans:
            raise SwinsegError(f"SwinUnet expects 1 or {c.in_chans} input channels, got {x.shape[1]}")

        image = x
        if c.stem_skip:
            stem = self.patch_embed.proj
            half = stem[1](stem[0](x))  # the stem's half-resolution features
            x = self.patch_embed.norm(stem[2](half).permute(0, 2, 3, 1))  # timm's PatchEmbed, NHWC
        else:
            x = self.patch_embed(x)
        skips = []
        for stage in self.layers:
            x = stage.downsample(x)
            skips.append(x)  # skips are the stage inputs (after the PatchMerging)
            x = stage.blocks(x)
        x = self.norm(x)

        n = len(self.layers)
        up_blocks = self.layers_up[0].forward_blocks(x)
        for i in range(1, n):
            stage: DecoderStage = self.layers_up[i]  # type: ignore[assignment]
            fuse = self.concat_back_dim[i]
            if isinstance(fuse, nn.Linear):
                x = fuse(_concat_up(up_blocks, skips[n - 1 - i]))
            else:
                x = _rearrange(up_blocks)
            x = stage.blocks(x)
            if stage.upsample is not None:
                up_blocks = stage.upsample.forward_blocks(x)
        x = self.norm_up(x)
        if c.conv_skip:
            return self.output(self.conv_fuse(torch.cat([self._expanded(x), self.conv_stem(image)], 1)))
        if c.stem_skip:
            logits = self.output(self.stem_fuse(torch.cat([self._expanded(x), half], 1)))
            return F.interpolate(logits, scale_factor=2, mode="bilinear")
        return self._head(x)

    def _expanded(self, x: torch.Tensor) -> torch.Tensor:
        """norm_up output (B, H, W, C) after the last expansion, channels first (B, C, sH, sW), for a skip to join."""
        return _rearrange(self.up.forward_blocks(x)).permute(0, 3, 1, 2)

    def _head(self, x: torch.Tensor) -> torch.Tensor:
        """norm_up output (B, H, W, C) -> 4x expand -> 1x1 conv, computed as a Linear on the channels-last
        blocks so that only the small logits tensor is rearranged."""
        b, h, w, _ = x.shape
        s = self.up.scale
        blocks = self.up.forward_blocks(x)  # B, H, W, s, s, C
        weight = self.output.weight.view(self.output.out_channels, -1)
        logits = F.linear(blocks, weight)  # B, H, W, s, s, K
        return logits.permute(0, 5, 1, 3, 2, 4).reshape(b, -1, h * s, w * s)


def _rearrange(blocks: torch.Tensor) -> torch.Tensor:
    b, h, w, s, _, c = blocks.shape
    return blocks.permute(0, 1, 3, 2, 4, 5).reshape(b, h * s, w * s, c)


@contextlib.contextmanager
def _uninitialised() -> Iterator[None]:
    """Linear, Conv2d and LayerNorm layers built in this block keep torch.empty parameters (no random init)."""
    classes = (nn.Linear, nn.Conv2d, nn.LayerNorm)
    own = [layer.__dict__.get("reset_parameters") for layer in classes]  # None: inherited (Conv2d's)
    for layer in classes:
        layer.reset_parameters = lambda self: None  # type: ignore[method-assign]
    try:
        yield
    finally:
        for layer, method in zip(classes, own):
            if method is None:
                del layer.reset_parameters
            else:
                layer.reset_parameters = method  # type: ignore[method-assign]


def _init_weights(module: nn.Module) -> None:
    """The reference initialisation: Linear trunc-normal(0.02) with zero bias, LayerNorm (1, 0)."""
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def build_model(card_name_or_config: str | SwinUnetConfig, num_classes: int | None = None) -> SwinUnet:
    """A randomly initialised SwinUnet from a model card name / YAML path or a SwinUnetConfig."""
    if isinstance(card_name_or_config, SwinUnetConfig):
        config = card_name_or_config
    else:
        config = load_card(card_name_or_config).network
    if num_classes is not None:
        config = dataclasses.replace(config, num_classes=num_classes)
    return SwinUnet(config)
