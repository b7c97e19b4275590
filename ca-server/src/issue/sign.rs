//! Step *sign*: the HSM signs the built certificate with the class's active
//! intermediate. Runs on a signing-pool thread, which owns the session.
//!
//! Only the authority (`issue`) can sign, and only what [`Built`] holds,
//! which only `build::leaf_params` makes from a `policies::Grant`; neither
//! the signer nor the builder is reachable from outside:
//!
//! ```compile_fail
//! use ca_server::issue::sign::sign_leaf;
//! ```
//!
//! ```compile_fail
//! use ca_server::issue::build::leaf_params;
//! ```

use super::build::Built;
use crate::hierarchy::IssuingCa;
use hsm::{HsmError, HsmSigningKey, PoolSession};
use rcgen::{CertificateParams, Issuer, SubjectPublicKeyInfo};
use rustls_pki_types::CertificateDer;

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error(transparent)]
    Hsm(#[from] HsmError),
    #[error("certificate could not be encoded: {0}")]
    Encode(String),
}

/// A signed leaf, not yet recorded: its bytes stay inside the issuing
/// module until the log append succeeded.
pub(crate) struct Signed {
    der: Vec<u8>,
}

impl Signed {
    pub(super) fn der(&self) -> &[u8] {
        &self.der
    }

    pub(super) fn into_der(self) -> Vec<u8> {
        self.der
    }
}

/// Sign what [`Built`] holds (made only from a grant) for `subject_key`.
pub(super) fn sign_leaf(
    class: &str,
    session: &mut PoolSession,
    issuer: &IssuingCa,
    built: &Built,
    subject_key: &SubjectPublicKeyInfo,
) -> Result<Signed, SignError> {
    let params = &built.params;
    let signer = HsmSigningKey::new(session, &issuer.key);
    let rcgen_issuer = match &issuer.issuer_fields {
        Some(fields) => Issuer::from_params(fields, &signer),
        None => {
            Issuer::from_ca_cert_der(&CertificateDer::from(issuer.cert_der.as_slice()), &signer)
                .map_err(|e| SignError::Encode(e.to_string()))?
        }
    };
    let started = std::time::Instant::now();
    let signed = params.signed_by(subject_key, &rcgen_issuer);
    let metrics = crate::metrics::metrics();
    match signed {
        Ok(cert) => {
            metrics
                .hsm_sign_seconds
                .with_label_values(&[class])
                .observe(started.elapsed().as_secs_f64());
            Ok(Signed {
                der: cert.der().to_vec(),
            })
        }
        Err(e) => Err(match signer.take_error() {
            Some(hsm) => {
                let kind = hsm.rv_name();
                metrics.hsm_errors.with_label_values(&[kind.as_str()]).inc();
                metrics
                    .hsm_failure_epoch
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                SignError::Hsm(hsm)
            }
            None => SignError::Encode(e.to_string()),
        }),
    }
}

/// What rcgen reads from an intermediate to sign under it (its subject,
/// key identifier and key usages), read once when the intermediate is
/// loaded instead of on every signature (`Issuer::from_ca_cert_der` parses
/// the whole certificate: 3.5% of a signing thread's time).
///
/// rcgen 0.14 keeps its own reading private, so the fields are read here
/// the same way, and kept only if a certificate signed under them is
/// byte for byte the one signed under rcgen's own reading (checked with a
/// throwaway Ed25519 key, whose signatures are deterministic). Otherwise
/// `None`: every signature reads the intermediate as before.
pub(crate) fn issuer_fields(cert_der: &[u8]) -> Option<CertificateParams> {
    let fields = read_issuer_fields(cert_der)?;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).ok()?;
    let subject = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).ok()?;
    let mut leaf = CertificateParams::new(vec!["fields.check.invalid".to_string()]).ok()?;
    leaf.serial_number = Some(rcgen::SerialNumber::from_slice(&[1]));
    let theirs = Issuer::from_ca_cert_der(&CertificateDer::from(cert_der), &key).ok()?;
    let ours = Issuer::from_params(&fields, &key);
    let a = leaf.signed_by(&subject, &theirs).ok()?;
    let b = leaf.signed_by(&subject, &ours).ok()?;
    (a.der() == b.der()).then_some(fields)
}

