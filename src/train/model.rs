//! The differentiable `qwen2` / `llama` decoder the trainer fine-tunes.
//!
//! The inference engine ([`crate::llm::model`]) is quantized and has no backward pass, and stock
//! candle-transformers models cut the gradient graph (their fused rms_norm, softmax, rope and
//! sdpa have no backward). This model is written only with ops candle can differentiate —
//! RMSNorm, rotary embeddings (Hugging Face's rotate-half pairing), SwiGLU and the loss from
//! elementwise ops, matmuls and reductions — plus [`segment_attention`], whose backward is our
//! own. Every tensor of the model is either a trainable [`Var`] or a frozen constant, per
//! [`TrainMode`]: full fine-tuning makes every weight a `Var`; LoRA freezes them and adds
//! low-rank adapters ([`super::lora`]).
//!
//! Weights are read from a Hugging Face safetensors directory (the layout the engine loads and
//! `models export` writes) in f32, and [`TrainModel::save`] writes the same layout back, LoRA
//! merged, so the engine generates with the result directly. A forward pass takes a [`Batch`]:
//! packed examples laid end to end, each with positions from 0 and its own causal block.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use candle_core::{D, DType, Device, Tensor, Var};

use super::TrainError;
use super::attention::{Segments, segment_attention};
use super::batch::Batch;
use super::lora::{LoraConfig, LoraLinear, project};
use super::loss::token_nll;
use crate::llm::gguf::Architecture;
use crate::llm::shape::ModelShape;
use crate::llm::weights::{SafetensorsTensors, TensorSource, hf_config};

/// Which weights train.
#[derive(Debug, Clone, PartialEq)]
pub enum TrainMode {
    /// Every weight of the model.
    Full,
    /// Low-rank adapters on the named projections; the model's own weights stay frozen.
    Lora(LoraConfig),
}

/// The shape of a trainable model.
#[derive(Debug, Clone)]
pub struct TrainShape {
    pub model: ModelShape,
    /// The MLP's inner width.
    pub intermediate: usize,
    /// Whether the output projection is the embedding matrix.
    pub tied: bool,
}

/// One decoder block's tensors.
pub(super) struct Layer {
    attn_norm: Tensor,
    q: LoraLinear,
    k: LoraLinear,
    v: LoraLinear,
    o: LoraLinear,
    ffn_norm: Tensor,
    gate: LoraLinear,
    up: LoraLinear,
    down: LoraLinear,
}

/// A decoder whose loss can be differentiated with respect to its trainable tensors.
pub struct TrainModel {
    shape: TrainShape,
    embed: Tensor,
    layers: Vec<Arc<Layer>>,
    /// Layers recompute their activations in backward (gradient checkpointing).
    recompute: bool,
    /// Gradients of layer tensors computed by recomputing layers.
    layer_grads: LayerGrads,
    norm: Tensor,
    /// `None` when tied to `embed`.
    lm_head: Option<Tensor>,
    /// Every trainable tensor, by its Hugging Face (or PEFT adapter) name, sorted by name.
    trainable: Vec<(String, Var)>,
    device: Device,
    dtype: DType,
}

/// Where a model's weights come from while it is built.
trait WeightSource {
    /// The tensor of Hugging Face name `name`, or `None` if the model has none.
    fn get(&mut self, name: &str, dims: &[usize]) -> Result<Option<Tensor>, TrainError>;
}

struct DirWeights {
    tensors: SafetensorsTensors,
    dir: std::path::PathBuf,
    gguf_by_hf: HashMap<String, String>,
    device: Device,
    dtype: DType,
}

