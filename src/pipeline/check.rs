//! `ucoder-flow check PIPELINE.toml`: what a run would refuse, found before it starts and
//! without generating or writing anything. In order: the settings (every field validated, the
//! core split planned), `[eval]` (its file and benchmark), the model (resolved; its weights,
//! tokenizer and chat template loaded), the sandbox (a worker started and a program run against
//! a test, with the isolation it got), and the run folder (new, resumed, or refused because it
//! was made with other settings or another model).
//!
//! Each check is an item with a verdict; a failed item does not stop the ones that do not depend
//! on it. [`CheckReport::passed`] is false when any item failed (warnings pass).

use std::path::Path;

use super::backends::require_chat_template;
use super::benchmark::Benchmark;
use super::{RunOptions, load_settings, model_identity, result_settings};
use crate::backends::sandbox::refusal_notes;
use crate::backends::{OpenAiServer, ServerSettings};
use crate::config::PipelineConfig;
use crate::llm::ModelText;
use crate::llm::{Engine, EngineOptions};
use crate::models::{self, ModelSource};
use crate::progress::Silent;
use crate::sandbox::{Job, SandboxConfig, SandboxPool, TestCase, Verdict};
use crate::store::Manifest;

/// How one check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Finding {
    Ok,
    /// The run can start, but the user should know (e.g. the model will be fetched first).
    Warning,
    Failed,
    /// Not checked, because a check it depends on failed.
    Skipped,
}

/// One checked thing.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckItem {
    pub what: &'static str,
    pub outcome: Finding,
    pub detail: String,
}

/// Everything `check` found.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CheckReport {
    pub items: Vec<CheckItem>,
}

impl CheckReport {
    /// No item failed.
    pub fn passed(&self) -> bool {
        self.items.iter().all(|i| i.outcome != Finding::Failed)
    }

    /// One line per item.
    pub fn table(&self) -> String {
        self.items
            .iter()
            .map(|i| {
                let mark = match i.outcome {
                    Finding::Ok => "ok     ",
                    Finding::Warning => "warning",
                    Finding::Failed => "FAILED ",
                    Finding::Skipped => "skipped",
                };
                format!("{mark} {:<11} {}\n", i.what, i.detail)
            })
            .collect()
    }

    fn add(&mut self, what: &'static str, outcome: Finding, detail: impl Into<String>) {
        self.items.push(CheckItem {
            what,
            outcome,
            detail: detail.into(),
        });
    }
}

/// Checks the pipeline at `path` with the command line's `options`.
pub fn check(path: &Path, options: &RunOptions) -> CheckReport {
    let mut report = CheckReport::default();
    let (config, split) = match load_settings(path, options) {
        Ok(loaded) => loaded,
        Err(e) => {
            report.add("settings", Finding::Failed, e.to_string());
            for what in ["eval", "model", "sandbox", "run folder"] {
                report.add(what, Finding::Skipped, "the settings do not load");
            }
            return report;
        }
    };
    report.add(
        "settings",
        Finding::Ok,
        format!(
            "`{}`: {} iteration(s) of {} problems, {} tests each, n = {}{}; cores: {} engine \
             thread(s), {} sandbox worker(s), {} dataflow worker(s)",
            config.name,
            config.iterations,
            config.problems.count,
            config.tests.per_problem,
            config.sampling.n,
            match &config.train {
                Some(train) if train.command.is_some() => ", trained by [train] command",
                Some(_) => ", trained by the built-in trainer",
                None => "",
            },
            split.engine_threads,
            split.sandbox_workers,
            split.dataflow_workers
        ),
    );
    match &config.eval {
        None => report.add(
            "eval",
            Finding::Ok,
            "no [eval] section: models are not measured",
        ),
        Some(section) => match Benchmark::load(path, section, &split, &Silent) {
            Ok(_) => report.add(
                "eval",
                Finding::Ok,
                format!("every model measured with {}", section.config.display()),
            ),
            Err(e) => report.add("eval", Finding::Failed, e.to_string()),
        },
    }
    let base = check_model(&config, &mut report);
    check_sandbox(&config, &mut report);
    match base {
        Some(base) => check_run_folder(&config, &base, &mut report),
        None => report.add("run folder", Finding::Skipped, "the model did not resolve"),
    }
    report
}

