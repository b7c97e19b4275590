//! HSM faults: a wrong module, token or PIN stops the server at start with a
//! clear error; a token that goes away mid-run turns requests into 503
//! `hsm_unavailable` and `/readyz` unready, and service resumes by itself when
//! the token is back. The fault comes from a real PKCS#11 module built here
//! (tests/fault-pkcs11) that forwards to SoftHSM2 and fails while a file exists.

use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;
use trellis_e2e::{bin, build_fault_module, openssl_csr, openssl_verify, run, text, TestServer};

const P256: &[&str] = &["ec", "-pkeyopt", "ec_paramgen_curve:P-256"];

fn init(dir: &Path) {
    let out = run(Command::new(bin("ca-server"))
        .args(["dev", "--init-only", "--dir"])
        .arg(dir));
    assert!(out.status.success(), "{}", text(&out));
}

fn set_config(dir: &Path, from: &str, to: &str) -> String {
    let path = dir.join("config.toml");
    let config = std::fs::read_to_string(&path).unwrap();
    let old_line = config
        .lines()
        .find(|l| l.starts_with(from))
        .unwrap()
        .to_string();
    std::fs::write(&path, config.replace(&old_line, to)).unwrap();
    old_line
}

/// A P-256 CSR for `<host>.db.internal` (CN and DNS SAN), its key in `dir`.
fn db_csr(dir: &Path, host: &str) -> String {
    let name = format!("{host}.db.internal");
    openssl_csr(
        dir,
        host,
        P256,
        &format!("/CN={name}"),
        &["-addext", &format!("subjectAltName=DNS:{name}")],
    )
}

/// A dev deployment in `tmp/var` whose config names the fault module instead
/// of SoftHSM2; returns its directory and the real module's path (for
/// `TRELLIS_PKCS11_REAL_MODULE`).
fn behind_fault_module(tmp: &Path) -> (PathBuf, String) {
    let dir = tmp.join("var");
    init(&dir);
    let module = build_fault_module(tmp);
    let real_line = set_config(
        &dir,
        "module = ",
        &format!("module = \"{}\"", module.display()),
    );
    let real = real_line
        .trim_start_matches("module = ")
        .trim_matches('"')
        .to_string();
    (dir, real)
}

#[test]
fn a_vanishing_token_gives_503_and_service_resumes_without_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, real) = behind_fault_module(tmp.path());
    let fault = tmp.path().join("token-gone");
    let server = TestServer::start_with_env(
        &dir,
        &[],
        &[
            ("TRELLIS_PKCS11_REAL_MODULE", real.as_str()),
            ("TRELLIS_PKCS11_FAULT_FILE", fault.to_str().unwrap()),
        ],
    );
    let csr = db_csr(tmp.path(), "h");
    let sign = || server.native_sign("db", &json!({"class": "db", "csr": csr}));
    let client = server.client();
    assert_eq!(sign().0, 200);
    assert_eq!(client.request("GET", "/readyz", &[], b"").status, 200);

    std::fs::write(&fault, b"").unwrap();
    for _ in 0..3 {
        let (status, body) = sign();
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (503, Some("hsm_unavailable")),
            "{body}"
        );
        assert!(body.get("certificate").is_none());
    }
    let ready = client.request("GET", "/readyz", &[], b"");
    assert_eq!(ready.status, 503, "{}", ready.text());
    assert!(
        client.request("GET", "/healthz", &[], b"").status == 200,
        "the process itself is alive"
    );
    assert!(server.metric("trellis_hsm_errors_total", "") >= 1.0);

    std::fs::remove_file(&fault).unwrap();
    let (status, body) = sign();
    assert_eq!(status, 200, "no recovery without a restart: {body}");
    assert_eq!(client.request("GET", "/readyz", &[], b"").status, 200);
    let log = server.server_log();
    assert!(
        log.contains("CKR_DEVICE_REMOVED") || log.contains("CKR_TOKEN_NOT_PRESENT"),
        "{log}"
    );
}

