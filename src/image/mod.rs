//! L2 image: the content-addressed image store (DESIGN.md section 7).
//!
//! Blobs live under `blobs/sha256/<hex>`, verified while they stream in; each layer is
//! unpacked once under `layers/sha256/<diff-id>/` and shared by every image and container
//! that stacks it. Unpacking is hostile-input code (`unpack`). This module imports only
//! `manifest` and `plan`; the runtime gets plain directory paths from it.

pub mod digest;
