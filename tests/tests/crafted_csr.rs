//! Crafted CSRs against a real `ca-server dev` (issue 11, item 6: CSR
//! integrity). Each CSR is assembled here in DER and signed with ring keys,
//! so every one of them carries a signature that x509-parser's verifier
//! alone would accept where that is possible: a "P-256" SPKI with Ed25519 or
//! PKCS#1 RSA key bytes signed with that other algorithm, an EC point off
//! the curve, insane RSA exponents, a 33-byte Ed25519 key, a signature
//! algorithm of another family, a second extensionRequest asking for
//! CA:TRUE or a SAN, and an extension named twice. Each is refused with
//! `malformed_csr` over the native and the CFSSL endpoint, no certificate is
//! counted or logged as issued, and each refusal is logged as a denial. The
//! same keys in well-formed CSRs are issued, so the refusals are about the
//! crafted part.

use ca_proto::logentry::{LogDecision, LogEntry};
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use serde_json::json;
use std::process::Command;
use trellis_e2e::{bin, now_unix, run, text, TestServer};

/// A minimal DER writer: enough for CertificationRequest and its parts.
mod der {
    pub const INTEGER: u8 = 0x02;
    pub const BIT_STRING: u8 = 0x03;
    pub const OCTET_STRING: u8 = 0x04;
    pub const OID: u8 = 0x06;
    pub const UTF8_STRING: u8 = 0x0c;
    pub const SEQUENCE: u8 = 0x30;
    pub const SET: u8 = 0x31;
    pub const BOOLEAN: u8 = 0x01;
    pub const NULL: &[u8] = &[0x05, 0x00];

    pub fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let len = content.len();
        let mut out = vec![tag];
        if len < 0x80 {
            out.push(len as u8);
        } else {
            let bytes = len.to_be_bytes();
            let skip = bytes.iter().take_while(|&&b| b == 0).count();
            out.push(0x80 | (bytes.len() - skip) as u8);
            out.extend_from_slice(&bytes[skip..]);
        }
        out.extend_from_slice(content);
        out
    }

    pub fn seq(parts: &[&[u8]]) -> Vec<u8> {
        tlv(SEQUENCE, &parts.concat())
    }

    pub fn oid(content: &[u8]) -> Vec<u8> {
        tlv(OID, content)
    }

    /// A BIT STRING with no unused bits.
    pub fn bits(content: &[u8]) -> Vec<u8> {
        tlv(BIT_STRING, &[&[0u8][..], content].concat())
    }

    /// A non-negative INTEGER from big-endian magnitude bytes.
    pub fn uint(magnitude: &[u8]) -> Vec<u8> {
        let trimmed: Vec<u8> = magnitude.iter().copied().skip_while(|&b| b == 0).collect();
        let mut content = if trimmed.is_empty() { vec![0] } else { trimmed };
        if content[0] & 0x80 != 0 {
            content.insert(0, 0);
        }
        tlv(INTEGER, &content)
    }

    /// Reads one TLV: (tag, content, rest). Test inputs only.
    pub fn read(bytes: &[u8]) -> (u8, &[u8], &[u8]) {
        let tag = bytes[0];
        let (len, header) = match bytes[1] {
            n if n < 0x80 => (usize::from(n), 2),
            n => {
                let count = usize::from(n & 0x7f);
                let len = bytes[2..2 + count]
                    .iter()
                    .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
                (len, 2 + count)
            }
        };
        (tag, &bytes[header..header + len], &bytes[header + len..])
    }
}

mod oid {
    pub const EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
    pub const P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
    pub const RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
    pub const ED25519: &[u8] = &[0x2b, 0x65, 0x70];
    pub const ECDSA_SHA256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
    pub const SHA256_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b];
    pub const EXTENSION_REQUEST: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x0e];
    pub const MS_EXTENSION_REQUEST: &[u8] =
        &[0x2b, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37, 0x02, 0x01, 0x0e];
    pub const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
    pub const SAN: &[u8] = &[0x55, 0x1d, 0x11];
    pub const BASIC_CONSTRAINTS: &[u8] = &[0x55, 0x1d, 0x13];
}

