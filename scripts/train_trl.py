#!/usr/bin/env python3
"""An external trainer for ucoder-flow's loop: TRL's SFTTrainer on an iteration's Parquet shards.

Use it from a pipeline file (the run starts it after each iteration, on the machine the run is on):

    [train]
    command = "python scripts/train_trl.py"
    method = "full"            # or "lora" (needs `peft`)
    epochs = 3
    learning_rate = 5e-6
    batch_rows = 128           # packed rows per optimizer step (the effective batch)

The contract (docs/ARCHITECTURE.md, "External trainers"): the run sets
  UCODER_TRAIN_DATA    the SFT folder: part-*.parquet, one packed row each, with columns
                       input_ids, labels (-100 on prompt tokens), position_ids (restarting at 0
                       at each example), offsets (each example's first position), source_ids;
  UCODER_TRAIN_BASE    the model to start from, a Hugging Face safetensors folder;
  UCODER_TRAIN_OUT     the output folder; the trained model goes to $UCODER_TRAIN_OUT/model;
  UCODER_TRAIN_CONFIG  the pipeline's [train] section as JSON;
  UCODER_TRAIN_SEED    the seed.
Exit 0 with a loadable model folder means done. The run hashes the folder into its lineage and
the next iteration's engine loads it (bf16/f16/f32 safetensors alike).

Packed rows are passed to the model padding-free: one sequence per row with its position_ids,
which transformers' flash-attention path (`attn_implementation="flash_attention_2"`,
transformers >= 4.44) turns into per-example attention, so examples in a row never attend to
each other -- the same masking the built-in trainer applies. With an attention
implementation that ignores position_ids, examples would see each other: the script refuses that
unless UCODER_TRL_ALLOW_CROSS_ATTENTION=1.

Requires: torch, transformers, trl, datasets, pyarrow (and peft for LoRA). Not run by the tests.
"""

import glob
import json
import os
import sys


def main() -> int:
    import pyarrow.parquet as pq
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    data = os.environ["UCODER_TRAIN_DATA"]
    base = os.environ["UCODER_TRAIN_BASE"]
    out = os.environ["UCODER_TRAIN_OUT"]
    cfg = json.loads(os.environ.get("UCODER_TRAIN_CONFIG", "{}"))
    seed = int(os.environ.get("UCODER_TRAIN_SEED", "0"))

    parts = sorted(glob.glob(os.path.join(data, "part-*.parquet")))
    if not parts:
        print(f"{data}: no part-*.parquet shards", file=sys.stderr)
        return 2
    rows = []
    for part in parts:
        table = pq.read_table(part, columns=["input_ids", "labels", "position_ids"])
        rows.extend(table.to_pylist())
    dataset = Dataset.from_list(rows)

    cuda = torch.cuda.is_available()
    attn = "flash_attention_2" if cuda else "sdpa"
    if attn != "flash_attention_2" and os.environ.get("UCODER_TRL_ALLOW_CROSS_ATTENTION") != "1":
        print(
            "no flash-attention here: packed examples would attend to each other. Run on a GPU "
            "with flash-attn installed, or set UCODER_TRL_ALLOW_CROSS_ATTENTION=1 to accept it.",
            file=sys.stderr,
        )
        return 2
    dtype = torch.bfloat16 if cuda else torch.float32
    model = AutoModelForCausalLM.from_pretrained(base, torch_dtype=dtype, attn_implementation=attn)
    tokenizer = AutoTokenizer.from_pretrained(base)

    peft_config = None
    if cfg.get("method") == "lora":
        from peft import LoraConfig

        lora = cfg.get("lora", {})
        peft_config = LoraConfig(
            r=lora.get("rank", 16),
            lora_alpha=lora.get("alpha", 32),
            lora_dropout=0.0,
            target_modules=lora.get(
                "targets", ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
            ),
            task_type="CAUSAL_LM",
        )

    per_device = 1
    world = int(os.environ.get("WORLD_SIZE", "1"))
    accumulation = max(1, cfg.get("batch_rows", 128) // (per_device * world))

    def collate(batch):
        # Padding-free: the rows of a micro-batch are concatenated into one sequence; their
        # position_ids (restarting at 0 per example) keep the examples apart.
        ids = [t for r in batch for t in r["input_ids"]]
        labels = []
        for r in batch:
            row = list(r["labels"])
            # The first label of every example is never predicted from the previous one.
            for i, p in enumerate(r["position_ids"]):
                if p == 0:
                    row[i] = -100
            labels.extend(row)
        pos = [p for r in batch for p in r["position_ids"]]
        return {
            "input_ids": torch.tensor([ids]),
            "labels": torch.tensor([labels]),
            "position_ids": torch.tensor([pos]),
        }

    args = SFTConfig(
        output_dir=os.path.join(out, "checkpoints"),
        num_train_epochs=cfg.get("epochs", 3),
        learning_rate=cfg.get("learning_rate", 5e-6),
        lr_scheduler_type="cosine",
        warmup_ratio=cfg.get("warmup_ratio", 0.03),
        weight_decay=cfg.get("weight_decay", 0.0),
        max_grad_norm=cfg.get("max_grad_norm", 1.0) or 1e9,
        adam_beta1=cfg.get("beta1", 0.9),
        adam_beta2=cfg.get("beta2", 0.999),
        adam_epsilon=cfg.get("eps", 1e-8),
        per_device_train_batch_size=per_device,
        gradient_accumulation_steps=accumulation,
        gradient_checkpointing=cfg.get("gradient_checkpointing", True),
        bf16=cuda,
        seed=seed,
        logging_steps=1,
        save_strategy="epoch",
        report_to=[],
        remove_unused_columns=False,
        dataset_kwargs={"skip_prepare_dataset": True},
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=collate,
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    resume = bool(glob.glob(os.path.join(out, "checkpoints", "checkpoint-*")))
    trainer.train(resume_from_checkpoint=resume or None)

    model = trainer.model
    if peft_config is not None:
        model = model.merge_and_unload()
    target = os.path.join(out, "model")
    model.save_pretrained(target, safe_serialization=True)
    tokenizer.save_pretrained(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
