//! What each IPC stage asks the model and how it judges the answer: request builders with
//! seeds derived from (run seed, stage, record id), and judges that turn completions into
//! records or [`Rejection`]s. Pure functions of their inputs, so a resumed run that replays
//! committed completions reaches exactly the records the first run reached.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use ucoder_operators::stable_hash::StableHasher;
use ucoder_operators::{
    Candidate, Category, ChatMessage, Completion, FinishReason, GenerationRequest, LogprobSummary,
    Problem, ProblemId, Rating, RejectReason, Rejection, Role, SamplingParams, Skeleton, Stage,
    TestCase, TestKind,
};

use super::artifacts::{ResponseRow, finish_label};
use crate::config::PipelineConfig;
use crate::eval::extract::{Extraction, extract};
use crate::eval::prompt::PromptStyle;
use crate::prompts::parse::{
    self, FunctionSignature, ParsedTests, parse_problem, parse_rating, parse_skeleton,
};
use crate::prompts::{PromptError, PromptSet};

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

    fn record_stage(self) -> Stage {
        match self {
            LlmStage::Problems => Stage::Problem,
            LlmStage::Ratings => Stage::Rating,
            LlmStage::Skeletons => Stage::Skeleton,
            LlmStage::Tests => Stage::Test,
            LlmStage::Candidates => Stage::Candidate,
        }
    }
}

/// A problem on its way through rating, skeleton and tests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Draft {
    /// Index of the problem request that produced it.
    pub request: u64,
    pub problem: Problem,
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
}

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
    pub min_score: f32,
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
            problem_temperature: config.problems.temperature,
            min_score: config.rating.min_score,
            tests_per_problem: config.tests.per_problem,
            test_batch: config.tests.batch,
            test_temperature: config.tests.temperature,
            samples: config.sampling.n,
            round: config.sampling.round,
            sample_temperature: config.sampling.temperature,
            top_p: config.sampling.top_p,
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

    fn request(
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
            messages,
            n,
            params: SamplingParams {
                max_tokens: self.max_tokens,
                temperature,
                top_p: if stage == LlmStage::Candidates {
                    self.top_p
                } else {
                    1.0
                },
                seed: request_seed(self.seed, stage, key),
                stop: Vec::new(),
            },
        }
    }
}

/// What the model is told for each stage.
pub struct StagePrompts {
    pub prompts: std::sync::Arc<PromptSet>,
    pub settings: StageSettings,
}

/// What later test batches focus on, in turn.
const TEST_FOCI: [&str; 5] = [
    "typical inputs",
    "boundary values and edge cases (empty inputs, single elements, extremes)",
    "unusual but valid inputs (duplicates, negative numbers, unsorted data, special characters)",
    "larger inputs that exercise the algorithm",
    "tricky cases where a plausible but wrong solution would fail",
];

impl StagePrompts {
    /// Problem request `index`: its category (the paper's five task types in turn) and request.
    pub fn problem(&self, index: u64) -> Result<(Category, GenerationRequest), PromptError> {
        let category = Category::ALL[(index % Category::ALL.len() as u64) as usize];
        let seed = request_seed(self.settings.seed, LlmStage::Problems, index);
        let prompt = self.prompts.problem(category, seed % 1_000_000)?;
        let request = self.settings.request(
            LlmStage::Problems,
            index,
            prompt,
            1,
            self.settings.problem_temperature,
        );
        Ok((category, request))
    }

    pub fn rating(&self, draft: &Draft) -> Result<GenerationRequest, PromptError> {
        let prompt = self.prompts.rating(&draft.statement())?;
        Ok(self
            .settings
            .request(LlmStage::Ratings, draft.problem.id.0, prompt, 1, 0.0))
    }

    pub fn skeleton(&self, draft: &Draft) -> Result<GenerationRequest, PromptError> {
        let prompt = self
            .prompts
            .skeleton(&draft.statement(), &draft.problem.signature)?;
        Ok(self
            .settings
            .request(LlmStage::Skeletons, draft.problem.id.0, prompt, 1, 0.0))
    }

