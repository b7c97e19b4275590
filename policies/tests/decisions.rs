//! The denial matrix: requests against the shipped class policies, checking
//! every reason code and that grants hold only normalised, checked values.

use std::net::IpAddr;
use std::time::Duration;

use policies::{
    CsrFacts, Decision, ExtKeyUsage, Grant, KeyAlgorithm, KeyUsage, PolicySet, ReasonCode, Request,
    SignatureAlgorithm,
};

fn set() -> PolicySet {
    match PolicySet::shipped() {
        Ok(s) => s,
        Err(e) => panic!("shipped policies must parse: {e}"),
    }
}

fn csr(cn: Option<&str>, dns: &[&str]) -> CsrFacts {
    CsrFacts {
        common_name: cn.map(str::to_owned),
        dns_names: dns.iter().map(|s| s.to_string()).collect(),
        ip_addrs: vec![],
        uris: vec![],
        key: KeyAlgorithm::EcP256,
        signature: SignatureAlgorithm::EcdsaSha256,
        requests_ca: false,
    }
}

fn req(csr: &CsrFacts) -> Request<'_> {
    Request {
        profile: None,
        csr,
        hosts: None,
        ttl: None,
    }
}

fn decide(class: &str, r: &Request<'_>) -> Decision {
    set()
        .get(class)
        .unwrap_or_else(|| panic!("class {class} missing"))
        .decide(r)
}

fn grant(class: &str, r: &Request<'_>) -> Grant {
    match decide(class, r) {
        Decision::Grant(g) => g,
        Decision::Deny(reasons) => panic!("expected a grant, got {reasons:?}"),
    }
}

/// The reason codes of a denial, in order.
fn codes(class: &str, r: &Request<'_>) -> Vec<ReasonCode> {
    match decide(class, r) {
        Decision::Grant(g) => panic!("expected a denial, got {g:?}"),
        Decision::Deny(reasons) => {
            assert!(!reasons.is_empty());
            for r in &reasons {
                assert!(!r.detail.is_empty());
            }
            reasons.into_iter().map(|r| r.code).collect()
        }
    }
}

#[test]
fn plain_request_is_granted_with_profile_defaults() {
    let c = csr(
        Some("api-1.db.internal"),
        &["api-1.db.internal", "db.internal"],
    );
    let g = grant("db", &req(&c));
    assert_eq!(g.class(), "db");
    assert_eq!(g.profile(), "server");
    assert_eq!(g.common_name(), Some("api-1.db.internal"));
    assert_eq!(g.dns_names(), ["api-1.db.internal", "db.internal"]);
    // key_encipherment is dropped for an EC key (RFC 8813).
    assert_eq!(g.key_usages(), [KeyUsage::DigitalSignature]);
    assert_eq!(g.ext_key_usages(), [ExtKeyUsage::ServerAuth]);
    assert_eq!(g.ttl(), Duration::from_secs(24 * 3600));
}

#[test]
fn rsa_keeps_key_encipherment_and_peer_profile_has_both_ekus() {
    let mut c = csr(None, &["a.api.internal"]);
    c.key = KeyAlgorithm::Rsa { bits: 3072 };
    c.signature = SignatureAlgorithm::RsaPssSha256;
    let mut r = req(&c);
    r.profile = Some("peer");
    let g = grant("api", &r);
    assert_eq!(
        g.key_usages(),
        [KeyUsage::DigitalSignature, KeyUsage::KeyEncipherment]
    );
    assert_eq!(
        g.ext_key_usages(),
        [ExtKeyUsage::ServerAuth, ExtKeyUsage::ClientAuth]
    );
}

#[test]
fn uppercase_and_trailing_dot_are_normalised_and_allowed() {
    let c = csr(
        Some("API-1.DB.INTERNAL."),
        &["API-1.DB.INTERNAL.", "api-1.db.internal"],
    );
    let g = grant("db", &req(&c));
    assert_eq!(g.dns_names(), ["api-1.db.internal"]);
    assert_eq!(g.common_name(), Some("api-1.db.internal"));
}

#[test]
fn idn_is_converted_to_a_labels() {
    let c = csr(None, &["bücher.db.internal"]);
    assert_eq!(
        grant("db", &req(&c)).dns_names(),
        ["xn--bcher-kva.db.internal"]
    );
}

#[test]
fn names_outside_the_patterns_are_denied() {
    for name in [
        "db.internal.evil.example",
        "a.b.db.internal",
        "x.api.internal",
        "evil-db.internal",
        "internal",
    ] {
        let c = csr(None, &[name]);
        assert_eq!(
            codes("db", &req(&c)),
            [ReasonCode::NameNotAllowed],
            "{name}"
        );
    }
}

#[test]
fn wildcard_request_is_denied_as_wildcard_only() {
    let c = csr(None, &["*.db.internal"]);
    assert_eq!(codes("db", &req(&c)), [ReasonCode::WildcardNotAllowed]);
}

