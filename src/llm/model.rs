//! The quantized decoder-only transformer of the GGUF `qwen2` and `llama` architectures, with a
//! ragged batched forward pass over many sequences at once.
//!
//! The weights and the math follow candle-transformers' `quantized_qwen2` / `quantized_llama`
//! (RMSNorm, rotary embeddings — NEOX halves for qwen2, interleaved pairs for llama as GGUF stores
//! it —, grouped-query attention, SwiGLU MLP, optional q/k/v biases, tied embeddings), but the
//! forward pass is our own: one call takes any mix of prompts to prefill and sequences to extend
//! by one token, flattens all their tokens into one matrix for the quantized matmuls (so weights
//! are streamed once per step, not once per sequence), and runs attention per (token, KV head)
//! straight from the [`SeqKv`] caches: the query heads that share a KV head are scored together
//! without materialising repeated K/V, and prefill never builds an L×L attention matrix (each
//! query row scores only its causal prefix).
//!
//! Matmul kernels: on CPUs with AVX-512 VNNI every matmul weight is repacked at load (at about
//! its GGUF size) and served by [`super::kernels::PackedWeight`] for any batch size, so a token's
//! numbers never depend on what else shares its batch. Elsewhere (or when [`BatchKernels`] says
//! so), candle's quantized matmul runs, with weights whose candle CPU dot product is scalar (Q4_1,
//! Q5_0, Q5_1, Q8_1) re-quantized to Q8_0 (see [`Requantize`]); an f32 GEMM on dequantized copies
//! can serve large batches instead.
//!
//! All CPU work is split across candle's process-wide worker pool (the engine's thread budget),
//! so no second set of threads competes with candle's busy-waiting workers.

use std::io::{Read, Seek};

use candle_core::quantized::{GgmlDType, QMatMul, QStorage, QTensor, gguf_file};
use candle_core::{Device, Module, Tensor};

use super::error::LlmError;
pub use super::gguf::Architecture;
use super::kernels::{PackedWeight, QuantizedActs, matmul_many};
use super::kv_cache::SeqKv;
use super::shape::ModelShape;
use super::weights::{GgufTensors, RawTensor, SafetensorsTensors, TensorSource};

/// How rotary embeddings pair up the dimensions of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RopeStyle {
    /// Pairs (i, i + d/2): qwen2 (GGML's NEOX mode).
    Neox,
    /// Pairs (2i, 2i + 1): llama as stored in GGUF (GGML's normal mode).
    Interleaved,
}

/// Which matmul weights are re-quantized when loading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Requantize {
    /// Types whose candle CPU dot product is scalar (Q4_1, Q5_0, Q5_1, Q8_1) become Q8_0.
    #[default]
    ScalarToQ8_0,
    /// Keep every tensor as stored.
    Never,
}

/// What logits a sequence wants back from a forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogitsWanted {
    /// Only after its last token (sampling).
    Last,
    /// After every token (teacher-forced scoring).
    All,
}

/// One sequence's part of a batched forward pass: tokens appended at the end of its cache.
pub struct SeqInput<'a> {
    pub kv: &'a mut SeqKv,
    pub tokens: &'a [u32],
    pub logits: LogitsWanted,
}

struct Layer {
    attn_norm: Vec<f32>,
    wq: Weight,
    wk: Weight,
    wv: Weight,
    bq: Option<Vec<f32>>,
    bk: Option<Vec<f32>>,
    bv: Option<Vec<f32>>,
    wo: Weight,
    ffn_norm: Vec<f32>,
    w_gate: Weight,
    w_up: Weight,
    w_down: Weight,
}

/// A loaded model: weights, rotary tables and the forward pass.
pub struct Transformer {
    cfg: ModelShape,
    rope: RopeStyle,
    embed: QTensor,
    layers: Vec<Layer>,
    out_norm: Vec<f32>,
    output: Weight,
    rope_cos: Vec<f32>,
    rope_sin: Vec<f32>,
    weight_types: Vec<(String, GgmlDType, GgmlDType)>,
}

fn needs_requant(dtype: GgmlDType) -> bool {
    matches!(
        dtype,
        GgmlDType::Q4_1 | GgmlDType::Q5_0 | GgmlDType::Q5_1 | GgmlDType::Q8_1
    )
}

