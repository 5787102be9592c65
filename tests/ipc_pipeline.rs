//! `ucoder-flow run pipelines/smoke.toml` end to end: the real default model, the real sandbox,
//! real Parquet checkpoints. One uninterrupted run is the reference; a run on two processes of
//! two timely workers each (one of them killed and both restarted) and a run killed with SIGKILL
//! (twice) and resumed must reach exactly its selections, clusters and SFT shards, and the
//! resumed runs must not regenerate committed work.
//!
//! The loop: a copy of the reference run extended to two iterations trains M1 on iteration 0's
//! shards and generates iteration 1 with it, which the recorded log-probabilities prove.
//!
//! The runs share two cores, so they take turns (one lock) and the reference is computed once.
//!
//! The golden check: the reference run's selections and clusters (row for row) and SFT shards and
//! `messages.jsonl` (byte for byte) equal the recording in `tests/fixtures/golden/smoke/`, made
//! by the tree before a refactor; a change that moves code must not move results. To re-record
//! after a deliberate change of results, run the smoke pipeline and point
//! `golden_fixture_matches_a_recorded_run` at it with `UCODER_FLOW_GOLDEN_RUNS=<runs dir>` and
//! `UCODER_FLOW_GOLDEN_BLESS=1`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use ucoder_flow::llm::gguf::GgufModel;
use ucoder_flow::llm::tokenizer::Tokenizer;
use ucoder_flow::pipeline::artifacts::{
    ClusterRow, ExecutionRow, ProblemRow, RejectionRow, ResponseRow, SelectionRow, TestCaseRow,
};
use ucoder_flow::sft::pack::IGNORE_INDEX;
use ucoder_flow::sft::sink::read_sft;
use ucoder_flow::store::{Manifest, Stage};

mod python_tools;

const GOLDEN: &str = "tests/fixtures/golden/smoke";

const LLM_STAGES: [&str; 5] = ["problems", "ratings", "skeletons", "tests", "candidates"];

fn turn() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

fn smoke_toml() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/smoke.toml")
}

fn command(runs: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ucoder-flow"));
    cmd.arg("run")
        .arg(smoke_toml())
        .arg("--runs-dir")
        .arg(runs)
        .arg("--quiet")
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

fn run_to_end(runs: &Path, extra: &[&str]) -> String {
    stdout_of_success(command(runs, extra), "run")
}

/// Runs `cmd` (ucoder-flow `what`), asserts it succeeded and returns its stdout.
fn stdout_of_success(mut cmd: Command, what: &str) -> String {
    let out = cmd.output().expect("start ucoder-flow");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "ucoder-flow {what} failed\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Everything a run decides, in a comparable form.
#[derive(Debug, PartialEq)]
struct Outcome {
    selections: Vec<SelectionRow>,
    clusters: Vec<ClusterRow>,
    sft_rows: Vec<ucoder_flow::sft::sink::SftRow>,
    messages: String,
}

fn outcome(runs: &Path) -> Outcome {
    let iter = runs.join("smoke/iter-0");
    let mut selections = Stage::<SelectionRow>::read(&iter.join("selections")).unwrap();
    selections.sort_by_key(|s| s.problem_id);
    let mut clusters = Stage::<ClusterRow>::read(&iter.join("clusters")).unwrap();
    clusters.sort_by_key(|c| (c.problem_id, c.signature));
    Outcome {
        selections,
        clusters,
        sft_rows: read_sft(&iter.join("sft")).unwrap(),
        messages: std::fs::read_to_string(iter.join("sft_messages/messages.jsonl")).unwrap(),
    }
}

struct Reference {
    _dir: tempfile::TempDir,
    runs: PathBuf,
    outcome: Outcome,
    table: String,
}

fn reference() -> &'static Reference {
    static REFERENCE: OnceLock<Reference> = OnceLock::new();
    REFERENCE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let runs = dir.path().to_path_buf();
        let table = run_to_end(&runs, &[]);
        let outcome = outcome(&runs);
        Reference {
            _dir: dir,
            runs,
            outcome,
            table,
        }
    })
}

/// Each checkpoint row once: nothing committed was generated or executed twice.
fn assert_no_repeated_work(runs: &Path) -> usize {
    let iter = runs.join("smoke/iter-0");
    let mut rows = 0;
    for stage in LLM_STAGES {
        let mut seen = HashSet::new();
        for row in Stage::<ResponseRow>::read(&iter.join(stage)).unwrap() {
            assert!(
                seen.insert((row.key, row.sample)),
                "{stage}: request {:x} sample {} was generated twice",
                row.key,
                row.sample
            );
            rows += 1;
        }
    }
    let mut seen = HashSet::new();
    for row in Stage::<ExecutionRow>::read(&iter.join("executions")).unwrap() {
        assert!(
            seen.insert((row.candidate_id, row.test_id)),
            "candidate {:x} ran test {:x} twice",
            row.candidate_id,
            row.test_id
        );
    }
    rows
}