/// The requester's keys, made by ring (RSA by openssl, loaded into ring).
struct Keys {
    rng: SystemRandom,
    p256: EcdsaKeyPair,
    ed25519: Ed25519KeyPair,
    rsa: RsaKeyPair,
}

impl Keys {
    fn new(dir: &std::path::Path) -> Keys {
        let rng = SystemRandom::new();
        let alg = &signature::ECDSA_P256_SHA256_ASN1_SIGNING;
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        let p256 = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let ed25519 = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        // ring does not generate RSA keys
        // (openssl 3.0's genpkey writes a PKCS#1 RSAPrivateKey with -outform DER)
        let path = dir.join("rsa.der");
        let out = run(Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
            ])
            .args(["-outform", "DER", "-out"])
            .arg(&path));
        assert!(out.status.success(), "openssl genpkey: {}", text(&out));
        let der = std::fs::read(&path).unwrap();
        let rsa = RsaKeyPair::from_der(&der)
            .or_else(|_| RsaKeyPair::from_pkcs8(&der))
            .unwrap();
        Keys {
            rng,
            p256,
            ed25519,
            rsa,
        }
    }

    fn sign_p256(&self, msg: &[u8]) -> Vec<u8> {
        self.p256.sign(&self.rng, msg).unwrap().as_ref().to_vec()
    }

    fn sign_ed25519(&self, msg: &[u8]) -> Vec<u8> {
        self.ed25519.sign(msg).as_ref().to_vec()
    }

    fn sign_rsa(&self, msg: &[u8]) -> Vec<u8> {
        let mut sig = vec![0; self.rsa.public().modulus_len()];
        self.rsa
            .sign(&signature::RSA_PKCS1_SHA256, &self.rng, msg, &mut sig)
            .unwrap();
        sig
    }

    /// The uncompressed P-256 point.
    fn p256_point(&self) -> Vec<u8> {
        self.p256.public_key().as_ref().to_vec()
    }

    fn ed25519_key(&self) -> Vec<u8> {
        self.ed25519.public_key().as_ref().to_vec()
    }

    /// The PKCS#1 RSAPublicKey DER.
    fn rsa_key(&self) -> Vec<u8> {
        self.rsa.public().as_ref().to_vec()
    }

    /// (modulus, exponent) magnitudes of the RSA key.
    fn rsa_parts(&self) -> (Vec<u8>, Vec<u8>) {
        let key = self.rsa_key();
        let (_, fields, _) = der::read(&key);
        let (_, n, rest) = der::read(fields);
        let (_, e, _) = der::read(rest);
        (n.to_vec(), e.to_vec())
    }
}

fn p256_spki(point: &[u8]) -> Vec<u8> {
    der::seq(&[
        &der::seq(&[&der::oid(oid::EC_PUBLIC_KEY), &der::oid(oid::P256)]),
        &der::bits(point),
    ])
}

fn rsa_spki(key: &[u8]) -> Vec<u8> {
    der::seq(&[
        &der::seq(&[&der::oid(oid::RSA_ENCRYPTION), der::NULL]),
        &der::bits(key),
    ])
}

fn rsa_key(modulus: &[u8], exponent: &[u8]) -> Vec<u8> {
    der::seq(&[&der::uint(modulus), &der::uint(exponent)])
}

fn ed25519_spki(key: &[u8]) -> Vec<u8> {
    der::seq(&[&der::seq(&[&der::oid(oid::ED25519)]), &der::bits(key)])
}

fn ecdsa_sha256() -> Vec<u8> {
    der::seq(&[&der::oid(oid::ECDSA_SHA256)])
}

fn sha256_with_rsa() -> Vec<u8> {
    der::seq(&[&der::oid(oid::SHA256_RSA), der::NULL])
}

fn ed25519_alg() -> Vec<u8> {
    der::seq(&[&der::oid(oid::ED25519)])
}

fn extension(oid: &[u8], critical: bool, value: &[u8]) -> Vec<u8> {
    let flag = if critical {
        der::tlv(der::BOOLEAN, &[0xff])
    } else {
        Vec::new()
    };
    der::seq(&[&der::oid(oid), &flag, &der::tlv(der::OCTET_STRING, value)])
}

