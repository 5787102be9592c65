//! Ctrl-C on a long command: `ucoder-flow eval` (the small model, the real sandbox) gets SIGINT
//! after it committed its first problems. It must exit 130, say how to resume, leave nothing of
//! its sandbox workers in the temp folder, and the same command must then finish the eval from
//! what was committed (every problem exactly once).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ucoder_flow::eval::SampleRecord;
use ucoder_flow::eval::runner;
use ucoder_flow::store::Stage;

const PROBLEMS: usize = 10;

fn eval(config: &Path, tmp: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ucoder-flow"));
    cmd.arg("eval")
        .arg(config)
        .arg("--quiet")
        .env("TMPDIR", tmp)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

fn committed_parts(samples: &Path) -> usize {
    std::fs::read_dir(samples).map_or(0, |entries| {
        entries
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".parquet"))
            .count()
    })
}

#[test]
fn sigint_stops_cleanly_and_the_same_command_resumes() {
    ucoder_flow::models::test_model().expect("test model");
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let out = dir.path().join("eval");
    let config = dir.path().join("interrupted.toml");
    std::fs::write(
        &config,
        format!(
            "[model]\nname = \"smollm2-135m-instruct\"\n[benchmark]\nlimit = {PROBLEMS}\n\
             [decoding]\nmax_tokens = 160\n[sandbox]\nworkers = 1\n\
             [output]\ndir = {out:?}\nflush_every = 2\n"
        ),
    )
    .unwrap();

    let child = eval(&config, &tmp).spawn().expect("start ucoder-flow eval");
    let samples = runner::samples_dir(&out);
    let deadline = Instant::now() + Duration::from_secs(900);
    while committed_parts(&samples) == 0 {
        assert!(Instant::now() < deadline, "no committed part after 900 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    // SAFETY: kill has no memory effects.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let stopped = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&stopped.stderr);
    if stopped.status.success() {
        // The eval finished before the signal landed: nothing to check but its result.
        eprintln!("the eval ended before SIGINT; the interruption was not exercised");
    } else {
        assert_eq!(stopped.status.code(), Some(130), "{stderr}");
        assert!(
            stderr.contains("stopped by SIGINT")
                && stderr.contains("To resume, run the same command"),
            "{stderr}"
        );
        assert!(
            stderr.contains(&config.display().to_string()),
            "the resume command names the config: {stderr}"
        );
        assert!(!stderr.contains("Traceback"), "{stderr}");
    }
    let left: Vec<String> = std::fs::read_dir(&tmp)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("ucoder-sandbox-"))
        .collect();
    assert!(left.is_empty(), "left in the temp folder: {left:?}");
    let committed = committed_parts(&samples);

    let resumed = eval(&config, &tmp).output().unwrap();
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    let rows = Stage::<SampleRecord>::read(&samples).unwrap();
    let mut problems: Vec<&str> = rows.iter().map(|r| r.problem_id.as_str()).collect();
    problems.sort_unstable();
    problems.dedup();
    assert_eq!(
        (rows.len(), problems.len()),
        (PROBLEMS, PROBLEMS),
        "every problem once after resuming ({committed} parts were committed before SIGINT)"
    );
}