impl WeightSource for DirWeights {
    fn get(&mut self, name: &str, dims: &[usize]) -> Result<Option<Tensor>, TrainError> {
        let bad = |message: String| TrainError::Model {
            path: self.dir.clone(),
            message,
        };
        let Some(gguf) = self.gguf_by_hf.get(name).cloned() else {
            return Err(bad(format!("no tensor name mapping for `{name}`")));
        };
        if !self.tensors.has(&gguf) {
            return Ok(None);
        }
        let raw = self.tensors.read(&gguf).map_err(bad)?;
        if raw.dims != dims {
            return Err(bad(format!(
                "tensor `{name}` has shape {:?}; config.json implies {dims:?}",
                raw.dims
            )));
        }
        let t = Tensor::from_raw_buffer(raw.data, DType::F32, &raw.dims, &Device::Cpu)
            .and_then(|t| t.to_dtype(self.dtype))
            .and_then(|t| t.to_device(&self.device))
            .map_err(|e| bad(format!("tensor `{name}`: {e}")))?;
        Ok(Some(t))
    }
}

/// Random weights (tests and gradient checks).
struct RandomWeights {
    rng: rand::rngs::StdRng,
    device: Device,
    dtype: DType,
}

impl WeightSource for RandomWeights {
    fn get(&mut self, name: &str, dims: &[usize]) -> Result<Option<Tensor>, TrainError> {
        use rand::Rng;
        let n: usize = dims.iter().product();
        let values: Vec<f64> = if name.ends_with("norm.weight") {
            (0..n)
                .map(|_| 1.0 + self.rng.random_range(-0.1..0.1))
                .collect()
        } else {
            (0..n).map(|_| self.rng.random_range(-0.3..0.3)).collect()
        };
        let t = Tensor::from_vec(values, dims, &self.device)
            .and_then(|t| t.to_dtype(self.dtype))
            .map_err(TrainError::candle("random weights"))?;
        Ok(Some(t))
    }
}

/// Builds tensors, registering the trainable ones by name.
struct Builder<'a> {
    source: &'a mut dyn WeightSource,
    mode: &'a TrainMode,
    trainable: Vec<(String, Var)>,
    seed: u64,
}

impl Builder<'_> {
    fn required(&mut self, name: &str, dims: &[usize]) -> Result<Tensor, TrainError> {
        self.source
            .get(name, dims)?
            .ok_or_else(|| TrainError::Model {
                path: name.into(),
                message: format!("tensor `{name}` is missing"),
            })
    }

    /// A tensor that trains in full fine-tuning and is frozen under LoRA.
    fn weight(&mut self, name: &str, dims: &[usize]) -> Result<Tensor, TrainError> {
        let t = self.required(name, dims)?;
        self.register(name, t)
    }

    fn register(&mut self, name: &str, t: Tensor) -> Result<Tensor, TrainError> {
        match self.mode {
            TrainMode::Full => {
                let var = Var::from_tensor(&t).map_err(TrainError::candle(name))?;
                let tensor = var.as_tensor().clone();
                self.trainable.push((name.to_string(), var));
                Ok(tensor)
            }
            TrainMode::Lora(_) => Ok(t),
        }
    }

    fn linear(
        &mut self,
        prefix: &str,
        module: &str,
        out_dim: usize,
        in_dim: usize,
        bias: bool,
    ) -> Result<LoraLinear, TrainError> {
        let name = format!("{prefix}.{module}");
        let weight = self.weight(&format!("{name}.weight"), &[out_dim, in_dim])?;
        let bias = match bias {
            true => match self.source.get(&format!("{name}.bias"), &[out_dim])? {
                Some(b) => Some(self.register(&format!("{name}.bias"), b)?),
                None => None,
            },
            false => None,
        };
        let mut linear = LoraLinear::new(weight, bias);
        if let TrainMode::Lora(cfg) = self.mode
            && cfg.targets.iter().any(|t| module.ends_with(t.as_str()))
        {
            self.seed = self.seed.wrapping_add(1);
            let adapters = linear
                .add_lora(cfg, self.seed)
                .map_err(TrainError::candle(&name))?;
            for (suffix, var) in adapters {
                self.trainable.push((format!("{name}.{suffix}"), var));
            }
        }
        Ok(linear)
    }
}

