//! `ucoder-flow eval` end to end on a few HumanEval problems: the small model generates in
//! process (greedy), the real sandbox checks, results land in Parquet and summary.json.

use std::path::Path;

use ucoder_flow::eval::config::{EvalConfig, Overrides};
use ucoder_flow::eval::runner;
use ucoder_flow::eval::{EvalModel, SampleRecord, check, humaneval};
use ucoder_flow::progress::Silent;
use ucoder_flow::store::Stage;

fn config(out: &Path) -> EvalConfig {
    let text = format!(
        "[model]\nname = \"smollm2-135m-instruct\"\n[benchmark]\nlimit = 3\n[decoding]\nmax_tokens = 160\n[sandbox]\nworkers = 1\n[output]\ndir = {out:?}\nflush_every = 2\n"
    );
    EvalConfig::parse(&text, Path::new("e2e.toml"), &Overrides::default()).unwrap()
}

#[test]
fn small_model_real_sandbox_end_to_end() {
    let problems = humaneval::load(
        &ucoder_flow::fetch::cache_dir(),
        &ucoder_flow::progress::Silent,
    )
    .unwrap();
    let model = ucoder_flow::models::test_model().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let mut model = EvalModel::engine(&model, &cfg).unwrap();
    let mut executor = check::open_executor(&cfg.sandbox).unwrap();

    // The sandbox passes the canonical solution and fails a wrong one.
    let p0 = &problems[0];
    let wrong = format!("{}    return not True\n", p0.prompt);
    let outcomes = check::check(&mut executor, p0, &[p0.canonical_program(), wrong]).unwrap();
    assert!(outcomes[0].passed(), "{:?}", outcomes[0]);
    assert!(
        !outcomes[1].passed() && outcomes[1].tests.iter().any(|t| t.verdict == "fail"),
        "{:?}",
        outcomes[1]
    );

    let summary = runner::run(&cfg, &problems, &mut model, &mut executor, &Silent).unwrap();
    assert_eq!(
        (summary.problems, summary.samples, summary.complete),
        (3, 3, true)
    );
    let rows = Stage::<SampleRecord>::open(&runner::samples_dir(dir.path()), 9)
        .unwrap()
        .read_all()
        .unwrap();
    assert_eq!(rows.len(), 3);
    for r in &rows {
        assert!(
            r.prompt.contains("Complete the following Python function"),
            "{r:?}"
        );
        assert!(
            r.completion_tokens > 0 && r.logprob_sum.is_some_and(|l| l < 0.0),
            "{r:?}"
        );
        if r.program.is_some() {
            assert!(
                r.program_error.is_some() || !r.test_verdicts.is_empty(),
                "{r:?}"
            );
        } else {
            assert!(!r.extraction_detail.is_empty());
        }
    }
    // Greedy decoding reproduces itself: a second run in another folder gives the same completions.
    let dir2 = tempfile::tempdir().unwrap();
    let cfg2 = config(dir2.path());
    runner::run(&cfg2, &problems, &mut model, &mut executor, &Silent).unwrap();
    let rows2 = Stage::<SampleRecord>::open(&runner::samples_dir(dir2.path()), 9)
        .unwrap()
        .read_all()
        .unwrap();
    let texts = |rows: &[SampleRecord]| {
        rows.iter()
            .map(|r| r.completion.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(texts(&rows), texts(&rows2));
}