#[test]
fn smoke_run_selects_solutions_and_writes_decodable_sft() {
    let _turn = turn();
    let reference = reference();
    let o = &reference.outcome;
    assert!(
        !o.selections.is_empty(),
        "the smoke run selected nothing:\n{}",
        reference.table
    );
    assert!(
        reference
            .table
            .contains("== ucoder-flow run `smoke`, iteration 0 (M0) ==")
    );
    assert!(reference.table.contains("rejections"));
    let iter = reference.runs.join("smoke/iter-0");
    for dir in ucoder_flow::pipeline::RESULT_DIRS {
        assert!(iter.join(dir).is_dir(), "{dir} missing");
    }
    assert!(assert_no_repeated_work(&reference.runs) > 0);

    // Every ready problem leaves the funnel once: a selection, or one `selection` rejection.
    let problems = Stage::<ProblemRow>::read(&iter.join("problem_set")).unwrap();
    let rejections = Stage::<RejectionRow>::read(&iter.join("rejections")).unwrap();
    for p in &problems {
        let selected = o
            .selections
            .iter()
            .filter(|s| s.problem_id == p.problem_id)
            .count();
        let unselected = rejections
            .iter()
            .filter(|r| r.stage == "selection" && r.problem_id == Some(p.problem_id))
            .count();
        assert_eq!(selected + unselected, 1, "problem {:016x}", p.problem_id);
    }

    // Every selection is r* of a cluster of at least τ = 2 that is marked selected.
    for s in &o.selections {
        assert!(s.cluster_size >= 2, "{s:?}");
        assert!(
            o.clusters.iter().any(|c| c.problem_id == s.problem_id
                && c.signature == s.cluster
                && c.selected
                && c.size == s.cluster_size),
            "no selected cluster for {s:?}"
        );
        assert!(
            s.executed as f64 >= 0.8 * s.tests as f64,
            "ρ violated: {s:?}"
        );
    }

    // Decode the SFT shards back: one example per selection, its labelled tokens are exactly the
    // selected code (fenced) plus the end of the assistant turn, and the prompt is masked.
    let source = ucoder_flow::models::resolve(
        ucoder_flow::models::DEFAULT_MODEL,
        &ucoder_flow::fetch::cache_dir(),
        &ucoder_flow::progress::Silent,
    )
    .unwrap();
    let gguf = GgufModel::open(source.path()).unwrap();
    let tokenizer = Tokenizer::from_gguf(gguf.content()).unwrap();
    let mut decoded = Vec::new();
    for row in &o.sft_rows {
        assert_eq!(row.input_ids.len(), row.labels.len());
        assert!(row.input_ids.len() <= 1024, "packed beyond sft.max_length");
        for (problem_id_of_example, span) in row.spans() {
            let labels = &row.labels[span.clone()];
            let first = labels
                .iter()
                .position(|&l| l != IGNORE_INDEX)
                .expect("an answer");
            assert!(
                labels[first..].iter().all(|&l| l != IGNORE_INDEX),
                "answer tokens are contiguous"
            );
            for (&id, &label) in row.input_ids[span.clone()][first..]
                .iter()
                .zip(&labels[first..])
            {
                assert_eq!(i64::from(id), label);
            }
            let prompt = tokenizer
                .decode(&row.input_ids[span.start..span.start + first])
                .unwrap();
            let answer = tokenizer
                .decode(&row.input_ids[span.start + first..span.end])
                .unwrap();
            assert_eq!(row.position_ids[span.start], 0);
            decoded.push((problem_id_of_example, prompt, answer));
        }
    }
    decoded.sort_by_key(|(id, _, _)| *id);
    assert_eq!(decoded.len(), o.selections.len());
    let messages: Vec<serde_json::Value> = o
        .messages
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(messages.len(), o.selections.len());
    for ((problem_id_of_example, prompt, answer), s) in decoded.iter().zip(&o.selections) {
        assert_eq!(*problem_id_of_example, s.problem_id);
        let fenced = format!("```python\n{}\n```", s.code.trim_end());
        assert!(
            answer.starts_with(&fenced),
            "answer {answer:?} is not the selected code"
        );
        assert!(
            answer.ends_with("<|im_end|>\n") || answer.ends_with("<|im_end|>"),
            "{answer:?}"
        );
        assert!(prompt.contains("<|im_start|>user") && prompt.ends_with("<|im_start|>assistant\n"));
        let m = messages
            .iter()
            .find(|m| m["problem_id"] == serde_json::json!(format!("{:016x}", s.problem_id)))
            .expect("a messages line per selection");
        assert_eq!(m["messages"][1]["content"], serde_json::json!(fenced));
        assert!(prompt.contains(m["messages"][0]["content"].as_str().unwrap()));
    }
}