fn read_issuer_fields(cert_der: &[u8]) -> Option<CertificateParams> {
    use rcgen::string::{BmpString, UniversalString};
    use rcgen::{DnType, DnValue, KeyIdMethod, KeyUsagePurpose};
    use x509_parser::der_parser::asn1_rs::Tag;
    use x509_parser::extensions::ParsedExtension;
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der).ok()?;
    let mut fields = CertificateParams::default();
    // The default name holds a common name already: pushed into it, the
    // intermediate's common name would take that first place, whatever its
    // place in the intermediate (ours put it after O and OU).
    fields.distinguished_name = rcgen::DistinguishedName::new();
    for rdn in cert.subject().iter() {
        let mut attributes = rdn.iter();
        let attr = attributes.next()?;
        if attributes.next().is_some() {
            return None;
        }
        let oid: Vec<u64> = attr.attr_type().iter()?.collect();
        let data = attr.attr_value().data;
        let text = || std::str::from_utf8(data).ok();
        let value = match attr.attr_value().header.tag() {
            Tag::BmpString => DnValue::BmpString(BmpString::from_utf16be(data.to_vec()).ok()?),
            Tag::Ia5String => DnValue::Ia5String(text()?.try_into().ok()?),
            Tag::PrintableString => DnValue::PrintableString(text()?.try_into().ok()?),
            Tag::T61String => DnValue::TeletexString(text()?.try_into().ok()?),
            Tag::UniversalString => {
                DnValue::UniversalString(UniversalString::from_utf32be(data.to_vec()).ok()?)
            }
            Tag::Utf8String => DnValue::Utf8String(text()?.to_owned()),
            _ => return None,
        };
        fields
            .distinguished_name
            .push(DnType::from_oid(&oid), value);
    }
    fields.key_identifier_method = KeyIdMethod::Sha256;
    for ext in cert.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(id) => {
                fields.key_identifier_method = KeyIdMethod::PreSpecified(id.0.to_vec());
            }
            ParsedExtension::KeyUsage(ku) => {
                let flags = [
                    (ku.digital_signature(), KeyUsagePurpose::DigitalSignature),
                    (ku.non_repudiation(), KeyUsagePurpose::ContentCommitment),
                    (ku.key_encipherment(), KeyUsagePurpose::KeyEncipherment),
                    (ku.data_encipherment(), KeyUsagePurpose::DataEncipherment),
                    (ku.key_agreement(), KeyUsagePurpose::KeyAgreement),
                    (ku.key_cert_sign(), KeyUsagePurpose::KeyCertSign),
                    (ku.crl_sign(), KeyUsagePurpose::CrlSign),
                    (ku.encipher_only(), KeyUsagePurpose::EncipherOnly),
                    (ku.decipher_only(), KeyUsagePurpose::DecipherOnly),
                ];
                fields.key_usages = flags
                    .into_iter()
                    .filter_map(|(set, usage)| set.then_some(usage))
                    .collect();
            }
            _ => {}
        }
    }
    Some(fields)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, DnType, DnValue, IsCa, KeyPair, KeyUsagePurpose};

    fn intermediate(dn: &[(DnType, DnValue)], usages: Vec<KeyUsagePurpose>) -> (KeyPair, Vec<u8>) {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        for (ty, value) in dn {
            params.distinguished_name.push(ty.clone(), value.clone());
        }
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = usages;
        let der = params.self_signed(&key).unwrap().der().to_vec();
        (key, der)
    }

    /// A leaf signed by the intermediate's own key, under the fields read
    /// once and under rcgen's reading: the same certificate, issuer name
    /// and authority key identifier included.
    fn same_leaf(key: &KeyPair, der: &[u8], fields: &CertificateParams) {
        let mut leaf = CertificateParams::new(vec!["leaf.test".to_string()]).unwrap();
        leaf.serial_number = Some(rcgen::SerialNumber::from_slice(&[7]));
        let subject = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let theirs = Issuer::from_ca_cert_der(&CertificateDer::from(der), key).unwrap();
        let a = leaf.signed_by(&subject, &theirs).unwrap();
        let b = leaf
            .signed_by(&subject, &Issuer::from_params(fields, key))
            .unwrap();
        let tbs = |der: &[u8]| {
            let (_, c) = x509_parser::parse_x509_certificate(der).unwrap();
            c.tbs_certificate.as_ref().to_vec()
        };
        assert_eq!(tbs(a.der()), tbs(b.der()));
        let (_, leaf) = x509_parser::parse_x509_certificate(b.der()).unwrap();
        let (_, ca) = x509_parser::parse_x509_certificate(der).unwrap();
        assert_eq!(leaf.issuer().as_raw(), ca.subject().as_raw());
    }

    #[test]
    fn the_fields_read_once_sign_what_reading_each_time_would() {
        let names: Vec<Vec<(DnType, DnValue)>> = vec![
            vec![(
                DnType::CommonName,
                DnValue::Utf8String("Trellis db intermediate".into()),
            )],
            vec![
                (
                    DnType::CountryName,
                    DnValue::PrintableString("DE".try_into().unwrap()),
                ),
                (
                    DnType::OrganizationName,
                    DnValue::Utf8String("Ümlaut GmbH".into()),
                ),
                (
                    DnType::CustomDnType(vec![0, 9, 2342, 19200300, 100, 1, 25]),
                    DnValue::Ia5String("example".try_into().unwrap()),
                ),
                (
                    DnType::CommonName,
                    DnValue::BmpString("BMP name".try_into().unwrap()),
                ),
            ],
        ];
        for dn in &names {
            for usages in [
                vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign],
                vec![],
            ] {
                let (key, der) = intermediate(dn, usages);
                let fields = issuer_fields(&der).expect("fields are read");
                same_leaf(&key, &der, &fields);
            }
        }
    }

    /// The intermediates the server makes itself (`hierarchy::create`:
    /// O, OU, then CN) are read once: the check above does not send them
    /// down the slow path.
    #[test]
    fn the_servers_own_intermediates_are_read_once() {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let shape = crate::hierarchy::CaShape {
            algorithm: hsm::KeyAlgorithm::EcP256,
            organization: "Trellis (development)".to_string(),
            root_days: 3650,
            intermediate_days: 365,
        };
        let now = time::OffsetDateTime::now_utc();
        let mut params = crate::hierarchy::ca_params("db", &shape, now).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "Trellis db intermediate 20261206-06ba");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.use_authority_key_identifier_extension = true;
        let der = params.self_signed(&key).unwrap().der().to_vec();
        let fields = issuer_fields(&der).expect("the server's own intermediate is read once");
        same_leaf(&key, &der, &fields);
    }

    #[test]
    fn what_is_not_a_certificate_has_no_fields_and_is_read_on_every_signature() {
        // (The lint tests sign with `issuer_fields: None`: that path.)
        assert!(issuer_fields(b"not a certificate").is_none());
    }
}
