//! Fairness and uniform answers, against the real server process: a key
//! that is being refused cannot make the server sign, fsync or log for it,
//! cannot fill another key's share of the replay cache, and a caller
//! without a secret learns nothing about which key ids exist. Refusals are
//! traced at a bounded rate with truncated request targets, and denials
//! record the names that were asked for.

use serde_json::json;
use std::path::Path;
use std::process::Command;
use std::time::Instant;
use trellis_e2e::{bin, db_csr, init_dev_with_server_settings, now_unix, run, text, TestServer};
const FLOOD_SECRET: &str = "f100d5ecf100d5ecf100d5ecf100d5ecf100d5ecf100d5ecf100d5ecf100d5ec";

/// A dev deployment with an extra key `flood` (class `db`, the given rate)
/// and extra `[server]` settings.
fn server_with_flood_key(tmp: &Path, rate: &str, settings: &str) -> TestServer {
    let dir = tmp.join("var");
    init_dev_with_server_settings(&dir, settings);
    let keys = dir.join("auth-keys.toml");
    let mut text = std::fs::read_to_string(&keys).unwrap();
    text.push_str(&format!(
        "\n[[key]]\nid = \"flood\"\nsecret = \"{FLOOD_SECRET}\"\nclasses = [\"db\"]\ncfssl = true\n{rate}\n"
    ));
    std::fs::write(&keys, text).unwrap();
    TestServer::start_in(&dir, &[])
}

fn flood_header(body: &[u8], ts: i64) -> String {
    let creds = ca_proto::auth::Credentials::new("flood", hex::decode(FLOOD_SECRET).unwrap());
    ca_proto::auth::sign_request(
        &creds,
        "POST",
        "/v1/sign",
        body,
        ts,
        &ca_proto::auth::new_nonce(),
    )
}

fn tree_size(server: &TestServer) -> u64 {
    let sth = server
        .client()
        .request("GET", "/v1/log/dev-1/sth", &[], b"")
        .json();
    sth["tree_size"]
        .as_u64()
        .expect("tree_size in the signed tree head")
}

fn post_sign(server: &TestServer, header: &str, body: &[u8]) -> (u16, serde_json::Value) {
    let r = server
        .client()
        .request("POST", "/v1/sign", &[("authorization", header)], body);
    (r.status, r.json())
}

fn code(v: &serde_json::Value) -> String {
    v["error"]["code"].as_str().unwrap_or_default().to_string()
}

