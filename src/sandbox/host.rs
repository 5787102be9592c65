//! What the host offers a worker: the real interpreter path, per-worker job cgroups (pids,
//! memory, CPU accounting), an unprivileged uid and a scratch folder. The isolation steps it
//! refuses are reported by the pool ([`super::SandboxPool::isolation`]), never printed here.

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

/// The worker's job cgroups: every job process (and the worker's zygote, which forks them) lives
/// in them, so the pids cap, the memory limit and the CPU accounting cover the whole job.
/// Each is created under this process's own cgroup of that controller (cgroup v1) and removed on
/// drop; a controller the host does not offer is reported with the reason.
pub struct WorkerCgroups {
    pub pids: Result<WorkerCgroup, String>,
    pub memory: Result<WorkerCgroup, String>,
    pub cpuacct: Result<WorkerCgroup, String>,
}

impl WorkerCgroups {
    /// Creates the three cgroups for one worker; `max_processes` is the job's process cap.
    pub fn create(uid: u32, max_processes: u64) -> WorkerCgroups {
        let pids = WorkerCgroup::create("pids", uid).and_then(|c| {
            // The zygote and the spare child it keeps forked ahead count too.
            std::fs::write(c.path.join("pids.max"), (max_processes + 2).to_string())
                .map_err(|e| format!("writing {}/pids.max: {e}", c.path.display()))?;
            Ok(c)
        });
        WorkerCgroups {
            pids,
            memory: WorkerCgroup::create("memory", uid),
            cpuacct: WorkerCgroup::create("cpuacct", uid),
        }
    }

    /// The worker's configuration entries: `cgroup_<controller>` (a path or null) and
    /// `cgroup_<controller>_why` (why there is none).
    pub fn to_json(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut out = serde_json::Map::new();
        for (name, cg) in [
            ("pids", &self.pids),
            ("memory", &self.memory),
            ("cpuacct", &self.cpuacct),
        ] {
            let (path, why) = match cg {
                Ok(c) => (
                    serde_json::Value::String(c.path.to_string_lossy().into_owned()),
                    String::new(),
                ),
                Err(why) => (serde_json::Value::Null, why.clone()),
            };
            out.insert(format!("cgroup_{name}"), path);
            out.insert(format!("cgroup_{name}_why"), why.into());
        }
        out
    }
}

/// One cgroup v1 directory for one worker, removed on drop.
pub struct WorkerCgroup {
    path: PathBuf,
}

/// This process's own cgroup of a v1 controller, from `/proc/self/cgroup`.
fn own_cgroup(controller: &str) -> Result<PathBuf, String> {
    let root = Path::new("/sys/fs/cgroup").join(controller);
    if !root.join("cgroup.procs").is_file() {
        return Err(format!(
            "no cgroup v1 {controller} hierarchy at {} (cgroup v2 delegation is not used)",
            root.display()
        ));
    }
    let table = std::fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| format!("reading /proc/self/cgroup: {e}"))?;
    let own = table
        .lines()
        .filter_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
            controllers
                .split(',')
                .any(|c| c == controller)
                .then(|| path.to_string())
        })
        .next()
        .ok_or_else(|| format!("/proc/self/cgroup names no {controller} cgroup"))?;
    Ok(root.join(own.trim_start_matches('/')))
}

impl WorkerCgroup {
    /// Creates `<own cgroup>/ucoder-flow/<pid>-<uid>` for `controller`, or says why not.
    fn create(controller: &str, uid: u32) -> Result<WorkerCgroup, String> {
        let parent = own_cgroup(controller)?.join("ucoder-flow");
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
        Ok(WorkerCgroup { path })
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

/// Where a worker may put its job folders when the host refuses it a mount namespace (with one,
/// jobs work in a private tmpfs and nothing is created here). The worker creates the folder
/// only then, so a run on a host with namespaces leaves nothing in the temp folder even when it
/// is killed; the folder is removed when the worker is dropped, or by [`end_all_workers`].
pub struct ScratchDir {
    pub path: PathBuf,
    /// The worker process using the folder, once started ([`ScratchDir::lend_to`]).
    worker: Option<u32>,
}

/// The workers of this process that hold a scratch folder: (process id, folder).
static LIVE_WORKERS: Mutex<Vec<(u32, PathBuf)>> = Mutex::new(Vec::new());

impl ScratchDir {
    /// A fresh, not yet existing path in the system temp folder.
    pub fn for_worker(slot: usize) -> ScratchDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let nanos = crate::store::unix_time().subsec_nanos();
        let name = format!(
            "ucoder-sandbox-{}-{slot}-{}-{nanos:08x}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        ScratchDir {
            path: std::env::temp_dir().join(name),
            worker: None,
        }
    }

    /// Records that worker process `pid` (the leader of its own process group) uses the folder,
    /// so that [`end_all_workers`] can end it and remove the folder.
    pub fn lend_to(&mut self, pid: u32) {
        self.worker = Some(pid);
        live_workers().push((pid, self.path.clone()));
    }
}

fn live_workers() -> std::sync::MutexGuard<'static, Vec<(u32, PathBuf)>> {
    LIVE_WORKERS.lock().unwrap_or_else(|p| p.into_inner())
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if let Some(pid) = self.worker {
            live_workers().retain(|(p, _)| *p != pid);
        }
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Ends every sandbox worker of this process (each one's whole process group, so its job
/// processes too) and removes their scratch folders. For a process about to exit on a signal,
/// where no destructor runs: the workers would die with it (PDEATHSIG), but their folders
/// would stay in the temp folder.
pub fn end_all_workers() {
    let workers = live_workers().clone();
    for (pid, _) in &workers {
        if let Ok(pid) = libc::pid_t::try_from(*pid) {
            // SAFETY: kill has no memory effects; a negative pid names the process group.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
    for (_, path) in &workers {
        // A killed worker may still be writing for a moment: retry briefly.
        for _ in 0..50 {
            if std::fs::remove_dir_all(path).is_ok() || !path.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}