    /// Test batch `batch` of `draft`: its key and request.
    pub fn tests(
        &self,
        draft: &Draft,
        batch: u64,
    ) -> Result<(u64, GenerationRequest), PromptError> {
        let s = &self.settings;
        let count = (s.tests_per_problem - batch as usize * s.test_batch).min(s.test_batch);
        let focus = TEST_FOCI[(batch % TEST_FOCI.len() as u64) as usize];
        let function = draft
            .skeleton
            .as_ref()
            .map_or("", |k| k.function_name.as_str());
        let prompt = self.prompts.tests(
            &draft.statement(),
            draft.skeleton_code(),
            function,
            count,
            focus,
        )?;
        let key = indexed_key(draft.problem.id, batch);
        Ok((key, {
            // About 40 tokens a test line: a batch that asked for `count` tests has no use for
            // more (models tend to go on repeating themselves until the limit).
            let mut r = s.request(LlmStage::Tests, key, prompt, 1, s.test_temperature);
            r.params.max_tokens = r.params.max_tokens.min(40 * count as u32 + 40);
            r
        }))
    }

    /// The user turn of the solution prompt (also the SFT prompt).
    pub fn solution_prompt(&self, draft: &Draft) -> Result<String, PromptError> {
        self.prompts
            .solution(&draft.statement(), draft.skeleton_code())
    }

    /// Sampling round `round` (0-based) of `draft`, whose solution prompt (rendered once per
    /// problem by [`StagePrompts::solution_prompt`]) is `prompt`: its key and request.
    pub fn solutions(&self, draft: &Draft, prompt: &str, round: u64) -> (u64, GenerationRequest) {
        let s = &self.settings;
        let n = (s.samples - round as usize * s.round).min(s.round) as u32;
        let key = indexed_key(draft.problem.id, round);
        let request = s.request(
            LlmStage::Candidates,
            key,
            prompt.to_string(),
            n,
            s.sample_temperature,
        );
        (key, request)
    }
}

/// The checkpoint row of `completion` (sample `sample` of request `key`), judged `status`.
pub fn response_row(
    key: u64,
    problem_id: Option<ProblemId>,
    sample: u32,
    record_id: Option<u64>,
    completion: &Completion,
    status: Result<(), &Rejection>,
) -> ResponseRow {
    let (status, detail) = match status {
        Ok(()) => ("ok".to_string(), String::new()),
        Err(r) => (r.reason.as_str().to_string(), r.detail.clone()),
    };
    ResponseRow {
        key,
        problem_id: problem_id.map(|p| p.0),
        sample,
        record_id,
        text: completion.text.clone(),
        tokens: completion.logprobs.tokens,
        sum_logprob: completion.logprobs.sum_logprob,
        finish: finish_label(completion.finish).to_string(),
        status,
        detail,
    }
}

/// A rejection of `raw` at `stage`.
pub fn rejection(
    stage: LlmStage,
    problem_id: Option<ProblemId>,
    reason: RejectReason,
    detail: impl Into<String>,
    raw: &str,
) -> Rejection {
    Rejection {
        stage: stage.record_stage(),
        problem_id,
        reason,
        detail: detail.into(),
        raw: raw.to_string(),
    }
}

fn parse_rejection(
    stage: LlmStage,
    problem_id: Option<ProblemId>,
    r: parse::Rejection,
) -> Rejection {
    rejection(
        stage,
        problem_id,
        RejectReason::Unparseable,
        format!("{}: {}", r.reason.label(), r.reason),
        &r.raw,
    )
}

/// Judges a Problem Generator completion.
pub fn judge_problem(
    category: Category,
    seed: u64,
    completion: &Completion,
) -> Result<Problem, Rejection> {
    let parsed = parse_problem(&LlmStage::Problems.answer(completion))
        .map_err(|r| parse_rejection(LlmStage::Problems, None, r))?;
    let signature = parsed.signature.to_def();
    Ok(Problem {
        id: Problem::derive_id(&parsed.title, &parsed.description, &signature),
        category,
        seed,
        title: parsed.title,
        description: parsed.description,
        signature,
        example: parsed.example,
        hint: parsed.hint,
    })
}

