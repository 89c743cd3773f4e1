//! Tests that start real containers: namespaces, overlayfs, cgroups. Root only.

mod examples;
mod images;
mod isolation;
mod lifecycle;
mod registry;
mod registry_token;
mod stats;
mod teardown;
mod unpack;
