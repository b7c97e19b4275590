//! Checking the issuance-log evidence of a new certificate before it is
//! installed: the signed tree head verifies with the log's public key, the
//! inclusion proof places the entry in that tree, and the entry is the one
//! for *this* certificate (issued, same DER, same serial) and says what the
//! certificate and the request say ([`check_entry`]: class, profile, names,
//! validity, key). A CA that signed without logging — or logged something
//! else — is caught here.
//!
//! The log key comes from `log_public_key` in the configuration (pinned, the
//! strongest choice) or, failing that, from `GET /v1/log/{log_id}/key` over
//! the CA's authenticated TLS channel on first use, then kept for the life of
//! the process.

use ca_proto::logentry::{LogDecision, LogEntry};
use ca_proto::native::SignResponse;
use ca_proto::sth::{LogEvidence, LogPublicKey};
use thiserror::Error;

use crate::verify::{rfc3339, Checked, NameSet};

/// Why a certificate was not accepted for lack of a verified proof.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum InclusionError {
    /// A proof is required and the response carries none.
    #[error("inclusion proof required but the server sent none")]
    Missing,
    /// The evidence is not in the expected shape.
    #[error("issuance-log evidence is malformed: {0}")]
    Malformed(String),
    /// Signature, proof or index did not verify.
    #[error("issuance-log evidence does not verify: {0}")]
    Invalid(String),
    /// The logged entry is not the certificate that was returned.
    #[error("the logged entry is not this certificate: {0}")]
    WrongEntry(&'static str),
    /// The logged entry's facts disagree with the certificate or request.
    #[error("the logged entry does not match the certificate: {0}")]
    Mismatch(String),
}

/// The evidence of `response`, if any (typed when the response was parsed;
/// not yet verified).
pub fn evidence(response: &SignResponse) -> Result<Option<LogEvidence>, InclusionError> {
    Ok(response.log.clone())
}

/// Verify `evidence` for the certificate `leaf_der` with serial `serial_hex`.
pub fn verify(
    evidence: &LogEvidence,
    key: &LogPublicKey,
    leaf_der: &[u8],
    serial_hex: &str,
) -> Result<u64, InclusionError> {
    verify_entry(evidence, key, leaf_der, serial_hex).map(|(index, _)| index)
}

/// [`verify`], returning the verified entry too.
pub fn verify_entry(
    evidence: &LogEvidence,
    key: &LogPublicKey,
    leaf_der: &[u8],
    serial_hex: &str,
) -> Result<(u64, LogEntry), InclusionError> {
    let entry_bytes = evidence
        .verify(key)
        .map_err(|e| InclusionError::Invalid(e.to_string()))?;
    let entry = LogEntry::from_bytes(&entry_bytes)
        .map_err(|e| InclusionError::Malformed(format!("entry: {e}")))?;
    match entry.decision() {
        LogDecision::Issued => {}
        LogDecision::Denied => return Err(InclusionError::WrongEntry("the entry is a denial")),
        LogDecision::Revoked => {
            return Err(InclusionError::WrongEntry("the entry is a revocation"))
        }
    }
    if entry.certificate_der().as_deref() != Some(leaf_der) {
        return Err(InclusionError::WrongEntry("certificate differs"));
    }
    if entry.serial() != Some(serial_hex) {
        return Err(InclusionError::WrongEntry("serial differs"));
    }
    Ok((evidence.index, entry))
}

/// The logged entry must say what the certificate says and what was
/// requested: the class, a profile whose extended key usage the certificate
/// has (the configured one, if any), exactly its names, its validity and its
/// key.
pub fn check_entry(
    entry: &LogEntry,
    class: &str,
    profile: Option<&str>,
    checked: &Checked,
) -> Result<(), InclusionError> {
    let bad = |s: String| Err(InclusionError::Mismatch(s));
    if entry.class != class {
        return bad(format!(
            "it is for class '{}', the request for '{class}'",
            entry.class
        ));
    }
    if profile.is_some_and(|p| p != entry.profile) || !checked.profiles.contains(&entry.profile) {
        return bad(format!(
            "it is for profile '{}', the certificate fits [{}]",
            entry.profile,
            checked.profiles.join(", ")
        ));
    }
    let Some(issued) = entry.issued() else {
        return bad("it is a denial".into());
    };
    let mut logged = NameSet::default();
    logged.dns.extend(issued.dns.iter().cloned());
    logged.uris.extend(issued.uris.iter().cloned());
    for ip in &issued.ips {
        match ip.parse() {
            Ok(ip) => {
                logged.ips.insert(ip);
            }
            Err(_) => return bad(format!("it logs '{ip}' as an IP address")),
        }
    }
    if logged != checked.names {
        let show = |n: &NameSet| {
            n.dns
                .iter()
                .cloned()
                .chain(n.ips.iter().map(ToString::to_string))
                .chain(n.uris.iter().cloned())
                .collect::<Vec<_>>()
                .join(", ")
        };
        return bad(format!(
            "it names [{}], the certificate [{}]",
            show(&logged),
            show(&checked.names)
        ));
    }
    for (what, logged, cert) in [
        ("not_before", &issued.not_before, checked.facts.not_before),
        ("not_after", &issued.not_after, checked.facts.not_after),
    ] {
        if logged.unix_timestamp() != cert {
            return bad(format!(
                "its {what} is {logged}, the certificate's {}",
                rfc3339(cert)
            ));
        }
    }
    if !issued
        .spki_sha256
        .eq_ignore_ascii_case(&checked.spki_sha256)
    {
        return bad("it logs another public key".into());
    }
    Ok(())
}

