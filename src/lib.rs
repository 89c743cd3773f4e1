//! rcompose: a daemonless tool that runs a stack of pods, services and images declared in
//! one YAML manifest on one Linux machine.
//!
//! Data flows one way, and a module imports only from the layers below it:
//!
//! ```text
//! L0 manifest     text -> validated model (pure)
//! L1 plan         model -> desired state, dependency graph (pure)
//! L2 image        content-addressed store: blobs, unpacked layers, imports, registry pulls
//! L2 runtime      one container: namespaces, overlayfs root, cgroups, init
//! L2 watch        file events, debounce, ignore rules, container file sync, layer snapshots
//! L2 export       model -> Kubernetes objects and warnings (pure)
//! L3 supervisor   state files, start waves, logs, restarts, teardown
//! L4 cli          clap, tables, progress, error rendering
//! ```
#![deny(unsafe_op_in_unsafe_fn)]

pub mod balancer;
pub mod cli;
pub mod error;
pub mod export;
pub mod image;
pub mod manifest;
pub mod network;
pub mod plan;
pub mod runtime;
pub mod supervisor;
pub mod watch;
