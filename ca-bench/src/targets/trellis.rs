//! Trellis as a target: a `ca-server dev` deployment in a temporary
//! directory (SoftHSM2 tokens, every class), served by the real binary on
//! 127.0.0.1 with a kernel-chosen port over HTTPS (the product) or plain
//! HTTP (`--insecure-http`, to compare with CFSSL on equal terms). One
//! server answers both the native and the CFSSL-compatible API, as key `db`.
//!
//! The deployment's per-key rate limit (default 1000 requests/s) would cap
//! the measurement, so the harness raises it in its own deployment's
//! `auth-keys.toml`; the report says so.

use super::{log_file, ChildGuard, Server};
use crate::load::Protocol;
use crate::validate::Trust;
use anyhow::{anyhow, bail, Context, Result};
use ca_proto::auth::{parse_secret, Credentials};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

pub const RATE_NOTE: &str =
    "the bench deployment's auth keys have rate_per_second = burst = 1e6 (default 1000/s would cap the run)";

pub struct Deployment {
    pub dir: tempfile::TempDir,
    bin: PathBuf,
    starts: AtomicUsize,
}

impl Deployment {
    /// `ca-server dev --init-only` in a fresh temporary directory.
    pub fn create(bin: &Path) -> Result<Deployment> {
        if !bin.exists() {
            bail!(
                "{} is missing: build it (cargo build --release -p ca-server) or give --ca-server",
                bin.display()
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("trellis-bench-")
            .tempdir()?;
        let out = Command::new(bin)
            .env_remove("SOFTHSM2_CONF")
            .arg("dev")
            .arg("--dir")
            .arg(dir.path())
            .arg("--init-only")
            .output()
            .with_context(|| format!("running {}", bin.display()))?;
        if !out.status.success() {
            bail!(
                "ca-server dev --init-only failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let keys = dir.path().join("auth-keys.toml");
        let text = std::fs::read_to_string(&keys)?;
        if !text.contains("rate_per_second") {
            let raised = text.replace(
                "[[key]]\n",
                "[[key]]\nrate_per_second = 1000000.0\nburst = 1000000.0\n",
            );
            std::fs::write(&keys, raised)?;
        }
        Ok(Deployment {
            dir,
            bin: bin.to_path_buf(),
            starts: AtomicUsize::new(0),
        })
    }

    /// A `ca-server dev` option that turns the issuance log off, if this
    /// build has one (any long option naming the log other than
    /// `--log-format`).
    pub fn log_off_flag(&self) -> Option<String> {
        let out = Command::new(&self.bin)
            .args(["dev", "--help"])
            .output()
            .ok()?;
        let help = String::from_utf8_lossy(&out.stdout);
        help.split_whitespace()
            .map(|w| w.trim_end_matches([',', '.']))
            .filter(|w| w.starts_with("--no-") && w.contains("log"))
            .map(|w| w.split(['=', '[', '<']).next().unwrap_or(w).to_string())
            .next()
    }

    fn secret(&self, id: &str) -> Result<Vec<u8>> {
        let path = self.dir.path().join(format!("secrets/auth-{id}.hex"));
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        parse_secret(&text).map_err(|e| anyhow!("{}: {e}", path.display()))
    }

    /// Serve the deployment; `extra` are further `ca-server dev` options.
    pub fn start(&self, insecure_http: bool, extra: &[String]) -> Result<Server> {
        let n = self.starts.fetch_add(1, Ordering::Relaxed);
        let log = self.dir.path().join(format!("server-{n}.log"));
        let mut command = Command::new(&self.bin);
        command
            .env_remove("SOFTHSM2_CONF")
            .arg("dev")
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file(&log)?);
        if insecure_http {
            command.arg("--insecure-http");
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut guard = ChildGuard::new("ca-server", child);
        // Read stdout on a thread (and keep draining it so the pipe never fills).
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.trim().strip_prefix("listening on ") {
                    let _ = tx.send(url.to_string());
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(120);
        let url = loop {
            match rx.recv_timeout(Duration::from_millis(250)) {
                Ok(url) => break url,
                Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {
                    guard
                        .check_alive()
                        .map_err(|e| anyhow!("{e}: {}", super::log_tail(&log, 5)))?;
                }
                Err(_) => bail!(
                    "ca-server did not print its address: {}",
                    super::log_tail(&log, 5)
                ),
            }
        };
        let (scheme, authority) = url
            .split_once("://")
            .ok_or_else(|| anyhow!("odd address line: {url}"))?;
        let addr: SocketAddr = authority.trim_end_matches('/').parse()?;
        if (scheme == "http") != insecure_http {
            bail!(
                "asked for {}, server says {url}",
                if insecure_http { "http" } else { "https" }
            );
        }
        let classes = self.dir.path().join("classes");
        let tls = (!insecure_http)
            .then(|| client_tls(&classes.join("ca/root.pem")))
            .transpose()?;
        let trust = Trust::from_files(
            &classes.join("db/intermediate.pem"),
            &classes.join("db/root.pem"),
        )?;
        let secret = self.secret("db")?;
        Ok(Server {
            label: "Trellis".into(),
            addr,
            tls,
            trust: Arc::new(trust),
            protocols: vec![
                Protocol::Native {
                    creds: Credentials::new("db", secret.clone()),
                    class: "db".into(),
                    profile: "server".into(),
                },
                Protocol::Cfssl {
                    secret,
                    label: "db".into(),
                    profile: "server".into(),
                },
            ],
            log,
            _guard: guard,
        })
    }
}

/// Trust only `root` (the deployment's `ca` root, or the CFSSL CA); speak
/// HTTP/1.1.
pub fn client_tls(root: &Path) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(root)
        .map_err(|e| anyhow!("reading {}: {e}", root.display()))?
    {
        roots.add(cert.map_err(|e| anyhow!("{}: {e}", root.display()))?)?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
