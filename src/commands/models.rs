//! `ucoder-flow models list|fetch|export`: the model registry, the cache and GGUF → safetensors.

use std::path::PathBuf;

use super::progress::Renderer;
use crate::fetch;
use crate::llm::export::export_safetensors;
use crate::models::{self, ModelSource};
use crate::progress::Reporter;

/// `ucoder-flow models list`: every registry model and whether it is cached (one line each, or
/// with `json` one JSON array).
pub fn list(json: bool) -> anyhow::Result<()> {
    let cache = fetch::cache_dir();
    let mut entries = Vec::new();
    for m in models::REGISTRY {
        let path = cache.join(m.artifact.file_name);
        let cached = path.is_file();
        if json {
            entries.push(serde_json::json!({
                "name": m.name,
                "description": m.description,
                "cached": cached,
                "path": path,
                "bytes": m.artifact.size,
                "sha256": m.artifact.sha256,
            }));
        } else {
            println!(
                "{:<30} {:<8} {}",
                m.name,
                if cached { "cached" } else { "-" },
                m.description
            );
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
    }
    Ok(())
}

/// `ucoder-flow models fetch NAME`: fetches into the cache and prints the path.
pub fn fetch(name: &str, reporter: &dyn Reporter) -> anyhow::Result<()> {
    let model =
        models::lookup(name).ok_or_else(|| models::ModelError::Unknown(name.to_string()))?;
    let path = fetch::ensure(&fetch::cache_dir(), &model.artifact, reporter)?;
    println!("{}", path.display());
    Ok(())
}

/// Export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// Hugging Face safetensors + config.json + tokenizer.json + tokenizer_config.json.
    Safetensors,
}

/// Arguments of `ucoder-flow models export`.
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// Output format.
    #[arg(long, value_enum, default_value = "safetensors")]
    pub format: ExportFormat,
    /// Registry name or path of a GGUF file.
    pub model: String,
    /// The directory to create.
    pub dir: PathBuf,
}

/// `ucoder-flow models export`.
pub fn export(args: &ExportArgs) -> anyhow::Result<()> {
    let notes = Renderer::notes("models");
    let source = models::resolve(&args.model, &fetch::cache_dir(), &notes)?;
    let ModelSource::Gguf(path) = &source else {
        anyhow::bail!(
            "{}: is a safetensors directory already; export reads GGUF models",
            source.path().display()
        );
    };
    match args.format {
        ExportFormat::Safetensors => export_safetensors(path, &args.dir)?,
    }
    notes.note(&format!(
        "exported {} to {} ({:?})",
        path.display(),
        args.dir.display(),
        args.format
    ));
    Ok(())
}
