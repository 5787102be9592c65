//! Evaluation on public benchmarks: loading them, pass@k, and the `ucoder-flow eval` job.

pub mod humaneval;
