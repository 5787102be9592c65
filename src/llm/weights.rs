//! Where the transformer's tensors come from: a GGUF file or a Hugging Face safetensors
//! directory, both read through [`TensorSource`] by their GGUF tensor names.
//!
//! A GGUF tensor is read as stored (its ggml type and raw bytes, into one reused buffer, so
//! loading allocates only what the model keeps). A safetensors directory (`config.json`, one or
//! more `*.safetensors` files as Hugging Face ships them or as `models export` writes them) maps
//! the GGUF names to the Hugging Face ones (`blk.3.attn_q.weight` → `model.layers.3.self_attn.
//! q_proj.weight`, ...) and serves f32/f16/bf16 tensors as f32; the model then quantizes its
//! matmul weights to 8-bit blocks at load, the precision of Q8_0. [`hf_config`] reads the
//! hyper-parameters of `config.json` (qwen2 and llama `model_type`s).
//!
//! Rotary embeddings: Hugging Face checkpoints pair dimension i with i + d/2 for both
//! architectures, while llama.cpp's converter permutes llama's q/k rows to pair 2i with 2i + 1;
//! [`unpermute_llama_rows`] undoes that permutation (for exports), and the model uses the pairing
//! that matches where its weights came from.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use candle_core::quantized::{GgmlDType, gguf_file};
use candle_core::{DType, Device};

use super::gguf::Architecture;
use super::shape::ModelShape;

/// A tensor's stored type, its dimensions (candle order: rows first) and its bytes.
pub struct RawTensor<'a> {
    pub dtype: GgmlDType,
    pub dims: Vec<usize>,
    pub data: &'a [u8],
}

/// Tensors by GGUF name.
pub trait TensorSource {
    /// Whether the model has the tensor.
    fn has(&self, name: &str) -> bool;
    /// Reads a tensor; the bytes stay valid until the next read. Errors name the tensor.
    fn read(&mut self, name: &str) -> Result<RawTensor<'_>, String>;
}

/// The tensors of a GGUF file.
pub struct GgufTensors<'a, R> {
    content: &'a gguf_file::Content,
    reader: &'a mut R,
    buf: Vec<u8>,
}

impl<'a, R: Read + Seek> GgufTensors<'a, R> {
    pub fn new(content: &'a gguf_file::Content, reader: &'a mut R) -> Self {
        GgufTensors {
            content,
            reader,
            buf: Vec::new(),
        }
    }
}

impl<R: Read + Seek> TensorSource for GgufTensors<'_, R> {
    fn has(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    fn read(&mut self, name: &str) -> Result<RawTensor<'_>, String> {
        let info = self
            .content
            .tensor_infos
            .get(name)
            .ok_or_else(|| format!("tensor `{name}` is missing"))?;
        let dims = info.shape.dims().to_vec();
        let elems: usize = dims.iter().product();
        let block = info.ggml_dtype.block_size();
        if !elems.is_multiple_of(block) {
            return Err(format!(
                "tensor `{name}`: {elems} values are not a whole number of {:?} blocks",
                info.ggml_dtype
            ));
        }
        let size = elems / block * info.ggml_dtype.type_size();
        self.buf.resize(size, 0);
        self.reader
            .seek(SeekFrom::Start(
                self.content.tensor_data_offset + info.offset,
            ))
            .and_then(|_| self.reader.read_exact(&mut self.buf))
            .map_err(|e| format!("tensor `{name}`: {e}"))?;
        Ok(RawTensor {
            dtype: info.ggml_dtype,
            dims,
            data: &self.buf,
        })
    }
}

/// The Hugging Face name of a GGUF tensor name (`None` for names outside the mapping).
pub fn hf_name(gguf: &str) -> Option<String> {
    match gguf {
        "token_embd.weight" => return Some("model.embed_tokens.weight".into()),
        "output_norm.weight" => return Some("model.norm.weight".into()),
        "output.weight" => return Some("lm_head.weight".into()),
        _ => {}
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, part) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (module, kind) = part.rsplit_once('.')?;
    let hf = match module {
        "attn_norm" => "input_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "ffn_norm" => "post_attention_layernorm",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf}.{kind}"))
}