/// A server started while other processes write the token's files (servers
/// started at once: seen in the log guard e2e test) may find its token
/// unreadable at several initialisations in a row. Up to four re-initialised
/// looks, paused, bring it back: the server starts and issues. A token
/// unreadable for longer still stops the start with the one-line error
/// that names it, after under a second.
#[test]
fn a_token_unreadable_at_several_initialisations_is_waited_for_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, real) = behind_fault_module(tmp.path());
    let serve = |stale_inits: &str| {
        let mut cmd = Command::new(bin("ca-server"));
        cmd.args(["serve", "--config"])
            .arg(dir.join("config.toml"))
            .env("TRELLIS_PKCS11_REAL_MODULE", &real)
            .env("TRELLIS_PKCS11_STALE_INITS", stale_inits);
        cmd
    };
    // (`serve`: `dev` would take an unreadable token for a missing one.)
    set_config(&dir, "listen = ", "listen = \"127.0.0.1:0\"");
    let server = TestServer::spawn(serve("4"), &dir);
    let csr = db_csr(tmp.path(), "s");
    let (status, body) = server.native_sign("db", &json!({"class": "db", "csr": csr}));
    assert_eq!(status, 200, "{body}");
    assert!(server.server_log().contains("hsm_token_rediscovery"));
    drop(server);

    let started = std::time::Instant::now();
    let out = run(&mut serve("6"));
    assert!(!out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let error: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("ca-server: "))
        .collect();
    assert_eq!(error.len(), 1, "{stderr}");
    assert!(
        error[0].contains("no initialised token 'trellis-online'"),
        "{stderr}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}

/// A module can lose its token at a re-initialisation (SoftHSM2 initialised
/// while `rotate prepare` writes the token's files answers
/// CKR_GENERAL_ERROR for it from then on: seen in the rotation e2e test).
/// The server re-initialises the module when it cannot find the key of a
/// prepared intermediate; the fault module is made to hide keys and to lose
/// the token at that re-initialisation. Once the files are gone, the next
/// re-initialisation (at most every 5 s, because the token is not found)
/// must bring the token, the prepared key and issuance back, with no
/// restart: without it the class stayed suspended for good after
/// `rotate activate`.
#[test]
fn a_token_lost_at_a_reinitialisation_is_found_again_by_the_next_one() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, real) = behind_fault_module(tmp.path());
    let hide = tmp.path().join("hide-keys");
    let stale = tmp.path().join("lose-token");
    let server = TestServer::start_with_env(
        &dir,
        &[],
        &[
            ("TRELLIS_PKCS11_REAL_MODULE", real.as_str()),
            ("TRELLIS_PKCS11_HIDE_FILE", hide.to_str().unwrap()),
            ("TRELLIS_PKCS11_STALE_FILE", stale.to_str().unwrap()),
        ],
    );
    let csr = db_csr(tmp.path(), "h");
    let sign = || server.native_sign("db", &json!({"class": "db", "csr": csr}));
    assert_eq!(sign().0, 200);

    std::fs::write(&hide, b"").unwrap();
    std::fs::write(&stale, b"").unwrap();
    let admin = |args: &[&str]| {
        let out = run(Command::new(bin("ca-server"))
            .args(args)
            .arg("--dir")
            .arg(&dir)
            .env("TRELLIS_PKCS11_REAL_MODULE", &real));
        assert!(out.status.success(), "ca-server {args:?}: {}", text(&out));
    };
    admin(&["rotate", "prepare", "--class", "db"]);
    assert!(
        trellis_e2e::wait_until(std::time::Duration::from_secs(30), || server
            .server_log()
            .contains("C_GetTokenInfo: CKR_GENERAL_ERROR")),
        "the server did not re-initialise the module while the token was lost: {}",
        server.server_log()
    );
    let (status, body) = sign();
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("hsm_unavailable")),
        "{body}"
    );

    std::fs::remove_file(&hide).unwrap();
    std::fs::remove_file(&stale).unwrap();
    assert!(
        trellis_e2e::wait_until(std::time::Duration::from_secs(30), || sign().0 == 200),
        "the token did not come back: {}",
        server.server_log()
    );
    admin(&["rotate", "activate", "--class", "db"]);
    let activated = || {
        server.server_log().lines().any(|l| {
            l.contains("class_reloaded") && l.contains("class=db") && l.contains("prepared=false")
        })
    };
    assert!(
        trellis_e2e::wait_until(std::time::Duration::from_secs(30), || activated()
            && sign().0 == 200),
        "no issuance from the new intermediate after rotate activate: {:?}\n{}",
        sign(),
        server.server_log()
    );
    assert!(server.server_log().contains("hsm_token_rediscovery"));
}