struct Loader<'a> {
    src: &'a mut dyn TensorSource,
    requantize: Requantize,
    dense_min_rows: Option<usize>,
    int8_min_rows: Option<usize>,
    types: Vec<(String, GgmlDType, GgmlDType)>,
}

/// A quantized tensor from stored bytes.
fn qtensor_from(raw: &RawTensor<'_>) -> candle_core::Result<QTensor> {
    let storage = QStorage::from_data(
        std::borrow::Cow::Borrowed(raw.data),
        &Device::Cpu,
        raw.dtype,
    )?;
    QTensor::new(storage, raw.dims.as_slice())
}

fn is_float(dtype: GgmlDType) -> bool {
    matches!(dtype, GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16)
}

impl Loader<'_> {
    fn has(&self, name: &str) -> bool {
        self.src.has(name)
    }

    /// The embedding table in its stored form (float tables become Q8_0: only rows are read).
    fn embedding(&mut self, name: &str) -> Result<QTensor, String> {
        let err = |e: candle_core::Error| format!("tensor `{name}`: {e}");
        let raw = self.src.read(name)?;
        let t = qtensor_from(&raw).map_err(err)?;
        if is_float(raw.dtype) {
            let dense = t.dequantize(&Device::Cpu).map_err(err)?;
            return QTensor::quantize(&dense, GgmlDType::Q8_0).map_err(err);
        }
        Ok(t)
    }

    fn vector(&mut self, name: &str) -> Result<Vec<f32>, String> {
        let raw = self.src.read(name)?;
        qtensor_from(&raw)
            .and_then(|t| t.dequantize(&Device::Cpu))
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| format!("tensor `{name}`: {e}"))
    }

    fn matmul_weight(&mut self, name: &str) -> Result<Weight, String> {
        self.prepare(name, name)
    }

    /// Loads tensor `tensor` as the matmul weight called `name`.
    fn prepare(&mut self, name: &str, tensor: &str) -> Result<Weight, String> {
        let err = |e: candle_core::Error| format!("tensor `{name}`: {e}");
        let (int8_min_rows_opt, dense_min_rows, requantize) =
            (self.int8_min_rows, self.dense_min_rows, self.requantize);
        let raw = self.src.read(tensor)?;
        let stored = raw.dtype;
        let [n, k] = raw.dims[..] else {
            return Err(format!(
                "tensor `{name}`: expected a matrix, found dimensions {:?}",
                raw.dims
            ));
        };
        // The packed kernel, when it serves every batch size, replaces the quantized weights.
        let packed = match int8_min_rows_opt {
            Some(_) if PackedWeight::supported() => Some(
                PackedWeight::from_ggml(stored, raw.data, n, k)
                    .map_err(|e| format!("tensor `{name}`: {e}"))?,
            ),
            _ => None,
        };
        let int8_min_rows = int8_min_rows_opt.unwrap_or(usize::MAX);
        if packed.is_some() && int8_min_rows <= 1 && dense_min_rows.is_none() {
            let used = if PackedWeight::repacks_exactly(stored) {
                stored
            } else {
                GgmlDType::Q8_0
            };
            self.types
                .push((format!("{name} (packed kernel)"), stored, used));
            return Ok(Weight {
                q: None,
                dense: None,
                dense_min_rows: usize::MAX,
                packed,
                int8_min_rows,
            });
        }
        let t = qtensor_from(&raw).map_err(err)?;
        let t = if is_float(stored)
            || (requantize == Requantize::ScalarToQ8_0 && needs_requant(stored))
        {
            let dense = t.dequantize(&Device::Cpu).map_err(err)?;
            QTensor::quantize(&dense, GgmlDType::Q8_0).map_err(err)?
        } else {
            t
        };
        self.types.push((name.to_string(), stored, t.dtype()));
        let dense = match dense_min_rows {
            Some(_) => Some(t.dequantize(&Device::Cpu).map_err(err)?),
            None => None,
        };
        Ok(Weight {
            q: Some(QMatMul::from_qtensor(t).map_err(err)?),
            dense,
            dense_min_rows: dense_min_rows.unwrap_or(usize::MAX),
            packed,
            int8_min_rows,
        })
    }
}