/// Judges a Quality Oracle completion: the rating, or why the problem is dropped.
pub fn judge_rating(
    draft: &Draft,
    completion: &Completion,
    min_score: f32,
) -> Result<Rating, Rejection> {
    let id = Some(draft.problem.id);
    let answer = LlmStage::Ratings.answer(completion);
    let parsed = parse_rating(&answer).map_err(|r| parse_rejection(LlmStage::Ratings, id, r))?;
    if parsed.score < min_score {
        return Err(rejection(
            LlmStage::Ratings,
            id,
            RejectReason::LowQuality,
            format!("score {} below the minimum {min_score}", parsed.score),
            &answer,
        ));
    }
    Ok(Rating {
        problem_id: draft.problem.id,
        score: parsed.score,
        difficulty: parsed.difficulty.unwrap_or_default(),
        summary: parsed.summary,
    })
}

/// Judges an Interface Synthesizer completion (its Python is checked later, in the sandbox).
pub fn judge_skeleton(draft: &Draft, completion: &Completion) -> Result<Skeleton, Rejection> {
    let id = Some(draft.problem.id);
    let signature = draft.signature();
    let code =
        parse_skeleton(&LlmStage::Skeletons.answer(completion), &signature.name).map_err(|r| {
            let mut rejection = parse_rejection(LlmStage::Skeletons, id, r);
            if rejection.detail.starts_with("skeleton_missing_function") {
                rejection.reason = RejectReason::MissingFunction;
            }
            rejection
        })?;
    Ok(Skeleton {
        problem_id: draft.problem.id,
        function_name: signature.name.clone(),
        arity: signature.params.len() as u32,
        code: stub(&code, &signature.name),
    })
}

/// The interface part of a skeleton: what precedes `function` (imports, constants), its `def`
/// lines and docstring, and a `pass` body. Models often go on to solve the problem inside the
/// skeleton; the solution prompt shows the skeleton, so a body left in it would hand every
/// sample the same answer and fake a consensus.
pub fn stub(code: &str, function: &str) -> String {
    let lines: Vec<&str> = code.lines().collect();
    let is_def = |l: &&str| {
        l.trim_start().strip_prefix("def ").is_some_and(|rest| {
            rest.trim_start()
                .strip_prefix(function)
                .is_some_and(|r| r.trim_start().starts_with('('))
        })
    };
    let Some(start) = lines.iter().position(is_def) else {
        return code.to_string();
    };
    let def_indent = lines[start].len() - lines[start].trim_start().len();
    let Some(header_end) = (start..lines.len()).find(|&i| {
        let l = lines[i].split('#').next().unwrap_or("").trim_end();
        l.ends_with(':')
    }) else {
        return code.to_string();
    };
    let mut out: Vec<&str> = lines[..=header_end].to_vec();
    let first_body = (header_end + 1..lines.len()).find(|&i| !lines[i].trim().is_empty());
    let mut indent = " ".repeat(def_indent + 4);
    if let Some(i) = first_body {
        let line = lines[i];
        let own_indent = line.len() - line.trim_start().len();
        if own_indent > def_indent {
            indent = line[..own_indent].to_string();
            let body = line.trim_start();
            let quote = ["\"\"\"", "'''"]
                .into_iter()
                .find(|q| body.trim_start_matches(['r', 'R', 'u', 'U']).starts_with(q));
            if let Some(quote) = quote {
                let opened = body.find(quote).expect("starts with it") + quote.len();
                let end = if body[opened..].contains(quote) {
                    Some(i)
                } else {
                    (i + 1..lines.len()).find(|&j| lines[j].contains(quote))
                };
                if let Some(end) = end {
                    out.extend_from_slice(&lines[i..=end]);
                }
            }
        }
    }
    let mut stubbed = out.join("\n");
    stubbed.push('\n');
    stubbed.push_str(&indent);
    stubbed.push_str("pass\n");
    stubbed
}

