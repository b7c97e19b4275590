//! Certificate revocation lists (RFC 5280): the `X509 CRL` blocks of PEM
//! text, the facts the client needs of each CRL, whether a CRL was signed by
//! a CA certificate of its class, and how a freshly served set replaces the
//! installed one.
//!
//! - [`decode_pem`] / [`encode_pem`]: PEM text ↔ [`Crl`]s, bounded before
//!   anything is parsed ([`MAX_CRL_PEM_BYTES`], [`MAX_CRLS`]).
//! - [`CaSet`]: the CA certificates a class's CRLs may be signed by: its
//!   pinned roots, and intermediates (and cross certificates) that chain to
//!   one of them ([`crate::verify::build_path`]).
//! - [`verify`]: a CRL is accepted when a CA certificate of the set with
//!   the CRL's issuer name (and, when both say, the same key identifier)
//!   may sign CRLs (CA:TRUE; keyUsage, when present, with cRLSign) and its
//!   key verifies the CRL's signature, and when rustls (webpki) can use the
//!   CRL (no delta CRL, no unsupported critical extension, a nextUpdate).
//! - [`merge`]: the CRLs to install from a served set and the installed
//!   one. Per *scope* (issuer name and authority key identifier): a verified
//!   served CRL replaces the installed one unless that one is newer (a
//!   replica serving an older CRL never takes back a revocation); for a
//!   refused served CRL the installed one of its issuer name stays; a scope the
//!   server no longer serves (an intermediate whose leaves all expired) is
//!   dropped.
//!
//! Time: a CRL past its nextUpdate still refuses what it lists, so it is
//! installed and kept (with a warning in the logs and in the
//! `trellis_client_crl_next_update_timestamp_seconds` metric); thisUpdate is not
//! judged against the local clock.

use std::collections::BTreeSet;

use rustls_pki_types::pem::{PemObject, SectionKind};
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer};
use thiserror::Error;
use x509_parser::extensions::ParsedExtension;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::revocation_list::CertificateRevocationList;

/// The PEM label of a CRL.
pub const PEM_LABEL: &str = "X509 CRL";
/// Largest CRL PEM text accepted (the CA client's response cap).
pub const MAX_CRL_PEM_BYTES: usize = crate::api::MAX_RESPONSE_BYTES;
/// Most CRLs in one PEM text (one per intermediate with unexpired leaves,
/// plus the root-signed one).
pub const MAX_CRLS: usize = 64;

/// Why CRL text or DER was refused. `Display` is one line.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CrlError {
    /// Longer than [`MAX_CRL_PEM_BYTES`].
    #[error("CRL text is {len} bytes, more than the {max} accepted")]
    TooLarge {
        /// Length of the text.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// More than [`MAX_CRLS`] blocks.
    #[error("more than {max} X509 CRL PEM blocks")]
    TooMany {
        /// The limit.
        max: usize,
    },
    /// No `X509 CRL` block.
    #[error("no X509 CRL PEM block")]
    Missing,
    /// The PEM text is malformed.
    #[error("{0}")]
    Pem(ca_proto::pem::PemError),
    /// A block does not parse as an X.509 CRL.
    #[error("CRL {position}: not an X.509 CRL: {detail}")]
    Malformed {
        /// Position in the text, the first being 1.
        position: usize,
        /// The parser's complaint.
        detail: String,
    },
    /// A CRL without nextUpdate (RFC 5280 requires one; rustls too).
    #[error("CRL {position} of '{issuer}' has no nextUpdate")]
    NoNextUpdate {
        /// Position in the text, the first being 1.
        position: usize,
        /// Its issuer.
        issuer: String,
    },
}

