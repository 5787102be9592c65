//! Oracle tests for the incremental grouper and selector.
//!
//! Random candidate streams (several problems, clusters that form and dissolve, ties in e and f,
//! insertions and retractions over several rounds; timely time = sampling round) are fed to the
//! differential dataflow. After every round the accumulated selections (and cluster sizes) must
//! equal a batch recomputation over the verdicts alive at that round by the plain-Rust reference
//! (`select_batch`). The same streams run with one and with two timely workers (each worker
//! feeding the candidates it happens to receive, so records must be exchanged by problem) must
//! give identical selections round by round.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use differential_dataflow::input::InputSession;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use timely::dataflow::ProbeHandle;
use timely::dataflow::operators::capture::{Capture, Extract};
use ucoder_operators::{
    Candidate, CandidateVerdict, ClusterKey, ClusterStanding, ConsensusConfig, Execution,
    GeneratedTest, LogprobSummary, Outcome, ProblemId, Selection, SelectionRule, SignatureKind,
    TestKind, TestRun, consensus, select_batch,
};

/// A problem: its id, tests and candidate behaviours.
type ProblemSpec = (
    ProblemId,
    Vec<GeneratedTest>,
    Vec<Vec<(Outcome, Option<u64>)>>,
);

/// The updates of each round: (verdict, +1 insert / −1 retract).
type Script = Vec<Vec<(CandidateVerdict, isize)>>;

const ROUNDS: u64 = 8;

/// A per-problem "behaviour": the outcome and returned value on each test. Candidates copy one
/// behaviour (so clusters form), sometimes with a mutation (singletons, near-misses), and some
/// replace failures by errors (same pass/fail signature, lower e(r)).
fn behaviours(rng: &mut StdRng, tests: usize) -> Vec<Vec<(Outcome, Option<u64>)>> {
    (0..4)
        .map(|_| {
            (0..tests)
                .map(|_| match rng.random_range(0..10) {
                    0..=5 => (Outcome::Pass, Some(rng.random_range(0..3))),
                    6..=8 => (Outcome::Fail, Some(rng.random_range(0..3))),
                    _ => (Outcome::Error, None),
                })
                .collect()
        })
        .collect()
}

fn random_script(seed: u64, kind: SignatureKind) -> Script {
    let mut rng = StdRng::seed_from_u64(seed);
    let problems: Vec<ProblemSpec> = (0..5)
        .map(|p| {
            let id = ProblemId(1_000 + p);
            let tests: Vec<GeneratedTest> = (0..rng.random_range(3..9))
                .map(|t| GeneratedTest::new(id, TestKind::Call, format!("f({t})")))
                .collect();
            let b = behaviours(&mut rng, tests.len());
            (id, tests, b)
        })
        .collect();
    let mut live: Vec<CandidateVerdict> = Vec::new();
    let mut retracted: Vec<CandidateVerdict> = Vec::new();
    let mut next_sample = 0u32;
    let mut script = Vec::new();
    for _round in 0..ROUNDS {
        let mut updates = Vec::new();
        for (problem, tests, behaviours) in &problems {
            for _ in 0..rng.random_range(0..6) {
                let mut results: Vec<TestRun> = behaviours[rng.random_range(0..behaviours.len())]
                    .iter()
                    .zip(tests)
                    .map(|(&(outcome, output_hash), test)| TestRun {
                        test_id: test.id,
                        outcome,
                        output_hash,
                        decided_in_child: false,
                        detail: None,
                    })
                    .collect();
                if rng.random_bool(0.25) {
                    let i = rng.random_range(0..results.len());
                    results[i].outcome = [
                        Outcome::Pass,
                        Outcome::Fail,
                        Outcome::Error,
                        Outcome::Timeout,
                    ][rng.random_range(0..4)];
                }
                if rng.random_bool(0.2) {
                    for r in results.iter_mut().filter(|r| r.outcome == Outcome::Fail) {
                        r.outcome = Outcome::Error;
                        r.output_hash = None;
                    }
                }
                let code = format!("def f(x): return {next_sample}");
                let candidate = Candidate {
                    id: Candidate::derive_id(*problem, next_sample, &code),
                    problem_id: *problem,
                    sample_index: next_sample,
                    round: 0,
                    code,
                    // Quantized perplexities so that ties on f(r) happen.
                    logprobs: LogprobSummary {
                        tokens: 4,
                        sum_logprob: -f64::from(rng.random_range(1..4u32)),
                    },
                };
                next_sample += 1;
                let execution = Execution {
                    problem_id: *problem,
                    candidate_id: candidate.id,
                    results,
                    program_error: None,
                };
                let ids: Vec<_> = tests.iter().map(|t| t.id).collect();
                let verdict = CandidateVerdict::new(&candidate, &execution, &ids, kind)
                    .expect("complete execution");
                live.push(verdict.clone());
                updates.push((verdict, 1));
            }
        }
        // Retract a few live candidates, and bring back some retracted ones.
        let mut i = 0;
        while i < live.len() {
            if rng.random_bool(0.12) {
                let gone = live.swap_remove(i);
                updates.push((gone.clone(), -1));
                retracted.push(gone);
            } else {
                i += 1;
            }
        }
        if !retracted.is_empty() && rng.random_bool(0.5) {
            let back = retracted.swap_remove(rng.random_range(0..retracted.len()));
            live.push(back.clone());
            updates.push((back, 1));
        }
        script.push(updates);
    }
    script
}

