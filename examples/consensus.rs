//! Consensus on a toy passing matrix: five candidates of one problem ran on four tests. Candidates
//! with the same pass/fail signature form a cluster; the largest cluster of at least τ members
//! whose candidates executed at least ρ of the tests wins, and its least perplexing member is
//! selected. `select_batch` is the reference of the differential selector the run uses.
//!
//! ```sh
//! cargo run --release --example consensus
//! ```

use ucoder_operators::{
    Candidate, CandidateVerdict, ConsensusConfig, Execution, LogprobSummary, Outcome, ProblemId,
    SelectionRule, SignatureKind, TestId, TestRun, select_batch,
};

fn main() {
    let problem = ProblemId(1);
    let tests: Vec<TestId> = (1..=4).map(TestId).collect();
    // One row per candidate: its outcome on each test (P pass, F fail) and its log-probability sum.
    let matrix = [
        ("PPFP", -4.0),
        ("PPFP", -3.0),
        ("PPPP", -2.0),
        ("PPFP", -5.0),
        ("FFFF", -1.0),
    ];
    let verdicts: Vec<CandidateVerdict> = matrix
        .iter()
        .enumerate()
        .map(|(i, (row, sum_logprob))| {
            let code = format!("candidate {i}");
            let candidate = Candidate {
                id: Candidate::derive_id(problem, i as u32, &code),
                problem_id: problem,
                sample_index: i as u32,
                round: 0,
                code,
                logprobs: LogprobSummary {
                    tokens: 10,
                    sum_logprob: *sum_logprob,
                },
            };
            let execution = Execution {
                problem_id: problem,
                candidate_id: candidate.id,
                results: tests
                    .iter()
                    .zip(row.chars())
                    .map(|(&test_id, c)| TestRun {
                        test_id,
                        outcome: if c == 'P' {
                            Outcome::Pass
                        } else {
                            Outcome::Fail
                        },
                        output_hash: None,
                        decided_in_child: false,
                        detail: None,
                    })
                    .collect(),
                program_error: None,
            };
            CandidateVerdict::new(&candidate, &execution, &tests, SignatureKind::PassFail)
                .expect("the execution covers the test set")
        })
        .collect();
    let config = ConsensusConfig {
        rho: 0.8,
        tau: 2,
        rule: SelectionRule::Consensus,
        signature: SignatureKind::PassFail,
        ..ConsensusConfig::default()
    };
    for (problem, s) in select_batch(&verdicts, &config) {
        println!(
            "problem {problem}: candidate {} from a cluster of {} (passes {}/{} tests, perplexity {:.3})",
            s.candidate_id,
            s.cluster_size,
            s.passed,
            s.tests,
            s.perplexity.get()
        );
    }
}
