//! [`ModelShape`]: the hyper-parameters that fix a transformer's tensor shapes, read from GGUF
//! metadata (or a Hugging Face `config.json`, see [`weights::hf_config`](super::weights::hf_config)).

use candle_core::quantized::gguf_file;

use super::gguf::Architecture;

/// Shape hyper-parameters read from the GGUF metadata.
#[derive(Debug, Clone)]
pub struct ModelShape {
    pub architecture: Architecture,
    pub n_layer: usize,
    pub n_head: usize,
    pub n_kv_head: usize,
    pub head_dim: usize,
    pub hidden: usize,
    pub vocab_size: usize,
    pub context_length: usize,
    pub rms_eps: f32,
    pub rope_base: f32,
    pub rope_dim: usize,
}

impl ModelShape {
    /// Reads the hyper-parameters of a `qwen2` or `llama` GGUF.
    pub fn from_gguf(ct: &gguf_file::Content, architecture: Architecture) -> Result<Self, String> {
        let prefix = architecture.gguf_name();
        let get_u32 = |key: &str| -> Result<usize, String> {
            let full = format!("{prefix}.{key}");
            ct.metadata
                .get(&full)
                .ok_or_else(|| format!("metadata key `{full}` is missing"))?
                .to_u32()
                .map(|v| v as usize)
                .map_err(|e| format!("metadata key `{full}`: {e}"))
        };
        let get_f32 = |key: &str| -> Option<f32> {
            ct.metadata
                .get(&format!("{prefix}.{key}"))
                .and_then(|v| v.to_f32().ok())
        };
        let n_head = get_u32("attention.head_count")?;
        let n_kv_head = get_u32("attention.head_count_kv").unwrap_or(n_head);
        let hidden = get_u32("embedding_length")?;
        if n_head == 0 || hidden % n_head != 0 || n_kv_head == 0 || n_head % n_kv_head != 0 {
            return Err(format!(
                "inconsistent attention shape: {n_head} heads, {n_kv_head} KV heads, hidden size {hidden}"
            ));
        }
        let head_dim = hidden / n_head;
        let rope_dim = get_u32("rope.dimension_count").unwrap_or(head_dim);
        if rope_dim > head_dim || rope_dim % 2 != 0 {
            return Err(format!(
                "rope dimension {rope_dim} does not fit head dimension {head_dim}"
            ));
        }
        let embd = ct
            .tensor_infos
            .get("token_embd.weight")
            .ok_or("tensor `token_embd.weight` is missing")?;
        let vocab_size = embd.shape.dims()[0];
        Ok(ModelShape {
            architecture,
            n_layer: get_u32("block_count")?,
            n_head,
            n_kv_head,
            head_dim,
            hidden,
            vocab_size,
            context_length: get_u32("context_length")?,
            rms_eps: get_f32("attention.layer_norm_rms_epsilon").unwrap_or(1e-6),
            rope_base: get_f32("rope.freq_base").unwrap_or(10_000.0),
            rope_dim,
        })
    }
}
