//! The model's own chat template, `tokenizer.chat_template`, rendered with minijinja.
//!
//! A chat model is trained on conversations laid out by one specific Jinja template, which its
//! GGUF file carries; prompts must be laid out the same way, so the template is rendered as is
//! rather than re-implemented. The environment matches the one Hugging Face `transformers` and
//! llama-cpp-python render chat templates in: `trim_blocks` and `lstrip_blocks` on, Python string
//! and dict methods (`.strip()`, `.items()`, ... via minijinja-contrib's pycompat), the variables
//! `messages`, `add_generation_prompt`, `bos_token` and `eos_token`, and a `raise_exception(msg)`
//! function whose message becomes [`ChatError::Raised`].

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
pub struct ChatMessage {
    /// `system`, `user` or `assistant` (templates may accept others, e.g. `tool`).
    pub role: String,
    pub content: String,
}

impl ChatMessage {
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
        "the model has no chat template (`tokenizer.chat_template` is missing from its GGUF metadata); use a chat/instruct model or pass a raw prompt"
    )]
    NoTemplate,
    #[error("chat template: {0}")]
    Metadata(#[from] MetadataError),
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
        messages: &[ChatMessage],
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
            template.render(&[ChatMessage::user("hi")], false).unwrap(),
            "ok"
        );
        match template.render(&[ChatMessage::assistant("hi")], false) {
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
                .render(
                    &[ChatMessage::user("  a "), ChatMessage::assistant("b\n")],
                    false
                )
                .unwrap(),
            "  A</s>\n  B</s>\n"
        );
    }

    #[test]
    fn syntax_errors_are_reported_at_compile_time() {
        assert!(matches!(
            ChatTemplate::new("{% for m in messages %}", "", ""),
            Err(ChatError::Compile(_))
        ));
    }
}
