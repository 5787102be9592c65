# Reads an iteration folder's tables with the tools users read them with and prints, per tool,
# the id columns as they came back (JSON on stdout). The Rust test compares them with the rows
# ucoder-flow itself reads: an id that changed anywhere (float64, float, truncation) shows there.
#
# usage: read_tables.py ITER_DIR
import json
import os
import sys

import pandas as pd
import polars as pl

it = sys.argv[1]
ID_COLUMNS = {
    "selections": ["problem_id", "candidate_id", "cluster"],
    "clusters": ["problem_id", "signature", "members"],
    "rejections": ["problem_id"],
    "problem_set": ["problem_id"],
    "test_cases": ["problem_id", "test_id"],
    "executions": ["problem_id", "candidate_id", "test_id", "output_hash"],
    "candidates": ["key", "problem_id", "candidate_id"],
}


def plain(v):
    """A value as JSON: pandas' missing values become null, anything else is kept as it is
    (a float where an id should be stays a float, so the comparison fails)."""
    if v is None:
        return None
    if isinstance(v, (list, tuple)) or (hasattr(v, "tolist") and not hasattr(v, "item")) or getattr(v, "ndim", 0) == 1:
        return [plain(x) for x in v]
    if isinstance(v, float) and v != v:
        return None
    if hasattr(v, "item"):
        v = v.item()
    return v


def rows(columns_values):
    return [list(r) for r in zip(*columns_values)]


out = {"pandas": {}, "polars": {}, "datasets": {}}
for table, columns in ID_COLUMNS.items():
    folder = os.path.join(it, table)
    df = pd.read_parquet(folder)
    out["pandas"][table] = rows([[plain(v) for v in df[c].tolist()] for c in columns])
    pf = pl.read_parquet(os.path.join(folder, "*.parquet"))
    out["polars"][table] = rows([pf[c].to_list() for c in columns])
sft = pd.read_parquet(os.path.join(it, "sft"))
out["pandas"]["sft"] = [[[plain(v) for v in ids]] for ids in sft["problem_ids"]]
messages = pd.read_json(os.path.join(it, "sft_messages", "messages.jsonl"), lines=True, dtype=False)
out["pandas"]["sft_messages"] = [[plain(v)] for v in messages["problem_id"]]
out["polars"]["sft"] = [[ids] for ids in pl.read_parquet(os.path.join(it, "sft", "*.parquet"))["problem_ids"].to_list()]
out["polars"]["sft_messages"] = [
    [v] for v in pl.read_ndjson(os.path.join(it, "sft_messages", "messages.jsonl"))["problem_id"].to_list()
]

# HF datasets, offline, through the folder's dataset card (one config per table; the default is
# the SFT shards).
from datasets import load_dataset  # noqa: E402

out["datasets"]["sft"] = [[ids] for ids in load_dataset(it, split="train")["problem_ids"]]
for table, columns in ID_COLUMNS.items():
    ds = load_dataset(it, table, split="train")
    out["datasets"][table] = rows([ds[c] for c in columns])
chat = load_dataset(os.path.join(it, "sft_messages"), split="train")
out["datasets"]["sft_messages"] = [[v] for v in chat["problem_id"]]
json.dump(out, sys.stdout)
