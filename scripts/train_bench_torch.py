"""PyTorch reference for `ucoder-flow bench train`: one training step's throughput and peak memory.

Loads a Hugging Face safetensors folder (what `ucoder-flow models export` writes) with
transformers in float32, and times full or LoRA fine-tuning steps (forward, backward, AdamW)
on the same batch shape `ucoder-flow bench train` uses: `rows` sequences of `seq` random token
ids, every token labelled. Prints one JSON line:
{"tokens_per_second": ..., "step_seconds": [...], "peak_rss_mib": ..., "threads": ...}.

Usage: python train_bench_torch.py MODEL_DIR --method full|lora --seq 512 --rows 1 --steps 3
       --threads 2 [--lora-rank 16 --lora-alpha 32]
"""

import argparse
import json
import time

import torch
from transformers import AutoModelForCausalLM


def peak_rss_mib():
    """VmHWM of this process (ru_maxrss would include the parent's peak from before exec)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("--method", choices=["full", "lora"], default="full")
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--rows", type=int, default=1)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--lora-rank", type=int, default=16)
    p.add_argument("--lora-alpha", type=float, default=32.0)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(a.model, torch_dtype=torch.float32)
    model.config.use_cache = False
    if a.method == "lora":
        from peft import LoraConfig, get_peft_model

        targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
        model = get_peft_model(
            model, LoraConfig(r=a.lora_rank, lora_alpha=a.lora_alpha, target_modules=targets)
        )
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)
    vocab = model.config.vocab_size
    ids = torch.randint(0, vocab, (a.rows, a.seq))
    times, phases = [], [0.0, 0.0, 0.0]
    for step in range(a.steps + 1):
        start = time.perf_counter()
        out = model(input_ids=ids, labels=ids)
        forward = time.perf_counter()
        out.loss.backward()
        backward = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        end = time.perf_counter()
        if step > 0:  # the first step warms up
            phases[0] += forward - start
            phases[1] += backward - forward
            phases[2] += end - backward
        times.append(end - start)
    measured = times[1:]
    tokens = a.rows * a.seq
    print(
        json.dumps(
            {
                "tokens_per_second": tokens * len(measured) / sum(measured),
                "step_seconds": measured,
                "forward_backward_optimizer_seconds": [p / len(measured) for p in phases],
                "peak_rss_mib": peak_rss_mib(),
                "threads": torch.get_num_threads(),
                "trainable_parameters": sum(p.numel() for p in params),
            }
        )
    )


if __name__ == "__main__":
    main()
