//! Revocation with a real PostgreSQL: the `db` sidecar keeps the `api`
//! class CRL where PostgreSQL reads it (`ssl_crl_file`) and reloads the
//! postmaster (SIGHUP through its pid file) when it changes. Revoking one
//! API-tier certificate makes PostgreSQL refuse that client within a minute
//! while another API client still connects; the revoked API sidecar notices
//! its own revocation and re-enrols with a new key, which connects again.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use trellis_e2e::pg::{owner_args, pg_bin, Postgres, Sidecar};
use trellis_e2e::{bin, run, text, TestServer};

fn sidecar(
    server: &TestServer,
    class: &str,
    profile: &str,
    dns: &str,
    trust: &str,
    out: &Path,
) -> Command {
    let mut cmd = Command::new(bin("ca-client"));
    cmd.arg("--ca")
        .arg(server.url())
        .arg("--ca-root")
        .arg(server.dir.join("classes/ca/root.pem"))
        .args(["--class", class, "--profile", profile, "--key-id", class])
        .arg("--key-secret-file")
        .arg(server.dir.join(format!("secrets/auth-{class}.hex")))
        .args(["--dns", dns, "--trust", trust, "--out"])
        .arg(out)
        .env_remove("RUST_LOG");
    cmd
}

/// psql as the API tier (verify-full), presenting `identity` (combined PEM).
fn query(port: u16, root: &Path, identity: &Path) -> std::process::Output {
    let conn = format!(
        "host=pg.db.internal hostaddr=127.0.0.1 port={port} user=api dbname=postgres sslmode=verify-full sslrootcert={} sslcert={1} sslkey={1} connect_timeout=10",
        root.display(),
        identity.display(),
    );
    run(Command::new(pg_bin("psql"))
        .args([
            "-X",
            "-A",
            "-t",
            "-c",
            "SELECT 'ok:' || current_user",
            &conn,
        ])
        .env_remove("PGSSLCERT")
        .env_remove("PGSSLKEY"))
}

/// The generation file `combined.pem` points at now (libpq reads key and
/// certificate with two opens: hand it one generation).
fn resolved(out: &Path) -> PathBuf {
    std::fs::canonicalize(out.join("combined.pem")).expect("combined.pem")
}

fn serial_of(pem_file: &Path) -> String {
    let out = run(Command::new("openssl")
        .args(["x509", "-noout", "-serial", "-in"])
        .arg(pem_file));
    text(&out)
        .trim()
        .trim_start_matches("serial=")
        .to_ascii_lowercase()
}

/// Poll `ok()` until it holds, at most `within`.
fn eventually(within: Duration, what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !ok() {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        std::thread::sleep(Duration::from_millis(250)); // poll interval
    }
}

