"""PyTorch baselines for bench/blr-layers.ts, on the same GPU in the same command: dense F.linear and
the block low-rank layers as PyTorch runs them (bf16), per (method, in, out, rank, blocks, rows).

    python3 bench/torch_blr.py '[["blast", 4096, 4096, 1024, 16, 128], ...]'

Low-rank: two F.linear. Monarch: bmm over blocks, the permutation as a reshape/transpose copy,
bmm, the output permutation as another copy. BLAST: bmm for Y, the coupling as an einsum over
input blocks, bmm for the output blocks, eager and under torch.compile. Prints one JSON object.
Timing: bench/torch_linear.py's (CUDA events around 50 calls after warm-up, median of 7 runs, the
GPU's clocks warmed first),
with weights in enough copies, used in turn, to stream from memory every call (as bench/blr-layers.ts
does for ours).
"""
import json
import sys

import torch
import torch.nn.functional as F

from torch_linear import time_us, warm_clocks  # beside this file: the same timing as the dense baselines


def blr_weights(method, i, o, r, b):
    """One set of random factors for the method, in the layouts its function takes."""
    dt, dev = torch.bfloat16, "cuda"
    if method == "lowrank":
        return (torch.randn(r, i, device=dev, dtype=dt) / i ** 0.5, torch.randn(o, r, device=dev, dtype=dt) / r ** 0.5)
    if method == "monarch":
        return (torch.randn(b, r, i // b, device=dev, dtype=dt) / (i // b) ** 0.5, torch.randn(b, o // b, r, device=dev, dtype=dt) / r ** 0.5)
    return (torch.randn(b, o // b, r, device=dev, dtype=dt) / r ** 0.5, torch.randn(b, r, i // b, device=dev, dtype=dt) / (i // b) ** 0.5,
            torch.randn(b, b, r, device=dev, dtype=dt))


def lowrank(x, v, u):
    return F.linear(F.linear(x, v), u)


def monarch(x, w1, w2):
    n, i = x.shape
    b, r, _ = w1.shape
    o = w2.shape[0] * w2.shape[1]
    t = torch.bmm(x.view(n, b, i // b).transpose(0, 1), w1.transpose(1, 2))  # (b, n, r)
    t = t.transpose(0, 1).reshape(n, r, b).permute(2, 0, 1).contiguous()  # block l gets channels q·b + l
    u = torch.bmm(t, w2.transpose(1, 2))  # (b, n, o/b)
    return u.permute(1, 2, 0).reshape(n, o)  # feature s·b + l


def blast(x, uu, vv, ss):
    n, i = x.shape
    b = vv.shape[0]
    o = uu.shape[0] * uu.shape[1]
    y = torch.bmm(x.view(n, b, i // b).transpose(0, 1), vv.transpose(1, 2))  # (b_in, n, r)
    z = torch.einsum("acr,cnr->anr", ss, y)  # (b_out, n, r)
    return torch.bmm(z, uu.transpose(1, 2)).transpose(0, 1).reshape(n, o)


FUNCTIONS = {"lowrank": lowrank, "monarch": monarch, "blast": blast}
COMPILED_BLAST = torch.compile(blast)


STREAM_BYTES = 128e6


def copies_for(nbytes):
    return int(min(64, max(2, -(-STREAM_BYTES // nbytes))))


def rotating(fn, weight_sets):
    """x ↦ fn(x, *weights), with each of `weight_sets` in turn."""
    state = {"k": 0}

    def call(x):
        state["k"] += 1
        return fn(x, *weight_sets[state["k"] % len(weight_sets)])
    return call


def blr_bytes(method, i, o, r, b):
    return 2 * (r * (i + o) + (b * b * r if method == "blast" else 0))


def main():
    cases = json.loads(sys.argv[1])
    warm_clocks()
    results = []
    for method, i, o, r, b, rows in cases:
        x = torch.randn(rows, i, device="cuda", dtype=torch.bfloat16)
        dense = rotating(F.linear, [(torch.randn(o, i, device="cuda", dtype=torch.bfloat16) / i ** 0.5,) for _ in range(copies_for(2 * i * o))])
        weight_sets = [blr_weights(method, i, o, r, b) for _ in range(copies_for(blr_bytes(method, i, o, r, b)))]
        blr = rotating(FUNCTIONS[method], weight_sets)
        entry = {"method": method, "in": i, "out": o, "rank": r, "blocks": b, "rows": rows,
                 "dense_us": time_us(lambda: dense(x)), "blr_us": time_us(lambda: blr(x))}
        if method == "blast":
            compiled = rotating(COMPILED_BLAST, weight_sets)
            entry["blr_compiled_us"] = time_us(lambda: compiled(x))
        del dense, weight_sets, blr
        results.append(entry)
    print(json.dumps({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "results": results}))


if __name__ == "__main__":
    main()