impl TrainModel {
    /// Loads the safetensors directory `dir` (`config.json` + `*.safetensors`) in f32.
    pub fn load(
        dir: &Path,
        mode: &TrainMode,
        device: &Device,
        seed: u64,
    ) -> Result<Self, TrainError> {
        let bad = |message: String| TrainError::Model {
            path: dir.to_path_buf(),
            message,
        };
        let config = dir.join("config.json");
        let (_, model, tied) = hf_config(&config).map_err(bad)?;
        let intermediate = read_intermediate(&config).map_err(bad)?;
        let tensors = SafetensorsTensors::open(dir).map_err(bad)?;
        let gguf_by_hf = crate::llm::weights::hf_names(model.n_layer)
            .into_iter()
            .map(|(g, h)| (h, g))
            .collect();
        let mut source = DirWeights {
            tensors,
            dir: dir.to_path_buf(),
            gguf_by_hf,
            device: device.clone(),
            dtype: DType::F32,
        };
        let shape = TrainShape {
            model,
            intermediate,
            tied,
        };
        Self::build(shape, &mut source, mode, device, DType::F32, seed)
    }

    /// A model with random weights (tests).
    pub fn random(
        shape: TrainShape,
        mode: &TrainMode,
        dtype: DType,
        seed: u64,
    ) -> Result<Self, TrainError> {
        use rand::SeedableRng;
        let device = Device::Cpu;
        let mut source = RandomWeights {
            rng: rand::rngs::StdRng::seed_from_u64(seed),
            device: device.clone(),
            dtype,
        };
        Self::build(shape, &mut source, mode, &device, dtype, seed)
    }

    fn build(
        shape: TrainShape,
        source: &mut dyn WeightSource,
        mode: &TrainMode,
        device: &Device,
        dtype: DType,
        seed: u64,
    ) -> Result<Self, TrainError> {
        let m = &shape.model;
        if m.rope_dim != m.head_dim {
            return Err(TrainError::Model {
                path: "config.json".into(),
                message: format!(
                    "partial rotary embeddings ({} of {} dimensions) are not supported by the trainer",
                    m.rope_dim, m.head_dim
                ),
            });
        }
        let bias = m.architecture == Architecture::Qwen2;
        let mut b = Builder {
            source,
            mode,
            trainable: Vec::new(),
            seed,
        };
        let embed = b.weight("model.embed_tokens.weight", &[m.vocab_size, m.hidden])?;
        let (q_dim, kv_dim) = (m.n_head * m.head_dim, m.n_kv_head * m.head_dim);
        let mut layers = Vec::with_capacity(m.n_layer);
        for i in 0..m.n_layer {
            let p = format!("model.layers.{i}");
            layers.push(Arc::new(Layer {
                attn_norm: b.weight(&format!("{p}.input_layernorm.weight"), &[m.hidden])?,
                q: b.linear(&p, "self_attn.q_proj", q_dim, m.hidden, bias)?,
                k: b.linear(&p, "self_attn.k_proj", kv_dim, m.hidden, bias)?,
                v: b.linear(&p, "self_attn.v_proj", kv_dim, m.hidden, bias)?,
                o: b.linear(&p, "self_attn.o_proj", m.hidden, q_dim, false)?,
                ffn_norm: b.weight(&format!("{p}.post_attention_layernorm.weight"), &[m.hidden])?,
                gate: b.linear(&p, "mlp.gate_proj", shape.intermediate, m.hidden, false)?,
                up: b.linear(&p, "mlp.up_proj", shape.intermediate, m.hidden, false)?,
                down: b.linear(&p, "mlp.down_proj", m.hidden, shape.intermediate, false)?,
            }));
        }
        let norm = b.weight("model.norm.weight", &[m.hidden])?;
        let lm_head = match shape.tied {
            true => None,
            false => Some(b.weight("lm_head.weight", &[m.vocab_size, m.hidden])?),
        };
        let mut trainable = b.trainable;
        trainable.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(TrainModel {
            shape,
            embed,
            layers,
            recompute: false,
            layer_grads: LayerGrads::default(),
            norm,
            lm_head,
            trainable,
            device: device.clone(),
            dtype,
        })
    }

