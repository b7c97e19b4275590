//! CFSSL as a target (Debian's `golang-cfssl`, file keys, HTTPS): one CA
//! made with `cfssl genkey -initca` (ECDSA P-256) in a temporary directory,
//! a signing config whose every profile needs the HMAC key `k` (so
//! `/api/v1/cfssl/authsign` is served, and multirootca accepts it), a TLS
//! server certificate from that CA (`cfssl gencert`, ECDSA P-256 like
//! Trellis's own, SANs `localhost` and `127.0.0.1`, signed under a separate
//! config without the auth key), and the two servers over it:
//!
//! - `cfssl serve -address 127.0.0.1 -port P -ca ca.pem -ca-key ca-key.pem -config config.json -tls-cert tls.pem -tls-key tls-key.pem`
//! - `multirootca -a 127.0.0.1:P -roots roots.conf -l default -tls-cert tls.pem -tls-key tls-key.pem`,
//!   where `roots.conf` is `[default]` with `private = file://ca-key.pem`,
//!   `certificate = ca.pem`, `config = config.json`.

use super::{free_port, log_file, wait_for_port, ChildGuard, Server};
use crate::load::Protocol;
use crate::validate::Trust;
use anyhow::{anyhow, bail, Context, Result};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

pub struct CfsslCa {
    pub dir: tempfile::TempDir,
    secret: Vec<u8>,
    trust: Arc<Trust>,
    /// Clients trust the throwaway CA for the servers' TLS certificate.
    client: Arc<rustls::ClientConfig>,
}

/// Every profile the benchmark uses, each requiring the auth key.
fn signing_config(key_hex: &str) -> serde_json::Value {
    let usages = ["signing", "digital signature", "server auth"];
    serde_json::json!({
        "signing": {
            "default": {"auth_key": "k", "expiry": "24h", "usages": usages},
            "profiles": {
                "server": {"auth_key": "k", "expiry": "24h", "usages": usages}
            }
        },
        "auth_keys": {"k": {"type": "standard", "key": key_hex}}
    })
}

impl CfsslCa {
    pub fn create() -> Result<CfsslCa> {
        let dir = tempfile::Builder::new().prefix("cfssl-bench-").tempdir()?;
        let d = dir.path();
        std::fs::write(
            d.join("ca-csr.json"),
            r#"{"CN":"cfssl bench CA","key":{"algo":"ecdsa","size":256},"names":[{"O":"ca-bench"}]}"#,
        )?;
        let out = Command::new("cfssl")
            .current_dir(d)
            .args(["genkey", "-initca", "ca-csr.json"])
            .output()
            .context("running cfssl (apt-get install golang-cfssl)")?;
        if !out.status.success() {
            bail!(
                "cfssl genkey -initca: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let made: serde_json::Value =
            serde_json::from_slice(&out.stdout).context("cfssl genkey output")?;
        let field = |name: &str| {
            made[name]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| anyhow!("cfssl genkey printed no '{name}'"))
        };
        std::fs::write(d.join("ca.pem"), field("cert")?)?;
        write_private(&d.join("ca-key.pem"), field("key")?.as_bytes())?;
        let mut secret = vec![0u8; 32];
        getrandom::getrandom(&mut secret).map_err(|e| anyhow!("no randomness: {e}"))?;
        let config = serde_json::to_vec_pretty(&signing_config(&hex::encode(&secret)))?;
        write_private(&d.join("config.json"), &config)?;
        std::fs::write(
            d.join("roots.conf"),
            "[default]\nprivate = file://ca-key.pem\ncertificate = ca.pem\nconfig = config.json\n",
        )?;
        tls_certificate(d)?;
        let trust = Trust::from_files(&d.join("ca.pem"), &d.join("ca.pem"))?;
        let client = super::trellis::client_tls(&d.join("ca.pem"))?;
        Ok(CfsslCa {
            dir,
            secret,
            trust: Arc::new(trust),
            client,
        })
    }

    fn protocol(&self) -> Protocol {
        Protocol::Cfssl {
            secret: self.secret.clone(),
            label: "default".into(),
            profile: "server".into(),
        }
    }

    pub fn serve(&self) -> Result<Server> {
        let port = free_port()?.to_string();
        self.start(
            "cfssl serve",
            "cfssl",
            &[
                "serve",
                "-address",
                "127.0.0.1",
                "-port",
                &port,
                "-ca",
                "ca.pem",
                "-ca-key",
                "ca-key.pem",
                "-config",
                "config.json",
                "-tls-cert",
                "tls.pem",
                "-tls-key",
                "tls-key.pem",
            ],
            &port,
        )
    }

    pub fn multirootca(&self) -> Result<Server> {
        let port = free_port()?.to_string();
        let address = format!("127.0.0.1:{port}");
        self.start(
            "multirootca",
            "multirootca",
            &[
                "-a",
                &address,
                "-roots",
                "roots.conf",
                "-l",
                "default",
                "-tls-cert",
                "tls.pem",
                "-tls-key",
                "tls-key.pem",
            ],
            &port,
        )
    }

    fn start(&self, label: &str, program: &str, args: &[&str], port: &str) -> Result<Server> {
        let log = self.dir.path().join(format!("{program}.log"));
        let child = Command::new(program)
            .current_dir(self.dir.path())
            .args(args)
            .stdin(Stdio::null())
            .stdout(log_file(&log)?)
            .stderr(log_file(&log.with_extension("err.log"))?)
            .spawn()
            .with_context(|| format!("starting {program}"))?;
        let mut guard = ChildGuard::new(program, child);
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        wait_for_port(addr, &mut guard, Duration::from_secs(20)).with_context(|| {
            let err = log.with_extension("err.log");
            format!("{label}: {}", super::log_tail(&err, 5))
        })?;
        Ok(Server {
            label: label.into(),
            addr,
            tls: Some(self.client.clone()),
            trust: self.trust.clone(),
            protocols: vec![self.protocol()],
            log: log.with_extension("err.log"),
            _guard: guard,
        })
    }
}

/// `tls.pem` and `tls-key.pem` in `d`: the servers' TLS certificate from
/// the CA in `d` (ECDSA P-256, SANs `localhost` and `127.0.0.1`, 24 h).
fn tls_certificate(d: &Path) -> Result<()> {
    std::fs::write(
        d.join("tls-csr.json"),
        r#"{"CN":"localhost","hosts":["localhost","127.0.0.1"],"key":{"algo":"ecdsa","size":256}}"#,
    )?;
    let usages = [
        "signing",
        "digital signature",
        "key encipherment",
        "server auth",
    ];
    let config = serde_json::json!({
        "signing": {"default": {"expiry": "24h", "usages": usages}}
    });
    std::fs::write(d.join("tls-config.json"), serde_json::to_vec(&config)?)?;
    let out = Command::new("cfssl")
        .current_dir(d)
        .args([
            "gencert",
            "-ca",
            "ca.pem",
            "-ca-key",
            "ca-key.pem",
            "-config",
            "tls-config.json",
            "tls-csr.json",
        ])
        .output()
        .context("running cfssl gencert")?;
    if !out.status.success() {
        bail!("cfssl gencert: {}", String::from_utf8_lossy(&out.stderr));
    }
    let made: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("cfssl gencert output")?;
    let (Some(cert), Some(key)) = (made["cert"].as_str(), made["key"].as_str()) else {
        bail!("cfssl gencert printed no cert or key");
    };
    std::fs::write(d.join("tls.pem"), cert)?;
    write_private(&d.join("tls-key.pem"), key.as_bytes())
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(bytes)?;
    Ok(())
}
