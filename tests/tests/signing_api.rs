//! The signing API end to end: a real `ca-server dev` process with SoftHSM2
//! tokens, the native API with HMAC authentication, the real `cfssl` client
//! through the CFSSL-compatible endpoint, and every denial the issue lists.

use serde_json::json;
use std::path::Path;
use std::process::Command;
use trellis_e2e::{bin, now_unix, openssl_csr, openssl_verify, run, text, TestServer};

const P256: &[&str] = &["ec", "-pkeyopt", "ec_paramgen_curve:P-256"];

fn write(dir: &Path, name: &str, contents: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

#[test]
fn native_sign_issues_a_chain_that_openssl_verifies() {
    let server = TestServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let csr = openssl_csr(
        tmp.path(),
        "pg0",
        P256,
        "/CN=pg-0.db.internal",
        &["-addext", "subjectAltName=DNS:pg-0.db.internal"],
    );
    let (status, body) = server.native_sign(
        "db",
        &json!({"class": "db", "profile": "server", "csr": csr}),
    );
    assert_eq!(status, 200, "{body}");
    let leaf = write(
        tmp.path(),
        "leaf.pem",
        body["certificate"].as_str().unwrap(),
    );
    let chain = body["chain"].as_str().unwrap();
    assert!(
        chain.starts_with(body["certificate"].as_str().unwrap())
            && chain.matches("BEGIN CERTIFICATE").count() == 2
    );
    let intermediate = write(tmp.path(), "chain.pem", chain);
    let (ok, out) = openssl_verify(
        &server.dir.join("classes/db/root.pem"),
        &intermediate,
        &leaf,
    );
    assert!(ok, "{out}");
    let (ok, _) = openssl_verify(
        &server.dir.join("classes/api/root.pem"),
        &intermediate,
        &leaf,
    );
    assert!(!ok, "a db leaf verified against the api root");
    let serial = Command::new("openssl")
        .args(["x509", "-noout", "-serial", "-in"])
        .arg(&leaf)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&serial.stdout)
            .trim()
            .trim_start_matches("serial=")
            .to_lowercase(),
        body["serial"].as_str().unwrap()
    );

    // bundles and chains are public; the bundle is the class root
    let client = server.client();
    let bundle = client.request("GET", "/v1/classes/db/bundle", &[], b"");
    assert_eq!(bundle.status, 200);
    assert_eq!(
        bundle.text(),
        std::fs::read_to_string(server.dir.join("classes/db/root.pem")).unwrap()
    );
    let classes = client.request("GET", "/v1/classes", &[], b"").json();
    let names: Vec<&str> = classes["classes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["api", "ca", "db", "web"]);
    assert_eq!(client.request("GET", "/readyz", &[], b"").status, 200);
    let metrics = client.request("GET", "/metrics", &[], b"").text();
    assert!(
        metrics.contains("trellis_certificates_issued_total{class=\"db\",profile=\"server\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("trellis_hsm_sign_seconds_bucket"));
    let log = server.server_log();
    assert!(
        log.contains("certificate issued") && log.contains(body["serial"].as_str().unwrap()),
        "{log}"
    );

    // SIGTERM: drain and exit cleanly
    let mut server = server;
    let status = server.stop().expect("server was running");
    assert!(
        status.success(),
        "exit status {status:?}: {}",
        server.server_log()
    );
    assert!(server.server_log().contains("server stopped"));
}

/// The cfssl client config for `auth_remote` against this server.
fn cfssl_config(server: &TestServer, dir: &Path, key_id: &str) -> std::path::PathBuf {
    let key =
        std::fs::read_to_string(server.dir.join(format!("secrets/auth-{key_id}.hex"))).unwrap();
    let config = json!({
        "signing": {"default": {"auth_remote": {"remote": "trellis", "auth_key": key_id}}},
        "auth_keys": {key_id: {"type": "standard", "key": key.trim()}},
        "remotes": {"trellis": server.url()}
    });
    write(dir, "cfssl-client.json", &config.to_string())
}

fn cfssl(server: &TestServer, args: &[&str], config: &Path, dir: &Path) -> std::process::Output {
    run(Command::new("cfssl")
        .args(&args[..1])
        .arg("-config")
        .arg(config)
        .args(&args[1..])
        .current_dir(dir)
        .env("SSL_CERT_FILE", server.dir.join("classes/ca/root.pem")))
}

#[test]
fn the_real_cfssl_client_gets_certificates_through_authsign() {
    let server = TestServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let config = cfssl_config(&server, tmp.path(), "db");

    // cfssl sign with a CSR made by openssl
    openssl_csr(
        tmp.path(),
        "r",
        P256,
        "/CN=cf-1.db.internal",
        &["-addext", "subjectAltName=DNS:cf-1.db.internal"],
    );
    let out = cfssl(
        &server,
        &["sign", "-label", "db", "r.csr"],
        &config,
        tmp.path(),
    );
    assert!(out.status.success(), "cfssl sign: {}", text(&out));
    let signed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let leaf = write(tmp.path(), "sign.pem", signed["cert"].as_str().unwrap());
    let (ok, msg) = openssl_verify(
        &server.dir.join("classes/db/root.pem"),
        &server.dir.join("classes/db/intermediate.pem"),
        &leaf,
    );
    assert!(ok, "{msg}");
    for other in ["api", "web"] {
        let (ok, _) = openssl_verify(
            &server.dir.join(format!("classes/{other}/root.pem")),
            &server.dir.join("classes/db/intermediate.pem"),
            &leaf,
        );
        assert!(
            !ok,
            "cfssl-issued db leaf verified against the {other} root"
        );
    }

    // cfssl gencert: the client makes the key and CSR itself
    write(
        tmp.path(),
        "csr.json",
        r#"{"CN":"cf-2.db.internal","hosts":["cf-2.db.internal"],"key":{"algo":"ecdsa","size":256}}"#,
    );
    let out = cfssl(
        &server,
        &["gencert", "-label", "db", "csr.json"],
        &config,
        tmp.path(),
    );
    assert!(out.status.success(), "cfssl gencert: {}", text(&out));
    let generated: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let leaf = write(
        tmp.path(),
        "gencert.pem",
        generated["cert"].as_str().unwrap(),
    );
    let (ok, msg) = openssl_verify(
        &server.dir.join("classes/db/root.pem"),
        &server.dir.join("classes/db/intermediate.pem"),
        &leaf,
    );
    assert!(ok, "{msg}");
    let san = Command::new("openssl")
        .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
        .arg(&leaf)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&san.stdout).contains("DNS:cf-2.db.internal"));

    // a policy denial reaches the cfssl user with its reasons
    write(
        tmp.path(),
        "bad.json",
        r#"{"CN":"evil.example","hosts":["evil.example"],"key":{"algo":"ecdsa","size":256}}"#,
    );
    let out = cfssl(
        &server,
        &["gencert", "-label", "db", "bad.json"],
        &config,
        tmp.path(),
    );
    assert!(!out.status.success());
    assert!(text(&out).contains("name_not_allowed"), "{}", text(&out));

    // the db key may not ask for class api
    let out = cfssl(
        &server,
        &["sign", "-label", "api", "r.csr"],
        &config,
        tmp.path(),
    );
    assert!(!out.status.success());
    assert!(text(&out).contains("forbidden_scope"), "{}", text(&out));

    // cfssl info answers with the signer (the db intermediate)
    let out = cfssl(&server, &["info", "-label", "db"], &config, tmp.path());
    assert!(out.status.success(), "cfssl info: {}", text(&out));
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        info["certificate"].as_str().unwrap().trim(),
        std::fs::read_to_string(server.dir.join("classes/db/intermediate.pem"))
            .unwrap()
            .trim()
    );
}

