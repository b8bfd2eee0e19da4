//! The end-to-end tests, in one test binary (linking one binary instead of one per file saves
//! most of the tests' build time). Each module is one area; `cargo test --test it MODULE::`
//! runs one.
//!
//! Kept as binaries of their own, because they change the test process itself: `clock`
//! (sets `LD_PRELOAD` for libfaketime in the environment its proxy inherits), `credentials`
//! (sets the `AZURE_*` variables azure_identity reads, and installs a global log
//! subscriber), `storm` (raises the open-files limit, and wants the machine to itself), and
//! `package` (runs cargo).

mod admin;
mod bad_input;
mod blocking;
mod cli;
mod cluster;
mod cluster_harness;
mod deploy;
mod differential;
mod doctor;
mod faults;
mod harness;
mod kill_matrix;
mod local_auth;
mod metrics_rotation;
mod node_clients;
mod passthrough;
mod prometheus;
mod replication;
mod rotation;
mod secrets;
mod shared;
mod startup;
mod streaming;
mod survival;
mod tracking;
mod upstreams;
mod warm;
