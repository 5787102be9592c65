//! Tokenizer throughput: encoding and decoding the HumanEval programs (prompt, solution and tests,
//! about 280 kB of Python) with the tokenizers built from both registry models' GGUF metadata.
//!
//! `cargo bench --bench tokenizer` (set `UCODER_FLOW_CACHE` to reuse a model cache).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ucoder_flow::fetch::cache_dir;
use ucoder_flow::llm::gguf::GgufModel;
use ucoder_flow::llm::tokenizer::Tokenizer;
use ucoder_flow::models::{self, DEFAULT_MODEL, TEST_MODEL};

fn corpus() -> Vec<String> {
    ucoder_flow::eval::humaneval::load(
        &cache_dir(),
        &ucoder_flow::progress::Notes(|line: &str| eprintln!("[humaneval] {line}")),
    )
    .expect("HumanEval")
    .into_iter()
    .map(|p| format!("{}{}\n{}", p.prompt, p.canonical_solution, p.test))
    .collect()
}

fn tokenizer(model: &str) -> Tokenizer {
    let source = models::resolve(
        model,
        &cache_dir(),
        &ucoder_flow::progress::Notes(|line: &str| eprintln!("[models] {line}")),
    )
    .expect("model");
    let gguf = GgufModel::open(source.path()).expect("GGUF");
    Tokenizer::from_gguf(gguf.content()).expect("tokenizer")
}

fn bench_tokenizer(c: &mut Criterion) {
    let texts = corpus();
    let bytes: usize = texts.iter().map(String::len).sum();
    for model in [TEST_MODEL, DEFAULT_MODEL] {
        let tok = tokenizer(model);
        let ids: Vec<Vec<u32>> = texts
            .iter()
            .map(|t| tok.encode(t, false).unwrap())
            .collect();
        let tokens: usize = ids.iter().map(Vec::len).sum();

        let mut group = c.benchmark_group("tokenizer");
        group.sample_size(10);
        group.throughput(Throughput::Bytes(bytes as u64));
        group.bench_function(BenchmarkId::new("encode", model), |b| {
            b.iter(|| {
                texts
                    .iter()
                    .map(|t| tok.encode(t, false).unwrap().len())
                    .sum::<usize>()
            })
        });
        group.throughput(Throughput::Elements(tokens as u64));
        group.bench_function(BenchmarkId::new("decode", model), |b| {
            b.iter(|| {
                ids.iter()
                    .map(|ids| tok.decode(ids).unwrap().len())
                    .sum::<usize>()
            })
        });
        group.finish();
    }
}

criterion_group!(benches, bench_tokenizer);
criterion_main!(benches);
