//! CLI tests: exact output and exit codes of commands that need no root.

mod comforts;
mod compose;
pub mod compose_corpus;
mod compose_files;
mod docs;
mod errors;
pub mod examples;
pub mod export;
mod output;
