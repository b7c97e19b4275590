//! Support for the end-to-end tests: finding the workspace's binaries,
//! starting a real `ca-server dev` on a loopback port, talking HTTPS to it
//! with a small blocking client, and running real peers (openssl, cfssl).

pub mod fakeca;
pub mod hsm_env;
pub mod pg;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The folder holding the workspace's binaries (`make test` builds them
/// first with `cargo build --workspace --bins`).
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

/// Run a command to completion; panics only if it cannot be started.
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

/// A CSR made by openssl (independent of our code). `key` is an
/// `openssl req -newkey` argument such as `ec -pkeyopt ec_paramgen_curve:P-256`
/// or `rsa:2048`; `extra` are further `openssl req` arguments.
pub fn openssl_csr(dir: &Path, name: &str, key: &[&str], subject: &str, extra: &[&str]) -> String {
    let csr = dir.join(format!("{name}.csr"));
    let out = run(Command::new("openssl")
        .args(["req", "-new", "-nodes", "-newkey"])
        .args(key)
        .arg("-keyout")
        .arg(dir.join(format!("{name}.key")))
        .args(["-subj", subject])
        .args(extra)
        .arg("-out")
        .arg(&csr));
    assert!(out.status.success(), "openssl req: {}", text(&out));
    std::fs::read_to_string(csr).unwrap_or_default()
}

