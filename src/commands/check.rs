//! `ucoder-flow check PIPELINE.toml`: validates a pipeline before running it (the settings,
//! `[eval]`, the model, the sandbox, the run folder) without generating or writing anything;
//! prints one line per check (or with `--json` JSON) and fails when any check fails. It takes
//! `run`'s arguments (`-q` changes nothing).

use super::run::RunArgs;
use crate::pipeline::check::check;

/// Runs the checks and prints them.
pub fn run(args: &RunArgs) -> anyhow::Result<()> {
    let report = check(&args.pipeline, &args.options(None)?);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    anyhow::ensure!(
        report.passed(),
        "{}: a run would fail (see FAILED above)",
        args.pipeline.display()
    );
    Ok(())
}