    /// The model's shape.
    pub fn shape(&self) -> &TrainShape {
        &self.shape
    }

    /// Every trainable tensor by name, sorted by name.
    pub fn trainable(&self) -> &[(String, Var)] {
        &self.trainable
    }

    /// The number of trainable values.
    pub fn trainable_count(&self) -> usize {
        self.trainable.iter().map(|(_, v)| v.elem_count()).sum()
    }

    /// The device the model runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// `(cos, sin)` of every token's position, `(T, 1, D)` each.
    fn rotary(&self, positions: &[u32]) -> candle_core::Result<(Tensor, Tensor)> {
        let m = &self.shape.model;
        let half = m.head_dim / 2;
        let base = f64::from(m.rope_base);
        let mut cos = Vec::with_capacity(positions.len() * m.head_dim);
        let mut sin = Vec::with_capacity(positions.len() * m.head_dim);
        for &p in positions {
            for _ in 0..2 {
                for i in 0..half {
                    let angle = f64::from(p) * base.powf(-2.0 * i as f64 / m.head_dim as f64);
                    cos.push(angle.cos());
                    sin.push(angle.sin());
                }
            }
        }
        let shape = (positions.len(), 1, m.head_dim);
        let cos = Tensor::from_vec(cos, shape, &self.device)?.to_dtype(self.dtype)?;
        let sin = Tensor::from_vec(sin, shape, &self.device)?.to_dtype(self.dtype)?;
        Ok((cos, sin))
    }

    /// Whether layers recompute their activations in backward instead of keeping them: the
    /// memory of one layer's activations instead of all of them, for one more forward pass.
    pub fn set_recompute(&mut self, recompute: bool) {
        self.recompute = recompute;
    }

    /// The gradient of each trainable tensor (in [`TrainModel::trainable`]'s order) after a
    /// backward pass, taken out of `store` and of what recomputing layers computed; `None` for
    /// a tensor the pass did not reach.
    pub fn take_gradients(
        &self,
        store: &mut candle_core::backprop::GradStore,
    ) -> Vec<Option<Tensor>> {
        let mut layers = std::mem::take(&mut *self.layer_grads.lock().expect("layer gradients"));
        self.trainable
            .iter()
            .map(|(_, var)| store.remove(var).or_else(|| layers.remove(&var.id())))
            .collect()
    }

    /// `grads` (in [`TrainModel::trainable`]'s order) as f32, with zeros for a tensor no pass
    /// reached: what the optimizer takes.
    pub fn complete_gradients(
        &self,
        grads: Vec<Option<Tensor>>,
    ) -> candle_core::Result<Vec<Tensor>> {
        self.trainable
            .iter()
            .zip(grads)
            .map(|((_, var), g)| match g {
                Some(g) => g.to_dtype(DType::F32),
                None => Tensor::zeros(var.shape(), DType::F32, var.device()),
            })
            .collect()
    }

    /// The final hidden states `(T, hidden)` of a batch (after the last norm).
    pub fn hidden(&self, batch: &Batch) -> candle_core::Result<Tensor> {
        let m = &self.shape.model;
        let ids = Tensor::new(batch.input_ids.as_slice(), &self.device)?;
        let mut x = self.embed.index_select(&ids, 0)?;
        let (cos, sin) = self.rotary(&batch.position_ids)?;
        let ctx = LayerContext {
            cos,
            sin,
            segments: batch.segments.clone(),
            n_head: m.n_head,
            n_kv_head: m.n_kv_head,
            head_dim: m.head_dim,
            rms_eps: f64::from(m.rms_eps),
        };
        let recompute = self.recompute && self.device.is_cpu();
        if recompute && !x.track_op() {
            // The recomputing op runs its backward only for a tracked input (LoRA: frozen
            // embeddings); a variable copy makes it tracked.
            x = Var::from_tensor(&x)?.as_tensor().clone();
        }
        for layer in &self.layers {
            x = if recompute {
                super::recompute::recomputed(
                    &x,
                    Arc::clone(layer),
                    ctx.clone(),
                    Arc::clone(&self.layer_grads),
                )?
            } else {
                layer.forward(&x, &ctx)?
            };
        }
        rms_norm(&x, &self.norm, ctx.rms_eps)
    }

