//! Integration tests: one binary (`cargo test` builds it once).
//!
//! `privileged` tests start real containers and need root; they fail (never skip) without it.

#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

mod cli;
mod privileged;
mod test;
