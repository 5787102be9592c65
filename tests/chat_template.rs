//! The registry models' own chat templates, read from their GGUF files and rendered with
//! minijinja, produce exactly the prompts the reference renderer produces. The expected strings
//! were rendered once with llama-cpp-python's `Jinja2ChatFormatter` (Python Jinja2, the
//! environment Hugging Face uses) from the same templates, and agree with both models'
//! documented ChatML layout.

use ucoder_flow::llm::chat::{ChatError, ChatTemplate, ChatTurn};
use ucoder_flow::llm::gguf::GgufModel;
use ucoder_flow::models::{self, DEFAULT_MODEL, TEST_MODEL};

fn gguf(model: &str) -> GgufModel {
    let source = models::resolve(
        model,
        &ucoder_flow::fetch::cache_dir(),
        &ucoder_flow::progress::Notes(|line: &str| eprintln!("[models] {line}")),
    )
    .expect("model");
    GgufModel::open(source.path()).expect("open GGUF")
}

fn template(model: &str) -> ChatTemplate {
    ChatTemplate::from_gguf(gguf(model).content()).expect("chat template")
}

fn one_turn() -> Vec<ChatTurn> {
    vec![ChatTurn::user("Write a function that adds two numbers.")]
}

fn multi_turn() -> Vec<ChatTurn> {
    vec![
        ChatTurn::system("You are a coding assistant."),
        ChatTurn::user("Hi"),
        ChatTurn::assistant("Hello! How can I help?"),
        ChatTurn::user("Sort a list."),
    ]
}

fn finished() -> Vec<ChatTurn> {
    vec![ChatTurn::user("x"), ChatTurn::assistant("y")]
}

#[test]
fn smollm_template_renders_like_the_reference() {
    let t = template(TEST_MODEL);
    assert_eq!(
        t.render(&one_turn(), true).unwrap(),
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nWrite a function that adds two numbers.<|im_end|>\n<|im_start|>assistant\n"
    );
    assert_eq!(
        t.render(&multi_turn(), true).unwrap(),
        "<|im_start|>system\nYou are a coding assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello! How can I help?<|im_end|>\n<|im_start|>user\nSort a list.<|im_end|>\n<|im_start|>assistant\n"
    );
    assert_eq!(
        t.render(&finished(), false).unwrap(),
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nx<|im_end|>\n<|im_start|>assistant\ny<|im_end|>\n"
    );
}

#[test]
fn qwen_template_renders_like_the_reference() {
    let t = template(DEFAULT_MODEL);
    assert_eq!(
        t.render(&one_turn(), true).unwrap(),
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n<|im_start|>user\nWrite a function that adds two numbers.<|im_end|>\n<|im_start|>assistant\n"
    );
    assert_eq!(
        t.render(&multi_turn(), true).unwrap(),
        "<|im_start|>system\nYou are a coding assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello! How can I help?<|im_end|>\n<|im_start|>user\nSort a list.<|im_end|>\n<|im_start|>assistant\n"
    );
    assert_eq!(
        t.render(&finished(), false).unwrap(),
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n<|im_start|>user\nx<|im_end|>\n<|im_start|>assistant\ny<|im_end|>\n"
    );
    // Consecutive tool results are merged into one user turn (loop.index0, look-behind/ahead).
    let tools = vec![
        ChatTurn::user("Run the tests."),
        ChatTurn::assistant("Running."),
        ChatTurn::new("tool", "3 passed"),
        ChatTurn::new("tool", "0 failed"),
    ];
    assert_eq!(
        t.render(&tools, true).unwrap(),
        "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n<|im_start|>user\nRun the tests.<|im_end|>\n<|im_start|>assistant\nRunning.<|im_end|>\n<|im_start|>user\n<tool_response>\n3 passed\n</tool_response>\n<tool_response>\n0 failed\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
    );
}

#[test]
fn gguf_without_a_template_is_a_clear_error() {
    let mut content = gguf(TEST_MODEL).into_content();
    content.metadata.remove("tokenizer.chat_template");
    let err = ChatTemplate::from_gguf(&content).unwrap_err();
    assert!(matches!(err, ChatError::NoTemplate), "{err:?}");
    assert!(err.to_string().contains("tokenizer.chat_template"), "{err}");
}