impl Transformer {
    /// Loads the weights of a `qwen2` or `llama` GGUF onto the CPU. Errors are plain messages
    /// naming the tensor or key; the caller adds the file.
    pub fn from_gguf<R: Read + Seek>(
        ct: &gguf_file::Content,
        reader: &mut R,
        architecture: Architecture,
        requantize: Requantize,
        kernels: BatchKernels,
    ) -> Result<Self, String> {
        let cfg = ModelShape::from_gguf(ct, architecture)?;
        // llama.cpp's converter permutes llama q/k rows to pair dimensions (2i, 2i + 1).
        let rope = match architecture {
            Architecture::Qwen2 => RopeStyle::Neox,
            Architecture::Llama => RopeStyle::Interleaved,
        };
        let mut src = GgufTensors::new(ct, reader);
        Self::load(cfg, rope, &mut src, requantize, kernels)
    }

    /// Loads a Hugging Face safetensors directory (`config.json` plus `*.safetensors`); matmul
    /// weights are quantized to 8-bit blocks (see [`super::kernels`]).
    pub fn from_safetensors(
        dir: &std::path::Path,
        requantize: Requantize,
        kernels: BatchKernels,
    ) -> Result<Self, String> {
        let (_, cfg, tied) = super::weights::hf_config(&dir.join("config.json"))?;
        let mut src = SafetensorsTensors::open(dir)?;
        if !tied && !src.has("output.weight") {
            return Err(
                "config.json says tie_word_embeddings is false but lm_head.weight is missing"
                    .into(),
            );
        }
        // Hugging Face checkpoints pair dimensions (i, i + d/2) for qwen2 and llama alike.
        Self::load(cfg, RopeStyle::Neox, &mut src, requantize, kernels)
    }

