//! The executor half of the IPC graph wired end to end from this crate's parts: candidates are
//! exchanged by problem id, executed asynchronously by a threaded `Execute` backend through
//! `offload`, turned into verdicts, entered into differential with `as_insertions` and selected by
//! `consensus`, over several sampling rounds.
//!
//! The backend is a real interpreter for a tiny candidate language (`lin a b` computes a·x + b,
//! `div a b` computes a / (x − b) and errors on division by zero, `spin` never returns and is cut
//! off as a timeout), so outcomes and output hashes are computed, not scripted. The selections after
//! every round must equal the batch reference over the verdicts executed so far, with one worker and
//! with two.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use timely::dataflow::operators::Probe;
use timely::dataflow::operators::capture::{Capture, Extract};
use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::{Exchange, Input};
use timely::dataflow::{InputHandleVec, ProbeHandle};
use ucoder_operators::stable_hash::StableHasher;
use ucoder_operators::{
    BackendError, BackendPool, BatchPolicy, Candidate, CandidateVerdict, ConsensusConfig, ExecJob,
    Execute, ExecuteService, Execution, GeneratedTest, LogprobSummary, Outcome, ProblemId,
    Selection, SignatureKind, TestKind, TestRun, as_insertions, consensus, offload, select_batch,
};

const ROUNDS: u64 = 4;

/// Evaluates candidate programs on integer test inputs (`f(x)`), against the problem's reference.
struct Interpreter;

fn eval(program: &str, x: i64) -> Result<Option<i64>, ()> {
    let words: Vec<&str> = program.split_whitespace().collect();
    match words.as_slice() {
        ["lin", a, b] => Ok(Some(
            a.parse::<i64>().map_err(|_| ())? * x + b.parse::<i64>().map_err(|_| ())?,
        )),
        ["div", a, b] => {
            let (a, b) = (
                a.parse::<i64>().map_err(|_| ())?,
                b.parse::<i64>().map_err(|_| ())?,
            );
            if x == b {
                Err(())
            } else {
                Ok(Some(a / (x - b)))
            }
        }
        ["spin"] => Ok(None),
        _ => Err(()),
    }
}

fn parse_call(code: &str) -> i64 {
    code.trim_start_matches("f(")
        .trim_end_matches(')')
        .parse()
        .expect("test input")
}

/// The reference solution of problem `p`: `lin p 1`.
fn reference(problem: ProblemId) -> String {
    format!("lin {} 1", problem.0 % 7)
}

impl Execute for Interpreter {
    fn execute(&mut self, jobs: &[ExecJob]) -> Vec<Result<Execution, BackendError>> {
        jobs.iter()
            .map(|job| {
                let expected = reference(job.problem_id);
                let results = job
                    .tests
                    .iter()
                    .map(|test| {
                        let x = parse_call(&test.code);
                        let (outcome, output_hash) = match eval(&job.code, x) {
                            Err(()) => (Outcome::Error, None),
                            Ok(None) => (Outcome::Timeout, None),
                            Ok(Some(value)) => {
                                let want = eval(&expected, x).ok().flatten();
                                let outcome = if want == Some(value) {
                                    Outcome::Pass
                                } else {
                                    Outcome::Fail
                                };
                                (
                                    outcome,
                                    Some(StableHasher::new().write_u64(value as u64).finish()),
                                )
                            }
                        };
                        TestRun {
                            test_id: test.id,
                            outcome,
                            output_hash,
                            decided_in_child: false,
                            detail: None,
                        }
                    })
                    .collect();
                Ok(Execution {
                    problem_id: job.problem_id,
                    candidate_id: job.candidate_id,
                    results,
                    program_error: None,
                })
            })
            .collect()
    }
}

struct Fixture {
    tests: BTreeMap<ProblemId, Arc<[GeneratedTest]>>,
    rounds: Vec<Vec<Candidate>>,
}

fn fixture(seed: u64) -> Fixture {
    let mut rng = StdRng::seed_from_u64(seed);
    let problems: Vec<ProblemId> = (0..6).map(|p| ProblemId(40 + p)).collect();
    let tests = problems
        .iter()
        .map(|&p| {
            let cases: Vec<GeneratedTest> = (-2..5)
                .map(|x| GeneratedTest::new(p, TestKind::Call, format!("f({x})")))
                .collect();
            (p, Arc::from(cases))
        })
        .collect();
    let mut sample = BTreeMap::<ProblemId, u32>::new();
    let rounds = (0..ROUNDS)
        .map(|round| {
            let mut candidates = Vec::new();
            for &p in &problems {
                for _ in 0..rng.random_range(1..7) {
                    let code = match rng.random_range(0..10) {
                        0..=3 => reference(p),
                        4..=5 => format!("lin {} {}", p.0 % 7, rng.random_range(0..3)),
                        6..=7 => {
                            format!("div {} {}", rng.random_range(1..3), rng.random_range(-1..2))
                        }
                        8 => "spin".to_string(),
                        _ => "syntax error".to_string(),
                    };
                    let index = sample.entry(p).or_insert(0);
                    candidates.push(Candidate {
                        id: Candidate::derive_id(p, *index, &code),
                        problem_id: p,
                        sample_index: *index,
                        round,
                        code,
                        logprobs: LogprobSummary {
                            tokens: 10,
                            sum_logprob: -f64::from(rng.random_range(1..5u32)),
                        },
                    });
                    *index += 1;
                }
            }
            candidates
        })
        .collect();
    Fixture { tests, rounds }
}

