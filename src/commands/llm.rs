//! `ucoder-flow generate` and `ucoder-flow bench llm`: the engine's command-line entry points.
//!
//! The benchmark measures load time, prefill tok/s, single-stream decode tok/s and the aggregate
//! decode tok/s of dense sampling (one prompt prefilled once, n samples decoded as a batch) at
//! several n, each the median of `--repeats` runs, with the machine's load average beside it.
//! `--compare-llamacpp` runs `scripts/bench_llamacpp.py` (llama-cpp-python) on the same model,
//! prompt token ids, token counts and threads, and prints both and the ratios.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::llm::model::BatchKernels;
use crate::llm::{ChatTurn, Engine, EngineOptions, LlmError, SamplerSettings};
use crate::models::ModelSource;

/// Arguments of `ucoder-flow generate`.
#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    /// Registry name or path of a GGUF file.
    #[arg(long, default_value = crate::models::DEFAULT_MODEL)]
    pub model: String,
    /// Completions to sample (prefilled once, decoded as a batch).
    #[arg(short = 'n', long, default_value_t = 1)]
    pub n: usize,
    /// Temperature (0 = greedy).
    #[arg(long, default_value_t = 0.7)]
    pub temperature: f32,
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f32,
    /// 0 = off.
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    #[arg(long, default_value_t = 256)]
    pub max_tokens: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stop strings (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
    /// CPU threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Send the prompt as is, without the model's chat template.
    #[arg(long)]
    pub raw: bool,
    /// Print only the completions (no load and throughput lines on stderr).
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// The prompt (a user message unless --raw).
    pub prompt: String,
}

/// Arguments of `ucoder-flow bench llm`.
#[derive(Debug, clap::Args)]
pub struct LlmBenchArgs {
    /// Registry name or path of a GGUF file.
    #[arg(long, default_value = crate::models::DEFAULT_MODEL)]
    pub model: String,
    /// CPU threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Also write the figures as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Sample counts of the dense-sampling runs.
    #[arg(long, value_delimiter = ',', default_value = "1,4,8,16,32")]
    pub ns: Vec<usize>,
    /// Tokens decoded by the single-stream run.
    #[arg(long, default_value_t = 64)]
    pub decode_tokens: usize,
    /// Tokens decoded per sample by the dense runs.
    #[arg(long, default_value_t = 32)]
    pub dense_tokens: usize,
    /// Runs per figure (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
    /// Use an f32 GEMM on dequantized weights for batches of at least this many rows.
    #[arg(long)]
    pub dense_gemm_min_rows: Option<usize>,
    /// Use the packed AVX-512 VNNI kernel for batches of at least this many rows (0 = never).
    #[arg(long, default_value_t = 1)]
    pub int8_min_rows: usize,
    /// Run the same measurements with llama.cpp (llama-cpp-python) and print the ratios.
    #[arg(long)]
    pub compare_llamacpp: bool,
    /// Python interpreter with llama-cpp-python (default: the one the fetcher uses).
    #[arg(long)]
    pub python: Option<String>,
    /// The llama.cpp benchmark script.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/bench_llamacpp.py"))]
    pub llamacpp_script: PathBuf,
}

/// Why a benchmark or generation command failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Llm(#[from] LlmError),
    #[error(transparent)]
    Model(#[from] crate::models::ModelError),
    #[error("llama.cpp benchmark ({script}): {message}")]
    LlamaCpp { script: PathBuf, message: String },
    #[error(transparent)]
    Write(#[from] crate::store::StoreError),
}

/// The prompt every benchmark run uses (a chat-formatted coding request, ~100 tokens).
pub const BENCH_PROMPT: &str = "Write a Python function `merge_intervals(intervals)` that takes a list of \
[start, end] pairs, merges every overlapping pair, and returns the merged intervals sorted by start. \
Explain the algorithm briefly, state its time complexity, and include three assert-based tests that \
cover touching intervals, nested intervals and an empty input.";

/// Figures of one engine.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EngineFigures {
    pub engine: String,
    pub threads: usize,
    pub load_s: f64,
    pub prompt_tokens: usize,
    pub prefill_tok_s: f64,
    pub decode_tok_s: f64,
    /// n → aggregate decode tok/s.
    pub dense_tok_s: BTreeMap<String, f64>,
}

/// What `bench llm` reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LlmBenchReport {
    pub model: String,
    pub decode_tokens: usize,
    pub dense_tokens: usize,
    pub repeats: usize,
    /// /proc/loadavg before and after the run.
    pub load_before: String,
    pub load_after: String,
    pub candle: EngineFigures,
    pub llamacpp: Option<EngineFigures>,
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn resolve(model: &str) -> Result<ModelSource, CommandError> {
    Ok(crate::models::resolve(
        model,
        &crate::fetch::cache_dir(),
        &super::progress::Renderer::notes("models"),
    )?)
}

