"""nnU-Net v2 trainer with a wall-clock training budget. benchmarks/peer_nnunet.py copies this file into the
peer venv as nnunetv2/training/nnUNetTrainer/variants/nnUNetTrainer_SwinsegBudget.py (it imports nnunetv2,
so it runs there, not in swinseg's venv); `nnUNetv2_train ID 2d all -tr nnUNetTrainer_SwinsegBudget` uses it.

Everything is stock nnU-Net (plans, 2d network, batch and patch size, augmentation, loss, SGD with Nesterov
momentum 0.99, initial lr 1e-2) except the length of training and the schedule:

- SWINSEG_BUDGET_SECONDS (required): seconds of training. The clock runs from the first epoch's start and
  counts the training iterations (data loading included) and the epoch-end bookkeeping (logging,
  checkpoint_best, progress.png); it stops during the per-epoch pseudo-validation batches and does not count
  the setup before the first epoch (dataloaders, unpacking) nor anything after training.
- the learning rate follows nnU-Net's poly schedule over the budget instead of over 1000 epochs,
  lr = initial_lr * (1 - elapsed / budget) ** 0.9, set before every iteration, so it is (nearly) 0 when training stops;
- epochs are short (SWINSEG_BUDGET_ITERATIONS, default 50 iterations; stock: 250) and training stops at the
  iteration boundary nearest the budget (no new iteration once less than half a mean iteration is left):
  that epoch ends as usual (shorter) and checkpoint_final.pth is saved;
- pseudo-validation: SWINSEG_BUDGET_VAL_ITERATIONS batches per epoch (default 5; stock: 50), outside the budget;
- nnU-Net's end-of-training validation (with fold "all": every training case, sliding window with mirroring)
  is skipped unless SWINSEG_BUDGET_VALIDATE=1; the benchmark predicts those cases itself.

swinseg_budget.json in the fold folder records the budget, the seconds trained, epochs, iterations, batch size.
"""
import json
import os
import time

import torch
from batchgenerators.utilities.file_and_folder_operations import join
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

BUDGET = "SWINSEG_BUDGET_SECONDS"


class WallClockPolyLR(PolyLRScheduler):
    """nnU-Net's PolyLRScheduler with the elapsed share of a wall-clock budget as its step (max_steps 1)."""

    def __init__(self, optimizer, initial_lr: float, budget: float, clock, exponent: float = 0.9):
        self.budget, self.clock = budget, clock
        super().__init__(optimizer, initial_lr, 1, exponent)

    def step(self, current_step=None):  # the epoch nnU-Net passes is ignored: the clock decides
        super().step(min(1.0, self.clock() / self.budget))


class nnUNetTrainer_SwinsegBudget(nnUNetTrainer):  # noqa: N801 (nnU-Net's naming)
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.budget = float(os.environ.get(BUDGET, "0"))
        self.num_iterations_per_epoch = int(os.environ.get("SWINSEG_BUDGET_ITERATIONS", "50"))
        self.num_val_iterations_per_epoch = max(1, int(os.environ.get("SWINSEG_BUDGET_VAL_ITERATIONS", "5")))
        self.num_epochs = 1_000_000  # an upper bound only: the budget ends training
        self.iterations_done = 0
        self._iteration_seconds = 0.0
        self._spent = 0.0
        self._since = None

    def elapsed(self) -> float:
        """Seconds of training so far (the clock is paused during pseudo-validation)."""
        return self._spent + (time.perf_counter() - self._since if self._since is not None else 0.0)

    def time_is_up(self) -> bool:
        """Whether stopping now ends nearer the budget than one more iteration (of the mean length so far)."""
        mean = self._iteration_seconds / max(1, self.iterations_done)
        return self.elapsed() + mean / 2 >= self.budget

    def _resume_clock(self) -> None:
        self._since = time.perf_counter()

    def _pause_clock(self) -> None:
        self._spent, self._since = self.elapsed(), None

    def configure_optimizers(self):
        optimizer, _ = super().configure_optimizers()
        return optimizer, WallClockPolyLR(optimizer, self.initial_lr, max(self.budget, 1e-6), self.elapsed)

    def train_step(self, batch: dict) -> dict:
        self.lr_scheduler.step()
        result = super().train_step(batch)
        self.iterations_done += 1
        return result

    def run_training(self):
        if self.budget <= 0:
            raise RuntimeError(f"set {BUDGET} to the training budget in seconds")
        self.on_train_start()
        self.print_to_log_file(f"wall-clock budget: {self.budget:.1f} s of training, "
                               f"{self.num_iterations_per_epoch} iterations per epoch, poly lr over the budget")
        self._resume_clock()
        while self.current_epoch < self.num_epochs:
            self.on_epoch_start()
            self.on_train_epoch_start()
            train_outputs = []
            for _ in range(self.num_iterations_per_epoch):
                if train_outputs and self.time_is_up():
                    break
                began = time.perf_counter()
                train_outputs.append(self.train_step(next(self.dataloader_train)))
                self._iteration_seconds += time.perf_counter() - began
            self.on_train_epoch_end(train_outputs)
            self._pause_clock()
            with torch.no_grad():
                self.on_validation_epoch_start()
                val_outputs = [self.validation_step(next(self.dataloader_val))
                               for _ in range(self.num_val_iterations_per_epoch)]
                self.on_validation_epoch_end(val_outputs)
            self._resume_clock()
            self.on_epoch_end()
            if self.time_is_up():
                break
        self._pause_clock()
        self.on_train_end()
        self._write_report()

    def _write_report(self) -> None:
        report = {"budget_seconds": self.budget, "trained_seconds": round(self._spent, 2),
                  "epochs": self.current_epoch, "iterations": self.iterations_done,
                  "iterations_per_epoch": self.num_iterations_per_epoch, "batch_size": self.batch_size,
                  "patch_size": [int(v) for v in self.configuration_manager.patch_size],
                  "final_lr": self.optimizer.param_groups[0]["lr"]}
        self.print_to_log_file(f"budget report: {report}")
        if self.local_rank == 0:
            with open(join(self.output_folder, "swinseg_budget.json"), "w") as stream:
                json.dump(report, stream, indent=1)

    def perform_actual_validation(self, save_probabilities: bool = False):
        if os.environ.get("SWINSEG_BUDGET_VALIDATE", "0") == "1":
            return super().perform_actual_validation(save_probabilities)
        self.print_to_log_file("end-of-training validation skipped (SWINSEG_BUDGET_VALIDATE=1 runs it)")
