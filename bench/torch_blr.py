"""PyTorch baselines for bench/blr-layers.ts, on the same GPU in the same command: dense F.linear and
the block low-rank layers as PyTorch runs them (bf16), per (method, in, out, rank, blocks, rows).

    python3 bench/torch_blr.py '[["blast", 4096, 4096, 1024, 16, 128], ...]'

Low-rank: two F.linear. Monarch: bmm over blocks, the permutation as a reshape/transpose copy,
bmm, the output permutation as another copy. BLAST: bmm for Y, the coupling as an einsum over
input blocks, bmm for the output blocks, eager and under torch.compile. Prints one JSON object.
Timing: bench/torch_linear.py's (CUDA events around 50 calls after warm-up, median of 7 runs).
"""
import json
import sys

import torch
import torch.nn.functional as F

from torch_linear import time_us  # beside this file: the same timing as the dense baselines


def blr_function(method, i, o, r, b):
    dt, dev = torch.bfloat16, "cuda"
    if method == "lowrank":
        v = torch.randn(r, i, device=dev, dtype=dt) / i ** 0.5
        u = torch.randn(o, r, device=dev, dtype=dt) / r ** 0.5
        return lambda x: F.linear(F.linear(x, v), u)
    if method == "monarch":
        w1 = torch.randn(b, r, i // b, device=dev, dtype=dt) / (i // b) ** 0.5
        w2 = torch.randn(b, o // b, r, device=dev, dtype=dt) / r ** 0.5

        def monarch(x):
            n = x.shape[0]
            t = torch.bmm(x.view(n, b, i // b).transpose(0, 1), w1.transpose(1, 2))  # (b, n, r)
            t = t.transpose(0, 1).reshape(n, r, b).permute(2, 0, 1).contiguous()  # block l gets channels q·b + l
            u = torch.bmm(t, w2.transpose(1, 2))  # (b, n, o/b)
            return u.permute(1, 2, 0).reshape(n, o)  # feature s·b + l
        return monarch
    uu = torch.randn(b, o // b, r, device=dev, dtype=dt) / r ** 0.5
    vv = torch.randn(b, r, i // b, device=dev, dtype=dt) / (i // b) ** 0.5
    ss = torch.randn(b, b, r, device=dev, dtype=dt)

    def blast(x):
        n = x.shape[0]
        y = torch.bmm(x.view(n, b, i // b).transpose(0, 1), vv.transpose(1, 2))  # (b_in, n, r)
        z = torch.einsum("acr,cnr->anr", ss, y)  # (b_out, n, r)
        return torch.bmm(z, uu.transpose(1, 2)).transpose(0, 1).reshape(n, o)
    return blast


def main():
    cases = json.loads(sys.argv[1])
    results = []
    compiled = {}
    for method, i, o, r, b, rows in cases:
        x = torch.randn(rows, i, device="cuda", dtype=torch.bfloat16)
        w = torch.randn(o, i, device="cuda", dtype=torch.bfloat16) / i ** 0.5
        fn = blr_function(method, i, o, r, b)
        entry = {"method": method, "in": i, "out": o, "rank": r, "blocks": b, "rows": rows,
                 "dense_us": time_us(lambda: F.linear(x, w)), "blr_us": time_us(lambda: fn(x))}
        if method == "blast":
            key = (i, o, r, b)
            if key not in compiled:
                compiled[key] = torch.compile(fn)
            entry["blr_compiled_us"] = time_us(lambda: compiled[key](x))
        results.append(entry)
    print(json.dumps({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "results": results}))


if __name__ == "__main__":
    main()
