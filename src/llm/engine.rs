//! The engine: a loaded model plus its tokenizer and chat template, serving batched generation
//! requests with per-token log-probabilities.
//!
//! Scheduling is continuous batching over sample rows. A request (prompt, n, params) becomes n
//! rows. When its first row is admitted, the prompt is prefilled once (several prompts share one
//! ragged forward pass) and its KV segment becomes a shared prefix that all n rows reference; each
//! row samples its first token from the prefill's logits with its own random stream. Every decode
//! step then feeds the last token of every active row as one batch. A row that finishes (EOS,
//! stop string, max tokens) leaves the batch at once and frees its KV segment; pending rows take
//! its place, so long samples never stall short ones and at most `max_batch_rows` rows are held.
//!
//! Context window: a prompt must be shorter than the model's context window
//! ([`LlmError::PromptTooLong`] otherwise); `max_tokens` is clipped to what the window leaves after
//! the prompt, and a completion cut by that clip ends with [`SampleEnd::Length`].
//!
//! Token accounting: an EOS token ends a completion and is not part of it; a stop string cuts
//! the text before it, but `token_ids` / `logprobs` keep every sampled token up to and including
//! the one that completed the stop string (they are what the model produced and scored).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::chat::{ChatTemplate, ChatTurn};
use super::error::LlmError;
use super::gguf::GgufModel;
use super::kv_cache::{KvSegment, SeqKv};
use super::model::{Architecture, BatchKernels, LogitsWanted, Requantize, SeqInput, Transformer};
use super::sampler::{Sampler, SamplerSettings, sample_all};
use super::text::ModelText;
use super::tokenizer::Tokenizer;
use crate::models::ModelSource;

/// Where the engine runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    #[default]
    Cpu,
    /// A CUDA GPU by ordinal (needs the `cuda` feature).
    Cuda(usize),
}

/// How to load and run a model.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// CPU threads for the forward pass; `None` = all available cores. The budget is
    /// process-wide (candle's worker pool): every engine of a process must use the same one.
    pub threads: Option<usize>,
    pub device: DeviceChoice,
    /// Re-quantization of weights with scalar CPU kernels (see [`Requantize`]).
    pub requantize: Requantize,
    /// Most sample rows decoded together (bounds the KV memory of big requests).
    pub max_batch_rows: usize,
    /// Most prompt tokens prefilled in one forward pass (several short prompts share one).
    pub max_prefill_tokens: usize,
    /// Caps the context window below the model's own (`None` = the model's).
    pub context_length: Option<usize>,
    /// Matmul kernels (the packed AVX-512 VNNI kernel for every batch size by default).
    pub batch_kernels: BatchKernels,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            threads: None,
            device: DeviceChoice::Cpu,
            requantize: Requantize::default(),
            max_batch_rows: 64,
            max_prefill_tokens: 2048,
            context_length: None,
            batch_kernels: BatchKernels::default(),
        }
    }
}

/// One prompt to complete `n` times.
#[derive(Debug, Clone)]
pub struct SampleRequest {
    pub prompt: String,
    pub n: usize,
    pub params: SamplerSettings,
}

/// Why a completion ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SampleEnd {
    /// A stop string appeared.
    Stop,
    /// The model produced an end-of-sequence token.
    Eos,
    /// `max_tokens` (or the context window) was reached.
    Length,
}

/// One sampled completion.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The decoded text (cut before a stop string).
    pub text: String,
    /// The sampled tokens (without a final EOS).
    pub token_ids: Vec<u32>,
    /// `log p(token | prefix)` under the model's untempered distribution, one per token; the
    /// paper's fluency score is `exp(-mean(logprobs))`.
    pub logprobs: Vec<f32>,
    pub finish_reason: SampleEnd,
}

impl Sample {
    /// Perplexity of the completion, `exp(-mean log p)` (the paper's f(r)); `None` when empty.
    pub fn perplexity(&self) -> Option<f64> {
        if self.logprobs.is_empty() {
            return None;
        }
        let mean =
            self.logprobs.iter().map(|&l| l as f64).sum::<f64>() / self.logprobs.len() as f64;
        Some((-mean).exp())
    }
}

