//! [`Draft`]: a problem on its way through rating, skeleton and tests.

use serde::{Deserialize, Serialize};
use ucoder_operators::{GeneratedProblem, Rating, Skeleton};

use crate::prompts::parse::FunctionSignature;

/// A problem on its way through rating, skeleton and tests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Draft {
    /// Index of the problem request that produced it.
    pub request: u64,
    pub problem: GeneratedProblem,
    pub rating: Option<Rating>,
    pub skeleton: Option<Skeleton>,
}

impl Draft {
    /// The problem statement as later stages show it to the model.
    pub fn statement(&self) -> String {
        let p = &self.problem;
        format!(
            "Title: {}\nDescription: {}\nFunction Signature: {}\nExample: {}\nHint: {}",
            p.title, p.description, p.signature, p.example, p.hint
        )
    }

    /// The parsed signature (it parsed when the problem was accepted).
    pub fn signature(&self) -> FunctionSignature {
        FunctionSignature::parse(&self.problem.signature)
            .expect("a draft's signature parsed when the problem was accepted")
    }

    /// The skeleton's code (empty before the skeleton stage).
    pub fn skeleton_code(&self) -> &str {
        self.skeleton.as_ref().map_or("", |s| s.code.as_str())
    }

    /// The skeleton's function name (empty before the skeleton stage).
    pub fn function_name(&self) -> &str {
        self.skeleton
            .as_ref()
            .map_or("", |s| s.function_name.as_str())
    }
}
