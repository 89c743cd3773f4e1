//! Tests that start real containers: namespaces, overlayfs, cgroups. Root only.

mod examples;
mod isolation;
mod lifecycle;
mod teardown;