/// Counters of the last generation call, for throughput reporting.
#[derive(Debug, Clone, Default)]
pub struct GenerationStats {
    pub prompt_tokens: usize,
    pub prefill_time: Duration,
    /// Tokens sampled in all (first tokens from the prefill's logits included).
    pub generated_tokens: usize,
    /// Tokens produced by decode steps (each step yields one per active row).
    pub decode_tokens: usize,
    pub decode_time: Duration,
    pub decode_steps: usize,
}

/// A loaded model ready to generate.
pub struct Engine {
    model: Transformer,
    text: Arc<ModelText>,
    eos: Vec<u32>,
    opts: EngineOptions,
    context_length: usize,
    threads: usize,
    load_time: Duration,
    stats: GenerationStats,
}

fn resolve_threads(requested: Option<usize>) -> usize {
    requested
        .or_else(|| {
            std::env::var("CANDLE_NUM_THREADS")
                .ok()
                .and_then(|s| s.parse().ok())
        })
        .filter(|&n| n > 0)
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
}

/// Sizes candle's process-wide CPU worker pool to `threads` (before its first use) and checks
/// that an already running pool has that size.
fn apply_thread_budget(threads: usize) -> Result<(), LlmError> {
    static ACTIVE: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let active = *ACTIVE.get_or_init(|| {
        // The engine's resolved budget wins over an inherited CANDLE_NUM_THREADS (which
        // `resolve_threads` already used as the default): a parent process that loaded an engine
        // of another size leaves its value in the environment of every child it starts.
        // SAFETY: candle reads CANDLE_NUM_THREADS once, when its pool is first created, which
        // the call below forces; this runs once per process, before the engine starts any
        // thread of its own.
        unsafe { std::env::set_var("CANDLE_NUM_THREADS", threads.to_string()) };
        candle_core::utils::barrier_pool().n_workers() + 1
    });
    if active != threads {
        return Err(LlmError::ThreadBudget {
            requested: threads,
            active,
        });
    }
    Ok(())
}

impl Engine {
    /// Loads a model (GGUF file or safetensors directory, `qwen2` or `llama`) with its tokenizer
    /// and chat template.
    pub fn load(source: &ModelSource, opts: &EngineOptions) -> Result<Engine, LlmError> {
        match opts.device {
            DeviceChoice::Cpu => {}
            DeviceChoice::Cuda(i) => {
                return Err(if cfg!(feature = "cuda") {
                    LlmError::Unsupported(format!(
                        "cuda:{i}: the batched engine's attention and KV cache run on the CPU only; GPU support is not implemented yet"
                    ))
                } else {
                    LlmError::DeviceUnavailable(format!("cuda:{i}"))
                });
            }
        }
        if opts.max_batch_rows == 0 || opts.max_prefill_tokens == 0 {
            return Err(LlmError::InvalidParams(
                "max_batch_rows and max_prefill_tokens must be at least 1".into(),
            ));
        }
        let threads = resolve_threads(opts.threads);
        apply_thread_budget(threads)?;
        let start = Instant::now();
        let (model, text) = match source {
            ModelSource::Gguf(path) => {
                let gguf = GgufModel::open(path)?;
                let content = gguf.content();
                let mut reader = gguf.reader()?;
                let model = Transformer::from_gguf(
                    content,
                    &mut reader,
                    gguf.architecture(),
                    opts.requantize,
                    opts.batch_kernels,
                )
                .map_err(|message| LlmError::InvalidModel {
                    path: path.clone(),
                    message,
                })?;
                (model, Arc::new(ModelText::from_gguf(content)?))
            }
            ModelSource::Safetensors(dir) => {
                let model = Transformer::from_safetensors(dir, opts.requantize, opts.batch_kernels)
                    .map_err(|message| LlmError::InvalidSafetensors {
                        path: dir.clone(),
                        message,
                    })?;
                (model, Arc::new(ModelText::from_dir(dir)?))
            }
        };
        let tokenizer = text.tokenizer();
        if tokenizer.vocab_size() > model.config().vocab_size {
            return Err(LlmError::InvalidModel {
                path: source.path().to_path_buf(),
                message: format!(
                    "the tokenizer has {} tokens but the model's vocabulary only {}",
                    tokenizer.vocab_size(),
                    model.config().vocab_size
                ),
            });
        }
        let eos = tokenizer.eos_token_ids().to_vec();
        let model_ctx = model.config().context_length;
        let context_length = opts.context_length.unwrap_or(model_ctx).min(model_ctx);
        Ok(Engine {
            context_length,
            model,
            text,
            eos,
            opts: opts.clone(),
            threads,
            load_time: start.elapsed(),
            stats: GenerationStats::default(),
        })
    }