/// The tensors of a safetensors model directory, as f32.
pub struct SafetensorsTensors {
    dir: PathBuf,
    files: candle_core::safetensors::MmapedSafetensors,
    names: std::collections::HashSet<String>,
    buf: Vec<u8>,
}

impl SafetensorsTensors {
    /// Memory-maps every `*.safetensors` file of `dir`.
    pub fn open(dir: &Path) -> Result<Self, String> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .collect();
        paths.sort();
        if paths.is_empty() {
            return Err(format!("{}: no .safetensors file", dir.display()));
        }
        // SAFETY: the files are mapped read-only; like every loader of memory-mapped weights we
        // rely on nobody truncating them while the model loads.
        let files = unsafe { candle_core::safetensors::MmapedSafetensors::multi(&paths) }
            .map_err(|e| format!("reading the safetensors files: {e}"))?;
        let names = files.tensors().into_iter().map(|(n, _)| n).collect();
        Ok(SafetensorsTensors {
            dir: dir.to_path_buf(),
            files,
            names,
            buf: Vec::new(),
        })
    }
}

impl TensorSource for SafetensorsTensors {
    fn has(&self, name: &str) -> bool {
        hf_name(name).is_some_and(|n| self.names.contains(&n))
    }

    fn read(&mut self, name: &str) -> Result<RawTensor<'_>, String> {
        let hf = hf_name(name).ok_or_else(|| format!("no Hugging Face name for `{name}`"))?;
        if !self.names.contains(&hf) {
            return Err(format!(
                "tensor `{hf}` is missing from the safetensors files in {}",
                self.dir.display()
            ));
        }
        let err = |e: candle_core::Error| format!("tensor `{hf}`: {e}");
        let t = self.files.load(&hf, &Device::Cpu).map_err(err)?;
        match t.dtype() {
            DType::F32 | DType::F16 | DType::BF16 => {}
            other => {
                return Err(format!(
                    "tensor `{hf}` is {other:?}; only f32, f16 and bf16 weights are supported"
                ));
            }
        }
        let dims = t.dims().to_vec();
        let values = t
            .to_dtype(DType::F32)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(err)?;
        self.buf.clear();
        self.buf.reserve(values.len() * 4);
        for v in values {
            self.buf.extend_from_slice(&v.to_le_bytes());
        }
        Ok(RawTensor {
            dtype: GgmlDType::F32,
            dims,
            data: &self.buf,
        })
    }
}

/// The architecture and hyper-parameters of a Hugging Face `config.json`.
pub fn hf_config(path: &Path) -> Result<(Architecture, ModelShape, bool), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let bad = |what: String| format!("{}: {what}", path.display());
    let architecture = match json.get("model_type").and_then(|v| v.as_str()) {
        Some("qwen2") => Architecture::Qwen2,
        Some("llama") => Architecture::Llama,
        Some(other) => {
            return Err(bad(format!(
                "model_type `{other}` is not supported (qwen2, llama)"
            )));
        }
        None => return Err(bad("`model_type` is missing".into())),
    };
    let get = |key: &str| -> Result<usize, String> {
        json.get(key)
            .and_then(|v| v.as_u64())
            .map(|v| v as usize)
            .ok_or_else(|| bad(format!("`{key}` is missing or not an integer")))
    };
    let get_f = |key: &str, default: f64| json.get(key).and_then(|v| v.as_f64()).unwrap_or(default);
    if json.get("rope_scaling").is_some_and(|v| !v.is_null()) {
        return Err(bad(
            "`rope_scaling` is set; scaled rotary embeddings are not supported".into(),
        ));
    }
    let n_head = get("num_attention_heads")?;
    let hidden = get("hidden_size")?;
    let n_kv_head = json
        .get("num_key_value_heads")
        .and_then(|v| v.as_u64())
        .map(|v| v as usize)
        .unwrap_or(n_head);
    if n_head == 0 || n_kv_head == 0 || n_head % n_kv_head != 0 {
        return Err(bad(format!(
            "inconsistent attention shape: {n_head} heads, {n_kv_head} KV heads"
        )));
    }
    let head_dim = match json.get("head_dim").and_then(|v| v.as_u64()) {
        Some(h) => h as usize,
        None if hidden % n_head == 0 => hidden / n_head,
        None => {
            return Err(bad(format!(
                "hidden size {hidden} is not a multiple of {n_head} heads"
            )));
        }
    };
    if head_dim * n_head != hidden {
        return Err(bad(format!(
            "head_dim {head_dim} × {n_head} heads differs from hidden size {hidden}; not supported"
        )));
    }
    let tied = json
        .get("tie_word_embeddings")
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
    let cfg = ModelShape {
        architecture,
        n_layer: get("num_hidden_layers")?,
        n_head,
        n_kv_head,
        head_dim,
        hidden,
        vocab_size: get("vocab_size")?,
        context_length: get("max_position_embeddings")?,
        rms_eps: get_f("rms_norm_eps", 1e-6) as f32,
        rope_base: get_f("rope_theta", 10_000.0) as f32,
        rope_dim: head_dim,
    };
    Ok((architecture, cfg, tied))
}

