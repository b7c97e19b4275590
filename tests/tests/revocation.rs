//! Revocation end to end (issue 15): a revoked leaf is in the class's CRL
//! and OCSP answers and real openssl peers refuse it; who may revoke
//! through the API (auth keys with `revoke`, the certificate's holder) and
//! the stable errors; a key revoked for keyCompromise is never certified
//! again in any class; two replicas on one state directory publish each
//! other's revocations and each records them in its own log; a revoked
//! intermediate is on the root-signed CRL; and `log verify` counts
//! revocations and catches tampering with them.
//!
//! Peers are real openssl commands (`verify -crl_check[_all]`, `crl`,
//! `ocsp` with the request's nonce checked through `-reqin`), never our
//! own parsers. Two tests show defects found while writing these:
//! `ocsp_answers_good_for_a_leaf_the_moment_it_is_issued` and
//! `an_aging_root_crl_does_not_make_the_class_resign_every_second`.

use ca_proto::logentry::{LogEntry, Outcome};
use ca_proto::revocation::{holder_message, RevocationReason};
use ca_proto::sth::{LogEvidence, LogPublicKey};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};
use trellis_e2e::{bin, now_unix, openssl_csr, run, text, HttpResponse, TestServer};

const P256: &[&str] = &["ec", "-pkeyopt", "ec_paramgen_curve:P-256"];