/// Why a served CRL was not installed ([`verify`]). `Display` is one line.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Refusal {
    /// No CA certificate of the class carries the CRL's issuer name (a
    /// CRL of another class, or of an intermediate this client has not
    /// seen).
    #[error("CRL of '{issuer}': no CA certificate of class '{class}' has this name")]
    UnknownIssuer {
        /// The class.
        class: String,
        /// The CRL's issuer.
        issuer: String,
    },
    /// The name is known, but the signature does not verify with the key of
    /// any CA certificate of that name.
    #[error(
        "CRL of '{issuer}': the signature does not verify with the key of a CA certificate of class '{class}'"
    )]
    BadSignature {
        /// The class.
        class: String,
        /// The CRL's issuer.
        issuer: String,
    },
    /// The certificate of that name may not sign CRLs.
    #[error("CRL of '{issuer}': the issuer is not a CA allowed to sign CRLs (CA:TRUE, cRLSign)")]
    NotCrlSigner {
        /// The CRL's issuer.
        issuer: String,
    },
    /// rustls cannot use the CRL (delta CRL, unsupported critical
    /// extension, …).
    #[error("CRL of '{issuer}': unusable for TLS verification: {detail}")]
    Unusable {
        /// The CRL's issuer.
        issuer: String,
        /// rustls's complaint.
        detail: String,
    },
}

/// One parsed CRL and the facts the client uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crl {
    der: CertificateRevocationListDer<'static>,
    /// Issuer DN, for people.
    pub issuer: String,
    issuer_raw: Vec<u8>,
    aki: Option<Vec<u8>>,
    /// thisUpdate, Unix seconds.
    pub this_update: i64,
    /// nextUpdate, Unix seconds.
    pub next_update: i64,
    /// cRLNumber, big-endian without leading zeros (empty: none).
    number: Vec<u8>,
    /// Serials listed, big-endian without a leading zero byte.
    revoked: BTreeSet<Vec<u8>>,
}

/// A serial number's bytes without the sign-padding zero byte.
fn normalise_serial(raw: &[u8]) -> &[u8] {
    match raw {
        [0, rest @ ..] if !rest.is_empty() => rest,
        _ => raw,
    }
}

fn key_identifier(cert: &X509Certificate<'_>) -> Option<Vec<u8>> {
    cert.extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
            _ => None,
        })
}

fn parse_cert(der: &[u8]) -> Option<X509Certificate<'_>> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Some(cert),
        _ => None,
    }
}

fn parse_crl(der: &[u8]) -> Result<CertificateRevocationList<'_>, String> {
    match CertificateRevocationList::from_der(der) {
        Ok(([], crl)) => Ok(crl),
        Ok(_) => Err("trailing bytes after the CRL".into()),
        Err(e) => Err(e.to_string()),
    }
}

