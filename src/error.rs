//! The top-level error and the documented exit codes.