/// `ucoder-flow generate`: prints each completion and the throughput.
pub fn generate_command(args: &GenerateArgs) -> Result<(), CommandError> {
    let source = resolve(&args.model)?;
    let opts = EngineOptions {
        threads: args.threads,
        ..Default::default()
    };
    let mut engine = Engine::load(&source, &opts)?;
    let note = |line: String| {
        if !args.quiet {
            eprintln!("[generate] {line}");
        }
    };
    note(format!(
        "loaded {} in {:.2}s ({} threads)",
        source.path().display(),
        engine.load_time().as_secs_f64(),
        engine.threads()
    ));
    let prompt = if args.raw || !engine.has_chat_template() {
        args.prompt.clone()
    } else {
        engine.chat_prompt(&[ChatTurn::user(args.prompt.clone())])?
    };
    let params = SamplerSettings {
        temperature: args.temperature,
        top_p: args.top_p,
        top_k: args.top_k,
        max_tokens: args.max_tokens,
        stop: args.stop.clone(),
        seed: args.seed,
        ignore_eos: false,
    };
    let t0 = Instant::now();
    let completions = engine.generate_n(&prompt, args.n, &params)?;
    let wall = t0.elapsed().as_secs_f64();
    for (i, c) in completions.iter().enumerate() {
        println!(
            "--- completion {i} ({} tokens, {:?}, perplexity {:.3}) ---",
            c.token_ids.len(),
            c.finish_reason,
            c.perplexity().unwrap_or(f64::NAN)
        );
        println!("{}", c.text);
    }
    let s = engine.last_stats();
    note(format!(
        "prompt {} tokens, prefill {:.1} tok/s; {} tokens generated, decode {:.1} tok/s aggregate; {:.2}s wall",
        s.prompt_tokens,
        s.prompt_tokens as f64 / s.prefill_time.as_secs_f64().max(1e-9),
        s.generated_tokens,
        s.decode_tokens as f64 / s.decode_time.as_secs_f64().max(1e-9),
        wall
    ));
    Ok(())
}

/// Runs the candle side of the benchmark.
pub fn bench_candle(
    engine: &mut Engine,
    prompt: &str,
    args: &LlmBenchArgs,
) -> Result<EngineFigures, LlmError> {
    let prompt_tokens = engine.encode_prompt(prompt)?.len();
    let repeats = args.repeats.max(1);
    // Warm-up: the first call packs weights for the repacked kernels.
    engine.generate_n(prompt, 1, &SamplerSettings::greedy(2))?;
    let mut prefill = Vec::new();
    let mut decode = Vec::new();
    for _ in 0..repeats {
        let mut p = SamplerSettings::greedy(args.decode_tokens + 1);
        p.ignore_eos = true;
        engine.generate_n(prompt, 1, &p)?;
        let s = engine.last_stats();
        prefill.push(s.prompt_tokens as f64 / s.prefill_time.as_secs_f64());
        decode.push(s.decode_tokens as f64 / s.decode_time.as_secs_f64());
    }
    let mut dense = BTreeMap::new();
    for &n in &args.ns {
        let mut rates = Vec::new();
        for r in 0..repeats {
            let p = SamplerSettings {
                temperature: 0.8,
                top_p: 0.95,
                top_k: 0,
                max_tokens: args.dense_tokens + 1,
                stop: Vec::new(),
                seed: r as u64,
                ignore_eos: true,
            };
            engine.generate_n(prompt, n, &p)?;
            let s = engine.last_stats();
            rates.push(s.decode_tokens as f64 / s.decode_time.as_secs_f64());
        }
        let m = median(rates);
        eprintln!(
            "[bench] candle dense n={n}: {m:.1} tok/s (load {})",
            load_average()
        );
        dense.insert(n.to_string(), m);
    }
    Ok(EngineFigures {
        engine: "ucoder-flow candle engine".into(),
        threads: engine.threads(),
        load_s: engine.load_time().as_secs_f64(),
        prompt_tokens,
        prefill_tok_s: median(prefill),
        decode_tok_s: median(decode),
        dense_tok_s: dense,
    })
}