    fn load(
        cfg: ModelShape,
        rope: RopeStyle,
        src: &mut dyn TensorSource,
        requantize: Requantize,
        kernels: BatchKernels,
    ) -> Result<Self, String> {
        let mut ld = Loader {
            src,
            requantize,
            dense_min_rows: kernels.dense_f32_min_rows,
            int8_min_rows: kernels.int8_min_rows,
            types: Vec::new(),
        };
        let embed = ld.embedding("token_embd.weight")?;
        let embed_dims = embed.shape().dims().to_vec();
        if embed_dims != [cfg.vocab_size, cfg.hidden] {
            return Err(format!(
                "token_embd.weight has dimensions {embed_dims:?}, expected [{}, {}]",
                cfg.vocab_size, cfg.hidden
            ));
        }
        if !cfg.hidden.is_multiple_of(embed.dtype().block_size()) {
            return Err(format!(
                "token_embd.weight: hidden size {} is not a multiple of the {:?} block size",
                cfg.hidden,
                embed.dtype()
            ));
        }
        let out_norm = ld.vector("output_norm.weight")?;
        let output = if ld.has("output.weight") {
            ld.matmul_weight("output.weight")?
        } else {
            // Tied embeddings: the output head is the embedding matrix.
            ld.prepare(
                "output.weight (tied to token_embd.weight)",
                "token_embd.weight",
            )?
        };
        let mut layers = Vec::with_capacity(cfg.n_layer);
        for i in 0..cfg.n_layer {
            let p = format!("blk.{i}");
            let bias = |ld: &mut Loader<'_>, name: String| -> Result<Option<Vec<f32>>, String> {
                if ld.has(&name) {
                    ld.vector(&name).map(Some)
                } else {
                    Ok(None)
                }
            };
            layers.push(Layer {
                attn_norm: ld.vector(&format!("{p}.attn_norm.weight"))?,
                wq: ld.matmul_weight(&format!("{p}.attn_q.weight"))?,
                wk: ld.matmul_weight(&format!("{p}.attn_k.weight"))?,
                wv: ld.matmul_weight(&format!("{p}.attn_v.weight"))?,
                bq: bias(&mut ld, format!("{p}.attn_q.bias"))?,
                bk: bias(&mut ld, format!("{p}.attn_k.bias"))?,
                bv: bias(&mut ld, format!("{p}.attn_v.bias"))?,
                wo: ld.matmul_weight(&format!("{p}.attn_output.weight"))?,
                ffn_norm: ld.vector(&format!("{p}.ffn_norm.weight"))?,
                w_gate: ld.matmul_weight(&format!("{p}.ffn_gate.weight"))?,
                w_up: ld.matmul_weight(&format!("{p}.ffn_up.weight"))?,
                w_down: ld.matmul_weight(&format!("{p}.ffn_down.weight"))?,
            });
        }
        let weight_types = std::mem::take(&mut ld.types);
        let (rope_cos, rope_sin) = rope_tables(cfg.rope_dim, cfg.rope_base, cfg.context_length);
        Ok(Transformer {
            cfg,
            rope,
            embed,
            layers,
            out_norm,
            output,
            rope_cos,
            rope_sin,
            weight_types,
        })
    }

    /// The model's hyper-parameters.
    pub fn config(&self) -> &ModelShape {
        &self.cfg
    }

    /// (tensor, type in the file, type used) for every matmul weight.
    pub fn weight_types(&self) -> &[(String, GgmlDType, GgmlDType)] {
        &self.weight_types
    }

    /// A fresh cache for a sequence starting at position 0 with room for `cap` positions.
    pub fn new_seq(&self, cap: usize) -> SeqKv {
        SeqKv::fresh(self.cfg.n_layer, self.cfg.n_kv_head, self.cfg.head_dim, cap)
    }

    /// A cache continuing after a shared prefix with room for `cap` more positions.
    pub fn seq_after(
        &self,
        prefix: std::sync::Arc<super::kv_cache::KvSegment>,
        cap: usize,
    ) -> SeqKv {
        SeqKv::after_prefix(prefix, self.cfg.n_layer, cap)
    }

    /// Runs the model over `seqs` in one batch, appending their tokens to their caches, and
    /// returns the logits each asked for, row after row (`vocab_size` floats each), in order.
    pub fn forward(&self, seqs: &mut [SeqInput<'_>]) -> Result<Vec<f32>, LlmError> {
        let cfg = &self.cfg;
        let (hd, nh, nkv, d) = (cfg.head_dim, cfg.n_head, cfg.n_kv_head, cfg.hidden);
        // Every token of the batch is one row: (sequence, absolute position).
        let mut rows: Vec<(usize, usize)> = Vec::new();
        let mut ids: Vec<u32> = Vec::new();
        for (s, seq) in seqs.iter().enumerate() {
            if seq.tokens.len() > seq.kv.room() {
                return Err(LlmError::Unsupported(format!(
                    "internal: sequence cache has room for {} positions, {} requested",
                    seq.kv.room(),
                    seq.tokens.len()
                )));
            }
            let start = seq.kv.len();
            if start + seq.tokens.len() > cfg.context_length {
                return Err(LlmError::PromptTooLong {
                    prompt_tokens: start + seq.tokens.len(),
                    context_length: cfg.context_length,
                });
            }
            for (j, &t) in seq.tokens.iter().enumerate() {
                if t as usize >= cfg.vocab_size {
                    return Err(LlmError::InvalidParams(format!(
                        "token id {t} is outside the vocabulary ({} tokens)",
                        cfg.vocab_size
                    )));
                }
                rows.push((s, start + j));
                ids.push(t);
            }
        }
        let n_rows = rows.len();
        if n_rows == 0 {
            return Ok(Vec::new());
        }
        let ids_t = Tensor::new(ids.as_slice(), &Device::Cpu)?;
        let mut x = self
            .embed
            .embedding(&ids_t)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let mut xn = vec![0f32; n_rows * d];
        let mut attn = vec![0f32; n_rows * nh * hd];
        let scale = 1.0 / (hd as f32).sqrt();

        for (l, layer) in self.layers.iter().enumerate() {
            rms_norm_rows(&x, &layer.attn_norm, cfg.rms_eps, &mut xn);
            let [mut q, mut k, mut v] = project([&layer.wq, &layer.wk, &layer.wv], &xn, n_rows)?;
            add_bias_rows(&mut q, layer.bq.as_deref());
            add_bias_rows(&mut k, layer.bk.as_deref());
            add_bias_rows(&mut v, layer.bv.as_deref());
            for (r, &(_, pos)) in rows.iter().enumerate() {
                self.rope_row(&mut q[r * nh * hd..(r + 1) * nh * hd], nh, pos);
                self.rope_row(&mut k[r * nkv * hd..(r + 1) * nkv * hd], nkv, pos);
            }
            // Append this layer's keys and values to each sequence's own segment.
            for (r, &(s, pos)) in rows.iter().enumerate() {
                let kv = &mut *seqs[s].kv;
                let index = pos - kv.own().start();
                kv.own_mut().write(
                    l,
                    index,
                    &k[r * nkv * hd..(r + 1) * nkv * hd],
                    &v[r * nkv * hd..(r + 1) * nkv * hd],
                );
            }
            let kvs: Vec<&SeqKv> = seqs.iter().map(|s| &*s.kv).collect();
            attention(&kvs, &rows, &q, l, cfg, scale, &mut attn);
            let o = matmul(&layer.wo, &attn, n_rows)?;
            add_rows(&mut x, &o);

            rms_norm_rows(&x, &layer.ffn_norm, cfg.rms_eps, &mut xn);
            let [mut gate, up] = project([&layer.w_gate, &layer.w_up], &xn, n_rows)?;
            for (g, u) in gate.iter_mut().zip(up.iter()) {
                *g = *g / (1.0 + (-*g).exp()) * u;
            }
            let down = matmul(&layer.w_down, &gate, n_rows)?;
            add_rows(&mut x, &down);
        }
        for seq in seqs.iter_mut() {
            seq.kv.own_mut().commit(seq.tokens.len());
        }

        // Logits for the rows that want them.
        let mut picked: Vec<f32> = Vec::new();
        let mut r = 0;
        for seq in seqs.iter() {
            let n = seq.tokens.len();
            match seq.logits {
                LogitsWanted::Last => picked.extend_from_slice(&x[(r + n - 1) * d..(r + n) * d]),
                LogitsWanted::All => picked.extend_from_slice(&x[r * d..(r + n) * d]),
            }
            r += n;
        }
        let n_out = picked.len() / d;
        let mut normed = vec![0f32; picked.len()];
        rms_norm_rows(&picked, &self.out_norm, cfg.rms_eps, &mut normed);
        matmul(&self.output, &normed, n_out)
    }

    fn rope_row(&self, row: &mut [f32], n_heads: usize, pos: usize) {
        let hd = self.cfg.head_dim;
        let half = self.cfg.rope_dim / 2;
        let cos = &self.rope_cos[pos * half..(pos + 1) * half];
        let sin = &self.rope_sin[pos * half..(pos + 1) * half];
        for h in 0..n_heads {
            let x = &mut row[h * hd..(h + 1) * hd];
            match self.rope {
                RopeStyle::Neox => {
                    for i in 0..half {
                        let (a, b) = (x[i], x[i + half]);
                        x[i] = a * cos[i] - b * sin[i];
                        x[i + half] = a * sin[i] + b * cos[i];
                    }
                }
                RopeStyle::Interleaved => {
                    for i in 0..half {
                        let (a, b) = (x[2 * i], x[2 * i + 1]);
                        x[2 * i] = a * cos[i] - b * sin[i];
                        x[2 * i + 1] = a * sin[i] + b * cos[i];
                    }
                }
            }
        }
    }
}

