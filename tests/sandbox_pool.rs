//! The pool's contract: verdict kinds, outside comparisons of tagged values, program errors,
//! worker death and hangs, many threads on one pool.

mod sandbox_common;

use std::time::Duration;

use sandbox_common::*;
use ucoder_flow::sandbox::{
    EarlyStop, Job, Limits, SandboxConfig, SandboxPool, TestCase, Value, Verdict,
};

fn verdicts(r: &ucoder_flow::sandbox::JobResult) -> Vec<Verdict> {
    r.tests.iter().map(|t| t.verdict.clone()).collect()
}

fn err(kind: &str) -> Verdict {
    Verdict::Error { kind: kind.into() }
}

#[test]
fn verdicts_values_and_outside_comparison() {
    let pool = pool(1);
    let program = r#"
import math
def f(x):
    return x * 2
def nan():
    return float("nan")
def negzero():
    return -0.0
def flag():
    return 1
def items():
    return {3, 1, 2}
def mapping():
    return {"b": [1, (2, 3)], "a": None}
def boom():
    raise KeyError("x")
def big():
    return "x" * 5_000_000
"#;
    let tests = vec![
        call("f", "[2]", Some("4")),                    // pass
        call("f", "[2]", Some("5")),                    // fail
        assert_case("assert f(3) == 6"),                // split, pass
        assert_case("assert f(3) != 6"),                // split, fail
        assert_case("assert abs(f(0.5) - 1.0) < 1e-9"), // split (tolerance), pass
        assert_case("assert math.isclose(f(1), 3)"),    // split (isclose), fail
        call("nan", "[]", Some("float('nan')")),        // not a literal: invalid test
        assert_case("assert nan() == nan()"),           // in child: NaN != NaN
        call("negzero", "[]", Some("0.0")),             // -0.0 == 0.0 in Python
        call("flag", "[]", Some("True")),               // 1 == True in Python
        assert_case("assert flag() is True"),           // ...but 1 is not True
        call("items", "[]", Some("{1, 2, 3}")),         // sets ignore order
        call("mapping", "[]", Some("{'a': None, 'b': [1, (2, 3)]}")),
        call("mapping", "[]", Some("{'a': None, 'b': [1, [2, 3]]}")), // tuple != list
        call("boom", "[]", Some("1")),                                // error kind
        call("f", "[1, 2, 3]", Some("1")),                            // TypeError
        call("big", "[]", None),                                      // over the value cap
        call("f", "not a literal", Some("1")),                        // invalid args
        assert_case("assert f("),                                     // does not parse
    ];
    let r = pool.run(job(program, tests)).unwrap();
    assert_eq!(r.program_error, None);
    assert_eq!(
        verdicts(&r),
        vec![
            Verdict::Pass,
            Verdict::Fail,
            Verdict::Pass,
            Verdict::Fail,
            Verdict::Pass,
            Verdict::Fail,
            err("InvalidTest"),
            Verdict::Fail,
            Verdict::Pass,
            Verdict::Pass,
            Verdict::Fail,
            Verdict::Pass,
            Verdict::Pass,
            Verdict::Fail,
            err("KeyError"),
            err("TypeError"),
            err("ValueTooLarge"),
            err("InvalidTest"),
            err("InvalidTest"),
        ],
        "{r:#?}"
    );
    let in_child: Vec<bool> = r.tests.iter().map(|t| t.checked_in_child).collect();
    assert!(
        !in_child[0] && !in_child[2] && !in_child[3] && !in_child[4] && !in_child[5] && in_child[7]
    );
    assert_eq!(r.tests[0].value, Some(Value::Int("4".into())));
    assert!(matches!(r.tests[8].value, Some(Value::Float(f)) if f == 0.0 && f.is_sign_negative()));
    // Output hashes are stable across runs, and -0.0 hashes as 0.0 (they are equal in Python).
    let again = pool
        .run(job(
            program,
            vec![call("f", "[2]", None), call("negzero", "[]", None)],
        ))
        .unwrap();
    assert_eq!(again.tests[0].output_hash, r.tests[0].output_hash);
    assert_eq!(
        again.tests[1].output_hash,
        Some(Value::Float(0.0).signature_hash())
    );
}