    /// The tokenizer built from the model file.
    pub fn tokenizer(&self) -> &Tokenizer {
        self.text.tokenizer()
    }

    /// The tokenizer and chat template.
    pub fn text(&self) -> &Arc<ModelText> {
        &self.text
    }

    /// The model's hyper-parameters.
    pub fn config(&self) -> &super::shape::ModelShape {
        self.model.config()
    }

    /// The model's context window in tokens.
    pub fn context_length(&self) -> usize {
        self.context_length
    }

    /// Threads of the forward pass.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Time `load` took.
    pub fn load_time(&self) -> Duration {
        self.load_time
    }

    /// Counters of the last `generate_*` call.
    pub fn last_stats(&self) -> &GenerationStats {
        &self.stats
    }

    /// (tensor, stored type, type used) of every matmul weight.
    pub fn weight_types(
        &self,
    ) -> &[(
        String,
        candle_core::quantized::GgmlDType,
        candle_core::quantized::GgmlDType,
    )] {
        self.model.weight_types()
    }

    /// Renders `messages` with the model's chat template, ending with the assistant's turn.
    pub fn chat_prompt(&self, messages: &[ChatTurn]) -> Result<String, LlmError> {
        self.text.chat_prompt(messages)
    }

    /// The model's chat template, when it has one.
    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.text.chat_template()
    }

    /// Whether the model has a chat template.
    pub fn has_chat_template(&self) -> bool {
        self.text.chat_template().is_some()
    }

    /// Tokenizes a prompt as generation does (with the model's BOS when it wants one).
    pub fn encode_prompt(&self, prompt: &str) -> Result<Vec<u32>, LlmError> {
        Ok(self.text.tokenizer().encode(prompt, true)?)
    }

    /// `n` completions of one prompt: the prompt is prefilled once and the samples decode as one
    /// batch. Sample i uses the random stream (params.seed, i).
    pub fn generate_n(
        &mut self,
        prompt: &str,
        n: usize,
        params: &SamplerSettings,
    ) -> Result<Vec<Sample>, LlmError> {
        let mut out = self.generate_batch(&[SampleRequest {
            prompt: prompt.to_string(),
            n,
            params: params.clone(),
        }])?;
        Ok(out.pop().unwrap_or_default())
    }

    /// Completions of several prompts, batched together; `result[r]` holds request r's `n`.
    pub fn generate_batch(
        &mut self,
        requests: &[SampleRequest],
    ) -> Result<Vec<Vec<Sample>>, LlmError> {
        let ctx = self.context_length();
        let mut prompts = Vec::with_capacity(requests.len());
        for req in requests {
            req.params.validate()?;
            let ids = self.encode_prompt(&req.prompt)?;
            if ids.is_empty() {
                return Err(LlmError::EmptyPrompt);
            }
            if ids.len() >= ctx {
                return Err(LlmError::PromptTooLong {
                    prompt_tokens: ids.len(),
                    context_length: ctx,
                });
            }
            prompts.push(ids);
        }
        let ids: Vec<&[u32]> = prompts.iter().map(|p| p.as_slice()).collect();
        self.generate_from_ids(&ids, requests)
    }

    fn generate_from_ids(
        &mut self,
        prompts: &[&[u32]],
        requests: &[SampleRequest],
    ) -> Result<Vec<Vec<Sample>>, LlmError> {
        let ctx = self.context_length();
        let mut stats = GenerationStats::default();
        let mut results: Vec<Vec<Option<Sample>>> =
            requests.iter().map(|r| vec![None; r.n]).collect();
        // Rows waiting for admission, in request order.
        let mut pending: std::collections::VecDeque<(usize, usize)> = requests
            .iter()
            .enumerate()
            .flat_map(|(r, req)| (0..req.n).map(move |i| (r, i)))
            .collect();
        let mut unadmitted: Vec<usize> = requests.iter().map(|r| r.n).collect();
        let mut prefixes: Vec<Option<(Arc<KvSegment>, Vec<f32>)>> =
            (0..requests.len()).map(|_| None).collect();
        let max_new: Vec<usize> = requests
            .iter()
            .zip(prompts)
            .map(|(req, p)| req.params.max_tokens.min(ctx - p.len()))
            .collect();
        let mut active: Vec<Row> = Vec::new();

        while !pending.is_empty() || !active.is_empty() {
            // Admit rows, prefilling the prompts that are needed and not yet prefilled.
            let mut admit = Vec::new();
            while active.len() + admit.len() < self.opts.max_batch_rows {
                match pending.pop_front() {
                    Some(row) => admit.push(row),
                    None => break,
                }
            }
            let mut to_prefill: Vec<usize> = admit
                .iter()
                .map(|&(r, _)| r)
                .filter(|&r| prefixes[r].is_none())
                .collect();
            to_prefill.dedup();
            self.prefill(prompts, &to_prefill, &mut prefixes, &mut stats)?;
            for (r, i) in admit {
                let params = &requests[r].params;
                let (prefix, logits) = prefixes[r].as_ref().expect("prefilled above");
                let mut row = Row {
                    request: r,
                    index: i,
                    kv: self.model.seq_after(prefix.clone(), max_new[r]),
                    sampler: Sampler::new(params.seed, i as u64),
                    tokens: Vec::new(),
                    logprobs: Vec::new(),
                    finished: None,
                    text: String::new(),
                };
                let (t, lp) = row.sampler.sample(logits, params);
                row.accept(t, lp, params, max_new[r], &self.eos, self.text.tokenizer())?;
                stats.generated_tokens += 1;
                unadmitted[r] -= 1;
                if unadmitted[r] == 0 {
                    prefixes[r] = None;
                }
                if row.finished.is_some() {
                    let (r, i, c) = row.into_completion(self.text.tokenizer())?;
                    results[r][i] = Some(c);
                } else {
                    active.push(row);
                }
            }
            if active.is_empty() {
                continue;
            }
            // One decode step for every active row.
            let t0 = Instant::now();
            let last: Vec<u32> = active
                .iter()
                .map(|r| *r.tokens.last().expect("active rows have a token"))
                .collect();
            let logits = {
                let mut inputs: Vec<SeqInput<'_>> = active
                    .iter_mut()
                    .zip(last.iter())
                    .map(|(row, t)| SeqInput {
                        kv: &mut row.kv,
                        tokens: std::slice::from_ref(t),
                        logits: LogitsWanted::Last,
                    })
                    .collect();
                self.model.forward(&mut inputs)?
            };
            let vocab = self.model.config().vocab_size;
            let picks = {
                let mut jobs: Vec<(&mut Sampler, &[f32], &SamplerSettings)> = active
                    .iter_mut()
                    .zip(logits.chunks_exact(vocab))
                    .map(|(row, l)| (&mut row.sampler, l, &requests[row.request].params))
                    .collect();
                sample_all(&mut jobs)
            };
            for (row, (t, lp)) in active.iter_mut().zip(picks) {
                let r = row.request;
                row.accept(
                    t,
                    lp,
                    &requests[r].params,
                    max_new[r],
                    &self.eos,
                    self.text.tokenizer(),
                )?;
            }
            stats.generated_tokens += active.len();
            stats.decode_tokens += active.len();
            stats.decode_steps += 1;
            stats.decode_time += t0.elapsed();
            let mut still = Vec::with_capacity(active.len());
            for row in active.drain(..) {
                if row.finished.is_some() {
                    let (r, i, c) = row.into_completion(self.text.tokenizer())?;
                    results[r][i] = Some(c);
                } else {
                    still.push(row);
                }
            }
            active = still;
        }
        self.stats = stats;
        Ok(results
            .into_iter()
            .map(|rs| {
                rs.into_iter()
                    .map(|c| c.expect("every row finishes"))
                    .collect()
            })
            .collect())
    }

    fn prefill(
        &mut self,
        prompts: &[&[u32]],
        which: &[usize],
        prefixes: &mut [Option<(Arc<KvSegment>, Vec<f32>)>],
        stats: &mut GenerationStats,
    ) -> Result<(), LlmError> {
        let vocab = self.model.config().vocab_size;
        let mut start = 0;
        while start < which.len() {
            // A group of prompts within the prefill token budget (at least one prompt).
            let mut end = start + 1;
            let mut tokens = prompts[which[start]].len();
            while end < which.len()
                && tokens + prompts[which[end]].len() <= self.opts.max_prefill_tokens
            {
                tokens += prompts[which[end]].len();
                end += 1;
            }
            let t0 = Instant::now();
            let mut seqs: Vec<SeqKv> = which[start..end]
                .iter()
                .map(|&r| self.model.new_seq(prompts[r].len()))
                .collect();
            let logits = {
                let mut inputs: Vec<SeqInput<'_>> = seqs
                    .iter_mut()
                    .zip(&which[start..end])
                    .map(|(kv, &r)| SeqInput {
                        kv,
                        tokens: prompts[r],
                        logits: LogitsWanted::Last,
                    })
                    .collect();
                self.model.forward(&mut inputs)?
            };
            for ((kv, &r), l) in seqs
                .into_iter()
                .zip(&which[start..end])
                .zip(logits.chunks_exact(vocab))
            {
                prefixes[r] = Some((kv.into_prefix(), l.to_vec()));
            }
            stats.prompt_tokens += tokens;
            stats.prefill_time += t0.elapsed();
            start = end;
        }
        Ok(())
    }

    /// Teacher-forced scoring: `log p(continuation[j] | prompt, continuation[..j])` for every j,
    /// in one forward pass over `prompt_ids ++ continuation`.
    pub fn score(
        &mut self,
        prompt_ids: &[u32],
        continuation: &[u32],
    ) -> Result<Vec<f32>, LlmError> {
        if prompt_ids.is_empty() {
            return Err(LlmError::EmptyPrompt);
        }
        let all: Vec<u32> = prompt_ids.iter().chain(continuation).copied().collect();
        let ctx = self.context_length();
        if all.len() > ctx {
            return Err(LlmError::PromptTooLong {
                prompt_tokens: all.len(),
                context_length: ctx,
            });
        }
        let mut kv = self.model.new_seq(all.len());
        let logits = self.model.forward(&mut [SeqInput {
            kv: &mut kv,
            tokens: &all,
            logits: LogitsWanted::All,
        }])?;
        let vocab = self.model.config().vocab_size;
        Ok(continuation
            .iter()
            .enumerate()
            .map(|(j, &t)| {
                let row =
                    &logits[(prompt_ids.len() - 1 + j) * vocab..(prompt_ids.len() + j) * vocab];
                row[t as usize] - super::sampler::log_sum_exp(row)
            })
            .collect())
    }

    /// The architecture of the loaded model.
    pub fn architecture(&self) -> Architecture {
        self.model.config().architecture
    }
}

