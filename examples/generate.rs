//! Generate with the in-process engine: load the default model (fetched into the cache on first
//! use), render a chat prompt with the model's own template and sample three completions.
//!
//! ```sh
//! cargo run --release --example generate -- "Write a Python function that reverses a string."
//! ```

use ucoder_flow::llm::{ChatTurn, Engine, EngineOptions, SamplerSettings};
use ucoder_flow::{fetch, models};

fn main() -> anyhow::Result<()> {
    let question = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "Write a Python function that reverses a string.".into());
    let source = models::resolve(
        models::DEFAULT_MODEL,
        &fetch::cache_dir(),
        &ucoder_flow::progress::Notes(|line: &str| eprintln!("{line}")),
    )?;
    let mut engine = Engine::load(&source, &EngineOptions::default())?;
    let prompt = engine.chat_prompt(&[ChatTurn::new("user", question)])?;
    let settings = SamplerSettings {
        temperature: 0.8,
        max_tokens: 128,
        seed: 7,
        ..SamplerSettings::default()
    };
    for (i, sample) in engine.generate_n(&prompt, 3, &settings)?.iter().enumerate() {
        println!(
            "--- sample {i} ({} tokens, perplexity {:.2}):\n{}",
            sample.token_ids.len(),
            sample.perplexity().unwrap_or(f64::NAN),
            sample.text
        );
    }
    Ok(())
}
