//! The in-process candle engine behind [`Generate`]: [`CandleGenerator`] turns
//! [`GenerationRequest`]s into engine requests (a chat through the model's template, text as it
//! is) and the engine's samples into [`Completion`]s. [`render`] is the one place where a
//! [`Prompt`] becomes the text the model continues.
//!
//! One engine may serve several consumers: each holds its own generator over the shared engine
//! (which serves one batch at a time) and its own [`StageClock`], so the time spent for each is
//! measured where it is spent.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use ucoder_operators::{
    BackendError, Completion, FinishReason, Generate, Generation, GenerationRequest,
    LogprobSummary, Prompt, Role,
};

use super::StageClock;
use crate::llm::{self, ChatTurn, Engine, ModelText};

/// One consumer's view of a shared engine.
pub struct CandleGenerator {
    engine: Arc<Mutex<Engine>>,
    clock: Arc<StageClock>,
}

impl CandleGenerator {
    pub fn new(engine: Arc<Mutex<Engine>>, clock: Arc<StageClock>) -> Self {
        CandleGenerator { engine, clock }
    }
}

fn backend_error(message: impl ToString) -> BackendError {
    BackendError {
        backend: "candle".into(),
        message: message.to_string(),
    }
}

/// The text `engine` continues for `prompt` ([`render_with`] its tokenizer and template).
pub fn render(engine: &Engine, prompt: &Prompt) -> Result<String, BackendError> {
    render_with(engine.text(), prompt)
}

/// The text a model continues for `prompt`: a chat rendered with the model's template (a final
/// assistant message is a prefill, appended after the generation prompt so the model continues
/// it; the judges put it back in front of the completion), text as it is. Every backend renders
/// through this one function.
pub fn render_with(text: &ModelText, prompt: &Prompt) -> Result<String, BackendError> {
    let messages = match prompt {
        Prompt::Text(text) => return Ok(text.clone()),
        Prompt::Chat(messages) => messages,
    };
    let (turns, prefill) = match messages.split_last() {
        Some((last, rest)) if last.role == Role::Assistant => (rest, last.content.as_str()),
        _ => (messages.as_slice(), ""),
    };
    let turns: Vec<ChatTurn> = turns
        .iter()
        .map(|m| {
            let role = match m.role {
                Role::System => "system",
                Role::User => "user",
                Role::Assistant => "assistant",
            };
            ChatTurn::new(role, m.content.as_str())
        })
        .collect();
    let mut rendered = text.chat_prompt(&turns).map_err(backend_error)?;
    rendered.push_str(prefill);
    Ok(rendered)
}

fn to_engine_request(
    engine: &Engine,
    request: &GenerationRequest,
) -> Result<llm::SampleRequest, BackendError> {
    Ok(llm::SampleRequest {
        prompt: render(engine, &request.prompt)?,
        n: request.n as usize,
        params: llm::SamplerSettings {
            temperature: request.params.temperature,
            top_p: request.params.top_p,
            top_k: request.params.top_k as usize,
            max_tokens: request.params.max_tokens as usize,
            stop: request.params.stop.clone(),
            seed: request.params.seed,
            ignore_eos: false,
        },
    })
}

fn from_engine_completion(completion: llm::Sample) -> Completion {
    let logprobs: LogprobSummary = completion.logprobs.iter().map(|&l| f64::from(l)).collect();
    Completion {
        text: completion.text,
        logprobs,
        finish: match completion.finish_reason {
            llm::SampleEnd::Length => FinishReason::Length,
            llm::SampleEnd::Stop | llm::SampleEnd::Eos => FinishReason::Stop,
        },
    }
}

/// The completions of one engine request, with their token count.
fn completions(samples: Vec<llm::Sample>, tokens: &mut u64) -> Vec<Completion> {
    *tokens += samples
        .iter()
        .map(|c| c.token_ids.len() as u64)
        .sum::<u64>();
    samples.into_iter().map(from_engine_completion).collect()
}

impl Generate for CandleGenerator {
    fn generate(&mut self, requests: &[GenerationRequest]) -> Vec<Generation> {
        let mut engine = self.engine.lock().unwrap_or_else(|p| p.into_inner());
        let started = Instant::now();
        // Requests that cannot even be rendered fail alone; the rest go as one batch.
        let mut out: Vec<Option<Generation>> = vec![None; requests.len()];
        let mut batch = Vec::new();
        let mut positions = Vec::new();
        for (i, request) in requests.iter().enumerate() {
            match to_engine_request(&engine, request) {
                Ok(r) => {
                    batch.push(r);
                    positions.push(i);
                }
                Err(e) => out[i] = Some(Err(e)),
            }
        }
        let mut tokens = 0u64;
        match engine.generate_batch(&batch) {
            Ok(results) => {
                for (i, samples) in positions.into_iter().zip(results) {
                    out[i] = Some(Ok(completions(samples, &mut tokens)));
                }
            }
            Err(e) => {
                // One bad request (e.g. a prompt longer than the context) fails the batch call;
                // serve the requests one by one so only that one fails.
                for (i, request) in positions.into_iter().zip(batch) {
                    out[i] = Some(
                        engine
                            .generate_batch(std::slice::from_ref(&request))
                            .map(|mut r| completions(r.pop().unwrap_or_default(), &mut tokens))
                            .map_err(|single| {
                                backend_error(format!("{single} (batch failed with: {e})"))
                            }),
                    );
                }
            }
        }
        self.clock.record(started, requests.len(), tokens);
        out.into_iter()
            .map(|g| g.expect("every request answered"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_samples_become_completions() {
        let sample = llm::Sample {
            text: "x".into(),
            token_ids: vec![1, 2],
            logprobs: vec![-0.5, -0.25],
            finish_reason: llm::SampleEnd::Eos,
        };
        let mut tokens = 1;
        let out = completions(vec![sample.clone(), sample], &mut tokens);
        assert_eq!(tokens, 5);
        assert_eq!(out[0].logprobs.tokens, 2);
        assert_eq!(out[0].logprobs.sum_logprob, -0.75);
        assert_eq!(out[1].finish, FinishReason::Stop);
    }
}