/// Each case: the error code, the HTTP status, and that nothing was issued.
/// What one row of the denial matrix sends.
enum Request {
    /// A native request for `/v1/sign`, signed by `key` (fresh nonce, now).
    Signed {
        key: &'static str,
        body: serde_json::Value,
    },
    /// Exactly these headers and body to `/v1/sign` (authentication cases).
    Raw {
        headers: Vec<(&'static str, String)>,
        body: Vec<u8>,
    },
}

/// One row of the denial matrix: a request and the refusal it must get.
struct Denial {
    name: &'static str,
    request: Request,
    status: u16,
    code: &'static str,
    /// Reason codes the refusal must list (it may list others too).
    reasons: &'static [&'static str],
}

/// Send one row; every way it differs from what the row expects.
fn check_denial(server: &TestServer, case: &Denial) -> Vec<String> {
    let issued = || server.metric("trellis_certificates_issued_total", "");
    let before = issued();
    let response = match &case.request {
        Request::Signed { key, body } => {
            let body = serde_json::to_vec(body).unwrap();
            let header = server.auth_header(key, &body, now_unix(), &ca_proto::auth::new_nonce());
            server
                .client()
                .request("POST", "/v1/sign", &[("authorization", &header)], &body)
        }
        Request::Raw { headers, body } => {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            server.client().request("POST", "/v1/sign", &headers, body)
        }
    };
    let got = response.json();
    let mut wrong = Vec::new();
    if response.status != case.status {
        wrong.push(format!(
            "status {} (expected {})",
            response.status, case.status
        ));
    }
    if got["error"]["code"] != case.code {
        wrong.push(format!(
            "error code {} (expected {:?})",
            got["error"]["code"], case.code
        ));
    }
    let reasons: Vec<&str> = got["error"]["reasons"]
        .as_array()
        .map(|a| a.iter().filter_map(|r| r["code"].as_str()).collect())
        .unwrap_or_default();
    for reason in case.reasons {
        if !reasons.contains(reason) {
            wrong.push(format!("reason {reason} missing (got {reasons:?})"));
        }
    }
    if got.get("certificate").is_some() {
        wrong.push("the refusal carries a certificate".into());
    }
    let after = issued();
    if after != before {
        wrong.push(format!("the issued counter moved from {before} to {after}"));
    }
    wrong
        .into_iter()
        .map(|w| format!("{}: {w}; response {}", case.name, response.text()))
        .collect()
}

