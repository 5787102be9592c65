//! The eval's rerank mode end to end with the real sandbox: a scripted model (its tests and
//! samples written by hand, so every pick and figure below is computed by hand), kill and
//! resume, `--rescore` against fresh runs, and the small model through the whole mode.

use std::path::Path;
use std::sync::{Arc, Mutex};

use ucoder_flow::eval::config::{EvalConfig, Overrides};
use ucoder_flow::eval::humaneval::{self, Problem};
use ucoder_flow::eval::prompt::PromptSpec;
use ucoder_flow::eval::rerank::rows::{
    GeneratedRunRow, GeneratedTestRow, MethodScoreRow, ProblemScoreRow,
};
use ucoder_flow::eval::rerank::runner::{METHODS_TABLE, PROBLEMS_TABLE, RUNS_STAGE, TESTS_STAGE};
use ucoder_flow::eval::rerank::{self, RerankSandbox, RerankSummary};
use ucoder_flow::eval::{EvalModel, SampleRecord, check, runner};
use ucoder_flow::progress::Silent;
use ucoder_flow::store::Stage;
use ucoder_operators::{
    BackendError, Completion, FinishReason, Generate, Generation, GenerationRequest,
    LogprobSummary, Prompt,
};

const CORRECT: &str = "    for i, a in enumerate(numbers):\n        for j, b in enumerate(numbers):\n            if i != j and abs(a - b) < threshold:\n                return True\n    return False\n";
const ALWAYS_FALSE: &str = "    return False\n";
const MORE_THAN_ONE: &str = "    return len(numbers) > 1\n";

/// Problem 0's tests: three right, one with a wrong expected value (the canonical solution
/// says True), one that uses a name it never defines (dropped by TestCheck).
const TESTS_0: &str = "assert has_close_elements([1.0, 2.0, 3.0], 0.5) == False\n\
assert has_close_elements([1.0, 2.8, 3.0], 0.3) == True\n\
assert has_close_elements([1.0, 1.05], 0.1) == True\n\
assert has_close_elements([1.0, 5.0], 10.0) == False\n\
assert has_close_elements(undefined_list, 0.5) == True\n<TESTS_END>";

/// A model whose answers are written by hand: tests by problem, six samples per problem (two
/// correct, three `return False`, one `len > 1` on problem 0; all wrong on problem 1) and a wrong
/// greedy answer. Fails after `fail_after` calls, as a killed run stops.
struct Scripted {
    problems: Vec<Problem>,
    calls: Arc<Mutex<usize>>,
    fail_after: Option<usize>,
}

fn completion(text: String, sum_logprob: f64) -> Completion {
    Completion {
        text,
        logprobs: LogprobSummary {
            tokens: 10,
            sum_logprob,
        },
        finish: FinishReason::Stop,
    }
}

impl Scripted {
    fn answer(&self, request: &GenerationRequest) -> Generation {
        let text = match &request.prompt {
            Prompt::Chat(messages) => messages[0].content.clone(),
            Prompt::Text(text) => text.clone(),
        };
        let index = self
            .problems
            .iter()
            .position(|p| text.contains(&format!("def {}(", p.entry_point)))
            .expect("a prompt names its problem");
        let problem = &self.problems[index];
        let program = |body: &str| format!("```python\n{}{body}```", problem.prompt);
        match (&request.prompt, index) {
            (Prompt::Chat(_), 0) => Ok(vec![completion(TESTS_0.into(), -1.0)]),
            (Prompt::Chat(_), _) => Ok(vec![completion("no tests today".into(), -1.0)]),
            (Prompt::Text(_), _) if request.params.temperature == 0.0 => {
                Ok(vec![completion(program(MORE_THAN_ONE), -0.5)])
            }
            (Prompt::Text(_), 0) => Ok(vec![
                completion(program(CORRECT), -1.0),
                completion(program(ALWAYS_FALSE), -5.0),
                completion(program(CORRECT), -1.0),
                completion(program(ALWAYS_FALSE), -5.0),
                completion(program(MORE_THAN_ONE), -0.5),
                completion(program(ALWAYS_FALSE), -5.0),
            ]),
            (Prompt::Text(_), _) => Ok((0..6)
                .map(|_| completion(program("    return []\n"), -1.0))
                .collect()),
        }
    }
}

impl Generate for Scripted {
    fn generate(&mut self, requests: &[GenerationRequest]) -> Vec<Generation> {
        requests
            .iter()
            .map(|request| {
                let mut calls = self.calls.lock().unwrap();
                if self.fail_after == Some(*calls) {
                    return Err(BackendError {
                        backend: "test".into(),
                        message: "simulated crash".into(),
                    });
                }
                *calls += 1;
                self.answer(request)
            })
            .collect()
    }
}

