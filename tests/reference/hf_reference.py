"""Reference outputs from Hugging Face transformers for the tiny fixtures and stories260K.

Run on the GPU host (offline; python3 with torch + transformers):
    python3 tests/reference/hf_reference.py FIXTURES_DIR STORIES_DIR PROBES_JSON OUT_DIR
FIXTURES_DIR holds the directories written by tests/fixtures/tiny-models.ts and prompts.json.
Everything runs in float32 on the CPU with eager attention, so the numbers are the plain math.
"""
import json
import os
import sys

import torch
import transformers
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM

TOP_K = 16
GREEDY_TOKENS = 24
STORIES_TOKENS = 96


def reference(model_dir, prompt, greedy_tokens, probes):
    tokenizer = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    prompt_ids = tokenizer.encode(prompt, add_special_tokens=True).ids
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager").eval()
    with torch.no_grad():
        out = model(torch.tensor([prompt_ids]), use_cache=True)
        logits = out.logits[0, -1].double()
        top = torch.topk(logits, TOP_K)
        past = out.past_key_values
        greedy = []
        next_logits = out.logits[0, -1]
        for _ in range(greedy_tokens):
            token = int(torch.argmax(next_logits))
            greedy.append(token)
            out = model(torch.tensor([[token]]), past_key_values=past, use_cache=True)
            past = out.past_key_values
            next_logits = out.logits[0, -1]
    return {
        "prompt": prompt,
        "prompt_ids": prompt_ids,
        "top_ids": [int(i) for i in top.indices],
        "top_logits": [float(v) for v in top.values],
        "greedy_ids": greedy,
        "greedy_text": tokenizer.decode(greedy, skip_special_tokens=True),
        "probe_ids": [tokenizer.encode(p, add_special_tokens=True).ids for p in probes],
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
    }


def main():
    fixtures, stories, probes_path, out_dir = sys.argv[1:5]
    probes = json.load(open(probes_path))
    prompts = json.load(open(os.path.join(fixtures, "prompts.json")))
    os.makedirs(out_dir, exist_ok=True)
    jobs = [(name, os.path.join(fixtures, name), prompt, GREEDY_TOKENS) for name, prompt in prompts.items()]
    jobs.append(("stories260K", stories, "Once upon a time", STORIES_TOKENS))
    for name, model_dir, prompt, tokens in jobs:
        result = reference(model_dir, prompt, tokens, probes)
        with open(os.path.join(out_dir, f"{name}.json"), "w") as f:
            json.dump(result, f, indent=1)
        print(name, result["prompt_ids"][:12], result["greedy_ids"][:12], repr(result["greedy_text"][:120]))


if __name__ == "__main__":
    main()
