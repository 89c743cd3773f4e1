//! Tests that start real containers: namespaces, overlayfs, cgroups. Root only.

mod examples;
mod exec;
mod images;
mod isolation;
mod lifecycle;
mod registry;
mod registry_token;
mod security;
mod teardown;
mod unpack;