fn san(name: &str) -> Vec<u8> {
    extension(
        oid::SAN,
        false,
        &der::seq(&[&der::tlv(0x82, name.as_bytes())]),
    )
}

fn ca_true() -> Vec<u8> {
    extension(
        oid::BASIC_CONSTRAINTS,
        true,
        &der::seq(&[&der::tlv(der::BOOLEAN, &[0xff])]),
    )
}

/// An extensionRequest attribute holding one Extensions value.
fn ext_request(attribute_oid: &[u8], extensions: &[Vec<u8>]) -> Vec<u8> {
    der::seq(&[
        &der::oid(attribute_oid),
        &der::tlv(der::SET, &der::tlv(der::SEQUENCE, &extensions.concat())),
    ])
}

const HOST: &str = "crafted.db.internal";

/// CertificationRequest for CN=HOST, with `attributes`, signed by `sign`.
fn csr(
    spki: &[u8],
    attributes: &[Vec<u8>],
    signature_alg: &[u8],
    sign: &dyn Fn(&[u8]) -> Vec<u8>,
) -> Vec<u8> {
    let cn = der::seq(&[
        &der::oid(oid::COMMON_NAME),
        &der::tlv(der::UTF8_STRING, HOST.as_bytes()),
    ]);
    let info = der::seq(&[
        &der::tlv(der::INTEGER, &[0]),
        &der::seq(&[&der::tlv(der::SET, &cn)]),
        spki,
        &der::tlv(0xa0, &attributes.concat()),
    ]);
    let signature = sign(&info);
    der::seq(&[&info, signature_alg, &der::bits(&signature)])
}

/// The usual attributes: one extensionRequest with the SAN.
fn one_san() -> Vec<Vec<u8>> {
    vec![ext_request(oid::EXTENSION_REQUEST, &[san(HOST)])]
}

fn pem(der: &[u8]) -> String {
    use base64::Engine;
    format!(
        "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
        base64::engine::general_purpose::STANDARD.encode(der)
    )
}

