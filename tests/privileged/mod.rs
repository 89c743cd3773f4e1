//! Tests that start real containers: namespaces, overlayfs, cgroups. Root only.

mod examples;
mod exec;
mod files;
mod images;
mod isolation;
mod lifecycle;
mod oci;
mod registry;
mod registry_token;
mod security;
mod stats;
mod stopping;
mod teardown;
mod unpack;
mod volumes;
