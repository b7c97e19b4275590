//! The per-class trust model with a real PostgreSQL: the database presents a
//! `db` certificate from a `ca-client` sidecar and trusts only the `api` root;
//! the API tier (psql, libpq with sslmode=verify-full) presents an `api`
//! certificate and trusts only the `db` root. Other classes are refused by
//! the TLS handshake itself, and both intermediates rotate under a loop of
//! new connections with 60-second certificates renewing underneath.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use trellis_e2e::pg::{owner_args, pg_bin, Postgres, Sidecar};
use trellis_e2e::{bin, run, text, TestServer};

/// `ca-client` for `class`/`profile`/`dns` into `out`, trusting `trust`.
fn sidecar(
    server: &TestServer,
    key: &str,
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
        .args(["--class", class, "--profile", profile, "--key-id", key])
        .arg("--key-secret-file")
        .arg(server.dir.join(format!("secrets/auth-{key}.hex")))
        .args(["--dns", dns, "--trust", trust, "--ttl", "60s", "--out"])
        .arg(out)
        .env_remove("RUST_LOG");
    cmd
}

/// psql as the API tier: verify-full against `root`, presenting `identity`.
/// libpq opens the key and the certificate separately, so it is handed the
/// resolved generation path (see ca-client's `store`): both opens then read
/// the same generation even if the sidecar switches in between.
fn query(port: u16, host: &str, root: &Path, identity: Option<&Path>) -> std::process::Output {
    let resolved =
        identity.map(|id| std::fs::canonicalize(id).unwrap_or_else(|_| id.to_path_buf()));
    let identity = resolved.as_deref();
    let mut conn = format!(
        "host={host} hostaddr=127.0.0.1 port={port} user=api dbname=postgres sslmode=verify-full sslrootcert={} connect_timeout=10",
        root.display()
    );
    if let Some(id) = identity {
        conn.push_str(&format!(" sslcert={0} sslkey={0}", id.display()));
    } else {
        conn.push_str(" sslcert=/nonexistent sslkey=/nonexistent");
    }
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

/// The leaf certificate (PEM) PostgreSQL presents on the wire right now.
fn served_leaf(port: u16) -> String {
    let out = run(Command::new("openssl")
        .args([
            "s_client",
            "-starttls",
            "postgres",
            "-connect",
            &format!("127.0.0.1:{port}"),
        ])
        .stdin(Stdio::null()));
    first_pem(&String::from_utf8_lossy(&out.stdout))
        .unwrap_or_else(|| panic!("PostgreSQL presented no certificate: {}", text(&out)))
}

/// The first PEM certificate in `text`.
fn first_pem(text: &str) -> Option<String> {
    let (begin, end) = ("-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----");
    let b = text.find(begin)?;
    let e = b + text[b..].find(end)? + end.len();
    Some(text[b..e].to_string())
}

/// The leaf of a `ca-client` output directory.
fn leaf_of(dir: &Path) -> String {
    let pem = std::fs::read_to_string(dir.join("cert.pem"))
        .unwrap_or_else(|e| panic!("{}/cert.pem: {e}", dir.display()));
    first_pem(&pem).unwrap_or_else(|| panic!("no certificate in {}/cert.pem", dir.display()))
}

/// Stops the connection loop when the scope ends, on a panic too.
struct StopOnDrop<'a>(&'a AtomicBool);
impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

fn subject_of(pem_file: &Path) -> String {
    x509_name(pem_file, "subject")
}

fn issuer_of(pem_file: &Path) -> String {
    x509_name(pem_file, "issuer")
}

/// A certificate's `subject` or `issuer` as an RFC 2253 string; panics
/// rather than return an empty name two failures would make look equal.
fn x509_name(pem_file: &Path, which: &str) -> String {
    let out = run(Command::new("openssl")
        .args([
            "x509",
            "-noout",
            &format!("-{which}"),
            "-nameopt",
            "RFC2253",
            "-in",
        ])
        .arg(pem_file));
    let name = String::from_utf8_lossy(&out.stdout)
        .trim()
        .trim_start_matches(&format!("{which}="))
        .to_string();
    assert!(
        out.status.success() && !name.is_empty(),
        "no {which} in {}: {}",
        pem_file.display(),
        text(&out)
    );
    name
}