#[test]
fn program_errors_fail_every_test() {
    let pool = pool(1);
    for (program, kind) in [
        ("def f(:\n  pass", "SyntaxError"),
        ("import no_such_module_xyz", "ModuleNotFoundError"),
        ("while True:\n    pass", "Timeout"),
        ("raise SystemExit(0)", "SystemExit"),
    ] {
        let r = pool
            .run(job(
                program,
                vec![call("f", "[]", None), assert_case("assert True")],
            ))
            .unwrap();
        let pe = r
            .program_error
            .clone()
            .unwrap_or_else(|| panic!("{program}: no program error"));
        assert_eq!(pe.kind, kind, "{program}");
        assert_eq!(
            verdicts(&r),
            vec![err("ProgramError"), err("ProgramError")],
            "{program}"
        );
        assert!(!r.all_passed());
    }
    let r = pool
        .run(job(
            "print('hi')\nimport sys\nprint('err', file=sys.stderr)",
            vec![],
        ))
        .unwrap();
    assert!(r.all_passed());
    assert_eq!(r.stdout, "hi\n");
    assert_eq!(r.stderr, "err\n");
}

#[test]
fn limits_per_job_override_the_pool() {
    let pool = pool(1);
    let mut j = job(
        "def f():\n    s = 0\n    for i in range(10**8):\n        s += i\n    return s",
        vec![call("f", "[]", None)],
    );
    j.limits = Some(Limits {
        test_cpu: Duration::from_millis(100),
        ..test_limits()
    });
    let r = pool.run(j).unwrap();
    assert_eq!(verdicts(&r), vec![Verdict::Timeout]);
    assert!(r.tests[0].duration < Duration::from_secs(2));
}

#[test]
fn a_dead_worker_is_replaced_and_the_job_rerun() {
    let pool = pool(1);
    let slow = job(
        "import time\ndef f():\n    time.sleep(1.5)\n    return 7",
        vec![call("f", "[]", Some("7"))],
    );
    let rx = pool.submit(slow.clone());
    std::thread::sleep(Duration::from_millis(500));
    let victim = pool.worker_pids()[0];
    // SAFETY: killing a process this test's pool started.
    unsafe { libc::kill(victim as i32, libc::SIGKILL) };
    let r = rx.recv().unwrap().unwrap();
    assert_eq!(verdicts(&r), vec![Verdict::Pass], "{r:?}");
    assert_eq!(r.attempts, 2);
    assert!(
        r.events.iter().any(|e| e.contains("died")),
        "{:?}",
        r.events
    );
    assert_eq!(pool.stats().worker_restarts, 1);
    assert_ne!(pool.worker_pids()[0], victim);
    assert!(pool.run(slow).unwrap().all_passed());
}

#[test]
fn a_hung_worker_is_killed_and_the_job_never_passes_silently() {
    let pool = SandboxPool::new(ucoder_flow::sandbox::SandboxConfig {
        workers: 1,
        limits: Limits {
            job_wall: Duration::from_secs(1),
            ..test_limits()
        },
        ..Default::default()
    })
    .unwrap();
    let j = job("def f():\n    return 1", vec![call("f", "[]", Some("1"))]);
    // Stop the worker before it sees the job: the pool must notice the hang, kill it and retry.
    let victim = pool.worker_pids()[0];
    // SAFETY: stopping a process this test's pool started.
    unsafe { libc::kill(victim as i32, libc::SIGSTOP) };
    let children = std::fs::read_to_string(format!("/proc/{victim}/task/{victim}/children"))
        .unwrap_or_default();
    for c in children.split_whitespace() {
        // SAFETY: as above, the forkserver under the stopped outer process.
        unsafe { libc::kill(c.parse::<i32>().unwrap(), libc::SIGSTOP) };
    }
    let r = pool.run(j.clone()).unwrap();
    assert_eq!(verdicts(&r), vec![Verdict::Pass], "{r:?}");
    assert_eq!(r.attempts, 2);
    assert!(
        r.events.iter().any(|e| e.contains("hung")),
        "{:?}",
        r.events
    );
    assert!(pool.run(j).unwrap().all_passed());
}

#[test]
fn many_threads_share_one_pool() {
    let pool = pool(2);
    std::thread::scope(|s| {
        for t in 0..4 {
            let pool = &pool;
            s.spawn(move || {
                for i in 0..10 {
                    let r = pool
                        .run(job(
                            "def f(a, b):\n    return a * b",
                            vec![call(
                                "f",
                                &format!("[{t}, {i}]"),
                                Some(&(t * i).to_string()),
                            )],
                        ))
                        .unwrap();
                    assert!(r.all_passed());
                }
            });
        }
    });
    assert_eq!(pool.stats().jobs, 40);
}