/// A running `ca-server dev` on 127.0.0.1 with a port picked by the kernel.
/// Dropped: SIGTERM, then wait.
pub struct TestServer {
    pub dir: PathBuf,
    pub addr: String,
    child: Option<Child>,
    log: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl TestServer {
    pub fn start() -> TestServer {
        let tmp = tempfile::Builder::new()
            .prefix("trellis-e2e")
            .tempdir()
            .unwrap_or_else(|e| panic!("tempdir: {e}"));
        let dir = tmp.path().join("var");
        let mut server = TestServer::start_in(&dir, &[]);
        server._tmp = Some(tmp);
        server
    }

    /// Start (or restart) a deployment in `dir`, with extra `dev` flags.
    pub fn start_in(dir: &Path, extra: &[&str]) -> TestServer {
        TestServer::start_with_env(dir, extra, &[])
    }

    /// As `start_in`, with extra environment variables for the server.
    pub fn start_with_env(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> TestServer {
        let mut cmd = Command::new(bin("ca-server"));
        cmd.args(["dev", "--listen", "127.0.0.1:0", "--dir"])
            .arg(dir)
            .args(extra)
            .envs(env.iter().copied());
        TestServer::spawn(cmd, dir)
    }

    /// Run `cmd` (a `ca-server dev` or `serve` command line, possibly behind
    /// a prefix such as `nsenter`) as the server of the deployment in `dir`,
    /// and wait for its `listening on` line. Its stderr goes to
    /// `<dir>.server.log`.
    pub fn spawn(mut cmd: Command, dir: &Path) -> TestServer {
        let log = dir.with_extension("server.log");
        let log_file = std::fs::File::create(&log).unwrap_or_else(|e| panic!("log file: {e}"));
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("starting ca-server: {e}"));
        let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
        let mut lines = BufReader::new(stdout).lines();
        let mut addr = None;
        let mut seen = String::new();
        for line in lines.by_ref().take(100) {
            let Ok(line) = line else { break };
            seen.push_str(&line);
            seen.push('\n');
            if let Some(rest) = line.strip_prefix("listening on ") {
                addr = Some(rest.rsplit("://").next().unwrap_or_default().to_string());
                break;
            }
        }
        let Some(addr) = addr else {
            let _ = child.kill();
            let log_text = std::fs::read_to_string(&log).unwrap_or_default();
            panic!("ca-server did not start:\n{seen}\n{log_text}");
        };
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        TestServer {
            dir: dir.to_path_buf(),
            addr,
            child: Some(child),
            log,
            _tmp: None,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0)
    }

    pub fn url(&self) -> String {
        format!("https://localhost:{}", self.port())
    }

    pub fn secret(&self, key_id: &str) -> Vec<u8> {
        let hex = std::fs::read_to_string(self.dir.join(format!("secrets/auth-{key_id}.hex")))
            .unwrap_or_default();
        ca_proto::auth::parse_secret(hex.trim())
            .unwrap_or_else(|e| panic!("secret of {key_id}: {e}"))
    }

    pub fn client(&self) -> HttpsClient {
        HttpsClient::new(&self.dir.join("classes/ca/root.pem"), &self.addr)
    }

    pub fn server_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A native signed request: returns (status, body).
    pub fn native_sign(&self, key_id: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
        let body = serde_json::to_vec(body).unwrap_or_default();
        let header = self.auth_header(key_id, &body, now_unix(), &ca_proto::auth::new_nonce());
        let response =
            self.client()
                .request("POST", "/v1/sign", &[("authorization", &header)], &body);
        (response.status, response.json())
    }

    pub fn auth_header(&self, key_id: &str, body: &[u8], ts: i64, nonce: &str) -> String {
        let creds = ca_proto::auth::Credentials::new(key_id, self.secret(key_id));
        ca_proto::auth::sign_request(&creds, "POST", "/v1/sign", body, ts, nonce)
    }

    /// A native `Authorization` header for any request (fresh nonce, now).
    pub fn auth_header_for(
        &self,
        key_id: &str,
        method: &str,
        path_and_query: &str,
        body: &[u8],
    ) -> String {
        let creds = ca_proto::auth::Credentials::new(key_id, self.secret(key_id));
        ca_proto::auth::sign_request(
            &creds,
            method,
            path_and_query,
            body,
            now_unix(),
            &ca_proto::auth::new_nonce(),
        )
    }

    /// A GET signed with `key_id` (e.g. the log's `entries` and `proof`).
    pub fn signed_get(&self, key_id: &str, path_and_query: &str) -> HttpResponse {
        let header = self.auth_header_for(key_id, "GET", path_and_query, b"");
        self.client()
            .request("GET", path_and_query, &[("authorization", &header)], b"")
    }

    /// The value of a counter on `/metrics` (sum over label sets matching `filter`).
    pub fn metric(&self, name: &str, filter: &str) -> f64 {
        let page = self.client().request("GET", "/metrics", &[], b"");
        page.text()
            .lines()
            .filter(|l| l.starts_with(name) && l.contains(filter))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL: no drain, no cleanup — a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for the process; returns its exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        for _ in 0..100 {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        child.wait().ok()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A rustls client configuration (ring) that trusts exactly the roots in
/// `root_pem`; callers adjust ALPN or resumption as they need.
pub fn client_tls_config(root_pem: &Path) -> rustls::ClientConfig {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(root_pem)
        .unwrap_or_else(|e| panic!("{}: {e}", root_pem.display()))
        .flatten()
    {
        roots.add(cert).unwrap_or_else(|e| panic!("root: {e}"));
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap_or_else(|e| panic!("{e}"))
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// A minimal blocking HTTPS/1.1 client (one request per connection) that
/// trusts exactly one root and checks the name `localhost`.
pub struct HttpsClient {
    config: Arc<rustls::ClientConfig>,
    addr: String,
}

pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

impl HttpsClient {
    pub fn new(root_pem: &Path, addr: &str) -> HttpsClient {
        HttpsClient {
            config: Arc::new(client_tls_config(root_pem)),
            addr: addr.to_string(),
        }
    }

    /// A TLS connection to the server (handshake on first use).
    pub fn connect(&self) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
        let name =
            rustls_pki_types::ServerName::try_from("localhost").unwrap_or_else(|e| panic!("{e}"));
        let conn = rustls::ClientConnection::new(self.config.clone(), name)
            .unwrap_or_else(|e| panic!("{e}"));
        let tcp =
            TcpStream::connect(&self.addr).unwrap_or_else(|e| panic!("connect {}: {e}", self.addr));
        let _ = tcp.set_read_timeout(Some(Duration::from_secs(30)));
        rustls::StreamOwned::new(conn, tcp)
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> HttpResponse {
        let mut tls = self.connect();
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let mut raw = Vec::new();
        let expect_continue = headers.iter().any(|(k, v)| {
            k.eq_ignore_ascii_case("expect") && v.eq_ignore_ascii_case("100-continue")
        });
        if expect_continue {
            // Send the head alone; the body only after `100 Continue`.
            if tls
                .write_all(head.as_bytes())
                .and_then(|_| tls.flush())
                .is_err()
            {
                return parse_response(&raw);
            }
            let mut buf = [0u8; 4096];
            while !raw.windows(4).any(|w| w == b"\r\n\r\n") {
                match tls.read(&mut buf) {
                    Ok(0) | Err(_) => return parse_response(&raw),
                    Ok(n) => raw.extend_from_slice(&buf[..n]),
                }
            }
            if !raw.starts_with(b"HTTP/1.1 100") {
                let _ = tls.read_to_end(&mut raw);
                return parse_response(&raw);
            }
            raw.clear();
            let _ = tls.write_all(body).and_then(|_| tls.flush());
            let _ = tls.read_to_end(&mut raw);
            return parse_response(&raw);
        }
        // A server may answer and close before reading a large body; read
        // whatever arrived either way.
        let _ = tls
            .write_all(head.as_bytes())
            .and_then(|_| tls.write_all(body))
            .and_then(|_| tls.flush());
        let _ = tls.read_to_end(&mut raw);
        parse_response(&raw)
    }
}

fn parse_response(raw: &[u8]) -> HttpResponse {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(raw.len());
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let body = raw.get(split + 4..).unwrap_or_default().to_vec();
    HttpResponse {
        status,
        headers,
        body,
    }
}

/// Resident set of process `pid` in KiB (0 when it cannot be read).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// An openssl P-256 CSR for `<name>.db.internal` (CN and the one SAN).
pub fn db_csr(dir: &Path, name: &str) -> String {
    openssl_csr(
        dir,
        name,
        &["ec", "-pkeyopt", "ec_paramgen_curve:P-256"],
        &format!("/CN={name}.db.internal"),
        &["-addext", &format!("subjectAltName=DNS:{name}.db.internal")],
    )
}

/// `ca-server dev --init-only` in `dir`, then set `settings` (TOML lines,
/// `key = value`) in its `[server]` section: an existing key is replaced,
/// a new one added.
pub fn init_dev_with_server_settings(dir: &Path, settings: &str) {
    let out = run(Command::new(bin("ca-server"))
        .args(["dev", "--init-only", "--dir"])
        .arg(dir));
    assert!(out.status.success(), "{}", text(&out));
    let path = dir.join("config.toml");
    let mut config = std::fs::read_to_string(&path).unwrap_or_default();
    for line in settings.lines().filter(|l| !l.trim().is_empty()) {
        let key = line.split('=').next().unwrap_or_default().trim();
        let existing = config
            .lines()
            .find(|l| l.split('=').next().unwrap_or_default().trim() == key)
            .map(str::to_string);
        config = match existing {
            Some(old) => config.replacen(&old, line, 1),
            None => config.replacen("[server]\n", &format!("[server]\n{line}\n"), 1),
        };
    }
    std::fs::write(&path, config).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// A running `ca-client` daemon whose stderr lines are collected with the
/// time they arrived. Killed when dropped.
pub struct Daemon {
    pub child: Child,
    lines: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl Daemon {
    pub fn start(mut cmd: Command) -> Daemon {
        let mut child = cmd
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting the daemon: {e}"));
        let stderr = child.stderr.take().unwrap_or_else(|| panic!("no stderr"));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((Instant::now(), line));
            }
        });
        Daemon { child, lines }
    }

    /// Every line so far, with the time it arrived.
    pub fn lines(&self) -> Vec<(Instant, String)> {
        self.lines.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The whole log so far.
    pub fn log(&self) -> String {
        self.lines().iter().map(|(_, l)| format!("{l}\n")).collect()
    }

    /// The lines containing `needle`.
    pub fn matching(&self, needle: &str) -> Vec<String> {
        self.lines()
            .into_iter()
            .filter(|(_, l)| l.contains(needle))
            .map(|(_, l)| l)
            .collect()
    }

    /// SIGTERM, then wait (bounded) for the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        for _ in 0..100 {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("daemon did not stop on SIGTERM:\n{}", self.log());
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Poll `cond` every 100 ms until it holds or `timeout` passes; its last
/// answer.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    cond()
}

/// A plain HTTP/1.1 GET (metrics and health endpoints of a sidecar): the
/// status (0 when nothing answered) and the whole response text.
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return (0, String::new());
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    );
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    let status = buf
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, buf)
}

/// A TLS server on a loopback port that echoes the first 4 bytes of each
/// connection, with `config` (one built by the ca-client library); its port.
pub fn tls_echo_server(config: Arc<rustls::ServerConfig>) -> u16 {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("echo server: {e}"));
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    std::thread::spawn(move || {
        for tcp in listener.incoming() {
            let Ok(tcp) = tcp else { continue };
            let config = config.clone();
            std::thread::spawn(move || {
                let Ok(conn) = rustls::ServerConnection::new(config) else {
                    return;
                };
                let mut tls = rustls::StreamOwned::new(conn, tcp);
                let mut buf = [0u8; 4];
                if tls.read_exact(&mut buf).is_ok() {
                    let _ = tls.write_all(&buf);
                    let _ = tls.flush();
                }
            });
        }
    });
    port
}

/// Build the fault-injecting PKCS#11 module (`tests/fault-pkcs11/`, C) into
/// `dir`; its path.
pub fn build_fault_module(dir: &Path) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("fault-pkcs11/fault_pkcs11.c");
    let out = dir.join("fault_pkcs11.so");
    let build = run(Command::new("cc")
        .args(["-shared", "-fPIC", "-Wall", "-o"])
        .arg(&out)
        .arg(&source)
        .arg("-ldl"));
    assert!(
        build.status.success(),
        "building the fault module: {}",
        text(&build)
    );
    out
}
