//! Reading Python source.
//!
//! - [`lexer`]: string literals, comments, bracket depth, top-level splitting and call sites of
//!   one-line constructs; the IPC parsers (`prompts::parse`) read signatures and tests with it.
//! - [`stub`]: a skeleton cut back to its interface.
//!
//! Still scanning on their own (to be moved onto [`lexer`] without changing results): the
//! program extractor `eval::extract` and the sandbox's `pysource`.

pub mod lexer;
pub mod stub;

pub use stub::stub;