fn rope_tables(rope_dim: usize, base: f32, context: usize) -> (Vec<f32>, Vec<f32>) {
    let half = rope_dim / 2;
    let inv_freq: Vec<f32> = (0..half)
        .map(|i| 1.0 / base.powf((2 * i) as f32 / rope_dim as f32))
        .collect();
    let mut cos = Vec::with_capacity(context * half);
    let mut sin = Vec::with_capacity(context * half);
    for pos in 0..context {
        for &f in &inv_freq {
            let angle = pos as f32 * f;
            cos.push(angle.cos());
            sin.push(angle.sin());
        }
    }
    (cos, sin)
}

/// A matmul weight: quantized, plus optionally a dequantized f32 copy used for batches of at
/// least `dense_min_rows` rows (an f32 GEMM beats the quantized kernels once weights are reused
/// across enough rows; the copy costs 4 bytes per weight).
struct Weight {
    /// candle's quantized weights; `None` when the packed kernel serves every batch size.
    q: Option<QMatMul>,
    dense: Option<Tensor>,
    dense_min_rows: usize,
    packed: Option<PackedWeight>,
    int8_min_rows: usize,
}

/// Which kernels serve batches of several token rows (see [`super::kernels`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchKernels {
    /// Batches of at least this many rows use the packed AVX-512 VNNI kernel (when the CPU has
    /// it; see [`super::kernels`]).
    pub int8_min_rows: Option<usize>,
    /// Batches of at least this many rows use an f32 GEMM on dequantized weight copies.
    pub dense_f32_min_rows: Option<usize>,
}

