"""Hugging Face transformers end-to-end baseline for bench/e2e.ts, same GPU, same command.

    python3 bench/hf_e2e.py CONFIG.json [--prompt 128] [--new 128] [--modes eager,static]

Random weights (fp16) on the GPU from the config; batch 1. Prefill: median time of a forward pass
over the prompt. Decode: (new - 1) tokens / (generate time - prefill time), greedy, EOS ignored.
"static" is the static KV cache, which generate() compiles (torch.compile, CUDA graphs). Prints one JSON line.
"""
import argparse
import json
import time

import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM


def timed(fn, repeats):
    samples = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    return samples[len(samples) // 2]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("config")
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--new", type=int, default=128)
    parser.add_argument("--modes", default="eager,static")
    args = parser.parse_args()
    config = AutoConfig.from_pretrained(args.config)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float16, attn_implementation="sdpa").eval()
    ids = torch.randint(0, config.vocab_size, (1, args.prompt), device="cuda")
    results = {}
    for mode in args.modes.split(","):
        kwargs = dict(max_new_tokens=args.new, min_new_tokens=args.new, do_sample=False, pad_token_id=0)
        if mode == "static":
            # generate() compiles the forward itself (CUDA graphs) when the cache is static
            model.generation_config.cache_implementation = "static"
        with torch.no_grad():
            for _ in range(3):  # warm-up (and compilation for static)
                model.generate(ids, **kwargs)
            prefill_ms = timed(lambda: model(ids), 5) if mode == "eager" else None
            generate_ms = timed(lambda: model.generate(ids, **kwargs), 3)
            if mode == "static":
                # prefill as generate runs it: one new token
                prefill_ms = timed(lambda: model.generate(ids, **{**kwargs, "max_new_tokens": 1, "min_new_tokens": 1}), 5)
        results[mode] = {
            "prefill_ms": prefill_ms,
            "decode_tokens_per_s": (args.new - 1) * 1000 / (generate_ms - prefill_ms),
            "generate_ms": generate_ms,
        }
    print(json.dumps({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "transformers": transformers.__version__,
                      "dtype": "float16", "prompt": args.prompt, "new": args.new, "results": results}))


if __name__ == "__main__":
    main()
