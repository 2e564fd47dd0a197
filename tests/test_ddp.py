"""Distributed training on CPU (gloo), tiny model: `torchrun --nproc_per_node 2 swinseg train`, then a resume
by two processes of the same job."""
from __future__ import annotations

import multiprocessing
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from swinseg.phantom import write_phantom_dataset
from swinseg.training.loop import resolve_config, train
from swinseg.training.state import load_training_state
from swinseg.weights import load_checkpoint

pytestmark = pytest.mark.slow  # `make test-fast` leaves this module out


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory) -> Path:
    return write_phantom_dataset(tmp_path_factory.mktemp("data") / "ds", 3, seed=2, shape=(4, 64, 64),
                                 spacing=(10.0, 5.5, 5.5))


def resume_as_rank(rank: int, port: int, run: str) -> None:
    """One process of a 2-process job, set up as torchrun would (forked: no second import of torch)."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    train(resolve_config(Path(run) / "config.yaml", {"epochs": 2}), resume=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_cpu_processes_train_resume_and_only_rank_0_writes(phantoms, tmp_path):
    run = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "swinseg", "train", "--data", str(phantoms), "-o", str(run), "--model", "swin_unet_test",
               "--epochs", "1", "--batch-size", "4", "--val-every", "1", "--val-fraction", "0.34",
               "--num-workers", "0", "--device", "cpu"]
    first = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert first.returncode == 0, first.stderr[-3000:]
    lines = first.stdout.splitlines()
    assert sum(line.startswith("training swin_unet_test") for line in lines) == 1  # rank 0 only
    assert "on 2 processes" in first.stdout
    assert [line.split()[1] for line in lines if line.startswith("epoch ")] == ["1/1"]

    # the resume: rank 0 reads last.pt and broadcasts it, each rank restores its own RNG streams
    context = multiprocessing.get_context("fork")
    port = free_port()
    ranks = [context.Process(target=resume_as_rank, args=(rank, port, str(run))) for rank in range(2)]
    for process in ranks:
        process.start()
    for process in ranks:
        process.join(timeout=120)
    assert [process.exitcode for process in ranks] == [0, 0]

    state = load_training_state(run / "last.pt")
    # 8 training slices, global batch 4 split over 2 processes: 2 iterations per epoch on each process
    assert [row["iteration"] for row in state["history"]] == [2, 4]
    assert len(state["rng"]) == 2 and all(row["val_dice"] is not None for row in state["history"])
    assert sorted(p.name for p in run.iterdir()) == [
        "best.safetensors", "config.yaml", "curves.png", "final.safetensors", "last.pt", "metrics.csv", "plan.json"]
    model, card = load_checkpoint(run / "final.safetensors")
    assert card.name == "swin_unet_test" and model.config.num_classes == 6