fn problems() -> Vec<Problem> {
    humaneval::load(&ucoder_flow::fetch::cache_dir(), &Silent)
        .unwrap()
        .into_iter()
        .take(2)
        .collect()
}

fn scripted(fail_after: Option<usize>) -> (EvalModel, Arc<Mutex<usize>>) {
    let calls = Arc::new(Mutex::new(0));
    let generator = Scripted {
        problems: problems(),
        calls: Arc::clone(&calls),
        fail_after,
    };
    let render = |_: &str, spec: &PromptSpec| {
        Ok(match spec {
            PromptSpec::ChatUser(text) | PromptSpec::Completion(text) => text.clone(),
        })
    };
    (EvalModel::new("scripted".into(), render, generator), calls)
}

fn config(out: &Path, selector: &str, model: &str) -> EvalConfig {
    let text = format!(
        "[model]\nname = \"{model}\"\n[benchmark]\nlimit = 2\n[decoding]\ntemperature = 0.8\nn = 6\nmax_tokens = 160\n\
         [tests]\nper_problem = 5\nbatch = 5\n\
         [selection]\nrho = 0.8\ntau = 2\nsignature = \"pass_fail\"\nselector = \"{selector}\"\n\
         [sandbox]\nworkers = 1\n[output]\ndir = {out:?}\nflush_every = 1\n"
    );
    EvalConfig::parse(&text, Path::new("rerank.toml"), &Overrides::default()).unwrap()
}

/// Runs (or resumes) the rerank eval of `cfg` with the scripted model.
fn run_scripted(
    cfg: &EvalConfig,
    fail_after: Option<usize>,
) -> (Result<RerankSummary, ucoder_flow::eval::EvalError>, usize) {
    let (mut model, calls) = scripted(fail_after);
    let pool = check::open_pool(&cfg.sandbox).unwrap();
    let mut judge = check::executor(pool.clone(), &cfg.sandbox);
    let second = check::open_seeded_pool(&cfg.sandbox, 1).unwrap();
    let mut sandbox = RerankSandbox::new(pool, Some(second), &cfg.sandbox);
    let result = rerank::run(
        cfg,
        &problems(),
        &mut model,
        &mut judge,
        &mut sandbox,
        &Silent,
    );
    let calls = *calls.lock().unwrap();
    (result, calls)
}

fn figures(summary: &RerankSummary, method: &str) -> (f64, f64, Option<f64>) {
    let m = summary
        .methods
        .iter()
        .find(|m| m.method == method)
        .unwrap_or_else(|| panic!("no method {method}"));
    (m.pass_at_1, m.coverage, m.precision)
}

/// The summary without its wall time (which differs between runs).
fn timeless(mut s: RerankSummary) -> RerankSummary {
    s.samples.wall_seconds = 0.0;
    s.samples.generation_seconds = 0.0;
    s.samples.check_seconds = 0.0;
    s
}

fn read<R: ucoder_flow::store::Record>(dir: &Path) -> Vec<R> {
    Stage::<R>::read(dir).unwrap()
}