impl Crl {
    /// Parses one DER CRL (`position` names it in errors).
    pub fn parse(der: Vec<u8>, position: usize) -> Result<Crl, CrlError> {
        let crl = parse_crl(&der).map_err(|detail| CrlError::Malformed { position, detail })?;
        let issuer = crl.issuer().to_string();
        let next_update = match crl.next_update() {
            Some(t) => t.timestamp(),
            None => return Err(CrlError::NoNextUpdate { position, issuer }),
        };
        let aki = crl
            .extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::AuthorityKeyIdentifier(a) => {
                    a.key_identifier.as_ref().map(|k| k.0.to_vec())
                }
                _ => None,
            });
        let issuer_raw = crl.issuer().as_raw().to_vec();
        let this_update = crl.last_update().timestamp();
        let number = crl
            .crl_number()
            .map(|n| n.to_bytes_be())
            .unwrap_or_default();
        let revoked = crl
            .iter_revoked_certificates()
            .map(|r| normalise_serial(r.raw_serial()).to_vec())
            .collect();
        Ok(Crl {
            der: CertificateRevocationListDer::from(der),
            issuer,
            issuer_raw,
            aki,
            this_update,
            next_update,
            number,
            revoked,
        })
    }

    /// The DER.
    pub fn der(&self) -> &CertificateRevocationListDer<'static> {
        &self.der
    }

    /// How many serials it lists.
    pub fn len(&self) -> usize {
        self.revoked.len()
    }

    /// Whether it lists no serial.
    pub fn is_empty(&self) -> bool {
        self.revoked.is_empty()
    }

    /// Whether it lists the serial `raw` (DER INTEGER content bytes).
    pub fn lists(&self, raw: &[u8]) -> bool {
        self.revoked.contains(normalise_serial(raw))
    }

    /// Whether it lists the serial written as lowercase hex (as in
    /// [`crate::pem::CertFacts::serial`]).
    pub fn lists_hex(&self, serial: &str) -> bool {
        hex::decode(serial).is_ok_and(|raw| self.lists(&raw))
    }

    /// Whether this CRL speaks for the certificate `cert` (DER): its issuer
    /// name is the certificate's, and their authority key identifiers agree
    /// when both carry one.
    pub fn covers(&self, cert: &[u8]) -> bool {
        let Some(cert) = parse_cert(cert) else {
            return false;
        };
        if cert.issuer().as_raw() != self.issuer_raw.as_slice() {
            return false;
        }
        let cert_aki = cert
            .extensions()
            .iter()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::AuthorityKeyIdentifier(a) => {
                    a.key_identifier.as_ref().map(|k| k.0.to_vec())
                }
                _ => None,
            });
        match (&self.aki, cert_aki) {
            (Some(a), Some(b)) => *a == b,
            _ => true,
        }
    }

    /// Whether `ca` (DER) may have signed this CRL: same name (and key
    /// identifier when both carry one), CA:TRUE, cRLSign when keyUsage is
    /// present, and the signature verifies with its key.
    pub fn signed_by(&self, ca: &[u8]) -> Result<(), Refusal> {
        let issuer = || self.issuer.clone();
        let Some(cert) = parse_cert(ca) else {
            return Err(Refusal::NotCrlSigner { issuer: issuer() });
        };
        if cert.subject().as_raw() != self.issuer_raw.as_slice() {
            return Err(Refusal::UnknownIssuer {
                class: String::new(),
                issuer: issuer(),
            });
        }
        let is_ca = cert
            .basic_constraints()
            .ok()
            .flatten()
            .is_some_and(|b| b.value.ca);
        let crl_sign = match cert.key_usage() {
            Ok(Some(ku)) => ku.value.crl_sign(),
            Ok(None) => true,
            Err(_) => false,
        };
        if !is_ca || !crl_sign {
            return Err(Refusal::NotCrlSigner { issuer: issuer() });
        }
        let crl = parse_crl(&self.der).map_err(|_| Refusal::NotCrlSigner { issuer: issuer() })?;
        crl.verify_signature(cert.public_key())
            .map_err(|_| Refusal::BadSignature {
                class: String::new(),
                issuer: issuer(),
            })
    }

    /// Same issuer name and authority key identifier.
    fn same_scope(&self, other: &Crl) -> bool {
        self.issuer_raw == other.issuer_raw && self.aki == other.aki
    }

    /// Issued after `other` (thisUpdate, then cRLNumber).
    fn newer_than(&self, other: &Crl) -> bool {
        let key = |c: &Crl| (c.this_update, c.number.len(), c.number.clone());
        key(self) > key(other)
    }
}

/// Every `X509 CRL` block of `text`, each parsed; at least one. Other
/// block types are skipped; a malformed block anywhere refuses the text.
pub fn decode_pem(text: &[u8]) -> Result<Vec<Crl>, CrlError> {
    if text.len() > MAX_CRL_PEM_BYTES {
        return Err(CrlError::TooLarge {
            len: text.len(),
            max: MAX_CRL_PEM_BYTES,
        });
    }
    let mut out = Vec::new();
    for item in <(SectionKind, Vec<u8>)>::pem_slice_iter(text) {
        let (kind, der) = item.map_err(|e| CrlError::Pem(e.into()))?;
        if kind != SectionKind::Crl {
            continue;
        }
        if out.len() == MAX_CRLS {
            return Err(CrlError::TooMany { max: MAX_CRLS });
        }
        out.push(Crl::parse(der, out.len() + 1)?);
    }
    if out.is_empty() {
        return Err(CrlError::Missing);
    }
    Ok(out)
}

