//! Supervised fine-tuning data: the sink that turns selected (problem, solution) pairs into
//! tokenized, prompt-masked, packed training sequences (docs/ARCHITECTURE.md, "SFT").
//!
//! - [`pack`]: label masking and sequence packing over token ids, independent of any tokenizer.
//! - [`sink`]: chat-template rendering, tokenization and the Parquet shards + messages JSONL.

pub mod pack;
pub mod sink;
