//! The certificate facts the client needs: the certificates of PEM text
//! (each one parsed as X.509), validity, serial, public key, SHA-256
//! fingerprint, and "was this signed by that".
//!
//! PEM itself is `ca_proto::pem` (encoding, and the strict decoder over
//! `rustls_pki_types::pem`); X.509 parsing and signature checks use
//! x509-parser with its ring-backed `verify` feature.

use ca_proto::pem::{decode_all, Label, Limits};
use rustls_pki_types::CertificateDer;
use sha2::{Digest, Sha256};
use thiserror::Error;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Why PEM or DER input was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PemError {
    /// The PEM text holds no `CERTIFICATE` block, or is malformed.
    #[error(transparent)]
    Pem(#[from] ca_proto::pem::PemError),
    /// A certificate does not parse as X.509.
    #[error("malformed certificate: {0}")]
    BadCertificate(String),
}

/// Every `CERTIFICATE` block of `pem`, in order (other block types are
/// skipped), each parsed as X.509. At least one is required.
pub fn parse_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let mut out = Vec::new();
    for der in decode_all(pem, Label::Certificate, &Limits::DEFAULT)? {
        facts(&der)?;
        out.push(CertificateDer::from(der));
    }
    Ok(out)
}

/// Lowercase hex SHA-256 of a DER object.
pub fn sha256_hex(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// What the client needs to know about a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFacts {
    /// Start of validity, Unix seconds.
    pub not_before: i64,
    /// End of validity, Unix seconds.
    pub not_after: i64,
    /// Serial number, lowercase hex, without a leading zero byte.
    pub serial: String,
    /// The subject public key bits (EC point, Ed25519 key, PKCS#1 RSA key).
    pub public_key: Vec<u8>,
    /// Subject DN, RFC 4514-ish text (for logs).
    pub subject: String,
    /// Issuer DN (for logs).
    pub issuer: String,
}

impl CertFacts {
    /// Lifetime in seconds (0 if notAfter is before notBefore).
    pub fn lifetime(&self) -> i64 {
        (self.not_after - self.not_before).max(0)
    }
}

fn parse(der: &[u8]) -> Result<X509Certificate<'_>, PemError> {
    match X509Certificate::from_der(der) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err(PemError::BadCertificate(
            "trailing bytes after certificate".into(),
        )),
        Err(e) => Err(PemError::BadCertificate(e.to_string())),
    }
}

/// Facts about one DER certificate.
pub fn facts(der: &[u8]) -> Result<CertFacts, PemError> {
    let cert = parse(der)?;
    let raw = cert.raw_serial();
    let serial = match raw {
        [0, rest @ ..] if !rest.is_empty() => hex::encode(rest),
        _ => hex::encode(raw),
    };
    Ok(CertFacts {
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        serial,
        public_key: cert.public_key().subject_public_key.data.to_vec(),
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
    })
}

/// Whether `child` names `issuer`'s subject as its issuer and its signature
/// verifies with `issuer`'s public key. Unparseable input is `false`.
pub fn issued_by(child: &[u8], issuer: &[u8]) -> bool {
    let (Ok(child), Ok(issuer)) = (parse(child), parse(issuer)) else {
        return false;
    };
    child.issuer().as_raw() == issuer.subject().as_raw()
        && child.verify_signature(Some(issuer.public_key())).is_ok()
}

