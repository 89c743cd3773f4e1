//! L2, pure: the manifest turned into another tool's objects. No I/O: no file system,
//! processes, network or clock, and none of the I/O layers (`image`, `runtime`, `network`,
//! `balancer`, `watch`), the `supervisor` or the `cli`. Callers pass what must be read
//! (config and secret contents) and write what comes back.
//!
//! - [`kubernetes`]: Deployments, Jobs, Services, ConfigMaps, Secrets and
//!   PersistentVolumeClaims (typed k8s-openapi objects), with a warning for every part of
//!   the manifest that has no Kubernetes equivalent.

pub mod kubernetes;
