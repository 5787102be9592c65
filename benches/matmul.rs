//! The packed-weight matmul kernel on the default model's shapes: the FFN projection
//! (4864 × 896, Q5_0 — repacked exactly) and the output head (151,936 × 896, Q8_0), for one
//! activation row (decode: bound by the bytes read) and for 16 rows (dense sampling: bound by the
//! integer throughput), with weights in their packed form. Single-threaded unless
//! `CANDLE_NUM_THREADS` says otherwise.
//!
//! `CANDLE_NUM_THREADS=1 cargo bench --bench matmul`

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ucoder_flow::llm::kernels::{PackedWeight, QuantizedActs};

fn packed(dtype: GgmlDType, n: usize, k: usize) -> PackedWeight {
    let w: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.618).sin()).collect();
    let t = Tensor::from_vec(w, (n, k), &Device::Cpu).expect("tensor");
    let q = QTensor::quantize(&t, dtype).expect("quantize");
    PackedWeight::from_ggml(dtype, &q.data().expect("bytes"), n, k).expect("pack")
}

fn bench_matmul(c: &mut Criterion) {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // SAFETY: set before candle's pool starts, on the main thread.
        unsafe { std::env::set_var("CANDLE_NUM_THREADS", "1") };
    }
    if !PackedWeight::supported() {
        eprintln!("skipped: no AVX-512 VNNI on this CPU");
        return;
    }
    let mut group = c.benchmark_group("packed_matmul");
    group.sample_size(10);
    for (name, dtype, n, k) in [
        ("ffn_up_q5_0", GgmlDType::Q5_0, 4864, 896),
        ("output_q8_0", GgmlDType::Q8_0, 151_936, 896),
    ] {
        let w = packed(dtype, n, k);
        for m in [1usize, 16] {
            let x: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).cos()).collect();
            let acts = QuantizedActs::new(&x, m, k);
            let mut out = vec![0f32; m * n];
            group.throughput(Throughput::Bytes(w.size_in_bytes() as u64));
            group.bench_with_input(BenchmarkId::new(name, m), &m, |b, _| {
                b.iter(|| w.matmul_quantized(&acts, &mut out))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_matmul);
criterion_main!(benches);
