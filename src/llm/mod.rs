//! The in-process LLM engine (candle): GGUF loading, tokenizer, chat template, sampling.
