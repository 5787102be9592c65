//! The five stages that ask the model: their checkpoint folders, the paper's operator names and
//! the tagged answer formats (the opening tag the answer is primed with and the closing tag).

use ucoder_operators::{Completion, FinishReason, RecordStage};

/// The LLM stages, in graph order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LlmStage {
    Problems,
    Ratings,
    Skeletons,
    Tests,
    Candidates,
}

impl LlmStage {
    pub const ALL: [LlmStage; 5] = [
        LlmStage::Problems,
        LlmStage::Ratings,
        LlmStage::Skeletons,
        LlmStage::Tests,
        LlmStage::Candidates,
    ];

    /// The checkpoint folder's name under `iter-<t>/`.
    pub fn dir_name(self) -> &'static str {
        match self {
            LlmStage::Problems => "problems",
            LlmStage::Ratings => "ratings",
            LlmStage::Skeletons => "skeletons",
            LlmStage::Tests => "tests",
            LlmStage::Candidates => "candidates",
        }
    }

    /// The paper's name of the stage's operator.
    pub fn operator_name(self) -> &'static str {
        match self {
            LlmStage::Problems => "ProblemGenerator",
            LlmStage::Ratings => "Rater",
            LlmStage::Skeletons => "SkeletonWriter",
            LlmStage::Tests => "TestGenerator",
            LlmStage::Candidates => "SolutionSampler",
        }
    }

    /// The start of the answer the model is asked to continue: the stage's opening tag, so the
    /// answer is in the tagged format from its first token. Judges parse `prefill + completion`.
    pub fn prefill(self) -> &'static str {
        match self {
            LlmStage::Problems => "<PROBLEM_START>\nTitle:",
            LlmStage::Ratings => "<RATING_START>\nProblem Quality Score:",
            LlmStage::Skeletons => "<SKELETON_START>\n```python\n",
            LlmStage::Tests => "<TESTS_START>\n",
            LlmStage::Candidates => "",
        }
    }

    /// The tag that closes the stage's answer block.
    fn closing_tag(self) -> Option<&'static str> {
        match self {
            LlmStage::Problems => Some("<PROBLEM_END>"),
            LlmStage::Ratings => Some("<RATING_END>"),
            LlmStage::Skeletons => Some("<SKELETON_END>"),
            LlmStage::Tests => Some("<TESTS_END>"),
            LlmStage::Candidates => None,
        }
    }

    /// The full answer: the prefill followed by what the model wrote. A model that ended its
    /// turn inside the block (end-of-turn token, not the token limit) has finished its answer,
    /// so the block is closed where the turn ended; the fields are then parsed as strictly as
    /// ever. An answer cut by the token limit stays unclosed and is rejected.
    pub fn answer(self, completion: &Completion) -> String {
        let mut text = format!("{}{}", self.prefill(), completion.text);
        if let Some(close) = self.closing_tag()
            && completion.finish == FinishReason::Stop
            && !text.contains(close)
        {
            text.push('\n');
            text.push_str(close);
        }
        text
    }

    /// The record stage its rejections are filed under.
    pub fn record_stage(self) -> RecordStage {
        match self {
            LlmStage::Problems => RecordStage::Problem,
            LlmStage::Ratings => RecordStage::Rating,
            LlmStage::Skeletons => RecordStage::Skeleton,
            LlmStage::Tests => RecordStage::Test,
            LlmStage::Candidates => RecordStage::Candidate,
        }
    }
}
