//! The eval loop: for each problem not yet done, build and render the prompt, generate n
//! completions, extract programs, check them, and commit the rows every few problems. A killed
//! run resumes from the committed parts without regenerating finished problems; a folder made
//! with different settings is refused instead of being mixed.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use ucoder_operators::{BackendError, Execute, GenerationRequest, Prompt, SamplingParams};

use super::EvalError;
use super::check::{CheckOutcome, check};
use super::config::EvalConfig;
use super::humaneval::Problem;
use super::model::EvalModel;
use super::prompt;
use super::results::{SampleRecord, Summary, SummaryHeader};
use crate::backends::recorded::{PromptLine, write_jsonl};
use crate::progress::{Gauge, Reporter};
use crate::python::extract::{Extraction, extract};
use crate::store::{Manifest, Record, Stage, read_json, write_json_atomic};

/// The stage folder of sample rows inside the run folder.
pub const SAMPLES_STAGE: &str = "samples";
/// The summary's file name inside the run folder.
pub const SUMMARY_FILE: &str = "summary.json";

/// The settings that determine the samples: a resumed run must have the same.
pub(super) fn identity(config: &EvalConfig, source: &str) -> serde_json::Value {
    let d = &config.decoding;
    serde_json::json!({
        "source": source,
        "benchmark": config.benchmark.name,
        "prompt_style": config.model.prompt.as_str(),
        "temperature": d.temperature, "top_p": d.top_p, "top_k": d.top_k, "n": d.n,
        "max_tokens": d.max_tokens, "seed": d.seed,
        "sandbox": serde_json::to_value(&config.sandbox).expect("plain struct"),
    })
}

/// The summary's header for a run of `config` with the model `described`.
pub(super) fn header(config: &EvalConfig, described: String) -> SummaryHeader {
    SummaryHeader {
        model: described,
        benchmark: config.benchmark.name.clone(),
        prompt_style: config.model.prompt.as_str().into(),
        decoding: serde_json::to_value(&config.decoding).expect("plain struct"),
    }
}

/// The sampling seed of one problem: the run seed mixed with the problem id (FNV-1a).
pub fn problem_seed(run_seed: u64, problem_id: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ run_seed;
    for b in problem_id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The problems the configuration selects, in benchmark order.
pub fn select<'a>(config: &EvalConfig, problems: &'a [Problem]) -> &'a [Problem] {
    let limit = config
        .benchmark
        .limit
        .unwrap_or(problems.len())
        .min(problems.len());
    &problems[..limit]
}

/// Writes the rendered prompt of each selected problem to `path` (JSONL of [`PromptLine`]), for
/// generating the same prompts with another engine.
pub fn dump_prompts(
    config: &EvalConfig,
    problems: &[Problem],
    model: &EvalModel,
    path: &Path,
) -> Result<usize, EvalError> {
    let style = config.model.prompt;
    let mut lines = Vec::new();
    for p in select(config, problems) {
        let rendered = model
            .render(&p.task_id, &prompt::build(&p.prompt, style))
            .map_err(|e| EvalError::Backend {
                what: format!("rendering the prompt of {}", p.task_id),
                source: e.into(),
            })?;
        lines.push(PromptLine {
            task_id: p.task_id.clone(),
            prompt: rendered,
            max_tokens: config.decoding.max_tokens,
            temperature: config.decoding.temperature,
            stop: style.stop_sequences(),
            n: config.decoding.n,
            seed: problem_seed(config.decoding.seed, &p.task_id),
        });
    }
    write_jsonl(path, &lines)?;
    Ok(lines.len())
}