/// PEM text of `crls`, in order.
pub fn encode_pem(crls: &[Crl]) -> String {
    crls.iter().map(|c| pem_block(c.der())).collect()
}

fn pem_block(der: &[u8]) -> String {
    ca_proto::pem::encode(ca_proto::pem::Label::Crl, der)
}

/// The earliest nextUpdate of `crls`.
pub fn earliest_next_update(crls: &[Crl]) -> Option<i64> {
    crls.iter().map(|c| c.next_update).min()
}

/// The CA certificates of one class that may sign its CRLs: the pinned
/// roots, and certificates that chain to one of them.
#[derive(Debug, Clone)]
pub struct CaSet {
    class: String,
    roots: Vec<CertificateDer<'static>>,
    cas: Vec<CertificateDer<'static>>,
}

impl CaSet {
    /// The set of `class` with its pinned `roots`.
    pub fn new(class: &str, roots: Vec<CertificateDer<'static>>) -> CaSet {
        CaSet {
            class: class.to_owned(),
            cas: roots.clone(),
            roots,
        }
    }

    /// The class.
    pub fn class(&self) -> &str {
        &self.class
    }

    /// The pinned roots.
    pub fn roots(&self) -> &[CertificateDer<'static>] {
        &self.roots
    }

    /// Adds `cert` when it is a CA certificate that chains to a pinned root
    /// (validity judged at `now`). Returns whether it was added (a
    /// certificate already known, or one that does not chain, is not).
    pub fn add(&mut self, cert: &CertificateDer<'static>, now: i64) -> bool {
        if self.cas.contains(cert) || crate::verify::usable_ca(cert, Some(now)).is_err() {
            return false;
        }
        if crate::verify::build_path(cert, &[], &self.roots, Some(now)).is_err() {
            return false;
        }
        self.cas.push(cert.clone());
        true
    }

    /// Whether a certificate of the set carries `crl`'s issuer name.
    pub fn knows_issuer_of(&self, crl: &Crl) -> bool {
        self.cas.iter().any(|c| {
            parse_cert(c).is_some_and(|p| p.subject().as_raw() == crl.issuer_raw.as_slice())
        })
    }

    /// The intermediates and cross certificates added so far.
    pub fn added(&self) -> &[CertificateDer<'static>] {
        &self.cas[self.roots.len()..]
    }
}

/// Whether `crl` was signed by a CA certificate of `cas` and is usable by
/// rustls (see the module documentation).
pub fn verify(crl: &Crl, cas: &CaSet) -> Result<(), Refusal> {
    let class = cas.class.clone();
    let mut refusal = Refusal::UnknownIssuer {
        class: class.clone(),
        issuer: crl.issuer.clone(),
    };
    let mut verified = false;
    for ca in &cas.cas {
        let Some(cert) = parse_cert(ca) else { continue };
        if cert.subject().as_raw() != crl.issuer_raw.as_slice() {
            continue;
        }
        if let (Some(aki), Some(ski)) = (&crl.aki, key_identifier(&cert)) {
            if *aki != ski {
                if matches!(refusal, Refusal::UnknownIssuer { .. }) {
                    refusal = Refusal::BadSignature {
                        class: class.clone(),
                        issuer: crl.issuer.clone(),
                    };
                }
                continue;
            }
        }
        match crl.signed_by(ca) {
            Ok(()) => {
                verified = true;
                break;
            }
            Err(Refusal::BadSignature { issuer, .. }) => {
                if !matches!(refusal, Refusal::NotCrlSigner { .. }) {
                    refusal = Refusal::BadSignature {
                        class: class.clone(),
                        issuer,
                    };
                }
            }
            Err(other) => refusal = other,
        }
    }
    if !verified {
        return Err(refusal);
    }
    usable_by_rustls(crl, &cas.roots)
}

