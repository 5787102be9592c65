//! `<run>/run.lock`: which process is writing a run folder. The writer holds an exclusive
//! `flock` on the file for as long as it runs, and the file says who it is (pid, host, start);
//! the kernel drops the lock when the process ends, however it ends, so a killed run never
//! leaves a folder looking busy. A second writer is refused while the first holds it, and
//! `ucoder-flow status` asks the lock, not the pid, whether the run is alive.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::StoreError;

/// The lock file's name inside a run folder.
pub const LOCK_FILE: &str = "run.lock";

/// Who holds (or last held) a run folder's lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub pid: u32,
    pub host: String,
    /// Seconds since the Unix epoch when it took the lock.
    pub since_unix_s: u64,
    /// The command line it runs.
    pub command: String,
}

/// The held lock of a run folder; released when dropped (or when the process ends).
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

/// Why a run folder's lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "{dir} is being written by process {pid} on {host} (`{command}`); wait for it to end or stop it, then run again",
        pid = holder.pid, host = holder.host, command = holder.command
    )]
    Busy { dir: PathBuf, holder: Holder },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl RunLock {
    /// Takes `<dir>/run.lock` for this process, or says who holds it.
    pub fn acquire(dir: &Path) -> Result<RunLock, LockError> {
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(StoreError::io(&path))?;
        if !try_flock(&file, libc::LOCK_EX) {
            let holder = read_holder(&path)?.unwrap_or_else(|| Holder {
                pid: 0,
                host: "an unknown host".into(),
                since_unix_s: 0,
                command: "unknown".into(),
            });
            return Err(LockError::Busy {
                dir: dir.to_path_buf(),
                holder,
            });
        }
        let holder = Holder {
            pid: std::process::id(),
            host: host_name(),
            since_unix_s: super::unix_time().as_secs(),
            command: std::env::args().collect::<Vec<_>>().join(" "),
        };
        let text = serde_json::to_string(&holder).expect("a holder serializes");
        file.set_len(0)
            .and_then(|()| file.write_all(text.as_bytes()))
            .and_then(|()| file.flush())
            .map_err(StoreError::io(&path))?;
        Ok(RunLock { _file: file })
    }

    /// Who holds `<dir>/run.lock` now; `None` when nobody does (no run is writing the folder).
    pub fn holder(dir: &Path) -> Result<Option<Holder>, StoreError> {
        let path = dir.join(LOCK_FILE);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::Io { path, source: e }),
        };
        if try_flock(&file, libc::LOCK_SH) {
            return Ok(None);
        }
        read_holder(&path)
    }
}

/// Takes `operation` (`LOCK_EX` or `LOCK_SH`) without waiting; a shared probe is released at
/// once (closing the file releases it too).
fn try_flock(file: &File, operation: libc::c_int) -> bool {
    // SAFETY: flock on a file descriptor this function borrows for the call.
    let taken = unsafe { libc::flock(file.as_raw_fd(), operation | libc::LOCK_NB) } == 0;
    if taken && operation == libc::LOCK_SH {
        // SAFETY: as above.
        unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_UN) };
    }
    taken
}

fn read_holder(path: &Path) -> Result<Option<Holder>, StoreError> {
    let text = std::fs::read_to_string(path).map_err(StoreError::io(path))?;
    Ok(serde_json::from_str(&text).ok())
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "this host".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_writer_at_a_time_and_the_lock_goes_with_it() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(RunLock::holder(dir.path()).unwrap(), None);
        let lock = RunLock::acquire(dir.path()).unwrap();
        let holder = RunLock::holder(dir.path()).unwrap().expect("held");
        assert_eq!(holder.pid, std::process::id());
        // flock is per open file: a second open in this process is refused like another process.
        let err = RunLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains(&format!("process {}", std::process::id())) && err.contains("stop it"),
            "{err}"
        );
        drop(lock);
        assert_eq!(RunLock::holder(dir.path()).unwrap(), None);
        let _again = RunLock::acquire(dir.path()).unwrap();
    }
}
