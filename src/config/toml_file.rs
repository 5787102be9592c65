//! Reading a settings file: TOML text deserialized into a settings type, then validated, with
//! one error type that names the file and, for a bad value, the field. Shared by the pipeline
//! files ([`crate::config`]) and the eval files ([`crate::eval::config`]); the settings types
//! deny unknown fields themselves, so a typo is a parse error naming the key.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// Why a settings file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TomlFileError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Not TOML, or not the settings' shape (unknown key, missing table, wrong type).
    #[error("{path}: {}", source.to_string().trim_end())]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    /// A value out of its range; `field` is the dotted TOML name.
    #[error("{path}: field `{field}`: {why}")]
    Invalid {
        path: PathBuf,
        field: &'static str,
        why: String,
    },
}

/// One wrong field: its dotted TOML name and what is wrong with the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub field: &'static str,
    pub why: String,
}

impl Invalid {
    /// `Err` for `field`, ready to return from [`Validate::validate`].
    pub fn err(field: &'static str, why: impl Into<String>) -> Result<(), Invalid> {
        Err(Invalid {
            field,
            why: why.into(),
        })
    }
}

/// Settings that check their values after deserializing.
pub trait Validate {
    /// The first wrong field, if any.
    fn validate(&self) -> Result<(), Invalid>;
}

/// Reads, deserializes and validates the settings file at `path`.
pub fn load<T: DeserializeOwned + Validate>(path: &Path) -> Result<T, TomlFileError> {
    parse(&read(path)?, path)
}

/// Deserializes and validates TOML `text`; `path` names it in errors.
pub fn parse<T: DeserializeOwned + Validate>(text: &str, path: &Path) -> Result<T, TomlFileError> {
    let value = deserialize(text, path)?;
    check(&value, path)?;
    Ok(value)
}

/// The text of `path`.
pub fn read(path: &Path) -> Result<String, TomlFileError> {
    std::fs::read_to_string(path).map_err(|source| TomlFileError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Deserializes TOML `text` without validating (for settings adjusted before [`check`]).
pub fn deserialize<T: DeserializeOwned>(text: &str, path: &Path) -> Result<T, TomlFileError> {
    toml::from_str(text).map_err(|source| TomlFileError::Parse {
        path: path.to_path_buf(),
        source,
    })
}

/// Validates `value`, naming `path` in the error.
pub fn check<T: Validate>(value: &T, path: &Path) -> Result<(), TomlFileError> {
    value
        .validate()
        .map_err(|Invalid { field, why }| TomlFileError::Invalid {
            path: path.to_path_buf(),
            field,
            why,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Settings {
        size: u32,
    }

    impl Validate for Settings {
        fn validate(&self) -> Result<(), Invalid> {
            if self.size == 0 {
                return Invalid::err("size", "must be at least 1");
            }
            Ok(())
        }
    }

    #[test]
    fn every_error_names_the_file_and_what_is_wrong() {
        let path = Path::new("dir/s.toml");
        assert_eq!(parse::<Settings>("size = 3", path).unwrap().size, 3);
        let cases = [
            ("size = 0", "dir/s.toml: field `size`: must be at least 1"),
            ("size = 1\nsise = 2", "unknown field `sise`"),
            ("size = \"big\"", "invalid type"),
            ("size = ", "dir/s.toml: TOML parse error"),
        ];
        for (text, expected) in cases {
            let err = parse::<Settings>(text, path).unwrap_err().to_string();
            assert!(
                err.starts_with("dir/s.toml: ") && err.contains(expected),
                "{text:?}: {err}"
            );
            assert_eq!(err, err.trim_end(), "no trailing newline from toml");
        }
        let missing = Path::new("/nonexistent/s.toml");
        let err = load::<Settings>(missing).unwrap_err();
        assert!(matches!(&err, TomlFileError::Io { path, .. } if path == missing));
        assert!(
            err.to_string().starts_with("/nonexistent/s.toml: "),
            "{err}"
        );
    }
}