#[test]
fn a_rate_limited_key_flood_costs_nothing_and_leaves_other_keys_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let server = server_with_flood_key(tmp.path(), "rate_per_second = 2.0\nburst = 3.0", "");
    let csr = db_csr(tmp.path(), "x");
    let before = tree_size(&server);
    // 4 threads × 100: out-of-scope requests (class api) and validly signed
    // garbage, as fast as they go.
    let started = Instant::now();
    let statuses: Vec<(u16, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|t| {
                let server = &server;
                let csr = &csr;
                s.spawn(move || {
                    (0..100)
                        .map(|i| {
                            let body = if (i + t) % 2 == 0 {
                                serde_json::to_vec(&json!({"class": "api", "csr": csr})).unwrap()
                            } else {
                                b"\x00garbage{{{".to_vec()
                            };
                            let (status, v) =
                                post_sign(server, &flood_header(&body, now_unix()), &body);
                            (status, code(&v))
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let elapsed = started.elapsed().as_secs_f64();
    let limited = statuses.iter().filter(|(_, c)| c == "rate_limited").count();
    assert!(limited >= 300, "only {limited} of 400 were rate limited");
    // Other keys are unaffected, during and after.
    let (status, body) = server.native_sign("db", &json!({"class": "db", "csr": csr}));
    assert_eq!(status, 200, "{body}");
    // What the flood could add to the log: what its bucket allowed
    // (burst + rate × time), one entry each, plus the one issuance above.
    let allowed = 3.0 + 2.0 * (elapsed + 1.0);
    let grew = tree_size(&server) - before;
    assert!(
        (grew as f64) <= allowed + 1.0,
        "the log grew by {grew} entries for a key allowed {allowed:.0} requests"
    );
    assert!(server.metric("trellis_rate_limited_total", "flood") >= 300.0);
    // Refusals are traced at a bounded rate, not one line each.
    let lines = server
        .server_log()
        .lines()
        .filter(|l| l.contains("rate_limited") && l.contains("flood"))
        .count();
    assert!(
        (lines as f64) <= elapsed + 2.0,
        "{lines} log lines for {limited} refusals in {elapsed:.1} s"
    );
}

#[test]
fn one_key_cannot_fill_another_keys_replay_share() {
    let tmp = tempfile::tempdir().unwrap();
    // Every key's share is at most 1024 nonces; `flood` may send far more
    // than that within the window (its rate limit is high).
    let server = server_with_flood_key(
        tmp.path(),
        "rate_per_second = 100000.0\nburst = 100000.0",
        "replay_cache_entries = 1024",
    );
    let csr = db_csr(tmp.path(), "y");
    let mut full = 0;
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let server = &server;
                s.spawn(move || {
                    let mut full = 0;
                    for _ in 0..400 {
                        let body = b"{}".to_vec();
                        let (_, v) = post_sign(server, &flood_header(&body, now_unix()), &body);
                        if code(&v) == "rate_limited" {
                            full += 1;
                        }
                    }
                    full
                })
            })
            .collect();
        for h in handles {
            full += h.join().unwrap();
        }
    });
    assert!(full > 0, "the flood key never filled its own share");
    // Every other key still signs.
    for key in ["db", "admin"] {
        let (status, body) = server.native_sign(key, &json!({"class": "db", "csr": csr}));
        assert_eq!(status, 200, "{key}: {body}");
    }
}

#[test]
fn unauthenticated_callers_get_one_answer_whatever_they_guess() {
    let server = TestServer::start();
    let body = br#"{"class":"db","csr":"x"}"#;
    let wrong = ca_proto::auth::Credentials::new("db", vec![7u8; 32]);
    let unknown = ca_proto::auth::Credentials::new("no-such-key", vec![7u8; 32]);
    let stale = now_unix() - 3600;
    let sign = |c: &ca_proto::auth::Credentials, ts: i64| {
        ca_proto::auth::sign_request(
            c,
            "POST",
            "/v1/sign",
            body,
            ts,
            &ca_proto::auth::new_nonce(),
        )
    };
    let cases = [
        ("known key, wrong secret", sign(&wrong, now_unix())),
        ("unknown key", sign(&unknown, now_unix())),
        ("known key, wrong secret, stale", sign(&wrong, stale)),
        ("unknown key, stale", sign(&unknown, stale)),
        (
            "malformed header",
            "TRELLIS-HMAC-SHA256 keyid=db, ts=1".to_string(),
        ),
        ("other scheme", "Bearer abc".to_string()),
    ];
    let mut answers = Vec::new();
    for (what, header) in &cases {
        let (status, v) = post_sign(&server, header, body);
        answers.push((what, status, v.to_string()));
    }
    for (what, status, v) in &answers {
        assert_eq!(
            (*status, v.as_str()),
            (answers[0].1, answers[0].2.as_str()),
            "{what} answers differently"
        );
    }
    assert_eq!(answers[0].1, 401);
    assert!(answers[0].2.contains("unauthenticated"));
    // A caller that holds the secret does learn that its clock is off.
    let real = ca_proto::auth::Credentials::new("db", server.secret("db"));
    let (status, v) = post_sign(&server, &sign(&real, stale), body);
    assert_eq!((status, code(&v).as_str()), (401, "stale_timestamp"));
}

#[test]
fn refusal_traces_are_truncated_and_bounded() {
    let server = TestServer::start();
    let client = server.client();
    let long = "A".repeat(6000);
    let path = format!("/v1/sign?{long}");
    let started = Instant::now();
    for _ in 0..200 {
        let r = client.request("POST", &path, &[("authorization", "Bearer x")], b"{}");
        assert_eq!(r.status, 401);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let log = server.server_log();
    assert!(
        !log.contains(&"A".repeat(200)),
        "a request target was written to the server log untruncated"
    );
    let lines = log.lines().filter(|l| l.contains("auth_denied")).count();
    assert!(
        (lines as f64) <= elapsed + 2.0,
        "{lines} auth_denied lines for 200 refusals in {elapsed:.1} s"
    );
    assert!(server.metric("trellis_auth_failures_total", "unauthenticated") >= 200.0);
}

#[test]
fn a_denial_records_the_names_that_were_requested() {
    let server = TestServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let csr = db_csr(tmp.path(), "plain");
    // hosts replace the CSR's SANs; the denial must name them.
    let (status, v) = server.native_sign(
        "db",
        &json!({"class": "db", "csr": csr, "hosts": ["evil.example", "10.9.8.7"]}),
    );
    assert_eq!((status, code(&v).as_str()), (403, "policy_denied"), "{v}");
    // Out of scope (a db key asking for api) with hosts: named too.
    let (status, v) = server.native_sign(
        "db",
        &json!({"class": "api", "csr": csr, "hosts": ["scope.example"]}),
    );
    assert_eq!((status, code(&v).as_str()), (403, "forbidden_scope"), "{v}");
    let show = |san: &str| {
        let out = run(Command::new(bin("ca-server"))
            .args(["log", "show", "--denied", "--json", "--san", san, "--dir"])
            .arg(&server.dir));
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let evil = show("evil.example");
    assert_eq!(evil.lines().count(), 1, "{evil}");
    let entry: serde_json::Value = serde_json::from_str(evil.trim()).unwrap();
    assert_eq!(entry["dns"], json!(["evil.example"]), "{evil}");
    assert_eq!(entry["ips"], json!(["10.9.8.7"]), "{evil}");
    let scope = show("scope.example");
    assert_eq!(scope.lines().count(), 1, "{scope}");
    assert!(scope.contains("forbidden_scope"), "{scope}");
}
