//! Byte-level BPE tokenizer built from GGUF metadata (`tokenizer.ggml.*`) or a tokenizer.json.
