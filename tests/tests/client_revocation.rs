//! Revocation through the sidecar and the library, end to end: the real
//! `ca-client` daemons against a real `ca-server dev`.
//!
//! - a `db` sidecar trusting `api` (default `crl_refresh`, 60 s) writes
//!   `trust/api.crl.pem`; once an `api` certificate is revoked (the admin
//!   command `ca-server revoke`), the file lists it within a minute, a
//!   rustls client built with `ca_client::tls` on that trust directory
//!   refuses a server presenting the revoked certificate and accepts one
//!   presenting an unrevoked one, and the `api` sidecar finds its own
//!   serial in its class's CRL and enrols again with a new key;
//! - `ca-client revoke` revokes the installed certificate with its own key
//!   (one line, exit 0; `already_revoked` the second time, exit 1), after
//!   which the next run enrols with a new key; with `--no-reenrol` the
//!   sidecar stays put (`--once --if-needed` fails, the daemon's `/healthz`
//!   says revoked) until a plain `--once`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use trellis_e2e::pg::free_port;
use trellis_e2e::{bin, http_get, run, text, wait_until, Daemon, TestServer};

/// A sidecar of `class` for `dns`, writing to `out`.
fn sidecar(server: &TestServer, class: &str, dns: &str, out: &Path) -> Command {
    let mut cmd = Command::new(bin("ca-client"));
    cmd.arg("--ca")
        .arg(server.url())
        .arg("--ca-root")
        .arg(server.dir.join("classes/ca/root.pem"))
        .args(["--class", class, "--key-id", class])
        .arg("--key-secret-file")
        .arg(server.dir.join(format!("secrets/auth-{class}.hex")))
        .args(["--dns", dns, "--out"])
        .arg(out)
        .env_remove("RUST_LOG");
    cmd
}

/// The serial of the first certificate of a PEM file, lowercase hex as the
/// CA writes it (no sign-padding zero byte); None while it is unreadable.
fn serial_of(pem_file: &Path) -> Option<String> {
    let text = std::fs::read(pem_file).ok()?;
    let der = ca_client::pem::parse_certs(&text)
        .ok()?
        .into_iter()
        .next()?;
    Some(ca_client::pem::facts(&der).ok()?.serial)
}

/// The public key of a sidecar's installed certificate.
fn public_key_of(out: &Path) -> Option<Vec<u8>> {
    let text = std::fs::read(out.join("cert.pem")).ok()?;
    let der = ca_client::pem::parse_certs(&text)
        .ok()?
        .into_iter()
        .next()?;
    Some(ca_client::pem::facts(&der).ok()?.public_key)
}

/// Whether the CRL file lists `serial`.
fn crl_lists(crl_file: &Path, serial: &str) -> bool {
    std::fs::read(crl_file)
        .ok()
        .and_then(|b| ca_client::crl::decode_pem(&b).ok())
        .is_some_and(|crls| crls.iter().any(|c| c.lists_hex(serial)))
}

fn one_line(out: &Output, stream: &[u8]) -> String {
    let s = String::from_utf8_lossy(stream).to_string();
    assert_eq!(s.lines().count(), 1, "not one line: {}", text(out));
    s
}

/// A TLS echo server built with the library, presenting `identity`.
fn library_server(identity: Arc<ca_client::tls::Identity>) -> u16 {
    let config = Arc::new(
        ca_client::tls::server_config(identity, None)
            .unwrap_or_else(|e| panic!("server config: {e}")),
    );
    trellis_e2e::tls_echo_server(config)
}

/// One full handshake + echo as `a.api.internal`; the serial presented.
fn dial(config: &Arc<rustls::ClientConfig>, port: u16) -> Result<String, String> {
    let name =
        rustls_pki_types::ServerName::try_from("a.api.internal").map_err(|e| e.to_string())?;
    let conn = rustls::ClientConnection::new(config.clone(), name).map_err(|e| e.to_string())?;
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
    ca_client::pem::facts(&cert)
        .map(|f| f.serial)
        .map_err(|e| e.to_string())
}

