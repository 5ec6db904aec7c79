"""PyTorch F.linear baselines for bench/kernels.ts, on the same GPU in the same command.

    python3 bench/torch_linear.py '[[1, 4096, 4096], [1024, 4096, 11008], ...]'   (rows, in, out)

Prints one JSON object: {"device", "torch", "dtype", "results": [{rows, in, out, us}], "copy_gbs"}.
Timing: CUDA events around 50 back-to-back calls after warm-up, median of 7 such runs, on a GPU
kept busy for 2 s first (an idle H200 runs at 345 MHz and needs ~1.5 s of work to reach full clock,
bench/RESULTS.md; a first call that compiles, idling the GPU for a while, is followed by the same).
The calls take four copies of the weight in turn, as bench/kernels.ts does, so every call streams
its weight from memory (one 32 MB weight would sit in the H200's 50 MB L2).
"""
import json
import sys
import time

import torch
import torch.nn.functional as F


def warm_clocks(seconds=2.0):
    """Keeps the GPU busy with bf16 matmuls for `seconds`, so that what is timed next runs at full clock."""
    a = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(20):
            torch.mm(a, a)
        torch.cuda.synchronize()


def time_us(fn, inner=50, repeats=7):
    start = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    if time.perf_counter() - start > 0.1:  # the first call compiled something while the GPU idled
        warm_clocks()
    for _ in range(10):
        fn()
    torch.cuda.synchronize()
    samples = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(inner):
            fn()
        end.record()
        torch.cuda.synchronize()
        samples.append(start.elapsed_time(end) * 1000 / inner)
    samples.sort()
    return samples[len(samples) // 2]


def main():
    shapes = json.loads(sys.argv[1])
    warm_clocks()
    dtype = torch.bfloat16
    results = []
    for rows, in_features, out_features in shapes:
        x = torch.randn(rows, in_features, device="cuda", dtype=dtype)
        weights = [torch.randn(out_features, in_features, device="cuda", dtype=dtype) / in_features ** 0.5 for _ in range(4)]
        calls = [0]

        def call():
            calls[0] += 1
            return F.linear(x, weights[calls[0] % 4])

        results.append({"rows": rows, "in": in_features, "out": out_features, "us": time_us(call)})
        del weights
    a = torch.empty(256 * 2**20, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    copy_us = time_us(lambda: b.copy_(a), inner=20)
    print(json.dumps({
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "dtype": "bfloat16",
        "results": results,
        "copy_gbs": 2 * a.numel() / copy_us / 1e3,
    }))


if __name__ == "__main__":
    main()
