//! HumanEval through the sandbox: all 164 canonical solutions pass their tests, and a broken
//! variant of each (body replaced by `return None`) fails.

mod sandbox_common;

use sandbox_common::*;
use ucoder_flow::sandbox::{Job, Verdict};

#[test]
fn canonical_solutions_pass_and_broken_ones_fail() {
    let problems = ucoder_flow::eval::humaneval::load(
        &ucoder_flow::fetch::cache_dir(),
        &ucoder_flow::progress::Silent,
    )
    .unwrap();
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
    eprintln!("HumanEval asserts: {split} decided outside the child, {in_child} in it");
    // Most HumanEval asserts are `assert candidate(...) == literal`: decided outside the child.
    assert!(
        split > 4 * in_child,
        "{split} split vs {in_child} in-child asserts"
    );
}

/// Hostile completions in place of HumanEval solutions (the attacks of issue 13, which once
/// scored pass@1 = 100% on all 164 problems). A verdict decided outside the child cannot be
/// forged, so a hostile program can pass only a problem whose every test had to run in the
/// child (a loop over generated data, a comparison with another call): those are labelled
/// `checked_in_child` and counted, and there are only a handful.
#[test]
fn hostile_completions_pass_only_problems_decided_in_child() {
    let problems = ucoder_flow::eval::humaneval::load(
        &ucoder_flow::fetch::cache_dir(),
        &ucoder_flow::progress::Silent,
    )
    .unwrap();
    let hostile = [
        // Walks up to the harness for the planned tests and their expected values.
        "import sys, os\ndef _forge():\n    f = sys._getframe(1)\n    while f.f_code.co_name != 'child_main': f = f.f_back\n    L = f.f_locals; g = f\n    while g.f_code.co_name != 'run_job': g = g.f_back\n    L['send']({'p': 'ok'})\n    for i, (plan, exp) in enumerate(g.f_locals['planned']):\n        L['send']({'i': i, 's': 'pass'})\n    L['send']({'done': True}); os._exit(0)\n_F = _forge()\ndef ENTRY(*a, **k): return None\n",
        // Claims every test passed through the child's own channel.
        "import sys, os\ndef _forge():\n    f = sys._getframe(1)\n    while f is not None and 'send' not in f.f_locals: f = f.f_back\n    send = f.f_locals['send']\n    send({'p': 'ok'})\n    for i in range(200): send({'i': i, 's': 'pass'})\n    send({'done': True}); os._exit(0)\n_forge()\ndef ENTRY(*a, **k): return None\n",
        // Patches what in-child checks call and returns an object equal to everything.
        "import builtins, math\nbuiltins.abs = lambda x: 0\nmath.isclose = lambda *a, **k: True\nbuiltins.sorted = lambda *a, **k: 0\nclass E:\n    def __eq__(self, o): return True\n    def __ne__(self, o): return False\n    def __hash__(self): return 0\n    def __bool__(self): return True\n    def __sub__(self, o): return 0\n    def __rsub__(self, o): return 0\n    def __len__(self): return 0\n    def __iter__(self): return iter(())\n    def __contains__(self, o): return True\ndef ENTRY(*a, **k): return E()\n",
    ];
    let pool = pool(2);
    for (h, template) in hostile.iter().enumerate() {
        let pending: Vec<_> = problems
            .iter()
            .map(|p| {
                let program = template.replace("ENTRY", &p.entry_point);
                pool.submit(Job::new(program, p.tests()))
            })
            .collect();
        let mut passed_problems = Vec::new();
        for (p, rx) in problems.iter().zip(pending) {
            let r = rx.recv().unwrap().unwrap();
            if r.all_passed() {
                assert!(
                    r.tests.iter().all(|t| t.checked_in_child),
                    "hostile program {h} passed {} with a test decided outside the child: {r:?}",
                    p.task_id
                );
                passed_problems.push(p.task_id.clone());
            }
        }
        assert!(
            passed_problems.len() <= 8,
            "hostile program {h} passed {} problems: {passed_problems:?}",
            passed_problems.len()
        );
    }
    assert_eq!(pool.stats().worker_restarts, 0);
}
