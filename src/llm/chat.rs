//! The model's own chat template, `tokenizer.chat_template`, rendered with minijinja.
