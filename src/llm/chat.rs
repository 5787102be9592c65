//! The model's own chat template, `tokenizer.chat_template`, rendered with minijinja.
//!
//! A chat model is trained on conversations laid out by one specific Jinja template, which its
//! GGUF file carries; prompts must be laid out the same way, so the template is rendered as is
//! rather than re-implemented. The environment matches the one Hugging Face `transformers` and
//! llama-cpp-python render chat templates in: `trim_blocks` and `lstrip_blocks` on, Python string
//! and dict methods (`.strip()`, `.items()`, ... via minijinja-contrib's pycompat), the variables
//! `messages`, `add_generation_prompt`, `bos_token` and `eos_token`, and a `raise_exception(msg)`
//! function whose message becomes [`ChatError::Raised`]. The template comes from GGUF metadata
//! ([`ChatTemplate::from_gguf`]) or a Hugging Face `tokenizer_config.json`
//! ([`ChatTemplate::from_tokenizer_config`], for safetensors model directories).

use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::Content;
use minijinja::{Environment, ErrorKind, context};
use serde::{Deserialize, Serialize};

use super::gguf::{MetadataError, meta_str, meta_str_array, meta_u32};

/// The template's name inside the minijinja environment.
const TEMPLATE_NAME: &str = "chat_template";
/// Prefix that marks an error raised by the template itself through `raise_exception`.
const RAISED_MARKER: &str = "chat template raised: ";

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatTurn {
    /// `system`, `user` or `assistant` (templates may accept others, e.g. `tool`).
    pub role: String,
    pub content: String,
}

impl ChatTurn {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }

    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }

    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }

    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new("assistant", content)
    }
}

