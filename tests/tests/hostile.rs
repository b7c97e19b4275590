//! Hostile input against a real server: slow and idle connections are cut
//! without starving others, a thousand connections do not exhaust it,
//! malformed bodies and CSRs get clear errors, HTTP/2 floods are absorbed —
//! and the server stays healthy throughout.

use serde_json::json;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use trellis_e2e::{bin, now_unix, openssl_csr, run, text, TestServer};

const P256: &[&str] = &["ec", "-pkeyopt", "ec_paramgen_curve:P-256"];

/// A server whose header read timeout is 2 s (instead of 10) to keep the test short.
fn server_with_short_timeouts(tmp: &Path) -> TestServer {
    let dir = tmp.join("var");
    let out = run(Command::new(bin("ca-server"))
        .args(["dev", "--init-only", "--dir"])
        .arg(&dir));
    assert!(out.status.success(), "{}", text(&out));
    let path = dir.join("config.toml");
    let config = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        config.replace(
            "header_read_timeout_secs = 10",
            "header_read_timeout_secs = 2",
        ),
    )
    .unwrap();
    TestServer::start_in(&dir, &[])
}

/// Read until the server closes the connection or `limit` passes.
fn closed_within(stream: &mut impl Read, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    while started.elapsed() < limit {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return Some(started.elapsed()),
            Ok(_) => {}
        }
    }
    None
}

#[test]
fn slow_and_idle_connections_are_cut_without_starving_others() {
    let tmp = tempfile::tempdir().unwrap();
    let server = server_with_short_timeouts(tmp.path());
    let client = server.client();

    // slowloris: headers trickled one line every 500 ms
    let mut slow = client.connect();
    slow.sock
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    slow.write_all(b"POST /v1/sign HTTP/1.1\r\nHost: localhost\r\n")
        .unwrap();
    let started = Instant::now();
    let mut cut = false;
    for i in 0..40 {
        std::thread::sleep(Duration::from_millis(300));
        if slow
            .write_all(format!("X-Slow-{i}: x\r\n").as_bytes())
            .is_err()
        {
            cut = true;
            break;
        }
        let mut buf = [0u8; 512];
        match slow.read(&mut buf) {
            Ok(0) => {
                cut = true;
                break;
            }
            Ok(_) => {
                cut = true; // a 408/400 answer before closing is fine too
                break;
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => {
                cut = true;
                break;
            }
        }
        // meanwhile, others are served
        if i == 2 {
            assert_eq!(client.request("GET", "/healthz", &[], b"").status, 200);
        }
    }
    assert!(
        cut,
        "a slowloris connection was kept for {:?}",
        started.elapsed()
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "slowloris cut only after {:?}",
        started.elapsed()
    );

    // idle: TLS done, nothing sent
    let mut idle = client.connect();
    idle.sock
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let _ = idle.conn.complete_io(&mut idle.sock);
    assert!(
        closed_within(&mut idle, Duration::from_secs(8)).is_some(),
        "an idle TLS connection was never closed"
    );

    // raw TCP that never starts TLS
    let mut raw = TcpStream::connect(&server.addr).unwrap();
    raw.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    assert!(
        closed_within(&mut raw, Duration::from_secs(15)).is_some(),
        "a silent TCP connection was never closed"
    );
}

#[test]
fn a_thousand_connections_do_not_stop_a_fresh_client() {
    let server = TestServer::start();
    let mut held = Vec::new();
    for _ in 0..1000 {
        held.push(TcpStream::connect(&server.addr).expect("connect"));
    }
    let started = Instant::now();
    let response = server.client().request("GET", "/healthz", &[], b"");
    assert_eq!(response.status, 200);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "fresh client waited {:?}",
        started.elapsed()
    );
    let tmp = tempfile::tempdir().unwrap();
    let csr = openssl_csr(
        tmp.path(),
        "k",
        P256,
        "/CN=k.db.internal",
        &["-addext", "subjectAltName=DNS:k.db.internal"],
    );
    assert_eq!(
        server
            .native_sign("db", &json!({"class": "db", "csr": csr}))
            .0,
        200
    );
    drop(held);
}