/// Accumulates `(data, time, diff)` updates up to and including `round`.
fn accumulate<D: Ord + Clone>(updates: &[(D, u64, isize)], round: u64) -> BTreeMap<D, isize> {
    let mut acc = BTreeMap::new();
    for (d, t, r) in updates {
        if *t <= round {
            *acc.entry(d.clone()).or_insert(0) += r;
        }
    }
    acc.retain(|_, r| *r != 0);
    acc
}

/// Selections after each round as a map problem → selection (checking multiplicities are 1).
fn selections_by_round(updates: &[(Selection, u64, isize)]) -> Vec<BTreeMap<ProblemId, Selection>> {
    (0..ROUNDS)
        .map(|round| {
            let mut out = BTreeMap::new();
            for (selection, count) in accumulate(updates, round) {
                assert_eq!(
                    count, 1,
                    "round {round}: selection {selection:?} has multiplicity {count}"
                );
                let previous = out.insert(selection.problem_id, selection);
                assert!(
                    previous.is_none(),
                    "round {round}: two selections for one problem"
                );
            }
            out
        })
        .collect()
}

/// Runs the script with one worker, checking selections and cluster sizes against the reference
/// after every round; returns the selection updates.
fn run_single_worker_checked(
    script: &Script,
    config: ConsensusConfig,
) -> Vec<(Selection, u64, isize)> {
    let script = script.clone();
    timely::execute_directly(move |worker| {
        let mut input = InputSession::<u64, CandidateVerdict, isize>::new();
        let selections = Rc::new(RefCell::new(Vec::new()));
        let clusters = Rc::new(RefCell::new(Vec::new()));
        let standings = Rc::new(RefCell::new(Vec::new()));
        let (s, c, st) = (
            Rc::clone(&selections),
            Rc::clone(&clusters),
            Rc::clone(&standings),
        );
        let probe = ProbeHandle::new();
        worker.dataflow(|scope| {
            let out = consensus(input.to_collection(scope), &config);
            // Every observed output is probed, so "the probe passed r" means all of r was seen.
            out.clusters
                .inspect(move |(d, t, r)| c.borrow_mut().push((d.clone(), *t, *r)))
                .probe_with(&probe);
            out.standings
                .inspect(move |(d, t, r)| st.borrow_mut().push((d.clone(), *t, *r)))
                .probe_with(&probe);
            out.selections
                .inspect(move |(d, t, r)| s.borrow_mut().push((d.clone(), *t, *r)))
                .probe_with(&probe);
        });
        let mut live: BTreeMap<CandidateVerdict, isize> = BTreeMap::new();
        for (round, updates) in script.iter().enumerate() {
            let round = round as u64;
            for (verdict, diff) in updates {
                input.update(verdict.clone(), *diff);
                *live.entry(verdict.clone()).or_insert(0) += diff;
            }
            live.retain(|_, d| *d != 0);
            input.advance_to(round + 1);
            input.flush();
            worker.step_while(|| probe.less_than(input.time()));

            let alive: Vec<CandidateVerdict> = live.keys().cloned().collect();
            let expected = select_batch(&alive, &config);
            let actual = &selections_by_round(&selections.borrow())[round as usize];
            assert_eq!(actual, &expected, "round {round}, config {config:?}");

            let mut expected_clusters: BTreeMap<(ClusterKey, isize), isize> = BTreeMap::new();
            let mut sizes: BTreeMap<ClusterKey, isize> = BTreeMap::new();
            for v in alive
                .iter()
                .filter(|v| v.meets_rho(config.rho) && !v.signature.is_all_fail())
            {
                *sizes
                    .entry(ClusterKey {
                        problem_id: v.problem_id,
                        signature: v.signature.clone(),
                    })
                    .or_insert(0) += 1;
            }
            let mut expected_standings: BTreeMap<ProblemId, Vec<ClusterStanding>> = BTreeMap::new();
            for (key, size) in sizes {
                expected_standings
                    .entry(key.problem_id)
                    .or_default()
                    .push(ClusterStanding {
                        size: size as u32,
                        passed: key.signature.passed(),
                    });
                expected_clusters.insert((key, size), 1);
            }
            let expected_standings: BTreeMap<(ProblemId, Vec<ClusterStanding>), isize> =
                expected_standings
                    .into_iter()
                    .map(|(p, mut v)| {
                        v.sort_unstable_by(|a, b| b.cmp(a));
                        ((p, v), 1)
                    })
                    .collect();
            assert_eq!(
                accumulate(&standings.borrow(), round),
                expected_standings,
                "standings, round {round}"
            );
            assert_eq!(
                accumulate(&clusters.borrow(), round),
                expected_clusters,
                "clusters, round {round}"
            );
        }
        selections.borrow().clone()
    })
}