/// Why a chat prompt could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum ChatError {
    #[error(
        "the model has no chat template (no `tokenizer.chat_template` in its GGUF metadata, no `chat_template` in its tokenizer_config.json); use a chat/instruct model or pass a raw prompt"
    )]
    NoTemplate,
    #[error("chat template: {0}")]
    Metadata(#[from] MetadataError),
    #[error("{path}: cannot read the chat template: {reason}")]
    Config { path: PathBuf, reason: String },
    #[error("the chat template does not compile: {0:#}")]
    Compile(#[source] minijinja::Error),
    #[error("the chat template rejected the conversation: {0}")]
    Raised(String),
    #[error("rendering the chat template failed: {0:#}")]
    Render(#[source] minijinja::Error),
}

/// A compiled chat template with the special-token strings it may refer to.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
}

fn raise_exception(message: String) -> Result<String, minijinja::Error> {
    Err(minijinja::Error::new(
        ErrorKind::InvalidOperation,
        format!("{RAISED_MARKER}{message}"),
    ))
}

impl ChatTemplate {
    /// The template in `tokenizer.chat_template`, with `bos_token`/`eos_token` the texts of
    /// `tokenizer.ggml.bos_token_id`/`eos_token_id`.
    pub fn from_gguf(content: &Content) -> Result<Self, ChatError> {
        let source = meta_str(content, "tokenizer.chat_template")?.ok_or(ChatError::NoTemplate)?;
        let tokens = meta_str_array(content, "tokenizer.ggml.tokens")?.unwrap_or_default();
        let token_text = |key: &str| -> Result<String, ChatError> {
            Ok(meta_u32(content, key)?
                .and_then(|id| tokens.get(id as usize))
                .map(|t| t.to_string())
                .unwrap_or_default())
        };
        let bos = token_text("tokenizer.ggml.bos_token_id")?;
        let eos = token_text("tokenizer.ggml.eos_token_id")?;
        Self::new(source, bos, eos)
    }

    /// The template of a Hugging Face model directory's `tokenizer_config.json` (`chat_template`,
    /// a string or a list of named templates of which `default` is used, and the `bos_token` /
    /// `eos_token` strings).
    pub fn from_tokenizer_config(path: impl AsRef<Path>) -> Result<Self, ChatError> {
        let path = path.as_ref();
        let bad = |reason: String| ChatError::Config {
            path: path.to_path_buf(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let config: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let source = match config.get("chat_template") {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Array(named)) => named
                .iter()
                .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                .and_then(|t| t.get("template")?.as_str())
                .ok_or_else(|| bad("`chat_template` has no template named `default`".into()))?
                .to_string(),
            Some(_) => return Err(bad("`chat_template` is neither a string nor a list".into())),
            None => return Err(ChatError::NoTemplate),
        };
        // Special tokens are either plain strings or {"content": "..."} objects.
        let token = |key: &str| -> String {
            match config.get(key) {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(obj) => obj
                    .get("content")
                    .and_then(|c| c.as_str())
                    .unwrap_or_default()
                    .to_string(),
                None => String::new(),
            }
        };
        Self::new(source, token("bos_token"), token("eos_token"))
    }

    /// Compiles a template given as text (e.g. `chat_template` from a tokenizer_config.json).
    pub fn new(
        source: impl Into<String>,
        bos_token: impl Into<String>,
        eos_token: impl Into<String>,
    ) -> Result<Self, ChatError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_template_owned(TEMPLATE_NAME, source.into())
            .map_err(ChatError::Compile)?;
        Ok(Self {
            env,
            bos_token: bos_token.into(),
            eos_token: eos_token.into(),
        })
    }

    /// The prompt text for `messages`; with `add_generation_prompt`, followed by the header that
    /// opens the assistant's reply.
    pub fn render(
        &self,
        messages: &[ChatTurn],
        add_generation_prompt: bool,
    ) -> Result<String, ChatError> {
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(ChatError::Render)?;
        template
            .render(context! {
                messages => messages,
                add_generation_prompt => add_generation_prompt,
                bos_token => &self.bos_token,
                eos_token => &self.eos_token,
            })
            .map_err(|e| match raised_message(&e) {
                Some(message) => ChatError::Raised(message),
                None => ChatError::Render(e),
            })
    }
}

/// The message of a `raise_exception` call, wherever in the error chain it is.
fn raised_message(error: &minijinja::Error) -> Option<String> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        if let Some(mj) = e.downcast_ref::<minijinja::Error>()
            && let Some(detail) = mj.detail()
            && let Some(message) = detail.strip_prefix(RAISED_MARKER)
        {
            return Some(message.to_string());
        }
        current = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raise_exception_becomes_a_typed_error() {
        let template = ChatTemplate::new(
            "{% if messages[0]['role'] != 'user' %}{{ raise_exception('first message must be from the user') }}{% endif %}ok",
            "",
            "",
        )
        .unwrap();
        assert_eq!(
            template.render(&[ChatTurn::user("hi")], false).unwrap(),
            "ok"
        );
        match template.render(&[ChatTurn::assistant("hi")], false) {
            Err(ChatError::Raised(message)) => {
                assert_eq!(message, "first message must be from the user")
            }
            other => panic!("expected Raised, got {other:?}"),
        }
    }

    #[test]
    fn python_methods_and_block_trimming_work() {
        let template = ChatTemplate::new(
            "{% for m in messages %}\n  {{ m['content'].strip() | upper }}{{ eos_token }}\n{% endfor %}",
            "<s>",
            "</s>",
        )
        .unwrap();
        assert_eq!(
            template
                .render(&[ChatTurn::user("  a "), ChatTurn::assistant("b\n")], false)
                .unwrap(),
            "  A</s>\n  B</s>\n"
        );
    }

    #[test]
    fn tokenizer_config_templates_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer_config.json");
        std::fs::write(
            &path,
            r#"{"bos_token": "<s>", "eos_token": {"content": "</s>", "special": true},
                "chat_template": [{"name": "tool_use", "template": "no"},
                                  {"name": "default", "template": "{{ bos_token }}{% for m in messages %}{{ m.content }}{{ eos_token }}{% endfor %}"}]}"#,
        )
        .unwrap();
        let template = ChatTemplate::from_tokenizer_config(&path).unwrap();
        assert_eq!(
            template.render(&[ChatTurn::user("hi")], true).unwrap(),
            "<s>hi</s>"
        );
        std::fs::write(&path, r#"{"eos_token": "</s>"}"#).unwrap();
        assert!(matches!(
            ChatTemplate::from_tokenizer_config(&path),
            Err(ChatError::NoTemplate)
        ));
        std::fs::write(&path, "not json").unwrap();
        let err = ChatTemplate::from_tokenizer_config(&path).unwrap_err();
        assert!(err.to_string().contains("tokenizer_config.json"), "{err}");
    }

    #[test]
    fn syntax_errors_are_reported_at_compile_time() {
        assert!(matches!(
            ChatTemplate::new("{% for m in messages %}", "", ""),
            Err(ChatError::Compile(_))
        ));
    }
}
