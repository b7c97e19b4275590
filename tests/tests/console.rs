//! The web console and the inventory end to end: a real `ca-server dev`,
//! the search API, `ca-server log search`, and headless Chromium (Debian's
//! `chromium`, installed by `make test`) loading the console's pages.
//!
//! The browser trusts the server through the `ca` root in a throwaway NSS
//! database (no `--ignore-certificate-errors`: the server's TLS chain is
//! checked like any browser checks it). No page may request a
//! non-loopback URL: every request Chromium makes is in its net log, and a
//! request that a page initiated (its initiator is the page's origin) for
//! any other host fails the test, as does any Content-Security-Policy
//! violation on the console (a load the policy blocked) and any absolute
//! URL to another host in a page. Nothing leaves the machine meanwhile:
//! Chromium's proxy is a trap listener on 127.0.0.1 that only loopback
//! hosts bypass (Chromium's own background requests — component updates,
//! account checks — end there; they are the browser's, not a page's).
//! Screenshots are saved under the test's temp dir (kept with
//! `TRELLIS_KEEP_SCREENSHOTS=1`); the overview and the entry page are also
//! copied to `$TRELLIS_SCREENSHOTS_DIR` when set, which is how
//! `docs/console-*.png` are made.
//!
//! The access rule off loopback: the second test serves on `0.0.0.0`
//! (a listener that is not loopback, whoever connects) and connects
//! through 127.0.0.1: without a client certificate there is no console
//! page and no search result; with an `ops`-class client certificate
//! (`[ui] client_classes = ["ops"]`) both work; API clients without a
//! certificate are served as before.

use serde_json::json;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use trellis_e2e::{bin, openssl_csr, run, text, TestServer};

const P256: &[&str] = &["ec", "-pkeyopt", "ec_paramgen_curve:P-256"];

fn csr(dir: &Path, name: &str, host: &str) -> String {
    openssl_csr(
        dir,
        name,
        P256,
        &format!("/CN={host}"),
        &["-addext", &format!("subjectAltName=DNS:{host}")],
    )
}

/// A listener that records the first line of every connection: as
/// Chromium's proxy, it sees every request for a non-loopback URL.
struct Trap {
    port: u16,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Trap {
    fn start() -> Trap {
        let listener = TcpListener::bind("127.0.0.1:0").expect("trap listener");
        let port = listener.local_addr().expect("trap address").port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let mut line = String::new();
                let _ = BufReader::new(stream).read_line(&mut line);
                record
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(line.trim().to_string());
            }
        });
        Trap { port, seen }
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Headless Chromium with its own profile and a home whose NSS database
/// trusts the server's `ca` root.
struct Browser {
    home: PathBuf,
    trap: Trap,
    shots: PathBuf,
    runs: std::cell::Cell<u32>,
}

impl Browser {
    fn new(dir: &Path, ca_root: &Path) -> Browser {
        assert!(
            Command::new("chromium").arg("--version").output().is_ok(),
            "chromium is missing (apt-get install chromium; make test installs it)"
        );
        let home = dir.join("home");
        let nssdb = home.join(".pki/nssdb");
        std::fs::create_dir_all(&nssdb).expect("nss db dir");
        let db = format!("sql:{}", nssdb.display());
        let out = run(Command::new("certutil").args(["-N", "--empty-password", "-d", &db]));
        assert!(out.status.success(), "certutil -N: {}", text(&out));
        let out = run(Command::new("certutil")
            .args(["-A", "-d", &db, "-n", "trellis-ca", "-t", "C,,", "-i"])
            .arg(ca_root));
        assert!(out.status.success(), "certutil -A: {}", text(&out));
        let shots = dir.join("screenshots");
        std::fs::create_dir_all(&shots).expect("screenshot dir");
        Browser {
            home,
            trap: Trap::start(),
            shots,
            runs: std::cell::Cell::new(0),
        }
    }