#[test]
fn every_denial_has_a_stable_code_and_issues_nothing() {
    let server = TestServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let issued = || server.metric("trellis_certificates_issued_total", "");
    let san = |names: &str| vec!["-addext".to_string(), format!("subjectAltName={names}")];
    let csr_with = |name: &str, key: &[&str], cn: &str, extra: Vec<String>| {
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        openssl_csr(dir, name, key, cn, &extra)
    };
    let sign = |csr: &str| json!({"class": "db", "profile": "server", "csr": csr});
    let db = |body: serde_json::Value| Request::Signed { key: "db", body };

    // the CSRs
    let ip = csr_with(
        "ip",
        P256,
        "/CN=ip.db.internal",
        san("DNS:ip.db.internal,IP:1.1.1.1"),
    );
    let outside = csr_with(
        "outside",
        P256,
        "/CN=www.example.com",
        san("DNS:www.example.com"),
    );
    let wildcard = csr_with("wild", P256, "/CN=x.db.internal", san("DNS:*.db.internal"));
    let suffix = csr_with(
        "evil",
        P256,
        "/CN=db.internal.evil.example",
        san("DNS:db.internal.evil.example"),
    );
    let many: Vec<String> = (0..11).map(|i| format!("DNS:n{i}.db.internal")).collect();
    let too_many = csr_with("many", P256, "/CN=n0.db.internal", san(&many.join(",")));
    let rsa1024 = csr_with(
        "rsa1024",
        &["rsa:1024"],
        "/CN=r.db.internal",
        san("DNS:r.db.internal"),
    );
    let p192 = csr_with(
        "p192",
        &["ec", "-pkeyopt", "ec_paramgen_curve:prime192v1"],
        "/CN=p.db.internal",
        san("DNS:p.db.internal"),
    );
    let sha1 = csr_with(
        "sha1",
        &["rsa:2048"],
        "/CN=s.db.internal",
        [san("DNS:s.db.internal"), vec!["-sha1".into()]].concat(),
    );
    let ca = csr_with(
        "ca",
        P256,
        "/CN=c.db.internal",
        [
            san("DNS:c.db.internal"),
            vec!["-addext".into(), "basicConstraints=critical,CA:TRUE".into()],
        ]
        .concat(),
    );
    let good = csr_with("good", P256, "/CN=g.db.internal", san("DNS:g.db.internal"));
    // broken signature: a bit flipped in the last byte of the DER signature
    let mut broken = pem_to_der(&good);
    let last = broken.len() - 1;
    broken[last] ^= 1;
    let api = csr_with("api", P256, "/CN=a.api.internal", san("DNS:a.api.internal"));

    // authentication: a request that succeeded once, then the same header again
    let client = server.client();
    let body = serde_json::to_vec(&sign(&good)).unwrap();
    let header = server.auth_header("db", &body, now_unix(), "replayed-nonce-0001");
    let first = client.request("POST", "/v1/sign", &[("authorization", &header)], &body);
    assert_eq!(first.status, 200, "{}", first.text());
    let stale = server.auth_header("db", &body, now_unix() - 400, "stale-nonce-000001");
    let mismatched = server.auth_header("db", &body, now_unix(), "mismatch-nonce-001");
    let garbage = b"{not json".to_vec();
    let garbage_auth = server.auth_header("db", &garbage, now_unix(), &ca_proto::auth::new_nonce());

    let denied = |name: &'static str, request: Request, reasons: &'static [&'static str]| Denial {
        name,
        request,
        status: 403,
        code: "policy_denied",
        reasons,
    };
    let refused = |name: &'static str, request: Request, status: u16, code: &'static str| Denial {
        name,
        request,
        status,
        code,
        reasons: &[],
    };
    let raw = |headers: Vec<(&'static str, String)>, body: &[u8]| Request::Raw {
        headers,
        body: body.to_vec(),
    };
    let cases = [
        // policy
        denied("IP SAN 1.1.1.1", db(sign(&ip)), &["ip_not_allowed"]),
        denied(
            "name outside the class",
            db(sign(&outside)),
            &["name_not_allowed"],
        ),
        denied("wildcard", db(sign(&wildcard)), &["wildcard_not_allowed"]),
        denied("suffix trick", db(sign(&suffix)), &["name_not_allowed"]),
        denied("11 SANs", db(sign(&too_many)), &["too_many_sans"]),
        denied("RSA-1024", db(sign(&rsa1024)), &["key_too_small"]),
        denied("P-192", db(sign(&p192)), &["key_algorithm_not_allowed"]),
        denied(
            "SHA-1 CSR",
            db(sign(&sha1)),
            &["signature_algorithm_not_allowed"],
        ),
        denied("CA:TRUE requested", db(sign(&ca)), &["ca_requested"]),
        // the CSR itself
        refused(
            "broken CSR signature",
            db(sign(&der_to_pem(&broken))),
            400,
            "bad_csr_signature",
        ),
        refused(
            "not a CSR",
            db(sign(
                "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
            )),
            400,
            "malformed_csr",
        ),
        // scope, class, profile, lifetime
        refused(
            "db key, api class",
            db(json!({"class": "api", "profile": "server", "csr": api})),
            403,
            "forbidden_scope",
        ),
        refused(
            "unknown class",
            Request::Signed {
                key: "admin",
                body: json!({"class": "nope", "csr": good}),
            },
            404,
            "unknown_class",
        ),
        denied(
            "unknown profile",
            db(json!({"class": "db", "profile": "nope", "csr": good})),
            &["unknown_profile"],
        ),
        denied(
            "ttl above max",
            db(json!({"class": "db", "profile": "server", "csr": good, "ttl": "30d"})),
            &["ttl_too_long"],
        ),
        // authentication
        refused(
            "replayed nonce",
            raw(vec![("authorization", header)], &body),
            401,
            "replayed_request",
        ),
        refused(
            "timestamp 400 s old",
            raw(vec![("authorization", stale)], &body),
            401,
            "stale_timestamp",
        ),
        refused(
            "signature over another body",
            raw(
                vec![("authorization", mismatched)],
                &serde_json::to_vec(&sign(&ip)).unwrap(),
            ),
            401,
            "unauthenticated",
        ),
        refused(
            "no authorization header",
            raw(vec![], &body),
            401,
            "unauthenticated",
        ),
        // malformed and oversized bodies
        refused(
            "body is not JSON",
            raw(vec![("authorization", garbage_auth)], &garbage),
            400,
            "malformed_request",
        ),
        refused(
            "10 MiB body",
            raw(
                vec![("expect", "100-continue".to_string())],
                &vec![b'a'; 10 * 1024 * 1024],
            ),
            413,
            "body_too_large",
        ),
    ];
    assert_eq!(cases.len(), 21, "the matrix lost or gained a row");
    let failures: Vec<String> = cases
        .iter()
        .flat_map(|case| check_denial(&server, case))
        .collect();
    assert!(
        failures.is_empty(),
        "{} mismatches in the denial matrix:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // uppercase and trailing dot are normalised, then allowed (and the
    // issued counter the matrix watched does move when something is issued)
    let upper = csr_with(
        "upper",
        P256,
        "/CN=API-1.DB.INTERNAL.",
        san("DNS:API-1.DB.INTERNAL."),
    );
    let before = issued();
    let (status, body) = server.native_sign("db", &sign(&upper));
    assert_eq!(status, 200, "{body}");
    assert_eq!(issued(), before + 1.0, "the issued counter did not move");
    let leaf = write(dir, "upper.pem", body["certificate"].as_str().unwrap());
    let out = Command::new("openssl")
        .args([
            "x509",
            "-noout",
            "-subject",
            "-ext",
            "subjectAltName",
            "-in",
        ])
        .arg(&leaf)
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success()
            && shown.contains("DNS:api-1.db.internal")
            && shown.contains("CN = api-1.db.internal")
            && !shown.contains("INTERNAL"),
        "{shown}"
    );

    // the server is still healthy, and the denials are in its log
    assert_eq!(client.request("GET", "/healthz", &[], b"").status, 200);
    let log = server.server_log();
    for needle in [
        "ip_not_allowed",
        "forbidden_scope",
        "replayed_request",
        "stale_timestamp",
    ] {
        assert!(log.contains(needle), "log lacks {needle}");
    }
    assert!(server.metric("trellis_denials_total", "reason=\"ip_not_allowed\"") >= 1.0);
    // no secret in the log
    let secret = std::fs::read_to_string(server.dir.join("secrets/auth-db.hex")).unwrap();
    assert!(!secret.trim().is_empty());
    assert!(!log.contains(secret.trim()));
}

