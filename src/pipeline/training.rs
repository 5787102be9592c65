//! The loop's training step: M_t fine-tuned on iteration t's shards (`<run>/iter-<t>/sft`) into
//! M_{t+1} (`<run>/iter-<t>/train/model`), by the built-in trainer or by `[train] command`.
//!
//! **Built-in.** The run starts `ucoder-flow train PIPELINE --data … --model … --out …` as a child
//! process ([`TrainerProgram`]): training gets every core and its own thread pools and memory
//! settings, and hands the memory back to the system when it ends, while the run's engine
//! threads are sized for generation next to the sandbox. The child checkpoints and resumes
//! itself; its `train.json` is the report.
//!
//! **External** (`[train] command`). The command runs through `sh -c` in the run's working
//! directory with these variables:
//! - `UCODER_TRAIN_DATA`: the SFT folder (Parquet shards; docs/ARCHITECTURE.md, "SFT shards");
//! - `UCODER_TRAIN_BASE`: the model to start from, a safetensors folder (a GGUF model is exported
//!   to `<out>/base` first);
//! - `UCODER_TRAIN_OUT`: the output folder; the command writes the trained model to
//!   `$UCODER_TRAIN_OUT/model` (`config.json`, `*.safetensors`; tokenizer files missing there are
//!   copied from the base);
//! - `UCODER_TRAIN_CONFIG`: the `[train]` section as JSON; `UCODER_TRAIN_SEED`: the seed.
//!
//! Exit status 0 and a loadable `model/` folder mean done; anything else stops the run, and
//! running it again starts the command again (resuming is the command's own business).
//!
//! Either way M_{t+1}'s [`ModelRecord`] is written to the manifest last, with the hashes of the
//! data and the weights; a present record means the step is done.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use super::PipelineError;
use super::lineage::{ModelRecord, Training, digest_folder, model_name};
use crate::models::{ModelSource, weights_sha256};
use crate::process::end_with_starting_thread;
use crate::progress::Reporter;
use crate::store::read_json;
use crate::train::{TrainConfig, TrainSummary};

/// The program that runs the built-in trainer: `exe train …` followed by `args` (for example the
/// command line's `--log-format`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrainerProgram {
    pub exe: PathBuf,
    pub args: Vec<String>,
}

impl TrainerProgram {
    /// This executable (the `ucoder-flow` binary when the run was started from it), to train after
    /// iteration `iteration`.
    pub fn current(iteration: u32) -> Result<TrainerProgram, PipelineError> {
        let exe = std::env::current_exe().map_err(|e| PipelineError::Train {
            iteration,
            why: format!("cannot find this executable to start the trainer: {e}"),
        })?;
        Ok(TrainerProgram {
            exe,
            args: Vec::new(),
        })
    }
}

/// One training step of the loop.
pub struct TrainStep<'a> {
    pub config: &'a TrainConfig,
    /// The pipeline file (the built-in trainer reads its `[train]` section and seed).
    pub pipeline: &'a Path,
    pub run_dir: &'a Path,
    /// t: trains iteration t's shards into M_{t+1}.
    pub index: u32,
    /// M_t.
    pub base: &'a ModelSource,
    pub seed: u64,
    pub program: &'a TrainerProgram,
}

impl TrainStep<'_> {
    fn data(&self) -> PathBuf {
        self.run_dir
            .join(super::iteration::iteration_name(self.index))
            .join("sft")
    }

    fn out(&self) -> PathBuf {
        self.run_dir
            .join(super::iteration::iteration_name(self.index))
            .join("train")
    }

    fn fail(&self, why: String) -> PipelineError {
        PipelineError::Train {
            iteration: self.index,
            why,
        }
    }
}

