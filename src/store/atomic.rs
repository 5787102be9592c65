//! Atomic single-file writes: a hidden temp file in the destination's folder, written, fsynced,
//! renamed over the destination, then the folder fsynced. Readers see the old file or the new one,
//! never a prefix.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::StoreError;

/// The temp-file path used while `dest` is being written: hidden, same folder, unique per process.
pub(crate) fn temp_path_for(dest: &Path) -> PathBuf {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dest.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// Whether `name` is a temp file left by [`write_atomic`] or a stage writer (never a result).
pub(crate) fn is_temp_name(name: &str) -> bool {
    name.starts_with('.') && name.contains(".tmp-")
}

/// Fsyncs a directory so that a rename inside it is durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(StoreError::io(dir))
}

/// The folder that holds `dest` (`.` for a bare name), created if missing.
fn created_parent(dest: &Path) -> Result<PathBuf, StoreError> {
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&dir).map_err(StoreError::io(&dir))?;
    Ok(dir)
}

/// Runs `fill` on a fresh temp file next to `dest`, then fsyncs and renames it over `dest`.
/// On any error (of `fill` too: a download whose checksum does not match, ...) the temp file is
/// removed and `dest` is untouched.
pub fn write_atomic_with<T, E: From<StoreError>>(
    dest: &Path,
    fill: impl FnOnce(&mut File) -> Result<T, E>,
) -> Result<T, E> {
    let dir = created_parent(dest)?;
    let tmp = temp_path_for(dest);
    let result = (|| {
        let mut file = File::create(&tmp).map_err(StoreError::io(&tmp))?;
        let value = fill(&mut file)?;
        file.sync_all().map_err(StoreError::io(&tmp))?;
        drop(file);
        fs::rename(&tmp, dest).map_err(StoreError::io(dest))?;
        Ok(value)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
        return result;
    }
    sync_dir(&dir)?;
    result
}

/// Writes `bytes` to `dest` atomically.
pub fn write_atomic(dest: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    write_atomic_with(dest, |file| {
        file.write_all(bytes).map_err(StoreError::io(dest))
    })
}

/// Writes `value` as pretty JSON (with a trailing newline) to `dest` atomically.
pub fn write_json_atomic<T: Serialize + ?Sized>(dest: &Path, value: &T) -> Result<(), StoreError> {
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|source| StoreError::Json {
        path: dest.to_path_buf(),
        source,
    })?;
    bytes.push(b'\n');
    write_atomic(dest, &bytes)
}

/// Replaces the folder `dest` as a whole: `build` fills a fresh hidden temp folder next to it, which
/// is then renamed over `dest` (an older `dest` is removed first). A crash leaves the old folder
/// or none, plus at most a temp folder that readers never look at; a failed `build` leaves
/// `dest` as it was.
pub fn replace_dir<T, E: From<StoreError>>(
    dest: &Path,
    build: impl FnOnce(&Path) -> Result<T, E>,
) -> Result<T, E> {
    let parent = created_parent(dest)?;
    let building = temp_path_for(dest);
    remove_dir(&building)?;
    fs::create_dir_all(&building).map_err(StoreError::io(&building))?;
    let value = match build(&building) {
        Ok(value) => value,
        Err(e) => {
            let _ = fs::remove_dir_all(&building);
            return Err(e);
        }
    };
    remove_dir(dest)?;
    fs::rename(&building, dest).map_err(StoreError::io(dest))?;
    sync_dir(&parent)?;
    Ok(value)
}

/// Removes the folder `dir` and everything in it, if it exists.
pub fn remove_dir(dir: &Path) -> Result<(), StoreError> {
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(StoreError::io(dir)(e)),
        _ => Ok(()),
    }
}

/// Reads a JSON file written by [`write_json_atomic`]; `Ok(None)` when it does not exist.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, StoreError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StoreError::io(path)(e)),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| StoreError::Json {
            path: path.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_a_folder_whole() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("table");
        fs::create_dir_all(&dest).unwrap();
        fs::write(dest.join("old"), b"old").unwrap();
        let n = replace_dir(&dest, |building| {
            fs::write(building.join("new"), b"new").unwrap();
            Ok::<_, StoreError>(1)
        })
        .unwrap();
        assert_eq!(n, 1);
        assert!(!dest.join("old").exists());
        assert_eq!(fs::read(dest.join("new")).unwrap(), b"new");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(names.len(), 1, "no temp folder is left");
        remove_dir(&dest).unwrap();
        remove_dir(&dest).unwrap();
        assert!(!dest.exists());
    }

    #[test]
    fn replaces_atomically_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("summary.json");
        write_json_atomic(&dest, &serde_json::json!({"a": 1})).unwrap();
        write_json_atomic(&dest, &serde_json::json!({"a": 2})).unwrap();
        let back: serde_json::Value = read_json(&dest).unwrap().unwrap();
        assert_eq!(back["a"], 2);
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("summary.json")]);
    }

    #[test]
    fn failed_fill_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("x.json");
        write_atomic(&dest, b"old").unwrap();
        let err = write_atomic_with::<(), StoreError>(&dest, |f| {
            f.write_all(b"half").unwrap();
            Err::<(), _>(StoreError::io(&dest)(std::io::Error::other(
                "simulated failure",
            )))
        });
        assert!(err.is_err());
        assert_eq!(fs::read(&dest).unwrap(), b"old");
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "temp file removed"
        );
    }

    #[test]
    fn missing_json_is_none_and_bad_json_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.json");
        assert!(read_json::<serde_json::Value>(&path).unwrap().is_none());
        fs::write(&path, "{not json").unwrap();
        let err = read_json::<serde_json::Value>(&path)
            .unwrap_err()
            .to_string();
        assert!(err.contains("m.json"), "{err}");
    }

    #[test]
    fn temp_names_are_recognised() {
        let tmp = temp_path_for(Path::new("/x/part-0000-000001.parquet"));
        assert!(is_temp_name(&tmp.file_name().unwrap().to_string_lossy()));
        assert!(!is_temp_name("part-0000-000001.parquet"));
    }
}
