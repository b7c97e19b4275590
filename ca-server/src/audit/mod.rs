//! Offline audit tools over an issuance log that a server writes (or
//! wrote): `verify` (checksums, numbering, tree heads), `show` (entries for
//! operators) and `monitor` (issued certificates against current policy
//! and known intermediates). They only read: they never take the writer's
//! lock, and they stream `log.dat` record by record through
//! `log::record::Reader`, so their memory does not grow with the log.
//! `follow.rs` hands out only what a log gained since the last look, for
//! `monitor --follow`; `textfile.rs` renders the monitor's counts for
//! node_exporter.

pub mod follow;
pub mod monitor;
pub mod show;
pub mod textfile;
pub mod verify;

use crate::log::LogPaths;
use crate::state::StateDir;
use std::path::PathBuf;

/// Why an audit tool could not read the log.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("reading {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("log public key {}: {source}", path.display())]
    Key {
        path: PathBuf,
        #[source]
        source: ca_proto::sth::EvidenceError,
    },
    #[error("entry at offset {offset} of {}: {source}", path.display())]
    Entry {
        path: PathBuf,
        offset: u64,
        #[source]
        source: serde_json::Error,
    },
}

/// The files of log `log_id` in this state directory.
pub fn log_paths(state: &StateDir, log_id: &str) -> LogPaths {
    LogPaths {
        dir: state.log_dir(log_id),
    }
}