/// One sample being decoded.
struct Row {
    request: usize,
    index: usize,
    kv: SeqKv,
    sampler: Sampler,
    tokens: Vec<u32>,
    logprobs: Vec<f32>,
    finished: Option<SampleEnd>,
    text: String,
}

impl Row {
    /// Takes the sampled token `t` (log-probability `lp`) and decides whether the row is done.
    fn accept(
        &mut self,
        t: u32,
        lp: f32,
        params: &SamplerSettings,
        max_new: usize,
        eos: &[u32],
        tok: &Tokenizer,
    ) -> Result<(), LlmError> {
        if !params.ignore_eos && eos.contains(&t) {
            self.finished = Some(SampleEnd::Eos);
            return Ok(());
        }
        self.tokens.push(t);
        self.logprobs.push(lp);
        if !params.stop.is_empty() {
            let text = tok.decode(&self.tokens)?;
            if let Some(cut) = params
                .stop
                .iter()
                .filter_map(|s| text.find(s.as_str()))
                .min()
            {
                self.text = text[..cut].to_string();
                self.finished = Some(SampleEnd::Stop);
                return Ok(());
            }
        }
        if self.tokens.len() >= max_new {
            self.finished = Some(SampleEnd::Length);
        }
        Ok(())
    }

    fn into_completion(self, tok: &Tokenizer) -> Result<(usize, usize, Sample), LlmError> {
        let reason = self.finished.expect("finished row");
        let text = if reason == SampleEnd::Stop {
            self.text
        } else {
            tok.decode(&self.tokens)?
        };
        Ok((
            self.request,
            self.index,
            Sample {
                text,
                token_ids: self.tokens,
                logprobs: self.logprobs,
                finish_reason: reason,
            },
        ))
    }
}
