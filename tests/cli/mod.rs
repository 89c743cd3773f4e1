//! CLI tests: exact output and exit codes of commands that need no root.

mod compose;
mod compose_corpus;
mod errors;
pub mod examples;
mod output;