    fn head(&self) -> &Tensor {
        self.lm_head.as_ref().unwrap_or(&self.embed)
    }

    /// Logits `(T, vocab)` after every token of the batch.
    pub fn logits(&self, batch: &Batch) -> candle_core::Result<Tensor> {
        project(&self.hidden(batch)?, self.head())
    }

    /// The summed negative log-likelihood of the batch's targets (a scalar): each labelled
    /// token predicted from the tokens before it in its own example. Logits are computed only
    /// for the positions that predict a label.
    pub fn loss_sum(&self, batch: &Batch) -> candle_core::Result<Tensor> {
        let hidden = self.hidden(batch)?;
        let rows = Tensor::new(batch.target_rows.as_slice(), &self.device)?;
        let targets = Tensor::new(batch.targets.as_slice(), &self.device)?;
        let logits = project(&hidden.index_select(&rows, 0)?, self.head())?;
        token_nll(&logits, &targets)?.sum_all()
    }

    /// The model's weights under their Hugging Face names, LoRA merged in, in the model's dtype.
    pub fn merged_weights(&self) -> candle_core::Result<HashMap<String, Tensor>> {
        let mut out = HashMap::new();
        let mut put = |name: String, t: &Tensor| -> candle_core::Result<()> {
            out.insert(name, t.detach().to_device(&Device::Cpu)?);
            Ok(())
        };
        put("model.embed_tokens.weight".into(), &self.embed)?;
        put("model.norm.weight".into(), &self.norm)?;
        if let Some(head) = &self.lm_head {
            put("lm_head.weight".into(), head)?;
        }
        for (i, l) in self.layers.iter().enumerate() {
            let p = format!("model.layers.{i}");
            put(format!("{p}.input_layernorm.weight"), &l.attn_norm)?;
            put(format!("{p}.post_attention_layernorm.weight"), &l.ffn_norm)?;
            for (module, linear) in [
                ("self_attn.q_proj", &l.q),
                ("self_attn.k_proj", &l.k),
                ("self_attn.v_proj", &l.v),
                ("self_attn.o_proj", &l.o),
                ("mlp.gate_proj", &l.gate),
                ("mlp.up_proj", &l.up),
                ("mlp.down_proj", &l.down),
            ] {
                put(format!("{p}.{module}.weight"), &linear.merged_weight()?)?;
                if let Some(bias) = linear.bias() {
                    put(format!("{p}.{module}.bias"), bias)?;
                }
            }
        }
        Ok(out)
    }

    /// Writes the model (LoRA merged) as a new safetensors directory `out`, with `config.json`
    /// and the tokenizer files copied from `base` (the directory the model was loaded from).
    pub fn save(&self, base: &Path, out: &Path) -> Result<(), TrainError> {
        let weights = self
            .merged_weights()
            .and_then(|w| {
                w.into_iter()
                    .map(|(n, t)| Ok((n, t.to_dtype(DType::F32)?)))
                    .collect::<candle_core::Result<HashMap<_, _>>>()
            })
            .map_err(TrainError::candle("merging the weights"))?;
        crate::store::replace_dir(out, |tmp: &Path| -> Result<(), TrainError> {
            let file = tmp.join("model.safetensors");
            candle_core::safetensors::save(&weights, &file)
                .map_err(TrainError::candle("writing model.safetensors"))?;
            std::fs::File::open(&file)
                .and_then(|f| f.sync_all())
                .map_err(|source| TrainError::Io {
                    path: file.clone(),
                    source,
                })?;
            copy_model_files(base, tmp, false)
        })
    }
}

