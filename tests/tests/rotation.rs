//! Ops rotating an intermediate on a live server: prepare, activate, retire,
//! with requests running the whole time — none may fail, leaves from before
//! and after verify against the unchanged class root with the chain they came
//! with, and rotating the `ca` class swaps the server's own TLS certificate.

use serde_json::json;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use trellis_e2e::{bin, openssl_csr, openssl_verify, run, text, TestServer};

const P256: &[&str] = &["ec", "-pkeyopt", "ec_paramgen_curve:P-256"];

fn admin(server: &TestServer, args: &[&str]) -> String {
    let out = run(Command::new(bin("ca-server"))
        .args(args)
        .arg("--dir")
        .arg(&server.dir));
    assert!(out.status.success(), "ca-server {args:?}: {}", text(&out));
    text(&out)
}

fn intermediate_of(chain: &str) -> String {
    let start = chain.rfind("-----BEGIN CERTIFICATE-----").unwrap_or(0);
    chain[start..].to_string()
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}

/// Stops the load workers when the scope ends, on a panic too.
struct StopOnDrop<'a>(&'a AtomicBool);
impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

#[test]
fn rotating_an_intermediate_under_load_fails_no_request() {
    let server = TestServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let csr = openssl_csr(
        tmp.path(),
        "load",
        P256,
        "/CN=load.db.internal",
        &["-addext", "subjectAltName=DNS:load.db.internal"],
    );
    let old_chain = server
        .client()
        .request("GET", "/v1/classes/db/chain", &[], b"")
        .text();
    // The chain is intermediate then root: the intermediate's PEM body.
    let old_intermediate = old_chain
        .split("-----END CERTIFICATE-----")
        .next()
        .unwrap_or_default()
        .to_string();
    assert!(
        old_intermediate.contains("-----BEGIN CERTIFICATE-----"),
        "no chain for class db: {old_chain:?}"
    );
    let stop = AtomicBool::new(false);
    let done = AtomicUsize::new(0);
    // `n` more answered requests than now. Each of the 3 workers has at most
    // one request under way, so of `n` answers counted from a moment, at
    // least `n - 3` were sent after it.
    let answered = |n: usize, what: &str| {
        let target = done.load(Ordering::Relaxed) + n;
        wait_until(what, || done.load(Ordering::Relaxed) >= target);
    };
    let results: Vec<(u16, String, String)> = std::thread::scope(|s| {
        let _stop = StopOnDrop(&stop);
        let workers: Vec<_> = (0..3)
            .map(|_| {
                s.spawn(|| {
                    let mut seen = Vec::new();
                    let deadline = Instant::now() + Duration::from_secs(90);
                    while !stop.load(Ordering::Relaxed)
                        && Instant::now() < deadline
                        && seen.len() < 5000
                    {
                        let (status, body) =
                            server.native_sign("db", &json!({"class": "db", "csr": csr}));
                        seen.push((
                            status,
                            body["certificate"].as_str().unwrap_or_default().to_string(),
                            body["chain"].as_str().unwrap_or_default().to_string(),
                        ));
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    seen
                })
            })
            .collect();

        answered(6, "leaves from the old intermediate");
        let out = admin(&server, &["rotate", "prepare", "--class", "db"]);
        assert!(out.contains("prepared intermediate"), "{out}");
        wait_until("the prepared chain to be published", || {
            server
                .client()
                .request("GET", "/v1/classes/db/chain?which=prepared", &[], b"")
                .status
                == 200
        });
        let classes = server
            .client()
            .request("GET", "/v1/classes", &[], b"")
            .json();
        let db = classes["classes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "db")
            .unwrap()
            .clone();
        assert!(db["prepared_intermediate"].is_string(), "{db}");
        answered(6, "requests while an intermediate is prepared");
        admin(&server, &["rotate", "activate", "--class", "db"]);
        wait_until("leaves from the new intermediate", || {
            let chain = server
                .client()
                .request("GET", "/v1/classes/db/chain", &[], b"")
                .text();
            !chain.starts_with(old_intermediate.trim())
        });
        answered(6, "leaves from the new intermediate");
        stop.store(true, Ordering::Relaxed);
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap())
            .collect()
    });

    let failures: Vec<_> = results.iter().filter(|(s, _, _)| *s != 200).collect();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed during rotation",
        failures.len(),
        results.len()
    );
    let intermediates: std::collections::HashSet<String> = results
        .iter()
        .map(|(_, _, chain)| intermediate_of(chain))
        .collect();
    assert_eq!(
        intermediates.len(),
        2,
        "expected leaves from the old and the new intermediate"
    );
    // one leaf of each, verified with the chain it came with against the unchanged root
    for int in &intermediates {
        let (_, leaf, chain) = results
            .iter()
            .find(|(_, _, c)| intermediate_of(c) == *int)
            .unwrap();
        let leaf_path = tmp.path().join("leaf.pem");
        let chain_path = tmp.path().join("chain.pem");
        std::fs::write(&leaf_path, leaf).unwrap();
        std::fs::write(&chain_path, chain).unwrap();
        let (ok, msg) = openssl_verify(
            &server.dir.join("classes/db/root.pem"),
            &chain_path,
            &leaf_path,
        );
        assert!(ok, "{msg}");
    }

    let status = admin(&server, &["status"]);
    assert!(
        status.contains("active") && status.contains("retired"),
        "{status}"
    );
    // the old intermediate's leaves have not expired: nothing to retire yet
    let retire = admin(&server, &["rotate", "retire", "--class", "db"]);
    assert!(retire.contains("no retired intermediate"), "{retire}");
    // and a second activate without a prepared intermediate is refused
    let out = run(Command::new(bin("ca-server"))
        .args(["rotate", "activate", "--class", "db", "--dir"])
        .arg(&server.dir));
    assert!(
        !out.status.success() && text(&out).contains("no prepared intermediate"),
        "{}",
        text(&out)
    );
}