/// Signing sessions sign with session copies of the CA keys where the
/// module makes them (hsm/src/pool.rs). A module that does not copy
/// objects, or makes copies that cannot sign, must serve all the same,
/// through the token objects, with no HSM error counted.
#[test]
fn a_module_without_usable_key_copies_still_signs_through_the_token_objects() {
    for fault in ["TRELLIS_PKCS11_NO_COPY", "TRELLIS_PKCS11_COPY_CANNOT_SIGN"] {
        let tmp = tempfile::tempdir().unwrap();
        let (dir, real) = behind_fault_module(tmp.path());
        let server = TestServer::start_with_env(
            &dir,
            &[],
            &[("TRELLIS_PKCS11_REAL_MODULE", real.as_str()), (fault, "1")],
        );
        for i in 0..3 {
            let csr = db_csr(tmp.path(), &format!("c{i}"));
            let (status, body) = server.native_sign("db", &json!({"class": "db", "csr": csr}));
            assert_eq!(status, 200, "{fault}: {body}");
            let leaf = tmp.path().join(format!("c{i}.pem"));
            std::fs::write(&leaf, body["certificate"].as_str().unwrap()).unwrap();
            let chain = tmp.path().join(format!("c{i}-chain.pem"));
            std::fs::write(&chain, body["chain"].as_str().unwrap()).unwrap();
            let (ok, why) = openssl_verify(&dir.join("classes/db/root.pem"), &chain, &leaf);
            assert!(ok, "{fault}: {why}");
        }
        let client = server.client();
        assert_eq!(
            client.request("GET", "/readyz", &[], b"").status,
            200,
            "{fault}"
        );
        assert_eq!(
            server.metric("trellis_hsm_errors_total", ""),
            0.0,
            "{fault}"
        );
    }
}

#[test]
fn a_wrong_module_or_token_stops_the_server_at_start_with_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("var");
    init(&dir);
    let serve = || {
        run(Command::new(bin("ca-server"))
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(dir.join("config.toml")))
    };

    let original = set_config(&dir, "module = ", "module = \"/nonexistent/libpkcs11.so\"");
    let out = serve();
    assert!(!out.status.success());
    assert!(
        text(&out).contains("/nonexistent/libpkcs11.so"),
        "{}",
        text(&out)
    );
    set_config(&dir, "module = ", &original);

    let original = set_config(&dir, "online_token = ", "online_token = \"no-such-token\"");
    let out = serve();
    assert!(!out.status.success());
    assert!(
        text(&out).contains("no initialised token 'no-such-token'")
            && text(&out).contains("'trellis-online'"),
        "names the token asked for and lists those there are: {}",
        text(&out)
    );
    set_config(&dir, "online_token = ", &original);

    let out = run(Command::new(bin("ca-server"))
        .args([
            "serve",
            "--insecure-http",
            "--listen",
            "0.0.0.0:0",
            "--config",
        ])
        .arg(dir.join("config.toml")));
    assert!(
        !out.status.success(),
        "plain HTTP off loopback must be refused"
    );
    assert!(
        text(&out).contains("only on a loopback address"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_token_that_makes_an_extractable_key_is_refused_and_the_key_destroyed() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, real) = behind_fault_module(tmp.path());
    let admin = |args: &[&str]| {
        run(Command::new(bin("ca-server"))
            .args(args)
            .arg("--dir")
            .arg(&dir)
            .env("TRELLIS_PKCS11_REAL_MODULE", &real)
            .env("TRELLIS_PKCS11_LIE_EXTRACTABLE", "1"))
    };
    let state = std::fs::read_to_string(dir.join("classes/db/state.toml")).unwrap();
    let honest_check = || {
        let out = run(Command::new(bin("ca-server"))
            .args(["hsm", "check", "--json", "--dir"])
            .arg(&dir)
            .env("TRELLIS_PKCS11_REAL_MODULE", &real));
        assert!(out.status.success(), "{}", text(&out));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    assert_eq!(honest_check()["online"]["other_keys"], json!([]));
    let out = admin(&["rotate", "prepare", "--class", "db"]);
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("weaker than asked") && said.contains("extractable"),
        "{said}"
    );
    // Nothing was kept: the class state is unchanged, and the key made for
    // the refused intermediate is gone from the token.
    assert_eq!(
        std::fs::read_to_string(dir.join("classes/db/state.toml")).unwrap(),
        state
    );
    let check = admin(&["hsm", "check", "--json"]);
    assert_eq!(check.status.code(), Some(1), "{}", text(&check));
    let report: serde_json::Value = serde_json::from_slice(&check.stdout).unwrap();
    let online = report["online"]["keys"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        online
            .iter()
            .all(|k| k["present"] == json!(false) || k["fit"] == json!(false)),
        "every key reads as extractable through the lying module: {report:#}"
    );
    assert!(report["problems"].to_string().contains("extractable"));
    // Told the truth, the same token and keys are fit, and no key was left
    // behind by the refused generation.
    let honest = honest_check();
    assert_eq!(honest["problems"], json!([]), "{honest:#}");
    assert_eq!(honest["online"]["other_keys"], json!([]), "{honest:#}");
}