/// Every entry of the server's issuance log (read with `ca-server log show`).
fn log_entries(server: &TestServer) -> Vec<LogEntry> {
    let out = run(Command::new(bin("ca-server"))
        .args(["log", "show", "--json", "--dir"])
        .arg(&server.dir));
    assert!(out.status.success(), "log show: {}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| LogEntry::from_bytes(l.as_bytes()).expect("log entry"))
        .collect()
}

fn issued_in_log(entries: &[LogEntry]) -> usize {
    entries
        .iter()
        .filter(|e| e.decision() == LogDecision::Issued)
        .count()
}

/// The crafted CSRs: (what, DER). Each must be refused as `malformed_csr`.
fn crafted(keys: &Keys) -> Vec<(&'static str, Vec<u8>)> {
    let p256 = |m: &[u8]| keys.sign_p256(m);
    let ed = |m: &[u8]| keys.sign_ed25519(m);
    let rsa = |m: &[u8]| keys.sign_rsa(m);
    let (n, _) = keys.rsa_parts();
    let mut off_curve = keys.p256_point();
    let last = off_curve.len() - 1;
    off_curve[last] ^= 0x01;
    let mut ed33 = keys.ed25519_key();
    ed33.push(0x00);
    vec![
        (
            "P-256 SPKI with Ed25519 key bytes, signed with Ed25519",
            csr(
                &p256_spki(&keys.ed25519_key()),
                &one_san(),
                &ed25519_alg(),
                &ed,
            ),
        ),
        (
            "P-256 SPKI with PKCS#1 RSA key bytes, signed with RSA",
            csr(
                &p256_spki(&keys.rsa_key()),
                &one_san(),
                &sha256_with_rsa(),
                &rsa,
            ),
        ),
        (
            "EC point not on the curve",
            csr(&p256_spki(&off_curve), &one_san(), &ecdsa_sha256(), &p256),
        ),
        (
            "RSA SPKI with an even exponent",
            csr(
                &rsa_spki(&rsa_key(&n, &[0x01, 0x00, 0x00])),
                &one_san(),
                &sha256_with_rsa(),
                &rsa,
            ),
        ),
        (
            "RSA SPKI with exponent 1",
            csr(
                &rsa_spki(&rsa_key(&n, &[0x01])),
                &one_san(),
                &sha256_with_rsa(),
                &rsa,
            ),
        ),
        (
            "Ed25519 SPKI with 33 key bytes",
            csr(&ed25519_spki(&ed33), &one_san(), &ed25519_alg(), &ed),
        ),
        (
            "P-256 key, signature algorithm sha256WithRSAEncryption",
            csr(
                &p256_spki(&keys.p256_point()),
                &one_san(),
                &sha256_with_rsa(),
                &p256,
            ),
        ),
        (
            "Ed25519 key, signature algorithm ecdsa-with-SHA256",
            csr(
                &ed25519_spki(&keys.ed25519_key()),
                &one_san(),
                &ecdsa_sha256(),
                &ed,
            ),
        ),
        (
            "RSA key, signature algorithm Ed25519",
            csr(&rsa_spki(&keys.rsa_key()), &one_san(), &ed25519_alg(), &rsa),
        ),
        (
            "second extensionRequest asking for CA:TRUE",
            csr(
                &p256_spki(&keys.p256_point()),
                &[
                    ext_request(oid::EXTENSION_REQUEST, &[san(HOST)]),
                    ext_request(oid::EXTENSION_REQUEST, &[ca_true()]),
                ],
                &ecdsa_sha256(),
                &p256,
            ),
        ),
        (
            "second extensionRequest with a SAN",
            csr(
                &p256_spki(&keys.p256_point()),
                &[
                    ext_request(oid::EXTENSION_REQUEST, &[san(HOST)]),
                    ext_request(oid::EXTENSION_REQUEST, &[san("other.db.internal")]),
                ],
                &ecdsa_sha256(),
                &p256,
            ),
        ),
        (
            "legacy Microsoft extensionRequest beside the PKCS#9 one, asking for CA:TRUE",
            csr(
                &p256_spki(&keys.p256_point()),
                &[
                    ext_request(oid::EXTENSION_REQUEST, &[san(HOST)]),
                    ext_request(oid::MS_EXTENSION_REQUEST, &[ca_true()]),
                ],
                &ecdsa_sha256(),
                &p256,
            ),
        ),
        (
            "extension repeated inside one extensionRequest",
            csr(
                &p256_spki(&keys.p256_point()),
                &[ext_request(
                    oid::EXTENSION_REQUEST,
                    &[san(HOST), ca_true(), san("other.db.internal")],
                )],
                &ecdsa_sha256(),
                &p256,
            ),
        ),
    ]
}

#[test]
fn crafted_csrs_are_refused_and_nothing_is_issued() {
    let server = TestServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let keys = Keys::new(tmp.path());
    let issued_metric = || server.metric("trellis_certificates_issued_total", "");
    let sign = |der: &[u8]| {
        server.native_sign(
            "db",
            &json!({"class": "db", "profile": "server", "csr": pem(der)}),
        )
    };

    // The same keys in well-formed CSRs are issued: the builder and the
    // signatures are right, so the refusals below are about what was crafted.
    let p256 = |m: &[u8]| keys.sign_p256(m);
    let ed = |m: &[u8]| keys.sign_ed25519(m);
    let rsa = |m: &[u8]| keys.sign_rsa(m);
    let good = [
        (
            "P-256",
            csr(
                &p256_spki(&keys.p256_point()),
                &one_san(),
                &ecdsa_sha256(),
                &p256,
            ),
        ),
        (
            "Ed25519",
            csr(
                &ed25519_spki(&keys.ed25519_key()),
                &one_san(),
                &ed25519_alg(),
                &ed,
            ),
        ),
        (
            "RSA-2048",
            csr(
                &rsa_spki(&keys.rsa_key()),
                &one_san(),
                &sha256_with_rsa(),
                &rsa,
            ),
        ),
    ];
    let before = issued_metric();
    let log_before = issued_in_log(&log_entries(&server));
    for (what, der) in &good {
        let (status, body) = sign(der);
        assert_eq!(status, 200, "{what}: {body}");
        let cert = body["certificate"].as_str().unwrap_or_default();
        assert!(cert.contains("BEGIN CERTIFICATE"), "{what}: {body}");
    }
    assert_eq!(issued_metric(), before + good.len() as f64);
    let entries = log_entries(&server);
    assert_eq!(
        issued_in_log(&entries),
        log_before + good.len(),
        "the log shows the issued certificates"
    );

    let cases = crafted(&keys);
    let before = issued_metric();
    let denied_before = entries.len() - issued_in_log(&entries);
    for (what, der) in &cases {
        let (status, body) = sign(der);
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("malformed_csr")),
            "{what}: {body}"
        );
        assert!(body.get("certificate").is_none(), "{what}: {body}");
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.starts_with("CSR "),
            "{what}: the message should say what is wrong: {message}"
        );
        assert_eq!(issued_metric(), before, "{what}: a certificate was counted");
    }
    let entries = log_entries(&server);
    assert_eq!(
        issued_in_log(&entries),
        log_before + good.len(),
        "a crafted CSR was logged as issued"
    );
    let malformed_denials = entries
        .iter()
        .filter(|e| e.decision() == LogDecision::Denied)
        .filter(|e| e.reasons().iter().any(|r| r.code == "malformed_csr"))
        .count();
    assert_eq!(
        entries.len() - issued_in_log(&entries) - denied_before,
        cases.len(),
        "each refusal is one denial entry"
    );
    assert!(malformed_denials >= cases.len(), "{malformed_denials}");
    assert!(!server.server_log().contains("panicked"));
}

