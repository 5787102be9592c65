//! Throughput of the differential grouper + selector (verdicts per second), against the batch
//! reference, at the paper's scale per problem: 100 tests, n = 128 samples in rounds of 16.
//!
//! `cargo bench -p ucoder-operators --bench consensus`

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use differential_dataflow::input::InputSession;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use ucoder_operators::{
    CandidateId, CandidateVerdict, ConsensusConfig, Perplexity, ProblemId, Signature,
    SignatureKind, consensus, select_batch,
};

const PROBLEMS: u64 = 32;
const SAMPLES: u64 = 128;
const ROUND: u64 = 16;
const TESTS: u32 = 100;

/// Verdicts with realistic cluster structure: each problem has a few behaviours (one dominant),
/// plus noise that makes singletons.
fn verdicts(kind: SignatureKind) -> Vec<CandidateVerdict> {
    let mut rng = StdRng::seed_from_u64(7);
    let mut out = Vec::new();
    for p in 0..PROBLEMS {
        let behaviours: Vec<Vec<u64>> = (0..5)
            .map(|_| (0..TESTS).map(|_| rng.random_range(0..4)).collect())
            .collect();
        for s in 0..SAMPLES {
            let pick = if rng.random_bool(0.5) {
                0
            } else {
                rng.random_range(0..5)
            };
            let mut cells = behaviours[pick].clone();
            if rng.random_bool(0.3) {
                let i = rng.random_range(0..cells.len());
                cells[i] = rng.random_range(0..4);
            }
            let passed = cells.iter().filter(|&&c| c == 0).count() as u32;
            let executed = cells.iter().filter(|&&c| c < 3).count() as u32;
            let signature = match kind {
                SignatureKind::PassFail => {
                    let mut bits = vec![0u64; (TESTS as usize).div_ceil(64)];
                    for (i, &c) in cells.iter().enumerate() {
                        if c == 0 {
                            bits[i / 64] |= 1 << (i % 64);
                        }
                    }
                    Signature::PassFail { tests: TESTS, bits }
                }
                SignatureKind::Output => Signature::Output { cells, passed },
            };
            out.push(CandidateVerdict {
                problem_id: ProblemId(p),
                candidate_id: CandidateId(p * SAMPLES + s),
                signature,
                executed,
                tests: TESTS,
                passed,
                perplexity: Perplexity::new(1.0 + rng.random_range(0..1000) as f64 / 1000.0),
            });
        }
    }
    out
}

/// Feeds the verdicts in sampling rounds (round r holds samples [r·16, (r+1)·16) of every
/// problem) and waits for the selections after each round, as the pipeline does.
fn incremental(verdicts: &[CandidateVerdict], config: ConsensusConfig) -> usize {
    let verdicts = verdicts.to_vec();
    timely::execute_directly(move |worker| {
        let mut input = InputSession::<u64, CandidateVerdict, isize>::new();
        let probe = worker.dataflow(|scope| {
            let (probe, _) = consensus(input.to_collection(scope), &config)
                .selections
                .probe();
            probe
        });
        for round in 0..SAMPLES / ROUND {
            for v in verdicts
                .iter()
                .filter(|v| (v.candidate_id.0 % SAMPLES) / ROUND == round)
            {
                input.insert(v.clone());
            }
            input.advance_to(round + 1);
            input.flush();
            worker.step_while(|| probe.less_than(input.time()));
        }
        verdicts.len()
    })
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("consensus");
    group.sample_size(10);
    for kind in [SignatureKind::PassFail, SignatureKind::Output] {
        let verdicts = verdicts(kind);
        let config = ConsensusConfig {
            signature: kind,
            ..ConsensusConfig::default()
        };
        group.throughput(Throughput::Elements(verdicts.len() as u64));
        group.bench_function(format!("incremental_{kind:?}"), |b| {
            b.iter(|| black_box(incremental(&verdicts, config)))
        });
        group.bench_function(format!("batch_reference_{kind:?}"), |b| {
            b.iter(|| black_box(select_batch(&verdicts, &config).len()))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