#[test]
fn zero_workers_is_a_config_error() {
    let e = SandboxPool::new(ucoder_flow::sandbox::SandboxConfig {
        workers: 0,
        ..Default::default()
    });
    assert!(matches!(
        e,
        Err(ucoder_flow::sandbox::SandboxError::Config(_))
    ));
}

#[test]
fn call_without_expected_only_records_the_value() {
    let pool = pool(1);
    let r = pool
        .run(job(
            "def f(x):\n    return {'k': [x, 1.5, b'z', None, True]}",
            vec![TestCase::Call {
                function: "f".into(),
                args: "[3]".into(),
                expected: None,
            }],
        ))
        .unwrap();
    assert_eq!(verdicts(&r), vec![Verdict::Pass]);
    let v = r.tests[0].value.clone().unwrap();
    assert!(v.py_eq(&Value::Dict(vec![(
        Value::Str("k".into()),
        Value::List(vec![
            Value::Int("3".into()),
            Value::Float(1.5),
            Value::Bytes(b"z".to_vec()),
            Value::None,
            Value::Bool(true)
        ])
    )])));
}

#[test]
fn a_job_stops_once_too_few_tests_can_still_run_to_their_end() {
    let pool = pool(1);
    let tests: Vec<TestCase> = (0..10)
        .map(|i| call("f", &format!("[{i}]"), Some("0")))
        .collect();
    let stop = EarlyStop { at_least: 8 };
    // Every test raises: none runs to its end, so 8 of 10 is out of reach after the third.
    let crashing = "def f(x):\n    raise ValueError(x)\n";
    let r = pool
        .run(Job {
            early_stop: Some(stop),
            ..job(crashing, tests.clone())
        })
        .unwrap();
    let mut expected = vec![err("ValueError"); 3];
    expected.extend(vec![Verdict::Skipped; 7]);
    assert_eq!(verdicts(&r), expected, "{r:?}");
    assert!(r.stopped_early);
    // Tests that kill the child count as not run, and the stop holds across the fresh child.
    let dying =
        "import os\ndef f(x):\n    if x % 2 == 0:\n        os._exit(1)\n    raise KeyError(x)\n";
    let r = pool
        .run(Job {
            early_stop: Some(stop),
            ..job(dying, tests.clone())
        })
        .unwrap();
    let mut expected = vec![
        err("ProcessExit(1)"),
        err("KeyError"),
        err("ProcessExit(1)"),
    ];
    expected.extend(vec![Verdict::Skipped; 7]);
    assert_eq!(verdicts(&r), expected, "{r:?}");
    // Failing tests ran to their end: no stop.
    let wrong = "def f(x):\n    return 1\n";
    let r = pool
        .run(Job {
            early_stop: Some(stop),
            ..job(wrong, tests.clone())
        })
        .unwrap();
    assert_eq!(verdicts(&r), vec![Verdict::Fail; 10]);
    assert!(!r.stopped_early);
    // The same candidate stops at the same test every time.
    let twice = "def f(x):\n    if x in (1, 4, 5):\n        raise ValueError(x)\n    return 0\n";
    let runs: Vec<_> = (0..3)
        .map(|_| {
            verdicts(
                &pool
                    .run(Job {
                        early_stop: Some(EarlyStop { at_least: 10 }),
                        ..job(twice, tests.clone())
                    })
                    .unwrap(),
            )
        })
        .collect();
    let mut expected = vec![Verdict::Pass, err("ValueError")];
    expected.extend(vec![Verdict::Skipped; 8]);
    assert!(runs.iter().all(|v| *v == expected), "{runs:?}");
    assert!(
        pool.run(job("def f(x):\n    return 0\n", tests))
            .unwrap()
            .all_passed()
    );
}

#[test]
fn constant_expressions_are_decided_outside_the_child() {
    let pool = pool(1);
    let program = "def f(x):\n    return (x + 1, x * 3)\ndef g(x):\n    return x / 3\ndef tuple(x):\n    return 'shadowed'\n";
    let tests = vec![
        assert_case("assert f(2) == (1 + 2, 2 * 3)"),
        assert_case("assert f(2) == (1 + 2, 7)"),
        assert_case("assert abs(g(2) - 2.0/3.0) < 1e-9"),
        // The candidate shadows `tuple`: the expected side is still the builtin's.
        assert_case("assert f(2) == tuple([3, 6])"),
        assert_case("assert True, 'always'"),
        assert_case("assert f(2) == f(2)"),
    ];
    let r = pool.run(job(program, tests)).unwrap();
    assert_eq!(
        verdicts(&r),
        vec![
            Verdict::Pass,
            Verdict::Fail,
            Verdict::Pass,
            Verdict::Pass,
            Verdict::Pass,
            Verdict::Pass
        ],
        "{r:#?}"
    );
    let in_child: Vec<bool> = r.tests.iter().map(|t| t.checked_in_child).collect();
    assert_eq!(in_child, vec![false, false, false, false, false, true]);
}