#[test]
fn revoked_leaf_is_in_the_crl_and_ocsp_and_openssl_refuses_it() {
    let server = TestServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let root = server.dir.join("classes/db/root.pem");
    let bad = issue(&server, dir, "db", "db", "bad", "bad.db.internal");
    let good = issue(&server, dir, "db", "db", "good", "good.db.internal");
    let revocations_before = server.metric(
        "trellis_revocations_total",
        "class=\"db\",reason=\"keyCompromise\"",
    );

    // before: good (once the responder's index has read the log: see
    // `ocsp_answers_good_for_a_leaf_the_moment_it_is_issued`), and the CRL
    // lists nothing
    wait_for("the responder to know the new leaf", 5, || {
        ocsp(&server, dir, "db", &bad, &root).status == "good"
    });
    let crl = crl_text(&get(&server, "/v1/classes/db/crl").body);
    assert!(crl.contains("No Revoked Certificates"), "{crl}");

    let out = ca_server(
        &server.dir,
        &[
            "revoke",
            "--class",
            "db",
            "--serial",
            &bad.serial,
            "--reason",
            "keyCompromise",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains(&format!("revoked {}", bad.serial)));
    // the command's refusals, each with its stable code
    for (args, code) in [
        (
            vec!["--class", "db", "--serial", bad.serial.as_str()],
            "already_revoked",
        ),
        (
            vec!["--class", "db", "--serial", "0123456789abcdef01"],
            "unknown_serial",
        ),
        (
            vec!["--class", "web", "--serial", good.serial.as_str()],
            "serial_of_other_class",
        ),
        (
            vec!["--class", "nope", "--serial", good.serial.as_str()],
            "unknown_class",
        ),
    ] {
        let mut argv = vec!["revoke"];
        argv.extend(args);
        argv.extend(["--reason", "keyCompromise"]);
        let out = ca_server(&server.dir, &argv);
        assert!(
            !out.status.success()
                && String::from_utf8_lossy(&out.stderr).contains(&format!("ca-server: {code}: ")),
            "{argv:?}: {}",
            text(&out)
        );
    }

    // the running server adopts it (SIGHUP, else its one-second poll)
    let mut crl = String::new();
    wait_for("the served CRL to list the revoked leaf", 60, || {
        let response = get(&server, "/v1/classes/db/crl");
        assert_eq!(response.status, 200, "{}", response.text());
        assert_eq!(header(&response, "content-type"), "application/pkix-crl");
        crl = crl_text(&response.body);
        crl.contains(&openssl_serial(&bad.serial))
    });
    assert!(crl.contains("Key Compromise"), "{crl}");
    assert!(!crl.contains(&openssl_serial(&good.serial)), "{crl}");
    assert!(
        crl.contains(&format!("Issuer: {}", subject_of(&bad.intermediate))),
        "the CRL is not the issuing intermediate's: {crl}"
    );

    // openssl, with the CRL, refuses the revoked leaf and accepts the other
    let crl_pem = dir.join("crl.pem");
    let bundle = get(&server, "/v1/classes/db/crl?format=pem");
    assert_eq!(bundle.status, 200);
    // the intermediate's CRL and the root's (every class has one from init)
    assert_eq!(bundle.text().matches("BEGIN X509 CRL").count(), 2);
    std::fs::write(&crl_pem, bundle.body).unwrap();
    let (ok, msg) = verify_with_crls("-crl_check", &root, &bad.intermediate, &crl_pem, &bad.cert);
    assert!(!ok && msg.contains("certificate revoked"), "{msg}");
    let (ok, msg) = verify_with_crls(
        "-crl_check",
        &root,
        &good.intermediate,
        &crl_pem,
        &good.cert,
    );
    assert!(ok, "{msg}");
    // the same CRL by the intermediate's key label
    let label = active_label(&server.dir, "db");
    let by_label = get(&server, &format!("/v1/classes/db/crl/{label}"));
    assert_eq!(by_label.status, 200);
    assert!(crl_text(&by_label.body).contains(&openssl_serial(&bad.serial)));
    assert_eq!(get(&server, "/v1/classes/db/crl/db-int-nope").status, 404);

    // OCSP: revoked with its reason, good, unknown (same issuer, serial never
    // issued), and unauthorized for a CA this responder is not
    let answer = ocsp(&server, dir, "db", &bad, &root);
    assert_eq!(answer.status, "revoked", "{}", answer.text);
    assert!(
        answer.text.contains("Reason: keyCompromise"),
        "{}",
        answer.text
    );
    let answer = ocsp(&server, dir, "db", &good, &root);
    assert_eq!(answer.status, "good", "{}", answer.text);
    let never = ocsp_serial(&server, dir, "db", &good.intermediate, "0x1234", &root);
    assert_eq!(never.status, "unknown", "{}", never.text);
    let (stranger, stranger_ca) = throwaway_ca_leaf(dir);
    let answer = ocsp_request(
        &server,
        dir,
        "stranger",
        "db",
        &stranger_ca,
        &["-cert", path_str(&stranger)],
    );
    let answer = ocsp_verdict(dir, "stranger", &stranger_ca, &root, &answer);
    assert!(
        answer.text.contains("Responder Error: unauthorized"),
        "{}",
        answer.text
    );
    // the check of the nonce is real: the answer about one certificate
    // judged against the request about the other fails it
    std::fs::copy(dir.join("good.ocsp-req.der"), dir.join("swap.ocsp-req.der")).unwrap();
    let bad_response = std::fs::read(dir.join("bad.ocsp-resp.der")).unwrap();
    let out = run(Command::new("openssl")
        .args(["ocsp", "-no_nonce", "-respin"])
        .arg(dir.join("bad.ocsp-resp.der"))
        .arg("-reqin")
        .arg(dir.join("swap.ocsp-req.der"))
        .arg("-CAfile")
        .arg(&root)
        .arg("-verify_other")
        .arg(&bad.intermediate));
    assert!(
        !out.status.success() && text(&out).contains("Nonce Verify error"),
        "{}",
        text(&out)
    );
    // a request that is not one, and a class that does not exist
    let garbage = server.client().request(
        "POST",
        "/ocsp/db",
        &[("content-type", "application/ocsp-request")],
        b"not an OCSP request",
    );
    assert_eq!(garbage.status, 200);
    let request = std::fs::read(dir.join("bad.ocsp-req.der")).unwrap();
    std::fs::write(dir.join("garbage.ocsp-req.der"), &request).unwrap();
    std::fs::write(dir.join("nope.ocsp-req.der"), &request).unwrap();
    let answer = ocsp_verdict(dir, "garbage", &bad.intermediate, &root, &garbage.body);
    assert!(
        answer.text.contains("Responder Error: malformedrequest"),
        "{}",
        answer.text
    );
    let nope = server.client().request(
        "POST",
        "/ocsp/nope",
        &[("content-type", "application/ocsp-request")],
        &request,
    );
    let answer = ocsp_verdict(dir, "nope", &bad.intermediate, &root, &nope.body);
    assert!(
        answer.text.contains("Responder Error: unauthorized"),
        "{}",
        answer.text
    );
    let response = get(&server, "/v1/classes/nope/crl");
    assert_eq!(
        (response.status, code(&response.json())),
        (404, "unknown_class")
    );
    assert_eq!(get(&server, "/v1/classes/db/crl?format=xml").status, 400);

    // the GET form (RFC 6960 A.1) answers the same
    std::fs::write(dir.join("bad-get.ocsp-req.der"), &request).unwrap();
    let encoded = url_encode(&base64_std(&request));
    let response = get(&server, &format!("/ocsp/db/{encoded}"));
    assert_eq!(response.status, 200);
    assert_eq!(
        header(&response, "content-type"),
        "application/ocsp-response"
    );
    let answer = ocsp_verdict(dir, "bad-get", &bad.intermediate, &root, &response.body);
    assert_eq!(answer.status, "revoked", "{}", answer.text);
    assert_ne!(response.body, bad_response, "a fresh answer, not a replay");

    // metrics moved
    let revocations_after = server.metric(
        "trellis_revocations_total",
        "class=\"db\",reason=\"keyCompromise\"",
    );
    assert_eq!(revocations_after - revocations_before, 1.0);
    for status in ["good", "revoked", "unknown", "malformed_request"] {
        let n = server.metric(
            "trellis_ocsp_responses_total",
            &format!("class=\"db\",status=\"{status}\""),
        );
        assert!(n >= 1.0, "no OCSP answer '{status}' counted");
    }
    assert!(
        server.metric("trellis_ocsp_responses_total", "status=\"unauthorized\"") >= 1.0,
        "the unauthorized answer was not counted"
    );
    assert_eq!(
        server.metric("trellis_revoked_certificates", "class=\"db\""),
        1.0
    );
}

/// The responder answers from an index of every log, followed once a
/// second; but a leaf this very server has just issued (and recorded) must
/// not be `unknown` to it: a peer that checks OCSP as soon as the leaf is
/// presented would reject it.
#[test]
fn ocsp_answers_good_for_a_leaf_the_moment_it_is_issued() {
    let server = TestServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let root = server.dir.join("classes/db/root.pem");
    let mut answers = Vec::new();
    let mut last = None;
    for i in 0..3 {
        let leaf = issue(
            &server,
            dir,
            "db",
            "db",
            &format!("f{i}"),
            &format!("f{i}.db.internal"),
        );
        answers.push(ocsp(&server, dir, "db", &leaf, &root).status);
        last = Some(leaf);
    }
    if answers.iter().all(|s| s == "good") {
        return;
    }
    // how long the responder took to learn of the last one
    let last = last.unwrap();
    let started = Instant::now();
    wait_for("the responder to know the leaf at all", 10, || {
        ocsp(&server, dir, "db", &last, &root).status == "good"
    });
    panic!(
        "OCSP answers for leaves this server had just issued: {answers:?} \
         (the last one became good {:?} later)",
        started.elapsed()
    );
}

#[test]
fn api_revocation_permissions_and_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // the dev deployment, with the `api` key also allowed to revoke `db`
    let var = dir.join("var");
    let out = run(Command::new(bin("ca-server"))
        .args(["dev", "--init-only", "--dir"])
        .arg(&var));
    assert!(out.status.success(), "{}", text(&out));
    let keys_path = var.join("auth-keys.toml");
    let keys = std::fs::read_to_string(&keys_path).unwrap();
    let api_key = "id = \"api\"\n";
    assert!(keys.contains(api_key), "{keys}");
    std::fs::write(
        &keys_path,
        keys.replacen(api_key, &format!("{api_key}revoke = [\"db\"]\n"), 1),
    )
    .unwrap();
    let server = TestServer::start_in(&var, &[]);
    let leaf = issue(&server, dir, "db", "db", "p1", "p1.db.internal");
    let other = issue(&server, dir, "db", "db", "p2", "p2.db.internal");
    let by_api = issue(&server, dir, "db", "db", "p3", "p3.db.internal");
    let web = issue(&server, dir, "web", "web", "w1", "w1.web.internal");
    let body = json!({"class": "db", "serial": leaf.serial, "reason": "superseded"});

    // a per-class signing key has no revoke permission
    let (status, answer) = revoke_api(&server, "db", &body);
    assert_eq!(
        (status, code(&answer)),
        (403, "forbidden_scope"),
        "{answer}"
    );

    // the admin key may: the answer carries the log entry's evidence
    let (status, answer) = revoke_api(&server, "admin", &body);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["serial"], json!(leaf.serial));
    assert_eq!(answer["class"], "db");
    assert_eq!(answer["reason"], "superseded");
    assert_eq!(answer["issuer"], json!(fingerprint(&leaf.intermediate)));
    let entry = revoked_evidence(&server, &answer);
    assert_eq!(entry.key_id, "admin");
    match &entry.outcome {
        Outcome::Revoked(r) => {
            assert_eq!(r.serial, leaf.serial);
            assert_eq!(r.reason, "superseded");
        }
        other => panic!("the evidence is not a revocation: {other:?}"),
    }
    // the answer came after the CRL was re-signed: no wait needed
    let crl = crl_text(&get(&server, "/v1/classes/db/crl").body);
    assert!(crl.contains(&openssl_serial(&leaf.serial)), "{crl}");
    assert!(crl.contains("Superseded"), "{crl}");

    let (status, answer) = revoke_api(&server, "admin", &body);
    assert_eq!(
        (status, code(&answer)),
        (409, "already_revoked"),
        "{answer}"
    );

    // `revoke = ["db"]`: that class, no other
    let (status, answer) = revoke_api(
        &server,
        "api",
        &json!({"class": "db", "serial": by_api.serial, "reason": "cessationOfOperation"}),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(revoked_evidence(&server, &answer).key_id, "api");
    let (status, answer) = revoke_api(
        &server,
        "api",
        &json!({"class": "web", "serial": web.serial, "reason": "superseded"}),
    );
    assert_eq!(
        (status, code(&answer)),
        (403, "forbidden_scope"),
        "{answer}"
    );
    // the signed request goes through the replay cache like any other
    let replayed = json!({"class": "web", "serial": web.serial, "reason": "superseded"});
    let bytes = serde_json::to_vec(&replayed).unwrap();
    let header = server.auth_header_for("admin", "POST", "/v1/revoke", &bytes);
    let send = || {
        server
            .client()
            .request("POST", "/v1/revoke", &[("authorization", &header)], &bytes)
    };
    let first = send();
    assert_eq!(first.status, 200, "{}", first.text());
    let again = send();
    assert_eq!(
        (again.status, code(&again.json())),
        (401, "replayed_request"),
        "{}",
        again.text()
    );
    let unknown = json!({"class": "db", "serial": "0123456789abcdef01", "reason": "superseded"});
    let (status, answer) = revoke_api(&server, "admin", &unknown);
    assert_eq!((status, code(&answer)), (404, "unknown_serial"), "{answer}");
    let wrong_class = json!({"class": "web", "serial": other.serial, "reason": "superseded"});
    let (status, answer) = revoke_api(&server, "admin", &wrong_class);
    assert_eq!(
        (status, code(&answer)),
        (409, "serial_of_other_class"),
        "{answer}"
    );
    let no_class = json!({"class": "nope", "serial": other.serial, "reason": "superseded"});
    let (status, answer) = revoke_api(&server, "admin", &no_class);
    assert_eq!((status, code(&answer)), (404, "unknown_class"), "{answer}");
    // `revoke = ["*"]` does not cover the server's own class
    let ca_class = json!({"class": "ca", "serial": other.serial, "reason": "superseded"});
    let (status, answer) = revoke_api(&server, "admin", &ca_class);
    assert_eq!(
        (status, code(&answer)),
        (403, "forbidden_scope"),
        "{answer}"
    );
    let bad_reason = json!({"class": "db", "serial": other.serial, "reason": "certificateHold"});
    let (status, answer) = revoke_api(&server, "admin", &bad_reason);
    assert_eq!(status, 400, "{answer}");

    // neither an Authorization header nor a holder proof
    let bytes =
        serde_json::to_vec(&json!({"class": "db", "serial": other.serial, "reason": "superseded"}))
            .unwrap();
    let response = server.client().request(
        "POST",
        "/v1/revoke",
        &[("content-type", "application/json")],
        &bytes,
    );
    assert_eq!(
        (response.status, code(&response.json())),
        (401, "unauthenticated"),
        "{}",
        response.text()
    );
    // a MAC made for another path does not authorise a revocation
    let header = server.auth_header("admin", &bytes, now_unix(), &ca_proto::auth::new_nonce());
    let response =
        server
            .client()
            .request("POST", "/v1/revoke", &[("authorization", &header)], &bytes);
    assert_eq!(response.status, 401, "{}", response.text());
    // nothing of that revoked the other leaf
    let crl = crl_text(&get(&server, "/v1/classes/db/crl").body);
    assert!(!crl.contains(&openssl_serial(&other.serial)), "{crl}");
}