impl Default for BatchKernels {
    fn default() -> Self {
        BatchKernels {
            int8_min_rows: Some(1),
            dense_f32_min_rows: None,
        }
    }
}

/// `x (rows × k) · wᵀ`.
fn matmul(w: &Weight, x: &[f32], rows: usize) -> Result<Vec<f32>, LlmError> {
    let [y] = project([w], x, rows)?;
    Ok(y)
}

/// `x (rows × k) · wᵀ` for several weights sharing one input, which the packed kernel quantizes
/// once for all of them.
fn project<const N: usize>(
    ws: [&Weight; N],
    x: &[f32],
    rows: usize,
) -> Result<[Vec<f32>; N], LlmError> {
    let k = x.len() / rows;
    let mut outs: [Vec<f32>; N] = std::array::from_fn(|_| Vec::new());
    let use_packed = |w: &Weight| w.packed.is_some() && (rows >= w.int8_min_rows || w.q.is_none());
    // The packed weights share one quantization of x and one parallel pass.
    let packed: Vec<usize> = (0..N).filter(|&i| use_packed(ws[i])).collect();
    if !packed.is_empty() {
        let acts = QuantizedActs::new(x, rows, k);
        let weights: Vec<&PackedWeight> = packed
            .iter()
            .map(|&i| ws[i].packed.as_ref().expect("filtered"))
            .collect();
        for (&i, w) in packed.iter().zip(&weights) {
            outs[i] = vec![0f32; rows * w.rows()];
        }
        let mut slices: Vec<&mut [f32]> = outs
            .iter_mut()
            .enumerate()
            .filter(|(i, _)| packed.contains(i))
            .map(|(_, o)| o.as_mut_slice())
            .collect();
        matmul_many(&weights, &acts, &mut slices);
    }
    for (w, y) in ws.iter().zip(outs.iter_mut()) {
        if use_packed(w) {
            continue;
        }
        let t = Tensor::from_slice(x, (rows, k), &Device::Cpu)?;
        let r = match &w.dense {
            Some(d) if rows >= w.dense_min_rows => t.matmul(&d.t()?)?,
            _ => w
                .q
                .as_ref()
                .expect(
                    "a weight keeps its quantized form unless the packed kernel serves all sizes",
                )
                .forward(&t)?,
        };
        *y = r.flatten_all()?.to_vec1::<f32>()?;
    }
    Ok(outs)
}

fn rms_norm_rows(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let d = w.len();
    for (xr, or) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        let ms = xr.iter().map(|v| v * v).sum::<f32>() / d as f32;
        let inv = 1.0 / (ms + eps).sqrt();
        for ((o, &xv), &wv) in or.iter_mut().zip(xr).zip(w) {
            *o = xv * inv * wv;
        }
    }
}

fn add_bias_rows(x: &mut [f32], bias: Option<&[f32]>) {
    if let Some(b) = bias {
        for row in x.chunks_exact_mut(b.len()) {
            for (v, bv) in row.iter_mut().zip(b) {
                *v += bv;
            }
        }
    }
}

