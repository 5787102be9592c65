//! Reading Python source: the lowest layer of the crate (it imports nothing from it).
//!
//! - [`lexer`]: the one definition of where string literals, comments and brackets start and end
//!   (the [`Lexer`](lexer::Lexer)), and the helpers the IPC parsers (`prompts::parse`) read
//!   signatures and tests with. The extractor and the sandbox's statement splitter
//!   (`sandbox::pysource`) feed it whole sources line by line.
//! - [`extract`]: the program to run, from a model's response (eval samples and the pipeline's
//!   solution samples alike).
//! - [`stub`]: a skeleton cut back to its interface.
//! - [`imports`]: the standard-library imports a program uses but lacks.

pub mod extract;
pub mod imports;
pub mod lexer;
pub mod stub;

pub use stub::stub;