/// Trains M_{t+1} (or returns its record when an earlier run did); see the module documentation.
pub fn train_next_model(
    step: &TrainStep<'_>,
    reporter: &dyn Reporter,
) -> Result<ModelRecord, PipelineError> {
    let name = model_name(step.index + 1);
    if let Some(done) = ModelRecord::load(step.run_dir, &name)? {
        reporter.note(&format!("{name} is trained: {}", done.path.display()));
        return Ok(done);
    }
    let started = Instant::now();
    let (data, out) = (step.data(), step.out());
    let data_sha256 = digest_folder(&data)?;
    let (trainer, report) = match &step.config.command {
        None => {
            reporter.note(&format!(
                "training {name} from {} on {}",
                model_name(step.index),
                data.display()
            ));
            let report = run_builtin(step, &data, &out)?;
            (
                format!("built-in ({})", step.config.method.name()),
                Some(report),
            )
        }
        Some(command) => {
            reporter.note(&format!(
                "training {name} from {} on {} with `{command}`",
                model_name(step.index),
                data.display()
            ));
            run_command(step, command, &data, &out)?;
            (format!("command: {command}"), None)
        }
    };
    let model_dir = out.join("model");
    let source = crate::models::resolve(&model_dir.to_string_lossy(), Path::new(""), reporter)
        .map_err(|e| step.fail(format!("the trained model: {e}")))?;
    let record = ModelRecord {
        name,
        path: model_dir,
        weights_sha256: weights_sha256(&source)?,
        trained: Some(Training {
            from: model_name(step.index),
            data,
            data_sha256,
            folder: out,
            trainer,
            report,
            wall_s: started.elapsed().as_secs_f64(),
        }),
        eval: None,
    };
    record.save(step.run_dir)?;
    Ok(record)
}

/// `ucoder-flow train` in a child process; returns its `train.json`.
fn run_builtin(
    step: &TrainStep<'_>,
    data: &Path,
    out: &Path,
) -> Result<TrainSummary, PipelineError> {
    let threads = step
        .config
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let mut command = Command::new(&step.program.exe);
    command
        .arg("train")
        .arg(step.pipeline)
        .arg("--data")
        .arg(data)
        .arg("--model")
        .arg(step.base.path())
        .arg("--out")
        .arg(out)
        .arg("--threads")
        .arg(threads.to_string())
        .args(&step.program.args)
        // The run sized these for its engine; the trainer sizes its own from --threads.
        .env_remove("CANDLE_NUM_THREADS")
        .env_remove("RAYON_NUM_THREADS")
        .stdout(std::process::Stdio::null())
        // Its own process group: Ctrl-C reaches the run, which stops; the trainer is then
        // SIGKILLed with it (its checkpoints are atomic, and the same command resumes both).
        .process_group(0);
    end_with_starting_thread(&mut command, libc::SIGKILL);
    let status = command
        .status()
        .map_err(|e| step.fail(format!("starting {}: {e}", step.program.exe.display())))?;
    if !status.success() {
        return Err(step.fail(format!(
            "the trainer stopped ({status}); its messages are above. Run the same command again \
             to resume training from its last checkpoint"
        )));
    }
    read_json::<TrainSummary>(&out.join("train.json"))?.ok_or_else(|| {
        step.fail(format!(
            "the trainer wrote no {}",
            out.join("train.json").display()
        ))
    })
}

