//! `[model] backend = "openai"` against real servers on 127.0.0.1 only: llama.cpp's
//! OpenAI-compatible server (llama-cpp-python's, built from its sdist) serving the default model,
//! killed with SIGKILL in the middle of a run and restarted; and a server that answers garbage.
//! llama.cpp's server returns one choice whatever `n` asks, so every run here also covers "n
//! larger than the server allows".

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ucoder_flow::pipeline::artifacts::{RejectionRow, ResponseRow};
use ucoder_flow::store::Stage;

mod llama_server;

use llama_server::{Server, free_port};

fn default_model() -> PathBuf {
    ucoder_flow::models::resolve(
        "qwen2.5-coder-0.5b-instruct",
        &ucoder_flow::fetch::cache_dir(),
        &ucoder_flow::progress::Silent,
    )
    .expect("the default model")
    .path()
    .to_path_buf()
}

/// A small IPC run whose completions come from `base_url`.
fn pipeline(dir: &Path, base_url: &str) -> PathBuf {
    let toml = format!(
        r#"name = "server"
seed = 7

[model]
name = "qwen2.5-coder-0.5b-instruct"
max_tokens = 256
backend = "openai"

[model.server]
base_url = "{base_url}"
max_concurrency = 1       # llama.cpp's server answers one at a time; one stream keeps its prompt cache warm
request_timeout_s = 300
retry_for_s = 180
logprobs = false          # llama-cpp-python computes them in Python: 6x slower here

[resources]
sandbox_workers = 1

[problems]
count = 1

[rating]
min_score = 0.0

[tests]
per_problem = 4
batch = 4

[sampling]
n = 4
round = 4
temperature = 0.8

[selection]
rho = 0.8
tau = 2
signature = "pass_fail"
selector = "largest"

[sandbox]
test_cpu_seconds = 2.0

[sft]
max_length = 1024
shard_rows = 64
"#
    );
    let path = dir.join("server.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

fn run_command(pipeline: &Path, runs: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ucoder-flow"));
    cmd.arg("run")
        .arg(pipeline)
        .arg("--runs-dir")
        .arg(runs)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// The server dies (SIGKILL) after answering a few completions and comes back three seconds
/// later on the same port: the run retries, finishes, and loses nothing — no request failed, and
/// every problem that reached sampling has all n candidates, though the server gives one choice
/// per request. Then the eval runs through the same backend. Log-probabilities are off
/// (`logprobs = false`): llama-cpp-python computes them over the whole vocabulary in Python, 6x
/// slower here; the unit tests in `src/backends/openai.rs` cover them.
#[test]
fn a_run_through_a_server_killed_and_restarted_mid_run_finishes_with_nothing_lost() {
    let dir = tempfile::tempdir().unwrap();
    let model = default_model();
    let port = free_port();
    let mut first = Server::start(&model, port, dir.path().join("server-1.log"));
    let runs = dir.path().join("runs");
    let mut run = run_command(&pipeline(dir.path(), &first.base_url()), &runs)
        .spawn()
        .expect("start ucoder-flow");

    let started = Instant::now();
    while first.completions_served() < 3 {
        if let Some(status) = run.try_wait().unwrap() {
            let out = run.wait_with_output().unwrap();
            panic!(
                "the run ended ({status}) before the server was killed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(900),
            "no completions served:\n{}",
            first.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    first.kill();
    let killed_after = first.completions_served();
    std::thread::sleep(Duration::from_secs(3));
    let second = Server::start(&model, port, dir.path().join("server-2.log"));

    let out = run.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        matches!(out.status.code(), Some(0 | 3)),
        "the run failed ({:?}):\n{stderr}",
        out.status
    );
    assert!(
        second.completions_served() > 0,
        "the restarted server answered nothing (the first answered {killed_after}):\n{stderr}"
    );
    assert!(
        stderr.contains("one choice per request") && stderr.contains("logprobs = false"),
        "the run must say that the server ignores n and that f(r) is off:\n{stderr}"
    );

    let iter = runs.join("server/iter-0");
    let rejections = Stage::<RejectionRow>::read(&iter.join("rejections")).unwrap();
    let failed: Vec<_> = rejections
        .iter()
        .filter(|r| r.reason == "backend_error")
        .collect();
    assert!(failed.is_empty(), "requests failed: {failed:?}");

    let candidates = Stage::<ResponseRow>::read(&iter.join("candidates")).unwrap();
    let mut per_problem = std::collections::BTreeMap::new();
    for row in &candidates {
        *per_problem.entry(row.problem_id).or_insert(0) += 1;
    }
    assert!(
        !per_problem.is_empty(),
        "no problem reached sampling:\n{stderr}"
    );
    for (problem, count) in per_problem {
        assert_eq!(
            count, 4,
            "problem {problem:?} has {count} candidates, not n = 4"
        );
    }

    // The eval goes through the same backend: HumanEval's first problem, greedy.
    let eval_toml = dir.path().join("humaneval-server.toml");
    let humaneval = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/humaneval.toml"),
    )
    .unwrap()
    .replacen(
        "prompt = \"chat\"",
        &format!(
            "prompt = \"chat\"\nbackend = \"openai\"\n[model.server]\nbase_url = \"{}\"\nmax_concurrency = 1",
            second.base_url()
        ),
        1,
    );
    std::fs::write(&eval_toml, humaneval).unwrap();
    let served = second.completions_served();
    let out = Command::new(env!("CARGO_BIN_EXE_ucoder-flow"))
        .arg("eval")
        .arg(&eval_toml)
        .args(["--limit", "1", "--max-tokens", "256", "--json", "--out"])
        .arg(dir.path().join("eval"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "eval through the server failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        second.completions_served() - served,
        2 + 1,
        "two probe requests, then one for the problem"
    );
    let summary: serde_json::Value = serde_json::from_str(&stdout).expect("eval --json");
    assert_eq!(summary["problems"], 1, "{summary}");
}

/// A server whose answers are not OpenAI completions is refused before any work, with an error
/// that names it and quotes what it said; nothing panics.
#[test]
fn a_server_answering_garbage_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let script = r#"
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def answer(self, body):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        self.answer(b'{"object": "list", "data": [{"id": "m"}]}')
    def do_POST(self):
        self.answer(b'{"choices": "certainly not a list"}')
    def log_message(self, *a):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"#;
    let python = ucoder_flow::sandbox::real_python().unwrap();
    let mut garbage = Command::new(python)
        .args(["-c", script, &port.to_string()])
        .spawn()
        .unwrap();
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the garbage server did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let base_url = format!("http://127.0.0.1:{port}/v1");
    let out = run_command(&pipeline(dir.path(), &base_url), &dir.path().join("runs"))
        .output()
        .unwrap();
    let _ = garbage.kill();
    let _ = garbage.wait();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&base_url)
            && stderr.contains("not an OpenAI completion")
            && stderr.contains("certainly not a list")
            && !stderr.contains("panicked"),
        "{stderr}"
    );
}