    /// Run Chromium on `url` with `args`; checks what the page asked for
    /// (net log, console) and returns its stdout.
    fn run(&self, size: &str, args: &[String], url: &str) -> String {
        let n = self.runs.get() + 1;
        self.runs.set(n);
        let netlog = self.home.join(format!("net-{n}.json"));
        let out = run(self
            .command(size)
            .arg(format!("--log-net-log={}", netlog.display()))
            .args(["--enable-logging=stderr", "--v=0"])
            .args(args)
            .arg(url));
        let stderr = String::from_utf8_lossy(&out.stderr);
        for line in stderr.lines().filter(|l| l.contains(":CONSOLE")) {
            assert!(
                !line.contains("Content Security Policy") && !line.contains("Refused to"),
                "{url}: the page tried a load its policy forbids: {line}"
            );
        }
        for (request, initiator) in requests(&netlog) {
            let loopback = |u: &str| {
                u.starts_with("https://localhost:")
                    || u.starts_with("https://127.0.0.1:")
                    || u.starts_with("data:")
            };
            let from_page = initiator != "not an origin" && !initiator.is_empty();
            assert!(
                !from_page || loopback(&request),
                "{url}: the page requested {request} (initiator {initiator})"
            );
            if request.contains("localhost") {
                assert!(loopback(&request), "{request}");
            }
        }
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    fn command(&self, size: &str) -> Command {
        let mut cmd = Command::new("chromium");
        cmd.env("HOME", &self.home)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-default-apps",
                "--disable-extensions",
                "--disable-sync",
                "--metrics-recording-only",
                "--disable-features=NetworkTimeServiceQuerying",
                "--hide-scrollbars",
                &format!("--window-size={size}"),
                &format!("--proxy-server=http://127.0.0.1:{}", self.trap.port),
                "--proxy-bypass-list=127.0.0.1;localhost",
            ])
            .arg(format!(
                "--user-data-dir={}",
                self.home.join("profile").display()
            ));
        cmd
    }

    /// The DOM of `url` once loaded.
    fn dom(&self, url: &str) -> String {
        let dom = self.run("1280,1000", &["--dump-dom".to_string()], url);
        assert!(dom.contains("</html>"), "no page from {url}");
        no_foreign_urls(url, &dom);
        dom
    }

    /// A screenshot of `url` at `size` ("W,H") as `name`.png.
    fn screenshot(&self, url: &str, size: &str, name: &str) -> PathBuf {
        let path = self.shots.join(format!("{name}.png"));
        self.run(size, &[format!("--screenshot={}", path.display())], url);
        let bytes = std::fs::metadata(&path).map_or(0, |m| m.len());
        assert!(bytes > 10_000, "no screenshot of {url}");
        // The two the README shows.
        let for_docs = ["console-overview", "console-entry"].contains(&name);
        if let Some(dir) = std::env::var_os("TRELLIS_SCREENSHOTS_DIR").filter(|_| for_docs) {
            let _ = std::fs::copy(&path, Path::new(&dir).join(format!("{name}.png")));
        }
        path
    }
}