#[test]
fn holder_can_revoke_its_own_certificate() {
    let server = TestServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mine = issue(&server, dir, "db", "db", "h1", "h1.db.internal");
    let theirs = issue(&server, dir, "db", "db", "h2", "h2.db.internal");
    let reason = "keyCompromise";
    let holder_body = |holder: Value| json!({"class": "db", "serial": mine.serial, "reason": reason, "holder": holder});

    // signed by another certificate's key
    let proof = holder_proof(dir, &mine, &theirs.key, "db", reason, now_unix());
    let (status, answer) = revoke_holder(&server, &holder_body(proof));
    assert_eq!(
        (status, code(&answer)),
        (401, "unauthenticated"),
        "{answer}"
    );
    // a stale timestamp (an hour ago)
    let proof = holder_proof(dir, &mine, &mine.key, "db", reason, now_unix() - 3600);
    let (status, answer) = revoke_holder(&server, &holder_body(proof));
    assert_eq!(
        (status, code(&answer)),
        (401, "unauthenticated"),
        "{answer}"
    );
    // a signature over another reason
    let proof = holder_proof(dir, &mine, &mine.key, "db", "superseded", now_unix());
    let (status, answer) = revoke_holder(&server, &holder_body(proof));
    assert_eq!(
        (status, code(&answer)),
        (401, "unauthenticated"),
        "{answer}"
    );
    // the other certificate (and its key) for this serial
    let proof = holder_proof(dir, &theirs, &theirs.key, "db", reason, now_unix());
    let (status, answer) = revoke_holder(&server, &holder_body(proof));
    assert_eq!(
        (status, code(&answer)),
        (401, "unauthenticated"),
        "{answer}"
    );
    let crl = crl_text(&get(&server, "/v1/classes/db/crl").body);
    assert!(crl.contains("No Revoked Certificates"), "{crl}");

    // its own key, now
    let proof = holder_proof(dir, &mine, &mine.key, "db", reason, now_unix());
    let (status, answer) = revoke_holder(&server, &holder_body(proof.clone()));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["serial"], json!(mine.serial));
    let entry = revoked_evidence(&server, &answer);
    assert_eq!(entry.key_id, "holder");
    let crl = crl_text(&get(&server, "/v1/classes/db/crl").body);
    assert!(crl.contains(&openssl_serial(&mine.serial)), "{crl}");
    assert!(!crl.contains(&openssl_serial(&theirs.serial)), "{crl}");
    // the same proof again: authenticated, but already revoked
    let (status, answer) = revoke_holder(&server, &holder_body(proof));
    assert_eq!(
        (status, code(&answer)),
        (409, "already_revoked"),
        "{answer}"
    );
}

