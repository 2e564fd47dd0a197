"""Training recipes side by side: the published one (SGD 0.05, for ImageNet-initialised encoders) against the
variants of the from-scratch recipe, same card, data, budget and seed; Dice on held-out data per variant.

Data: phantoms (16 training cases, 15 epochs, batch 16: the quick check of issue 19; held out 4 other phantoms as
generated and with a 1.5x field of view) or the real CT in ../shared/data cut into blocks (benchmarks/accuracy.py:
even blocks train, odd blocks held out as they are and at 1.5 mm in-plane; Dice pooled over the blocks).

    .venv/bin/python benchmarks/recipe.py --data phantoms --variants published,scratch [--epochs 15]
    .venv/bin/python benchmarks/recipe.py --data ct --variants published,scratch --epochs 150
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from accuracy import phantom_data, real_ct_data, scores  # noqa: E402

from swinseg.phantom import CLASSES as PHANTOM_CLASSES  # noqa: E402
from swinseg.phantom import write_phantom_dataset  # noqa: E402
from swinseg.predict import Predictor  # noqa: E402
from swinseg.training.loop import TrainConfig, train  # noqa: E402
from swinseg.weights import load_checkpoint  # noqa: E402

VARIANTS: dict[str, dict] = {  # name -> TrainConfig options (see --set for one-off changes)
    "published": {"recipe": "published"},
    "scratch": {"recipe": "scratch"},  # the default without ImageNet weights
    "scratch-sgd": {"recipe": "scratch", "optimizer": "sgd", "base_lr": 0.05, "weight_decay": 1e-4},
    "scratch-reference-aug": {"recipe": "scratch", "augment": "reference"},
    "scratch-strong-any-angle-mirrored": {"recipe": "scratch", "rotation": 180.0, "mirror": "both"},  # nnU-Net's
    "scratch-no-aug": {"recipe": "scratch", "augment": "none"},
    "scratch-no-deep-supervision": {"recipe": "scratch", "deep_supervision": False},  # scratch before deep supervision
}


def phantom_sets(out: Path) -> tuple[Path, dict[str, Path]]:
    """16 training phantoms (128 px, 2.75 mm) and the held-out phantoms as generated and at 1.5x field of view."""
    shape, spacing = (48, 128, 128), (5.0, 2.75, 2.75)
    train_dir = write_phantom_dataset(out / "train", 16, seed=0, shape=shape, spacing=spacing)
    _, tests = phantom_data(out / "unused")
    tests = {"as generated": tests["as generated"],
             "1.5x field of view": write_phantom_dataset(out / "heldout_fov", 4, seed=1, shape=(48, 192, 192),
                                                         spacing=spacing)}
    return train_dir, tests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=("phantoms", "ct"), default="phantoms")
    parser.add_argument("--variants", default="published,scratch")
    parser.add_argument("--epochs", type=int, default=None, help="default: 15 (phantoms), 150 (ct)")
    parser.add_argument("--card", default="swin_unet_demo")
    parser.add_argument("--out", type=Path, default=Path("recipe_runs"))
    parser.add_argument("--set", action="append", default=[], help="extra option for every variant, KEY=VALUE")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    out = args.out / args.data
    if args.data == "phantoms":
        train_dir, tests = phantom_sets(out / "data")
        classes, batch, epochs, pooled = list(PHANTOM_CLASSES), 16, args.epochs or 15, False
    else:
        train_dir, tests, classes = real_ct_data(out / "data")
        batch, epochs, pooled = 8, args.epochs or 150, True
    extra = dict(item.split("=", 1) for item in args.set)
    results = {}
    for name in args.variants.split(","):
        run = out / "runs" / name
        options = {"data": str(train_dir), "output": str(run), "model": args.card, "epochs": epochs,
                   "batch_size": batch, "val_every": 0, "val_fraction": 0.0, "spacing": "auto", "num_workers": 2,
                   "device": "cpu", "seed": 1234, **VARIANTS[name], **extra}
        config = TrainConfig(**options)
        began = time.perf_counter()
        if not (run / "final.safetensors").is_file():
            result = train(config, resume=(run / "last.pt").is_file())
            losses = [row["loss"] for row in result.history]
        else:
            losses = []
        seconds = time.perf_counter() - began
        predictor = Predictor(*load_checkpoint(run / "final.safetensors"), device="cpu")
        row = {"seconds": seconds, "final_loss": losses[-1] if losses else None}
        row["train"] = float(np.mean(scores(predictor, train_dir, pooled, len(classes), run / "pred_train")))
        for test_name, test in tests.items():
            row[test_name] = float(np.mean(scores(predictor, test, pooled, len(classes), run / "pred" / test.name)))
        results[name] = row
        print(f"{name:16} " + "  ".join(f"{k} {v:.3f}" for k, v in row.items() if v is not None), flush=True)
    (out / "summary.json").write_text(json.dumps(results, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
