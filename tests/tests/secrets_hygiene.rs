//! A full scenario with a distinctive auth secret and PINs, then a search for
//! them everywhere they must not be: server output, metrics, every response
//! body (errors included), and every file of the deployment other than the
//! secret files themselves.

use serde_json::json;
use std::path::Path;
use std::process::Command;
use trellis_e2e::{bin, now_unix, openssl_csr, run, text, TestServer};

const SECRET: &str = "5ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e75ec2e7aaaa";
const ONLINE_PIN: &str = "pin-online-7f3e9d2c";
const ROOT_PIN: &str = "pin-root-4b8a1e6f";
const SO_PIN: &str = "pin-so-93c2d5a8";
const P256: &[&str] = &["ec", "-pkeyopt", "ec_paramgen_curve:P-256"];

fn grep_tree(dir: &Path, needles: &[&str], allowed: &[&str], hits: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            grep_tree(&path, needles, allowed, hits);
            continue;
        }
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if allowed.contains(&name.as_str()) {
            continue;
        }
        if !path.is_file() {
            continue; // a socket or a FIFO: nothing stored in it
        }
        let bytes = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (an unread file would pass)", path.display()));
        for needle in needles {
            if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                hits.push(format!("{} contains {needle}", path.display()));
            }
        }
    }
}

#[test]
fn secrets_and_pins_appear_nowhere_but_their_own_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("var");
    let secrets = dir.join("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    for (file, value) in [
        ("auth-db.hex", SECRET),
        ("online.pin", ONLINE_PIN),
        ("root.pin", ROOT_PIN),
        ("so.pin", SO_PIN),
    ] {
        std::fs::write(secrets.join(file), format!("{value}\n")).unwrap();
    }
    let mut outputs = String::new();
    let init = run(Command::new(bin("ca-server"))
        .args(["dev", "--init-only", "--dir"])
        .arg(&dir));
    assert!(init.status.success(), "{}", text(&init));
    outputs.push_str(&text(&init));

    let mut server = TestServer::start_in(&dir, &["--log-format", "json"]);
    let client = server.client();
    let csr = openssl_csr(
        tmp.path(),
        "s",
        P256,
        "/CN=s.db.internal",
        &["-addext", "subjectAltName=DNS:s.db.internal"],
    );
    let mut bodies = Vec::new();
    // success, policy denial, scope denial, replay, bad signature, malformed
    for body in [
        json!({"class": "db", "csr": csr}),
        json!({"class": "db", "csr": csr, "hosts": ["1.1.1.1"]}),
        json!({"class": "api", "csr": csr}),
    ] {
        bodies.push(server.native_sign("db", &body).1.to_string());
    }
    let body = serde_json::to_vec(&json!({"class": "db", "csr": csr})).unwrap();
    let header = server.auth_header("db", &body, now_unix(), "hygiene-nonce-0001");
    for _ in 0..2 {
        bodies.push(
            client
                .request("POST", "/v1/sign", &[("authorization", &header)], &body)
                .text(),
        );
    }
    let forged = header
        .replace("sig=", "sig=0")
        .chars()
        .take(header.len())
        .collect::<String>();
    bodies.push(
        client
            .request("POST", "/v1/sign", &[("authorization", &forged)], &body)
            .text(),
    );
    bodies.push(
        client
            .request(
                "POST",
                "/v1/sign",
                &[("authorization", &format!("{header}{SECRET}"))],
                &body,
            )
            .text(),
    );
    bodies.push(client.request("POST", "/v1/sign", &[], b"{nope").text());
    // the CFSSL endpoint with a wrong and a right token
    let inner = serde_json::to_vec(&json!({"certificate_request": csr, "label": "db"})).unwrap();
    let secret = ca_proto::auth::parse_secret(SECRET).unwrap();
    for key in [
        secret.as_slice(),
        b"0123456789abcdef0123456789abcdef".as_slice(),
    ] {
        let envelope = ca_proto::cfssl::make_authsign(key, &inner, now_unix());
        bodies.push(
            client
                .request("POST", "/api/v1/cfssl/authsign", &[], &envelope)
                .text(),
        );
    }
    bodies.push(client.request("GET", "/metrics", &[], b"").text());
    bodies.push(client.request("GET", "/v1/classes", &[], b"").text());
    bodies.push(client.request("GET", "/readyz", &[], b"").text());
    assert!(
        bodies[0].contains("BEGIN CERTIFICATE"),
        "the scenario did issue: {}",
        bodies[0]
    );
    server.stop();
    outputs.push_str(&server.server_log());
    for tool in [&["log", "show"][..], &["log", "verify"], &["status"]] {
        let out = run(Command::new(bin("ca-server"))
            .args(tool)
            .arg("--dir")
            .arg(&dir));
        assert!(out.status.success(), "ca-server {tool:?}: {}", text(&out));
        outputs.push_str(&text(&out));
    }

    let needles = [SECRET, ONLINE_PIN, ROOT_PIN, SO_PIN];
    let mut hits = Vec::new();
    for needle in needles {
        if outputs.contains(needle) {
            hits.push(format!("server/tool output contains {needle}"));
        }
        for body in &bodies {
            if body.contains(needle) {
                hits.push(format!("a response body contains {needle}: {body}"));
            }
        }
    }
    grep_tree(
        &dir,
        &needles,
        &["auth-db.hex", "online.pin", "root.pin", "so.pin"],
        &mut hits,
    );
    // the search finds what is there: without the exceptions it reports the
    // secret files themselves
    let mut own = Vec::new();
    grep_tree(&dir, &needles, &[], &mut own);
    assert!(
        own.len() >= needles.len(),
        "the file search missed the secret files: {own:?}"
    );
    assert!(hits.is_empty(), "secrets leaked:\n{}", hits.join("\n"));
    assert!(
        outputs.contains("auth_denied"),
        "the scenario did exercise denials"
    );
}
