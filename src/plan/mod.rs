//! L1, pure: desired state and dependency graph. No I/O.

pub mod desired;