fn add_rows(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = a.len() / 8;
    for c in 0..chunks {
        for j in 0..8 {
            acc[j] += a[c * 8 + j] * b[c * 8 + j];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for i in chunks * 8..a.len() {
        s += a[i] * b[i];
    }
    s
}

/// A raw pointer that worker threads may share because each writes a disjoint range.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

/// Causal grouped-query attention for every row, one work item per (row, KV head): the `rep`
/// query heads sharing that KV head are scored against its keys in one pass over the cache.
fn attention(
    kvs: &[&SeqKv],
    rows: &[(usize, usize)],
    q: &[f32],
    layer: usize,
    cfg: &ModelShape,
    scale: f32,
    out: &mut [f32],
) {
    let (hd, nh, nkv) = (cfg.head_dim, cfg.n_head, cfg.n_kv_head);
    let rep = nh / nkv;
    let out_ptr = SharedOut(out.as_mut_ptr());
    let n_items = rows.len() * nkv;
    let item = |it: usize, scores: &mut Vec<f32>| {
        // Rebinding makes the closure capture the Sync wrapper, not its raw-pointer field.
        #[allow(clippy::redundant_locals)]
        let out_ptr = out_ptr;
        let (r, g) = (it / nkv, it % nkv);
        let (s, pos) = rows[r];
        let kv = kvs[s];
        let visible = pos + 1;
        scores.clear();
        scores.resize(rep * visible, 0.0);
        let q_row = &q[r * nh * hd..(r + 1) * nh * hd];
        // Keys from the shared prefix, then from the sequence's own segment.
        let mut segments: [(&[f32], &[f32]); 2] = [(&[], &[]), (&[], &[])];
        let mut from_prefix = 0;
        if let Some(p) = kv.prefix() {
            from_prefix = p.len().min(visible);
            segments[0] = (
                p.keys(layer, g, from_prefix),
                p.values(layer, g, from_prefix),
            );
        }
        let own_n = visible - from_prefix;
        segments[1] = (
            kv.own().keys(layer, g, own_n),
            kv.own().values(layer, g, own_n),
        );
        let mut i = 0;
        for (keys, _) in segments.iter() {
            for key in keys.chunks_exact(hd) {
                for j in 0..rep {
                    let h = g * rep + j;
                    scores[j * visible + i] = dot(&q_row[h * hd..(h + 1) * hd], key) * scale;
                }
                i += 1;
            }
        }
        for j in 0..rep {
            let sc = &mut scores[j * visible..(j + 1) * visible];
            let max = sc.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0.0;
            for v in sc.iter_mut() {
                *v = (*v - max).exp();
                sum += *v;
            }
            let inv = 1.0 / sum;
            let h = g * rep + j;
            // SAFETY: item (r, g) alone writes heads g*rep .. (g+1)*rep of row r.
            let o = unsafe { std::slice::from_raw_parts_mut(out_ptr.0.add((r * nh + h) * hd), hd) };
            o.fill(0.0);
            let mut i = 0;
            for (_, values) in segments.iter() {
                for val in values.chunks_exact(hd) {
                    let p = sc[i] * inv;
                    for (ov, vv) in o.iter_mut().zip(val) {
                        *ov += p * vv;
                    }
                    i += 1;
                }
            }
        }
    };
    let run = |range: std::ops::Range<usize>| {
        let mut scores = Vec::new();
        for it in range {
            item(it, &mut scores);
        }
    };
    if n_items < 4 {
        run(0..n_items);
    } else {
        candle_core::utils::barrier_pool().execute_chunked(n_items, run);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rms_norm_matches_definition() {
        let x = [1.0f32, 2.0, 3.0, 4.0];
        let w = [1.0f32, 0.5, 2.0, 1.0];
        let mut out = [0f32; 4];
        rms_norm_rows(&x, &w, 0.0, &mut out);
        let rms = (30.0f32 / 4.0).sqrt();
        for i in 0..4 {
            assert!((out[i] - x[i] / rms * w[i]).abs() < 1e-6);
        }
    }

    #[test]
    fn rope_tables_start_at_identity() {
        let (cos, sin) = rope_tables(8, 10_000.0, 3);
        assert_eq!(cos.len(), 12);
        assert!(cos[..4].iter().all(|&c| c == 1.0) && sin[..4].iter().all(|&s| s == 0.0));
        // Position 1, first pair: angle 1 radian.
        assert!((cos[4] - 1f32.cos()).abs() < 1e-6);
    }

    #[test]
    fn dot_handles_tails() {
        let a: Vec<f32> = (0..11).map(|x| x as f32).collect();
        assert_eq!(dot(&a, &a), (0..11).map(|x| (x * x) as f32).sum::<f32>());
    }
}