/// Runs the script with `workers` timely workers; worker `i` feeds the updates whose candidate id
/// is `i` modulo `workers`. Returns all selection updates.
fn run_workers(
    script: &Script,
    config: ConsensusConfig,
    workers: usize,
) -> Vec<(Selection, u64, isize)> {
    let script = Arc::new(script.clone());
    let (send, recv) = std::sync::mpsc::channel();
    let send = Arc::new(Mutex::new(send));
    timely::execute(timely::Config::process(workers), move |worker| {
        let (index, peers) = (worker.index(), worker.peers());
        let send = send.lock().unwrap().clone();
        let mut input = InputSession::<u64, CandidateVerdict, isize>::new();
        let probe = worker.dataflow(|scope| {
            let out = consensus(input.to_collection(scope), &config);
            out.selections.inner.capture_into(send);
            let (probe, _) = out.clusters.probe();
            probe
        });
        for (round, updates) in script.iter().enumerate() {
            for (verdict, diff) in updates {
                if verdict.candidate_id.0 as usize % peers == index {
                    input.update(verdict.clone(), *diff);
                }
            }
            input.advance_to(round as u64 + 1);
            input.flush();
            worker.step_while(|| probe.less_than(input.time()));
        }
    })
    .expect("timely computation")
    .join()
    .into_iter()
    .for_each(|r| r.expect("worker"));
    recv.extract()
        .into_iter()
        .flat_map(|(_, batch)| batch)
        .collect()
}

fn configs() -> Vec<ConsensusConfig> {
    use SelectionRule::*;
    use SignatureKind::*;
    vec![
        ConsensusConfig {
            rho: 0.8,
            tau: 2,
            rule: Consensus,
            signature: PassFail,
            ..Default::default()
        },
        ConsensusConfig {
            rho: 0.5,
            tau: 3,
            rule: Consensus,
            signature: Output,
            ..Default::default()
        },
        ConsensusConfig {
            rho: 0.0,
            tau: 1,
            rule: Consensus,
            signature: PassFail,
            ..Default::default()
        },
        ConsensusConfig {
            rho: 0.8,
            tau: 1,
            rule: DualAgreement,
            signature: PassFail,
            ..Default::default()
        },
        ConsensusConfig {
            rho: 0.8,
            tau: 1,
            rule: Bayesian,
            signature: PassFail,
            ..Default::default()
        },
        ConsensusConfig {
            rho: 0.5,
            tau: 2,
            rule: Bayesian,
            signature: PassFail,
            ..Default::default()
        },
        ConsensusConfig {
            rho: 1.0,
            tau: 2,
            rule: DualAgreement,
            signature: Output,
            ..Default::default()
        },
        ConsensusConfig {
            rho: 0.5,
            tau: 1,
            rule: Consensus,
            signature: PassFail,
            min_tests: 3,
            min_pass_rate: 0.5,
            ..Default::default()
        },
    ]
}

#[test]
fn incremental_selection_matches_batch_recomputation_every_round() {
    let mut selected = 0usize;
    let mut changes = 0usize;
    for config in configs() {
        for seed in 0..8 {
            let script = random_script(seed, config.signature);
            let retractions = script.iter().flatten().filter(|(_, d)| *d < 0).count();
            assert!(retractions > 0, "seed {seed} exercises no retractions");
            let updates = run_single_worker_checked(&script, config);
            selected += selections_by_round(&updates).last().unwrap().len();
            changes += updates.iter().filter(|(_, _, d)| *d < 0).count();
        }
    }
    // The streams must actually exercise the rule: selections exist and winners get replaced.
    assert!(
        selected > 50,
        "only {selected} final selections over all runs"
    );
    assert!(
        changes > 50,
        "only {changes} retracted winners over all runs"
    );
}

#[test]
fn two_workers_select_exactly_what_one_worker_selects() {
    for config in configs() {
        for seed in 100..104 {
            let script = random_script(seed, config.signature);
            let one = selections_by_round(&run_workers(&script, config, 1));
            let two = selections_by_round(&run_workers(&script, config, 2));
            assert_eq!(one, two, "seed {seed}, config {config:?}");
            // And both are right.
            let mut live: BTreeSet<CandidateVerdict> = BTreeSet::new();
            for (round, updates) in script.iter().enumerate() {
                for (v, d) in updates {
                    if *d > 0 {
                        live.insert(v.clone());
                    } else {
                        live.remove(v);
                    }
                }
                let alive: Vec<CandidateVerdict> = live.iter().cloned().collect();
                assert_eq!(
                    two[round],
                    select_batch(&alive, &config),
                    "seed {seed} round {round}"
                );
            }
        }
    }
}
