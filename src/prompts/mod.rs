//! The IPC stage prompts and their parsers.
//!
//! Each LLM stage (problem generation, rating, skeleton, tests, solutions) has a Jinja template
//! under `data/prompts/` that asks for the paper's tagged output format; the templates are built
//! into the binary and a pipeline may point at its own folder instead ([`PromptSet::from_dir`]).
//! [`parse`] holds the strict parsers that turn responses into records or rejections.

pub mod parse;

use std::path::{Path, PathBuf};

use minijinja::Environment;
use serde::Serialize;

/// The paper's task types; each problem request names one.
/// The paper's task types, as the problem generator is asked for them (shared with the records).
pub use ucoder_operators::Category;

/// What a problem of `category` is, in the words the problem prompt uses.
pub fn describe(category: Category) -> &'static str {
    match category {
        Category::BasicAlgorithms => {
            "a basic algorithm or data-structure exercise (sorting, searching, strings, arrays, hashing)"
        }
        Category::NaturalLanguage => {
            "a task described as a natural-language business or everyday instruction that must be turned into precise logic"
        }
        Category::StandardLibrary => {
            "a task best solved with Python standard-library tools (collections, itertools, heapq, bisect, re, datetime, math)"
        }
        Category::CompetitiveProgramming => {
            "a competitive-programming problem needing a clever algorithm (dynamic programming, greedy, graphs, number theory)"
        }
        Category::MultiDomain => {
            "an algorithm from another domain (geometry, finance, scheduling, text processing, simulation, statistics)"
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("prompt template `{name}`: {source}")]
    Template {
        name: &'static str,
        #[source]
        source: minijinja::Error,
    },
}

/// The stage templates, by file name.
const TEMPLATES: [(&str, &str); 5] = [
    ("problem.j2", include_str!("../../data/prompts/problem.j2")),
    ("rating.j2", include_str!("../../data/prompts/rating.j2")),
    (
        "skeleton.j2",
        include_str!("../../data/prompts/skeleton.j2"),
    ),
    ("tests.j2", include_str!("../../data/prompts/tests.j2")),
    (
        "solution.j2",
        include_str!("../../data/prompts/solution.j2"),
    ),
];

/// A loaded set of stage templates.
pub struct PromptSet {
    env: Environment<'static>,
}

impl PromptSet {
    /// The templates built into the binary (the files under `data/prompts/`).
    pub fn builtin() -> Result<Self, PromptError> {
        Self::from_sources(TEMPLATES.iter().map(|(n, s)| (*n, s.to_string())))
    }

    /// Templates from a folder with the same five file names.
    pub fn from_dir(dir: &Path) -> Result<Self, PromptError> {
        let mut sources = Vec::new();
        for (name, _) in TEMPLATES {
            let path = dir.join(name);
            let text = std::fs::read_to_string(&path)
                .map_err(|source| PromptError::Io { path, source })?;
            sources.push((name, text));
        }
        Self::from_sources(sources.into_iter())
    }

    fn from_sources(
        sources: impl Iterator<Item = (&'static str, String)>,
    ) -> Result<Self, PromptError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        env.set_keep_trailing_newline(true);
        for (name, text) in sources {
            env.add_template_owned(name, text)
                .map_err(|source| PromptError::Template { name, source })?;
        }
        Ok(PromptSet { env })
    }

    fn render(&self, name: &'static str, ctx: impl Serialize) -> Result<String, PromptError> {
        self.env
            .get_template(name)
            .and_then(|t| t.render(ctx))
            .map_err(|source| PromptError::Template { name, source })
    }

    /// The Problem Generator prompt for one request.
    pub fn problem(&self, category: Category, seed: u64) -> Result<String, PromptError> {
        self.render(
            "problem.j2",
            minijinja::context! { category => category.as_str(), category_description => describe(category), seed },
        )
    }

    /// The Quality Oracle prompt; `problem` is the problem as shown to the model.
    pub fn rating(&self, problem: &str) -> Result<String, PromptError> {
        let categories: Vec<&str> = Category::ALL.iter().map(|c| c.as_str()).collect();
        self.render(
            "rating.j2",
            minijinja::context! { problem, categories => categories.join(", ") },
        )
    }

    /// The Interface Synthesizer prompt.
    pub fn skeleton(&self, problem: &str, signature: &str) -> Result<String, PromptError> {
        self.render("skeleton.j2", minijinja::context! { problem, signature })
    }

    /// The Test Understanding prompt for one batch of `count` tests with a focus
    /// (typical inputs, boundaries, tricky cases).
    pub fn tests(
        &self,
        problem: &str,
        skeleton: &str,
        function: &str,
        count: usize,
        focus: &str,
    ) -> Result<String, PromptError> {
        self.render(
            "tests.j2",
            minijinja::context! { problem, skeleton, function, count, focus },
        )
    }

    /// The Solution Space prompt.
    pub fn solution(&self, problem: &str, skeleton: &str) -> Result<String, PromptError> {
        self.render("solution.j2", minijinja::context! { problem, skeleton })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_templates_render_every_stage() {
        let set = PromptSet::builtin().unwrap();
        let p = set.problem(Category::CompetitiveProgramming, 7).unwrap();
        assert!(
            p.contains("<PROBLEM_START>")
                && p.contains("dynamic programming")
                && p.contains("seed: 7")
        );
        let r = set.rating("Title: T").unwrap();
        assert!(r.contains("<RATING_START>") && r.contains("multi_domain"));
        let s = set.skeleton("Title: T", "def f(x: int) -> int:").unwrap();
        assert!(s.contains("def f(x: int) -> int:") && s.contains("<SKELETON_END>"));
        let t = set
            .tests(
                "Title: T",
                "def f(x: int) -> int:\n    pass",
                "f",
                10,
                "boundary values",
            )
            .unwrap();
        assert!(
            t.contains("assert f(") && t.contains("10 test cases") && t.contains("boundary values")
        );
        assert!(
            set.solution("Title: T", "def f")
                .unwrap()
                .contains("```python")
        );
    }

    #[test]
    fn template_folder_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = PromptSet::from_dir(dir.path()).err().unwrap().to_string();
        assert!(err.contains("problem.j2"), "{err}");
        for (name, text) in TEMPLATES {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        std::fs::write(dir.path().join("rating.j2"), "{{ unclosed").unwrap();
        let err = PromptSet::from_dir(dir.path()).err().unwrap().to_string();
        assert!(err.contains("rating.j2"), "{err}");
    }
}