#[test]
fn postgres_refuses_a_revoked_api_client_within_a_minute_and_the_sidecar_recovers() {
    let server = TestServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(t, std::fs::Permissions::from_mode(0o755)).unwrap();
    let owner = owner_args();

    // The database's files (with the api CRL), then PostgreSQL reading them.
    let pgtls = t.join("pgtls");
    std::fs::create_dir(&pgtls).unwrap();
    std::fs::set_permissions(&pgtls, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = run(
        sidecar(&server, "db", "server", "pg.db.internal", "api", &pgtls)
            .arg("--once")
            .args(owner),
    );
    assert!(out.status.success(), "db sidecar: {}", text(&out));
    let crl_file = pgtls.join("trust/api.crl.pem");
    assert!(crl_file.exists(), "the db sidecar wrote no api CRL");
    let pg = Postgres::start(t, &pgtls);
    let conf = pg.data.join("postgresql.conf");
    let mut config = std::fs::read_to_string(&conf).unwrap();
    config.push_str(&format!("ssl_crl_file = '{}'\n", crl_file.display()));
    std::fs::write(&conf, config).unwrap();
    pg.reload();

    // The db sidecar as a daemon: CRLs every 5 s (60 s by default), SIGHUP to
    // the postmaster after each change.
    let _db = Sidecar(
        sidecar(&server, "db", "server", "pg.db.internal", "api", &pgtls)
            .args([
                "--crl-refresh",
                "5s",
                "--reload-signal",
                "HUP",
                "--reload-pidfile",
            ])
            .arg(pg.data.join("postmaster.pid"))
            .args(owner)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    // Two API clients: api-1 as a daemon (it must notice its revocation),
    // api-2 once.
    let api1 = t.join("api1");
    let out =
        run(sidecar(&server, "api", "client", "api-1.api.internal", "db", &api1).arg("--once"));
    assert!(out.status.success(), "api-1: {}", text(&out));
    let _api1 = Sidecar(
        sidecar(&server, "api", "client", "api-1.api.internal", "db", &api1)
            .args(["--crl-refresh", "2s"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let api2 = t.join("api2");
    let out =
        run(sidecar(&server, "api", "client", "api-2.api.internal", "db", &api2).arg("--once"));
    assert!(out.status.success(), "api-2: {}", text(&out));
    let db_root = api2.join("trust/db.pem");

    let revoked_copy = t.join("revoked-api1.pem");
    std::fs::copy(resolved(&api1), &revoked_copy).unwrap();
    let revoked_serial = serial_of(&revoked_copy);
    for id in [&revoked_copy, &resolved(&api2)] {
        let ok = query(pg.port, &db_root, id);
        assert!(
            text(&ok).contains("ok:api"),
            "before revocation: {}\nCRL file:\n{}\nPostgreSQL log:\n{}",
            text(&ok),
            text(&run(Command::new("openssl")
                .args(["crl", "-noout", "-issuer", "-in"])
                .arg(&crl_file))),
            pg.log()
        );
    }

    // Revoke api-1's certificate; PostgreSQL refuses it within 60 s.
    let revoked_at = Instant::now();
    let out = run(Command::new(bin("ca-server"))
        .arg("revoke")
        .arg("--dir")
        .arg(&server.dir)
        .args([
            "--class",
            "api",
            "--serial",
            &revoked_serial,
            "--reason",
            "keyCompromise",
        ]));
    assert!(out.status.success(), "revoke: {}", text(&out));
    eventually(
        Duration::from_secs(60),
        "PostgreSQL refuses the revoked client",
        || !query(pg.port, &db_root, &revoked_copy).status.success(),
    );
    let took = revoked_at.elapsed();
    // PostgreSQL logs only "certificate verify failed": openssl, given the
    // very CRL file PostgreSQL reads, names the reason.
    let why = run(Command::new("openssl")
        .args(["verify", "-crl_check_all", "-CAfile"])
        .arg(pgtls.join("trust/api.pem"))
        .arg("-untrusted")
        .arg(&revoked_copy)
        .arg("-CRLfile")
        .arg(&crl_file)
        .arg(&revoked_copy));
    assert!(
        text(&why).contains("certificate revoked"),
        "not refused as revoked: {}",
        text(&why)
    );
    assert!(
        std::fs::read_to_string(&crl_file).is_ok_and(|t| !t.is_empty()),
        "CRL file gone"
    );
    // The other API client still gets in.
    let other = query(pg.port, &db_root, &resolved(&api2));
    assert!(
        text(&other).contains("ok:api"),
        "api-2 after the revocation: {}",
        text(&other)
    );

    // api-1 re-enrols with a new key and connects again.
    eventually(Duration::from_secs(30), "api-1 re-enrolled", || {
        serial_of(&resolved(&api1)) != revoked_serial
    });
    let key_of = |p: &Path| {
        text(&run(Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(p)))
    };
    assert_ne!(
        key_of(&revoked_copy),
        key_of(&resolved(&api1)),
        "re-enrolled with the revoked key"
    );
    let back = query(pg.port, &db_root, &resolved(&api1));
    assert!(
        text(&back).contains("ok:api"),
        "re-enrolled api-1: {}",
        text(&back)
    );
    eprintln!("PostgreSQL refused the revoked client {took:?} after `ca-server revoke`");
}