fn process_group(pid: u32) -> u32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_name = stat.rsplit_once(')').unwrap().1;
    after_name
        .split_whitespace()
        .nth(2)
        .unwrap()
        .parse()
        .unwrap()
}

fn our_scratch_folders() -> Vec<String> {
    let prefix = format!("ucoder-sandbox-{}-", std::process::id());
    std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(&prefix))
        .collect()
}

/// Ctrl-C at a terminal signals the foreground process group: the workers are not in the run's
/// group (they end with the pool, through PDEATHSIG, instead of printing their own
/// KeyboardInterrupt). With a mount namespace jobs work in a private tmpfs, so a pool, even one
/// whose process is killed, leaves nothing in the temp folder.
#[test]
fn workers_keep_out_of_the_run_process_group_and_the_temp_folder() {
    let ours = process_group(std::process::id());
    let pool = pool(2);
    let result = pool
        .run(job(
            "def add(a, b):\n    return a + b\n",
            vec![call("add", "[1, 2]", Some("3"))],
        ))
        .unwrap();
    assert_eq!(verdicts(&result), vec![Verdict::Pass]);
    let workers = pool.worker_pids();
    assert!(!workers.is_empty());
    for pid in workers {
        assert_ne!(
            process_group(pid),
            ours,
            "worker {pid} shares our process group"
        );
    }
    if pool.isolation().get("mount namespace").map(String::as_str) == Some("ok") {
        assert_eq!(our_scratch_folders(), Vec::<String>::new());
    }
}

/// Without a mount namespace (a host that refuses one, here by configuration) jobs work in a
/// scratch folder the worker creates in the temp folder; the refusal is reported, verdicts are
/// the same, and dropping the pool removes the folder.
#[test]
fn without_namespaces_jobs_use_a_scratch_folder_that_goes_with_the_pool() {
    let pool = SandboxPool::new(SandboxConfig {
        workers: 1,
        namespaces: false,
        limits: sandbox_common::test_limits(),
        ..SandboxConfig::default()
    })
    .unwrap();
    assert!(
        pool.isolation()["mount namespace"].starts_with("refused"),
        "{:?}",
        pool.isolation()
    );
    let result = pool
        .run(job(
            "import os\ndef here():\n    open('f.txt', 'w').write('x')\n    return os.listdir('.')\n",
            vec![call("here", "[]", Some("['f.txt']")), call("here", "[]", Some("['f.txt']"))],
        ))
        .unwrap();
    assert_eq!(verdicts(&result), vec![Verdict::Pass, Verdict::Pass]);
    assert_eq!(our_scratch_folders().len(), 1);
    drop(pool);
    assert_eq!(our_scratch_folders(), Vec::<String>::new());
}

/// A job's verdicts depend on its CPU use, not on the wall clock: a wall deadline below the CPU
/// budgets is raised to them, and a job that still runs out of wall time (here, one that sleeps)
/// is rerun once with twice the time, then flagged rather than scored as a timeout.
#[test]
fn the_wall_deadline_follows_the_cpu_budgets_and_a_hit_is_rerun_and_flagged() {
    let pool = pool(1);
    let tight = Limits {
        test_cpu: Duration::from_millis(500),
        program_cpu: Duration::from_millis(500),
        job_wall: Duration::from_millis(300),
        ..sandbox_common::test_limits()
    };
    // Three tests of ~0.25 s CPU each: more than the 0.3 s wall, within every CPU budget.
    let busy = "import time\ndef burn():\n    end = time.process_time() + 0.25\n    while time.process_time() < end:\n        pass\n    return 1\n";
    let result = pool
        .run(Job {
            limits: Some(tight.clone()),
            ..job(busy, vec![call("burn", "[]", Some("1")); 3])
        })
        .unwrap();
    assert_eq!(
        verdicts(&result),
        vec![Verdict::Pass; 3],
        "{:?}",
        result.events
    );
    assert!(!result.wall_deadline);
    // A sleeper uses no CPU: only the wall deadline (0.5 + 0.5 + 1 s, then twice that) ends it.
    let sleeper = "import time\ndef nap():\n    time.sleep(30)\n";
    let result = pool
        .run(Job {
            limits: Some(tight),
            ..job(sleeper, vec![call("nap", "[]", None)])
        })
        .unwrap();
    assert!(result.wall_deadline, "{result:?}");
    assert_eq!(result.tests[0].verdict, Verdict::Killed);
    assert!(
        result.events.iter().any(|e| e.contains("rerun with 4.0 s")),
        "{:?}",
        result.events
    );
    assert_eq!(result.attempts, 1);
}

