"""Forward speed of Swin-Unet (swin_unet_tiny, 224x224) against the machine's own fp32 matmul speed.

Measures, in one process: FLOPs per slice (torch.utils.flop_counter; the published model is 12.22 GFLOP),
the best fp32 matmul GFLOP/s of a 2048^3 product, and the forward time per slice at batch 1, 8 and 32 for each
backend (torch eager, and on CPU the ONNX export on onnxruntime and OpenVINO where installed). Prints achieved
GFLOP/s and the ratio achieved / matmul (target on a 2-core CPU: >= 0.6 at batch 8), plus the speed-up over
timm's stock path (plain attention, roll + pad + partition).
Timings are best-of-N because other processes may share the cores; the median is printed too.

    python benchmarks/model_speed.py                      # CPU, fp32, every installed backend
    python benchmarks/model_speed.py --device cuda --precision bf16 --batches 1 32 128
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from swinseg import backends
from swinseg.config import load_card
from swinseg.device import autocast, resolve_device, resolve_precision
from swinseg.model import SwinUnet, build_model, use_gather_windows


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeats: int) -> list[float]:
    fn()  # warm-up (allocations, kernel selection)
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return times


def matmul_gflops(device: torch.device, dtype: torch.dtype, size: int, repeats: int) -> float:
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    best = min(timed(lambda: a @ b, device, repeats))
    return 2 * size**3 / best / 1e9


def flops_per_slice(model: SwinUnet, size: int) -> float:
    """FLOPs of one slice, counted on timm's stock path: FlopCounterMode does not count the CPU
    fused-attention kernel."""
    set_stock_timm(model, True)
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        model(torch.rand(1, 1, size, size))
    set_stock_timm(model, False)
    return counter.get_total_flops()


def set_stock_timm(model: SwinUnet, stock: bool) -> None:
    """Switch between swinseg's forward path and timm's stock one (the same maths)."""
    model.set_fused_attention(not stock)
    use_gather_windows(model, not stock)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="swin_unet_tiny", help="model card")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--repeats", type=int, default=3, help="timed forwards per batch size (best is used)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--precision", default="fp32", help="fp32, bf16, fp16 or auto (autocast on CUDA)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--backends", default="torch,onnxruntime,openvino",
                        help="comma separated; the ONNX ones on CPU only, where installed")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    dtype = resolve_precision(args.precision, device)

    model = build_model(args.model).eval()
    size = model.config.img_size
    flops = flops_per_slice(model, size)
    model.to(device)
    matmul_dtype = dtype or torch.float32
    peak = matmul_gflops(device, matmul_dtype, 2048 if device.type == "cpu" else 8192, args.repeats)
    print(f"{args.model}: {size}x{size}, {sum(p.numel() for p in model.parameters()):,} parameters, "
          f"{flops / 1e9:.2f} GFLOP per slice; device {device}, threads {torch.get_num_threads()}, "
          f"precision {args.precision}")
    print(f"matmul {str(matmul_dtype).removeprefix('torch.')} 2048^3 (8192^3 on GPU): {peak:.1f} GFLOP/s")
    print(f"{'backend':>12} {'batch':>5} {'ms/slice':>9} {'median':>9} {'slices/s':>9} {'GFLOP/s':>8} {'vs matmul':>9}")
    card = load_card(args.model)
    for name in args.backends.split(","):
        if name != "torch" and (device.type != "cpu" or not backends.installed(name)):
            continue
        network = backends.open_network(name, model, card, device, dtype if name == "torch" else None)
        for batch in args.batches:
            x = torch.rand(batch, 1, size, size, device=device)

            def forward(x: torch.Tensor = x, network=network) -> None:
                with torch.inference_mode():
                    network(x)

            times = timed(forward, device, args.repeats)
            best, median = min(times) / batch, statistics.median(times) / batch
            achieved = flops / best / 1e9
            print(f"{name:>12} {batch:>5} {best * 1e3:>9.1f} {median * 1e3:>9.1f} {1 / best:>9.2f} {achieved:>8.1f} "
                  f"{achieved / peak:>9.2f}")

    batch = 8 if 8 in args.batches else args.batches[0]
    x = torch.rand(batch, 1, size, size, device=device)
    results = {}
    for stock in (False, True, False, True):  # interleaved against drifting load
        set_stock_timm(model, stock)

        def forward(x: torch.Tensor = x) -> None:
            with torch.inference_mode(), autocast(device, dtype):
                model(x)

        results[stock] = min(results.get(stock, float("inf")), *timed(forward, device, args.repeats))
    set_stock_timm(model, False)
    print(f"stock timm path (plain attention, roll + pad + partition) at batch {batch}: "
          f"{results[True] / batch * 1e3:.1f} ms/slice; swinseg's path is {results[True] / results[False]:.2f}x faster")

if __name__ == "__main__":
    main()
