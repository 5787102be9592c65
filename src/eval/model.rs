//! The model side of an eval, on top of the shared [`Generate`] backend: an [`EvalModel`] is a
//! generator plus how a problem's prompt becomes the exact text the model continues (the eval
//! keeps that text with every sample, and dumps it for other engines). The in-process engine
//! renders chats with the model's template ([`crate::backends::candle::render`]); completions
//! recorded by another engine come with their prompts already rendered.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use ucoder_operators::{
    BackendError, ChatMessage, Generate, Generation, GenerationRequest, Prompt, Role,
};

use super::EvalError;
use super::config::EvalConfig;
use super::prompt::PromptSpec;
use crate::backends::{
    CandleGenerator, OpenAiGenerator, OpenAiServer, RecordedCompletions, StageClock, candle,
};
use crate::config::ServerConfig;
use crate::llm::{Engine, EngineOptions, ModelText};
use crate::models::ModelSource;

/// Renders a problem's prompt (by problem id and what is to be said) to the model's text.
type Render = Box<dyn Fn(&str, &PromptSpec) -> Result<String, BackendError>>;

/// A [`Generate`] backend and how prompts are rendered for it.
pub struct EvalModel {
    label: String,
    render: Render,
    generator: Box<dyn Generate>,
}

impl EvalModel {
    /// `generator`, named `label`, with prompts rendered by `render`.
    pub fn new(
        label: String,
        render: impl Fn(&str, &PromptSpec) -> Result<String, BackendError> + 'static,
        generator: impl Generate,
    ) -> Self {
        EvalModel {
            label,
            render: Box::new(render),
            generator: Box::new(generator),
        }
    }

    /// Loads `model` into the in-process engine (engine threads: `[model] threads`, or cores −
    /// sandbox workers).
    pub fn engine(model: &ModelSource, config: &EvalConfig) -> Result<Self, EvalError> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let opts = EngineOptions {
            threads: Some(
                config
                    .model
                    .threads
                    .unwrap_or_else(|| cores.saturating_sub(config.sandbox.workers).max(1)),
            ),
            ..Default::default()
        };
        let engine = Engine::load(model, &opts).map_err(|e| EvalError::Backend {
            what: format!("loading {}", model.path().display()),
            source: e.into(),
        })?;
        let engine = Arc::new(Mutex::new(engine));
        let clock = Arc::new(StageClock::new(Instant::now()));
        let generator = CandleGenerator::new(Arc::clone(&engine), clock);
        let render = move |_: &str, spec: &PromptSpec| {
            let engine = engine.lock().unwrap_or_else(|p| p.into_inner());
            candle::render(&engine, &prompt(spec))
        };
        let label = format!("ucoder-flow candle engine, {}", model.path().display());
        Ok(EvalModel::new(label, render, generator))
    }

    /// An OpenAI-compatible server (`[model.server]`); prompts rendered with `model`'s own
    /// tokenizer and chat template (no weights are loaded). Returns what the server lacks too.
    pub fn server(
        model: &ModelSource,
        server: &ServerConfig,
    ) -> Result<(Self, Vec<String>), EvalError> {
        let text = Arc::new(ModelText::load(model).map_err(|e| EvalError::Backend {
            what: format!("loading {}", model.path().display()),
            source: e.into(),
        })?);
        let connected =
            OpenAiServer::connect(server.settings()).map_err(|e| EvalError::Backend {
                what: "connecting to the model server".into(),
                source: e.into(),
            })?;
        let label = format!(
            "OpenAI-compatible server {} serving {}, prompts rendered with {}",
            server.base_url,
            connected.model(),
            model.path().display()
        );
        let notes = connected.notes();
        let clock = Arc::new(StageClock::new(Instant::now()));
        let generator = OpenAiGenerator::new(connected, Arc::clone(&text), clock);
        let render = move |_: &str, spec: &PromptSpec| candle::render_with(&text, &prompt(spec));
        Ok((EvalModel::new(label, render, generator), notes))
    }

    /// Completions recorded by another engine, for the prompts they were recorded with.
    pub fn recorded(recorded: RecordedCompletions) -> Self {
        let label = recorded.describe();
        let prompts = recorded.clone();
        let render = move |id: &str, spec: &PromptSpec| {
            let plain = match spec {
                PromptSpec::Completion(text) => Some(text.as_str()),
                PromptSpec::ChatUser(_) => None,
            };
            prompts
                .prompt(id, plain)
                .map(str::to_string)
                .map_err(|e| BackendError {
                    backend: "recorded".into(),
                    message: e.to_string(),
                })
        };
        EvalModel::new(label, render, recorded)
    }

    /// The same model and prompts, generated by `generator` (e.g. a wrapper that observes the
    /// requests).
    pub fn with_generator(self, generator: impl Generate) -> Self {
        EvalModel {
            generator: Box::new(generator),
            ..self
        }
    }

    /// One line naming the backend and model (kept in the manifest; a resumed run must match).
    pub fn describe(&self) -> &str {
        &self.label
    }

    /// The text the model sees for `spec` (the prompt of problem `problem_id`).
    pub fn render(&self, problem_id: &str, spec: &PromptSpec) -> Result<String, BackendError> {
        (self.render)(problem_id, spec)
    }

    /// Serves several requests together (the engine batches them).
    pub fn generate_all(&mut self, requests: &[GenerationRequest]) -> Vec<Generation> {
        let mut answers = self.generator.generate(requests);
        answers.resize_with(requests.len(), || {
            Err(BackendError {
                backend: self.label.clone(),
                message: "no answer to the request".into(),
            })
        });
        answers
    }

    /// Serves one request.
    pub fn generate(&mut self, request: GenerationRequest) -> Generation {
        self.generate_all(std::slice::from_ref(&request))
            .into_iter()
            .next()
            .expect("generate_all answers every request")
    }
}

/// What `spec` asks of a backend that renders prompts itself.
fn prompt(spec: &PromptSpec) -> Prompt {
    match spec {
        PromptSpec::ChatUser(text) => Prompt::Chat(vec![ChatMessage {
            role: Role::User,
            content: text.clone(),
        }]),
        PromptSpec::Completion(text) => Prompt::Text(text.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_prompts_are_one_user_turn_and_completions_plain_text() {
        assert_eq!(
            prompt(&PromptSpec::ChatUser("hi".into())),
            Prompt::Chat(vec![ChatMessage {
                role: Role::User,
                content: "hi".into()
            }])
        );
        assert_eq!(
            prompt(&PromptSpec::Completion("def f():\n".into())),
            Prompt::Text("def f():\n".into())
        );
    }
}