#[test]
fn rotating_the_ca_class_swaps_the_servers_own_certificate() {
    let server = TestServer::start();
    let before = presented_issuer(&server).expect("the server presented no certificate");
    admin(&server, &["rotate", "prepare", "--class", "ca"]);
    admin(&server, &["rotate", "activate", "--class", "ca"]);
    wait_until("a new server certificate", || {
        presented_issuer(&server).is_some_and(|now| now != before)
    });
    // clients that trust the ca root keep working
    assert_eq!(
        server.client().request("GET", "/healthz", &[], b"").status,
        200
    );
}

/// The issuer line of the certificate the server presents, if it presented one.
fn presented_issuer(server: &TestServer) -> Option<String> {
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &server.addr,
            "-servername",
            "localhost",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.contains("i:"))
        .map(str::to_string)
}

#[test]
fn a_root_rotation_by_cross_signing_keeps_old_and_new_trusting_peers_working() {
    let server = TestServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let old_root = tmp.path().join("old-root.pem");
    std::fs::copy(server.dir.join("classes/db/root.pem"), &old_root).unwrap();
    let csr = openssl_csr(
        tmp.path(),
        "r",
        P256,
        "/CN=r.db.internal",
        &["-addext", "subjectAltName=DNS:r.db.internal"],
    );
    let sign = |name: &str| {
        let (status, body) = server.native_sign("db", &json!({"class": "db", "csr": csr}));
        assert_eq!(status, 200, "{body}");
        let leaf = tmp.path().join(format!("{name}.pem"));
        let chain = tmp.path().join(format!("{name}-chain.pem"));
        std::fs::write(&leaf, body["certificate"].as_str().unwrap()).unwrap();
        std::fs::write(&chain, body["chain"].as_str().unwrap()).unwrap();
        (leaf, chain)
    };
    let (before, before_chain) = sign("before");

    admin(&server, &["rotate", "root-prepare", "--class", "db"]);
    wait_until("two roots in the bundle", || {
        server
            .client()
            .request("GET", "/v1/classes/db/bundle", &[], b"")
            .text()
            .matches("BEGIN CERTIFICATE")
            .count()
            == 2
    });
    let bundle = tmp.path().join("bundle.pem");
    std::fs::write(
        &bundle,
        server
            .client()
            .request("GET", "/v1/classes/db/bundle", &[], b"")
            .text(),
    )
    .unwrap();
    admin(&server, &["rotate", "root-activate", "--class", "db"]);
    admin(&server, &["rotate", "prepare", "--class", "db"]);
    admin(&server, &["rotate", "activate", "--class", "db"]);
    wait_until("a chain with the cross certificate", || {
        server
            .client()
            .request("GET", "/v1/classes/db/chain", &[], b"")
            .text()
            .matches("BEGIN CERTIFICATE")
            .count()
            == 3
    });
    let (after, after_chain) = sign("after");
    assert_eq!(
        std::fs::read_to_string(&after_chain)
            .unwrap()
            .matches("BEGIN CERTIFICATE")
            .count(),
        3
    );
    let new_root = server.dir.join("classes/db/root.pem");
    assert_ne!(
        std::fs::read(&new_root).unwrap(),
        std::fs::read(&old_root).unwrap()
    );

    // A peer that still trusts only the old root, one that trusts only the
    // new root, and one with the published bundle all accept the new leaf;
    // the old leaf still verifies for old-root and bundle peers.
    for (what, anchors, leaf, chain) in [
        ("new leaf, old root", &old_root, &after, &after_chain),
        ("new leaf, new root", &new_root, &after, &after_chain),
        ("new leaf, bundle", &bundle, &after, &after_chain),
        ("old leaf, old root", &old_root, &before, &before_chain),
        ("old leaf, bundle", &bundle, &before, &before_chain),
    ] {
        let (ok, msg) = openssl_verify(anchors, chain, leaf);
        assert!(ok, "{what}: {msg}");
    }
    // another class's root still refuses it
    let (ok, _) = openssl_verify(
        &server.dir.join("classes/api/root.pem"),
        &after_chain,
        &after,
    );
    assert!(!ok);

    // The old root cannot leave the bundle while the retired intermediate's
    // leaves may still be alive.
    let out = run(Command::new(bin("ca-server"))
        .args(["rotate", "root-retire", "--class", "db", "--dir"])
        .arg(&server.dir));
    assert!(
        !out.status.success() && text(&out).contains("signed by the previous root"),
        "{}",
        text(&out)
    );
}
