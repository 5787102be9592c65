//! `ucoder-flow check`: a pipeline that would run passes (the small model loads, a sandbox
//! worker judges a program right, the run folder is new); one that would not fails, naming what:
//! a bad field, or a run folder made with other settings. Nothing is written.

use std::path::Path;
use std::process::{Command, Output};

fn check(pipeline: &Path, runs: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ucoder-flow"))
        .arg("check")
        .arg(pipeline)
        .arg("--runs-dir")
        .arg(runs)
        .args(["--model", ucoder_flow::models::TEST_MODEL])
        .output()
        .expect("start ucoder-flow check")
}

fn smoke() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/smoke.toml")
}

#[test]
fn a_runnable_pipeline_passes_and_nothing_is_written() {
    ucoder_flow::models::test_model().expect("test model");
    let runs = tempfile::tempdir().unwrap();
    let out = check(&smoke(), runs.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for what in ["settings", "eval", "model", "sandbox", "run folder"] {
        let line = stdout
            .lines()
            .find(|l| l[8..].starts_with(what))
            .unwrap_or_else(|| panic!("no `{what}` line in\n{stdout}"));
        assert!(
            line.starts_with("ok") || line.starts_with("warning"),
            "{line}"
        );
    }
    assert!(stdout.contains("is new"), "{stdout}");
    assert_eq!(std::fs::read_dir(runs.path()).unwrap().count(), 0);
}

#[test]
fn a_bad_field_and_a_foreign_run_folder_fail_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    let text = std::fs::read_to_string(smoke()).unwrap();
    assert!(text.contains("temperature = 0.8"));
    std::fs::write(
        &bad,
        text.replacen("temperature = 0.8", "temperature = -1.0", 1),
    )
    .unwrap();
    let out = check(&bad, dir.path());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.starts_with("FAILED  settings") && stdout.contains("temperature"),
        "{stdout}"
    );

    // A folder claimed by a run with other settings is refused before anything runs.
    ucoder_flow::models::test_model().expect("test model");
    let runs = dir.path().join("runs");
    std::fs::create_dir_all(runs.join("smoke")).unwrap();
    ucoder_flow::store::Manifest::claim(
        &runs.join("smoke"),
        "ipc",
        serde_json::json!({"seed": 1}),
        "another model".into(),
    )
    .unwrap();
    let out = check(&smoke(), &runs);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let line = stdout
        .lines()
        .find(|l| l.contains("run folder"))
        .expect("a run folder line");
    assert!(
        line.starts_with("FAILED") && line.contains("different settings"),
        "{line}"
    );
}