#[test]
fn policy_check_prints_the_decision() {
    let server_dir = tempfile::tempdir().unwrap();
    let dir = server_dir.path().join("var");
    let init = run(Command::new(bin("ca-server"))
        .args(["dev", "--init-only", "--dir"])
        .arg(&dir));
    assert!(init.status.success(), "{}", text(&init));
    let tmp = tempfile::tempdir().unwrap();
    openssl_csr(
        tmp.path(),
        "ok",
        P256,
        "/CN=pg-1.db.internal",
        &["-addext", "subjectAltName=DNS:pg-1.db.internal"],
    );
    let out = run(Command::new(bin("ca-server"))
        .args(["policy", "check", "--dir"])
        .arg(&dir)
        .args(["--class", "db", "--profile", "server"])
        .arg(tmp.path().join("ok.csr")));
    assert!(out.status.success(), "{}", text(&out));
    let decision: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(decision["grant"]["dns_names"], json!(["pg-1.db.internal"]));

    let out = run(Command::new(bin("ca-server"))
        .args(["policy", "check", "--dir"])
        .arg(&dir)
        .args([
            "--class",
            "db",
            "--profile",
            "server",
            "--host",
            "1.1.1.1",
            "--host",
            "x.evil.example",
        ])
        .arg(tmp.path().join("ok.csr")));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let decision: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let codes: Vec<&str> = decision["deny"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["code"].as_str())
        .collect();
    assert!(
        codes.contains(&"ip_not_allowed") && codes.contains(&"name_not_allowed"),
        "{codes:?}"
    );
}

