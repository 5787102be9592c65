//! HumanEval through the sandbox: all 164 canonical solutions pass their tests, and a broken
//! variant of each (body replaced by `return None`) fails.

mod sandbox_common;

use sandbox_common::*;
use ucoder_flow::sandbox::{Job, Verdict};

#[test]
fn canonical_solutions_pass_and_broken_ones_fail() {
    let problems =
        ucoder_flow::eval::humaneval::load(&ucoder_flow::fetch::cache_dir(), &|_| {}).unwrap();
    assert_eq!(problems.len(), 164);
    let pool = pool(2);
    let canonical: Vec<_> = problems
        .iter()
        .map(|p| pool.submit(Job::new(p.canonical_program(), p.tests())))
        .collect();
    let broken: Vec<_> = problems
        .iter()
        .map(|p| {
            pool.submit(Job::new(
                format!("{}    return None\n", p.prompt),
                p.tests(),
            ))
        })
        .collect();
    let mut split = 0;
    let mut in_child = 0;
    for (p, rx) in problems.iter().zip(canonical) {
        let r = rx.recv().unwrap().unwrap();
        assert!(
            r.all_passed(),
            "{}: canonical solution did not pass: {:?}",
            p.task_id,
            r
        );
        split += r.tests.iter().filter(|t| !t.checked_in_child).count();
        in_child += r.tests.iter().filter(|t| t.checked_in_child).count();
    }
    for (p, rx) in problems.iter().zip(broken) {
        let r = rx.recv().unwrap().unwrap();
        assert!(
            !r.all_passed(),
            "{}: broken variant passed: {:?}",
            p.task_id,
            r
        );
        assert!(
            r.tests.iter().any(|t| t.verdict != Verdict::Pass),
            "{}",
            p.task_id
        );
    }
    // Most HumanEval asserts are `assert candidate(...) == literal`: decided outside the child.
    assert!(
        split > 4 * in_child,
        "{split} split vs {in_child} in-child asserts"
    );
}
