"""Distributed training on CPU (gloo), tiny model: `torchrun --nproc_per_node 2 swinseg train`, then
`torchrun ... swinseg train --resume`. Both run as subprocesses with a timeout: a hung rank fails the test and
is killed, never left behind to block the test session's exit."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from swinseg.phantom import write_phantom_dataset
from swinseg.training.state import load_training_state
from swinseg.weights import load_checkpoint

pytestmark = pytest.mark.slow  # `make test-fast` leaves this module out


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory) -> Path:
    return write_phantom_dataset(tmp_path_factory.mktemp("data") / "ds", 3, seed=2, shape=(4, 64, 64),
                                 spacing=(10.0, 5.5, 5.5))


def torchrun(*arguments: str) -> subprocess.CompletedProcess:
    """`swinseg ARGUMENTS` as 2 CPU processes under torchrun, in their own process group: after 180 s the
    whole group (torchrun and both ranks) is killed and the test fails."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "swinseg", *arguments]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True, env={**os.environ, "OMP_NUM_THREADS": "1"}) as job:
        try:
            stdout, stderr = job.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            os.killpg(job.pid, signal.SIGKILL)
            job.communicate()
            pytest.fail(f"torchrun swinseg {' '.join(arguments)} did not finish in 180 s")
    return subprocess.CompletedProcess(command, job.returncode, stdout, stderr)


def test_two_cpu_processes_train_resume_and_only_rank_0_writes(phantoms, tmp_path):
    run = tmp_path / "run"
    first = torchrun("train", "--data", str(phantoms), "-o", str(run), "--model", "swin_unet_test",
                     "--epochs", "1", "--batch-size", "4", "--val-every", "1", "--val-fraction", "0.34",
                     "--num-workers", "0", "--device", "cpu")
    assert first.returncode == 0, first.stderr[-3000:]
    lines = first.stdout.splitlines()
    assert sum(line.startswith("training swin_unet_test") for line in lines) == 1  # rank 0 only
    assert "on 2 processes" in first.stdout
    assert [line.split()[1] for line in lines if line.startswith("epoch ")] == ["1/1"]

    # the resume: rank 0 reads last.pt and broadcasts it, each rank restores its own RNG streams
    resumed = torchrun("train", "--resume", str(run), "--epochs", "2")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [line.split()[1] for line in resumed.stdout.splitlines() if line.startswith("epoch ")] == ["2/2"]

    state = load_training_state(run / "last.pt")
    # 8 training slices, global batch 4 split over 2 processes: 2 iterations per epoch on each process
    assert [row["iteration"] for row in state["history"]] == [2, 4]
    assert len(state["rng"]) == 2 and all(row["val_dice"] is not None for row in state["history"])
    assert sorted(p.name for p in run.iterdir()) == [
        "best.safetensors", "config.yaml", "curves.png", "final.safetensors", "last.pt", "metrics.csv", "plan.json"]
    model, card = load_checkpoint(run / "final.safetensors")
    assert card.name == "swin_unet_test" and model.config.num_classes == 6
