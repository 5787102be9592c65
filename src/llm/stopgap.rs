//! TEMPORARY stand-ins for `gguf`, `tokenizer` and `chat` (written on the `tokenizer` branch),
//! so the engine compiles and its tests run before that branch lands. Replaced on merge.

use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use candle_core::quantized::gguf_file::{self, Content};
use candle_core::quantized::tokenizer::TokenizerFromGguf;

use super::error::LlmError;
use super::model::Architecture;

pub fn open_gguf(path: &Path) -> Result<(Content, BufReader<File>, Architecture), LlmError> {
    let io = |source| LlmError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut reader = BufReader::new(File::open(path).map_err(io)?);
    let content = Content::read(&mut reader).map_err(|e| LlmError::InvalidModel {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let arch = match content.metadata.get("general.architecture") {
        Some(gguf_file::Value::String(s)) => s.clone(),
        _ => String::new(),
    };
    let architecture = match arch.as_str() {
        "qwen2" => Architecture::Qwen2,
        "llama" => Architecture::Llama,
        _ => {
            return Err(LlmError::UnsupportedArchitecture {
                path: path.to_path_buf(),
                architecture: arch,
            });
        }
    };
    Ok((content, reader, architecture))
}

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    eos: Vec<u32>,
}

impl Tokenizer {
    pub fn from_gguf(ct: &Content) -> Result<Self, String> {
        let inner = tokenizers::Tokenizer::from_gguf(ct).map_err(|e| e.to_string())?;
        let eos = ct
            .metadata
            .get("tokenizer.ggml.eos_token_id")
            .and_then(|v| v.to_u32().ok())
            .into_iter()
            .collect();
        Ok(Tokenizer { inner, eos })
    }

    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>, String> {
        self.inner
            .encode(text, add_special_tokens)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| e.to_string())
    }

    pub fn decode(&self, ids: &[u32]) -> String {
        self.inner.decode(ids, true).unwrap_or_default()
    }

    pub fn eos_token_ids(&self) -> Vec<u32> {
        self.eos.clone()
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

pub struct ChatTemplate {
    source: String,
}

impl ChatTemplate {
    pub fn from_gguf(ct: &Content) -> Result<Option<Self>, String> {
        Ok(match ct.metadata.get("tokenizer.chat_template") {
            Some(gguf_file::Value::String(s)) => Some(ChatTemplate { source: s.clone() }),
            _ => None,
        })
    }

    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String, String> {
        let mut env = minijinja::Environment::new();
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_template("chat", &self.source).map_err(|e| e.to_string())?;
        env.get_template("chat")
            .and_then(|t| {
                t.render(minijinja::context! {
                    messages => messages,
                    add_generation_prompt => add_generation_prompt,
                })
            })
            .map_err(|e| e.to_string())
    }
}