#[test]
fn malformed_names_are_invalid_and_echoed_escaped() {
    for name in [
        "a\0b.db.internal",
        "a b.db.internal",
        "a..db.internal",
        "-a.db.internal",
        "",
    ] {
        let c = csr(None, &[name]);
        let Decision::Deny(reasons) = decide("db", &req(&c)) else {
            panic!("{name:?} granted");
        };
        assert_eq!(reasons.len(), 1, "{name:?}: {reasons:?}");
        assert_eq!(reasons[0].code, ReasonCode::InvalidName);
        assert!(!reasons[0].detail.contains('\0'));
    }
    let long = format!("{}\n.db.internal", "x".repeat(500));
    let c = csr(None, &[long.as_str()]);
    let Decision::Deny(reasons) = decide("db", &req(&c)) else {
        panic!("granted");
    };
    assert!(reasons[0].detail.len() < 200, "{}", reasons[0].detail);
    assert!(!reasons[0].detail.contains('\n'));
}

#[test]
fn ip_sans_need_an_allowed_range() {
    let mut c = csr(None, &["db.internal"]);
    c.ip_addrs = vec!["1.1.1.1".parse().expect("ip")];
    assert_eq!(codes("db", &req(&c)), [ReasonCode::IpNotAllowed]);

    let mut c = csr(Some("localhost"), &["localhost"]);
    c.ip_addrs = vec!["127.0.0.1".parse().expect("ip"), "::1".parse().expect("ip")];
    let g = grant("ca", &req(&c));
    assert_eq!(g.ip_addrs().len(), 2);
    assert_eq!(g.ttl(), Duration::from_secs(30 * 86_400));

    c.ip_addrs = vec!["10.0.0.1".parse().expect("ip")];
    assert_eq!(codes("ca", &req(&c)), [ReasonCode::IpNotAllowed]);
}

#[test]
fn any_allowed_name_adds_the_cn_to_the_sans() {
    let c = csr(Some("LocalHost"), &[]);
    let g = grant("ca", &req(&c));
    assert_eq!(g.common_name(), Some("localhost"));
    assert_eq!(g.dns_names(), ["localhost"]);

    let c = csr(Some("127.0.0.1"), &["localhost"]);
    let g = grant("ca", &req(&c));
    assert_eq!(g.ip_addrs(), ["127.0.0.1".parse::<IpAddr>().expect("ip")]);

    let c = csr(Some("evil.example"), &["localhost"]);
    assert_eq!(codes("ca", &req(&c)), [ReasonCode::NameNotAllowed]);
}

#[test]
fn cn_must_be_a_san_in_leaf_classes() {
    let c = csr(Some("other.db.internal"), &["a.db.internal"]);
    assert_eq!(codes("db", &req(&c)), [ReasonCode::CommonNameNotAllowed]);
    let c = csr(Some("my service"), &["a.db.internal"]);
    assert_eq!(codes("db", &req(&c)), [ReasonCode::CommonNameNotAllowed]);
}

