//! Trellis signing server: configuration, the CA hierarchy per class, the
//! issuance pipeline, and the admin commands that create deployments.
//! `main.rs` is only the command line; everything else lives here so that
//! tests drive the same code the binary runs.

pub mod admin;
pub mod audit;
pub mod cmd;
pub mod config;
pub mod dev;
pub mod hierarchy;
pub mod inventory;
pub mod issue;
pub mod log;
pub mod metrics;
pub mod priority;
pub mod revoke;
pub mod serial;
pub mod server;
pub mod server_cert;
pub mod state;
pub mod stderr;
pub mod writeback;