#[test]
fn the_legacy_extension_request_is_read_and_the_cfssl_endpoint_refuses_the_same() {
    let server = TestServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let keys = Keys::new(tmp.path());
    let p256 = |m: &[u8]| keys.sign_p256(m);
    let before = server.metric("trellis_certificates_issued_total", "");
    let log_before = issued_in_log(&log_entries(&server));

    // CA:TRUE asked for through Microsoft's legacy attribute alone is seen
    // (and denied by the documented rule), not ignored.
    let legacy = csr(
        &p256_spki(&keys.p256_point()),
        &[ext_request(
            oid::MS_EXTENSION_REQUEST,
            &[san(HOST), ca_true()],
        )],
        &ecdsa_sha256(),
        &p256,
    );
    let (status, body) = server.native_sign(
        "db",
        &json!({"class": "db", "profile": "server", "csr": pem(&legacy)}),
    );
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("policy_denied")),
        "{body}"
    );
    let reasons: Vec<&str> = body["error"]["reasons"]
        .as_array()
        .map(|a| a.iter().filter_map(|r| r["code"].as_str()).collect())
        .unwrap_or_default();
    assert!(reasons.contains(&"ca_requested"), "{body}");

    // The CFSSL endpoint runs the same pipeline: every crafted CSR is
    // refused with CFSSL's CSR parse-failure code and our stable code.
    let secret = server.secret("db");
    let client = server.client();
    for (what, der) in crafted(&keys) {
        let inner =
            serde_json::to_vec(&json!({"certificate_request": pem(&der), "label": "db"})).unwrap();
        let envelope = ca_proto::cfssl::make_authsign(&secret, &inner, now_unix());
        let response = client.request("POST", "/api/v1/cfssl/authsign", &[], &envelope);
        let body = response.json();
        assert_eq!(response.status, 400, "{what}: {}", response.text());
        assert_eq!(body["success"], json!(false), "{what}: {body}");
        assert_eq!(body["errors"][0]["code"], json!(9003), "{what}: {body}");
        let message = body["errors"][0]["message"].as_str().unwrap_or_default();
        assert!(
            message.starts_with("malformed_csr: CSR "),
            "{what}: {message}"
        );
        assert!(
            body["result"].get("certificate").is_none(),
            "{what}: {body}"
        );
    }
    assert_eq!(
        server.metric("trellis_certificates_issued_total", ""),
        before,
        "a crafted CSR was issued through CFSSL"
    );
    assert_eq!(
        issued_in_log(&log_entries(&server)),
        log_before,
        "a crafted CSR was logged as issued"
    );
}