/// Gradients of layer tensors by tensor id, filled by recomputing layers.
pub(super) type LayerGrads = Arc<Mutex<HashMap<candle_core::TensorId, Tensor>>>;

/// What a layer's forward pass needs besides its input.
#[derive(Clone)]
pub(super) struct LayerContext {
    cos: Tensor,
    sin: Tensor,
    segments: Segments,
    n_head: usize,
    n_kv_head: usize,
    head_dim: usize,
    rms_eps: f64,
}

impl Layer {
    /// The block: attention and MLP, each with its pre-norm and residual.
    pub(super) fn forward(&self, x: &Tensor, ctx: &LayerContext) -> candle_core::Result<Tensor> {
        let t = x.dim(0)?;
        let (heads, kv_heads, d) = (ctx.n_head, ctx.n_kv_head, ctx.head_dim);
        let h = rms_norm(x, &self.attn_norm, ctx.rms_eps)?;
        let q = self.q.forward(&h)?.reshape((t, heads, d))?;
        let k = self.k.forward(&h)?.reshape((t, kv_heads, d))?;
        let v = self.v.forward(&h)?.reshape((t, kv_heads, d))?;
        let q = rope(&q, &ctx.cos, &ctx.sin)?;
        let k = rope(&k, &ctx.cos, &ctx.sin)?;
        let attn = segment_attention(&q, &k, &v, &ctx.segments)?.reshape((t, heads * d))?;
        let x = (x + self.o.forward(&attn)?)?;
        let h = rms_norm(&x, &self.ffn_norm, ctx.rms_eps)?;
        let mlp = (self.gate.forward(&h)?.silu()? * self.up.forward(&h)?)?;
        x + self.down.forward(&mlp)?
    }

    /// Every tensor of the block (weights, biases, norms, adapters).
    pub(super) fn tensors(&self) -> Vec<&Tensor> {
        let mut out = vec![&self.attn_norm, &self.ffn_norm];
        for linear in [
            &self.q, &self.k, &self.v, &self.o, &self.gate, &self.up, &self.down,
        ] {
            out.extend(linear.tensors());
        }
        out
    }
}

/// RMSNorm: `x / √(mean(x²) + ε) · w` over the last dimension.
fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
    let mean_square = x.sqr()?.mean_keepdim(D::Minus1)?;
    x.broadcast_div(&(mean_square + eps)?.sqrt()?)?
        .broadcast_mul(weight)
}

/// Hugging Face's `x·cos + rotate_half(x)·sin` on `(T, heads, D)`.
fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> candle_core::Result<Tensor> {
    let d = x.dim(2)?;
    let (a, b) = (x.narrow(2, 0, d / 2)?, x.narrow(2, d / 2, d / 2)?);
    let rotated = Tensor::cat(&[b.neg()?, a], 2)?;
    x.broadcast_mul(cos)? + rotated.broadcast_mul(sin)?
}

/// Copies everything of a model directory but its weights (config, tokenizer, chat template);
/// with `keep_existing`, files `to` already has stay as they are.
pub fn copy_model_files(base: &Path, to: &Path, keep_existing: bool) -> Result<(), TrainError> {
    let entries = std::fs::read_dir(base).map_err(|source| TrainError::Io {
        path: base.to_path_buf(),
        source,
    })?;
    for entry in entries {
        let path = entry
            .map_err(|source| TrainError::Io {
                path: base.to_path_buf(),
                source,
            })?
            .path();
        let keep = path.is_file()
            && path
                .extension()
                .is_some_and(|x| x == "json" || x == "jinja" || x == "txt" || x == "model");
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if keep_existing && to.join(name).exists() {
            continue;
        }
        if keep && !name.ends_with(".safetensors.index.json") {
            let bytes = std::fs::read(&path).map_err(|source| TrainError::Io {
                path: path.clone(),
                source,
            })?;
            crate::store::write_atomic(&to.join(name), &bytes)?;
        }
    }
    Ok(())
}