#[test]
fn hand_computed_picks_of_every_method() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "largest", "scripted");
    let (summary, calls) = run_scripted(&cfg, None);
    let summary = summary.unwrap();
    assert_eq!(
        calls, 6,
        "per problem: one test batch, the samples, the greedy answer"
    );
    assert_eq!(summary.problems, 2);

    // Problem 0's tests: five parsed, the undefined name dropped, one of four kept is wrong.
    let tests: Vec<GeneratedTestRow> = read(&dir.path().join(TESTS_STAGE));
    assert_eq!(tests.len(), 5, "{tests:#?}");
    assert_eq!(tests.iter().filter(|t| t.kept).count(), 4);
    let dropped = tests.iter().find(|t| !t.kept).unwrap();
    assert!(dropped.code.contains("undefined_list"));
    assert!(
        dropped
            .dropped_because
            .as_deref()
            .unwrap()
            .starts_with("NameError")
    );
    let canonical: Vec<Option<&str>> = tests.iter().map(|t| t.canonical.as_deref()).collect();
    assert_eq!(
        canonical,
        [Some("pass"), Some("pass"), Some("pass"), Some("fail"), None]
    );
    assert_eq!((summary.tests_kept, summary.tests_right), (4, 3));
    let runs: Vec<GeneratedRunRow> = read(&dir.path().join(RUNS_STAGE));
    assert_eq!(
        runs.len(),
        6 * 4,
        "every sample of problem 0 on every kept test"
    );

    // Samples (correct: 0 and 2) on the kept tests: correct 1110, `False` 1001 (three of them),
    // `len > 1` 0110. Largest cluster: `False`, wrong. Dual agreement: 3² × 2 = 18 beats
    // 2² × 3 = 12, right. Output signatures cluster the same way.
    let half = 0.5;
    assert_eq!(
        figures(&summary, "largest/pass_fail"),
        (0.0, half, Some(0.0))
    );
    assert_eq!(figures(&summary, "largest/output"), (0.0, half, Some(0.0)));
    assert_eq!(
        figures(&summary, "dual_agreement/pass_fail"),
        (half, half, Some(1.0))
    );
    assert_eq!(
        figures(&summary, "dual_agreement/output"),
        (half, half, Some(1.0))
    );
    // Nobody passes all four kept tests: random passing falls back to a random sample (2/6).
    let third = 2.0 / 6.0;
    assert_eq!(
        figures(&summary, "random passing"),
        (third / 2.0, 0.0, None)
    );
    // Only the correct samples pass more than half.
    assert_eq!(
        figures(&summary, "success rate > 0.5"),
        (half, half, Some(1.0))
    );
    // `len > 1` is the most fluent sample and the greedy answer: wrong.
    assert_eq!(figures(&summary, "lowest perplexity").0, 0.0);
    assert_eq!(figures(&summary, "greedy").0, 0.0);
    assert_eq!(figures(&summary, "sampled").0, third / 2.0);
    assert_eq!(figures(&summary, "oracle (pass@n)").0, half);
    assert!(summary.methods.iter().filter(|m| m.pipeline).count() == 1);
    // Adaptive sampling in rounds of one (n / 4 rounded down, at least 1): on problem 0 the `False`
    // cluster could still overtake until the last sample, so all six are drawn and the pick is
    // the largest cluster's; problem 1 has no tests and stops after its first round.
    let adaptive = summary
        .methods
        .iter()
        .find(|m| m.method == "adaptive (rounds of 1)")
        .unwrap();
    assert_eq!((adaptive.pass_at_1, adaptive.samples_drawn), (0.0, 7));
    assert_eq!(figures(&summary, "largest/pass_fail").0, adaptive.pass_at_1);

    let rows: Vec<ProblemScoreRow> = read(&dir.path().join(PROBLEMS_TABLE));
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].diagnosis, "wrong cluster won");
    assert_eq!(
        (rows[0].pick, rows[0].pick_cluster_size),
        (Some(1), Some(3))
    );
    assert_eq!((rows[0].samples_correct, rows[0].tests_right), (2, Some(3)));
    assert_eq!(rows[1].diagnosis, "no correct sample");
    assert_eq!((rows[1].tests_kept, rows[1].pick), (0, None));
    let methods: Vec<MethodScoreRow> = read(&dir.path().join(METHODS_TABLE));
    assert_eq!(methods.len(), 2 * summary.methods.len());
    assert!(summary.table().contains("dual_agreement/pass_fail"));
}

#[test]
fn killed_run_resumes_and_rescoring_equals_a_fresh_run() {
    let full = tempfile::tempdir().unwrap();
    let (fresh, _) = run_scripted(&config(full.path(), "largest", "scripted"), None);
    let fresh = fresh.unwrap();

    // Killed at problem 1's samples (call 5): problem 0's rows are committed.
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "largest", "scripted");
    let (killed, _) = run_scripted(&cfg, Some(4));
    assert!(killed.is_err());
    let (resumed, calls) = run_scripted(&cfg, None);
    assert_eq!(calls, 3, "only problem 1 is generated again");
    assert_eq!(timeless(resumed.unwrap()), timeless(fresh.clone()));
    let samples = |d: &Path| {
        let mut rows: Vec<SampleRecord> = read(&runner::samples_dir(d));
        for r in &mut rows {
            (r.generation_seconds, r.check_seconds) = (0.0, 0.0);
        }
        rows.sort_by(|a, b| (&a.problem_id, a.sample_index).cmp(&(&b.problem_id, b.sample_index)));
        rows
    };
    assert_eq!(samples(dir.path()), samples(full.path()));

    // Rescoring the same settings gives the run's figures; another selector gives what a fresh
    // run with that selector gives, without a model.
    let rescored = rerank::rescore(&cfg, &problems()).unwrap();
    assert_eq!(timeless(rescored), timeless(fresh));
    let dual = config(dir.path(), "dual_agreement", "scripted");
    let rescored = rerank::rescore(&dual, &problems()).unwrap();
    let other = tempfile::tempdir().unwrap();
    let (fresh_dual, _) = run_scripted(&config(other.path(), "dual_agreement", "scripted"), None);
    assert_eq!(timeless(rescored.clone()), timeless(fresh_dual.unwrap()));
    let rows: Vec<ProblemScoreRow> = read(&dir.path().join(PROBLEMS_TABLE));
    assert_eq!(
        rows[0].diagnosis, "right",
        "the tables follow the rescoring"
    );

    // Other test settings are other rows: refused, naming what changed.
    let mut changed = cfg.clone();
    changed.tests.as_mut().unwrap().per_problem = 4;
    let err = rerank::rescore(&changed, &problems())
        .unwrap_err()
        .to_string();
    assert!(err.contains("[tests]"), "{err}");
    let empty = tempfile::tempdir().unwrap();
    let err = rerank::rescore(&config(empty.path(), "largest", "x"), &problems())
        .unwrap_err()
        .to_string();
    assert!(err.contains("no rerank run"), "{err}");
}

