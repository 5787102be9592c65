//! Concurrency: 1,000 mixed jobs (good, failing, hostile) on W = 2 complete with the right
//! verdicts and leave no processes or scratch directories behind. (Its own test binary, so no
//! other pool in this process creates scratch directories meanwhile.)

mod sandbox_common;

use std::time::Duration;

use sandbox_common::*;
use ucoder_flow::sandbox::{Job, Limits, Verdict};

fn verdicts(r: &ucoder_flow::sandbox::JobResult) -> Vec<Verdict> {
    r.tests.iter().map(|t| t.verdict.clone()).collect()
}

fn err(kind: &str) -> Verdict {
    Verdict::Error { kind: kind.into() }
}

/// 1,000 mixed jobs (good, failing, hostile) on W = 2: right verdicts, no leaked processes or dirs.
#[test]
fn thousand_mixed_jobs_on_two_workers() {
    let scratch_before = scratch_dirs();
    let pool = pool(2);
    let kinds: Vec<(Job, Vec<Verdict>)> = vec![
        (
            job(
                "def f(x):\n    return x + 1",
                vec![call("f", "[1]", Some("2")), assert_case("assert f(2) == 3")],
            ),
            vec![Verdict::Pass, Verdict::Pass],
        ),
        (
            job(
                "def f(x):\n    return x - 1",
                vec![call("f", "[1]", Some("2")), assert_case("assert f(2) == 3")],
            ),
            vec![Verdict::Fail, Verdict::Fail],
        ),
        (
            job(
                "def f(x):\n    return sorted(x)",
                vec![
                    assert_case("assert f([3, 1]) == [1, 3]"),
                    call("f", "[{2, 1}]", Some("[1, 2]")),
                ],
            ),
            vec![Verdict::Pass, Verdict::Pass],
        ),
        (
            job(
                "def f(x):\n    raise ValueError",
                vec![call("f", "[1]", Some("2"))],
            ),
            vec![err("ValueError")],
        ),
        (
            job("import os\nos._exit(0)", vec![call("f", "[1]", Some("2"))]),
            vec![err("ProgramError")],
        ),
        (
            job(
                "import ctypes\ndef f():\n    ctypes.string_at(0)\ndef g():\n    return 1",
                vec![call("f", "[]", None), call("g", "[]", Some("1"))],
            ),
            vec![Verdict::Killed, Verdict::Pass],
        ),
        (
            job(
                "class E:\n    def __eq__(s, o):\n        return True\ndef f():\n    return E()",
                vec![assert_case("assert f() == 3")],
            ),
            vec![Verdict::Fail],
        ),
        (
            job(
                "import os\ndef f():\n    for _ in range(5):\n        if os.fork() == 0:\n            import time; time.sleep(60)\n    return 1",
                vec![call("f", "[]", Some("1"))],
            ),
            vec![Verdict::Pass],
        ),
        (
            job(
                "def f(n):\n    return f(n + 1)",
                vec![call("f", "[0]", None)],
            ),
            vec![err("RecursionError")],
        ),
    ];
    let spin = (
        job(
            "def f():\n    while True:\n        pass",
            vec![call("f", "[]", None)],
        ),
        vec![Verdict::Timeout],
    );
    let mut pending = Vec::new();
    for i in 0..1000 {
        let (j, expected) = if i % 100 == 99 {
            let mut j = spin.0.clone();
            j.limits = Some(Limits {
                test_cpu: Duration::from_millis(100),
                ..test_limits()
            });
            (j, spin.1.clone())
        } else {
            kinds[i % kinds.len()].clone()
        };
        pending.push((i, expected, pool.submit(j)));
    }
    for (i, expected, rx) in pending {
        let r = rx.recv().unwrap().unwrap();
        assert_eq!(verdicts(&r), expected, "job {i}: {r:?}");
    }
    assert!(
        job_processes(&pool).is_empty(),
        "leaked: {:?}",
        job_processes(&pool)
    );
    assert_eq!(pool.stats().worker_restarts, 0);
    drop(pool);
    assert_eq!(scratch_dirs(), scratch_before, "scratch directories leaked");
}
