//! `ca-client` end to end: the real sidecar binary against a real
//! `ca-server dev` (SoftHSM2 tokens, HTTPS, HMAC auth), with short-lived
//! certificates. Keys, certificates and chains are checked with openssl.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use trellis_e2e::pg::free_port;
use trellis_e2e::{bin, http_get, openssl_verify, run, text, wait_until, Daemon, TestServer};

/// The base command for the `db` class with `a.db.internal`.
fn client(server: &TestServer, out: &Path) -> Command {
    client_with_secret(server, out, &server.dir.join("secrets/auth-db.hex"))
}

fn client_with_secret(server: &TestServer, out: &Path, secret: &Path) -> Command {
    let mut cmd = Command::new(bin("ca-client"));
    cmd.arg("--ca")
        .arg(server.url())
        .arg("--ca-root")
        .arg(server.dir.join("classes/ca/root.pem"))
        .args(["--class", "db", "--profile", "server", "--key-id", "db"])
        .arg("--key-secret-file")
        .arg(secret)
        .args(["--dns", "a.db.internal", "--out"])
        .arg(out)
        .env_remove("RUST_LOG");
    cmd
}

fn openssl(args: &[&str], file: &Path) -> String {
    let out = run(Command::new("openssl").args(args).arg(file));
    assert!(out.status.success(), "openssl {args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn serial(cert: &Path) -> String {
    openssl(&["x509", "-noout", "-serial", "-in"], cert)
        .trim()
        .trim_start_matches("serial=")
        .to_lowercase()
}

/// The files on disk are a complete pair: the key's public key is the
/// certificate's, and the certificate verifies against the class root
/// through chain.pem; fullchain.pem is cert + chain.
fn assert_consistent(server: &TestServer, out: &Path) {
    let cert_pub = openssl(&["x509", "-noout", "-pubkey", "-in"], &out.join("cert.pem"));
    let key_pub = openssl(&["pkey", "-pubout", "-in"], &out.join("key.pem"));
    assert_eq!(cert_pub, key_pub, "key.pem does not match cert.pem");
    let (ok, msg) = openssl_verify(
        &server.dir.join("classes/db/root.pem"),
        &out.join("chain.pem"),
        &out.join("cert.pem"),
    );
    assert!(ok, "{msg}");
    let full = std::fs::read_to_string(out.join("fullchain.pem")).unwrap();
    let cert = std::fs::read_to_string(out.join("cert.pem")).unwrap();
    let chain = std::fs::read_to_string(out.join("chain.pem")).unwrap();
    assert_eq!(full, format!("{cert}{chain}"));
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn one_line_failure(out: &Output) -> String {
    assert!(!out.status.success(), "unexpected success: {}", text(out));
    assert_eq!(out.status.code(), Some(1), "{}", text(out));
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(err.lines().count(), 1, "not one line: {err:?}");
    err
}

fn requests(server: &TestServer, endpoint: &str) -> f64 {
    server.metric(
        "trellis_http_requests_total",
        &format!("endpoint=\"{endpoint}\""),
    )
}

#[test]
fn a_start_asks_everything_over_one_connection() {
    // A first start asks for the class list, bundle, chain, certificate,
    // log key and CRLs: all of it over one TLS connection (the client's
    // debug event for each connection it opens is counted).
    let server = TestServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("tls");
    let first = run(client(&server, &out)
        .arg("--once")
        .env("RUST_LOG", "ca_client::conn=debug"));
    assert!(first.status.success(), "{}", text(&first));
    assert_consistent(&server, &out);
    let stderr = String::from_utf8_lossy(&first.stderr);
    let opened = stderr.matches("connected to the CA").count();
    assert_eq!(opened, 1, "connections opened by one start: {stderr}");
    assert_eq!(requests(&server, "native_sign"), 1.0);
}

#[test]
fn once_writes_valid_files_and_if_needed_makes_no_request() {
    let server = TestServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("tls");
    let env_file = tmp.path().join("reload.env");

    let first = run(client(&server, &out)
        .args(["--once", "--trust", "api", "--on-renew"])
        .arg(format!(
            "env | grep -E '^(CA_CLIENT|TRELLIS)_' > '{}'",
            env_file.display()
        )));
    assert!(first.status.success(), "{}", text(&first));
    assert_eq!(String::from_utf8_lossy(&first.stdout).lines().count(), 1);
    assert_consistent(&server, &out);
    assert_eq!(mode(&out.join("key.pem")), 0o600);
    assert_eq!(mode(&out.join("cert.pem")), 0o644);
    assert_eq!(
        std::fs::read_to_string(out.join("trust/api.pem")).unwrap(),
        std::fs::read_to_string(server.dir.join("classes/api/root.pem")).unwrap()
    );
    let env = std::fs::read_to_string(&env_file).unwrap();
    for (var, file) in [
        ("CA_CLIENT_CERT", "cert.pem"),
        ("CA_CLIENT_KEY", "key.pem"),
        ("CA_CLIENT_CHAIN", "chain.pem"),
        ("TRELLIS_FULLCHAIN", "fullchain.pem"),
    ] {
        let line = format!("{var}={}", out.join(file).display());
        assert!(env.lines().any(|l| l == line), "{line} not in {env}");
    }
    let serial1 = serial(&out.join("cert.pem"));

    // --if-needed: a fresh certificate means no request at all.
    let signs = requests(&server, "native_sign");
    let pems = requests(&server, "class_pem");
    let again = run(client(&server, &out).args(["--once", "--if-needed", "--trust", "api"]));
    assert!(again.status.success(), "{}", text(&again));
    assert!(again.stderr.is_empty(), "{}", text(&again));
    assert!(text(&again).contains("no request made"), "{}", text(&again));
    assert_eq!(requests(&server, "native_sign"), signs);
    assert_eq!(requests(&server, "class_pem"), pems);
    assert_eq!(serial(&out.join("cert.pem")), serial1);

    // Plain --once always renews, with a new key.
    let key1 = std::fs::read(out.join("key.pem")).unwrap();
    let renewed = run(client(&server, &out).arg("--once"));
    assert!(renewed.status.success(), "{}", text(&renewed));
    assert_ne!(serial(&out.join("cert.pem")), serial1);
    assert_ne!(std::fs::read(out.join("key.pem")).unwrap(), key1);
    assert_consistent(&server, &out);
    let serial2 = serial(&out.join("cert.pem"));

    // Failures: one line with the reason; the valid files stay.
    let denied = run(client(&server, &out).args(["--once", "--dns", "evil.example.com"]));
    let err = one_line_failure(&denied);
    assert!(err.contains("policy_denied"), "{err}");
    let wrong = tmp.path().join("wrong.hex");
    std::fs::write(&wrong, "00".repeat(32)).unwrap();
    // ca-client refuses secret files readable by group or others.
    std::fs::set_permissions(&wrong, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let unauth = run(client_with_secret(&server, &out, &wrong).arg("--once"));
    let err = one_line_failure(&unauth);
    assert!(err.contains("unauthenticated"), "{err}");
    let bad_config = run(client(&server, &out).args(["--once", "--renew-fraction", "2"]));
    assert_eq!(bad_config.status.code(), Some(2), "{}", text(&bad_config));
    assert_eq!(serial(&out.join("cert.pem")), serial2);
    assert_consistent(&server, &out);

    // Other key algorithms; RSA only as a provisioned key (ring cannot
    // generate one), kept across renewals.
    for alg in ["ec-p384", "ed25519"] {
        let dir = tmp.path().join(alg);
        let got = run(client(&server, &dir).args(["--once", "--key-algorithm", alg]));
        assert!(got.status.success(), "{alg}: {}", text(&got));
        assert_consistent(&server, &dir);
    }
    let rsa_dir = tmp.path().join("rsa");
    std::fs::create_dir_all(&rsa_dir).unwrap();
    let genkey = run(Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(rsa_dir.join("key.pem")));
    assert!(genkey.status.success(), "{}", text(&genkey));
    let rsa_pub = openssl(&["pkey", "-pubout", "-in"], &rsa_dir.join("key.pem"));
    let refused = run(client(&server, &tmp.path().join("rsa-gen")).args([
        "--once",
        "--key-algorithm",
        "rsa",
    ]));
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    assert!(text(&refused).contains("ring"), "{}", text(&refused));
    for _ in 0..2 {
        let got = run(client(&server, &rsa_dir).args([
            "--once",
            "--key-algorithm",
            "rsa",
            "--no-rotate-key",
        ]));
        assert!(got.status.success(), "{}", text(&got));
        assert_consistent(&server, &rsa_dir);
        assert_eq!(
            openssl(&["pkey", "-pubout", "-in"], &rsa_dir.join("key.pem")),
            rsa_pub
        );
    }

    // The same from a config file (paths relative to the file).
    let conf_dir = tmp.path().join("conf");
    std::fs::create_dir_all(&conf_dir).unwrap();
    std::fs::copy(
        server.dir.join("secrets/auth-db.hex"),
        conf_dir.join("db.hex"),
    )
    .unwrap();
    std::fs::write(
        conf_dir.join("ca-client.toml"),
        format!(
            "ca = [\"{}\"]\nca_root = \"{}\"\nclass = \"db\"\nprofile = \"peer\"\n\
             key_id = \"db\"\nkey_secret_file = \"db.hex\"\ndns = [\"c.db.internal\"]\n\
             uri = [\"spiffe://trellis.internal/db/c\"]\nout = \"out\"\ntrust = [\"api\", \"web\"]\n\
             cert_mode = 0o640\nttl = \"2h\"\n",
            server.url(),
            server.dir.join("classes/ca/root.pem").display()
        ),
    )
    .unwrap();
    let got = run(Command::new(bin("ca-client"))
        .arg("--config")
        .arg(conf_dir.join("ca-client.toml"))
        .arg("--once"));
    assert!(got.status.success(), "{}", text(&got));
    let conf_out = conf_dir.join("out");
    assert_consistent(&server, &conf_out);
    assert_eq!(mode(&conf_out.join("cert.pem")), 0o640);
    assert!(conf_out.join("trust/web.pem").exists());
    let dates = openssl(
        &[
            "x509",
            "-noout",
            "-startdate",
            "-enddate",
            "-ext",
            "subjectAltName",
            "-in",
        ],
        &conf_out.join("cert.pem"),
    );
    assert!(
        dates.contains("URI:spiffe://trellis.internal/db/c"),
        "{dates}"
    );

    // First contact with only the fingerprint of the `ca` root.
    let ca_root = server.dir.join("classes/ca/root.pem");
    let fingerprint = openssl(
        &["x509", "-noout", "-fingerprint", "-sha256", "-in"],
        &ca_root,
    );
    let hex = fingerprint
        .trim()
        .rsplit('=')
        .next()
        .unwrap()
        .replace(':', "");
    let pinned_out = tmp.path().join("pinned");
    let pinned = run(Command::new(bin("ca-client"))
        .arg("--ca")
        .arg(server.url())
        .args(["--ca-root-sha256", &hex])
        .args(["--class", "db", "--key-id", "db", "--key-secret-file"])
        .arg(server.dir.join("secrets/auth-db.hex"))
        .args(["--dns", "b.db.internal", "--once", "--out"])
        .arg(&pinned_out));
    assert!(pinned.status.success(), "{}", text(&pinned));
    assert_eq!(
        std::fs::read(pinned_out.join("ca-root.pem")).unwrap(),
        std::fs::read(&ca_root).unwrap()
    );
    let bad_pin = run(Command::new(bin("ca-client"))
        .arg("--ca")
        .arg(server.url())
        .args(["--ca-root-sha256", &"00".repeat(32)])
        .args(["--class", "db", "--key-id", "db", "--key-secret-file"])
        .arg(server.dir.join("secrets/auth-db.hex"))
        .args(["--dns", "b.db.internal", "--once", "--out"])
        .arg(tmp.path().join("badpin")));
    let err = one_line_failure(&bad_pin);
    assert!(err.contains("ca_root_sha256"), "{err}");
}

struct Attempt {
    /// Seconds of the day, from the log line's own timestamp.
    at: f64,
    delay: f64,
    ceiling: f64,
}

/// Seconds of the day of a tracing text line (`2026-01-01T12:00:00.123456Z …`).
fn log_time(line: &str) -> Option<f64> {
    let stamp = line.split_whitespace().next()?;
    let time = stamp.split('T').nth(1)?.trim_end_matches('Z');
    let mut parts = time.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

/// The transient failures `daemon` logged since `since`, with their
/// announced retry delay and backoff ceiling.
fn failures_since(daemon: &Daemon, since: Instant) -> Vec<Attempt> {
    let field = |line: &str, name: &str| -> Option<f64> {
        let rest = line.split(&format!("{name}=")).nth(1)?;
        rest.split_whitespace().next()?.parse().ok()
    };
    daemon
        .lines()
        .iter()
        .filter(|(t, l)| *t >= since && l.contains("renewal failed"))
        .filter_map(|(_, l)| {
            Some(Attempt {
                at: log_time(l)?,
                delay: field(l, "retry_in_secs")?,
                ceiling: field(l, "backoff_ceiling_secs")?,
            })
        })
        .collect()
}

/// A TLS echo server built with the ca-client library: its identity follows
/// the sidecar's files. Returns its port.
fn library_tls_server(out: &Path) -> u16 {
    let identity = ca_client::tls::Identity::from_dir(out).unwrap();
    let config = Arc::new(ca_client::tls::server_config(identity.clone(), None).unwrap());
    // Leaked on purpose: reloads for the rest of the test process.
    std::mem::forget(ca_client::tls::watch(
        Some(identity),
        Vec::new(),
        Duration::from_millis(200),
    ));
    trellis_e2e::tls_echo_server(config)
}

/// A full handshake (no resumption) trusting the db root; returns the
/// serial of the presented certificate.
fn handshake_serial(db_root: &Path, port: u16) -> Result<String, String> {
    let mut config = trellis_e2e::client_tls_config(db_root);
    config.resumption = rustls::client::Resumption::disabled();
    let name = rustls_pki_types::ServerName::try_from("a.db.internal").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let tcp = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(10)));
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(b"ping").map_err(|e| e.to_string())?;
    let mut buf = [0u8; 4];
    tls.read_exact(&mut buf).map_err(|e| e.to_string())?;
    let cert = tls
        .conn
        .peer_certificates()
        .and_then(|c| c.first().cloned())
        .ok_or("no certificate")?;
    let (_, parsed) =
        x509_parser::parse_x509_certificate(cert.as_ref()).map_err(|e| e.to_string())?;
    Ok(parsed
        .raw_serial()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(u64::MAX)
}

#[test]
fn daemon_renews_short_lived_certificates_and_a_library_server_follows() {
    let server = TestServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("tls");
    let reloads = tmp.path().join("reloads.log");
    let metrics = format!("127.0.0.1:{}", free_port());

    // An init container first, so the library server has files to load.
    let init = run(client(&server, &out).args(["--once", "--ttl", "60s"]));
    assert!(init.status.success(), "{}", text(&init));
    let port = library_tls_server(&out);
    let db_root = server.dir.join("classes/db/root.pem");
    let first = handshake_serial(&db_root, port).unwrap();

    let mut cmd = client(&server, &out);
    cmd.args(["--ttl", "60s", "--renew-fraction", "0.2"])
        .args(["--metrics-listen", &metrics])
        .arg("--on-renew")
        .arg(format!(
            "echo \"$CA_CLIENT_CERT $CA_CLIENT_KEY $CA_CLIENT_CHAIN $(openssl x509 -noout -serial -in \"$CA_CLIENT_CERT\")\" >> '{}'",
            reloads.display()
        ));
    let mut daemon = Daemon::start(cmd);

    // Three renewals of a 60 s certificate, each followed by the reload
    // action with the right paths, and by new handshakes presenting it.
    let mut presented = vec![first];
    let ok = wait_until(Duration::from_secs(120), || {
        if let Ok(s) = handshake_serial(&db_root, port) {
            if presented.last() != Some(&s) {
                presented.push(s);
            }
        }
        std::fs::read_to_string(&reloads)
            .map(|t| t.lines().count() >= 3)
            .unwrap_or(false)
            && presented.len() >= 4
    });
    let log = std::fs::read_to_string(&reloads).unwrap_or_default();
    assert!(
        ok,
        "reloads:\n{log}\npresented: {presented:?}\n{}",
        daemon.log()
    );
    let mut serials = Vec::new();
    for line in log.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        assert_eq!(fields.len(), 4, "{line}");
        assert_eq!(fields[0], out.join("cert.pem").to_str().unwrap());
        assert_eq!(fields[1], out.join("key.pem").to_str().unwrap());
        assert_eq!(fields[2], out.join("chain.pem").to_str().unwrap());
        serials.push(fields[3].trim_start_matches("serial=").to_lowercase());
    }
    let mut unique = serials.clone();
    unique.dedup();
    assert_eq!(unique, serials, "every reload saw a new certificate");
    assert_consistent(&server, &out);
    // Every presented certificate was a different one.
    let mut sorted = presented.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), presented.len(), "{presented:?}");

    // Its own metrics and health.
    let (status, body) = http_get(&metrics, "/healthz");
    assert_eq!(status, 200, "{body}");
    let (_, page) = http_get(&metrics, "/metrics");
    let renewals: f64 = page
        .lines()
        .find_map(|l| l.strip_prefix("trellis_client_renewals_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    assert!(renewals >= 3.0, "{page}");
    assert!(
        page.contains("trellis_client_cert_expiry_seconds"),
        "{page}"
    );

    // Idle resident set (debug build) below 20 MiB.
    let rss = rss_kib(daemon.child.id());
    assert!(rss < 20 * 1024, "RSS {rss} KiB");

    let status = daemon.terminate();
    assert!(status.success(), "{status:?}\n{}", daemon.log());
}

/// `ca-server dev` on a fixed port (to restart the same deployment where
/// the client expects it).
fn start_server_on(dir: &Path, port: u16) -> Child {
    let mut child = Command::new(bin("ca-server"))
        .args(["dev", "--listen", &format!("127.0.0.1:{port}"), "--dir"])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let started = lines
        .by_ref()
        .take(100)
        .map_while(Result::ok)
        .any(|l| l.starts_with("listening on "));
    assert!(started, "ca-server did not restart on port {port}");
    std::thread::spawn(move || for _ in lines {});
    child
}

#[test]
fn ca_outage_keeps_the_certificate_backs_off_and_recovers() {
    let mut server = TestServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("tls");
    let mut cmd = client(&server, &out);
    cmd.args(["--ttl", "60s", "--renew-fraction", "0.2"]);
    let daemon = Daemon::start(cmd);
    assert!(
        wait_until(Duration::from_secs(60), || out.join("cert.pem").exists()),
        "{}",
        daemon.log()
    );
    assert_consistent(&server, &out);

    // Outage.
    server.stop();
    let outage = Instant::now();
    let held = serial(&out.join("cert.pem"));
    let cert = std::fs::read(out.join("cert.pem")).unwrap();
    let key = std::fs::read(out.join("key.pem")).unwrap();
    // 50 s: past the renewal point, past expiry of the 60 s certificate.
    while outage.elapsed() < Duration::from_secs(50) {
        assert_eq!(std::fs::read(out.join("cert.pem")).unwrap(), cert);
        assert_eq!(std::fs::read(out.join("key.pem")).unwrap(), key);
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_consistent(&server, &out);
    assert_eq!(serial(&out.join("cert.pem")), held);

    // Backoff: few attempts, each announced ceiling twice the previous one
    // (1 s, 2 s, 4 s, …), and every retry waits the delay it announced.
    let failures = failures_since(&daemon, outage);
    assert!(failures.len() >= 3, "{}", daemon.log());
    assert!(
        failures.len() <= 15,
        "{} attempts in 50 s: no backoff\n{}",
        failures.len(),
        daemon.log()
    );
    for pair in failures.windows(2) {
        let (prev, next) = (&pair[0], &pair[1]);
        assert_eq!(
            next.ceiling,
            (prev.ceiling * 2.0).min(300.0),
            "ceilings do not double\n{}",
            daemon.log()
        );
        let gap = (next.at - prev.at).rem_euclid(86_400.0);
        assert!(
            gap + 0.01 >= prev.delay && gap <= prev.delay + 5.0,
            "retry after {gap:.2} s, announced {:.2} s\n{}",
            prev.delay,
            daemon.log()
        );
    }

    // The CA comes back on the same address: renewal within the backoff cap.
    let mut restarted = start_server_on(&server.dir, server.port());
    let back = Instant::now();
    let renewed = wait_until(Duration::from_secs(320), || {
        out.join("cert.pem").exists() && serial(&out.join("cert.pem")) != held
    });
    let _ = restarted.kill();
    let _ = restarted.wait();
    assert!(
        renewed,
        "no renewal after the CA came back\n{}",
        daemon.log()
    );
    assert!(back.elapsed() <= Duration::from_secs(310));
    assert_consistent(&server, &out);
}

#[test]
fn sigkill_during_renewals_never_leaves_a_broken_pair() {
    let server = TestServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("tls");
    let mut full_run = Duration::MAX;
    for _ in 0..3 {
        let start = Instant::now();
        let done = run(client(&server, &out).arg("--once"));
        assert!(done.status.success(), "{}", text(&done));
        full_run = full_run.min(start.elapsed());
        assert_consistent(&server, &out);
    }

    // Kill `--once` renewals (key generation, request, the writes, the
    // link switch) at moments spread over a whole run.
    let mut killed_mid_run = 0;
    for i in 0..40u32 {
        let mut child = client(&server, &out)
            .arg("--once")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let delay = full_run.mul_f64(f64::from(i % 20) / 20.0);
        std::thread::sleep(delay);
        if child.try_wait().unwrap().is_none() {
            killed_mid_run += 1;
        }
        let _ = child.kill();
        let _ = child.wait();
        assert_consistent(&server, &out);
    }
    assert!(
        killed_mid_run >= 10,
        "only {killed_mid_run} kills hit a running client"
    );

    // A daemon killed at random moments of its renewals.
    for i in 0..6u64 {
        let mut cmd = client(&server, &out);
        cmd.args(["--ttl", "60s", "--renew-fraction", "0.05"]);
        let mut daemon = Daemon::start(cmd);
        std::thread::sleep(Duration::from_millis(700 + 431 * i));
        let _ = daemon.child.kill();
        let _ = daemon.child.wait();
        assert_consistent(&server, &out);
    }

    // And the next run cleans up and succeeds.
    let last = run(client(&server, &out).arg("--once"));
    assert!(last.status.success(), "{}", text(&last));
    assert_consistent(&server, &out);
    let leftovers: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let generations = std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(".gen-"))
        .count();
    assert!(generations <= 2, "{generations} generations kept");
}

/// The sidecar installs a certificate only with issuance-log evidence that
/// verifies: a CA that does not log (here `--no-log`) or a wrong pinned log
/// key gets nothing installed, unless the operator opts out explicitly.
#[test]
fn certificates_without_verified_log_evidence_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    // a logging server: the default (proof required) installs, also with the pinned key
    let server = TestServer::start();
    let pinned = tmp.path().join("log-key.pem");
    std::fs::copy(server.dir.join("log/dev-1/log-key.pem"), &pinned).unwrap();
    let ok = run(client(&server, &tmp.path().join("a"))
        .arg("--once")
        .arg("--log-public-key")
        .arg(&pinned));
    assert!(ok.status.success(), "{}", text(&ok));
    // a wrong pinned key: refused, nothing installed
    let other = TestServer::start();
    let wrong = tmp.path().join("wrong-key.pem");
    std::fs::copy(other.dir.join("log/dev-1/log-key.pem"), &wrong).unwrap();
    let out = tmp.path().join("b");
    let refused = run(client(&server, &out)
        .arg("--once")
        .arg("--log-public-key")
        .arg(&wrong));
    let err = one_line_failure(&refused);
    assert!(
        err.contains("inclusion_proof") || err.contains("does not verify"),
        "{err}"
    );
    assert!(!out.join("cert.pem").exists());
    drop(other);
    drop(server);

    // a server that keeps no log
    let dir = tmp.path().join("nolog");
    let server = TestServer::start_in(&dir, &["--no-log"]);
    let out = tmp.path().join("c");
    let refused = run(client(&server, &out).arg("--once"));
    let err = one_line_failure(&refused);
    assert!(err.contains("inclusion proof required"), "{err}");
    assert!(!out.join("cert.pem").exists());
    let accepted = run(client(&server, &out).args(["--once", "--no-require-inclusion-proof"]));
    assert!(accepted.status.success(), "{}", text(&accepted));
}