fn job(candidate: &Candidate, tests: &Arc<[GeneratedTest]>) -> ExecJob {
    ExecJob {
        problem_id: candidate.problem_id,
        candidate_id: candidate.id,
        entry_point: "f".into(),
        code: candidate.code.clone(),
        tests: Arc::clone(tests),
    }
}

fn verdict(
    candidate: &Candidate,
    execution: &Execution,
    tests: &[GeneratedTest],
    kind: SignatureKind,
) -> CandidateVerdict {
    let ids: Vec<_> = tests.iter().map(|t| t.id).collect();
    CandidateVerdict::new(candidate, execution, &ids, kind)
        .expect("the interpreter covers every test")
}

fn run(fixture: &Fixture, config: ConsensusConfig, workers: usize) -> Vec<(Selection, u64, isize)> {
    let pool = BackendPool::spawn(
        "interpreter",
        vec![ExecuteService(Interpreter), ExecuteService(Interpreter)],
    );
    let handle = pool.handle();
    let tests = Arc::new(fixture.tests.clone());
    let rounds = Arc::new(fixture.rounds.clone());
    let (send, recv) = std::sync::mpsc::channel();
    let send = Arc::new(Mutex::new(send));
    timely::execute(timely::Config::process(workers), move |worker| {
        let (index, peers) = (worker.index(), worker.peers());
        let send = send.lock().unwrap().clone();
        let mut input = InputHandleVec::<u64, Candidate>::new();
        let probe = ProbeHandle::new();
        let (tests, kind, handle) = (Arc::clone(&tests), config.signature, handle.clone());
        worker.dataflow(|scope| {
            let jobs_tests = Arc::clone(&tests);
            let candidates = scope
                .input_from(&mut input)
                .exchange(|c: &Candidate| c.problem_id.0)
                .map(move |c: Candidate| {
                    let job = job(&c, &jobs_tests[&c.problem_id]);
                    (c, job)
                });
            let executed = offload(candidates, "Executor", handle, BatchPolicy { max_batch: 4 });
            let verdicts = executed.map(move |(candidate, execution)| {
                let execution = execution.expect("the interpreter does not fail");
                verdict(&candidate, &execution, &tests[&candidate.problem_id], kind)
            });
            let out = consensus(as_insertions(verdicts), &config);
            out.selections.inner.capture_into(send);
            out.clusters.inner.probe_with(&probe);
        });
        for (round, candidates) in rounds.iter().enumerate() {
            for (i, c) in candidates.iter().enumerate() {
                if i % peers == index {
                    input.send(c.clone());
                }
            }
            input.advance_to(round as u64 + 1);
            worker.step_while(|| probe.less_than(input.time()));
        }
    })
    .expect("timely computation")
    .join()
    .into_iter()
    .for_each(|r| r.expect("worker"));
    pool.shutdown().expect("pool threads");
    recv.extract()
        .into_iter()
        .flat_map(|(_, batch)| batch)
        .collect()
}

fn by_round(updates: &[(Selection, u64, isize)]) -> Vec<BTreeMap<ProblemId, Selection>> {
    (0..ROUNDS)
        .map(|round| {
            let mut acc = BTreeMap::<Selection, isize>::new();
            for (s, _, d) in updates.iter().filter(|(_, t, _)| *t <= round) {
                *acc.entry(s.clone()).or_insert(0) += d;
            }
            acc.into_iter()
                .filter(|(_, d)| *d != 0)
                .map(|(s, d)| {
                    assert_eq!(d, 1, "{s:?}");
                    (s.problem_id, s)
                })
                .collect()
        })
        .collect()
}

#[test]
fn executed_candidates_flow_into_incremental_selection() {
    for (seed, kind) in [
        (1, SignatureKind::PassFail),
        (2, SignatureKind::Output),
        (3, SignatureKind::PassFail),
    ] {
        let fixture = fixture(seed);
        let config = ConsensusConfig {
            signature: kind,
            ..ConsensusConfig::default()
        };
        let one = by_round(&run(&fixture, config, 1));
        let two = by_round(&run(&fixture, config, 2));
        assert_eq!(one, two, "seed {seed}: -w 1 and -w 2 differ");

        // Reference: execute directly, judge, and select in batch after each round.
        let mut interpreter = Interpreter;
        let mut verdicts = Vec::new();
        for (round, candidates) in fixture.rounds.iter().enumerate() {
            let jobs: Vec<ExecJob> = candidates
                .iter()
                .map(|c| job(c, &fixture.tests[&c.problem_id]))
                .collect();
            for (c, e) in candidates.iter().zip(interpreter.execute(&jobs)) {
                verdicts.push(verdict(c, &e.unwrap(), &fixture.tests[&c.problem_id], kind));
            }
            assert_eq!(
                one[round],
                select_batch(&verdicts, &config),
                "seed {seed} round {round}"
            );
        }
        // The streams are not degenerate: most problems end with a selection.
        let last = one.last().unwrap();
        assert!(
            last.len() >= 4,
            "seed {seed}: only {} problems selected",
            last.len()
        );
        assert!(last.values().all(|s| s.cluster_size >= config.tau));
    }
}