/// A free port on 127.0.0.1 (bound, then released for a process of the cluster to take).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The worker indices whose parts are in a checkpoint folder.
fn part_workers(dir: &Path) -> HashSet<u32> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_prefix("part-")?.get(..4)?.parse().ok()
        })
        .collect()
}

/// Two processes of two timely workers each (timely's cluster mode on 127.0.0.1): process 1 is
/// SIGKILLed once candidates are committed, which must stop process 0 too (with an error, not a
/// hang); the same two commands then resume and reach exactly the one-process reference, with
/// nothing committed redone and both processes' workers having committed work.
#[test]
fn two_processes_select_exactly_what_one_process_selects_and_resume_after_a_kill() {
    let _turn = turn();
    let reference = reference();
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let hostfile = dir.path().join("hosts.txt");
    std::fs::write(
        &hostfile,
        format!("127.0.0.1:{}\n127.0.0.1:{}\n", free_port(), free_port()),
    )
    .unwrap();
    let start = |process: usize| {
        let hostfile = hostfile.to_str().unwrap().to_string();
        let process = process.to_string();
        command(
            &runs,
            &[
                "-w",
                "2",
                "--processes",
                "2",
                "--process",
                &process,
                "--hostfile",
                &hostfile,
            ],
        )
        .spawn()
        .expect("start ucoder-flow")
    };

    let mut leader = start(0);
    let mut follower = start(1);
    let iter = runs.join("smoke/iter-0");
    let deadline = Instant::now() + Duration::from_secs(1200);
    let killed = loop {
        if let Some(status) = follower.try_wait().unwrap() {
            assert!(
                status.success(),
                "process 1 failed before it could be killed"
            );
            break false;
        }
        if has_part(&iter.join("candidates")) {
            // `status` on a running run names the leader, which holds the run's lock.
            let running = status(&runs);
            assert!(
                running.contains(&format!("running: process {}", leader.id())),
                "{running}"
            );
            follower.kill().unwrap(); // SIGKILL
            follower.wait().unwrap();
            break true;
        }
        assert!(Instant::now() < deadline, "the cluster never sampled");
        std::thread::sleep(Duration::from_millis(50));
    };
    if killed {
        // Process 0 cannot go on without process 1: it must stop, with an error, soon.
        let stopped_by = Instant::now() + Duration::from_secs(120);
        let status = loop {
            if let Some(status) = leader.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < stopped_by,
                "process 0 hangs after process 1 was killed"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        let out = leader.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!status.success(), "process 0 succeeded without process 1");
        assert!(stderr.contains("run the same command again"), "{stderr}");
        leader = start(0);
        follower = start(1);
    }
    let follower_out = follower.wait_with_output().unwrap();
    let leader_out = leader.wait_with_output().unwrap();
    for (process, out) in [(0, &leader_out), (1, &follower_out)] {
        assert!(
            out.status.success(),
            "process {process} failed\nstdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let follower_says = String::from_utf8_lossy(&follower_out.stdout);
    assert!(
        follower_says.contains("process 1: took part in 1 iteration(s)"),
        "{follower_says}"
    );
    assert!(String::from_utf8_lossy(&leader_out.stdout).contains("2 processes"));

    assert_eq!(outcome(&runs), reference.outcome);
    assert_no_repeated_work(&runs);
    // Both processes' workers (0, 1 on process 0; 2, 3 on process 1) committed work.
    let workers: HashSet<u32> = LLM_STAGES
        .iter()
        .chain(&["executions"])
        .flat_map(|stage| part_workers(&iter.join(stage)))
        .collect();
    assert!(
        workers.iter().any(|w| *w < 2) && workers.iter().any(|w| *w >= 2),
        "checkpoint parts by workers {workers:?}"
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(iter.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["processes"], 2);
    assert_eq!(
        summary["selections"],
        reference.outcome.selections.len() as u64
    );
}

/// Starts a run and SIGKILLs it once `ready(run folder)` holds (or returns false if the run ended
/// first).
fn kill_when(runs: &Path, ready: impl Fn(&Path) -> bool) -> bool {
    let mut child = command(runs, &[]).spawn().expect("start ucoder-flow");
    let deadline = Instant::now() + Duration::from_secs(1200);
    let iter = runs.join("smoke/iter-0");
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "the run failed before it could be killed");
            return false;
        }
        if ready(&iter) {
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            return true;
        }
        assert!(
            Instant::now() < deadline,
            "the run never reached the kill point"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn has_part(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("part-"))
        })
        .unwrap_or(false)
}