#[test]
fn key_compromise_blocks_reissuance_in_every_class() {
    let server = TestServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let compromised = issue(&server, dir, "db", "db", "kc", "kc.db.internal");
    let replaced = issue(&server, dir, "db", "db", "ss", "ss.db.internal");
    let (status, answer) = revoke_api(
        &server,
        "admin",
        &json!({"class": "db", "serial": compromised.serial, "reason": "keyCompromise"}),
    );
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = revoke_api(
        &server,
        "admin",
        &json!({"class": "db", "serial": replaced.serial, "reason": "superseded"}),
    );
    assert_eq!(status, 200, "{answer}");

    // the compromised key: refused in its class, and in another one
    let csr = csr_for_key(dir, &compromised.key, "kc2", "kc2.db.internal");
    let (status, answer) = server.native_sign("db", &json!({"class": "db", "csr": csr}));
    assert_eq!((status, code(&answer)), (403, "key_revoked"), "{answer}");
    assert!(answer.get("certificate").is_none());
    let csr = csr_for_key(dir, &compromised.key, "kcw", "kc.web.internal");
    let (status, answer) = server.native_sign("web", &json!({"class": "web", "csr": csr}));
    assert_eq!((status, code(&answer)), (403, "key_revoked"), "{answer}");
    // the same web request with a fresh key is fine (the refusal was the key)
    let fresh = openssl_csr(
        dir,
        "fresh",
        P256,
        "/CN=kc.web.internal",
        &["-addext", "subjectAltName=DNS:kc.web.internal"],
    );
    let (status, answer) = server.native_sign("web", &json!({"class": "web", "csr": fresh}));
    assert_eq!(status, 200, "{answer}");
    // a superseded certificate's key may be certified again
    let csr = csr_for_key(dir, &replaced.key, "ss2", "ss2.db.internal");
    let (status, answer) = server.native_sign("db", &json!({"class": "db", "csr": csr}));
    assert_eq!(status, 200, "{answer}");

    // `revoke --spki-sha256`: every live leaf of one key in the class (two
    // of db), not its leaf of another class; the key is blocked everywhere
    let twice = issue(&server, dir, "db", "db", "tw1", "tw1.db.internal");
    let csr = csr_for_key(dir, &twice.key, "tw2", "tw2.db.internal");
    let (status, second) = server.native_sign("db", &json!({"class": "db", "csr": csr}));
    assert_eq!(status, 200, "{second}");
    let csr = csr_for_key(dir, &twice.key, "tww", "tw.web.internal");
    let (status, in_web) = server.native_sign("web", &json!({"class": "web", "csr": csr}));
    assert_eq!(status, 200, "{in_web}");
    let out = ca_server(
        &server.dir,
        &[
            "revoke",
            "--class",
            "db",
            "--spki-sha256",
            &spki_sha256(&twice.key),
            "--reason",
            "keyCompromise",
        ],
    );
    assert!(
        out.status.success() && text(&out).contains("2 certificate(s) of that key revoked"),
        "{}",
        text(&out)
    );
    let serials = [twice.serial.as_str(), second["serial"].as_str().unwrap()];
    wait_for("the db CRL to list both leaves of the key", 20, || {
        let crl = crl_text(&get(&server, "/v1/classes/db/crl").body);
        serials.iter().all(|s| crl.contains(&openssl_serial(s)))
    });
    let web_crl = crl_text(&get(&server, "/v1/classes/web/crl").body);
    assert!(
        !web_crl.contains(&openssl_serial(in_web["serial"].as_str().unwrap())),
        "{web_crl}"
    );
    let csr = csr_for_key(dir, &twice.key, "tw3", "tw3.db.internal");
    let (status, answer) = server.native_sign("db", &json!({"class": "db", "csr": csr}));
    assert_eq!((status, code(&answer)), (403, "key_revoked"), "{answer}");
    let out = ca_server(
        &server.dir,
        &[
            "revoke",
            "--class",
            "api",
            "--spki-sha256",
            &spki_sha256(&twice.key),
            "--reason",
            "keyCompromise",
        ],
    );
    assert!(
        !out.status.success() && text(&out).contains("ca-server: unknown_serial: "),
        "{}",
        text(&out)
    );

    // the refusals are denials in the log, with the reason
    let show = ca_server(&server.dir, &["log", "show", "--denied", "--json"]);
    assert!(show.status.success(), "{}", text(&show));
    let denials: Vec<Value> = String::from_utf8_lossy(&show.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    for class in ["db", "web"] {
        assert!(
            denials.iter().any(|d| d["class"] == class
                && d["decision"] == "denied"
                && d.to_string().contains("key_revoked")),
            "no key_revoked denial of class {class} in the log: {denials:?}"
        );
    }
    assert_eq!(denials.len(), 3, "{denials:?}");
}

#[test]
fn two_replicas_share_revocations() {
    let first = TestServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let second = start_replica(&first, "dev-2");
    let root = first.dir.join("classes/db/root.pem");

    let from_second = issue(&second, dir, "db", "db", "r2", "r2.db.internal");
    let from_first = issue(&first, dir, "db", "db", "r1", "r1.db.internal");
    // each replica knows what the other issued (from the other's log)
    wait_for("the first replica to know the second's leaf", 5, || {
        ocsp(&first, dir, "db", &from_second, &root).status == "good"
    });
    wait_for("the second replica to know the first's leaf", 5, || {
        ocsp(&second, dir, "db", &from_first, &root).status == "good"
    });

    // revoke the second's leaf through the first
    let (status, answer) = revoke_api(
        &first,
        "admin",
        &json!({"class": "db", "serial": from_second.serial, "reason": "keyCompromise"}),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["log"]["log_id"], "dev-1");
    let started = Instant::now();
    wait_for("the second replica's CRL to list it", 5, || {
        crl_text(&get(&second, "/v1/classes/db/crl").body)
            .contains(&openssl_serial(&from_second.serial))
    });
    wait_for("the second replica's OCSP to say revoked", 5, || {
        ocsp(&second, dir, "db", &from_second, &root).status == "revoked"
    });
    assert!(started.elapsed() < Duration::from_secs(5));
    // and the second refuses the compromised key too
    let csr = csr_for_key(dir, &from_second.key, "r2again", "r2again.db.internal");
    wait_for("the second replica to block the key", 5, || {
        let (status, _) = second.native_sign("db", &json!({"class": "db", "csr": csr}));
        status == 403
    });

    // the other way round, through the second
    let (status, answer) = revoke_api(
        &second,
        "admin",
        &json!({"class": "db", "serial": from_first.serial, "reason": "superseded"}),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["log"]["log_id"], "dev-2");
    wait_for("the first replica's OCSP to say revoked", 5, || {
        ocsp(&first, dir, "db", &from_first, &root).status == "revoked"
    });
    // a revocation already made on one replica is refused on the other
    let (status, answer) = revoke_api(
        &first,
        "admin",
        &json!({"class": "db", "serial": from_first.serial, "reason": "superseded"}),
    );
    assert_eq!(
        (status, code(&answer)),
        (409, "already_revoked"),
        "{answer}"
    );

    // each log holds its own entry of both revocations, exactly once
    let config_1 = first.dir.join("config.toml");
    let config_2 = first.dir.join("config-2.toml");
    for (what, target) in [
        ("dev-1", vec!["--config", path_str(&config_1)]),
        ("dev-2", vec!["--config", path_str(&config_2)]),
    ] {
        wait_for(&format!("log {what} to record both revocations"), 5, || {
            let mut args = vec!["log", "show", "--json"];
            args.extend(&target);
            let out = run(Command::new(bin("ca-server")).args(&args));
            let revoked: Vec<Value> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter(|e| e["decision"] == "revoked")
                .collect();
            let serials: Vec<&str> = revoked
                .iter()
                .filter_map(|e| e["serial"].as_str())
                .collect();
            assert!(
                serials.len() <= 2,
                "log {what} recorded a revocation twice: {revoked:?}"
            );
            serials.contains(&from_first.serial.as_str())
                && serials.contains(&from_second.serial.as_str())
        });
    }
}

#[test]
fn revoked_intermediate_is_in_the_root_crl() {
    let server = TestServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let root = server.dir.join("classes/db/root.pem");
    let old_label = active_label(&server.dir, "db");
    let old = issue(&server, dir, "db", "db", "old", "old.db.internal");
    let old_revoked = issue(&server, dir, "db", "db", "oldrev", "oldrev.db.internal");

    admin(&server.dir, &["rotate", "prepare", "--class", "db"]);
    admin(&server.dir, &["rotate", "activate", "--class", "db"]);
    let new_label = active_label(&server.dir, "db");
    assert_ne!(new_label, old_label);
    let mut new = None;
    let mut n = 0;
    wait_for("a leaf of the new intermediate", 20, || {
        n += 1;
        let leaf = issue(
            &server,
            dir,
            "db",
            "db",
            &format!("new{n}"),
            "new.db.internal",
        );
        let fresh = fingerprint(&leaf.intermediate) != fingerprint(&old.intermediate);
        if fresh {
            new = Some(leaf);
        }
        fresh
    });
    let new = new.unwrap();

    // a leaf of the retired intermediate is revoked on that intermediate's
    // CRL (not the active one's), and its OCSP answer says so
    let (status, answer) = revoke_api(
        &server,
        "admin",
        &json!({"class": "db", "serial": old_revoked.serial, "reason": "affiliationChanged"}),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["issuer"], json!(fingerprint(&old.intermediate)));
    let retired_crl = crl_text(&get(&server, &format!("/v1/classes/db/crl/{old_label}")).body);
    assert!(
        retired_crl.contains(&openssl_serial(&old_revoked.serial))
            && retired_crl.contains(&format!("Issuer: {}", subject_of(&old.intermediate))),
        "{retired_crl}"
    );
    let active_crl = crl_text(&get(&server, "/v1/classes/db/crl").body);
    assert!(
        !active_crl.contains(&openssl_serial(&old_revoked.serial))
            && active_crl.contains(&format!("Issuer: {}", subject_of(&new.intermediate))),
        "{active_crl}"
    );
    let answer = ocsp(&server, dir, "db", &old_revoked, &root);
    assert_eq!(answer.status, "revoked", "{}", answer.text);
    assert!(
        answer.text.contains("affiliationChanged"),
        "{}",
        answer.text
    );
    // (CertIDs hashed with SHA-256 are answered too)
    let target = ["-sha256", "-cert", path_str(&old.cert)];
    let response = ocsp_request(&server, dir, "old-sha256", "db", &old.intermediate, &target);
    let answer = ocsp_verdict(dir, "old-sha256", &old.intermediate, &root, &response);
    assert_eq!(answer.status, "good", "{}", answer.text);

    // the active intermediate cannot be revoked, nor an unknown one
    let out = ca_server(
        &server.dir,
        &[
            "revoke",
            "--class",
            "db",
            "--intermediate",
            &new_label,
            "--reason",
            "cACompromise",
        ],
    );
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("activate a successor first"),
        "{}",
        text(&out)
    );
    let out = ca_server(
        &server.dir,
        &[
            "revoke",
            "--class",
            "db",
            "--intermediate",
            "db-int-nope",
            "--reason",
            "cACompromise",
        ],
    );
    assert!(
        !out.status.success() && text(&out).contains("unknown_serial"),
        "{}",
        text(&out)
    );
    let root_crl_before = std::fs::read(server.dir.join("classes/db/root-crl.der"))
        .expect("every class has a root CRL from init");

    let out = ca_server(
        &server.dir,
        &[
            "revoke",
            "--class",
            "db",
            "--intermediate",
            &old_label,
            "--reason",
            "cACompromise",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_ne!(
        std::fs::read(server.dir.join("classes/db/root-crl.der")).unwrap(),
        root_crl_before,
        "the root CRL was not re-signed"
    );
    let out = ca_server(
        &server.dir,
        &[
            "revoke",
            "--class",
            "db",
            "--intermediate",
            &old_label,
            "--reason",
            "cACompromise",
        ],
    );
    assert!(
        !out.status.success() && text(&out).contains("already_revoked"),
        "{}",
        text(&out)
    );

    // the class's PEM bundle: both intermediates' CRLs and the root's
    let bundle = dir.join("bundle.pem");
    let old_int_serial = cert_serial(&old.intermediate);
    wait_for(
        "the root-signed CRL listing the old intermediate",
        20,
        || {
            let response = get(&server, "/v1/classes/db/crl?format=pem");
            let pem = response.text();
            std::fs::write(&bundle, &pem).unwrap();
            pem.matches("BEGIN X509 CRL").count() == 3
                && split_pem(&pem, "X509 CRL")
                    .iter()
                    .any(|p| pem_crl_text(dir, p).contains(&old_int_serial))
        },
    );
    let crls = split_pem(&std::fs::read_to_string(&bundle).unwrap(), "X509 CRL");
    let root_crls: Vec<String> = crls
        .iter()
        .map(|pem| pem_crl_text(dir, pem))
        .filter(|t| t.contains(&format!("Issuer: {}", subject_of(&root))))
        .collect();
    assert_eq!(root_crls.len(), 1, "{crls:?}");
    let root_crl = &root_crls[0];
    assert!(root_crl.contains(&old_int_serial), "{root_crl}");
    assert!(root_crl.contains("CA Compromise"), "{root_crl}");
    assert!(
        !root_crl.contains(&cert_serial(&new.intermediate)),
        "{root_crl}"
    );
    // signed by the root
    let root_crl_pem = dir.join("root-crl.pem");
    std::fs::write(
        &root_crl_pem,
        crls.iter()
            .find(|pem| pem_crl_text(dir, pem).contains(&old_int_serial))
            .unwrap(),
    )
    .unwrap();
    let out = run(Command::new("openssl")
        .args(["crl", "-noout", "-CAfile"])
        .arg(&root)
        .arg("-in")
        .arg(&root_crl_pem));
    assert!(text(&out).contains("verify OK"), "{}", text(&out));
    // the retired intermediate's own CRL is still served by its label
    assert_eq!(
        get(&server, &format!("/v1/classes/db/crl/{old_label}")).status,
        200
    );

    // a peer checking the whole chain refuses the old leaf, accepts the new
    let (ok, msg) = verify_with_crls(
        "-crl_check_all",
        &root,
        &old.intermediate,
        &bundle,
        &old.cert,
    );
    assert!(
        !ok && msg.contains("at 1 depth lookup: certificate revoked"),
        "the intermediate is not what was refused: {msg}"
    );
    let (ok, msg) = verify_with_crls(
        "-crl_check_all",
        &root,
        &new.intermediate,
        &bundle,
        &new.cert,
    );
    assert!(ok, "{msg}");

    // `root-crl` re-signs it (here for 7 days instead of 30); the server
    // serves the new one
    let next_update = |pem: &str| {
        let t = pem_crl_text(dir, pem);
        t.lines()
            .find_map(|l| l.trim().strip_prefix("Next Update: "))
            .map(str::to_string)
            .unwrap_or_default()
    };
    let root_crl_of = |bundle: &str| {
        split_pem(bundle, "X509 CRL")
            .into_iter()
            .find(|pem| pem_crl_text(dir, pem).contains(&old_int_serial))
            .unwrap_or_default()
    };
    let before = next_update(&root_crl_of(&std::fs::read_to_string(&bundle).unwrap()));
    admin(&server.dir, &["root-crl", "--class", "db", "--days", "7"]);
    wait_for("the re-signed root CRL to be served", 20, || {
        let served = root_crl_of(&get(&server, "/v1/classes/db/crl?format=pem").text());
        !served.is_empty() && next_update(&served) != before
    });
}

/// CRLs are re-signed when a revocation changes them and otherwise every
/// `crl_refresh_secs`. The root-signed CRL is re-signed only by the
/// operator (`revoke --intermediate`, `root-crl`), so it ages past the
/// refresh period; that must not make the server re-sign the class's
/// intermediate CRLs on every one-second tick. With the shortest refresh
/// (60 s) this test takes about 70 s: it waits for the first scheduled
/// refresh after the root CRL was written, then watches three seconds.
#[test]
fn an_aging_root_crl_does_not_make_the_class_resign_every_second() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let var = dir.join("var");
    let out = run(Command::new(bin("ca-server"))
        .args(["dev", "--init-only", "--dir"])
        .arg(&var));
    assert!(out.status.success(), "{}", text(&out));
    let config_path = var.join("config.toml");
    let config = std::fs::read_to_string(&config_path).unwrap();
    assert!(!config.contains("[revocation]"), "{config}");
    std::fs::write(
        &config_path,
        format!("{config}\n[revocation]\ncrl_refresh_secs = 60\ncrl_validity_secs = 600\n"),
    )
    .unwrap();
    let server = TestServer::start_in(&var, &[]);
    let old_label = active_label(&var, "db");
    admin(&var, &["rotate", "prepare", "--class", "db"]);
    admin(&var, &["rotate", "activate", "--class", "db"]);
    admin(
        &var,
        &[
            "revoke",
            "--class",
            "db",
            "--intermediate",
            &old_label,
            "--reason",
            "superseded",
        ],
    );
    let old_serial = cert_serial(&var.join(format!("classes/db/intermediates/{old_label}.pem")));
    wait_for(
        "the root-signed CRL listing the old intermediate",
        20,
        || {
            let pem = get(&server, "/v1/classes/db/crl?format=pem").text();
            pem.matches("BEGIN X509 CRL").count() == 3
                && split_pem(&pem, "X509 CRL")
                    .iter()
                    .any(|p| pem_crl_text(&var, p).contains(&old_serial))
        },
    );
    let etag = || header(&get(&server, "/v1/classes/db/crl"), "etag").to_string();
    let adopted = etag();
    // the scheduled refresh, a minute after the root CRL was signed
    let mut refreshed = String::new();
    wait_for("the scheduled CRL refresh", 90, || {
        refreshed = etag();
        refreshed != adopted
    });
    // then nothing is due for another minute
    let mut seen = vec![refreshed.clone()];
    let window = Instant::now() + Duration::from_millis(3500);
    while Instant::now() < window {
        let now = etag();
        if seen.last() != Some(&now) {
            seen.push(now);
        }
        std::thread::sleep(Duration::from_millis(250)); // sampling interval
    }
    assert_eq!(
        seen.len(),
        1,
        "the active CRL was re-signed {} times in 3.5 s after its scheduled refresh \
         (CRL numbers {seen:?})",
        seen.len() - 1
    );
}

#[test]
fn log_verify_covers_revocations_and_catches_tampering() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let var = dir.join("var");
    let mut server = TestServer::start_in(&var, &[]);
    let a = issue(&server, dir, "db", "db", "v1", "v1.db.internal");
    let b = issue(&server, dir, "db", "db", "v2", "v2.db.internal");
    let c = issue(&server, dir, "db", "db", "v3", "v3.db.internal");
    let (status, answer) = revoke_api(
        &server,
        "admin",
        &json!({"class": "db", "serial": a.serial, "reason": "keyCompromise"}),
    );
    assert_eq!(status, 200, "{answer}");
    let out = ca_server(
        &var,
        &[
            "revoke",
            "--class",
            "db",
            "--serial",
            &b.serial,
            "--reason",
            "superseded",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    wait_for("the server to record the command's revocation", 20, || {
        server.metric("trellis_revocations_total", "class=\"db\"") >= 2.0
    });
    server.stop();

    let verify = ca_server(&var, &["log", "verify"]);
    assert!(verify.status.success(), "{}", text(&verify));
    // the server's own TLS certificate and three leaves; two revocations
    assert!(
        text(&verify).contains("6 entries (4 issued, 0 denied, 2 revocations)"),
        "{}",
        text(&verify)
    );
    let show = ca_server(&var, &["log", "show", "--serial", &b.serial]);
    assert!(
        text(&show).contains(" revoked class=db") && text(&show).contains("reason=superseded"),
        "{}",
        text(&show)
    );

    let data = var.join("log/dev-1/log.dat");
    let original = std::fs::read(&data).unwrap();
    let records = records(&original);
    let (at, len) = records
        .iter()
        .find(|(kind, at, len)| {
            *kind == 1
                && String::from_utf8_lossy(&original[at + 5..at + 5 + len])
                    .contains(&format!("\"serial\":\"{}\"", a.serial))
                && String::from_utf8_lossy(&original[at + 5..at + 5 + len])
                    .contains("\"decision\":\"revoked\"")
        })
        .map(|(_, at, len)| (*at, *len))
        .unwrap_or_else(|| panic!("no revoked entry for {} in the log", a.serial));
    let payload = String::from_utf8(original[at + 5..at + 5 + len].to_vec()).unwrap();

    // a flipped byte (checksum left as it was)
    let mut flipped = original.clone();
    let reason_at = at + 5 + payload.find("keyCompromise").unwrap();
    flipped[reason_at] ^= 0x01;
    std::fs::write(&data, &flipped).unwrap();
    let verify = ca_server(&var, &["log", "verify"]);
    assert!(
        !verify.status.success() && text(&verify).contains("PROBLEM"),
        "a flipped byte was not detected: {}",
        text(&verify)
    );

    // a rewritten revocation with a valid checksum: the signed roots disagree
    let forged_payload = payload.replacen("keyCompromise", "superseded", 1);
    let mut forged = original[..at].to_vec();
    let mut record = vec![1u8];
    record.extend_from_slice(&(forged_payload.len() as u32).to_be_bytes());
    record.extend_from_slice(forged_payload.as_bytes());
    let crc = crc32fast::hash(&record);
    record.extend_from_slice(&crc.to_be_bytes());
    forged.extend_from_slice(&record);
    forged.extend_from_slice(&original[at + 9 + len..]);
    std::fs::write(&data, &forged).unwrap();
    let verify = ca_server(&var, &["log", "verify"]);
    assert!(
        !verify.status.success() && text(&verify).contains("root does not match"),
        "a rewritten revocation was not detected: {}",
        text(&verify)
    );

    std::fs::write(&data, &original).unwrap();
    let verify = ca_server(&var, &["log", "verify"]);
    assert!(verify.status.success(), "{}", text(&verify));

    // a revocation made while no server runs is adopted when one starts,
    // before it serves anything; the two it already recorded are not
    // recorded again
    let out = ca_server(
        &var,
        &[
            "revoke",
            "--class",
            "db",
            "--serial",
            &c.serial,
            "--reason",
            "privilegeWithdrawn",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let mut server = TestServer::start_in(&var, &[]);
    let crl = crl_text(&get(&server, "/v1/classes/db/crl").body);
    for leaf in [&a, &b, &c] {
        assert!(crl.contains(&openssl_serial(&leaf.serial)), "{crl}");
    }
    assert!(crl.contains("Privilege Withdrawn"), "{crl}");
    server.stop();
    let verify = ca_server(&var, &["log", "verify"]);
    assert!(verify.status.success(), "{}", text(&verify));
    assert!(
        text(&verify).contains(" denied, 3 revocations)"),
        "{}",
        text(&verify)
    );
    // the monitor reads past revocation entries without a finding
    let monitor = ca_server(&var, &["log", "monitor"]);
    assert!(monitor.status.success(), "{}", text(&monitor));
}

// ---------------------------------------------------------------------------
// helpers

/// A certificate issued by the server, with its key and issuing intermediate.
struct Leaf {
    serial: String,
    pem: String,
    cert: PathBuf,
    key: PathBuf,
    intermediate: PathBuf,
}

/// A fresh P-256 key and CSR for `host`, signed in `class` with `key_id`.
fn issue(
    server: &TestServer,
    dir: &Path,
    class: &str,
    key_id: &str,
    name: &str,
    host: &str,
) -> Leaf {
    let csr = openssl_csr(
        dir,
        name,
        P256,
        &format!("/CN={host}"),
        &["-addext", &format!("subjectAltName=DNS:{host}")],
    );
    let (status, body) = server.native_sign(key_id, &json!({"class": class, "csr": csr}));
    assert_eq!(status, 200, "{body}");
    let pem = body["certificate"].as_str().unwrap().to_string();
    let chain = body["chain"].as_str().unwrap();
    // the chain is the leaf, then its intermediate
    let intermediate = split_pem(chain, "CERTIFICATE")
        .into_iter()
        .nth(1)
        .unwrap_or_else(|| panic!("no chain: {body}"));
    let cert = dir.join(format!("{name}.pem"));
    let int = dir.join(format!("{name}-int.pem"));
    std::fs::write(&cert, &pem).unwrap();
    std::fs::write(&int, intermediate).unwrap();
    Leaf {
        serial: body["serial"].as_str().unwrap().to_string(),
        pem,
        cert,
        key: dir.join(format!("{name}.key")),
        intermediate: int,
    }
}

/// A CSR for `host` with an existing key.
fn csr_for_key(dir: &Path, key: &Path, name: &str, host: &str) -> String {
    let csr = dir.join(format!("{name}.csr"));
    let out = run(Command::new("openssl")
        .args(["req", "-new", "-key"])
        .arg(key)
        .args(["-subj", &format!("/CN={host}")])
        .args(["-addext", &format!("subjectAltName=DNS:{host}")])
        .arg("-out")
        .arg(&csr));
    assert!(out.status.success(), "openssl req: {}", text(&out));
    std::fs::read_to_string(csr).unwrap()
}

fn ca_server(dir: &Path, args: &[&str]) -> Output {
    run(Command::new(bin("ca-server"))
        .args(args)
        .arg("--dir")
        .arg(dir))
}

fn admin(dir: &Path, args: &[&str]) -> String {
    let out = ca_server(dir, args);
    assert!(out.status.success(), "ca-server {args:?}: {}", text(&out));
    text(&out)
}

fn get(server: &TestServer, path: &str) -> HttpResponse {
    server.client().request("GET", path, &[], b"")
}

fn header<'a>(response: &'a HttpResponse, name: &str) -> &'a str {
    response
        .headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_default()
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}

/// `POST /v1/revoke` signed with `key_id`.
fn revoke_api(server: &TestServer, key_id: &str, body: &Value) -> (u16, Value) {
    let bytes = serde_json::to_vec(body).unwrap();
    let header = server.auth_header_for(key_id, "POST", "/v1/revoke", &bytes);
    let response = server.client().request(
        "POST",
        "/v1/revoke",
        &[
            ("authorization", &header),
            ("content-type", "application/json"),
        ],
        &bytes,
    );
    (response.status, response.json())
}

/// `POST /v1/revoke` without an Authorization header (a holder's request).
fn revoke_holder(server: &TestServer, body: &Value) -> (u16, Value) {
    let bytes = serde_json::to_vec(body).unwrap();
    let response = server.client().request(
        "POST",
        "/v1/revoke",
        &[("content-type", "application/json")],
        &bytes,
    );
    (response.status, response.json())
}

/// A holder proof for `leaf`, signed by `key` with `openssl dgst` (ECDSA
/// P-256, DER, SHA-256) over the holder message.
fn holder_proof(dir: &Path, leaf: &Leaf, key: &Path, class: &str, reason: &str, ts: i64) -> Value {
    let reason = RevocationReason::from_name(reason).unwrap();
    let message = dir.join("holder-message");
    let signature = dir.join("holder-signature");
    std::fs::write(&message, holder_message(class, &leaf.serial, reason, ts)).unwrap();
    let out = run(Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .arg("-out")
        .arg(&signature)
        .arg(&message));
    assert!(out.status.success(), "openssl dgst: {}", text(&out));
    json!({
        "certificate": leaf.pem,
        "timestamp": ts,
        "signature": base64_std(&std::fs::read(&signature).unwrap()),
    })
}

/// The revocation's log entry from a `RevokeResponse`, its evidence
/// verified against the log's published key.
fn revoked_evidence(server: &TestServer, answer: &Value) -> LogEntry {
    let evidence: LogEvidence = serde_json::from_value(answer["log"].clone())
        .unwrap_or_else(|e| panic!("no log evidence in {answer}: {e}"));
    let key_pem = get(server, &format!("/v1/log/{}/key", evidence.log_id)).text();
    let key = LogPublicKey::from_pem(&key_pem).expect("log key PEM");
    let bytes = evidence.verify(&key).expect("the evidence verifies");
    let entry = LogEntry::from_bytes(&bytes).unwrap();
    assert_eq!(entry.serial(), answer["serial"].as_str());
    entry
}

/// SHA-256 of the SubjectPublicKeyInfo of a private key file, hex.
fn spki_sha256(key: &Path) -> String {
    let out = run(Command::new("openssl")
        .args(["pkey", "-pubout", "-outform", "DER", "-in"])
        .arg(key));
    assert!(out.status.success(), "{}", text(&out));
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(&out.stdout))
}

/// `openssl crl -text` of a DER CRL.
fn crl_text(der: &[u8]) -> String {
    let mut child = Command::new("openssl")
        .args(["crl", "-inform", "DER", "-noout", "-text"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(der).unwrap();
    let out = child.wait_with_output().unwrap();
    text(&out)
}

fn pem_crl_text(dir: &Path, pem: &str) -> String {
    let path = dir.join("one-crl.pem");
    std::fs::write(&path, pem).unwrap();
    let out = run(Command::new("openssl")
        .args(["crl", "-noout", "-text", "-in"])
        .arg(&path));
    text(&out)
}

/// A serial as `openssl crl -text` prints it (uppercase, no leading zero byte).
fn openssl_serial(serial_hex: &str) -> String {
    let mut s = serial_hex.to_ascii_uppercase();
    while s.starts_with("00") && s.len() > 2 {
        s.drain(..2);
    }
    s
}

/// The serial of a certificate file, as openssl prints it in CRLs.
fn cert_serial(cert: &Path) -> String {
    let out = run(Command::new("openssl")
        .args(["x509", "-noout", "-serial", "-in"])
        .arg(cert));
    let t = text(&out);
    openssl_serial(t.trim().trim_start_matches("serial="))
}

fn subject_of(cert: &Path) -> String {
    let out = run(Command::new("openssl")
        .args(["x509", "-noout", "-subject", "-in"])
        .arg(cert));
    text(&out)
        .trim()
        .trim_start_matches("subject=")
        .trim()
        .to_string()
}

/// SHA-256 fingerprint, lowercase hex, as the server names issuers.
fn fingerprint(cert: &Path) -> String {
    let out = run(Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(cert));
    text(&out)
        .trim()
        .rsplit('=')
        .next()
        .unwrap_or_default()
        .replace(':', "")
        .to_ascii_lowercase()
}

fn active_label(dir: &Path, class: &str) -> String {
    let state = std::fs::read_to_string(dir.join(format!("classes/{class}/state.toml"))).unwrap();
    let mut key = None;
    for line in state.lines() {
        if let Some(v) = line.strip_prefix("key = ") {
            key = Some(v.trim_matches('"').to_string());
        }
        if line.trim() == "status = \"active\"" {
            return key.unwrap_or_default();
        }
    }
    panic!("no active intermediate in {state}");
}

/// `openssl verify -x509_strict <check> -CAfile root -untrusted int -CRLfile crls leaf`.
fn verify_with_crls(
    check: &str,
    root: &Path,
    int: &Path,
    crls: &Path,
    leaf: &Path,
) -> (bool, String) {
    let out = run(Command::new("openssl")
        .args(["verify", "-x509_strict", check, "-CAfile"])
        .arg(root)
        .arg("-untrusted")
        .arg(int)
        .arg("-CRLfile")
        .arg(crls)
        .arg(leaf));
    (out.status.success(), text(&out))
}

/// What openssl made of an OCSP response.
struct OcspAnswer {
    /// `good`, `revoked`, `unknown`, or empty when there was no status line.
    status: String,
    text: String,
}

/// Ask the responder of `class` about `leaf` (nonce included) and judge
/// the answer with openssl: signature against `root`, nonce, status.
fn ocsp(server: &TestServer, dir: &Path, class: &str, leaf: &Leaf, root: &Path) -> OcspAnswer {
    let name = leaf
        .cert
        .file_stem()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let target = ["-cert", path_str(&leaf.cert)];
    let response = ocsp_request(server, dir, &name, class, &leaf.intermediate, &target);
    ocsp_verdict(dir, &name, &leaf.intermediate, root, &response)
}

/// As `ocsp`, for a serial the issuer may never have issued.
fn ocsp_serial(
    server: &TestServer,
    dir: &Path,
    class: &str,
    issuer: &Path,
    serial: &str,
    root: &Path,
) -> OcspAnswer {
    let name = format!("serial-{serial}");
    let target = ["-serial", serial];
    let response = ocsp_request(server, dir, &name, class, issuer, &target);
    ocsp_verdict(dir, &name, issuer, root, &response)
}

/// Build an OCSP request with openssl (`<name>.ocsp-req.der`) and POST it.
fn ocsp_request(
    server: &TestServer,
    dir: &Path,
    name: &str,
    class: &str,
    issuer: &Path,
    target: &[&str],
) -> Vec<u8> {
    let request = dir.join(format!("{name}.ocsp-req.der"));
    let out = run(Command::new("openssl")
        .args(["ocsp", "-issuer"])
        .arg(issuer)
        .args(target)
        .arg("-reqout")
        .arg(&request));
    assert!(out.status.success(), "openssl ocsp -reqout: {}", text(&out));
    let body = std::fs::read(&request).unwrap();
    let response = server.client().request(
        "POST",
        &format!("/ocsp/{class}"),
        &[("content-type", "application/ocsp-request")],
        &body,
    );
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        header(&response, "content-type"),
        "application/ocsp-response"
    );
    response.body
}

/// `openssl ocsp -respin` on `response` against the request it answers,
/// `<name>.ocsp-req.der` (`-reqin` without `-no_nonce` would add a second
/// nonce of openssl's own to that request): the signature is verified
/// with `root` and `issuer`, and the nonce is checked.
fn ocsp_verdict(dir: &Path, name: &str, issuer: &Path, root: &Path, response: &[u8]) -> OcspAnswer {
    let request = dir.join(format!("{name}.ocsp-req.der"));
    let path = dir.join(format!("{name}.ocsp-resp.der"));
    std::fs::write(&path, response).unwrap();
    let out = run(Command::new("openssl")
        .args(["ocsp", "-no_nonce", "-resp_text", "-respin"])
        .arg(&path)
        .arg("-reqin")
        .arg(&request)
        .arg("-CAfile")
        .arg(root)
        .arg("-verify_other")
        .arg(issuer));
    let text = text(&out);
    let statuses: Vec<&str> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Cert Status: "))
        .collect();
    let status = match statuses.as_slice() {
        [] => String::new(),
        [one] => one.trim().to_string(),
        more => panic!(
            "{} answers to a request for one certificate: {text}",
            more.len()
        ),
    };
    if !status.is_empty() {
        assert!(
            out.status.success() && text.contains("Response verify OK"),
            "the OCSP response does not verify: {text}"
        );
        assert!(
            !text.contains("Nonce Verify error") && !text.contains("WARNING: no nonce"),
            "the nonce was not echoed: {text}"
        );
    }
    OcspAnswer { status, text }
}

/// A leaf of a throwaway openssl CA that the server knows nothing about:
/// (leaf, CA certificate).
fn throwaway_ca_leaf(dir: &Path) -> (PathBuf, PathBuf) {
    let ca_key = dir.join("stranger-ca.key");
    let ca = dir.join("stranger-ca.pem");
    let out = run(Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-nodes",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .arg("-keyout")
        .arg(&ca_key)
        .args(["-subj", "/CN=stranger CA", "-days", "2"])
        .args(["-addext", "basicConstraints=critical,CA:TRUE"])
        .arg("-out")
        .arg(&ca));
    assert!(out.status.success(), "{}", text(&out));
    openssl_csr(dir, "stranger", P256, "/CN=stranger.db.internal", &[]);
    let leaf = dir.join("stranger-leaf.pem");
    let out = run(Command::new("openssl")
        .args(["x509", "-req", "-days", "1", "-in"])
        .arg(dir.join("stranger.csr"))
        .arg("-CA")
        .arg(&ca)
        .arg("-CAkey")
        .arg(&ca_key)
        .args(["-set_serial", "0x1234"])
        .arg("-out")
        .arg(&leaf));
    assert!(out.status.success(), "{}", text(&out));
    (leaf, ca)
}

/// A second `ca-server serve` on `first`'s state directory with its own
/// log id. Its config is `config-2.toml` next to the first's; it is
/// reached through a symlink so its stderr goes to a file of its own.
fn start_replica(first: &TestServer, log_id: &str) -> TestServer {
    let config = std::fs::read_to_string(first.dir.join("config.toml")).unwrap();
    assert!(config.contains("log_id = \"dev-1\""), "{config}");
    let config = config.replace("log_id = \"dev-1\"", &format!("log_id = \"{log_id}\""));
    std::fs::write(first.dir.join("config-2.toml"), config).unwrap();
    let alias = first.dir.with_file_name(format!("{log_id}-var"));
    std::os::unix::fs::symlink(&first.dir, &alias).unwrap();
    let mut cmd = Command::new(bin("ca-server"));
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(alias.join("config-2.toml"));
    TestServer::spawn(cmd, &alias)
}

/// Records of a log file: (kind, offset, payload length).
fn records(bytes: &[u8]) -> Vec<(u8, usize, usize)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 9 <= bytes.len() {
        let len = u32::from_be_bytes([bytes[at + 1], bytes[at + 2], bytes[at + 3], bytes[at + 4]])
            as usize;
        out.push((bytes[at], at, len));
        at += 9 + len;
    }
    out
}

/// Each PEM block labelled `label` in `text`.
fn split_pem(text: &str, label: &str) -> Vec<String> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(&begin) {
        let Some(stop) = rest[start..].find(&end) else {
            break;
        };
        let stop = start + stop + end.len();
        out.push(format!("{}\n", &rest[start..stop]));
        rest = &rest[stop..];
    }
    out
}

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn base64_std(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn url_encode(s: &str) -> String {
    s.replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D")
}

/// Poll `f` every 100 ms until it holds; panic after `secs` seconds.
fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if f() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {secs} s waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A class with 90,000 revocations: its CRL (about 4.2 MiB DER, 5.7 MiB PEM)
/// is larger than a connection's response budget (4 MiB by default), yet it
/// is served, because every response references the one shared buffer
/// instead of copying it. The replica adopts the whole list at once (group
/// commits), logging every revocation.
#[test]
fn a_crl_larger_than_a_connections_response_budget_is_served() {
    const COUNT: usize = 90_000;
    let server = TestServer::start();
    let label = active_label(&server.dir, "db");
    let issuer = fingerprint(
        &server
            .dir
            .join(format!("classes/db/intermediates/{label}.pem")),
    );
    let records: Vec<Value> = (0..COUNT)
        .map(|i| {
            serde_json::json!({
                "serial": format!("7{i:031x}"),
                "spki_sha256": "00".repeat(32),
                "issuer": issuer,
                "issuer_key": label,
                "not_after": "2099-01-01T00:00:00Z",
                "reason": "superseded",
                "revoked_at": "2026-12-05T00:00:00Z",
                "by": "admin",
            })
        })
        .collect();
    let list = serde_json::json!({"version": 1, "revocations": records});
    let path = server.dir.join("classes/db/revocations.json");
    let tmp = server.dir.join("classes/db/.revocations.json.test");
    std::fs::write(&tmp, serde_json::to_vec(&list).unwrap()).unwrap();
    std::fs::rename(&tmp, &path).unwrap();

    let mut der = Vec::new();
    wait_for("the CRL of 90,000 serials", 120, || {
        let response = get(&server, "/v1/classes/db/crl");
        if response.status != 200 {
            return false;
        }
        der = response.body;
        der.len() > 4 << 20
    });
    let pem = get(&server, "/v1/classes/db/crl?format=pem");
    assert_eq!(pem.status, 200, "{}", pem.text());
    assert!(pem.body.len() > 5 << 20, "{} bytes", pem.body.len());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.crl");
    std::fs::write(&file, &der).unwrap();
    let out = run(Command::new("openssl")
        .args(["crl", "-inform", "DER", "-noout", "-issuer", "-in"])
        .arg(&file));
    assert!(out.status.success(), "{}", text(&out));
    // Every revocation is in this replica's log.
    let verify = ca_server(&server.dir, &["log", "verify"]);
    assert!(
        text(&verify).contains(&format!("{COUNT} revocations")),
        "{}",
        text(&verify)
    );
}