/// rustls (webpki) parses CRLs more strictly than x509-parser: what it
/// refuses would make the library's configuration fail to load.
fn usable_by_rustls(crl: &Crl, roots: &[CertificateDer<'static>]) -> Result<(), Refusal> {
    let unusable = |detail: String| Refusal::Unusable {
        issuer: crl.issuer.clone(),
        detail,
    };
    let mut store = rustls::RootCertStore::empty();
    for root in roots {
        store
            .add(root.clone())
            .map_err(|e| unusable(e.to_string()))?;
    }
    rustls::client::WebPkiServerVerifier::builder_with_provider(
        std::sync::Arc::new(store),
        crate::api::provider(),
    )
    .with_crls([crl.der.clone()])
    .build()
    .map(|_| ())
    .map_err(|e| unusable(e.to_string()))
}

/// What to install for one class ([`merge`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merged {
    /// The CRLs to install, in the served order (kept ones in the place of
    /// the served CRL they stand for).
    pub crls: Vec<Crl>,
    /// Served CRLs that were refused.
    pub refused: Vec<Refusal>,
    /// Installed CRLs kept in place of a refused or older served one.
    pub kept: usize,
}

/// The CRLs to install from the `served` ones (each with its verdict) and
/// the `installed` ones (see the module documentation).
pub fn merge(installed: &[Crl], served: Vec<(Crl, Result<(), Refusal>)>) -> Merged {
    let mut out: Vec<Crl> = Vec::new();
    let mut refused = Vec::new();
    let mut kept = 0;
    for (crl, verdict) in served {
        let candidate = match verdict {
            Ok(()) => match installed.iter().find(|i| i.same_scope(&crl)) {
                Some(old) if old.newer_than(&crl) => {
                    kept += 1;
                    old.clone()
                }
                _ => crl,
            },
            Err(why) => {
                refused.push(why);
                // By name only: a forged CRL carries another key identifier.
                match installed.iter().find(|i| i.issuer_raw == crl.issuer_raw) {
                    Some(old) => {
                        kept += 1;
                        old.clone()
                    }
                    None => continue,
                }
            }
        };
        match out.iter_mut().find(|o| o.same_scope(&candidate)) {
            Some(slot) => {
                if candidate.newer_than(slot) {
                    *slot = candidate;
                }
            }
            None => out.push(candidate),
        }
    }
    Merged {
        crls: out,
        refused,
        kept,
    }
}

/// The CRL of `crls` that lists the certificate `cert` (DER), if any.
pub fn revoking<'a>(crls: &'a [Crl], cert: &[u8]) -> Option<&'a Crl> {
    let parsed = parse_cert(cert)?;
    let serial = parsed.raw_serial();
    crls.iter().find(|c| c.lists(serial) && c.covers(cert))
}

#[cfg(test)]
pub(crate) mod testcrl {
    //! CRLs made with rcgen for the unit tests.

    use rcgen::{
        CertificateRevocationListParams, Issuer, KeyIdMethod, KeyPair, RevokedCertParams,
        SerialNumber,
    };