#[test]
fn too_many_sans() {
    let names: Vec<String> = (0..11).map(|i| format!("n{i}.db.internal")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let c = csr(None, &refs);
    assert_eq!(codes("db", &req(&c)), [ReasonCode::TooManySans]);
    // Duplicates (after normalisation) count once.
    let mut dup: Vec<&str> = refs[..10].to_vec();
    dup.push("N0.DB.INTERNAL.");
    let c = csr(None, &dup);
    assert_eq!(grant("db", &req(&c)).dns_names().len(), 10);
}

#[test]
fn weak_or_unsupported_keys_and_signatures() {
    let mut c = csr(None, &["db.internal"]);
    c.key = KeyAlgorithm::Rsa { bits: 1024 };
    c.signature = SignatureAlgorithm::RsaPkcs1Sha256;
    assert_eq!(codes("db", &req(&c)), [ReasonCode::KeyTooSmall]);

    let mut c = csr(None, &["db.internal"]);
    c.key = KeyAlgorithm::Other("EC secp192r1".into());
    assert_eq!(codes("db", &req(&c)), [ReasonCode::KeyAlgorithmNotAllowed]);

    let mut c = csr(None, &["db.internal"]);
    c.key = KeyAlgorithm::Rsa { bits: 2048 };
    c.signature = SignatureAlgorithm::Other("sha1WithRSAEncryption".into());
    assert_eq!(
        codes("db", &req(&c)),
        [ReasonCode::SignatureAlgorithmNotAllowed]
    );
}

#[test]
fn ca_requests_are_denied() {
    let mut c = csr(None, &["db.internal"]);
    c.requests_ca = true;
    assert_eq!(codes("db", &req(&c)), [ReasonCode::CaRequested]);
}

#[test]
fn unknown_profile_still_reports_name_and_key_problems() {
    let mut c = csr(None, &["x.example"]);
    c.key = KeyAlgorithm::Rsa { bits: 1024 };
    let mut r = req(&c);
    r.profile = Some("admin");
    r.ttl = Some(Duration::from_secs(365 * 86_400));
    assert_eq!(
        codes("db", &r),
        [
            ReasonCode::UnknownProfile,
            ReasonCode::KeyTooSmall,
            ReasonCode::NameNotAllowed
        ]
    );
    // Some("") is the default profile.
    let c = csr(None, &["db.internal"]);
    let mut r = req(&c);
    r.profile = Some("");
    assert_eq!(grant("db", &r).profile(), "server");
}

#[test]
fn ttl_bounds() {
    let c = csr(None, &["db.internal"]);
    let mut r = req(&c);
    r.ttl = Some(Duration::from_secs(72 * 3600 + 1));
    assert_eq!(codes("db", &r), [ReasonCode::TtlTooLong]);
    r.ttl = Some(Duration::from_secs(59));
    assert_eq!(codes("db", &r), [ReasonCode::TtlTooShort]);
    r.ttl = Some(Duration::from_secs(72 * 3600));
    assert_eq!(grant("db", &r).ttl(), Duration::from_secs(72 * 3600));
}

#[test]
fn hosts_replace_the_csr_sans() {
    let mut c = csr(None, &["evil.example"]);
    c.ip_addrs = vec!["1.1.1.1".parse().expect("ip")];
    let hosts = vec![
        "a.db.internal".to_string(),
        "spiffe://Trellis.Internal/db/a".to_string(),
    ];
    let mut r = req(&c);
    r.hosts = Some(&hosts);
    let g = grant("db", &r);
    assert_eq!(g.dns_names(), ["a.db.internal"]);
    assert!(g.ip_addrs().is_empty());
    assert_eq!(g.uris(), ["spiffe://trellis.internal/db/a"]);

    let hosts = vec!["127.0.0.1".to_string()];
    r.hosts = Some(&hosts);
    assert_eq!(codes("db", &r), [ReasonCode::IpNotAllowed]);

    let none: Vec<String> = vec![];
    r.hosts = Some(&none);
    assert_eq!(codes("db", &r), [ReasonCode::NoNames]);
}

#[test]
fn uri_sans() {
    let mut c = csr(None, &[]);
    c.uris = vec!["spiffe://trellis.internal/api/x".into()];
    assert_eq!(codes("db", &req(&c)), [ReasonCode::UriNotAllowed]);
    c.uris = vec!["spiffe://trellis.internal/db/../api/x".into()];
    assert_eq!(codes("db", &req(&c)), [ReasonCode::UriNotAllowed]);
    c.uris = vec!["not a uri".into()];
    assert_eq!(codes("db", &req(&c)), [ReasonCode::InvalidName]);
}

#[test]
fn every_reason_is_returned_at_once() {
    let mut c = csr(None, &["*.db.internal", "evil.example"]);
    c.ip_addrs = vec!["1.1.1.1".parse().expect("ip")];
    c.signature = SignatureAlgorithm::Other("sha1WithRSAEncryption".into());
    c.requests_ca = true;
    let mut r = req(&c);
    r.ttl = Some(Duration::from_secs(30 * 86_400));
    assert_eq!(
        codes("db", &r),
        [
            ReasonCode::CaRequested,
            ReasonCode::SignatureAlgorithmNotAllowed,
            ReasonCode::WildcardNotAllowed,
            ReasonCode::NameNotAllowed,
            ReasonCode::IpNotAllowed,
            ReasonCode::TtlTooLong,
        ]
    );
}

#[test]
fn reason_codes_are_stable_snake_case() {
    for code in ReasonCode::ALL {
        let s = code.as_str();
        assert!(
            s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
            "{s}"
        );
        assert_eq!(code.to_string(), s);
    }
    assert_eq!(ReasonCode::NameNotAllowed.as_str(), "name_not_allowed");
    assert_eq!(ReasonCode::CaRequested.as_str(), "ca_requested");
}

#[test]
fn decisions_serialise_for_the_wire() {
    let c = csr(None, &["evil.example"]);
    let json = serde_json::to_value(decide("db", &req(&c))).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        json,
        serde_json::json!({"deny": [{
            "code": "name_not_allowed",
            "detail": "DNS name \"evil.example\" is not allowed in class db"
        }]})
    );
    let c = csr(None, &["db.internal"]);
    let json = serde_json::to_value(grant("db", &req(&c))).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(json["ttl"], 86_400);
    assert_eq!(json["key_usages"], serde_json::json!(["digital_signature"]));
    assert_eq!(json["ext_key_usages"], serde_json::json!(["server_auth"]));
    for code in ReasonCode::ALL {
        assert_eq!(
            serde_json::to_value(code).ok(),
            Some(serde_json::json!(code.as_str()))
        );
    }
}
