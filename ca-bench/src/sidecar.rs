//! `ca-bench sidecar-rss`: the resident set of an idle `ca-client` daemon.
//! The sidecar runs against a Trellis deployment (HTTPS on 127.0.0.1, key
//! `db`, class `db`, profile `server`, one DNS name, a 24 h certificate, so
//! that nothing is due for hours) with its metrics endpoint on; once
//! `cert.pem` is installed and 5 more seconds have passed, `VmRSS` of
//! `/proc/<pid>/status` is read 5 times over 10 s. The design's target for
//! the idle daemon is below 20 MiB.

use crate::targets::trellis::Deployment;
use crate::targets::{log_file, log_tail, mib, proc_status_kib, ChildGuard};
use anyhow::{bail, Context, Result};
use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The design target for the idle daemon's resident set.
pub const TARGET_KIB: u64 = 20 * 1024;
const SAMPLES: usize = 5;
const SPACING: Duration = Duration::from_millis(2500);
const SETTLE: Duration = Duration::from_secs(5);
const FIRST_CERT_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Rss {
    /// `VmRSS` samples, KiB.
    pub samples_kib: Vec<u64>,
    /// `VmHWM` (peak resident set since start, incl. the first issuance), KiB.
    pub hwm_kib: Option<u64>,
    /// From start to `cert.pem` existing.
    pub first_cert: Duration,
}

impl Rss {
    pub fn max_kib(&self) -> u64 {
        self.samples_kib.iter().copied().max().unwrap_or(0)
    }

    pub fn passed(&self) -> bool {
        self.max_kib() > 0 && self.max_kib() < TARGET_KIB
    }

    /// One line for reports.
    pub fn summary(&self) -> String {
        format!(
            "{:.1} MiB (max of {} VmRSS samples over {} s: {}; VmHWM {})",
            mib(self.max_kib()),
            self.samples_kib.len(),
            (SPACING * (SAMPLES as u32 - 1)).as_secs_f64(),
            self.samples_kib
                .iter()
                .map(|k| format!("{:.1}", mib(*k)))
                .collect::<Vec<_>>()
                .join(", "),
            self.hwm_kib
                .map_or("–".into(), |k| format!("{:.1} MiB", mib(k)))
        )
    }

    pub fn markdown(&self) -> String {
        let mut s = String::from("# Sidecar memory\n\n");
        s.push_str(
            "Written by `ca-bench sidecar-rss`: the idle `ca-client` daemon (class `db`, one \
             DNS name, 24 h certificate, `--metrics-listen` on, log evidence required) \
             against a local Trellis deployment; samples start 5 s after `cert.pem` was \
             installed.\n\n",
        );
        s.push_str("| sample | VmRSS MiB |\n|---:|---:|\n");
        for (i, k) in self.samples_kib.iter().enumerate() {
            let _ = writeln!(s, "| {} | {:.1} |", i + 1, mib(*k));
        }
        let _ = writeln!(
            s,
            "\nIdle resident set: **{:.1} MiB** (max), target < {} MiB: **{}**. \
             VmHWM (peak since start, including the first issuance): {}. First certificate \
             installed {:.1} s after start.",
            mib(self.max_kib()),
            TARGET_KIB / 1024,
            if self.passed() { "pass" } else { "FAIL" },
            self.hwm_kib
                .map_or("–".into(), |k| format!("{:.1} MiB", mib(k))),
            self.first_cert.as_secs_f64()
        );
        s
    }
}

/// Start a Trellis server from `deployment` and an idle `ca-client` daemon
/// against it, and sample the daemon's resident set. Both processes are
/// killed when this returns (their guards), also on error.
pub fn measure(ca_client: &Path, deployment: &Deployment) -> Result<Rss> {
    if !ca_client.exists() {
        bail!(
            "{} is missing: build it (cargo build --release -p ca-client) or give --ca-client",
            ca_client.display()
        );
    }
    let mut server = deployment.start(false, &[])?;
    let dir = deployment.dir.path();
    let work = tempfile::Builder::new()
        .prefix("ca-client-rss-")
        .tempdir()?;
    let out = work.path().join("out");
    let log = work.path().join("ca-client.log");
    let child = Command::new(ca_client)
        .env_remove("RUST_LOG")
        .env_remove("CA_CLIENT_CONFIG")
        .arg("--ca")
        .arg(format!("https://localhost:{}", server.addr.port()))
        .arg("--ca-root")
        .arg(dir.join("classes/ca/root.pem"))
        .args(["--class", "db", "--profile", "server", "--key-id", "db"])
        .arg("--key-secret-file")
        .arg(dir.join("secrets/auth-db.hex"))
        .args(["--dns", "rss.db.internal", "--ttl", "24h"])
        .args(["--metrics-listen", "127.0.0.1:0"])
        .arg("--out")
        .arg(&out)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file(&log)?)
        .spawn()
        .with_context(|| format!("starting {}", ca_client.display()))?;
    let started = Instant::now();
    let mut client = ChildGuard::new("ca-client", child);
    let pid = client.pid();
    let cert = out.join("cert.pem");
    while !cert.exists() {
        client
            .check_alive()
            .with_context(|| format!("ca-client: {}", log_tail(&log, 5)))?;
        server._guard.check_alive()?;
        if started.elapsed() > FIRST_CERT_TIMEOUT {
            bail!(
                "ca-client installed no certificate within {FIRST_CERT_TIMEOUT:?}: {}",
                log_tail(&log, 5)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let first_cert = started.elapsed();
    std::thread::sleep(SETTLE);
    let mut samples_kib = Vec::with_capacity(SAMPLES);
    for i in 0..SAMPLES {
        if i > 0 {
            std::thread::sleep(SPACING);
        }
        client
            .check_alive()
            .with_context(|| format!("ca-client: {}", log_tail(&log, 5)))?;
        samples_kib.push(proc_status_kib(pid, "VmRSS").context("no VmRSS for ca-client")?);
    }
    let hwm_kib = proc_status_kib(pid, "VmHWM");
    drop(client);
    drop(server);
    Ok(Rss {
        samples_kib,
        hwm_kib,
        first_cert,
    })
}