/// `(url, initiator)` of every request in a Chromium net log
/// (`initiator` is `"not an origin"` for the browser's own requests and
/// navigations it was told to make, else the origin of the page).
fn requests(netlog: &Path) -> Vec<(String, String)> {
    let Ok(text) = std::fs::read_to_string(netlog) else {
        panic!("no net log at {}", netlog.display());
    };
    // A log cut short ends without its closing brackets.
    let log: serde_json::Value = serde_json::from_str(&text)
        .or_else(|_| serde_json::from_str(&format!("{}]}}", text.trim_end().trim_end_matches(','))))
        .unwrap_or_else(|e| panic!("net log {}: {e}", netlog.display()));
    let start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"].as_u64();
    log["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["type"].as_u64() == start_job && start_job.is_some())
        .filter_map(|e| {
            let url = e["params"]["url"].as_str()?.to_string();
            let initiator = e["params"]["initiator"].as_str().unwrap_or("").to_string();
            Some((url, initiator))
        })
        .collect()
}

/// Every absolute URL in a page must be a loopback one.
fn no_foreign_urls(url: &str, dom: &str) {
    for attr in ["src=\"", "href=\"", "action=\"", "url("] {
        for piece in dom.split(attr).skip(1) {
            let target: String = piece
                .chars()
                .take_while(|c| *c != '"' && *c != ')')
                .collect();
            let foreign = (target.starts_with("http:")
                || target.starts_with("https:")
                || target.starts_with("//"))
                && !target.contains("://localhost")
                && !target.contains("://127.0.0.1");
            assert!(!foreign, "{url} refers to {target}");
        }
    }
}

/// The key labels of every intermediate of every class of the deployment.
fn intermediate_labels(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for class in ["api", "ca", "db", "web"] {
        let state = std::fs::read_to_string(dir.join(format!("classes/{class}/state.toml")))
            .expect("class state");
        for line in state.lines() {
            if let Some(label) = line.strip_prefix("key = \"") {
                out.push((class.to_string(), label.trim_end_matches('"').to_string()));
            }
        }
    }
    out
}

/// Wait until the inventory has indexed entry `seq` (it follows the log
/// once a second).
fn wait_indexed(server: &TestServer, name: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let page = server
            .signed_get("admin", &format!("/v1/log/dev-1/search?name={name}"))
            .json();
        if page["results"].as_array().is_some_and(|r| !r.is_empty()) {
            return page;
        }
        assert!(Instant::now() < deadline, "never indexed: {page}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_console_shows_every_class_finds_what_was_issued_and_verifies_its_proof() {
    let started = Instant::now();
    let server = TestServer::start();
    let tmp = tempfile::Builder::new()
        .prefix("trellis-console")
        .tempdir()
        .expect("temp dir");
    // One issued certificate and one denial, through the signing API.
    let pem = csr(tmp.path(), "pg", "pg-7.db.internal");
    let (status, issued) = server.native_sign("db", &json!({"class": "db", "csr": pem}));
    assert_eq!(status, 200, "{issued}");
    let serial = issued["serial"].as_str().expect("serial").to_string();
    let seq = issued["log"]["index"].as_u64().expect("log index");
    let evil = csr(tmp.path(), "evil", "evil.example.com");
    let (status, denied) = server.native_sign("db", &json!({"class": "db", "csr": evil}));
    assert_eq!(status, 403, "{denied}");
    // A name that is markup: logged as asked, shown as text.
    let markup = "<img src=x onerror=alert(1)>.db.internal";
    let (status, denied) = server.native_sign(
        "db",
        &json!({"class": "db", "csr": csr(tmp.path(), "markup", "m.db.internal"), "hosts": [markup]}),
    );
    assert_eq!(status, 403, "{denied}");

    // The search API: found by name, suffix, serial; a denial with its
    // reasons; nothing without a valid signature.
    let by_name = wait_indexed(&server, "pg-7.db.internal");
    assert_eq!(by_name["results"][0]["serial"], serial.as_str());
    assert_eq!(by_name["results"][0]["seq"], seq);
    let by_suffix = server
        .signed_get(
            "admin",
            "/v1/log/dev-1/search?name=*.db.internal&decision=issued",
        )
        .json();
    assert!(by_suffix["results"]
        .as_array()
        .expect("results")
        .iter()
        .any(|r| r["serial"] == serial.as_str()));
    let by_serial = server
        .signed_get(
            "db",
            &format!("/v1/log/dev-1/search?serial={}", serial.to_uppercase()),
        )
        .json();
    assert_eq!(by_serial["results"][0]["names"][0], "pg-7.db.internal");
    let denials = wait_indexed(&server, "evil.example.com");
    assert_eq!(denials["results"][0]["decision"], "denied");
    assert_eq!(
        denials["results"][0]["reasons"][0]["code"],
        "name_not_allowed"
    );
    let anonymous = server.client().request(
        "GET",
        "/v1/log/dev-1/search?name=pg-7.db.internal",
        &[],
        b"",
    );
    assert_eq!(anonymous.status, 401, "{}", anonymous.text());
    assert!(!anonymous.text().contains("pg-7"));
    let bad = server.signed_get("admin", "/v1/log/dev-1/search?limit=1000");
    assert_eq!(bad.status, 400, "{}", bad.text());

    // The same on the command line, offline, from the file.
    let out = run(Command::new(bin("ca-server"))
        .args(["log", "search", "--dir"])
        .arg(&server.dir)
        .args(["--name", "*.db.internal", "--json"]));
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&serial),
        "{}",
        text(&out)
    );

    // Every console page carries the strict policy.
    let overview = server.client().request("GET", "/ui/", &[], b"");
    assert_eq!(overview.status, 200);
    let csp = overview
        .headers
        .iter()
        .find(|(k, _)| k == "content-security-policy")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    assert!(csp.starts_with("default-src 'none'"), "{csp}");
    assert!(!csp.contains("unsafe") && !csp.contains("http"), "{csp}");

    // The browser.
    let browser = Browser::new(tmp.path(), &server.dir.join("classes/ca/root.pem"));
    let base = format!("https://localhost:{}", server.port());
    let dom = browser.dom(&format!("{base}/ui/"));
    for (class, label) in intermediate_labels(&server.dir) {
        assert!(
            dom.contains(&format!("id=\"class-{class}\"")),
            "class {class}"
        );
        assert!(dom.contains(&label), "intermediate {label} of {class}");
    }
    assert!(dom.contains("active") && dom.contains("verified") && dom.contains("ready"));
    let dom = browser.dom(&format!("{base}/ui/search?name=pg-7.db.internal"));
    assert!(dom.contains(&serial[..16]), "found by name");
    assert!(dom.contains(&format!("/ui/entry/dev-1/{seq}")));
    let dom = browser.dom(&format!("{base}/ui/search?serial={serial}"));
    assert!(dom.contains("pg-7.db.internal"), "found by serial");
    let dom = browser.dom(&format!("{base}/ui/search?decision=denied"));
    assert!(dom.contains("name_not_allowed") && dom.contains("evil.example.com"));
    assert!(
        dom.contains("&lt;img src=x onerror=alert(1)&gt;"),
        "the markup name as text"
    );
    assert!(!dom.contains("<img"), "no element from a logged name");
    let entry_url = format!("{base}/ui/entry/dev-1/{seq}");
    let dom = browser.dom(&entry_url);
    let proof = dom.split("id=\"proof\"").nth(1).expect("proof card");
    assert!(proof.contains(">verified<"), "{proof}");
    assert!(!dom.contains("does not verify"));
    assert!(dom.contains("CN=pg-7.db.internal") && dom.contains("serverAuth"));
    let dom = browser.dom(&format!("{base}/ui/activity"));
    assert!(dom.contains("<svg") && dom.contains("name_not_allowed"));
    let dom = browser.dom(&format!("{base}/ui/findings"));
    assert!(dom.contains("policy_violation"));

    browser.screenshot(&format!("{base}/ui/"), "1280,1100", "console-overview");
    browser.screenshot(&entry_url, "1280,1100", "console-entry");
    browser.screenshot(
        &format!("{base}/ui/search?name=*.db.internal"),
        "1280,700",
        "console-search",
    );
    browser.screenshot(
        &format!("{base}/ui/activity"),
        "1280,900",
        "console-activity",
    );
    browser.screenshot(&format!("{base}/ui/"), "390,844", "console-phone");
    // What reached the trap is the browser's own traffic (the net log
    // showed that no page asked for it).
    let background: std::collections::BTreeSet<String> = browser
        .trap
        .seen()
        .iter()
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
        .collect();
    eprintln!("chromium's own requests, kept on this host: {background:?}");
    eprintln!(
        "screenshots in {} ({:.1} s)",
        browser.shots.display(),
        started.elapsed().as_secs_f64()
    );
    // Keep them for a look when asked to.
    if std::env::var_os("TRELLIS_KEEP_SCREENSHOTS").is_some() {
        let _ = tmp.keep();
    }
}

