"""Shared test settings."""
import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    """Tests run tiny networks, whose cost is per-op overhead: one thread is as fast, and does not stall when
    other jobs load the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