/// What to do when a response has no evidence.
pub fn missing(required: bool) -> Result<(), InclusionError> {
    if required {
        Err(InclusionError::Missing)
    } else {
        tracing::warn!("the CA sent no issuance-log evidence (require_inclusion_proof = false)");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ca_proto::logentry::{DeniedEntry, IssuedEntry, LogReason, Outcome, RevokedEntry};
    use ca_proto::merkle::{inclusion_proof, leaf_hash, CompactRange, MemoryNodeStore};
    use ca_proto::sth::SignedTreeHead;
    use ca_proto::time::Rfc3339;
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};

    fn entry(serial: &str, cert: &[u8], decision: LogDecision) -> LogEntry {
        use base64::Engine;
        let outcome = match decision {
            LogDecision::Issued => Outcome::Issued(IssuedEntry {
                serial: serial.into(),
                subject: None,
                dns: vec![],
                ips: vec![],
                uris: vec![],
                not_before: Rfc3339::from_unix_timestamp(0).expect("time"),
                not_after: Rfc3339::from_unix_timestamp(0).expect("time"),
                spki_sha256: String::new(),
                issuer: String::new(),
                certificate: base64::engine::general_purpose::STANDARD.encode(cert),
            }),
            LogDecision::Denied => Outcome::Denied(DeniedEntry {
                subject: None,
                dns: vec![],
                ips: vec![],
                uris: vec![],
                reasons: vec![LogReason {
                    code: "denied".into(),
                    detail: serial.into(),
                }],
            }),
            LogDecision::Revoked => Outcome::Revoked(RevokedEntry {
                serial: serial.into(),
                spki_sha256: String::new(),
                issuer: String::new(),
                not_after: Rfc3339::from_unix_timestamp(0).expect("time"),
                reason: "keyCompromise".into(),
                revoked_at: Rfc3339::from_unix_timestamp(0).expect("time"),
            }),
        };
        LogEntry {
            seq: 0,
            time: "2026-11-28T00:00:00Z".parse().expect("time"),
            log_id: "t".into(),
            class: "db".into(),
            profile: "server".into(),
            key_id: "db".into(),
            outcome,
        }
    }

    fn issued_mut(entry: &mut LogEntry) -> &mut IssuedEntry {
        match &mut entry.outcome {
            Outcome::Issued(issued) => issued,
            _ => panic!("the test entry is an issued one"),
        }
    }

    /// A signed log of `entries`, and evidence for entry `index`.
    fn evidence_for(entries: &[LogEntry], index: u64) -> (LogEvidence, LogPublicKey) {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        let key = LogPublicKey::from_point(pair.public_key().as_ref().to_vec()).unwrap();
        let mut range = CompactRange::new();
        let mut store = MemoryNodeStore::new();
        for e in entries {
            store.add(&range.append(leaf_hash(&e.to_bytes()))).unwrap();
        }
        let root = range.root();
        let message = SignedTreeHead::signed_bytes("t", range.size(), &root, 1);
        let sig = pair.sign(&rng, &message).unwrap();
        let sth = SignedTreeHead::new("t", range.size(), &root, 1, sig.as_ref());
        let proof = inclusion_proof(&store, index, range.size()).unwrap();
        (
            LogEvidence::new(index, &entries[index as usize].to_bytes(), sth, &proof),
            key,
        )
    }

    #[test]
    fn the_entry_must_say_what_the_certificate_says() {
        let checked = Checked {
            facts: crate::pem::CertFacts {
                not_before: 1_700_000_000,
                not_after: 1_700_086_400,
                serial: "01".into(),
                public_key: vec![],
                subject: String::new(),
                issuer: String::new(),
            },
            names: NameSet {
                dns: ["a.db.internal".to_string()].into(),
                ips: ["10.0.0.1".parse().expect("ip")].into(),
                uris: Default::default(),
            },
            profiles: vec!["server".into()],
            spki_sha256: "ab".repeat(32),
        };
        let mut good = entry("01", b"c", LogDecision::Issued);
        let g = issued_mut(&mut good);
        g.dns = vec!["a.db.internal".into()];
        g.ips = vec!["10.0.0.1".into()];
        g.not_before = Rfc3339::from_unix_timestamp(1_700_000_000).expect("time");
        g.not_after = Rfc3339::from_unix_timestamp(1_700_086_400).expect("time");
        g.spki_sha256 = "AB".repeat(32);
        check_entry(&good, "db", Some("server"), &checked).expect("consistent");
        check_entry(&good, "db", None, &checked).expect("profile from the certificate");
        type Tamper = Box<dyn Fn(&mut LogEntry)>;
        let cases: Vec<(Tamper, &str)> = vec![
            (Box::new(|e| e.class = "web".into()), "class 'web'"),
            (
                Box::new(|e| e.profile = "client".into()),
                "profile 'client'",
            ),
            (
                Box::new(|e| issued_mut(e).dns = vec!["evil.example".into()]),
                "evil.example",
            ),
            (
                Box::new(|e| issued_mut(e).dns.push("b.db.internal".into())),
                "b.db.internal",
            ),
            (Box::new(|e| issued_mut(e).ips = vec![]), "it names"),
            (
                Box::new(|e| issued_mut(e).ips = vec!["nope".into()]),
                "'nope'",
            ),
            (
                Box::new(|e| {
                    issued_mut(e).not_after =
                        Rfc3339::from_unix_timestamp(1_700_000_001).expect("time")
                }),
                "not_after is 2023-11-14T22:13:21Z",
            ),
            (
                Box::new(|e| {
                    issued_mut(e).not_before =
                        Rfc3339::from_unix_timestamp(1_600_000_000).expect("time")
                }),
                "not_before",
            ),
            (
                Box::new(|e| issued_mut(e).spki_sha256 = "00".into()),
                "public key",
            ),
        ];
        for (tamper, needle) in cases {
            let mut e = good.clone();
            tamper(&mut e);
            let err = check_entry(&e, "db", Some("server"), &checked)
                .expect_err(needle)
                .to_string();
            assert!(err.contains(needle), "{needle}: {err}");
        }
    }

    #[test]
    fn accepts_its_own_entry_and_nothing_else() {
        let entries = vec![
            entry("01", b"cert-one", LogDecision::Issued),
            entry("02", b"cert-two", LogDecision::Issued),
            entry("03", b"cert-three", LogDecision::Denied),
            entry("02", b"cert-two", LogDecision::Revoked),
        ];
        let (ev, key) = evidence_for(&entries, 1);
        assert_eq!(verify(&ev, &key, b"cert-two", "02"), Ok(1));
        assert!(matches!(
            verify(&ev, &key, b"cert-one", "02"),
            Err(InclusionError::WrongEntry(_))
        ));
        assert!(matches!(
            verify(&ev, &key, b"cert-two", "01"),
            Err(InclusionError::WrongEntry(_))
        ));
        let (other, other_key) = evidence_for(&entries, 1);
        assert!(matches!(
            verify(&other, &key, b"cert-two", "02"),
            Err(InclusionError::Invalid(_))
        ));
        assert!(verify(&other, &other_key, b"cert-two", "02").is_ok());
        let (denial, key) = evidence_for(&entries, 2);
        assert!(matches!(
            verify(&denial, &key, b"cert-three", "03"),
            Err(InclusionError::WrongEntry(_))
        ));
        // The revocation of our serial is no evidence of its issuance.
        let (revocation, key) = evidence_for(&entries, 3);
        assert_eq!(
            verify(&revocation, &key, b"cert-two", "02"),
            Err(InclusionError::WrongEntry("the entry is a revocation"))
        );
        let mut moved = ev.clone();
        moved.index = 0;
        assert!(matches!(
            verify(&moved, &key, b"cert-two", "02"),
            Err(InclusionError::Invalid(_))
        ));
        assert_eq!(missing(true), Err(InclusionError::Missing));
        assert_eq!(missing(false), Ok(()));
    }
}