#[test]
fn db_and_api_tiers_authenticate_each_other_and_survive_rotation() {
    let server = TestServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    // PostgreSQL runs as `postgres`: it must be able to reach its files.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(t, std::fs::Permissions::from_mode(0o755)).unwrap();
    let owner = owner_args();

    // 1. certificates: the database (db, server), the API tier (api, client),
    //    and two of the wrong class (web).
    let pgtls = t.join("pgtls");
    std::fs::create_dir(&pgtls).unwrap();
    std::fs::set_permissions(&pgtls, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = run(sidecar(
        &server,
        "db",
        "db",
        "server",
        "pg.db.internal",
        "api",
        &pgtls,
    )
    .arg("--once")
    .args(owner));
    assert!(out.status.success(), "db sidecar: {}", text(&out));
    let apitls = t.join("apitls");
    let out = run(sidecar(
        &server,
        "api",
        "api",
        "client",
        "api-1.api.internal",
        "db",
        &apitls,
    )
    .arg("--once"));
    assert!(out.status.success(), "api sidecar: {}", text(&out));
    let webtls = t.join("webtls");
    let out = run(sidecar(
        &server,
        "web",
        "web",
        "client",
        "w.web.internal",
        "db",
        &webtls,
    )
    .arg("--once"));
    assert!(out.status.success(), "{}", text(&out));
    let webserver = t.join("webserver");
    let out = run(sidecar(
        &server,
        "web",
        "web",
        "server",
        "pg.web.internal",
        "api",
        &webserver,
    )
    .arg("--once")
    .args(owner));
    assert!(out.status.success(), "{}", text(&out));

    // 2. a throwaway cluster on a loopback port
    let pg = Postgres::start(t, &pgtls);
    let port = pg.port;
    let data = pg.data.clone();

    let db_root = apitls.join("trust/db.pem");
    let api_identity = apitls.join("combined.pem");
    // the API tier gets in
    let ok = query(port, "pg.db.internal", &db_root, Some(&api_identity));
    assert!(
        ok.status.success() && text(&ok).contains("ok:api"),
        "api → db: {}",
        text(&ok)
    );
    // a web certificate is refused by PostgreSQL
    let web = query(
        port,
        "pg.db.internal",
        &db_root,
        Some(&webtls.join("combined.pem")),
    );
    assert!(
        !web.status.success(),
        "a web certificate got in: {}",
        text(&web)
    );
    // no certificate is refused
    let none = query(port, "pg.db.internal", &db_root, None);
    assert!(
        !none.status.success(),
        "no certificate got in: {}",
        text(&none)
    );
    // a server presenting a web certificate is refused by the API tier
    let conf_path = data.join("postgresql.conf");
    let original = std::fs::read_to_string(&conf_path).unwrap();
    std::fs::write(
        &conf_path,
        original.replace(
            &format!("{}/combined.pem", pgtls.display()),
            &format!("{}/combined.pem", webserver.display()),
        ),
    )
    .unwrap();
    pg.reload();
    assert_eq!(
        served_leaf(port),
        leaf_of(&webserver),
        "after the reload PostgreSQL does not present the web certificate"
    );
    let fake = query(port, "pg.web.internal", &db_root, Some(&api_identity));
    assert!(
        !fake.status.success(),
        "the API tier trusted a web server: {}",
        text(&fake)
    );
    assert!(
        text(&fake).contains("certificate verify failed"),
        "{}",
        text(&fake)
    );
    std::fs::write(&conf_path, &original).unwrap();
    pg.reload();
    assert_eq!(
        served_leaf(port),
        leaf_of(&pgtls),
        "after the second reload PostgreSQL does not present the db certificate"
    );
    let back = query(port, "pg.db.internal", &db_root, Some(&api_identity));
    assert!(
        back.status.success() && text(&back).contains("ok:api"),
        "api → db after restoring the db certificate: {}",
        text(&back)
    );

    // 3. sidecars as daemons: 60 s certificates; the database reloads on each renewal
    let _db_sidecar = Sidecar(
        sidecar(
            &server,
            "db",
            "db",
            "server",
            "pg.db.internal",
            "api",
            &pgtls,
        )
        .args(owner)
        .args(["--reload-signal", "HUP", "--reload-pidfile"])
        .arg(data.join("postmaster.pid"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(t.join("db-sidecar.log")).unwrap())
        .spawn()
        .unwrap(),
    );
    let _api_sidecar = Sidecar(
        sidecar(
            &server,
            "api",
            "api",
            "client",
            "api-1.api.internal",
            "db",
            &apitls,
        )
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(t.join("api-sidecar.log")).unwrap())
        .spawn()
        .unwrap(),
    );

    // 4. a loop of new connections and queries across both rotations
    let stop = AtomicBool::new(false);
    let (ok_count, failures) = (AtomicUsize::new(0), std::sync::Mutex::new(Vec::new()));
    let admin = |args: &[&str]| {
        let out = run(Command::new(bin("ca-server"))
            .args(args)
            .arg("--dir")
            .arg(&server.dir));
        assert!(out.status.success(), "ca-server {args:?}: {}", text(&out));
    };
    let new_db_int = t.join("new-db-int.pem");
    let new_api_int = t.join("new-api-int.pem");
    // `n` more successful connections than now, within a minute.
    let connections = |n: usize, what: &str| {
        let target = ok_count.load(Ordering::Relaxed) + n;
        let deadline = Instant::now() + Duration::from_secs(60);
        while ok_count.load(Ordering::Relaxed) < target {
            assert!(
                Instant::now() < deadline,
                "fewer than {n} connections {what}; first failure: {:?}",
                failures.lock().unwrap().first()
            );
            std::thread::sleep(Duration::from_millis(50)); // poll interval
        }
    };
    std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        s.spawn(|| {
            let deadline = Instant::now() + Duration::from_secs(240);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let out = query(port, "pg.db.internal", &db_root, Some(&api_identity));
                if out.status.success() && text(&out).contains("ok:api") {
                    ok_count.fetch_add(1, Ordering::Relaxed);
                } else {
                    failures.lock().unwrap().push(text(&out));
                }
            }
        });
        connections(8, "before the rotation");
        admin(&["rotate", "prepare", "--class", "db"]);
        admin(&["rotate", "prepare", "--class", "api"]);
        connections(8, "with both successors prepared");
        admin(&["rotate", "activate", "--class", "db"]);
        admin(&["rotate", "activate", "--class", "api"]);
        std::fs::copy(server.dir.join("classes/db/intermediate.pem"), &new_db_int).unwrap();
        std::fs::copy(
            server.dir.join("classes/api/intermediate.pem"),
            &new_api_int,
        )
        .unwrap();
        // wait for both sides to renew from the new intermediates (≤ one 60 s lifetime)
        let deadline = Instant::now() + Duration::from_secs(150);
        let renewed = |dir: &Path, int: &Path| issuer_of(&dir.join("cert.pem")) == subject_of(int);
        while !(renewed(&pgtls, &new_db_int) && renewed(&apitls, &new_api_int)) {
            assert!(
                Instant::now() < deadline,
                "the sidecars did not renew from the new intermediates\n--- db sidecar\n{}\n--- api sidecar\n{}\n--- server\n{}",
                std::fs::read_to_string(t.join("db-sidecar.log")).unwrap_or_default(),
                std::fs::read_to_string(t.join("api-sidecar.log")).unwrap_or_default(),
                server.server_log()
            );
            std::thread::sleep(Duration::from_millis(500)); // poll interval
        }
        // connections after the switch, too (the loop is sequential: at
        // most one of these was under way when both files had switched)
        connections(8, "after both renewals");
        stop.store(true, Ordering::Relaxed);
    });
    let failures = failures.into_inner().unwrap();
    let ok_count = ok_count.into_inner();
    assert!(
        failures.is_empty(),
        "{} of {} connections failed across the rotation: {:?}",
        failures.len(),
        failures.len() + ok_count,
        failures.first()
    );
    assert!(ok_count > 20, "only {ok_count} connections were made");
    assert_eq!(
        issuer_of(&pgtls.join("cert.pem")),
        subject_of(&new_db_int),
        "the database did not renew under the new db intermediate"
    );
    assert_eq!(
        issuer_of(&apitls.join("cert.pem")),
        subject_of(&new_api_int),
        "the API tier did not renew under the new api intermediate"
    );
    // what PostgreSQL actually presents on the wire: a leaf issued by the
    // new db intermediate (whole RFC 2253 names compared), once it has
    // handled the sidecar's SIGHUP for the renewed files
    let wire = t.join("wire.pem");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        std::fs::write(&wire, served_leaf(port)).unwrap();
        if issuer_of(&wire) == subject_of(&new_db_int) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "PostgreSQL presents a leaf of {}, expected the new db intermediate {}\n--- pg.log\n{}\n--- db sidecar\n{}",
            issuer_of(&wire),
            subject_of(&new_db_int),
            pg.log()
                .lines()
                .rev()
                .take(15)
                .collect::<Vec<_>>()
                .join("\n"),
            std::fs::read_to_string(t.join("db-sidecar.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100)); // poll interval
    }
    drop(pg);

    // 5. the log verifies and the monitor finds nothing wrong
    let mut server = server;
    server.stop();
    for tool in [&["log", "verify"][..], &["log", "monitor"]] {
        let out = run(Command::new(bin("ca-server"))
            .args(tool)
            .arg("--dir")
            .arg(&server.dir));
        assert!(out.status.success(), "ca-server {tool:?}: {}", text(&out));
    }
}
