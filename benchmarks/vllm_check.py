"""Serve a dMX compressed-tensors export with vLLM on a GPU and compare it with `dmx eval`.

NOT RUN: prepared for a GPU user. The task that wrote it had no GPU, so nothing here has been
executed; expect to adjust it to your vLLM version. Nothing in the README or docs/ comes from it.

    pip install vllm                                  # or `pip install --no-deps vllm` against your torch
    dmx export --assignment results/demo_unrotated/seed-0/assignment.json --output-format compressed-tensors \
        --out runs/vllm/export
    DMX_DATA_DIR=/path/to/data python benchmarks/vllm_check.py runs/vllm/export \
        --assignment results/demo_unrotated/seed-0/assignment.json --out runs/vllm/vllm_check.json

It (1) lists the fused vLLM layers (qkv_proj = q/k/v, gate_up_proj = gate/up) whose parts the
assignment puts in different config groups: vLLM fuses those linears into one kernel, and may
refuse or mis-handle a fused layer with mixed schemes; (2) generates a few prompts; (3) scores 2
windows of 2048 WikiText-2 test tokens with prompt log-probabilities (the GPTQ protocol of
dmx.llm.perplexity: exp of the mean over windows of the mean next-token NLL) and writes them next to
the `dmx eval` perplexity of the same assignment (run `dmx eval --assignment A --max-windows 2
--out runs/vllm/dmx_eval.json` first). vLLM computes activation scales with its own kernels'
rule, which need not be compressed-tensors' (docs/EXPORT.md, "Serving a dMX model").
"""

from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict
from pathlib import Path

FUSED = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "gate_up_proj": ("gate_proj", "up_proj")}
PROMPTS = ["The capital of France is", "In 1905, Albert Einstein", "def fibonacci(n):", "The mitochondria is"]


def mixed_fused_layers(config: dict) -> list[str]:
    """Fused vLLM layers whose parts sit in different config groups of the export."""
    group_of = {t: g for g, s in config["quantization_config"]["config_groups"].items() for t in s["targets"]}
    parents = defaultdict(dict)
    for target, group in group_of.items():
        parent, leaf = target.rsplit(".", 1)
        for fused, parts in FUSED.items():
            if leaf in parts:
                parents[f"{parent}.{fused}"][leaf] = group
    return sorted(name for name, parts in parents.items() if len(set(parts.values())) > 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("export", help="directory written by dmx export --output-format compressed-tensors")
    parser.add_argument("--assignment", help="the assignment it was made from (recorded in the output)")
    parser.add_argument("--dmx-eval", default="runs/vllm/dmx_eval.json", help="dmx eval --out file to compare with")
    parser.add_argument("--windows", type=int, default=2)
    parser.add_argument("--out", default="runs/vllm/vllm_check.json")
    args = parser.parse_args()

    config = json.loads((Path(args.export) / "config.json").read_text())
    mixed = mixed_fused_layers(config)
    print(f"{len(mixed)} fused layers with mixed schemes, e.g. {mixed[:3]}")

    from vllm import LLM, SamplingParams  # imported late: the checks above run without vLLM

    from dmx.llm.data import test_token_ids

    llm = LLM(model=args.export, dtype="bfloat16", max_model_len=2048, enforce_eager=True)
    outputs = llm.generate(PROMPTS, SamplingParams(max_tokens=32, temperature=0.0))
    samples = {o.prompt: o.outputs[0].text for o in outputs}
    ids = test_token_ids(llm.get_tokenizer())[0].tolist()
    means = []
    for w in range(args.windows):
        window = ids[w * 2048:(w + 1) * 2048]
        out = llm.generate({"prompt_token_ids": window}, SamplingParams(max_tokens=1, prompt_logprobs=0))[0]
        nll = [-lp[tok].logprob for tok, lp in zip(window[1:], out.prompt_logprobs[1:])]
        means.append(sum(nll) / len(nll))
    result = {"export": args.export, "assignment": args.assignment, "mixed_fused_layers": mixed,
              "vllm_perplexity": math.exp(sum(means) / len(means)), "windows": args.windows, "samples": samples}
    if Path(args.dmx_eval).is_file():
        result["dmx_eval"] = json.loads(Path(args.dmx_eval).read_text())
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "dmx_eval"}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
