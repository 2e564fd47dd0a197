"""Weight files: ImageNet init (official + timm layouts), classifier check, reference import, swinseg format."""
from __future__ import annotations

import dataclasses
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from shared_files import GOLDEN, needs_shared

from swinseg.config import SwinUnetConfig, load_card
from swinseg.errors import SwinsegError
from swinseg.model import SwinUnet, build_model
from swinseg.pretrained import init_from_imagenet, load_swin_classifier
from swinseg.weights import load_checkpoint, load_model, read_weights, save_checkpoint

CLASSIFIER = GOLDEN / "swin_classifier_small_official.pth"
UNET = GOLDEN / "swin_unet_small_official.pth"
SMALL = SwinUnetConfig(embed_dim=24, num_heads=(1, 2, 4, 8), drop_path_rate=0.0)


def logits(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return model.eval()(torch.from_numpy(x)).numpy()


@pytest.fixture(scope="module")
def timm_classifier(tmp_path_factory) -> Path:
    """The official classifier converted to timm's layout by timm's own converter."""
    from timm.models.swin_transformer import SwinTransformer, checkpoint_filter_fn

    official = torch.load(CLASSIFIER, map_location="cpu", weights_only=True)
    reference = SwinTransformer(embed_dim=24, depths=(2, 2, 6, 2), num_heads=(1, 2, 4, 8))
    path = tmp_path_factory.mktemp("timm") / "swin_timm.pth"
    torch.save(checkpoint_filter_fn(official, reference), path)
    return path


@needs_shared
def test_classifier_reproduces_reference_logits_through_the_conversion():
    io = np.load(GOLDEN / "swin_classifier_small_official_io.npz")
    assert np.abs(logits(load_swin_classifier(CLASSIFIER), io["input"]) - io["logits"]).max() <= 1e-4


@needs_shared
def test_imagenet_init_reproduces_the_reference_initialisation():
    info = json.loads((GOLDEN / "imagenet_init.json").read_text())
    model = SwinUnet(SMALL)
    report = init_from_imagenet(model, CLASSIFIER)
    untouched = info["parameters_not_initialised_from_classifier"]
    assert report.random == sorted(untouched)
    assert report.loaded_values == info["parameter_values_from_classifier"]
    assert not report.interpolated and not report.dropped
    assert "92.4%" in report.summary()
    reference = read_weights(GOLDEN / "swin_unet_small_after_imagenet_init.pth")
    model.load_state_dict({k: reference.state[k] for k in untouched}, strict=False)
    io = np.load(GOLDEN / "swin_unet_small_after_imagenet_init_io.npz")
    assert np.abs(logits(model, io["input"]) - io["logits"]).max() <= 1e-4


@needs_shared
def test_timm_layout_gives_the_same_initialisation(timm_classifier):
    assert read_weights(timm_classifier).layout == "swin-timm"
    torch.manual_seed(0)
    from_official = SwinUnet(SMALL)
    torch.manual_seed(0)
    from_timm = SwinUnet(SMALL)
    a, b = init_from_imagenet(from_official, CLASSIFIER), init_from_imagenet(from_timm, timm_classifier)
    assert a.loaded == b.loaded and a.random == b.random
    for (name, x), y in zip(from_official.state_dict().items(), from_timm.state_dict().values()):
        assert torch.equal(x, y), name


@needs_shared
@pytest.mark.filterwarnings("ignore:Using a non-tuple sequence")
def test_other_window_interpolates_relative_position_tables():
    from timm.layers import resize_rel_pos_bias_table

    model = SwinUnet(dataclasses.replace(SMALL, img_size=256, window_size=8))
    report = init_from_imagenet(model, CLASSIFIER)
    tables = [k for k in report.loaded if k.endswith("relative_position_bias_table")]
    # 8 encoder + 6 decoder tables; stage 3 (8x8 map) keeps window 8 too
    assert sorted(report.interpolated) == sorted(tables) and len(tables) == 14
    source = read_weights(CLASSIFIER).state["layers.0.blocks.1.attn.relative_position_bias_table"]
    expected = resize_rel_pos_bias_table(source, new_window_size=(8, 8), new_bias_shape=(225, 1))
    assert torch.equal(model.layers[0].blocks[1].attn.relative_position_bias_table.detach(), expected)
    assert torch.equal(model.layers_up[3].blocks[1].attn.relative_position_bias_table.detach(), expected)


@needs_shared
def test_one_channel_model_gets_the_summed_patch_embedding():
    torch.manual_seed(1)
    rgb = SwinUnet(SMALL)
    init_from_imagenet(rgb, CLASSIFIER)
    grey = SwinUnet(dataclasses.replace(SMALL, in_chans=1))
    report = init_from_imagenet(grey, CLASSIFIER)
    assert report.adapted and "patch_embed.proj.weight" in report.loaded
    grey.load_state_dict({k: v for k, v in rgb.state_dict().items() if k != "patch_embed.proj.weight"}, strict=False)
    x = np.random.default_rng(0).random((1, 1, 224, 224), dtype=np.float32)
    assert np.abs(logits(grey, x) - logits(rgb, x)).max() <= 1e-4


@needs_shared
@pytest.mark.parametrize("prefix", ["", "swin_unet.", "module.swin_unet."])
def test_reference_checkpoint_imports_with_any_prefix(tmp_path, prefix):
    state = torch.load(UNET, map_location="cpu", weights_only=True)
    path = tmp_path / "ref.pth"
    torch.save({"model": {prefix + k[len("swin_unet."):]: v for k, v in state.items()}}, path)
    model, card = load_checkpoint(path)
    assert card.network == dataclasses.replace(SMALL, drop_path_rate=card.network.drop_path_rate)
    assert card.classes == tuple(f"class_{i}" for i in range(9))
    io = np.load(GOLDEN / "swin_unet_small_official_io.npz")
    assert np.abs(logits(model, io["input"]) - io["logits"]).max() <= 1e-4


@needs_shared
def test_reference_import_takes_classes_from_the_card_and_checks_them():
    _, card = load_checkpoint(UNET, "swin_unet_tiny")
    assert card.classes[1] == "aorta" and card.network.embed_dim == 24
    with pytest.raises(SwinsegError, match="9 output classes.*--classes"):
        load_checkpoint(UNET, "swin_unet_test")


@needs_shared
@pytest.mark.parametrize(("change", "message"), [("drop", "missing \\(1\\)"), ("add", "unexpected \\(1\\)")])
def test_incomplete_import_lists_missing_and_unexpected_keys(tmp_path, change, message):
    state = torch.load(UNET, map_location="cpu", weights_only=True)
    if change == "drop":
        del state["swin_unet.layers_up.1.blocks.0.norm1.bias"]
    else:
        state["swin_unet.layers_up.1.extra.weight"] = torch.zeros(3)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(SwinsegError, match=message):
        load_checkpoint(tmp_path / "bad.pth")


def test_swinseg_format_round_trip(tmp_path):
    card = load_card("swin_unet_test")
    model = build_model(card.network)
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, model, card, metadata={"epoch": 3})
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]
    weights = read_weights(path)
    assert weights.layout == "swinseg" and json.loads(weights.metadata["epoch"]) == 3
    loaded, loaded_card = load_checkpoint(path)
    assert loaded_card.to_dict() == card.to_dict() and not loaded.training
    x = np.random.default_rng(0).random((2, 1, 64, 64), dtype=np.float32)
    assert np.array_equal(logits(loaded, x), logits(model, x))
    assert isinstance(load_model(path), SwinUnet)