#[test]
fn small_model_through_the_whole_mode() {
    let source = ucoder_flow::models::test_model().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), "largest", "smollm2-135m-instruct");
    cfg.decoding.n = 3;
    let mut model = EvalModel::engine(&source, &cfg).unwrap();
    let pool = check::open_pool(&cfg.sandbox).unwrap();
    let mut judge = check::executor(pool.clone(), &cfg.sandbox);
    let second = check::open_seeded_pool(&cfg.sandbox, 1).unwrap();
    let mut sandbox = RerankSandbox::new(pool, Some(second), &cfg.sandbox);
    let summary = rerank::run(
        &cfg,
        &problems(),
        &mut model,
        &mut judge,
        &mut sandbox,
        &Silent,
    )
    .unwrap();
    assert_eq!((summary.problems, summary.samples.samples), (2, 6));
    let rows: Vec<ProblemScoreRow> = read(&dir.path().join(PROBLEMS_TABLE));
    let runs: Vec<GeneratedRunRow> = read(&dir.path().join(RUNS_STAGE));
    let expected: u32 = rows
        .iter()
        .map(|r| r.samples_with_program * r.tests_kept)
        .sum();
    assert_eq!(
        runs.len() as u32,
        expected,
        "every sample with a program on every kept test"
    );
    for r in &rows {
        assert!(
            r.tests_kept <= r.tests_generated && r.tests_generated <= 5,
            "{r:?}"
        );
        assert_eq!(r.samples, 3);
        assert_eq!(r.pick_correct, r.diagnosis == "right", "{r:?}");
    }
    assert_eq!(summary.methods.len(), 12);
    assert!(
        summary
            .methods
            .iter()
            .all(|m| (0.0..=1.0).contains(&m.pass_at_1))
    );
}

#[test]
fn judging_the_stored_rows_again_reproduces_the_run_without_a_model() {
    let first = tempfile::tempdir().unwrap();
    let (fresh, _) = run_scripted(&config(first.path(), "largest", "scripted"), None);
    let fresh = fresh.unwrap();

    // Another sandbox setting is allowed; on these tests it changes nothing.
    let second = tempfile::tempdir().unwrap();
    let mut cfg = config(second.path(), "largest", "scripted");
    cfg.sandbox.float_tolerance = 0.0;
    let pool = check::open_pool(&cfg.sandbox).unwrap();
    let seed = check::open_seeded_pool(&cfg.sandbox, 1).unwrap();
    let mut sandbox = RerankSandbox::new(pool, Some(seed), &cfg.sandbox);
    let again = rerank::rejudge(&cfg, &problems(), first.path(), &mut sandbox, &Silent).unwrap();
    assert_eq!(timeless(again), timeless(fresh));
    let tests = |d: &Path| read::<GeneratedTestRow>(&d.join(TESTS_STAGE));
    assert_eq!(tests(second.path()), tests(first.path()));

    // Other [tests] settings would need other samples of the model: refused.
    let third = tempfile::tempdir().unwrap();
    let mut other = config(third.path(), "largest", "scripted");
    other.tests.as_mut().unwrap().batch = 4;
    let err = rerank::rejudge(&other, &problems(), first.path(), &mut sandbox, &Silent)
        .unwrap_err()
        .to_string();
    assert!(err.contains("[tests]"), "{err}");
}
