//! The CSR's CertificationRequestInfo walked in strict DER, for what
//! x509-parser does not check: version v1, at most one extensionRequest
//! attribute (PKCS#9, or Microsoft's legacy OID, which x509-parser does not
//! read at all), holding exactly one value, and no extension named twice in
//! it. x509-parser keeps only the first extensionRequest and the first
//! value of its SET, so without this a second one could carry `CA:TRUE` or
//! a SAN past the policy unseen.

use super::der::{self, DerError, Reader};
use super::spki::describe_oid;
use std::collections::BTreeSet;

/// 1.2.840.113549.1.9.14 (PKCS#9 extensionRequest)
pub const OID_PKCS9_EXTENSION_REQUEST: &[u8] =
    &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x0e];
/// 1.3.6.1.4.1.311.2.1.14 (Microsoft's legacy extension request)
pub const OID_MS_EXTENSION_REQUEST: &[u8] =
    &[0x2b, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37, 0x02, 0x01, 0x0e];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttributeError {
    #[error("CertificationRequestInfo is not DER: {0}")]
    Der(#[from] DerError),
    #[error("CSR version is not v1 (0)")]
    Version,
    #[error("CSR carries {0} extensionRequest attributes; at most one is allowed")]
    TooManyExtensionRequests(usize),
    #[error("CSR extensionRequest attribute holds {0} values; exactly one is allowed")]
    ExtensionRequestValues(usize),
    #[error("CSR extensionRequest is not a SEQUENCE of extensions: {0}")]
    Extension(DerError),
    #[error("CSR extensionRequest has an extension whose critical flag is not a DER BOOLEAN")]
    CriticalFlag,
    #[error("CSR extensionRequest names extension {0} more than once")]
    RepeatedExtension(String),
}

/// Check the CertificationRequestInfo (DER, as signed) and return the DER
/// of its one `Extensions` SEQUENCE, if it requests extensions.
pub fn extension_request(cri_der: &[u8]) -> Result<Option<&[u8]>, AttributeError> {
    let cri = der::single(cri_der, der::SEQUENCE)?;
    let mut fields = Reader::new(cri.content);
    let version = fields.expect(der::INTEGER)?;
    if version.content != [0] {
        return Err(AttributeError::Version);
    }
    fields.expect(der::SEQUENCE)?; // subject
    fields.expect(der::SEQUENCE)?; // subjectPKInfo
    let attributes = fields.expect(der::CONTEXT_0)?;
    fields.finish()?;

    let mut found = None;
    let mut count = 0usize;
    let mut attributes = Reader::new(attributes.content);
    while !attributes.is_empty() {
        let attribute = attributes.expect(der::SEQUENCE)?;
        let mut parts = Reader::new(attribute.content);
        let oid = der::expect_oid(&mut parts)?;
        let values = parts.expect(der::SET)?;
        parts.finish()?;
        if oid.content != OID_PKCS9_EXTENSION_REQUEST && oid.content != OID_MS_EXTENSION_REQUEST {
            continue;
        }
        count += 1;
        let mut values = Reader::new(values.content);
        let mut value = None;
        let mut n = 0usize;
        while !values.is_empty() {
            value = Some(values.any()?);
            n += 1;
        }
        let value = match (n, value) {
            (1, Some(v)) => v,
            _ => return Err(AttributeError::ExtensionRequestValues(n)),
        };
        check_extensions(value)?;
        found = Some(value.raw);
    }
    if count > 1 {
        return Err(AttributeError::TooManyExtensionRequests(count));
    }
    Ok(found)
}

/// `Extensions ::= SEQUENCE OF Extension`, each
/// `SEQUENCE { extnID OID, critical BOOLEAN DEFAULT FALSE, extnValue OCTET STRING }`,
/// no extnID twice.
fn check_extensions(value: der::Tlv<'_>) -> Result<(), AttributeError> {
    let bad = AttributeError::Extension;
    if value.tag != der::SEQUENCE {
        return Err(bad(DerError::UnexpectedTag {
            expected: der::SEQUENCE,
            found: value.tag,
        }));
    }
    let mut seen = BTreeSet::new();
    let mut extensions = Reader::new(value.content);
    while !extensions.is_empty() {
        let extension = extensions.expect(der::SEQUENCE).map_err(bad)?;
        let mut parts = Reader::new(extension.content);
        let oid = der::expect_oid(&mut parts).map_err(bad)?;
        if let Some(critical) = parts.optional(der::BOOLEAN).map_err(bad)? {
            if critical.content != [0x00] && critical.content != [0xff] {
                return Err(AttributeError::CriticalFlag);
            }
        }
        parts.expect(der::OCTET_STRING).map_err(bad)?;
        parts.finish().map_err(bad)?;
        if !seen.insert(oid.content) {
            return Err(AttributeError::RepeatedExtension(describe_oid(oid.content)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        assert!(content.len() < 0x80);
        [vec![tag, content.len() as u8], content.to_vec()].concat()
    }

    const SAN: &[u8] = &[0x55, 0x1d, 0x11];
    const BC: &[u8] = &[0x55, 0x1d, 0x13];

    fn extension(oid: &[u8], critical: bool, value: &[u8]) -> Vec<u8> {
        let mut content = tlv(der::OID, oid);
        if critical {
            content.extend(tlv(der::BOOLEAN, &[0xff]));
        }
        content.extend(tlv(der::OCTET_STRING, value));
        tlv(der::SEQUENCE, &content)
    }

    fn ext_request(oid: &[u8], values: &[Vec<u8>]) -> Vec<u8> {
        tlv(
            der::SEQUENCE,
            &[tlv(der::OID, oid), tlv(der::SET, &values.concat())].concat(),
        )
    }

    fn extensions(list: &[Vec<u8>]) -> Vec<u8> {
        tlv(der::SEQUENCE, &list.concat())
    }

    fn cri(attributes: &[Vec<u8>]) -> Vec<u8> {
        let subject = tlv(der::SEQUENCE, &[]);
        let spki = tlv(der::SEQUENCE, &[]); // not looked at here
        tlv(
            der::SEQUENCE,
            &[
                tlv(der::INTEGER, &[0]),
                subject,
                spki,
                tlv(der::CONTEXT_0, &attributes.concat()),
            ]
            .concat(),
        )
    }

    fn ca_true() -> Vec<u8> {
        extension(BC, true, &[0x30, 0x03, 0x01, 0x01, 0xff])
    }

    fn san() -> Vec<u8> {
        extension(SAN, false, &[0x30, 0x03, 0x82, 0x01, b'x'])
    }

    #[test]
    fn one_extension_request_is_returned() {
        let exts = extensions(&[san(), ca_true()]);
        let der = cri(&[ext_request(
            OID_PKCS9_EXTENSION_REQUEST,
            std::slice::from_ref(&exts),
        )]);
        assert_eq!(extension_request(&der), Ok(Some(&exts[..])));
        let der = cri(&[ext_request(
            OID_MS_EXTENSION_REQUEST,
            std::slice::from_ref(&exts),
        )]);
        assert_eq!(extension_request(&der), Ok(Some(&exts[..])));
        // other attributes are fine, and no attributes at all
        let challenge = tlv(
            der::SEQUENCE,
            &[
                tlv(
                    der::OID,
                    &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x07],
                ),
                tlv(der::SET, &tlv(0x0c, b"pw")),
            ]
            .concat(),
        );
        let der = cri(&[
            challenge.clone(),
            ext_request(OID_PKCS9_EXTENSION_REQUEST, std::slice::from_ref(&exts)),
        ]);
        assert_eq!(extension_request(&der), Ok(Some(&exts[..])));
        assert_eq!(extension_request(&cri(&[challenge])), Ok(None));
        assert_eq!(extension_request(&cri(&[])), Ok(None));
    }

    #[test]
    fn a_second_extension_request_is_refused() {
        let first = ext_request(OID_PKCS9_EXTENSION_REQUEST, &[extensions(&[san()])]);
        for second_oid in [OID_PKCS9_EXTENSION_REQUEST, OID_MS_EXTENSION_REQUEST] {
            for second in [extensions(&[ca_true()]), extensions(&[san()])] {
                let der = cri(&[first.clone(), ext_request(second_oid, &[second])]);
                assert_eq!(
                    extension_request(&der),
                    Err(AttributeError::TooManyExtensionRequests(2))
                );
            }
        }
    }

    #[test]
    fn an_extension_request_holds_exactly_one_value() {
        let der = cri(&[ext_request(
            OID_PKCS9_EXTENSION_REQUEST,
            &[extensions(&[san()]), extensions(&[ca_true()])],
        )]);
        assert_eq!(
            extension_request(&der),
            Err(AttributeError::ExtensionRequestValues(2))
        );
        let der = cri(&[ext_request(OID_PKCS9_EXTENSION_REQUEST, &[])]);
        assert_eq!(
            extension_request(&der),
            Err(AttributeError::ExtensionRequestValues(0))
        );
    }

    #[test]
    fn a_repeated_extension_is_refused() {
        let der = cri(&[ext_request(
            OID_PKCS9_EXTENSION_REQUEST,
            &[extensions(&[
                san(),
                extension(BC, false, &[0x30, 0x00]),
                ca_true(),
            ])],
        )]);
        assert_eq!(
            extension_request(&der),
            Err(AttributeError::RepeatedExtension("2.5.29.19".into()))
        );
        let der = cri(&[ext_request(
            OID_PKCS9_EXTENSION_REQUEST,
            &[extensions(&[san(), san()])],
        )]);
        assert_eq!(
            extension_request(&der),
            Err(AttributeError::RepeatedExtension("2.5.29.17".into()))
        );
    }

    #[test]
    fn malformed_structures_are_refused() {
        let bad_flag = tlv(
            der::SEQUENCE,
            &[
                tlv(der::OID, BC),
                tlv(der::BOOLEAN, &[0x01]),
                tlv(der::OCTET_STRING, &[0x30, 0]),
            ]
            .concat(),
        );
        let der = cri(&[ext_request(
            OID_PKCS9_EXTENSION_REQUEST,
            &[extensions(&[bad_flag])],
        )]);
        assert_eq!(extension_request(&der), Err(AttributeError::CriticalFlag));
        let not_a_sequence = tlv(der::SET, &san());
        let der = cri(&[ext_request(OID_PKCS9_EXTENSION_REQUEST, &[not_a_sequence])]);
        assert!(matches!(
            extension_request(&der),
            Err(AttributeError::Extension(_))
        ));
        let mut v1 = cri(&[]);
        v1[4] = 1; // version INTEGER content
        assert_eq!(extension_request(&v1), Err(AttributeError::Version));
        let good = cri(&[ext_request(
            OID_PKCS9_EXTENSION_REQUEST,
            &[extensions(&[san()])],
        )]);
        for cut in 0..good.len() {
            assert!(extension_request(&good[..cut]).is_err(), "cut at {cut}");
        }
    }
}
