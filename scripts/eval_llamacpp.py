#!/usr/bin/env python3
"""Generate HumanEval completions with llama.cpp (llama-cpp-python) for `ucoder-flow eval --completions`.

The independent-engine check of issue 4: the same GGUF, the same prompts, greedy decoding, scored by
ucoder-flow with the same extraction and sandbox. Two ways to get prompts:

  --prompts FILE     the prompts ucoder-flow rendered (`ucoder-flow eval CONFIG --dump-prompts FILE`):
                     byte-identical prompt text, continued as raw completion (special tokens parsed).
                     This is the comparison mode.
  --humaneval FILE   build the chat message here and render it with llama.cpp's own Jinja chat
                     formatter from the GGUF's `tokenizer.chat_template`. Used to record the extraction
                     fixtures under tests/fixtures/eval/ (the Rust tests check that the message text
                     equals what ucoder-flow builds).

Output: JSONL, one line per (task, sample): task_id, sample_index, prompt, completion,
completion_tokens, logprob_sum, finish_reason, engine, seconds (and messages in --humaneval mode).
A killed run resumes: finished tasks already in --out are skipped.

Example (the lead's comparison):
  ucoder-flow eval pipelines/humaneval.toml --dump-prompts runs/prompts.jsonl
  python3 scripts/eval_llamacpp.py --model $UCODER_FLOW_CACHE/qwen2.5-coder-0.5b-instruct.gguf \
      --prompts runs/prompts.jsonl --out runs/llamacpp-completions.jsonl --threads 2
  ucoder-flow eval pipelines/humaneval.toml --completions runs/llamacpp-completions.jsonl \
      --out runs/humaneval-llamacpp
"""

import argparse
import gzip
import json
import os
import sys
import time

# Must equal ucoder_flow::eval::prompt::CHAT_INSTRUCTION (checked by the Rust fixture tests).
CHAT_INSTRUCTION = (
    "Complete the following Python function. Reply with the complete function "
    "(its signature, the imports it needs and the body) in a single ```python code block."
)


def chat_user_message(problem_prompt: str) -> str:
    """The user message of ucoder_flow::eval::prompt::build(.., PromptStyle::Chat)."""
    return f"{CHAT_INSTRUCTION}\n\n```python\n{problem_prompt.strip(chr(10))}\n```"


def read_jsonl(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as e:
                    raise SystemExit(f"{path}, line {number}: {e}")


def finished(out_path):
    """(task_id, sample_index) pairs already in out_path; a torn last line is dropped."""
    done = set()
    if not os.path.exists(out_path):
        return done
    good = []
    with open(out_path, encoding="utf-8") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                break
            good.append(line if line.endswith("\n") else line + "\n")
            done.add((rec["task_id"], rec["sample_index"]))
    with open(out_path, "w", encoding="utf-8") as f:
        f.writelines(good)
    return done


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="GGUF file")
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompts", help="JSONL from `ucoder-flow eval --dump-prompts`")
    src.add_argument("--humaneval", help="HumanEval.jsonl(.gz): chat prompts rendered by llama.cpp")
    ap.add_argument("--out", required=True, help="completions JSONL (appended; resumes)")
    ap.add_argument("--limit", type=int, default=None, help="first N tasks only")
    ap.add_argument("--tasks", default=None, help="comma-separated task ids (with --humaneval)")
    ap.add_argument("--max-tokens", type=int, default=512, help="with --humaneval (--prompts carries its own)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-ctx", type=int, default=2048)
    ap.add_argument("--logprobs", action="store_true", help="record logprob_sum (needs logits for all tokens)")
    args = ap.parse_args()

    import llama_cpp
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    llm = llama_cpp.Llama(
        model_path=args.model,
        n_ctx=args.n_ctx,
        n_threads=args.threads,
        n_threads_batch=args.threads,
        logits_all=args.logprobs,
        verbose=False,
    )
    engine = f"llama-cpp-python {llama_cpp.__version__} ({os.path.basename(args.model)}, {args.threads} threads)"

    jobs = []  # (task_id, prompt, max_tokens, temperature, stop, n, seed, messages)
    if args.prompts:
        for p in read_jsonl(args.prompts):
            jobs.append((p["task_id"], p["prompt"], p["max_tokens"], p["temperature"], p["stop"], p["n"], p["seed"], None))
    else:
        template = llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise SystemExit(f"{args.model}: no tokenizer.chat_template in the GGUF metadata")
        vocab = llm._model
        formatter = Jinja2ChatFormatter(
            template=template,
            eos_token=llm.detokenize([vocab.token_eos()], special=True).decode("utf-8", "replace"),
            bos_token=llm.detokenize([vocab.token_bos()], special=True).decode("utf-8", "replace"),
            add_generation_prompt=True,
        )
        wanted = set(args.tasks.split(",")) if args.tasks else None
        for p in read_jsonl(args.humaneval):
            if wanted is not None and p["task_id"] not in wanted:
                continue
            messages = [{"role": "user", "content": chat_user_message(p["prompt"])}]
            prompt = formatter(messages=messages).prompt
            jobs.append((p["task_id"], prompt, args.max_tokens, 0.0, [], 1, 0, messages))
    if args.limit is not None:
        jobs = jobs[: args.limit]

    done = finished(args.out)
    started = time.time()
    tokens = 0
    with open(args.out, "a", encoding="utf-8") as out:
        for number, (task_id, prompt, max_tokens, temperature, stop, n, seed, messages) in enumerate(jobs, 1):
            for index in range(n):
                if (task_id, index) in done:
                    continue
                t0 = time.time()
                result = llm.create_completion(
                    prompt,
                    max_tokens=max_tokens,
                    temperature=temperature,
                    top_p=1.0,
                    top_k=0 if temperature == 0 else 40,
                    min_p=0.0,
                    repeat_penalty=1.0,
                    stop=stop or None,
                    seed=(seed + index) % (2**32),
                    logprobs=1 if args.logprobs else None,
                )
                choice = result["choices"][0]
                logprob_sum = None
                if args.logprobs and choice.get("logprobs"):
                    logprob_sum = float(sum(x for x in choice["logprobs"]["token_logprobs"] if x is not None))
                rec = {
                    "task_id": task_id,
                    "sample_index": index,
                    "prompt": prompt,
                    "completion": choice["text"],
                    "completion_tokens": result["usage"]["completion_tokens"],
                    "logprob_sum": logprob_sum,
                    "finish_reason": choice.get("finish_reason") or "",
                    "engine": engine,
                    "seconds": round(time.time() - t0, 3),
                }
                if messages is not None:
                    rec["messages"] = messages
                tokens += rec["completion_tokens"]
                out.write(json.dumps(rec, ensure_ascii=False) + "\n")
                out.flush()
            elapsed = time.time() - started
            print(
                f"\r[{number}/{len(jobs)}] {task_id}  {tokens} tokens  {elapsed:.0f}s  "
                f"{tokens / max(elapsed, 1e-9):.1f} tok/s",
                end="",
                file=sys.stderr,
                flush=True,
            )
        os.fsync(out.fileno())
    print(f"\nwrote {args.out} in {time.time() - started:.1f}s", file=sys.stderr)


if __name__ == "__main__":
    main()
