//! The per-problem table of a rerank eval (`ucoder-flow eval pipelines/humaneval-rerank.toml`),
//! one tab-separated line per problem: tests written, kept and right (by the canonical
//! solution), samples correct, the greedy answer, and the pipeline filter's pick with its
//! diagnosis. Reads the run folder's `problems/` table.
//!
//! ```sh
//! cargo run --release --example rerank_problems -- runs/humaneval-rerank
//! ```

use std::path::PathBuf;

use ucoder_flow::eval::rerank::rows::ProblemScoreRow;
use ucoder_flow::eval::rerank::runner::PROBLEMS_TABLE;
use ucoder_flow::store::Stage;

fn main() -> anyhow::Result<()> {
    let dir: PathBuf = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: rerank_problems RUN_FOLDER"))?
        .into();
    let rows = Stage::<ProblemScoreRow>::read(&dir.join(PROBLEMS_TABLE))?;
    println!(
        "problem\ttests_written\ttests_kept\ttests_right\tsamples_correct\tgreedy\tpick\tcluster\tpick_correct\tdiagnosis"
    );
    let opt = |v: Option<u32>| v.map_or("-".to_string(), |v| v.to_string());
    for r in rows {
        println!(
            "{}\t{}\t{}\t{}\t{}/{}\t{}\t{}\t{}\t{}\t{}",
            r.problem_id,
            r.tests_generated,
            r.tests_kept,
            opt(r.tests_right),
            r.samples_correct,
            r.samples,
            if r.greedy_correct { "right" } else { "wrong" },
            opt(r.pick),
            opt(r.pick_cluster_size),
            r.pick_correct,
            r.diagnosis
        );
    }
    Ok(())
}
