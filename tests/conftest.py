"""Shared test settings and fixtures."""
from pathlib import Path

import pytest
import torch

from swinseg.config import load_card
from swinseg.model import build_model
from swinseg.weights import save_checkpoint


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Tests run tiny networks, whose cost is per-op overhead: one thread is as fast, and does not stall when
    other jobs load the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _session_folder(tmp_path_factory, name: str, variable: str):
    """A folder of this session named by environment `variable` while the session lasts."""
    with pytest.MonkeyPatch.context() as patch:
        folder = tmp_path_factory.mktemp(name)
        patch.setenv(variable, str(folder))
        yield folder


@pytest.fixture(scope="session", autouse=True)
def onnx_cache(tmp_path_factory):
    """Exported graphs go to a folder of this session, never to the user's cache."""
    yield from _session_folder(tmp_path_factory, "cache", "SWINSEG_CACHE")


@pytest.fixture(scope="session", autouse=True)
def model_store(tmp_path_factory):
    """The model store (swinseg.store) of a session folder, never the user's."""
    yield from _session_folder(tmp_path_factory, "store", "SWINSEG_HOME")


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    """A random-init swin_unet_test network saved in swinseg's format."""
    torch.manual_seed(0)
    card = load_card("swin_unet_test")
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save_checkpoint(path, build_model(card.network), card)
    return path
