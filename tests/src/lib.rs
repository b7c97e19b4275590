//! Support for the end-to-end tests: finding the workspace's binaries and
//! running them against real peers (SoftHSM2, openssl, cfssl) on loopback.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The workspace's target directory profile folder holding the binaries
/// (`make test` builds them first with `cargo build --workspace --bins`).
pub fn bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("TRELLIS_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("debug")
}

pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (make test does)",
        path.display()
    );
    path
}

/// Run a command to completion, returning its output; panics only if it
/// cannot be started.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"))
}

pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `openssl verify -x509_strict -CAfile root -untrusted intermediate leaf`.
pub fn openssl_verify(root: &Path, intermediate: &Path, leaf: &Path) -> (bool, String) {
    let out = run(Command::new("openssl")
        .args(["verify", "-x509_strict", "-CAfile"])
        .arg(root)
        .arg("-untrusted")
        .arg(intermediate)
        .arg(leaf));
    (out.status.success(), text(&out))
}