    /// A CRL signed by `issuer`, listing `serials` (DER INTEGER bytes),
    /// valid from `this_update` to `next_update` (Unix s).
    pub fn crl(
        issuer: &Issuer<'_, KeyPair>,
        serials: &[&[u8]],
        this_update: i64,
        next_update: i64,
        number: u64,
    ) -> Vec<u8> {
        let at = |t: i64| time::OffsetDateTime::from_unix_timestamp(t).expect("time");
        CertificateRevocationListParams {
            this_update: at(this_update),
            next_update: at(next_update),
            crl_number: SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs: serials
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(s),
                    revocation_time: at(this_update - 10),
                    reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(issuer)
        .expect("crl")
        .der()
        .to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::testcrl::crl;
    use super::*;
    use crate::pem::testca::TestCa;

    fn serial_of(der: &[u8]) -> Vec<u8> {
        parse_cert(der).expect("cert").raw_serial().to_vec()
    }

    fn leaf(ca: &TestCa) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().expect("key");
        let now = crate::unix_now();
        ca.leaf(&key, &["a.db.internal"], now - 60, now + 3600)
    }

    fn pem_of(ders: &[&[u8]]) -> String {
        ders.iter().map(|d| pem_block(d)).collect()
    }

    fn db_set(ca: &TestCa) -> CaSet {
        let mut set = CaSet::new("db", vec![ca.root_der.clone()]);
        assert!(set.add(&ca.int_der, crate::unix_now()));
        set
    }

    #[test]
    fn pem_round_trip_and_facts() {
        let ca = TestCa::new("db");
        let l = leaf(&ca);
        let now = crate::unix_now();
        let der = crl(ca.int_issuer(), &[&serial_of(&l)], now, now + 600, 7);
        let root_crl = crl(ca.root_issuer(), &[], now, now + 900, 1);
        let text = pem_of(&[&der, &root_crl]);
        assert!(text.starts_with("-----BEGIN X509 CRL-----\n"));
        let crls = decode_pem(text.as_bytes()).expect("decode");
        assert_eq!(crls.len(), 2);
        assert_eq!(encode_pem(&crls), text);
        assert_eq!(crls[0].this_update, now);
        assert_eq!(crls[0].next_update, now + 600);
        assert_eq!(crls[0].len(), 1);
        assert!(crls[0].lists(&serial_of(&l)));
        assert!(crls[0].lists_hex(&crate::pem::facts(&l).expect("f").serial));
        assert!(crls[0].covers(&l));
        assert!(
            !crls[1].covers(&l),
            "the root's CRL does not speak for leaves"
        );
        assert_eq!(earliest_next_update(&crls), Some(now + 600));
        assert_eq!(revoking(&crls, &l), Some(&crls[0]));
        assert_eq!(revoking(&crls, &leaf(&ca)), None);
    }

    #[test]
    fn garbage_and_limits_are_refused() {
        assert_eq!(decode_pem(b""), Err(CrlError::Missing));
        let cert_only = ca_proto::pem::encode(
            ca_proto::pem::Label::Certificate,
            &TestCa::new("x").root_der,
        );
        assert_eq!(decode_pem(cert_only.as_bytes()), Err(CrlError::Missing));
        let junk = pem_block(b"not a crl");
        assert!(matches!(
            decode_pem(junk.as_bytes()),
            Err(CrlError::Malformed { position: 1, .. })
        ));
        let broken = "-----BEGIN X509 CRL-----\n!!!!\n-----END X509 CRL-----\n";
        assert!(matches!(
            decode_pem(broken.as_bytes()),
            Err(CrlError::Pem(_))
        ));
        let unterminated = "-----BEGIN X509 CRL-----\nAAAA\n";
        assert!(decode_pem(unterminated.as_bytes()).is_err());
        let huge = vec![b'A'; MAX_CRL_PEM_BYTES + 1];
        assert!(matches!(decode_pem(&huge), Err(CrlError::TooLarge { .. })));
        let ca = TestCa::new("db");
        let now = crate::unix_now();
        let one = crl(ca.int_issuer(), &[], now, now + 60, 1);
        let many: String = (0..=MAX_CRLS).map(|_| pem_block(&one)).collect();
        assert_eq!(
            decode_pem(many.as_bytes()),
            Err(CrlError::TooMany { max: MAX_CRLS })
        );
    }

    #[test]
    fn verification_accepts_the_class_cas_and_refuses_others() {
        let db = TestCa::new("db");
        let api = TestCa::new("api");
        let now = crate::unix_now();
        let set = db_set(&db);

        // The intermediate's CRL and the root's CRL verify.
        let int_crl = Crl::parse(crl(db.int_issuer(), &[], now, now + 600, 1), 1).expect("p");
        let root_crl = Crl::parse(crl(db.root_issuer(), &[], now, now + 600, 1), 1).expect("p");
        assert_eq!(verify(&int_crl, &set), Ok(()));
        assert_eq!(verify(&root_crl, &set), Ok(()));

        // Wrong issuer: a CRL of another class.
        let other = Crl::parse(crl(api.int_issuer(), &[], now, now + 600, 1), 1).expect("p");
        let refused = verify(&other, &set).unwrap_err();
        assert!(
            matches!(&refused, Refusal::UnknownIssuer { class, .. } if class == "db"),
            "{refused}"
        );
        assert!(refused
            .to_string()
            .contains("no CA certificate of class 'db'"));

        // Unknown signer: the db intermediate's name, another key.
        let forged = TestCa::shaped("db", |_| {});
        let forged_crl =
            Crl::parse(crl(forged.int_issuer(), &[], now, now + 600, 1), 1).expect("p");
        let refused = verify(&forged_crl, &set).unwrap_err();
        assert!(matches!(refused, Refusal::BadSignature { .. }), "{refused}");

        // An intermediate this client has not seen: unknown until added.
        let roots_only = CaSet::new("db", vec![db.root_der.clone()]);
        assert!(matches!(
            verify(&int_crl, &roots_only),
            Err(Refusal::UnknownIssuer { .. })
        ));
        // An intermediate of another class is never added.
        let mut set2 = roots_only.clone();
        assert!(!set2.add(&api.int_der, now));
        assert!(set2.add(&db.int_der, now));
        assert!(!set2.add(&db.int_der, now), "added once");
        assert_eq!(set2.added(), std::slice::from_ref(&db.int_der));
    }

    #[test]
    fn an_issuer_without_crl_sign_is_refused() {
        let ca = TestCa::shaped("db", |p| {
            p.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
        });
        let now = crate::unix_now();
        let set = db_set(&ca);
        // rcgen refuses to sign a CRL with such an issuer description, so
        // sign with an issuer whose description has no key usages (same
        // key, same name).
        let der = crl(&ca.int_issuer_without_usages(), &[], now, now + 600, 1);
        let c = Crl::parse(der, 1).expect("p");
        assert!(matches!(
            verify(&c, &set),
            Err(Refusal::NotCrlSigner { .. })
        ));
    }

    #[test]
    fn merge_keeps_newer_and_verified_crls() {
        let ca = TestCa::new("db");
        let now = crate::unix_now();
        let p = |der: Vec<u8>| Crl::parse(der, 1).expect("parse");
        let old = p(crl(ca.int_issuer(), &[&[1]], now - 100, now + 500, 1));
        let new = p(crl(ca.int_issuer(), &[&[1], &[2]], now, now + 600, 2));
        let root = p(crl(ca.root_issuer(), &[], now, now + 600, 1));
        let refusal = Refusal::BadSignature {
            class: "db".into(),
            issuer: new.issuer.clone(),
        };

        // A newer verified CRL replaces the installed one.
        let m = merge(std::slice::from_ref(&old), vec![(new.clone(), Ok(()))]);
        assert_eq!(m.crls, vec![new.clone()]);
        assert_eq!(m.kept, 0);
        // An older one does not (a lagging replica).
        let m = merge(std::slice::from_ref(&new), vec![(old.clone(), Ok(()))]);
        assert_eq!(m.crls, vec![new.clone()]);
        assert_eq!(m.kept, 1);
        // A refused one leaves the installed one of its scope in place.
        let m = merge(
            std::slice::from_ref(&old),
            vec![(new.clone(), Err(refusal.clone())), (root.clone(), Ok(()))],
        );
        assert_eq!(m.crls, vec![old.clone(), root.clone()]);
        assert_eq!(m.refused, vec![refusal.clone()]);
        assert_eq!(m.kept, 1);
        // Nothing installed: a refused CRL is simply not installed.
        let m = merge(&[], vec![(new.clone(), Err(refusal))]);
        assert!(m.crls.is_empty());
        // A scope no longer served is dropped; duplicates keep the newest.
        let m = merge(
            &[old.clone(), root.clone()],
            vec![(old.clone(), Ok(())), (new.clone(), Ok(()))],
        );
        assert_eq!(m.crls, vec![new]);
    }
}