/// `Job::float_tolerance`: 0 is Python's exact `==`; the pipeline's tolerance lets a program
/// that sums in another order pass, for call tests and split asserts alike, and the signature
/// hash of the two values is the same either way.
#[test]
fn a_float_tolerance_lets_another_summation_order_pass() {
    let pool = pool(1);
    let program = "def total(xs):\n    s = 0.0\n    for x in xs:\n        s += x\n    return s\n";
    let tests = vec![
        call("total", "[[0.1, 0.2]]", Some("0.3")),
        assert_case("assert total([0.1, 0.2]) == 0.3"),
        assert_case("assert total([0.1, 0.2]) in (0.3, 0.6)"),
    ];
    let exact = pool.run(job(program, tests.clone())).unwrap();
    assert_eq!(verdicts(&exact), vec![Verdict::Fail; 3]);
    let tolerant = pool
        .run(Job {
            float_tolerance: 1e-9,
            ..job(program, tests)
        })
        .unwrap();
    assert_eq!(verdicts(&tolerant), vec![Verdict::Pass; 3]);
    let direct = pool
        .run(job(
            "def total():\n    return 0.3\n",
            vec![call("total", "[]", None)],
        ))
        .unwrap();
    assert_eq!(exact.tests[0].output_hash, direct.tests[0].output_hash);
}

/// `hash_seeds = 2`: a candidate that could vote runs again in workers with another hash seed;
/// one whose results change (here, the order of a set) votes in no cluster, every test an
/// error, while a deterministic one keeps its outcomes.
#[test]
fn a_candidate_whose_results_change_with_the_hash_seed_is_kept_out_of_clusters() {
    use std::sync::Arc;
    use std::time::Instant;
    use ucoder_flow::backends::sandbox::NONDETERMINISTIC;
    use ucoder_flow::backends::{ExecOptions, SandboxExecutor, StageClock};
    use ucoder_flow::sandbox::{SandboxConfig, SandboxPool};
    use ucoder_operators::{
        CandidateId, ExecJob, Execute, GeneratedTest, Outcome, ProblemId, TestKind,
    };

    let seeded = |hash_seed| {
        Arc::new(
            SandboxPool::new(SandboxConfig {
                workers: 1,
                limits: test_limits(),
                hash_seed,
                ..SandboxConfig::default()
            })
            .unwrap(),
        )
    };
    let options = ExecOptions {
        stop_rho: Some(0.5),
        float_tolerance: 0.0,
        wall_deadline_is_error: true,
    };
    let clock = Arc::new(StageClock::new(Instant::now()));
    let mut executor =
        SandboxExecutor::new(seeded(0), test_limits(), clock, options).with_second_seed(seeded(1));
    let problem = ProblemId(1);
    let tests: Arc<[GeneratedTest]> = [
        "assert f('abcdefghijkl') == 'abcdefghijkl'",
        "assert len(f('hello')) == 4",
    ]
    .iter()
    .map(|code| GeneratedTest::new(problem, TestKind::Assert, *code))
    .collect();
    let job = |id: u64, code: &str| ExecJob {
        problem_id: problem,
        candidate_id: CandidateId(id),
        entry_point: "f".into(),
        code: code.into(),
        tests: Arc::clone(&tests),
    };
    let jobs = [
        job(
            1,
            "def f(s):\n    return ''.join(sorted(set(s), key=s.index))\n",
        ),
        job(2, "def f(s):\n    return ''.join(set(s))\n"),
    ];
    let out = executor.execute(&jobs);
    let first = out[0].as_ref().unwrap();
    assert!(
        first.results.iter().all(|r| r.outcome == Outcome::Pass),
        "{first:?}"
    );
    let second = out[1].as_ref().unwrap();
    assert!(
        second
            .results
            .iter()
            .all(|r| r.outcome == Outcome::Error && r.detail.as_deref() == Some(NONDETERMINISTIC)),
        "{second:?}"
    );
}
