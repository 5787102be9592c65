//! Helpers shared by the sandbox integration tests.
#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use ucoder_flow::sandbox::{Job, Limits, SandboxConfig, SandboxPool, TestCase};

/// Limits small enough that hostile cases end quickly.
pub fn test_limits() -> Limits {
    Limits {
        test_cpu: Duration::from_millis(500),
        program_cpu: Duration::from_secs(2),
        job_wall: Duration::from_secs(20),
        max_output_bytes: 4 << 20,
        processes: 32,
        ..Limits::default()
    }
}

pub fn pool(workers: usize) -> SandboxPool {
    SandboxPool::new(SandboxConfig {
        workers,
        limits: test_limits(),
        ..SandboxConfig::default()
    })
    .expect("sandbox pool starts")
}

pub fn call(function: &str, args: &str, expected: Option<&str>) -> TestCase {
    TestCase::Call {
        function: function.into(),
        args: args.into(),
        expected: expected.map(String::from),
    }
}

pub fn assert_case(source: &str) -> TestCase {
    TestCase::Assert {
        source: source.into(),
    }
}

pub fn job(program: &str, tests: Vec<TestCase>) -> Job {
    Job::new(program, tests)
}

fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            if let Ok(c) = std::fs::read_to_string(t.path().join("children")) {
                out.extend(c.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
            }
        }
    }
    out
}

/// Processes that belong to jobs: every descendant of a worker except the worker's own
/// processes (the outer process, with a PID namespace the supervisor it waits on, the zygote
/// that forks job children, and the spare child the zygote keeps forked for the next job).
pub fn job_processes(pool: &SandboxPool) -> Vec<u32> {
    let pidns = pool
        .isolation()
        .get("pid namespace")
        .is_some_and(|s| s == "ok");
    let mut found = Vec::new();
    for outer in pool.worker_pids() {
        let mut stack: Vec<u32> = if pidns {
            children(outer).into_iter().flat_map(children).collect()
        } else {
            children(outer)
        };
        let comm = |p: u32| {
            std::fs::read_to_string(format!("/proc/{p}/comm"))
                .unwrap_or_default()
                .trim()
                .to_string()
        };
        while let Some(p) = stack.pop() {
            if comm(p) == "ucsb-zygote" {
                // Only the zygote forks its children, so a spare among them is the worker's.
                stack.extend(children(p).into_iter().filter(|c| comm(*c) != "ucsb-spare"));
                continue;
            }
            found.push(p);
            stack.extend(children(p));
        }
    }
    found
}

/// Files the hostile programs try to create outside their working directory.
pub const ESCAPE_FILES: &[&str] = &[
    "/tmp/ucoder_sandbox_escape.txt",
    "/tmp/ucoder_sandbox_late.txt",
    "/var/tmp/ucoder_sandbox_escape.txt",
    "/dev/shm/ucoder_sandbox_escape.txt",
    "/etc/ucoder_sandbox_escape",
];

/// `ucoder-sandbox-*` scratch directories in the temp dir.
pub fn scratch_dirs() -> usize {
    std::fs::read_dir(std::env::temp_dir())
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .starts_with("ucoder-sandbox-")
                })
                .count()
        })
        .unwrap_or(0)
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