#[test]
fn sigkilled_run_resumes_to_the_same_selections_without_redoing_work() {
    let _turn = turn();
    let reference = reference();
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path();

    // Kill 1: while the tests are being generated. Kill 2 (of the resumed run): once the first
    // solutions are committed.
    let killed_in_tests = kill_when(runs, |iter| has_part(&iter.join("tests")));
    let manifest = std::fs::read_to_string(runs.join("smoke/manifest.json")).unwrap();
    assert!(
        !manifest.contains("\"complete\""),
        "a killed run is not complete"
    );
    let killed_in_sampling = kill_when(runs, |iter| has_part(&iter.join("candidates")));
    assert!(killed_in_tests || killed_in_sampling, "neither kill landed");

    let committed_before = assert_no_repeated_work(runs);
    // `status` on the killed run: nobody writes it, iteration 0 is not complete, and what it
    // committed is counted.
    let killed = status(runs);
    assert!(
        killed.contains("stopped: no process is writing it"),
        "{killed}"
    );
    assert!(killed.contains("iteration 0: not complete"), "{killed}");
    let problems_committed: u64 = killed
        .lines()
        .find(|l| l.trim_start().starts_with("problems "))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .expect("a problems row");
    assert!(problems_committed > 0, "{killed}");
    let table = run_to_end(runs, &[]);
    assert!(table.contains("(resumed)"), "{table}");
    let replayed: u64 = table
        .lines()
        .find(|l| l.starts_with("completions replayed from checkpoints"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|n| n.parse().ok())
        .expect("a replay count in the table");
    assert!(
        replayed as usize >= committed_before,
        "every committed completion is replayed ({replayed} < {committed_before})\n{table}"
    );
    assert_no_repeated_work(runs);
    assert_eq!(outcome(runs), reference.outcome);

    // A finished run is not redone: the same command reports it.
    let again = command(runs, &[]).output().unwrap();
    assert!(again.status.success());
    let said = String::from_utf8_lossy(&again.stderr);
    assert!(said.contains("is complete"), "{said}");
    // Its plan now has a time estimate, from the rates its own iteration measured.
    assert!(
        said.contains("plan: at ") && said.contains("iter-0/summary.json"),
        "{said}"
    );
    assert!(runs.join("smoke/plan.json").is_file());

    // `status` on the finished run.
    let finished = status(runs);
    assert!(finished.contains("finished"), "{finished}");
    assert!(
        finished.contains(&format!(
            "iteration 0: complete, {} selections",
            reference.outcome.selections.len()
        )),
        "{finished}"
    );
}

/// `ucoder-flow status` on the smoke run in `runs`.
fn status(runs: &Path) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ucoder-flow"));
    cmd.arg("status").arg(runs.join("smoke"));
    stdout_of_success(cmd, "status")
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(GOLDEN)
}

/// Selections as canonical JSON rows, by problem.
fn selections_json(iter: &Path) -> Vec<serde_json::Value> {
    let mut rows = Stage::<SelectionRow>::read(&iter.join("selections")).unwrap();
    rows.sort_by_key(|s| s.problem_id);
    rows.iter()
        .map(|s| {
            serde_json::json!({
                "problem_id": s.problem_id,
                "candidate_id": s.candidate_id,
                "cluster": s.cluster,
                "cluster_size": s.cluster_size,
                "executed": s.executed,
                "tests": s.tests,
                "passed": s.passed,
                "perplexity": s.perplexity,
                "code": s.code,
            })
        })
        .collect()
}

/// Clusters as canonical JSON rows, by (problem, signature).
fn clusters_json(iter: &Path) -> Vec<serde_json::Value> {
    let mut rows = Stage::<ClusterRow>::read(&iter.join("clusters")).unwrap();
    rows.sort_by_key(|c| (c.problem_id, c.signature));
    rows.iter()
        .map(|c| {
            serde_json::json!({
                "problem_id": c.problem_id,
                "signature": c.signature,
                "size": c.size,
                "passed": c.passed,
                "selected": c.selected,
            })
        })
        .collect()
}

