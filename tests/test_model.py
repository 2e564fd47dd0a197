"""SwinUnet: exactness against the reference code, parameter count, legal sizes, skip ablation."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from shared_files import GOLDEN, needs_shared
from timm.models.swin_transformer import SwinTransformerBlock

from swinseg.config import load_card
from swinseg.errors import SwinsegError
from swinseg.model import PatchExpand, SwinUnet, build_model, use_gather_windows

TEST_CONFIG = load_card("swin_unet_test").network


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_published_tiny_has_the_reference_parameter_count():
    model = build_model("swin_unet_tiny")
    assert count(model) == 27_168_900
    assert count(build_model("swin_unet_tiny", num_classes=2)) == 27_168_036 + 96 * 2
    assert sum(p.numel() for p in model.encoder_parameters()) == 20_413_386


@needs_shared
def test_reference_key_names_for_the_decoder():
    keys = set(build_model(TEST_CONFIG).state_dict())
    reference = {
        line.split("\t")[0]
        for line in (GOLDEN.parent / "swin_unet_tiny_9class_keys.tsv").read_text().splitlines()
        if line.startswith(("layers_up", "concat_back_dim", "norm_up", "up.", "output"))
        and "attn_mask" not in line and "relative_position_index" not in line
    }
    assert reference and reference <= keys


@needs_shared
def test_reproduces_reference_logits():
    from swinseg.weights import load_checkpoint

    card = load_card("swin_unet_tiny")
    model, card = load_checkpoint(GOLDEN / "swin_unet_small_official.pth", card)
    assert (card.network.embed_dim, card.network.num_heads) == (24, (1, 2, 4, 8))
    io = np.load(GOLDEN / "swin_unet_small_official_io.npz")
    for fused in (True, False):
        model.set_fused_attention(fused)
        with torch.inference_mode():
            logits = model(torch.from_numpy(io["input"])).numpy()
        assert logits.shape == io["logits"].shape
        assert np.abs(logits - io["logits"]).max() <= 1e-4


@pytest.mark.parametrize(("img_size", "window"), [(64, 2), (64, 4), (96, 3), (128, 4), (256, 8)])
def test_legal_sizes_run_forward_and_backward(img_size, window):
    config = dataclasses.replace(TEST_CONFIG, img_size=img_size, window_size=window)
    model = SwinUnet(config)
    x = torch.rand(2, 1, img_size, img_size)
    logits = model(x)
    assert logits.shape == (2, config.num_classes, img_size, img_size)
    logits.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_small_stages_use_the_whole_map_as_one_unshifted_window():
    # 64 px, window 4: stage resolutions 16, 8, 4, 2 -> stage 3 (2x2) is one window of 2, never shifted
    model = SwinUnet(dataclasses.replace(TEST_CONFIG, window_size=4))
    encoder = [(b.window_size, b.shift_size) for stage in model.layers for b in stage.blocks]
    assert encoder == [((4, 4), (0, 0)), ((4, 4), (2, 2))] * 2 + [((4, 4), (0, 0))] * 2 + [((2, 2), (0, 0))] * 2
    decoder = [(b.window_size, b.shift_size) for stage in model.layers_up[1:] for b in stage.blocks]
    assert decoder == [((4, 4), (0, 0))] * 2 + [((4, 4), (0, 0)), ((4, 4), (2, 2))] * 2


def test_one_channel_input_equals_repeated_three_channels():
    model = SwinUnet(TEST_CONFIG).eval()
    x = torch.rand(1, 1, 64, 64)
    with torch.inference_mode():
        assert torch.allclose(model(x), model(x.repeat(1, 3, 1, 1)), atol=1e-6)


def test_fused_and_plain_attention_agree():
    model = SwinUnet(TEST_CONFIG).eval()
    x = torch.rand(2, 1, 64, 64)
    with torch.inference_mode():
        fused = model(x)
        model.set_fused_attention(False)
        plain = model(x)
    assert torch.allclose(fused, plain, atol=1e-5)


@pytest.mark.parametrize("skips", [(), (4,), (8, 16), (4, 8, 16)])
def test_skip_scales_select_the_skip_connections(skips):
    model = SwinUnet(dataclasses.replace(TEST_CONFIG, skip_scales=skips))
    fusion = {4 * 2 ** (3 - i) for i, m in enumerate(model.concat_back_dim) if isinstance(m, torch.nn.Linear)}
    assert fusion == set(skips)
    assert model(torch.rand(1, 1, 64, 64)).shape == (1, 6, 64, 64)


def test_patch_expand_matches_reference_rearrangement():
    expand = PatchExpand(8, 4, 2)
    x = torch.randn(2, 3, 5, 8)
    expected = expand.norm(expand.expand(x).view(2, 3, 5, 2, 2, 4).permute(0, 1, 3, 2, 4, 5).reshape(2, 6, 10, 4))
    # reference: rearrange 'b h w (p1 p2 c) -> b (h p1) (w p2) c'
    y = expand.expand(x)
    ref = torch.empty(2, 6, 10, 4)
    for p1 in range(2):
        for p2 in range(2):
            ref[:, p1::2, p2::2] = y[..., (2 * p1 + p2) * 4 : (2 * p1 + p2 + 1) * 4]
    assert torch.allclose(expand(x), expand.norm(ref), atol=1e-6)
    assert torch.allclose(expand(x), expected, atol=1e-6)


def test_wrong_input_size_or_channels_is_a_clear_error():
    model = SwinUnet(TEST_CONFIG)
    with pytest.raises(SwinsegError, match="64, 64"):
        model(torch.rand(1, 1, 96, 96))
    with pytest.raises(SwinsegError, match="input channels"):
        model(torch.rand(1, 2, 64, 64))


def test_illegal_window_fails_at_construction_listing_legal_windows():
    with pytest.raises(SwinsegError, match="windows that work"):
        build_model(dataclasses.replace(TEST_CONFIG, img_size=224, window_size=8))


def test_encoder_parameters_cover_exactly_the_encoder():
    model = SwinUnet(TEST_CONFIG)
    encoder = {id(p) for p in model.encoder_parameters()}
    names = {n for n, p in model.named_parameters() if id(p) in encoder}
    assert names == {n for n, _ in model.named_parameters() if n.startswith(("patch_embed.", "layers.", "norm."))}


@pytest.mark.parametrize("window", [2, 4])
def test_gathered_windows_equal_timm_roll_and_partition(window):
    torch.manual_seed(0)
    model = SwinUnet(dataclasses.replace(TEST_CONFIG, window_size=window))
    x = torch.rand(2, 1, 64, 64)
    fast = model(x)
    fast.square().mean().backward()
    fast_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    use_gather_windows(model, False)
    assert type(model.layers[0].blocks[1]) is SwinTransformerBlock
    slow = model(x)
    slow.square().mean().backward()
    assert torch.allclose(fast, slow, atol=1e-6)
    assert all(torch.allclose(a, p.grad, atol=1e-6) for a, p in zip(fast_grads, model.parameters()))



def test_timm_blocks_route_attention_through_the_overridden_attn(monkeypatch):
    """GatherWindowBlock relies on timm's SwinTransformerBlock.forward calling the private `_attn`: if a timm
    release stops doing so, the gathered windows (and their speed) would silently be bypassed."""
    from swinseg.model import GatherWindowBlock

    calls = []
    original = GatherWindowBlock._attn
    monkeypatch.setattr(GatherWindowBlock, "_attn", lambda self, x: calls.append(1) or original(self, x))
    SwinUnet(TEST_CONFIG)(torch.rand(1, 1, 64, 64))
    assert calls


def test_conv_skip_adds_a_full_resolution_path_that_survives_a_checkpoint(tmp_path):
    from swinseg.weights import load_checkpoint, save_checkpoint

    config = dataclasses.replace(TEST_CONFIG, conv_skip=8)
    model = SwinUnet(config).eval()
    assert count(model) > count(SwinUnet(TEST_CONFIG))
    x = torch.rand(2, 1, 64, 64)
    logits = model(x)
    assert logits.shape == (2, 6, 64, 64)
    model(x).sum().backward()
    assert model.conv_stem[0][0].weight.grad.abs().sum() > 0  # the image reaches the head through the convolutions
    card = dataclasses.replace(load_card("swin_unet_test"), network=config)
    assert "conv_skip" not in load_card("swin_unet_test").network.to_dict()  # the published layout unchanged
    save_checkpoint(tmp_path / "conv.safetensors", model, card)
    loaded, loaded_card = load_checkpoint(tmp_path / "conv.safetensors")
    assert loaded_card.network.conv_skip == 8
    assert torch.equal(loaded.eval()(x), logits)
    with pytest.raises(SwinsegError, match="conv_skip -1"):
        dataclasses.replace(TEST_CONFIG, conv_skip=-1)


@pytest.mark.parametrize("stem_skip", [False, True])
def test_conv_patch_embedding_and_its_skip_survive_a_checkpoint(tmp_path, stem_skip):
    from safetensors.torch import save_file

    from swinseg.weights import infer_unet_config, load_checkpoint, read_weights, save_checkpoint

    config = dataclasses.replace(TEST_CONFIG, patch_embed="conv", stem_skip=stem_skip)
    model = SwinUnet(config).eval()
    assert isinstance(model.patch_embed.proj, torch.nn.Sequential)  # two strided 3x3 convolutions
    x = torch.rand(2, 1, 64, 64)
    logits = model(x)
    assert logits.shape == (2, 6, 64, 64)
    if stem_skip:  # the half-resolution features reach the head directly, not only through the encoder
        model.patch_embed.norm.register_forward_hook(lambda module, args, out: out.detach())
        model(x).sum().backward()
        assert model.patch_embed.proj[0].weight.grad.abs().sum() > 0
    published = load_card("swin_unet_test").network.to_dict()
    assert "patch_embed" not in published and "stem_skip" not in published  # the published layout unchanged
    save_checkpoint(tmp_path / "stem.safetensors", model, dataclasses.replace(load_card("swin_unet_test"),
                                                                               network=config))
    loaded, loaded_card = load_checkpoint(tmp_path / "stem.safetensors")
    assert (loaded_card.network.patch_embed, loaded_card.network.stem_skip) == ("conv", stem_skip)
    assert torch.equal(loaded.eval()(x), logits)
    save_file(model.state_dict(), tmp_path / "bare.safetensors")  # no card: the tensors tell
    inferred = infer_unet_config(read_weights(tmp_path / "bare.safetensors"), base=TEST_CONFIG)
    assert (inferred.patch_embed, inferred.stem_skip, inferred.embed_dim, inferred.in_chans) == \
        ("conv", stem_skip, config.embed_dim, config.in_chans)


def test_patch_embedding_options_are_checked():
    with pytest.raises(SwinsegError, match="patch_embed 'pixel'"):
        dataclasses.replace(TEST_CONFIG, patch_embed="pixel")
    with pytest.raises(SwinsegError, match="stem_skip needs patch_embed: conv"):
        dataclasses.replace(TEST_CONFIG, stem_skip=True)