/// `[train] command` through `sh -c`.
fn run_command(
    step: &TrainStep<'_>,
    command: &str,
    data: &Path,
    out: &Path,
) -> Result<(), PipelineError> {
    std::fs::create_dir_all(out).map_err(crate::store::StoreError::io(out))?;
    let base = crate::train::base_dir(step.base, out)
        .map_err(|e| step.fail(format!("preparing the base model: {e}")))?;
    let config = serde_json::to_string(step.config).expect("the [train] section serializes");
    let model_dir = out.join("model");
    let mut shell = Command::new("sh");
    shell
        .arg("-c")
        .arg(command)
        .env("UCODER_TRAIN_DATA", data)
        .env("UCODER_TRAIN_BASE", &base)
        .env("UCODER_TRAIN_OUT", out)
        .env("UCODER_TRAIN_CONFIG", config)
        .env("UCODER_TRAIN_SEED", step.seed.to_string())
        .env_remove("CANDLE_NUM_THREADS")
        .env_remove("RAYON_NUM_THREADS");
    // A user's trainer gets Ctrl-C with the run (same process group) and SIGTERM if the run is
    // killed, so it never trains on into a folder that a resumed run trains into again.
    end_with_starting_thread(&mut shell, libc::SIGTERM);
    let status = shell
        .status()
        .map_err(|e| step.fail(format!("starting `sh -c {command}`: {e}")))?;
    if !status.success() {
        return Err(step.fail(format!(
            "`{command}` failed ({status}); fix it and run the same command again"
        )));
    }
    if !model_dir.join("config.json").is_file() {
        return Err(step.fail(format!(
            "`{command}` exited 0 but wrote no {}: the command must write the trained model \
             (config.json and *.safetensors) to $UCODER_TRAIN_OUT/model",
            model_dir.join("config.json").display()
        )));
    }
    crate::train::model::copy_model_files(&base, &model_dir, true).map_err(|e| {
        step.fail(format!(
            "completing the trained model's tokenizer files: {e}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Manifest;

    /// A run folder with iteration 0's shards (any files: an external trainer reads them).
    fn run_folder() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        Manifest::claim(dir.path(), "ipc", serde_json::json!({}), "m".into()).unwrap();
        let sft = dir.path().join("iter-0/sft");
        std::fs::create_dir_all(&sft).unwrap();
        std::fs::write(sft.join("part-00000-00000.parquet"), b"rows").unwrap();
        dir
    }

    fn step<'a>(
        config: &'a TrainConfig,
        run_dir: &'a Path,
        base: &'a ModelSource,
        program: &'a TrainerProgram,
    ) -> TrainStep<'a> {
        TrainStep {
            config,
            pipeline: Path::new("unused.toml"),
            run_dir,
            index: 0,
            base,
            seed: 9,
            program,
        }
    }

    #[test]
    fn an_external_trainer_gets_the_contract_and_its_model_enters_the_lineage() {
        let run = run_folder();
        let base = crate::models::test_model().unwrap();
        let program = TrainerProgram::current(0).unwrap();
        // A "trainer" that writes the base's config and weights back as the trained model,
        // without tokenizer files (the run completes them), and records what it was given.
        let command = r#"echo call >> "$UCODER_TRAIN_OUT/../calls" &&
            mkdir -p "$UCODER_TRAIN_OUT/model" &&
            cp "$UCODER_TRAIN_BASE/config.json" "$UCODER_TRAIN_BASE"/*.safetensors "$UCODER_TRAIN_OUT/model/" &&
            printf '%s' "$UCODER_TRAIN_CONFIG" > "$UCODER_TRAIN_OUT/config.seen" &&
            printf '%s %s' "$UCODER_TRAIN_DATA" "$UCODER_TRAIN_SEED" > "$UCODER_TRAIN_OUT/inputs.seen""#;
        let config = TrainConfig {
            command: Some(command.into()),
            learning_rate: 3e-4,
            ..TrainConfig::default()
        };
        let record = train_next_model(
            &step(&config, run.path(), &base, &program),
            &crate::progress::Silent,
        )
        .unwrap();
        let out = run.path().join("iter-0/train");
        assert_eq!(record.name, "M1");
        assert_eq!(record.path, out.join("model"));
        assert!(
            out.join("model/tokenizer.json").is_file(),
            "tokenizer completed from the base"
        );
        let exported =
            crate::models::weights_sha256(&ModelSource::Safetensors(out.join("base"))).unwrap();
        assert_eq!(record.weights_sha256, exported);
        let trained = record.trained.as_ref().unwrap();
        assert_eq!(trained.from, "M0");
        assert_eq!(trained.trainer, format!("command: {command}"));
        assert_eq!(
            trained.data_sha256,
            super::super::lineage::digest_folder(&run.path().join("iter-0/sft")).unwrap()
        );
        let seen: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("config.seen")).unwrap())
                .unwrap();
        assert_eq!(seen["learning_rate"], 3e-4);
        let inputs = std::fs::read_to_string(out.join("inputs.seen")).unwrap();
        assert_eq!(
            inputs,
            format!("{} 9", run.path().join("iter-0/sft").display())
        );
        assert_eq!(
            ModelRecord::load(run.path(), "M1").unwrap(),
            Some(record.clone())
        );
        // Done is done: a second call returns the record without starting the command.
        let again = train_next_model(
            &step(&config, run.path(), &base, &program),
            &crate::progress::Silent,
        )
        .unwrap();
        assert_eq!(again, record);
        let calls = std::fs::read_to_string(run.path().join("iter-0/calls")).unwrap();
        assert_eq!(calls.lines().count(), 1);
    }

    #[test]
    fn an_external_trainer_that_fails_or_writes_nothing_stops_the_step() {
        let base = crate::models::test_model().unwrap();
        let program = TrainerProgram::current(0).unwrap();
        for (command, expected) in [("exit 3", "failed"), ("true", "wrote no")] {
            let run = run_folder();
            let config = TrainConfig {
                command: Some(command.into()),
                ..TrainConfig::default()
            };
            let err = train_next_model(
                &step(&config, run.path(), &base, &program),
                &crate::progress::Silent,
            )
            .unwrap_err()
            .to_string();
            assert!(
                err.contains(expected) && err.contains("after iteration 0"),
                "{command}: {err}"
            );
            assert_eq!(ModelRecord::load(run.path(), "M1").unwrap(), None);
        }
    }
}
