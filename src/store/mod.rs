//! The artifact store: every result a job keeps lives in files that are either complete or absent.
//!
//! It owns every atomic write, folder replacement and manifest claim of the workspace
//! (docs/ARCHITECTURE.md, "Artifacts and the store"); nothing else renames temp files into place.
//!
//! A *stage* is a folder of Parquet parts named `part-<worker>-<seq>.parquet`. Each part is
//! written to a hidden temp file in the same folder, closed, fsynced and renamed, and then the
//! folder is fsynced, so a part that exists under its final name is complete; a crash leaves at
//! most a temp file, which readers never look at. Every part carries its schema version in the
//! Parquet key-value metadata; readers accept older parts (schema changes only add nullable
//! columns, which read back as nulls) and refuse newer ones with a clear error.
//!
//! - [`atomic`]: write-temp-fsync-rename for single files (JSON manifests and summaries, model
//!   downloads, exports) and whole-folder replacement (result tables, SFT shards, exports).
//! - [`record`]: the [`Record`] trait that maps a row type to an Arrow schema, and column helpers.
//! - [`stage`]: [`StageDir`] (untyped record batches) and [`Stage`] (typed rows) over one folder.
//! - [`manifest`]: the run's `manifest.json` and the claim of a run folder (resume or refuse).
//! - [`flat`]: the `flat_record!` macro for row types made only of scalar columns.
//! - [`lock`]: `run.lock`, which process is writing a run folder.

pub mod atomic;
pub mod flat;
pub mod lock;
pub mod manifest;
pub mod record;
pub mod stage;

use std::path::PathBuf;

pub use atomic::{
    read_json, remove_dir, replace_dir, write_atomic, write_atomic_with, write_json_atomic,
};
pub use manifest::{Claim, Manifest};
pub use record::Record;
pub use stage::{Stage, StageDir};

/// The Parquet key-value metadata key holding a part's schema version.
pub const SCHEMA_VERSION_KEY: &str = "ucoder_flow.schema_version";
/// The Parquet key-value metadata key naming the record type a part holds.
pub const RECORD_KIND_KEY: &str = "ucoder_flow.record";

/// Why the store could not write or read an artifact.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: Parquet: {source}")]
    Parquet {
        path: PathBuf,
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// A committed part that does not read back (a disk that filled up, a copy cut short).
    #[error(
        "{path}: a damaged part ({source}); delete this file and run the same command again: \
         the work it held is redone"
    )]
    DamagedPart {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{path}: Arrow: {source}")]
    Arrow {
        path: PathBuf,
        #[source]
        source: arrow::error::ArrowError,
    },
    #[error("{path}: JSON: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "{path}: holds `{found}` records, this stage holds `{expected}`; the folder mixes stages (move the file away)"
    )]
    WrongRecord {
        path: PathBuf,
        expected: String,
        found: String,
    },
    #[error("{path}: no `{key}` in the Parquet metadata: not a part written by ucoder-flow", key = SCHEMA_VERSION_KEY)]
    NoSchemaVersion { path: PathBuf },
    #[error(
        "{path}: schema version {found} is newer than this build reads ({supported}); upgrade ucoder-flow or use another output folder"
    )]
    NewerSchema {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error(
        "{dir} holds results made with different settings ({changed}); use another output folder (`name`, --runs-dir or --out), or delete the folder to start over"
    )]
    SettingsChanged { dir: PathBuf, changed: String },
    #[error("{path}: column `{column}`: {problem}")]
    Column {
        path: PathBuf,
        column: String,
        problem: String,
    },
}

/// Time since the Unix epoch (zero on a clock set before it): the stamps and unique names of
/// what the store and the runs write (lock holders, segment files, announcements, scratch
/// folders).
pub fn unix_time() -> std::time::Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}

impl StoreError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> StoreError {
        let path = path.into();
        move |source| StoreError::Io { path, source }
    }
}
