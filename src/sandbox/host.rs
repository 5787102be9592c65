//! What the host offers a worker: the real interpreter path, a per-worker pids cgroup, an
//! unprivileged uid, and the isolation refusals already logged (each is logged once per process).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};

use super::SandboxError;

/// The real interpreter behind `$UCODER_FLOW_PYTHON` / `python3` (pyenv shims cost ~200 ms a start).
pub fn real_python() -> Result<PathBuf, SandboxError> {
    static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    FOUND
        .get_or_init(|| {
            let python = crate::fetch::python();
            let out = Command::new(&python)
                .args(["-c", "import sys; print(sys.executable)"])
                .output()
                .map_err(|e| format!("running `{python}`: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "`{python} -c 'import sys'` failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if !path.is_file() {
                return Err(format!(
                    "`{python}` reports sys.executable {path:?}, which is not a file"
                ));
            }
            Ok(path)
        })
        .clone()
        .map_err(|detail| SandboxError::Python { detail })
}

/// Logs an isolation feature the host refused, once per process.
pub fn log_refusal_once(feature: &str, why: &str) {
    static SEEN: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    let seen = SEEN.get_or_init(|| Mutex::new(HashSet::new()));
    if seen
        .lock()
        .expect("refusal log lock")
        .insert(feature.to_string())
    {
        eprintln!("[sandbox] isolation feature unavailable on this host: {feature}: {why}");
    }
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

static NEXT_SLOT: AtomicU32 = AtomicU32::new(0);

/// A distinct unprivileged uid for one worker slot (distinct across pools in this process, and,
/// by the pid in it, across processes), so that RLIMIT_NPROC and uid-wide kills stay per worker.
pub fn slot_uid() -> u32 {
    let slot = NEXT_SLOT.fetch_add(1, Ordering::Relaxed) % 64;
    1_000_000_000 + (std::process::id() % 1_000_000) * 64 + slot
}

const CGROUP_V1_PIDS: &str = "/sys/fs/cgroup/pids";

/// A pids cgroup for one worker, removed on drop.
pub struct WorkerCgroup {
    path: PathBuf,
}

impl WorkerCgroup {
    /// Creates `/sys/fs/cgroup/pids/ucoder-flow/<pid>-<uid>` with `pids.max`, or says why not.
    pub fn create(uid: u32, max_processes: u64) -> Result<WorkerCgroup, String> {
        let root = Path::new(CGROUP_V1_PIDS);
        if !root.join("cgroup.procs").is_file() {
            return Err("no cgroup v1 pids hierarchy at /sys/fs/cgroup/pids (cgroup v2 delegation is not used)".into());
        }
        let parent = root.join("ucoder-flow");
        if let Err(e) = std::fs::create_dir(&parent)
            && e.kind() != std::io::ErrorKind::AlreadyExists
        {
            return Err(format!("mkdir {}: {e}", parent.display()));
        }
        cleanup_stale(&parent);
        let path = parent.join(format!("{}-{uid}", std::process::id()));
        if let Err(e) = std::fs::create_dir(&path)
            && e.kind() != std::io::ErrorKind::AlreadyExists
        {
            return Err(format!("mkdir {}: {e}", path.display()));
        }
        // The worker's own PID 1 and waiting outer process count too.
        std::fs::write(path.join("pids.max"), (max_processes + 4).to_string())
            .map_err(|e| format!("writing {}/pids.max: {e}", path.display()))?;
        Ok(WorkerCgroup { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Removes empty worker cgroups left by processes that died without cleaning up.
fn cleanup_stale(parent: &Path) {
    if let Ok(entries) = std::fs::read_dir(parent) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            let pid: Option<u32> = name.split('-').next().and_then(|p| p.parse().ok());
            if let Some(pid) = pid
                && pid != std::process::id()
                && !Path::new(&format!("/proc/{pid}")).exists()
            {
                let _ = std::fs::remove_dir(e.path());
            }
        }
    }
}

impl Drop for WorkerCgroup {
    fn drop(&mut self) {
        for _ in 0..100 {
            if std::fs::remove_dir(&self.path).is_ok() || !self.path.exists() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}