/// Runs (or resumes) the eval in `config.output.dir` and returns the summary, also written to
/// `summary.json`.
pub fn run(
    config: &EvalConfig,
    problems: &[Problem],
    model: &mut EvalModel,
    executor: &mut dyn Execute,
    reporter: &dyn Reporter,
) -> Result<Summary, EvalError> {
    let started = Instant::now();
    let out = &config.output.dir;
    let described = model.describe().to_string();
    let identity = identity(config, &described);
    Manifest::claim(out, "eval", identity, described.clone())?;
    let summary_path = out.join(SUMMARY_FILE);
    let earlier_wall = read_json::<Summary>(&summary_path)?.map_or(0.0, |s| s.wall_seconds);

    let mut stage = Stage::<SampleRecord>::open(&out.join(SAMPLES_STAGE), 0)?;
    let n = config.decoding.n;
    let selected = select(config, problems);
    let wanted: HashSet<&str> = selected.iter().map(|p| p.task_id.as_str()).collect();
    let mut records = dedupe(stage.read_all()?);
    records.retain(|r| wanted.contains(r.problem_id.as_str()));
    let done = finished_problems(&records, n);
    let todo: Vec<&Problem> = selected
        .iter()
        .filter(|p| !done.contains(&p.task_id))
        .collect();
    records.retain(|r| done.contains(&r.problem_id));

    let header = header(config, described);
    let summarize = |records: &[SampleRecord], started: Instant| {
        Summary::compute(
            records,
            selected.len(),
            &config.decoding.pass_at_k,
            header.clone(),
            earlier_wall + started.elapsed().as_secs_f64(),
        )
    };

    let mut progress = ProblemProgress::start(reporter, selected.len(), done.len());
    let mut pending: Vec<SampleRecord> = Vec::new();
    let mut pending_problems = 0;
    let (mut passed_now, mut samples_now) = (0usize, 0usize);
    for problem in todo {
        let rows = eval_problem(config, problem, model, executor)?;
        passed_now += rows.iter().filter(|r| r.passed).count();
        samples_now += rows.len();
        pending.extend(rows);
        pending_problems += 1;
        if pending_problems >= config.output.flush_every {
            commit(&mut stage, &mut pending, &mut records)?;
            pending_problems = 0;
            write_json_atomic(&summary_path, &summarize(&records, started))?;
        }
        progress.advance(format!("{passed_now}/{samples_now} samples passed"));
    }
    commit(&mut stage, &mut pending, &mut records)?;
    reporter.done();
    let summary = summarize(&records, started);
    write_json_atomic(&summary_path, &summary)?;
    Ok(summary)
}

/// The `problems` gauge of an eval: problems finished out of those selected.
pub(super) struct ProblemProgress<'a> {
    reporter: &'a dyn Reporter,
    total: u64,
    finished: u64,
}

impl<'a> ProblemProgress<'a> {
    /// Reports the problems done by earlier runs.
    pub(super) fn start(reporter: &'a dyn Reporter, total: usize, done: usize) -> Self {
        let progress = ProblemProgress {
            reporter,
            total: total as u64,
            finished: done as u64,
        };
        progress.report(format!("{done} done earlier"));
        progress
    }

    /// One more problem finished.
    pub(super) fn advance(&mut self, message: String) {
        self.finished += 1;
        self.report(message);
    }

    fn report(&self, message: String) {
        self.reporter.gauges(&[Gauge {
            name: "problems",
            done: self.finished,
            total: self.total,
            message,
        }]);
    }
}

/// Commits `pending` as a part of `stage` and moves the rows to `records`.
pub(super) fn commit<R: Record>(
    stage: &mut Stage<R>,
    pending: &mut Vec<R>,
    records: &mut Vec<R>,
) -> Result<(), EvalError> {
    stage.commit(pending)?;
    records.append(pending);
    Ok(())
}

/// Keeps the last row of each (problem, sample).
fn dedupe(rows: Vec<SampleRecord>) -> Vec<SampleRecord> {
    keep_last(rows, |r| (r.problem_id.clone(), r.sample_index))
}

/// Keeps the last row of each `key` (a resumed run may have committed a row again), in key order.
pub(super) fn keep_last<R, K: Ord>(rows: Vec<R>, key: impl Fn(&R) -> K) -> Vec<R> {
    let mut by_key: BTreeMap<K, R> = BTreeMap::new();
    for r in rows {
        by_key.insert(key(&r), r);
    }
    by_key.into_values().collect()
}

/// Problems with every sample index 0..n recorded.
pub(super) fn finished_problems(records: &[SampleRecord], n: usize) -> HashSet<String> {
    let mut seen: BTreeMap<&str, HashSet<u32>> = BTreeMap::new();
    for r in records {
        seen.entry(&r.problem_id)
            .or_default()
            .insert(r.sample_index);
    }
    seen.into_iter()
        .filter(|(_, idx)| (0..n as u32).all(|i| idx.contains(&i)))
        .map(|(p, _)| p.to_string())
        .collect()
}

