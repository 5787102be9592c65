//! `manifest.json`: what a run folder holds and under which settings it was produced, so that a
//! resumed run can refuse to mix results of a different configuration or model into it.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{StoreError, read_json, write_json_atomic};

/// The manifest's file name inside a run folder.
pub const MANIFEST_FILE: &str = "manifest.json";

/// A run folder's manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// What kind of job wrote the folder (`eval`, `ipc`, ...).
    pub job: String,
    /// The ucoder-flow version that created the folder.
    pub created_by: String,
    /// Digest of the settings that determine the results (see [`digest_json`]).
    pub config_digest: String,
    /// The settings themselves, for people reading the folder.
    pub config: serde_json::Value,
    /// What identifies the model (registry name or path, and its size/digest when known).
    pub model: String,
    /// Per stage: free-form state (`{"complete": true}`, counts, ...).
    #[serde(default)]
    pub stages: BTreeMap<String, serde_json::Value>,
}

impl Manifest {
    /// Reads `<dir>/manifest.json`; `Ok(None)` when the folder has none yet.
    pub fn load(dir: &Path) -> Result<Option<Manifest>, StoreError> {
        read_json(&dir.join(MANIFEST_FILE))
    }

    /// Writes `<dir>/manifest.json` atomically.
    pub fn save(&self, dir: &Path) -> Result<(), StoreError> {
        write_json_atomic(&dir.join(MANIFEST_FILE), self)
    }
}

/// What [`Manifest::claim`] found in a run folder.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// The folder had no manifest; one was written for these settings.
    Created(Manifest),
    /// The folder was made with the same settings: resume it.
    Resumed(Manifest),
}

impl Claim {
    /// The folder's manifest.
    pub fn manifest(&self) -> &Manifest {
        match self {
            Claim::Created(m) | Claim::Resumed(m) => m,
        }
    }

    /// Whether the folder existed with the same settings.
    pub fn resumed(&self) -> bool {
        matches!(self, Claim::Resumed(_))
    }
}

impl Manifest {
    /// Claims `dir` for a `job` whose results are determined by `config` and `model`: a folder
    /// without a manifest gets one; a folder made with the same settings is resumed; a folder
    /// made with other settings (or another model) is refused, naming what changed, so results
    /// of two configurations are never mixed.
    pub fn claim(
        dir: &Path,
        job: &str,
        config: serde_json::Value,
        model: String,
    ) -> Result<Claim, StoreError> {
        let digest = digest_json(&config);
        let Some(existing) = Manifest::inspect(dir, &config, &model)? else {
            let manifest = Manifest {
                job: job.into(),
                created_by: format!("ucoder-flow {}", env!("CARGO_PKG_VERSION")),
                config_digest: digest,
                config,
                model,
                stages: BTreeMap::new(),
            };
            manifest.save(dir)?;
            return Ok(Claim::Created(manifest));
        };
        Ok(Claim::Resumed(existing))
    }

    /// What claiming `dir` for `config` and `model` would find, without writing anything: `None`
    /// for a new folder, the manifest of the run it would resume, or
    /// [`StoreError::SettingsChanged`] naming what differs.
    pub fn inspect(
        dir: &Path,
        config: &serde_json::Value,
        model: &str,
    ) -> Result<Option<Manifest>, StoreError> {
        let Some(existing) = Manifest::load(dir)? else {
            return Ok(None);
        };
        if existing.config_digest == digest_json(config) && existing.model == model {
            return Ok(Some(existing));
        }
        let mut changed: Vec<String> = Vec::new();
        if existing.model != model {
            changed.push(format!("model: {} → {model}", existing.model));
        }
        if let (Some(old), Some(new)) = (existing.config.as_object(), config.as_object()) {
            for (key, value) in new {
                if old.get(key) != Some(value) {
                    changed.push(format!("[{key}]"));
                }
            }
            for key in old.keys().filter(|k| !new.contains_key(*k)) {
                changed.push(format!("[{key}]"));
            }
        } else if existing.config != *config {
            changed.push("settings".into());
        }
        Err(StoreError::SettingsChanged {
            dir: dir.to_path_buf(),
            changed: changed.join(", "),
        })
    }
}

/// Hex SHA-256 of the canonical JSON of `value` (serde_json with sorted object keys).
pub fn digest_json(value: &serde_json::Value) -> String {
    fn canonical(v: &serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(map) => {
                let sorted: BTreeMap<_, _> =
                    map.iter().map(|(k, v)| (k.clone(), canonical(v))).collect();
                serde_json::Value::Object(sorted.into_iter().collect())
            }
            serde_json::Value::Array(items) => {
                serde_json::Value::Array(items.iter().map(canonical).collect())
            }
            other => other.clone(),
        }
    }
    let bytes = serde_json::to_vec(&canonical(value)).expect("JSON values always serialize");
    Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_load_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Manifest::load(dir.path()).unwrap().is_none());
        let config = serde_json::json!({"b": 1, "a": [1, 2]});
        let mut m = Manifest {
            job: "eval".into(),
            created_by: env!("CARGO_PKG_VERSION").into(),
            config_digest: digest_json(&config),
            config,
            model: "m.gguf".into(),
            stages: BTreeMap::new(),
        };
        m.stages
            .insert("samples".into(), serde_json::json!({"complete": false}));
        m.save(dir.path()).unwrap();
        assert_eq!(Manifest::load(dir.path()).unwrap(), Some(m));
    }

    #[test]
    fn claim_creates_resumes_and_refuses_other_settings() {
        let dir = tempfile::tempdir().unwrap();
        let config = serde_json::json!({"n": 1, "seed": 7});
        let first = Manifest::claim(dir.path(), "ipc", config.clone(), "m".into()).unwrap();
        assert!(!first.resumed());
        let again = Manifest::claim(dir.path(), "ipc", config, "m".into()).unwrap();
        assert!(again.resumed());
        assert_eq!(again.manifest(), first.manifest());
        let other = serde_json::json!({"n": 2, "seed": 7});
        let err = Manifest::claim(dir.path(), "ipc", other, "m2".into()).unwrap_err();
        assert!(
            matches!(&err, StoreError::SettingsChanged { changed, .. } if changed == "model: m → m2, [n]"),
            "{err}"
        );
    }

    #[test]
    fn digest_ignores_key_order_but_not_values() {
        let a = serde_json::json!({"x": 1, "y": {"p": true, "q": "s"}});
        let b = serde_json::json!({"y": {"q": "s", "p": true}, "x": 1});
        let c = serde_json::json!({"y": {"q": "s", "p": false}, "x": 1});
        assert_eq!(digest_json(&a), digest_json(&b));
        assert_ne!(digest_json(&a), digest_json(&c));
        assert_eq!(digest_json(&a).len(), 64);
    }
}