/// Whether `leaf` chains to one of `roots` through `intermediates`: the
/// bounded path builder of [`crate::verify::build_path`], with time not
/// judged (the renewal decision does that).
pub fn chains_to(
    leaf: &[u8],
    intermediates: &[CertificateDer<'_>],
    roots: &[CertificateDer<'_>],
) -> bool {
    crate::verify::build_path(leaf, intermediates, roots, None).is_ok()
}

#[cfg(test)]
pub(crate) mod testca {
    //! A throwaway CA hierarchy for unit tests (root → intermediate → leaf),
    //! built with rcgen in memory.

    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    use rustls_pki_types::CertificateDer;

    pub struct TestCa {
        pub root_der: CertificateDer<'static>,
        pub int_der: CertificateDer<'static>,
        int_issuer: Issuer<'static, KeyPair>,
        root_issuer: Issuer<'static, KeyPair>,
        int_params: CertificateParams,
        int_key_pem: String,
    }

    impl TestCa {
        pub fn new(name: &str) -> TestCa {
            TestCa::shaped(name, |_| {})
        }

        /// A hierarchy whose intermediate's parameters pass through `shape`
        /// before it is signed.
        pub fn shaped(name: &str, shape: impl FnOnce(&mut CertificateParams)) -> TestCa {
            let root_key = KeyPair::generate().expect("root key");
            let mut root = CertificateParams::new(Vec::<String>::new()).expect("params");
            root.distinguished_name
                .push(DnType::CommonName, format!("{name} root"));
            root.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            root.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            let root_cert = root.self_signed(&root_key).expect("root");
            let root_issuer = Issuer::new(root, root_key);

            let int_key = KeyPair::generate().expect("int key");
            let mut int = CertificateParams::new(Vec::<String>::new()).expect("params");
            int.distinguished_name
                .push(DnType::CommonName, format!("{name} intermediate"));
            int.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            int.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            int.use_authority_key_identifier_extension = true;
            shape(&mut int);
            let int_cert = int.signed_by(&int_key, &root_issuer).expect("int");
            TestCa {
                root_der: root_cert.der().clone(),
                int_der: int_cert.der().clone(),
                int_params: int.clone(),
                int_key_pem: int_key.serialize_pem(),
                int_issuer: Issuer::new(int, int_key),
                root_issuer,
            }
        }

        /// The intermediate as an issuer (certificates, CRLs).
        pub fn int_issuer(&self) -> &Issuer<'static, KeyPair> {
            &self.int_issuer
        }

        /// The root as an issuer (the root-signed CRL).
        pub fn root_issuer(&self) -> &Issuer<'static, KeyPair> {
            &self.root_issuer
        }

        /// The intermediate's key and name, with no key usages in the
        /// issuer description (so rcgen signs CRLs whatever the
        /// certificate says).
        pub fn int_issuer_without_usages(&self) -> Issuer<'static, KeyPair> {
            let mut params = self.int_params.clone();
            params.key_usages = Vec::new();
            Issuer::new(
                params,
                KeyPair::from_pem(&self.int_key_pem).expect("int key"),
            )
        }

        /// `params` for `key`, signed by the intermediate.
        pub fn sign(&self, key: &KeyPair, params: CertificateParams) -> CertificateDer<'static> {
            params
                .signed_by(key, &self.int_issuer)
                .expect("leaf")
                .der()
                .clone()
        }

        /// A leaf for `key` valid from `not_before` to `not_after` (Unix s).
        pub fn leaf(
            &self,
            key: &KeyPair,
            names: &[&str],
            not_before: i64,
            not_after: i64,
        ) -> CertificateDer<'static> {
            let mut p =
                CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                    .expect("params");
            p.not_before = time::OffsetDateTime::from_unix_timestamp(not_before).expect("nb");
            p.not_after = time::OffsetDateTime::from_unix_timestamp(not_after).expect("na");
            p.use_authority_key_identifier_extension = true;
            let mut serial = [0u8; 16];
            getrandom::getrandom(&mut serial).expect("rand");
            serial[0] = (serial[0] & 0x7f) | 1;
            p.serial_number = Some(serial.to_vec().into());
            p.extended_key_usages = vec![
                rcgen::ExtendedKeyUsagePurpose::ServerAuth,
                rcgen::ExtendedKeyUsagePurpose::ClientAuth,
            ];
            p.signed_by(key, &self.int_issuer)
                .expect("leaf")
                .der()
                .clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testca::TestCa;
    use super::*;

    #[test]
    fn pem_round_trip_and_facts() {
        let ca = TestCa::new("t");
        let key = rcgen::KeyPair::generate().expect("key");
        let leaf = ca.leaf(&key, &["a.db.internal"], 1_700_000_000, 1_700_086_400);
        let text = ca_proto::pem::encode_all(Label::Certificate, [&leaf, &ca.int_der]);
        let back = parse_certs(text.as_bytes()).expect("parse");
        assert_eq!(back, vec![leaf.clone(), ca.int_der.clone()]);
        let f = facts(&leaf).expect("facts");
        assert_eq!(f.not_before, 1_700_000_000);
        assert_eq!(f.not_after, 1_700_086_400);
        assert_eq!(f.lifetime(), 86_400);
        assert_eq!(f.serial.len(), 32);
        assert_eq!(f.public_key, rcgen::PublicKeyData::der_bytes(&key));
    }

    #[test]
    fn parse_rejects_garbage() {
        let none = Err(PemError::Pem(ca_proto::pem::PemError::Missing(
            Label::Certificate,
        )));
        assert_eq!(parse_certs(b""), none);
        assert_eq!(
            parse_certs(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"),
            none
        );
        let bad = ca_proto::pem::encode(Label::Certificate, b"not der");
        assert!(matches!(
            parse_certs(bad.as_bytes()),
            Err(PemError::BadCertificate(_))
        ));
    }

    #[test]
    fn chain_checks() {
        let ca = TestCa::new("a");
        let other = TestCa::new("b");
        let key = rcgen::KeyPair::generate().expect("key");
        let leaf = ca.leaf(&key, &["x.db.internal"], 1_700_000_000, 1_700_086_400);
        assert!(issued_by(&leaf, &ca.int_der));
        assert!(issued_by(&ca.int_der, &ca.root_der));
        assert!(!issued_by(&leaf, &other.int_der));
        let ints = [ca.int_der.clone()];
        assert!(chains_to(&leaf, &ints, std::slice::from_ref(&ca.root_der)));
        assert!(!chains_to(
            &leaf,
            &ints,
            std::slice::from_ref(&other.root_der)
        ));
        assert!(!chains_to(&leaf, &[], std::slice::from_ref(&ca.root_der)));
        assert!(chains_to(
            &leaf,
            &ints,
            &[other.root_der.clone(), ca.root_der.clone()]
        ));
    }
}