/// Resolves the model without fetching it and loads it; `None` when there is nothing on disk.
fn check_model(config: &PipelineConfig, report: &mut CheckReport) -> Option<ModelSource> {
    let name = &config.model.name;
    let cache = crate::fetch::cache_dir();
    if let Some(entry) = models::lookup(name) {
        let file = cache.join(entry.artifact.file_name);
        if !file.is_file() {
            report.add(
                "model",
                Finding::Warning,
                format!(
                    "`{name}` is not in the cache ({}): the run fetches it first ({} bytes), or \
                     run `ucoder-flow models fetch {name}`",
                    cache.display(),
                    entry.artifact.size
                ),
            );
            return None;
        }
    }
    let source = match models::resolve(name, &cache, &Silent) {
        Ok(source) => source,
        Err(e) => {
            report.add("model", Finding::Failed, e.to_string());
            return None;
        }
    };
    if let Some(settings) = config.model.server() {
        check_server(settings, &source, report);
        return Some(source);
    }
    let options = EngineOptions {
        threads: Some(1),
        ..Default::default()
    };
    let loaded = Engine::load(&source, &options)
        .map_err(|e| format!("{}: {e}", source.path().display()))
        .and_then(|engine| {
            require_chat_template(engine.text(), &source).map_err(|e| e.to_string())?;
            Ok(format!(
                "{} loads (context {} tokens, chat template present)",
                source.path().display(),
                engine.context_length()
            ))
        });
    match loaded {
        Ok(line) => report.add("model", Finding::Ok, line),
        Err(why) => report.add("model", Finding::Failed, why),
    }
    Some(source)
}

/// A server run: the tokenizer and chat template load from `source`, and the server answers the
/// probe the run starts with (what it lacks is a warning).
fn check_server(settings: ServerSettings, source: &ModelSource, report: &mut CheckReport) {
    let text = ModelText::load(source)
        .map_err(|e| format!("{}: {e}", source.path().display()))
        .and_then(|text| require_chat_template(&text, source).map_err(|e| e.to_string()));
    if let Err(why) = text {
        return report.add("model", Finding::Failed, why);
    }
    let url = settings.base_url.clone();
    match OpenAiServer::connect(settings) {
        Ok(server) => {
            report.add(
                "model",
                Finding::Ok,
                format!(
                    "{url} serves {}; prompts rendered with the chat template of {}",
                    server.model(),
                    source.path().display()
                ),
            );
            for note in server.notes() {
                report.add("model", Finding::Warning, note);
            }
        }
        Err(e) => report.add("model", Finding::Failed, e.to_string()),
    }
}

/// Starts one worker with the run's limits and runs a program against a passing and a failing
/// test: the verdicts must come back right.
fn check_sandbox(config: &PipelineConfig, report: &mut CheckReport) {
    let pool = match SandboxPool::new(SandboxConfig {
        workers: 1,
        limits: super::backends::limits(config),
        ..Default::default()
    }) {
        Ok(pool) => pool,
        Err(e) => {
            report.add("sandbox", Finding::Failed, e.to_string());
            return;
        }
    };
    let call = |args: &str, expected: &str| TestCase::Call {
        function: "double".into(),
        args: args.into(),
        expected: Some(expected.into()),
    };
    let job = Job {
        program: "def double(x):\n    return 2 * x\n".into(),
        tests: vec![call("[2]", "4"), call("[2]", "5")],
        limits: None,
        early_stop: None,
        float_tolerance: 0.0,
    };
    let verdicts: Vec<Verdict> = match pool.run(job) {
        Ok(result) => result.tests.into_iter().map(|t| t.verdict).collect(),
        Err(e) => {
            report.add(
                "sandbox",
                Finding::Failed,
                format!("running a program: {e}"),
            );
            return;
        }
    };
    if verdicts != [Verdict::Pass, Verdict::Fail] {
        report.add(
            "sandbox",
            Finding::Failed,
            format!("a known program got the verdicts {verdicts:?}, not [Pass, Fail]"),
        );
        return;
    }
    let refused = refusal_notes(pool.isolation());
    if refused.is_empty() {
        report.add(
            "sandbox",
            Finding::Ok,
            "a worker runs programs with every isolation step".to_string(),
        );
    } else {
        report.add("sandbox", Finding::Warning, refused.join("; "));
    }
}

/// Whether the run folder would be created, resumed or refused.
fn check_run_folder(config: &PipelineConfig, base: &ModelSource, report: &mut CheckReport) {
    let dir = config.run_dir();
    match Manifest::inspect(&dir, &result_settings(config), &model_identity(base)) {
        Ok(None) => report.add(
            "run folder",
            Finding::Ok,
            format!("{} is new: the run starts there", dir.display()),
        ),
        Ok(Some(manifest)) => {
            let done: Vec<&str> = manifest
                .stages
                .iter()
                .filter(|(_, entry)| entry["complete"] == serde_json::Value::Bool(true))
                .map(|(name, _)| name.as_str())
                .collect();
            report.add(
                "run folder",
                Finding::Ok,
                format!(
                    "{} holds this run: it resumes{}",
                    dir.display(),
                    if done.is_empty() {
                        String::new()
                    } else {
                        format!(" after {}", done.join(", "))
                    }
                ),
            );
        }
        Err(e) => report.add("run folder", Finding::Failed, e.to_string()),
    }
}