/// The files of the SFT folder, by name.
fn sft_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

fn read_golden_rows(name: &str) -> Vec<serde_json::Value> {
    let path = golden_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn assert_rows_equal(what: &str, found: &[serde_json::Value], golden: &[serde_json::Value]) {
    for (i, (f, g)) in found.iter().zip(golden).enumerate() {
        assert_eq!(f, g, "{what}: row {i} differs from the golden recording");
    }
    assert_eq!(
        found.len(),
        golden.len(),
        "{what}: {} rows, the golden recording has {}",
        found.len(),
        golden.len()
    );
}

/// The run in `runs` decided exactly what the golden recording decided.
fn assert_matches_golden(runs: &Path) {
    let iter = runs.join("smoke/iter-0");
    assert_rows_equal(
        "selections",
        &selections_json(&iter),
        &read_golden_rows("selections.json"),
    );
    assert_rows_equal(
        "clusters",
        &clusters_json(&iter),
        &read_golden_rows("clusters.json"),
    );
    for folder in SFT_FOLDERS {
        let found = sft_files(&iter.join(folder));
        let golden = sft_files(&golden_dir().join(folder));
        let names =
            |files: &[(String, Vec<u8>)]| files.iter().map(|f| f.0.clone()).collect::<Vec<_>>();
        assert_eq!(names(&found), names(&golden), "{folder} files");
        for ((name, bytes), (_, expected)) in found.iter().zip(&golden) {
            assert!(
                bytes == expected,
                "{folder}/{name}: its bytes differ from the golden recording"
            );
        }
    }
}

/// The SftSink's folders: the shards, and the same pairs as chat messages.
const SFT_FOLDERS: [&str; 2] = ["sft", "sft_messages"];

/// Writes the golden recording from the run in `runs`.
fn bless_golden(runs: &Path) {
    let iter = runs.join("smoke/iter-0");
    let dir = golden_dir();
    let pretty = |rows: Vec<serde_json::Value>| serde_json::to_string_pretty(&rows).unwrap() + "\n";
    std::fs::write(dir.join("selections.json"), pretty(selections_json(&iter))).unwrap();
    std::fs::write(dir.join("clusters.json"), pretty(clusters_json(&iter))).unwrap();
    for folder in SFT_FOLDERS {
        std::fs::create_dir_all(dir.join(folder)).unwrap();
        for (name, _) in sft_files(&dir.join(folder)) {
            std::fs::remove_file(dir.join(folder).join(name)).unwrap();
        }
        for (name, bytes) in sft_files(&iter.join(folder)) {
            std::fs::write(dir.join(folder).join(name), bytes).unwrap();
        }
    }
}

#[test]
fn smoke_run_matches_the_golden_recording() {
    let _turn = turn();
    assert_matches_golden(&reference().runs);
}

/// Checks (or, with `UCODER_FLOW_GOLDEN_BLESS=1`, writes) the golden recording against a smoke
/// run folder made elsewhere (`UCODER_FLOW_GOLDEN_RUNS`, the `--runs-dir` of that run); without
/// that variable there is nothing to compare and the test passes.
#[test]
fn golden_fixture_matches_a_recorded_run() {
    let Some(runs) = std::env::var_os("UCODER_FLOW_GOLDEN_RUNS") else {
        return;
    };
    let runs = PathBuf::from(runs);
    if std::env::var_os("UCODER_FLOW_GOLDEN_BLESS").is_some() {
        bless_golden(&runs);
    }
    assert_matches_golden(&runs);
}

/// A run that finishes but selects nothing says so and exits 3 (the README's exit codes), with
/// its top rejection reasons: SmolLM2-135M never answers in the problem format.
#[test]
fn a_run_that_selects_nothing_exits_3_with_its_top_rejections() {
    let _turn = turn();
    let runs = tempfile::tempdir().unwrap();
    let out = command(runs.path(), &["--model", "smollm2-135m-instruct", "-v"])
        .output()
        .expect("start ucoder-flow");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "stderr:\n{stderr}");
    // -v tells each drop as it happens, as many as `rejections/` has rows.
    let told = stderr
        .lines()
        .filter(|l| l.starts_with("[ucoder-flow] dropped"))
        .count();
    let rows = Stage::<RejectionRow>::read(&runs.path().join("smoke/iter-0/rejections"))
        .unwrap()
        .len();
    assert!(
        rows > 0 && told == rows,
        "{told} lines for {rows} rows:\n{stderr}"
    );
    assert!(
        stderr.contains("selected nothing")
            && stderr.contains("top rejections: ")
            && !stderr.contains("top rejections: none"),
        "{stderr}"
    );
    // Its empty tables still read: each holds one part with zero rows and the schema.
    let iter = runs.path().join("smoke/iter-0");
    for table in ["problem_set", "test_cases", "clusters", "selections", "sft"] {
        let parts = std::fs::read_dir(iter.join(table))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".parquet")
            })
            .count();
        assert_eq!(parts, 1, "{table}: one (empty) part");
    }
    assert!(
        Stage::<SelectionRow>::read(&iter.join("selections"))
            .unwrap()
            .is_empty()
    );
    assert!(read_sft(&iter.join("sft")).unwrap().is_empty());
}