fn bench_llamacpp(
    model: &Path,
    prompt_ids: &[u32],
    threads: usize,
    args: &LlmBenchArgs,
) -> Result<EngineFigures, CommandError> {
    let err = |message: String| CommandError::LlamaCpp {
        script: args.llamacpp_script.clone(),
        message,
    };
    let input = serde_json::json!({
        "model": model,
        "threads": threads,
        "prompt_ids": prompt_ids,
        "decode_tokens": args.decode_tokens,
        "dense_tokens": args.dense_tokens,
        "ns": args.ns,
        "repeats": args.repeats.max(1),
    });
    let python = args.python.clone().unwrap_or_else(crate::fetch::python);
    let mut child = Command::new(&python)
        .arg(&args.llamacpp_script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| err(format!("cannot start `{python}`: {e}")))?;
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(input.to_string().as_bytes())
        .map_err(|e| err(format!("writing its input: {e}")))?;
    let out = child.wait_with_output().map_err(|e| err(e.to_string()))?;
    if !out.status.success() {
        return Err(err(format!(
            "exited with {} (is llama-cpp-python installed for `{}`?)",
            out.status, python
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .unwrap_or("");
    serde_json::from_str(line).map_err(|e| err(format!("unreadable output ({e}): {text}")))
}

/// Formats both engines' figures side by side (with ratios when llama.cpp ran).
pub fn format_report(r: &LlmBenchReport) -> String {
    let mut out = String::new();
    let c = &r.candle;
    let l = r.llamacpp.as_ref();
    out.push_str(&format!(
        "model {}  threads {}  prompt {} tokens  decode {} tokens  dense {} tokens/sample  median of {}\nload average before {}  after {}\n",
        r.model, c.threads, c.prompt_tokens, r.decode_tokens, r.dense_tokens, r.repeats, r.load_before, r.load_after
    ));
    out.push_str(&format!(
        "{:<28} {:>12} {:>12} {:>8}\n",
        "figure", "candle", "llama.cpp", "ratio"
    ));
    let mut row = |name: String, a: f64, b: Option<f64>| {
        match b {
            Some(b) => out.push_str(&format!("{name:<28} {a:>12.2} {b:>12.2} {:>8.2}\n", a / b)),
            None => out.push_str(&format!("{name:<28} {a:>12.2} {:>12} {:>8}\n", "-", "-")),
        };
    };
    row("load s".into(), c.load_s, l.map(|l| l.load_s));
    row(
        "prefill tok/s".into(),
        c.prefill_tok_s,
        l.map(|l| l.prefill_tok_s),
    );
    row(
        "decode tok/s (1 stream)".into(),
        c.decode_tok_s,
        l.map(|l| l.decode_tok_s),
    );
    let mut ns: Vec<&String> = c.dense_tok_s.keys().collect();
    ns.sort_by_key(|k| k.parse::<usize>().unwrap_or(0));
    for n in ns {
        row(
            format!("dense n={n} aggregate tok/s"),
            c.dense_tok_s[n],
            l.and_then(|l| l.dense_tok_s.get(n).copied()),
        );
    }
    out
}

/// `ucoder-flow bench llm`.
pub fn bench_command(args: &LlmBenchArgs) -> Result<(), CommandError> {
    let source = resolve(&args.model)?;
    let load_before = load_average();
    let opts = EngineOptions {
        threads: args.threads,
        max_batch_rows: args.ns.iter().copied().max().unwrap_or(1).max(64),
        batch_kernels: BatchKernels {
            int8_min_rows: (args.int8_min_rows > 0).then_some(args.int8_min_rows),
            dense_f32_min_rows: args.dense_gemm_min_rows,
        },
        ..Default::default()
    };
    let mut engine = Engine::load(&source, &opts)?;
    let mut types: BTreeMap<String, usize> = BTreeMap::new();
    for (_, stored, used) in engine.weight_types() {
        *types.entry(format!("{stored:?}->{used:?}")).or_default() += 1;
    }
    eprintln!("[bench] matmul weights (file type -> type used: count): {types:?}");
    let prompt = if engine.has_chat_template() {
        engine.chat_prompt(&[ChatTurn::user(BENCH_PROMPT)])?
    } else {
        BENCH_PROMPT.to_string()
    };
    let candle = bench_candle(&mut engine, &prompt, args)?;
    let llamacpp = if args.compare_llamacpp {
        let ids = engine.encode_prompt(&prompt)?;
        let threads = engine.threads();
        drop(engine); // free the memory and the cores for llama.cpp
        Some(bench_llamacpp(source.path(), &ids, threads, args)?)
    } else {
        None
    };
    let report = LlmBenchReport {
        model: source.path().display().to_string(),
        decode_tokens: args.decode_tokens,
        dense_tokens: args.dense_tokens,
        repeats: args.repeats.max(1),
        load_before,
        load_after: load_average(),
        candle,
        llamacpp,
    };
    print!("{}", format_report(&report));
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report).expect("report serializes");
        crate::store::write_atomic(path, text.as_bytes())?;
    }
    Ok(())
}
