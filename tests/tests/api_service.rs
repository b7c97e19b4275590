//! The example `api-service` (deploy/examples/api-service) with real peers:
//! `ca-server dev` issues every certificate through `ca-client --once`, a
//! throwaway PostgreSQL presents a `db` certificate and trusts only the `api`
//! root, and curl plays the web-class caller. The service must answer a web
//! caller with its CN and the database role it got over mutual TLS, refuse an
//! api-class caller and a caller without a certificate in the handshake,
//! present its own `api` certificate, pick up a renewed certificate without a
//! restart, and stop cleanly on SIGTERM.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use trellis_e2e::pg::{owner_args, Postgres};
use trellis_e2e::{bin, run, text, TestServer};

/// The running service; SIGTERM on drop if the test did not stop it.
struct ApiService {
    child: Option<Child>,
    port: u16,
    log: PathBuf,
}

impl ApiService {
    fn start(tls_dir: &Path, db: &str, log: &Path) -> ApiService {
        let log_file = std::fs::File::create(log).unwrap();
        let mut child = Command::new(bin("api-service"))
            .args([
                "--listen",
                "127.0.0.1:0",
                "--reload-interval",
                "1",
                "--tls-dir",
            ])
            .arg(tls_dir)
            .args(["--db", db])
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let mut port = None;
        for line in lines.by_ref().take(20) {
            let Ok(line) = line else { break };
            if let Some(addr) = line.strip_prefix("listening on https://") {
                port = addr.rsplit(':').next().and_then(|p| p.parse().ok());
                break;
            }
        }
        std::thread::spawn(move || for _ in lines {});
        let service = ApiService {
            child: Some(child),
            port: port.unwrap_or(0),
            log: log.to_path_buf(),
        };
        assert!(
            service.port != 0,
            "api-service did not start:\n{}",
            service.log()
        );
        service
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM; the exit status, or None if it had to be killed.
    fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }
}

impl Drop for ApiService {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `ca-client --once` for `class`/`profile`/`dns` into `out`, writing the
/// trust bundles of `trust`.
fn certificate(
    server: &TestServer,
    class: &str,
    profile: &str,
    dns: &str,
    trust: &[&str],
    out: &Path,
    extra: &[&str],
) {
    let mut cmd = Command::new(bin("ca-client"));
    cmd.arg("--ca")
        .arg(server.url())
        .arg("--ca-root")
        .arg(server.dir.join("classes/ca/root.pem"))
        .args(["--class", class, "--profile", profile, "--key-id", class])
        .arg("--key-secret-file")
        .arg(server.dir.join(format!("secrets/auth-{class}.hex")))
        .args(["--dns", dns, "--once", "--out"])
        .arg(out)
        .args(extra)
        .env_remove("RUST_LOG");
    for t in trust {
        cmd.args(["--trust", t]);
    }
    let out = run(&mut cmd);
    assert!(
        out.status.success(),
        "ca-client {class}/{profile} {dns}: {}",
        text(&out)
    );
}

/// curl as a caller of the service: `identity` is a combined key + chain PEM.
fn curl(port: u16, root: &Path, identity: Option<&Path>) -> std::process::Output {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "20", "--resolve"])
        .arg(format!("api-1.api.internal:{port}:127.0.0.1"))
        .arg("--cacert")
        .arg(root);
    if let Some(id) = identity {
        cmd.arg("--cert").arg(id).arg("--key").arg(id);
    }
    cmd.arg(format!("https://api-1.api.internal:{port}/v1/whoami"));
    run(&mut cmd)
}

