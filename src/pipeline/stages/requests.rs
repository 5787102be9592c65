//! How every LLM stage builds its requests: the settings read from the pipeline file, seeds
//! derived from (run seed, stage, request key), keys of indexed requests (test batches,
//! sampling rounds), and the chat turns (the user prompt, then the stage's prefill).

use std::sync::Arc;

use ucoder_operators::stable_hash::StableHasher;
use ucoder_operators::{ChatMessage, GenerationRequest, ProblemId, Prompt, Role, SamplingParams};

use super::LlmStage;
use crate::config::PipelineConfig;
use crate::prompts::PromptSet;

/// A seed for the request `key` of `stage` in a run seeded with `run_seed`.
pub fn request_seed(run_seed: u64, stage: LlmStage, key: u64) -> u64 {
    let mut h = StableHasher::with_domain("request-seed");
    h.write_u64(run_seed)
        .write_str(stage.dir_name())
        .write_u64(key);
    h.finish()
}

/// The key of request `index` of `problem` (test batches, sampling rounds).
pub fn indexed_key(problem: ProblemId, index: u64) -> u64 {
    let mut h = StableHasher::with_domain("request-key");
    h.write_u64(problem.0).write_u64(index);
    h.finish()
}

/// The settings the stages read from the pipeline file.
#[derive(Debug, Clone)]
pub struct StageSettings {
    pub seed: u64,
    pub max_tokens: u32,
    pub problem_temperature: f32,
    pub min_score: f64,
    pub tests_per_problem: usize,
    pub test_batch: usize,
    pub test_temperature: f32,
    pub samples: usize,
    pub round: usize,
    pub sample_temperature: f32,
    pub top_p: f32,
}

impl StageSettings {
    pub fn from_config(config: &PipelineConfig) -> Self {
        StageSettings {
            seed: config.seed,
            max_tokens: config.model.max_tokens as u32,
            problem_temperature: config.problems.temperature as f32,
            min_score: config.rating.min_score,
            tests_per_problem: config.tests.per_problem,
            test_batch: config.tests.batch,
            test_temperature: config.tests.temperature as f32,
            samples: config.sampling.n,
            round: config.sampling.round,
            sample_temperature: config.sampling.temperature as f32,
            top_p: config.sampling.top_p as f32,
        }
    }

    /// Sampling rounds per problem.
    pub fn rounds(&self) -> u64 {
        self.samples.div_ceil(self.round) as u64
    }

    /// Test-generation requests per problem.
    pub fn test_batches(&self) -> u64 {
        self.tests_per_problem.div_ceil(self.test_batch) as u64
    }

    /// The request `key` of `stage`: `prompt` as the user turn, the stage's prefill as the start
    /// of the answer, `n` samples at `temperature`.
    pub fn request(
        &self,
        stage: LlmStage,
        key: u64,
        prompt: String,
        n: u32,
        temperature: f32,
    ) -> GenerationRequest {
        let mut messages = vec![ChatMessage {
            role: Role::User,
            content: prompt,
        }];
        if !stage.prefill().is_empty() {
            messages.push(ChatMessage {
                role: Role::Assistant,
                content: stage.prefill().to_string(),
            });
        }
        GenerationRequest {
            prompt: Prompt::Chat(messages),
            n,
            params: SamplingParams {
                max_tokens: self.max_tokens,
                temperature,
                top_p: if stage == LlmStage::Candidates {
                    self.top_p
                } else {
                    1.0
                },
                top_k: 0,
                seed: request_seed(self.seed, stage, key),
                stop: Vec::new(),
            },
        }
    }
}

/// What the model is told for each stage: the prompt templates and the settings.
pub struct StagePrompts {
    pub prompts: Arc<PromptSet>,
    pub settings: StageSettings,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_and_keys_are_stable_and_distinct() {
        let p = ProblemId(9);
        assert_eq!(indexed_key(p, 1), indexed_key(p, 1));
        assert_ne!(indexed_key(p, 1), indexed_key(p, 2));
        assert_ne!(
            request_seed(1, LlmStage::Tests, 5),
            request_seed(1, LlmStage::Candidates, 5)
        );
        assert_ne!(
            request_seed(1, LlmStage::Tests, 5),
            request_seed(2, LlmStage::Tests, 5)
        );
    }
}