/// Undoes llama.cpp's permutation of llama q/k projection rows: GGUF row `h·d + 2i + s` is
/// Hugging Face row `h·d + s·d/2 + i` (`d` the head dimension, `s` ∈ {0, 1}). `rows` is
/// row-major with `cols` values per row.
pub fn unpermute_llama_rows(rows: &[f32], cols: usize, head_dim: usize) -> Vec<f32> {
    let n = rows.len() / cols;
    let half = head_dim / 2;
    let mut out = vec![0f32; rows.len()];
    for g in 0..n {
        let (h, within) = (g / head_dim, g % head_dim);
        let (i, s) = (within / 2, within % 2);
        let hf = h * head_dim + s * half + i;
        out[hf * cols..(hf + 1) * cols].copy_from_slice(&rows[g * cols..(g + 1) * cols]);
    }
    out
}

/// GGUF tensor names → Hugging Face names, for every tensor of an `n_layer` model.
pub fn hf_names(n_layer: usize) -> HashMap<String, String> {
    let mut names: Vec<String> = vec![
        "token_embd.weight".into(),
        "output_norm.weight".into(),
        "output.weight".into(),
    ];
    for i in 0..n_layer {
        for m in [
            "attn_norm.weight",
            "attn_q.weight",
            "attn_q.bias",
            "attn_k.weight",
            "attn_k.bias",
            "attn_v.weight",
            "attn_v.bias",
            "attn_output.weight",
            "ffn_norm.weight",
            "ffn_gate.weight",
            "ffn_up.weight",
            "ffn_down.weight",
        ] {
            names.push(format!("blk.{i}.{m}"));
        }
    }
    names
        .into_iter()
        .map(|g| {
            let hf = hf_name(&g).expect("every listed name maps");
            (g, hf)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_both_ways_of_a_layer() {
        assert_eq!(
            hf_name("blk.12.attn_q.bias").as_deref(),
            Some("model.layers.12.self_attn.q_proj.bias")
        );
        assert_eq!(
            hf_name("blk.0.ffn_down.weight").as_deref(),
            Some("model.layers.0.mlp.down_proj.weight")
        );
        assert_eq!(hf_name("output.weight").as_deref(), Some("lm_head.weight"));
        assert_eq!(hf_name("blk.x.attn_q.weight"), None);
        assert_eq!(hf_names(2).len(), 3 + 2 * 12);
    }

    #[test]
    fn unpermute_inverts_llama_cpp_permutation() {
        // llama.cpp: reshape(heads, 2, d/2, cols).swapaxes(1, 2): HF row (h, s, i) → (h, i, s).
        let (heads, d, cols) = (2, 8, 3);
        let hf: Vec<f32> = (0..heads * d * cols).map(|v| v as f32).collect();
        let mut gguf = vec![0f32; hf.len()];
        for h in 0..heads {
            for s in 0..2 {
                for i in 0..d / 2 {
                    let from = h * d + s * d / 2 + i;
                    let to = h * d + 2 * i + s;
                    gguf[to * cols..(to + 1) * cols]
                        .copy_from_slice(&hf[from * cols..(from + 1) * cols]);
                }
            }
        }
        assert_eq!(unpermute_llama_rows(&gguf, cols, d), hf);
    }
}