fn pem_to_der(pem: &str) -> Vec<u8> {
    use base64::Engine;
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap()
}

fn der_to_pem(der: &[u8]) -> String {
    use base64::Engine;
    format!(
        "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
        base64::engine::general_purpose::STANDARD.encode(der)
    )
}

#[test]
fn a_key_over_its_rate_limit_gets_429() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("var");
    let init = run(Command::new(bin("ca-server"))
        .args(["dev", "--init-only", "--dir"])
        .arg(&dir));
    assert!(init.status.success(), "{}", text(&init));
    // the `web` key: 2 requests of burst, refilled at one per minute
    let keys = dir.join("auth-keys.toml");
    let text_before = std::fs::read_to_string(&keys).unwrap();
    let limited = text_before.replace(
        "id = \"web\"\nsecret = \"file:secrets/auth-web.hex\"",
        "id = \"web\"\nrate_per_second = 0.016\nburst = 2\nsecret = \"file:secrets/auth-web.hex\"",
    );
    assert_ne!(limited, text_before);
    std::fs::write(&keys, limited).unwrap();
    let server = TestServer::start_in(&dir, &[]);
    let csr = openssl_csr(
        tmp.path(),
        "w",
        P256,
        "/CN=w.web.internal",
        &["-addext", "subjectAltName=DNS:w.web.internal"],
    );
    let statuses: Vec<(u16, String)> = (0..3)
        .map(|_| {
            let (status, body) = server.native_sign("web", &json!({"class": "web", "csr": csr}));
            (
                status,
                body["error"]["code"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(statuses[0].0, 200);
    assert_eq!(statuses[1].0, 200);
    assert_eq!(statuses[2], (429, "rate_limited".to_string()));
    // other keys are not affected
    let csr = openssl_csr(
        tmp.path(),
        "d",
        P256,
        "/CN=d.db.internal",
        &["-addext", "subjectAltName=DNS:d.db.internal"],
    );
    assert_eq!(
        server
            .native_sign("db", &json!({"class": "db", "csr": csr}))
            .0,
        200
    );
}