/// Copies a folder tree.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// For each recorded problem answer of iteration `t`: how far the log-probability sum the run
/// recorded is from the one `engine` gives the same tokens after the same prompt. A text re-encodes
/// to the sampled tokens, but for the stop token the run counted and did not keep as text: when
/// one is missing, the closest of the model's stop tokens is taken (for every engine alike).
fn recorded_logprob_gaps(
    engine: &mut ucoder_flow::llm::Engine,
    config: &ucoder_flow::config::PipelineConfig,
    iter: &Path,
    t: u32,
) -> Vec<f64> {
    use std::sync::Arc;
    use ucoder_flow::pipeline::iteration::iteration_seed;
    use ucoder_flow::pipeline::stages::{StagePrompts, StageSettings, problem_generator};
    let mut config = config.clone();
    config.seed = iteration_seed(config.seed, t);
    let prompts = StagePrompts {
        prompts: Arc::new(ucoder_flow::prompts::PromptSet::builtin().unwrap()),
        settings: StageSettings::from_config(&config),
    };
    let stops = engine.tokenizer().eos_token_ids().to_vec();
    let mut gaps = Vec::new();
    for row in Stage::<ResponseRow>::read(&iter.join("problems")).unwrap() {
        let (_, request) = problem_generator::request(&prompts, row.key).unwrap();
        let rendered = ucoder_flow::backends::candle::render(engine, &request.prompt).unwrap();
        let prompt = engine.encode_prompt(&rendered).unwrap();
        let text = engine.tokenizer().encode(&row.text, false).unwrap();
        let continuations: Vec<Vec<u32>> = if text.len() == row.tokens as usize {
            vec![text]
        } else if text.len() + 1 == row.tokens as usize {
            stops
                .iter()
                .map(|&s| text.iter().copied().chain([s]).collect())
                .collect()
        } else {
            continue;
        };
        let gap = continuations
            .iter()
            .map(|c| {
                let scored: f64 = engine
                    .score(&prompt, c)
                    .unwrap()
                    .iter()
                    .map(|&l| l as f64)
                    .sum();
                (row.sum_logprob - scored).abs()
            })
            .fold(f64::INFINITY, f64::min);
        gaps.push(gap);
    }
    gaps
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

#[test]
fn a_second_iteration_generates_with_the_model_trained_on_the_first() {
    use ucoder_flow::llm::{Engine, EngineOptions};
    use ucoder_flow::models::{ModelSource, weights_sha256};
    let reference = reference();
    let _turn = turn();
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    copy_tree(&reference.runs.join("smoke"), &runs.join("smoke"));
    let toml = dir.path().join("smoke.toml");
    let text = std::fs::read_to_string(smoke_toml()).unwrap();
    assert!(text.contains("seed = 7\n"));
    std::fs::write(
        &toml,
        text.replace("seed = 7\n", "seed = 7\niterations = 2\n"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ucoder-flow"))
        .arg("run")
        .arg(&toml)
        .arg("--runs-dir")
        .arg(&runs)
        .arg("--quiet")
        .output()
        .expect("start ucoder-flow");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Iteration 1 may select nothing (exit 3); the loop itself must have run.
    assert!(
        out.status.success() || out.status.code() == Some(3),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let run = runs.join("smoke");

    // Iteration 0 was resumed, not redone: its results are the reference's.
    assert!(stderr.contains("iter-0 is complete"), "{stderr}");
    assert_eq!(outcome(&runs), reference.outcome);

    // The lineage: M0 → iter-0 → M1 (trained on iter-0's shards) → iter-1 with M1.
    let manifest = Manifest::load(&run).unwrap().unwrap();
    let entry = |name: &str| {
        manifest
            .stages
            .get(name)
            .unwrap_or_else(|| panic!("{name}: {manifest:?}"))
    };
    assert_eq!(entry("iter-0")["model"], "M0");
    assert_eq!(entry("iter-1")["model"], "M1");
    assert_eq!(entry("iter-1")["complete"], true);
    let m1 = entry("M1");
    let model_dir = run.join("iter-0/train/model");
    assert_eq!(m1["path"], model_dir.to_string_lossy().as_ref());
    assert_eq!(m1["trained"]["from"], "M0");
    assert_eq!(
        m1["trained"]["data"],
        run.join("iter-0/sft").to_string_lossy().as_ref()
    );
    let m1_source = ModelSource::Safetensors(model_dir.clone());
    assert_eq!(
        m1["weights_sha256"],
        weights_sha256(&m1_source).unwrap().as_str()
    );
    let m0_source = ucoder_flow::models::resolve(
        "qwen2.5-coder-0.5b-instruct",
        &ucoder_flow::fetch::cache_dir(),
        &ucoder_flow::progress::Silent,
    )
    .unwrap();
    assert_eq!(
        entry("M0")["weights_sha256"],
        weights_sha256(&m0_source).unwrap().as_str()
    );
    assert_ne!(m1["weights_sha256"], entry("M0")["weights_sha256"]);
    assert_eq!(
        m1["trained"]["report"]["rows"].as_u64(),
        Some(reference.outcome.sft_rows.len() as u64)
    );
    let loop_summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("summary.json")).unwrap()).unwrap();
    assert_eq!(loop_summary["iterations"].as_array().unwrap().len(), 2);
    assert!(stdout.contains("== lineage of `smoke` =="), "{stdout}");

    // The proof: the log-probabilities iteration 1 recorded are M1's, not M0's (and iteration
    // 0's are M0's).
    let config = ucoder_flow::config::PipelineConfig::load(&toml).unwrap();
    let opts = EngineOptions {
        threads: Some(2),
        ..Default::default()
    };
    let mut m0 = Engine::load(&m0_source, &opts).unwrap();
    let iter0_m0 = recorded_logprob_gaps(&mut m0, &config, &run.join("iter-0"), 0);
    let iter1_m0 = recorded_logprob_gaps(&mut m0, &config, &run.join("iter-1"), 1);
    drop(m0);
    let mut m1 = Engine::load(&m1_source, &opts).unwrap();
    let iter1_m1 = recorded_logprob_gaps(&mut m1, &config, &run.join("iter-1"), 1);
    assert!(!iter1_m1.is_empty() && !iter0_m0.is_empty());
    let (own0, own1, other1) = (mean(&iter0_m0), mean(&iter1_m1), mean(&iter1_m0));
    eprintln!(
        "mean |recorded - rescored| log-probability sum: iteration 0 by M0 {own0:.5}, \
         iteration 1 by M1 {own1:.5}, iteration 1 by M0 {other1:.5} ({} answers)",
        iter1_m1.len()
    );
    // The engine scores what it sampled to within float rounding; another model does not.
    assert!(
        own0 < 0.01 && own1 < 0.01 && other1 > 0.1,
        "iteration 1's log-probabilities are not M1's: |Δ| by M1 {own1}, by M0 {other1} \
         (M0 on iteration 0: {own0})"
    );
}

/// Every id of every table (and of `messages.jsonl`) reads back exactly — same text, never a
/// float — in pandas, polars and HF datasets (through the iteration's dataset card, one config
/// per table, the SFT shards by default), as ucoder-flow itself reads it.
#[test]
fn ids_read_back_exactly_in_pandas_polars_and_hf_datasets() {
    use serde_json::{Value as Json, json};
    let _turn = turn();
    let iter = reference().runs.join("smoke/iter-0");
    let hex = |id: u64| json!(format!("{id:016x}"));
    let opt = |id: Option<u64>| id.map_or(Json::Null, hex);
    let mut expected = serde_json::Map::new();
    let mut insert = |name: &str, table: Vec<Vec<Json>>| {
        expected.insert(name.to_string(), json!(table));
    };
    insert(
        "selections",
        Stage::<SelectionRow>::read(&iter.join("selections"))
            .unwrap()
            .iter()
            .map(|r| vec![hex(r.problem_id), hex(r.candidate_id), hex(r.cluster)])
            .collect(),
    );
    insert(
        "clusters",
        Stage::<ClusterRow>::read(&iter.join("clusters"))
            .unwrap()
            .iter()
            .map(|r| {
                vec![
                    hex(r.problem_id),
                    hex(r.signature),
                    json!(r.members.iter().map(|&id| hex(id)).collect::<Vec<_>>()),
                ]
            })
            .collect(),
    );
    insert(
        "rejections",
        Stage::<RejectionRow>::read(&iter.join("rejections"))
            .unwrap()
            .iter()
            .map(|r| vec![opt(r.problem_id)])
            .collect(),
    );
    insert(
        "problem_set",
        Stage::<ProblemRow>::read(&iter.join("problem_set"))
            .unwrap()
            .iter()
            .map(|r| vec![hex(r.problem_id)])
            .collect(),
    );
    insert(
        "test_cases",
        Stage::<TestCaseRow>::read(&iter.join("test_cases"))
            .unwrap()
            .iter()
            .map(|r| vec![hex(r.problem_id), hex(r.test_id)])
            .collect(),
    );
    insert(
        "executions",
        Stage::<ExecutionRow>::read(&iter.join("executions"))
            .unwrap()
            .iter()
            .map(|r| {
                vec![
                    hex(r.problem_id),
                    hex(r.candidate_id),
                    hex(r.test_id),
                    opt(r.output_hash),
                ]
            })
            .collect(),
    );
    insert(
        "candidates",
        Stage::<ResponseRow>::read(&iter.join("candidates"))
            .unwrap()
            .iter()
            .map(|r| vec![hex(r.key), opt(r.problem_id), opt(r.candidate_id)])
            .collect(),
    );
    let sft = read_sft(&iter.join("sft")).unwrap();
    insert(
        "sft",
        sft.iter()
            .map(|r| {
                vec![json!(
                    r.problem_ids.iter().map(|&id| hex(id)).collect::<Vec<_>>()
                )]
            })
            .collect(),
    );
    insert(
        "sft_messages",
        sft.iter()
            .flat_map(|r| r.problem_ids.iter().map(|&id| vec![hex(id)]))
            .collect(),
    );
    // Not vacuous: the run's ids include values a signed 64-bit integer cannot hold, and the
    // nullable columns hold nulls.
    let all = serde_json::to_string(&expected).unwrap();
    assert!(
        ["\"8", "\"9", "\"a", "\"b", "\"c", "\"d", "\"e", "\"f"]
            .iter()
            .any(|high| all.contains(high)),
        "no id >= 2^63 in the run"
    );
    assert!(all.contains("null"), "no null id in the run");

    let sorted = |table: &Json| {
        let mut rows: Vec<String> = table
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.to_string())
            .collect();
        rows.sort();
        rows
    };
    let found = python_tools::read_tables(&iter);
    for tool in ["pandas", "polars", "datasets"] {
        for (table, rows) in &expected {
            let got = found[tool]
                .get(table)
                .unwrap_or_else(|| panic!("{tool} did not read {table}"));
            assert_eq!(
                sorted(got),
                sorted(rows),
                "{tool} read {table}'s ids differently"
            );
        }
    }
}

/// `clusters.members` lists each cluster's candidates (as many as its size, no candidate in two
/// clusters, the selected candidate in the selected cluster), and every candidate that ran keeps
/// its extracted code in `candidates.code` (the selection's code is its candidate's).
#[test]
fn clusters_list_their_members_and_candidates_keep_their_code() {
    let _turn = turn();
    let iter = reference().runs.join("smoke/iter-0");
    let clusters = Stage::<ClusterRow>::read(&iter.join("clusters")).unwrap();
    assert!(!clusters.is_empty());
    let mut seen = HashSet::new();
    for c in &clusters {
        assert_eq!(
            c.members.len(),
            c.size as usize,
            "cluster {:x}",
            c.signature
        );
        assert!(c.members.windows(2).all(|w| w[0] < w[1]), "members sorted");
        for &m in &c.members {
            assert!(seen.insert(m), "candidate {m:x} is in two clusters");
        }
    }
    let candidates = Stage::<ResponseRow>::read(&iter.join("candidates")).unwrap();
    let code_of: std::collections::HashMap<u64, &str> = candidates
        .iter()
        .filter_map(|r| Some((r.candidate_id?, r.code.as_deref()?)))
        .collect();
    for r in &candidates {
        assert_eq!(r.status == "ok", r.code.is_some(), "candidate row {r:?}");
    }
    for m in &seen {
        assert!(code_of.contains_key(m), "member {m:x} has no code");
    }
    let selections = Stage::<SelectionRow>::read(&iter.join("selections")).unwrap();
    assert!(!selections.is_empty());
    for s in &selections {
        let cluster = clusters
            .iter()
            .find(|c| c.problem_id == s.problem_id && c.signature == s.cluster)
            .expect("the selected cluster");
        assert!(cluster.selected && cluster.members.contains(&s.candidate_id));
        assert_eq!(code_of[&s.candidate_id], s.code);
    }
}
