//! Run code in the sandbox: one program, four tests, in an isolated Python worker with CPU-time
//! and memory limits; the verdicts come back per test, each decided outside the candidate's
//! process (`decided in child: false`).
//!
//! ```sh
//! cargo run --release --example sandbox
//! ```

use ucoder_flow::sandbox::{Job, SandboxConfig, SandboxPool, TestCase};

fn main() -> anyhow::Result<()> {
    let pool = SandboxPool::new(SandboxConfig {
        workers: 1,
        ..SandboxConfig::default()
    })?;
    let assert = |source: &str| TestCase::Assert {
        source: source.into(),
    };
    let result = pool.run(Job::new(
        "def add(a, b):\n    return a + b\n",
        vec![
            assert("assert add(1, 2) == 3"),
            assert("assert add('a', 'b') == 'ab'"),
            assert("assert abs(add(0.1, 0.2) - 0.3) < 1e-9"),
            assert("assert add(1, 1) == 3"),
        ],
    ))?;
    for (i, test) in result.tests.iter().enumerate() {
        println!(
            "test {i}: {:?} (decided in child: {})",
            test.verdict, test.checked_in_child
        );
    }
    Ok(())
}