/// Parses the test batches of one problem in batch order, de-duplicating across batches, and
/// keeps at most `limit` tests. Returns the tests and one judgement per batch.
pub fn judge_tests(
    draft: &Draft,
    batches: &[Completion],
    limit: usize,
) -> (Vec<TestCase>, Vec<Result<ParsedTests, Rejection>>) {
    let id = draft.problem.id;
    let signature = draft.signature();
    let mut seen = HashSet::new();
    let mut tests = Vec::new();
    let mut judged = Vec::new();
    for completion in batches {
        match parse_test_answer(completion, &signature, &mut seen) {
            Ok(parsed) => {
                for t in &parsed.tests {
                    if tests.len() < limit {
                        // `assert f(args) == expected` is a call test: the sandbox evaluates the
                        // call in the child and compares with `expected` outside it.
                        let kind = if t.call.is_some() {
                            TestKind::Call
                        } else {
                            TestKind::Assert
                        };
                        tests.push(TestCase::new(id, kind, t.source.clone()));
                    }
                }
                judged.push(Ok(parsed));
            }
            Err(r) => judged.push(Err(parse_rejection(LlmStage::Tests, Some(id), r))),
        }
    }
    (tests, judged)
}

/// Parses one test answer. An answer cut by the token limit keeps its complete lines: tests are
/// one line each, so everything before the last (cut) line is as trustworthy as a closed block;
/// the cut line is dropped.
fn parse_test_answer(
    completion: &Completion,
    signature: &FunctionSignature,
    seen: &mut HashSet<String>,
) -> Result<ParsedTests, parse::Rejection> {
    let answer = LlmStage::Tests.answer(completion);
    match parse::parse_tests(&answer, signature, seen) {
        Err(r)
            if completion.finish == FinishReason::Length
                && matches!(r.reason, parse::RejectReason::UnterminatedBlock(_)) =>
        {
            let complete = answer.rfind('\n').map_or("", |i| &answer[..i]);
            let mut parsed =
                parse::parse_tests(&format!("{complete}\n<TESTS_END>"), signature, seen)?;
            let cut = &answer[complete.len()..];
            parsed
                .dropped
                .push((cut.trim().to_string(), "cut at max_tokens".to_string()));
            Ok(parsed)
        }
        other => other,
    }
}

