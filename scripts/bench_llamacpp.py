#!/usr/bin/env python3
"""llama.cpp side of `ucoder-flow bench llm --compare-llamacpp`.

Runs the same measurements as the candle engine's benchmark through llama-cpp-python's low-level
API, on the same prompt token ids: prefill tok/s, single-stream decode tok/s, and aggregate decode
tok/s of dense sampling (one prompt prefilled once, its KV copied to n sequences with
llama_memory_seq_cp, then n sequences decoded as one batch per step). Median of --repeats runs.

Input: a JSON object on stdin: {"model", "threads", "prompt_ids", "decode_tokens", "dense_tokens",
"ns", "repeats"}. Output: one JSON object on stdout with the figures.
Tokens are picked greedily (argmax); end-of-sequence is ignored so every run has the same length.
"""
import ctypes
import json
import statistics
import sys
import time

import numpy as np
import llama_cpp as L


def main():
    cfg = json.load(sys.stdin)
    prompt = cfg["prompt_ids"]
    threads = int(cfg["threads"])
    ns = [int(n) for n in cfg["ns"]]
    repeats = int(cfg.get("repeats", 3))
    decode_tokens = int(cfg["decode_tokens"])
    dense_tokens = int(cfg["dense_tokens"])

    L.llama_backend_init()
    t0 = time.perf_counter()
    mp = L.llama_model_default_params()
    model = L.llama_model_load_from_file(cfg["model"].encode(), mp)
    if not model:
        sys.exit(f"llama.cpp could not load {cfg['model']}")
    cp = L.llama_context_default_params()
    max_n = max(ns + [1])
    cp.n_ctx = max(4096, len(prompt) + max_n * (dense_tokens + 1) + decode_tokens + 64)
    cp.n_batch = max(512, len(prompt))
    cp.n_ubatch = max(512, len(prompt))
    cp.n_seq_max = max_n
    cp.n_threads = threads
    cp.n_threads_batch = threads
    if hasattr(cp, "kv_unified"):
        cp.kv_unified = True
    ctx = L.llama_init_from_model(model, cp)
    if not ctx:
        sys.exit("llama.cpp could not create a context")
    load_s = time.perf_counter() - t0
    vocab = L.llama_model_get_vocab(model)
    n_vocab = L.llama_vocab_n_tokens(vocab)
    mem = L.llama_get_memory(ctx)
    batch = L.llama_batch_init(max(len(prompt), max_n), 0, 1)

    def fill(entries):
        """entries: list of (token, pos, seq, want_logits)."""
        batch.n_tokens = len(entries)
        for i, (tok, pos, seq, logits) in enumerate(entries):
            batch.token[i] = tok
            batch.pos[i] = pos
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seq
            batch.logits[i] = 1 if logits else 0

    def decode(entries):
        fill(entries)
        rc = L.llama_decode(ctx, batch)
        if rc != 0:
            sys.exit(f"llama_decode failed with {rc}")

    def argmax(i):
        ptr = L.llama_get_logits_ith(ctx, i)
        return int(np.argmax(np.ctypeslib.as_array(ptr, shape=(n_vocab,))))

    def prefill():
        L.llama_memory_clear(mem, True)
        entries = [(t, p, 0, p == len(prompt) - 1) for p, t in enumerate(prompt)]
        t = time.perf_counter()
        decode(entries)
        return time.perf_counter() - t

    prefill_rates, single_rates = [], []
    for _ in range(repeats):
        dt = prefill()
        prefill_rates.append(len(prompt) / dt)
        tok = argmax(len(prompt) - 1)
        t = time.perf_counter()
        for step in range(decode_tokens):
            decode([(tok, len(prompt) + step, 0, True)])
            tok = argmax(0)
        single_rates.append(decode_tokens / (time.perf_counter() - t))

    dense = {}
    for n in ns:
        rates = []
        for _ in range(repeats):
            prefill()
            for s in range(1, n):
                L.llama_memory_seq_cp(mem, 0, s, -1, -1)
            first = argmax(len(prompt) - 1)
            toks = [first] * n
            t = time.perf_counter()
            for step in range(dense_tokens):
                decode([(toks[s], len(prompt) + step, s, True) for s in range(n)])
                toks = [argmax(s) for s in range(n)]
            rates.append(n * dense_tokens / (time.perf_counter() - t))
        dense[str(n)] = statistics.median(rates)

    L.llama_batch_free(batch)
    L.llama_free(ctx)
    L.llama_model_free(model)
    json.dump(
        {
            "engine": "llama.cpp (llama-cpp-python " + L.__version__ + ")",
            "threads": threads,
            "load_s": load_s,
            "prompt_tokens": len(prompt),
            "prefill_tok_s": statistics.median(prefill_rates),
            "decode_tok_s": statistics.median(single_rates),
            "dense_tok_s": dense,
        },
        sys.stdout,
    )
    print()


if __name__ == "__main__":
    main()