const OPS_POLICY: &str = r#"description = "Operators (console access)"
default_profile = "client"

[names]
dns = ["*.ops.internal"]
common_name = "must_be_san"
max_sans = 2

[keys]
allowed = ["ec-p256"]
signature_algorithms = ["ecdsa-sha256"]

[profiles.client]
key_usages = ["digital_signature"]
ext_key_usages = ["client_auth"]
default_ttl = "1h"
max_ttl = "8h"
"#;

/// One HTTP/1.1 GET over TLS, presenting `client` (chain PEM, key PEM)
/// when given; `Err` when the handshake fails.
fn get(
    addr: &str,
    ca_root: &Path,
    client: Option<(&Path, &Path)>,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(u16, String), String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let config = match client {
        None => trellis_e2e::client_tls_config(ca_root),
        Some((chain, key)) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca_root)
                .expect("ca root")
                .flatten()
            {
                roots.add(cert).expect("root");
            }
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(chain)
                .expect("chain file")
                .collect::<Result<_, _>>()
                .expect("chain");
            let key = PrivateKeyDer::from_pem_file(key).expect("client key");
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .expect("client certificate")
        }
    };
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
    let conn = rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let tcp = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(10)));
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let mut head = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    tls.write_all(head.as_bytes()).map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    tls.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let raw = String::from_utf8_lossy(&raw).to_string();
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no response: {raw}"))?;
    let body = raw
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Ok((status, body))
}

