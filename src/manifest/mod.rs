//! L0, pure: the manifest model, parsing and validation. No I/O.
