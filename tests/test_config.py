"""Model cards and network configuration."""
import subprocess
import sys
import time

import pytest

from swinseg import __version__
from swinseg.config import ModelCard, SwinUnetConfig, legal_windows, list_cards, load_card
from swinseg.errors import SwinsegError


def test_published_card_is_the_paper_configuration():
    card = load_card("swin_unet_tiny")
    assert card.network.depths == (2, 2, 2, 2)
    assert card.network.window_size == 7 and card.network.img_size == 224
    assert card.classes[0] == "background" and len(card.classes) == 9
    assert card.preprocessing.window == (-125.0, 275.0)


def test_every_shipped_card_loads():
    cards = list_cards()
    assert {"swin_unet_tiny", "swin_unet_tiny_full", "swin_unet_demo", "swin_unet_test"} <= set(cards)
    for name in cards:
        assert isinstance(load_card(name), ModelCard)


def test_illegal_window_lists_the_legal_ones():
    with pytest.raises(SwinsegError, match=r"windows that work: \[2, 4, 8, 16, 32\]"):
        SwinUnetConfig(img_size=256, window_size=7)
    assert 7 in legal_windows(224) and 6 in legal_windows(384) and 12 in legal_windows(384)


def test_user_card_file_and_unknown_name(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("network: {img_size: 64, embed_dim: 12, num_heads: [1, 2, 4, 8], window_size: 2}\n"
                    "classes: [background, tumour]\n")
    card = load_card(path)
    assert card.name == "mine" and card.network.num_classes == 2
    with pytest.raises(SwinsegError, match="unknown model card 'nope'"):
        load_card("nope")


def test_help_does_not_import_torch():
    code = "import sys, swinseg.cli; print(any(m in sys.modules for m in ('torch', 'timm')))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "swinseg", "--help"], capture_output=True, check=True)
    assert time.perf_counter() - start < 2.0  # 0.2 s measured; generous for loaded CI machines


def test_the_command_leaves_with_its_exit_code_handlers_run_and_output_flushed(tmp_path):
    """main() skips the interpreter's teardown (0.4-0.6 s after torch): exit codes, atexit handlers and buffered
    output must survive that, and a profiler must still write its results."""
    marker = tmp_path / "atexit.txt"
    code = ("import atexit, sys; from pathlib import Path; from swinseg.cli import main; "
            f"atexit.register(lambda: Path({str(marker)!r}).write_text('ran')); sys.argv[0] = 'swinseg'; main()")
    done = subprocess.run([sys.executable, "-c", code, "--version"], capture_output=True, text=True)
    assert (done.returncode, done.stdout, marker.read_text()) == (0, f"swinseg {__version__}\n", "ran")
    failed = subprocess.run([sys.executable, "-m", "swinseg", "predict", str(tmp_path / "missing.nii.gz"), "-o",
                             str(tmp_path / "mask.nii.gz"), "-m", "swin_unet_test"], capture_output=True, text=True)
    assert failed.returncode == 1 and failed.stderr.startswith("error: ") and failed.stderr.count("\n") == 1
    usage = subprocess.run([sys.executable, "-m", "swinseg", "predict"], capture_output=True, text=True)
    assert usage.returncode == 2 and "Missing argument" in usage.stderr
    profiled = subprocess.run([sys.executable, "-m", "cProfile", "-o", str(tmp_path / "profile"), "-m", "swinseg",
                               "--version"], capture_output=True, text=True)
    assert profiled.returncode == 0 and (tmp_path / "profile").stat().st_size > 0  # a profiler still gets its file


def test_orientation_codes_are_checked_when_the_card_is_read(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("network: {img_size: 64, embed_dim: 12, num_heads: [1, 2, 4, 8], window_size: 2}\n"
                    "classes: [background, tumour]\npreprocessing: {orientation: LPX}\n", encoding="utf-8")
    with pytest.raises(SwinsegError, match=r"bad.yaml.*'LPX' is not an orientation code"):
        load_card(path)
    assert load_card("swin_unet_tiny").preprocessing.orientation == "LPS"