/// `intermediate_size` from a `config.json`.
fn read_intermediate(config: &Path) -> Result<usize, String> {
    let text = std::fs::read_to_string(config).map_err(|e| format!("{}: {e}", config.display()))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", config.display()))?;
    json.get("intermediate_size")
        .and_then(|v| v.as_u64())
        .map(|v| v as usize)
        .ok_or_else(|| format!("{}: `intermediate_size` is missing", config.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sft::pack::{Example, pack};

    fn shape(architecture: Architecture, tied: bool) -> TrainShape {
        TrainShape {
            model: ModelShape {
                architecture,
                n_layer: 2,
                n_head: 4,
                n_kv_head: 2,
                head_dim: 4,
                hidden: 16,
                vocab_size: 23,
                context_length: 64,
                rms_eps: 1e-6,
                rope_base: 10_000.0,
                rope_dim: 4,
            },
            intermediate: 24,
            tied,
        }
    }

    fn batch(second: &[u32]) -> Batch {
        let examples = vec![
            Example {
                problem_id: 1,
                input_ids: vec![3, 7, 1, 9, 4, 2],
                prompt_len: 2,
            },
            Example {
                problem_id: 2,
                input_ids: second.to_vec(),
                prompt_len: 1,
            },
        ];
        let packed = pack(&examples, 64);
        Batch::from_rows(&[(0, &packed.rows[0])], 23).unwrap()
    }

    fn scalar(t: &Tensor) -> f64 {
        t.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
    }

    /// Every trainable tensor gets a gradient, and sampled entries of each match central
    /// finite differences of the loss (f64).
    #[test]
    fn gradients_match_finite_differences_for_every_tensor() {
        for (arch, tied) in [(Architecture::Qwen2, false), (Architecture::Llama, true)] {
            let model =
                TrainModel::random(shape(arch, tied), &TrainMode::Full, DType::F64, 1).unwrap();
            let b = batch(&[5, 6, 8, 11, 12]);
            let grads = model.loss_sum(&b).unwrap().backward().unwrap();
            let biases = if arch == Architecture::Qwen2 { 3 } else { 0 };
            let expected = if tied { 2 } else { 3 } + 2 * (9 + biases);
            assert_eq!(model.trainable().len(), expected);
            for (name, var) in model.trainable() {
                let g = grads
                    .get(var)
                    .unwrap_or_else(|| panic!("{name}: no gradient"));
                let g: Vec<f64> = g.flatten_all().unwrap().to_vec1().unwrap();
                assert!(g.iter().any(|v| *v != 0.0), "{name}: zero gradient");
                let original: Vec<f64> = var.flatten_all().unwrap().to_vec1().unwrap();
                for &i in &[0, original.len() / 2, original.len() - 1] {
                    let at = |delta: f64| {
                        let mut v = original.clone();
                        v[i] += delta;
                        var.set(&Tensor::from_vec(v, var.shape(), &Device::Cpu).unwrap())
                            .unwrap();
                        scalar(&model.loss_sum(&b).unwrap())
                    };
                    let eps = 1e-5;
                    let numeric = (at(eps) - at(-eps)) / (2.0 * eps);
                    var.set(
                        &Tensor::from_vec(original.clone(), var.shape(), &Device::Cpu).unwrap(),
                    )
                    .unwrap();
                    let err = (numeric - g[i]).abs() / (1e-6 + numeric.abs().max(g[i].abs()));
                    assert!(
                        err < 1e-4,
                        "{name}[{i}]: analytic {} numeric {numeric}",
                        g[i]
                    );
                }
            }
        }
    }

    /// Changing the second example leaves the first example's logits unchanged: packed examples
    /// never attend to each other.
    #[test]
    fn packed_examples_do_not_see_each_other() {
        let model = TrainModel::random(
            shape(Architecture::Qwen2, false),
            &TrainMode::Full,
            DType::F32,
            2,
        )
        .unwrap();
        let (a, b) = (batch(&[5, 6, 8, 11, 12]), batch(&[13, 14, 15, 16, 17]));
        let first = |batch: &Batch| -> Vec<Vec<f32>> {
            // First-fit-decreasing puts the 6-token example first in the row.
            model
                .logits(batch)
                .unwrap()
                .narrow(0, 0, 6)
                .unwrap()
                .to_vec2()
                .unwrap()
        };
        assert_eq!(first(&a), first(&b));
        assert_ne!(
            model.logits(&a).unwrap().to_vec2::<f32>().unwrap(),
            model.logits(&b).unwrap().to_vec2::<f32>().unwrap()
        );
    }

    /// Gradient checkpointing changes memory, not results: the loss and every gradient equal
    /// those of the plain model bit for bit, in full fine-tuning and under LoRA.
    #[test]
    fn recomputed_layers_give_the_same_gradients() {
        let lora = TrainMode::Lora(LoraConfig {
            rank: 2,
            alpha: 4.0,
            targets: vec!["v_proj".into(), "up_proj".into()],
        });
        for mode in [TrainMode::Full, lora] {
            let plain = TrainModel::random(shape(Architecture::Qwen2, false), &mode, DType::F64, 4)
                .unwrap();
            let mut recomputing =
                TrainModel::random(shape(Architecture::Qwen2, false), &mode, DType::F64, 4)
                    .unwrap();
            recomputing.set_recompute(true);
            let b = batch(&[5, 6, 8, 11, 12]);
            let (la, lb) = (
                plain.loss_sum(&b).unwrap(),
                recomputing.loss_sum(&b).unwrap(),
            );
            assert_eq!(scalar(&la), scalar(&lb));
            let ga = plain.take_gradients(&mut la.backward().unwrap());
            let gb = recomputing.take_gradients(&mut lb.backward().unwrap());
            for ((name, _), (a, b)) in plain.trainable().iter().zip(ga.iter().zip(&gb)) {
                let values = |g: &Option<Tensor>| -> Vec<f64> {
                    let g = g.as_ref().unwrap_or_else(|| panic!("{name}: no gradient"));
                    g.flatten_all().unwrap().to_vec1().unwrap()
                };
                assert_eq!(values(a), values(b), "{name}");
            }
        }
    }

    /// LoRA starts as the base model, trains only its adapters, and its merged weights compute
    /// what the adapted model does.
    #[test]
    fn lora_trains_adapters_only_and_merges_exactly() {
        let lora = TrainMode::Lora(LoraConfig {
            rank: 2,
            alpha: 4.0,
            targets: vec!["q_proj".into(), "down_proj".into()],
        });
        let base = TrainModel::random(
            shape(Architecture::Qwen2, false),
            &TrainMode::Full,
            DType::F64,
            3,
        )
        .unwrap();
        let model =
            TrainModel::random(shape(Architecture::Qwen2, false), &lora, DType::F64, 3).unwrap();
        assert_eq!(model.trainable().len(), 2 * 2 * 2);
        assert!(model.trainable().iter().all(|(n, _)| n.contains("lora_")));
        let b = batch(&[5, 6, 8]);
        assert_eq!(
            scalar(&model.loss_sum(&b).unwrap()),
            scalar(&base.loss_sum(&b).unwrap())
        );
        for (_, var) in model.trainable() {
            var.set(&(var.as_tensor() + 0.05).unwrap()).unwrap();
        }
        let adapted = scalar(&model.loss_sum(&b).unwrap());
        assert_ne!(adapted, scalar(&base.loss_sum(&b).unwrap()));
        let merged = model.merged_weights().unwrap();
        for (name, var) in base.trainable() {
            var.set(&merged[name].to_dtype(DType::F64).unwrap())
                .unwrap();
        }
        assert!((scalar(&base.loss_sum(&b).unwrap()) - adapted).abs() < 1e-9);
    }
}
