//! Run code in the sandbox: one program, three tests, each in an isolated Python worker with
//! CPU-time and memory limits; the verdicts come back per test.
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
    let result = pool.run(Job {
        program: "def add(a, b):\n    return a + b\n".into(),
        tests: vec![
            assert("assert add(1, 2) == 3"),
            assert("assert add('a', 'b') == 'ab'"),
            assert("assert add(1, 1) == 3"),
        ],
        limits: None,
    })?;
    for (i, test) in result.tests.iter().enumerate() {
        println!("test {i}: {:?}", test.verdict);
    }
    Ok(())
}