/// Judges a sampled solution: the candidate with its extracted program, or why there is none.
pub fn judge_candidate(
    draft: &Draft,
    sample_index: u32,
    round: u64,
    completion: &Completion,
) -> Result<Candidate, Rejection> {
    let id = draft.problem.id;
    let function = draft
        .skeleton
        .as_ref()
        .map_or(String::new(), |s| s.function_name.clone());
    match extract(
        draft.skeleton_code(),
        &function,
        &completion.text,
        PromptStyle::Chat,
    ) {
        Extraction::Program { program, .. } => Ok(Candidate {
            id: Candidate::derive_id(id, sample_index, &program),
            problem_id: id,
            sample_index,
            round,
            code: program,
            logprobs: LogprobSummary {
                tokens: completion.logprobs.tokens,
                sum_logprob: completion.logprobs.sum_logprob,
            },
        }),
        Extraction::Failed { reason } => Err(rejection(
            LlmStage::Candidates,
            Some(id),
            RejectReason::NoCode,
            reason,
            &completion.text,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn completion(text: &str) -> Completion {
        Completion {
            text: text.into(),
            logprobs: LogprobSummary {
                tokens: 3,
                sum_logprob: -1.5,
            },
            finish: FinishReason::Stop,
        }
    }

    fn draft() -> Draft {
        let raw = " Sum\nDescription: Add two numbers.\nFunction Signature: def add(a: int, b: int) -> int:\nExample: add(1, 2) -> 3\nHint: Use +.\n<PROBLEM_END>";
        let problem = judge_problem(Category::BasicAlgorithms, 5, &completion(raw)).unwrap();
        let skeleton = judge_skeleton(
            &Draft {
                request: 0,
                problem: problem.clone(),
                rating: None,
                skeleton: None,
            },
            &completion("import math\n\ndef add(a: int, b: int) -> int:\n    \"\"\"Adds.\n\n    Returns:\n        the sum\n    \"\"\"\n    total = a + b\n    return total\n\n\ndef helper():\n    return 1\n```\n<SKELETON_END>"),
        )
        .unwrap();
        Draft {
            request: 0,
            problem,
            rating: None,
            skeleton: Some(skeleton),
        }
    }

    #[test]
    fn judges_turn_well_formed_answers_into_records() {
        let d = draft();
        assert_eq!(d.problem.signature, "def add(a: int, b: int) -> int:");
        assert_eq!(d.signature().name, "add");
        assert_eq!(d.skeleton.as_ref().unwrap().arity, 2);
        assert_eq!(
            d.skeleton_code(),
            "import math\n\ndef add(a: int, b: int) -> int:\n    \"\"\"Adds.\n\n    Returns:\n        the sum\n    \"\"\"\n    pass\n",
            "the body and the helper after the function are cut"
        );
        assert_eq!(
            stub("def add(a, b):\n    return a + b\n", "add"),
            "def add(a, b):\n    pass\n"
        );
        assert_eq!(
            stub(
                "def add(\n    a,\n    b,\n):  # sum\n    '''One line.'''\n    return a\n",
                "add"
            ),
            "def add(\n    a,\n    b,\n):  # sum\n    '''One line.'''\n    pass\n"
        );
        let (tests, judged) = judge_tests(
            &d,
            &[
                completion("assert add(1, 2) == 3\nassert add(0, 0) == 0\n<TESTS_END>"),
                completion(
                    "assert add(1, 2) == 3\nassert add(-1, 1) == 0\nassert add(1) == 1\n<TESTS_END>",
                ),
                completion("no tests here"),
            ],
            10,
        );
        let codes: Vec<&str> = tests.iter().map(|t| t.code.as_str()).collect();
        assert_eq!(
            codes,
            [
                "assert add(1, 2) == 3",
                "assert add(0, 0) == 0",
                "assert add(-1, 1) == 0"
            ]
        );
        assert!(judged[0].is_ok() && judged[1].is_ok());
        let mut cut = completion("assert add(2, 2) == 4\nassert add(3, 3) == 6\nassert add(4,");
        cut.finish = FinishReason::Length;
        let (salvaged, cut_judged) = judge_tests(&d, &[cut.clone()], 10);
        assert_eq!(
            salvaged.len(),
            2,
            "the complete lines of a cut answer are kept"
        );
        assert_eq!(
            cut_judged[0].as_ref().unwrap().dropped,
            vec![("assert add(4,".to_string(), "cut at max_tokens".to_string())]
        );
        // A turn that ended inside the block closes it; the malformed last line is dropped.
        cut.finish = FinishReason::Stop;
        let (ended, ended_judged) = judge_tests(&d, &[cut], 10);
        assert_eq!(ended.len(), 2);
        let dropped = &ended_judged[0].as_ref().unwrap().dropped;
        assert_eq!(dropped.len(), 1);
        assert_ne!(dropped[0].1, "cut at max_tokens");
        assert_eq!(
            judged[2].as_ref().unwrap_err().reason,
            RejectReason::Unparseable
        );
        let candidate = judge_candidate(
            &d,
            3,
            1,
            &completion("```python\ndef add(a: int, b: int) -> int:\n    return a + b\n```"),
        )
        .unwrap();
        assert!(candidate.code.contains("return a + b"));
        assert_eq!(candidate.sample_index, 3);
        assert_eq!(
            candidate.id,
            Candidate::derive_id(d.problem.id, 3, &candidate.code)
        );
        let none = judge_candidate(&d, 4, 1, &completion("I cannot do that.")).unwrap_err();
        assert_eq!(none.reason, RejectReason::NoCode);
    }

    #[test]
    fn low_ratings_and_broken_answers_become_rejections() {
        let d = draft();
        let low =
            judge_rating(&d, &completion(" 3\nSummary: vague\n<RATING_END>"), 7.0).unwrap_err();
        assert_eq!(low.reason, RejectReason::LowQuality);
        let ok = judge_rating(&d, &completion(" 8/10\nSummary: fine\n<RATING_END>"), 7.0).unwrap();
        assert_eq!(ok.score, 8.0);
        let mut cut_off = completion(" x");
        cut_off.finish = FinishReason::Length;
        let cut = judge_problem(Category::MultiDomain, 1, &cut_off).unwrap_err();
        assert_eq!(cut.reason, RejectReason::Unparseable);
        assert!(
            cut.detail.starts_with("unterminated_block"),
            "{}",
            cut.detail
        );
        assert_eq!(cut.raw, "<PROBLEM_START>\nTitle: x");
        let other = judge_skeleton(
            &d,
            &completion("def other(a, b):\n    pass\n```\n<SKELETON_END>"),
        )
        .unwrap_err();
        assert_eq!(other.reason, RejectReason::MissingFunction);
    }

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