def test_bare_state_dict_needs_a_card_for_the_image_size(tmp_path):
    model = build_model("swin_unet_test")
    torch.save({"model": model.state_dict(), "epoch": 1}, tmp_path / "train.pth")
    with pytest.raises(SwinsegError, match="image size"):
        load_checkpoint(tmp_path / "train.pth")
    loaded, card = load_checkpoint(tmp_path / "train.pth", "swin_unet_test")
    assert card.network == model.config


class _Evil:
    def __reduce__(self):
        return (print, ("unpickled!",))


@pytest.mark.parametrize(
    "kind", ["truncated-pth", "truncated-safetensors", "garbage", "text", "unrelated", "pickle", "empty", "missing"]
)
def test_bad_files_give_one_line_errors(tmp_path, kind):
    path = tmp_path / f"{kind}.pth"
    good = tmp_path / "good.pth"
    if kind == "truncated-pth":
        torch.save(build_model("swin_unet_test").state_dict(), good)
        path.write_bytes(good.read_bytes()[:5000])
    elif kind == "truncated-safetensors":
        save_checkpoint(tmp_path / "good.safetensors", build_model("swin_unet_test"), load_card("swin_unet_test"))
        path.write_bytes((tmp_path / "good.safetensors").read_bytes()[:20000])
    elif kind == "garbage":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif kind == "text":
        path.write_text("name: not weights\n")
    elif kind == "unrelated":
        torch.save({"conv.weight": torch.zeros(3, 3)}, path)
    elif kind == "pickle":
        path.write_bytes(pickle.dumps({"model": _Evil()}))
    elif kind == "empty":
        path.write_bytes(b"")
    with pytest.raises(SwinsegError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message


@needs_shared
def test_classifier_is_not_a_segmentation_checkpoint():
    with pytest.raises(SwinsegError, match="classifier"):
        load_checkpoint(CLASSIFIER)


def test_a_card_cannot_silently_change_a_checkpoints_preprocessing(tmp_path):
    from swinseg.config import Preprocessing

    card = load_card("swin_unet_test")
    path = tmp_path / "model.safetensors"
    save_checkpoint(path, build_model(card.network), card)
    mr_card = dataclasses.replace(card, preprocessing=Preprocessing(modality="MR"))
    with pytest.raises(SwinsegError, match="carries its own preprocessing"):
        load_checkpoint(path, mr_card)
    renamed = card.with_classes([f"organ_{i}" for i in range(len(card.classes))])
    assert load_checkpoint(path, renamed)[1].classes == renamed.classes  # class names may be renamed
