//! Tests that start real containers: namespaces, overlayfs, cgroups. Root only.

mod balancer;
mod commands;
mod examples;
mod exec;
mod files;
mod images;
mod init;
mod isolation;
mod lifecycle;
mod network;
mod oci;
mod probes;
mod reconcile;
mod registry;
mod registry_token;
mod rollout;
mod scheduling;
mod security;
mod stats;
mod stopping;
mod teardown;
mod tty;
mod unpack;
mod volumes;
mod watch;
mod with_crun;