#[test]
fn a_revoked_peer_is_refused_within_a_minute_and_the_revoked_sidecar_reenrols() {
    let server = TestServer::start();
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let api_out = tmp.path().join("api");
    let db_out = tmp.path().join("db");
    let api_metrics = format!("127.0.0.1:{}", free_port());

    let mut api_cmd = sidecar(&server, "api", "a.api.internal", &api_out);
    api_cmd.args(["--crl-refresh", "10s", "--metrics-listen", &api_metrics]);
    let mut api = Daemon::start(api_cmd);
    let mut db_cmd = sidecar(&server, "db", "a.db.internal", &db_out);
    db_cmd.args(["--trust", "api"]);
    let mut db = Daemon::start(db_cmd);
    let api_crl = db_out.join("trust/api.crl.pem");
    assert!(
        wait_until(Duration::from_secs(60), || {
            serial_of(&api_out.join("cert.pem")).is_some() && api_crl.exists()
        }),
        "api:\n{}\ndb:\n{}",
        api.log(),
        db.log()
    );
    let revoked = serial_of(&api_out.join("cert.pem")).unwrap_or_default();
    let revoked_key = public_key_of(&api_out);
    assert!(!crl_lists(&api_crl, &revoked));

    // Library servers: one keeps presenting the certificate about to be
    // revoked, the other follows the api sidecar's files.
    let frozen = tmp.path().join("frozen.pem");
    std::fs::copy(api_out.join("combined.pem"), &frozen).unwrap_or_else(|e| panic!("{e}"));
    let frozen_port = library_server(
        ca_client::tls::Identity::from_combined(&frozen).unwrap_or_else(|e| panic!("{e}")),
    );
    let following = ca_client::tls::Identity::from_dir(&api_out).unwrap_or_else(|e| panic!("{e}"));
    let following_port = library_server(following.clone());
    // A client of the db service: trusts api through the db sidecar's
    // trust directory (bundle and CRLs), reloading them.
    let trust = ca_client::tls::PeerTrust::for_classes(
        &db_out.join("trust"),
        &["api"],
        ca_client::tls::NameCheck::Verify,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let _watcher = ca_client::tls::watch(
        Some(following),
        vec![trust.clone()],
        Duration::from_millis(200),
    );
    let mut client = ca_client::tls::client_config(None, &trust).unwrap_or_else(|e| panic!("{e}"));
    client.resumption = rustls::client::Resumption::disabled();
    let client = Arc::new(client);
    assert_eq!(dial(&client, frozen_port).as_deref(), Ok(revoked.as_str()));
    assert_eq!(
        dial(&client, following_port).as_deref(),
        Ok(revoked.as_str())
    );

    // Revoke it with the admin command.
    let out = run(Command::new(bin("ca-server"))
        .args(["revoke", "--class", "api", "--serial", &revoked])
        .args(["--reason", "keyCompromise", "--dir"])
        .arg(&server.dir));
    assert!(out.status.success(), "{}", text(&out));
    let revoked_at = Instant::now();

    // Within a minute (the default crl_refresh) the db sidecar's CRL file
    // lists it (plus the server's own pick-up, at most a second).
    assert!(
        wait_until(Duration::from_secs(65), || crl_lists(&api_crl, &revoked)),
        "not listed after {:?}\ndb:\n{}",
        revoked_at.elapsed(),
        db.log()
    );
    assert!(
        revoked_at.elapsed() <= Duration::from_secs(62),
        "{:?}",
        revoked_at.elapsed()
    );
    assert!(!db.matching("CRLs updated").is_empty(), "db:\n{}", db.log());

    // The library client refuses the revoked server (once its watcher read
    // the file) and accepts the unrevoked one.
    let mut refusal = String::new();
    assert!(
        wait_until(Duration::from_secs(10), || {
            match dial(&client, frozen_port) {
                Ok(_) => false,
                Err(e) => {
                    refusal = e;
                    true
                }
            }
        }),
        "the revoked server is still accepted"
    );
    assert!(refusal.contains("Revoked"), "{refusal}");

    // The api sidecar finds its serial in its own class's CRL and enrols
    // again at once, with a new key; the following server presents it and
    // it is accepted.
    assert!(
        wait_until(Duration::from_secs(30), || serial_of(
            &api_out.join("cert.pem")
        )
        .is_some_and(|s| s != revoked)),
        "no re-enrolment\napi:\n{}",
        api.log()
    );
    assert_ne!(public_key_of(&api_out), revoked_key, "a new key");
    assert!(
        !api.matching("the installed certificate is revoked")
            .is_empty(),
        "api:\n{}",
        api.log()
    );
    let renewed = serial_of(&api_out.join("cert.pem")).unwrap_or_default();
    let mut presented = Err(String::new());
    assert!(
        wait_until(Duration::from_secs(10), || {
            presented = dial(&client, following_port);
            presented.as_deref() == Ok(renewed.as_str())
        }),
        "{presented:?}"
    );
    assert!(dial(&client, frozen_port).is_err(), "still refused");
    let (_, page) = http_get(&api_metrics, "/metrics");
    assert!(
        page.lines()
            .any(|l| l == "trellis_client_revoked_reenrolments_total 1"),
        "{page}"
    );
    assert!(
        page.lines().any(|l| l == "trellis_client_cert_revoked 0"),
        "{page}"
    );
    let (status, body) = http_get(&api_metrics, "/healthz");
    assert_eq!(status, 200, "{body}");

    assert!(api.terminate().success(), "{}", api.log());
    assert!(db.terminate().success(), "{}", db.log());
}

#[test]
fn the_sidecar_revokes_its_own_certificate_and_enrols_again() {
    let server = TestServer::start();
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let out = tmp.path().join("api");
    let api = || sidecar(&server, "api", "a.api.internal", &out);
    let first = run(api().arg("--once"));
    assert!(first.status.success(), "{}", text(&first));
    let serial = serial_of(&out.join("cert.pem")).unwrap_or_default();
    let key = public_key_of(&out);

    // Revoked with its own key: one line, exit 0.
    let done = run(api().args(["revoke", "--reason", "superseded"]));
    assert!(done.status.success(), "{}", text(&done));
    assert!(done.stderr.is_empty(), "{}", text(&done));
    let line = one_line(&done, &done.stdout);
    assert!(
        line.contains(&format!(
            "revoked certificate {serial} of class 'api' (superseded)"
        )),
        "{line}"
    );
    // A second time: the CA's already_revoked, one line, exit 1.
    let again = run(api().args(["revoke", "--reason", "superseded"]));
    assert_eq!(again.status.code(), Some(1), "{}", text(&again));
    let line = one_line(&again, &again.stderr);
    assert!(line.contains("already_revoked"), "{line}");
    // A reason that RFC 5280 does not name (for Trellis): a usage error.
    let bad = run(api().args(["revoke", "--reason", "certificateHold"]));
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));

    // The CA publishes it.
    assert!(wait_until(Duration::from_secs(10), || {
        let page = server
            .client()
            .request("GET", "/v1/classes/api/crl?format=pem", &[], b"");
        page.status == 200
            && ca_client::crl::decode_pem(&page.body)
                .is_ok_and(|crls| crls.iter().any(|c| c.lists_hex(&serial)))
    }));

    // The next run enrols with a new key, although the certificate is
    // neither expired nor due (--if-needed).
    let next = run(api().args(["--once", "--if-needed"]));
    assert!(next.status.success(), "{}", text(&next));
    let second = serial_of(&out.join("cert.pem")).unwrap_or_default();
    assert_ne!(second, serial);
    assert_ne!(public_key_of(&out), key);
    assert!(!out.join(".state/revoked.json").exists(), "marker cleared");

    // --no-reenrol: the sidecar stays put until a plain --once.
    let retire = run(api().args(["revoke", "--reason", "cessationOfOperation", "--no-reenrol"]));
    assert!(retire.status.success(), "{}", text(&retire));
    assert!(text(&retire).contains("--no-reenrol"), "{}", text(&retire));
    let kept = run(api().args(["--once", "--if-needed"]));
    assert_eq!(kept.status.code(), Some(1), "{}", text(&kept));
    assert!(
        one_line(&kept, &kept.stderr).contains("revoked"),
        "{}",
        text(&kept)
    );
    assert_eq!(
        serial_of(&out.join("cert.pem")).as_deref(),
        Some(second.as_str())
    );
    let metrics = format!("127.0.0.1:{}", free_port());
    let mut cmd = api();
    cmd.args(["--metrics-listen", &metrics]);
    let mut daemon = Daemon::start(cmd);
    let mut health = (0, String::new());
    assert!(
        wait_until(Duration::from_secs(20), || {
            health = http_get(&metrics, "/healthz");
            health.1.contains("certificate revoked")
        }),
        "{health:?}\n{}",
        daemon.log()
    );
    assert_eq!(health.0, 503);
    assert_eq!(
        serial_of(&out.join("cert.pem")).as_deref(),
        Some(second.as_str())
    );
    assert!(daemon.terminate().success(), "{}", daemon.log());
    let enrolled = run(api().arg("--once"));
    assert!(enrolled.status.success(), "{}", text(&enrolled));
    assert_ne!(
        serial_of(&out.join("cert.pem")).as_deref(),
        Some(second.as_str())
    );
    assert!(!out.join(".state/revoked.json").exists(), "marker cleared");
}