/// The leaf certificate the service presents (PEM) and s_client's output.
fn presented(port: u16, caller: &Path) -> (String, String) {
    let out = run(Command::new("openssl")
        .args(["s_client", "-connect"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["-servername", "api-1.api.internal", "-cert"])
        .arg(caller)
        .arg("-key")
        .arg(caller)
        .stdin(Stdio::null()));
    let all = text(&out);
    let begin = "-----BEGIN CERTIFICATE-----";
    let end = "-----END CERTIFICATE-----";
    let leaf = match (all.find(begin), all.find(end)) {
        (Some(b), Some(e)) if e > b => all[b..e + end.len()].to_string(),
        _ => String::new(),
    };
    (leaf, all)
}

/// The first certificate in a PEM file; panics if there is none (two empty
/// strings would compare equal).
fn first_pem_cert(path: &Path) -> String {
    let pem = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let end = "-----END CERTIFICATE-----";
    pem.find("-----BEGIN CERTIFICATE-----")
        .zip(pem.find(end))
        .map(|(b, e)| pem[b..e + end.len()].to_string())
        .unwrap_or_else(|| panic!("no certificate in {}", path.display()))
}

fn cn_of(pem_file: &Path) -> String {
    let out = run(Command::new("openssl")
        .args(["x509", "-noout", "-subject", "-nameopt", "RFC2253", "-in"])
        .arg(pem_file));
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .trim_start_matches("subject=")
        .split(',')
        .find_map(|p| p.strip_prefix("CN="))
        .unwrap_or_default()
        .to_string()
}

#[test]
fn api_service_serves_web_callers_from_the_database_over_mtls() {
    let started = Instant::now();
    let server = TestServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    // PostgreSQL runs as `postgres`: it must be able to reach its files.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(t, std::fs::Permissions::from_mode(0o755)).unwrap();
    let owner = owner_args();

    // 1. certificates: the database (db server, trusting api), the service
    //    (api, server and client, trusting db and web), a web caller and an
    //    api-class client (the wrong class to call the service).
    let pgtls = t.join("pgtls");
    std::fs::create_dir(&pgtls).unwrap();
    std::fs::set_permissions(&pgtls, std::fs::Permissions::from_mode(0o755)).unwrap();
    certificate(
        &server,
        "db",
        "server",
        "pg.db.internal",
        &["api"],
        &pgtls,
        owner,
    );
    let apitls = t.join("apitls");
    certificate(
        &server,
        "api",
        "peer",
        "api-1.api.internal",
        &["db", "web"],
        &apitls,
        &[],
    );
    let webtls = t.join("webtls");
    certificate(
        &server,
        "web",
        "client",
        "w.web.internal",
        &["api"],
        &webtls,
        &[],
    );
    let wrongtls = t.join("wrongtls");
    certificate(
        &server,
        "api",
        "client",
        "api-2.api.internal",
        &["api"],
        &wrongtls,
        &[],
    );

    // 2. a throwaway cluster on a loopback port: db certificate, api clients
    //    only, certificate CNs *.api.internal map to role `api`.
    let _pg = Postgres::start(t, &pgtls);
    let pg_port = _pg.port;
    let data = _pg.data.clone();

    // 3. the service
    let mut service = ApiService::start(
        &apitls,
        &format!("host=pg.db.internal hostaddr=127.0.0.1 port={pg_port} user=api dbname=postgres"),
        &t.join("api-service.log"),
    );
    let port = service.port;
    let api_root = webtls.join("trust/api.pem");
    let web_id = webtls.join("combined.pem");

    // a web caller gets its name and the database's answer
    let ok = curl(port, &api_root, Some(&web_id));
    let body: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap_or_default();
    assert_eq!(
        body,
        serde_json::json!({"caller": "w.web.internal", "db_user": "api"}),
        "web → api → db: {}\n--- api-service\n{}\n--- pg.log\n{}",
        text(&ok),
        service.log(),
        std::fs::read_to_string(data.join("pg.log")).unwrap_or_default()
    );

    // an api-class caller is refused by the handshake
    let wrong = curl(port, &api_root, Some(&wrongtls.join("combined.pem")));
    assert!(
        !wrong.status.success() && !text(&wrong).contains("db_user"),
        "an api-class caller got through: {}",
        text(&wrong)
    );
    // … and so is a caller without a certificate
    let none = curl(port, &api_root, None);
    assert!(
        !none.status.success() && !text(&none).contains("db_user"),
        "a caller without a certificate got through: {}",
        text(&none)
    );
    // the service saw why: an issuer outside the web class, and no certificate
    // (it logs a refusal after the handshake failed, so possibly after curl
    // has returned: wait for the lines, bounded)
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mut log = service.log();
    while !(log.contains("UnknownIssuer") && log.contains("peer sent no certificates"))
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(50));
        log = service.log();
    }
    assert!(
        log.contains("TLS handshake refused") && log.contains("UnknownIssuer"),
        "the api-class caller was not refused for its issuer:\n{log}"
    );
    assert!(
        log.contains("peer sent no certificates"),
        "the caller without a certificate was not refused for it:\n{log}"
    );

    // 4. the service presents its api certificate, issued by the api intermediate
    let (leaf, s_client) = presented(port, &web_id);
    assert_eq!(leaf, first_pem_cert(&apitls.join("cert.pem")), "{s_client}");
    let api_int = cn_of(&apitls.join("chain.pem"));
    assert!(!api_int.is_empty());
    let issuer_line = s_client
        .lines()
        .find(|l| l.contains("i:"))
        .unwrap_or_default()
        .to_string();
    assert!(
        issuer_line.contains(&api_int),
        "issuer {issuer_line:?}, expected the api intermediate {api_int}"
    );

    // 5. a renewal is picked up without a restart (reload interval 1 s), and
    //    queries through the database still succeed
    certificate(
        &server,
        "api",
        "peer",
        "api-1.api.internal",
        &["db", "web"],
        &apitls,
        &[],
    );
    let renewed = first_pem_cert(&apitls.join("cert.pem"));
    assert_ne!(renewed, leaf, "ca-client --once issued a new certificate");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut now_presented = String::new();
    while Instant::now() < deadline {
        now_presented = presented(port, &web_id).0;
        if now_presented == renewed {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        now_presented,
        renewed,
        "the renewed certificate was not picked up:\n{}",
        service.log()
    );
    let again = curl(port, &api_root, Some(&web_id));
    let body: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap_or_default();
    assert_eq!(
        body,
        serde_json::json!({"caller": "w.web.internal", "db_user": "api"}),
        "after the renewal: {}",
        text(&again)
    );

    // 6. SIGTERM stops it cleanly
    let status = service.stop();
    assert!(
        status.is_some_and(|s| s.success()),
        "api-service did not stop cleanly on SIGTERM ({status:?}):\n{}",
        service.log()
    );
    eprintln!("api_service scenario took {:?}", started.elapsed());
}