/// The generation request of problem `id`: `n` completions of its rendered prompt with the
/// configured decoding and the problem's own seed.
fn request(config: &EvalConfig, id: &str, rendered: &str) -> GenerationRequest {
    let d = &config.decoding;
    GenerationRequest {
        prompt: Prompt::Text(rendered.to_string()),
        n: d.n as u32,
        params: SamplingParams {
            max_tokens: d.max_tokens as u32,
            temperature: d.temperature as f32,
            top_p: d.top_p as f32,
            top_k: d.top_k as u32,
            seed: problem_seed(d.seed, id),
            stop: config.model.prompt.stop_sequences(),
        },
    }
}

/// Generates, extracts and checks the samples of one problem.
pub(super) fn eval_problem(
    config: &EvalConfig,
    problem: &Problem,
    model: &mut EvalModel,
    executor: &mut dyn Execute,
) -> Result<Vec<SampleRecord>, EvalError> {
    let style = config.model.prompt;
    let id = &problem.task_id;
    let backend = |what: &str| {
        let what = format!("{what} for {id}");
        move |e: BackendError| EvalError::Backend {
            what,
            source: e.into(),
        }
    };
    let rendered = model
        .render(id, &prompt::build(&problem.prompt, style))
        .map_err(backend("rendering the prompt"))?;
    let n = config.decoding.n;
    let t0 = Instant::now();
    let generations = model
        .generate(request(config, id, &rendered))
        .map_err(backend("generating"))?;
    let generation_seconds = t0.elapsed().as_secs_f64() / n as f64;
    if generations.len() != n {
        return Err(EvalError::Backend {
            what: format!("generating for {id}"),
            source: format!("asked for {n} completions, got {}", generations.len()).into(),
        });
    }
    let extractions: Vec<Extraction> = generations
        .iter()
        .map(|g| extract(&problem.prompt, &problem.entry_point, &g.text, style))
        .collect();
    let programs: Vec<String> = extractions
        .iter()
        .filter_map(|e| e.program().map(str::to_string))
        .collect();
    let t1 = Instant::now();
    let mut outcomes = if programs.is_empty() {
        Vec::new()
    } else {
        check(executor, problem, &programs).map_err(backend("checking programs"))?
    };
    if outcomes.len() != programs.len() {
        return Err(EvalError::Backend {
            what: format!("checking programs for {id}"),
            source: format!("{} programs, {} outcomes", programs.len(), outcomes.len()).into(),
        });
    }
    let check_seconds = t1.elapsed().as_secs_f64() / programs.len().max(1) as f64;
    outcomes.reverse();
    let rows = generations
        .into_iter()
        .zip(extractions)
        .enumerate()
        .map(|(i, (g, e))| {
            let outcome = if e.program().is_some() {
                outcomes.pop().expect("one outcome per program")
            } else {
                CheckOutcome::default()
            };
            SampleRecord {
                problem_id: id.clone(),
                sample_index: i as u32,
                prompt: rendered.clone(),
                completion: g.text,
                program: e.program().map(str::to_string),
                extraction_status: e.status().to_string(),
                extraction_detail: e.detail(),
                passed: e.program().is_some() && outcome.passed(),
                program_error: outcome.program_error,
                test_verdicts: outcome.tests.into_iter().map(|t| t.verdict).collect(),
                completion_tokens: g.logprobs.tokens,
                // NaN: the backend reported no log-probabilities.
                logprob_sum: Some(g.logprobs.sum_logprob).filter(|s| !s.is_nan()),
                finish_reason: g.finish.label().to_string(),
                generation_seconds,
                check_seconds: if e.program().is_some() {
                    check_seconds
                } else {
                    0.0
                },
            }
        })
        .collect();
    Ok(rows)
}

/// The run folder's sample stage path (for tools that read results).
pub fn samples_dir(out: &Path) -> PathBuf {
    out.join(SAMPLES_STAGE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_differ_per_problem_and_run() {
        assert_ne!(
            problem_seed(0, "HumanEval/0"),
            problem_seed(0, "HumanEval/1")
        );
        assert_ne!(
            problem_seed(0, "HumanEval/0"),
            problem_seed(1, "HumanEval/0")
        );
        assert_eq!(
            problem_seed(7, "HumanEval/3"),
            problem_seed(7, "HumanEval/3")
        );
    }
}
