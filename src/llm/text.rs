//! [`ModelText`]: the text side of a model, its tokenizer and chat template, read from a GGUF
//! file's metadata or a safetensors directory's tokenizer files without loading any weights.
//! The engine holds one; a run whose completions come from a model server uses one alone, so its
//! prompts are rendered by the same template, byte for byte, and its SFT rows tokenized the same.

use std::path::Path;

use super::chat::{ChatError, ChatTemplate, ChatTurn};
use super::gguf::GgufModel;
use super::{LlmError, Tokenizer};
use crate::models::ModelSource;

/// A model's tokenizer and (when it has one) chat template.
#[derive(Debug)]
pub struct ModelText {
    tokenizer: Tokenizer,
    chat: Option<ChatTemplate>,
}

impl ModelText {
    /// Reads the tokenizer and chat template of `source` (no weights are read).
    pub fn load(source: &ModelSource) -> Result<Self, LlmError> {
        match source {
            ModelSource::Gguf(path) => {
                let gguf = GgufModel::open(path)?;
                Self::from_gguf(gguf.content())
            }
            ModelSource::Safetensors(dir) => Self::from_dir(dir),
        }
    }

    /// From a GGUF file's metadata.
    pub fn from_gguf(
        content: &candle_core::quantized::gguf_file::Content,
    ) -> Result<Self, LlmError> {
        let tokenizer = Tokenizer::from_gguf(content)?;
        let chat = match ChatTemplate::from_gguf(content) {
            Ok(t) => Some(t),
            Err(ChatError::NoTemplate) => None,
            Err(e) => return Err(e.into()),
        };
        Ok(ModelText { tokenizer, chat })
    }

    /// From a safetensors directory's `tokenizer.json` and `tokenizer_config.json`.
    pub fn from_dir(dir: &Path) -> Result<Self, LlmError> {
        let tokenizer = Tokenizer::from_json_file(dir.join("tokenizer.json"))?;
        let config = dir.join("tokenizer_config.json");
        let chat = if config.is_file() {
            match ChatTemplate::from_tokenizer_config(&config) {
                Ok(t) => Some(t),
                Err(ChatError::NoTemplate) => None,
                Err(e) => return Err(e.into()),
            }
        } else {
            None
        };
        Ok(ModelText { tokenizer, chat })
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The chat template, when the model has one.
    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.chat.as_ref()
    }

    /// Renders `messages` with the chat template, ending with the assistant's turn.
    pub fn chat_prompt(&self, messages: &[ChatTurn]) -> Result<String, LlmError> {
        let chat = self.chat.as_ref().ok_or(ChatError::NoTemplate)?;
        Ok(chat.render(messages, true)?)
    }
}