#[test]
fn malformed_bodies_and_csrs_get_clear_errors() {
    let server = TestServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let client = server.client();
    let post = |body: &[u8]| {
        let header = server.auth_header("db", body, now_unix(), &ca_proto::auth::new_nonce());
        client.request("POST", "/v1/sign", &[("authorization", &header)], body)
    };
    let code = |r: &trellis_e2e::HttpResponse| {
        r.json()["error"]["code"].as_str().unwrap_or("").to_string()
    };

    // deeply nested JSON
    let nested = format!(
        "{{\"class\":{}1{}}}",
        "[".repeat(100_000 / 2),
        "]".repeat(100_000 / 2)
    );
    let r = post(nested.as_bytes());
    assert!(matches!(r.status, 400 | 413), "{}", r.text());
    let nested = format!("{{\"class\":{}1{}}}", "[".repeat(5000), "]".repeat(5000));
    let r = post(nested.as_bytes());
    assert_eq!(
        (r.status, code(&r)),
        (400, "malformed_request".to_string()),
        "{}",
        r.text()
    );
    // invalid UTF-8
    let r = post(b"{\"class\":\"db\xff\xfe\",\"csr\":\"x\"}");
    assert_eq!((r.status, code(&r)), (400, "malformed_request".to_string()));
    // a JSON array instead of an object, and wrong types
    assert_eq!(post(b"[\"db\",null,\"x\"]").status, 400);
    assert_eq!(post(b"{\"class\":1,\"csr\":[]}").status, 400);

    let good = openssl_csr(
        tmp.path(),
        "g",
        P256,
        "/CN=g.db.internal",
        &["-addext", "subjectAltName=DNS:g.db.internal"],
    );
    let sign = |csr: &str| server.native_sign("db", &json!({"class": "db", "csr": csr}));
    // PEM with garbage around it is fine
    let (status, body) = sign(&format!("garbage before\n{good}\ngarbage after\n"));
    assert_eq!(status, 200, "{body}");
    // thousands of SANs
    let sans: Vec<String> = (0..3000).map(|i| format!("DNS:n{i}.db.internal")).collect();
    let many = openssl_csr(
        tmp.path(),
        "many",
        P256,
        "/CN=n0.db.internal",
        &["-addext", &format!("subjectAltName={}", sans.join(","))],
    );
    let body = serde_json::to_vec(&json!({"class": "db", "csr": many})).unwrap();
    let header = server.auth_header("db", &body, now_unix(), &ca_proto::auth::new_nonce());
    let r = client.request(
        "POST",
        "/v1/sign",
        &[("authorization", &header), ("expect", "100-continue")],
        &body,
    );
    assert!(
        [
            (413, "body_too_large"),
            (400, "malformed_csr"),
            (403, "policy_denied")
        ]
        .contains(&(r.status, code(&r).as_str())),
        "{} {}",
        r.status,
        r.text()
    );
    // a wrong curve OID: P-256's OID patched to an unknown arc
    let der = pem_der(&good);
    let p256 = [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    let at = der
        .windows(8)
        .position(|w| w == p256)
        .expect("P-256 OID in the CSR");
    let mut wrong_curve = der.clone();
    wrong_curve[at + 7] = 0x63;
    let (status, body) = sign(&der_pem(&wrong_curve));
    assert!(matches!(status, 400 | 403), "{body}");
    // a negative RSA exponent
    let rsa = openssl_csr(
        tmp.path(),
        "rsa",
        &["rsa:2048"],
        "/CN=r.db.internal",
        &["-addext", "subjectAltName=DNS:r.db.internal"],
    );
    let der = pem_der(&rsa);
    let at = der
        .windows(5)
        .position(|w| w == [0x02, 0x03, 0x01, 0x00, 0x01])
        .expect("exponent 65537");
    let mut negative = der.clone();
    negative[at + 2] = 0xff;
    let (status, body) = sign(&der_pem(&negative));
    // refused as malformed before policy (the SPKI checks of issue 11)
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("malformed_csr")),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("RSA public exponent is negative"),
        "{body}"
    );
    // truncated DER, and an empty body
    let (status, body) = sign(&der_pem(&der[..der.len() / 2]));
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("malformed_csr")),
        "{body}"
    );
    let r = post(b"");
    assert_eq!(r.status, 400);

    assert_eq!(client.request("GET", "/healthz", &[], b"").status, 200);
    let log = server.server_log();
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn an_http2_stream_flood_is_absorbed() {
    let server = TestServer::start();
    let urls: Vec<String> = (0..2000)
        .map(|_| format!("{}/healthz", server.url()))
        .collect();
    let config = urls
        .iter()
        .map(|u| format!("url = \"{u}\"\noutput = \"/dev/null\"\n"))
        .collect::<String>();
    let tmp = tempfile::tempdir().unwrap();
    let list = tmp.path().join("urls.txt");
    std::fs::write(&list, config).unwrap();
    let out = run(Command::new("curl")
        .args([
            "--http2",
            "--parallel",
            "--parallel-max",
            "1000",
            "--parallel-immediate",
            "-s",
            "-w",
            "%{http_code}\n",
            "--cacert",
        ])
        .arg(server.dir.join("classes/ca/root.pem"))
        .arg("--config")
        .arg(&list));
    let codes = String::from_utf8_lossy(&out.stdout).to_string();
    let ok = codes.lines().filter(|l| *l == "200").count();
    assert!(ok > 0, "curl: {}", text(&out));
    assert_eq!(
        server.client().request("GET", "/healthz", &[], b"").status,
        200,
        "server unhealthy after the flood"
    );
}

fn pem_der(pem: &str) -> Vec<u8> {
    use base64::Engine;
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap()
}

fn der_pem(der: &[u8]) -> String {
    use base64::Engine;
    format!(
        "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
        base64::engine::general_purpose::STANDARD.encode(der)
    )
}