#[test]
fn off_loopback_the_console_needs_a_console_class_certificate() {
    let tmp = tempfile::Builder::new()
        .prefix("trellis-console-remote")
        .tempdir()
        .expect("temp dir");
    let dir = tmp.path().join("var");
    let out = run(Command::new(bin("ca-server"))
        .args(["dev", "--init-only", "--dir"])
        .arg(&dir));
    assert!(out.status.success(), "{}", text(&out));
    std::fs::write(dir.join("policies/ops.toml"), OPS_POLICY).expect("ops policy");
    let config = dir.join("config.toml");
    let mut text_config = std::fs::read_to_string(&config).expect("config");
    text_config.push_str("\n[ui]\nclient_classes = [\"ops\"]\n");
    std::fs::write(&config, text_config).expect("config");
    // A listener that is not loopback (every address), reached through
    // 127.0.0.1. `dev` initialises the new `ops` class before serving.
    let mut cmd = Command::new(bin("ca-server"));
    cmd.args(["dev", "--listen", "0.0.0.0:0", "--dir"])
        .arg(&dir);
    let mut server = TestServer::spawn(cmd, &dir);
    server.addr = format!("127.0.0.1:{}", server.port());
    let ca_root = dir.join("classes/ca/root.pem");
    let search = "/v1/log/dev-1/search?class=ca";
    let signed = |path: &str| server.auth_header_for("admin", "GET", path, b"");

    // Without a client certificate: no page, no result; the API as before.
    let (status, body) = get(&server.addr, &ca_root, None, "/ui/", &[]).expect("no cert");
    assert_eq!(status, 404, "{body}");
    assert!(
        !body.contains("<html") && !body.contains("Overview"),
        "{body}"
    );
    let auth = signed(search);
    let (status, body) = get(
        &server.addr,
        &ca_root,
        None,
        search,
        &[("authorization", &auth)],
    )
    .expect("no cert");
    assert_eq!(status, 403, "{body}");
    assert!(!body.contains("results"), "{body}");
    let (status, body) = get(&server.addr, &ca_root, None, "/v1/classes", &[]).expect("no cert");
    assert_eq!(status, 200, "{body}");

    // An ops client certificate from the CA itself.
    let pem = openssl_csr(
        tmp.path(),
        "alice",
        P256,
        "/CN=alice.ops.internal",
        &["-addext", "subjectAltName=DNS:alice.ops.internal"],
    );
    let (status, issued) = server.native_sign(
        "admin",
        &json!({"class": "ops", "profile": "client", "csr": pem}),
    );
    assert_eq!(status, 200, "{issued}");
    let chain = tmp.path().join("alice-chain.pem");
    std::fs::write(&chain, issued["chain"].as_str().expect("chain")).expect("chain file");
    let key = tmp.path().join("alice.key");
    let alice = Some((chain.as_path(), key.as_path()));
    let (status, body) = get(&server.addr, &ca_root, alice, "/ui/", &[]).expect("ops cert");
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("Overview") && body.contains("id=\"class-ops\""),
        "{body}"
    );
    let auth = signed(search);
    let (status, body) = get(
        &server.addr,
        &ca_root,
        alice,
        search,
        &[("authorization", &auth)],
    )
    .expect("ops cert");
    assert_eq!(status, 200, "{body}");
    let page: serde_json::Value = serde_json::from_str(&body).expect("search page");
    assert!(
        !page["results"].as_array().expect("results").is_empty(),
        "{body}"
    );
    // The certificate opens the console, not the API: search still needs
    // a signed request.
    let (status, _) = get(&server.addr, &ca_root, alice, search, &[]).expect("ops cert");
    assert_eq!(status, 401);
    server.stop();
}
