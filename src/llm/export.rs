//! Writing a GGUF model as a Hugging Face safetensors directory: `model.safetensors` (every
//! tensor dequantized to f32 under its Hugging Face name, llama q/k rows un-permuted back to the
//! Hugging Face rotary layout), `config.json`, `tokenizer.json` and `tokenizer_config.json` (with
//! the model's chat template and BOS/EOS strings) — the layout the engine loads from a directory,
//! the one Hugging Face ships and the trainer writes.
//!
//! The directory is assembled under a temporary name beside the target, every file fsynced, and
//! renamed into place at the end, so an interrupted export never looks complete. An existing
//! target is never overwritten.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use super::gguf::{Architecture, GgufModel, meta_str, meta_str_array, meta_u32};
use super::tokenizer::Tokenizer;
use super::weights::{hf_names, unpermute_llama_rows};

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{0}: already exists; choose a new directory (an export never overwrites)")]
    Exists(PathBuf),
    #[error(transparent)]
    Gguf(#[from] super::gguf::GgufError),
    #[error(transparent)]
    Tokenizer(#[from] super::tokenizer::TokenizerError),
    #[error("{path}: {message}")]
    Model { path: PathBuf, message: String },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Exports the GGUF model at `gguf` to the new directory `out`.
pub fn export_safetensors(gguf: &Path, out: &Path) -> Result<(), ExportError> {
    if out.exists() {
        return Err(ExportError::Exists(out.to_path_buf()));
    }
    let model_err = |message: String| ExportError::Model {
        path: gguf.to_path_buf(),
        message,
    };
    let model = GgufModel::open(gguf)?;
    let ct = model.content();
    let arch = model.architecture();
    let cfg = super::shape::ModelShape::from_gguf(ct, arch).map_err(model_err)?;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ExportError::Io { path, source }
    };
    crate::store::replace_dir(out, |tmp: &Path| -> Result<(), ExportError> {
        // Weights.
        let mut reader = model.reader()?;
        let mut tensors: HashMap<String, Tensor> = HashMap::new();
        for (gguf_name, hf) in hf_names(cfg.n_layer) {
            if !ct.tensor_infos.contains_key(&gguf_name) {
                continue;
            }
            let t = ct
                .tensor(&mut reader, &gguf_name, &Device::Cpu)
                .and_then(|q| q.dequantize(&Device::Cpu))
                .map_err(|e| model_err(format!("tensor `{gguf_name}`: {e}")))?;
            let rope_rows = match arch {
                Architecture::Llama if gguf_name.ends_with("attn_q.weight") => true,
                Architecture::Llama => gguf_name.ends_with("attn_k.weight"),
                Architecture::Qwen2 => false,
            };
            let t = if rope_rows {
                let dims = t.dims().to_vec();
                let values = t
                    .flatten_all()
                    .and_then(|t| t.to_vec1::<f32>())
                    .map_err(|e| model_err(format!("tensor `{gguf_name}`: {e}")))?;
                let hf_rows = unpermute_llama_rows(&values, dims[1], cfg.head_dim);
                Tensor::from_vec(hf_rows, dims, &Device::Cpu)
                    .map_err(|e| model_err(format!("tensor `{gguf_name}`: {e}")))?
            } else {
                t
            };
            tensors.insert(hf, t);
        }
        let tied = !tensors.contains_key("lm_head.weight");
        let weights = tmp.join("model.safetensors");
        candle_core::safetensors::save(&tensors, &weights)
            .map_err(|e| model_err(format!("writing {}: {e}", weights.display())))?;
        drop(tensors);

        // Tokenizer and chat template.
        let tokenizer = Tokenizer::from_gguf(ct)?;
        tokenizer.save_json(tmp.join("tokenizer.json"))?;
        let tokens = meta_str_array(ct, "tokenizer.ggml.tokens")
            .map_err(|e| model_err(e.to_string()))?
            .unwrap_or_default();
        let token_text = |key: &str| -> Option<String> {
            meta_u32(ct, key)
                .ok()
                .flatten()
                .and_then(|id| tokens.get(id as usize))
                .map(|t| t.to_string())
        };
        let mut tok_config = serde_json::json!({
            "add_bos_token": tokenizer.adds_bos(),
            "bos_token": token_text("tokenizer.ggml.bos_token_id"),
            "eos_token": token_text("tokenizer.ggml.eos_token_id"),
            "model_max_length": cfg.context_length,
            "tokenizer_class": "PreTrainedTokenizerFast",
        });
        if let Some(template) =
            meta_str(ct, "tokenizer.chat_template").map_err(|e| model_err(e.to_string()))?
        {
            tok_config["chat_template"] = template.into();
        }
        write_json(&tmp.join("tokenizer_config.json"), &tok_config)?;

        let (model_type, class) = match arch {
            Architecture::Qwen2 => ("qwen2", "Qwen2ForCausalLM"),
            Architecture::Llama => ("llama", "LlamaForCausalLM"),
        };
        let intermediate = ct
            .tensor_infos
            .get("blk.0.ffn_up.weight")
            .map(|i| i.shape.dims()[0])
            .ok_or_else(|| model_err("tensor `blk.0.ffn_up.weight` is missing".into()))?;
        let config = serde_json::json!({
            "architectures": [class],
            "model_type": model_type,
            "hidden_size": cfg.hidden,
            "intermediate_size": intermediate,
            "num_attention_heads": cfg.n_head,
            "num_key_value_heads": cfg.n_kv_head,
            "num_hidden_layers": cfg.n_layer,
            "head_dim": cfg.head_dim,
            "rms_norm_eps": cfg.rms_eps,
            "rope_theta": cfg.rope_base,
            "max_position_embeddings": cfg.context_length,
            "vocab_size": cfg.vocab_size,
            "tie_word_embeddings": tied,
            "hidden_act": "silu",
            "bos_token_id": tokenizer.bos_token_id(),
            "eos_token_id": tokenizer.eos_token_id(),
            "torch_dtype": "float32",
        });
        write_json(&tmp.join("config.json"), &config)?;
        std::fs::File::open(&weights)
            .and_then(|f| f.sync_all())
            .map_err(io(&weights))?;

        Ok(())
    })
}

fn write_json(path: &Path, json: &serde_json::Value) -> Result<(), ExportError> {
    let text = serde_json::to_string_pretty(json).expect("JSON values serialize");
    Ok(crate::store::write_atomic(path, text.as_bytes())?)
}
