//! A certificate's fields for people, decoded with x509-parser: subject,
//! issuer, serial, validity, names, key, signature algorithm, usages,
//! basic constraints, key identifiers, CRL distribution points and the
//! SHA-256 fingerprint. Only what the certificate says; nothing is
//! verified here.

use super::html::esc;
use sha2::{Digest, Sha256};
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::objects::{oid2sn, oid_registry};

/// `(field, value)` rows, values as plain text.
pub fn fields(der: &[u8]) -> Result<Vec<(&'static str, String)>, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| e.to_string())?;
    let mut out = vec![
        ("Subject", cert.subject().to_string()),
        ("Issuer", cert.issuer().to_string()),
        ("Serial", cert.raw_serial_as_string().replace(':', "")),
        (
            "Not before",
            cert.validity().not_before.to_datetime().to_string(),
        ),
        (
            "Not after",
            cert.validity().not_after.to_datetime().to_string(),
        ),
        (
            "Public key",
            crate::issue::decode::key_algorithm(cert.public_key()).to_string(),
        ),
        (
            "SPKI SHA-256",
            hex::encode(Sha256::digest(cert.public_key().raw)),
        ),
        (
            "Signature",
            oid2sn(&cert.signature_algorithm.algorithm, oid_registry())
                .map(str::to_string)
                .unwrap_or_else(|_| cert.signature_algorithm.algorithm.to_id_string()),
        ),
    ];
    for ext in cert.extensions() {
        let critical = if ext.critical { " (critical)" } else { "" };
        let row = match ext.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(san) => Some((
                "Names",
                san.general_names
                    .iter()
                    .map(name)
                    .collect::<Vec<_>>()
                    .join(", "),
            )),
            ParsedExtension::KeyUsage(ku) => Some(("Key usage", format!("{ku}{critical}"))),
            ParsedExtension::ExtendedKeyUsage(eku) => {
                let mut uses = Vec::new();
                for (set, label) in [
                    (eku.server_auth, "serverAuth"),
                    (eku.client_auth, "clientAuth"),
                    (eku.code_signing, "codeSigning"),
                    (eku.email_protection, "emailProtection"),
                    (eku.time_stamping, "timeStamping"),
                    (eku.ocsp_signing, "OCSPSigning"),
                    (eku.any, "any"),
                ] {
                    if set {
                        uses.push(label.to_string());
                    }
                }
                uses.extend(eku.other.iter().map(|o| o.to_id_string()));
                Some((
                    "Extended key usage",
                    format!("{}{critical}", uses.join(", ")),
                ))
            }
            ParsedExtension::BasicConstraints(bc) => Some((
                "Basic constraints",
                format!(
                    "CA:{}{}{critical}",
                    if bc.ca { "TRUE" } else { "FALSE" },
                    bc.path_len_constraint
                        .map(|n| format!(", pathlen {n}"))
                        .unwrap_or_default()
                ),
            )),
            ParsedExtension::SubjectKeyIdentifier(ski) => {
                Some(("Subject key id", hex::encode(ski.0)))
            }
            ParsedExtension::AuthorityKeyIdentifier(aki) => Some((
                "Authority key id",
                aki.key_identifier
                    .as_ref()
                    .map(|k| hex::encode(k.0))
                    .unwrap_or_default(),
            )),
            ParsedExtension::CRLDistributionPoints(points) => Some((
                "CRL distribution points",
                points
                    .points
                    .iter()
                    .filter_map(|p| p.distribution_point.as_ref())
                    .map(|p| format!("{p:?}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            )),
            _ => None,
        };
        out.extend(row);
    }
    out.push(("SHA-256 fingerprint", hex::encode(Sha256::digest(der))));
    Ok(out)
}

fn name(n: &GeneralName<'_>) -> String {
    match n {
        GeneralName::DNSName(d) => format!("DNS:{d}"),
        GeneralName::URI(u) => format!("URI:{u}"),
        GeneralName::IPAddress(b) => match b.len() {
            4 => <[u8; 4]>::try_from(*b)
                .map(|a| format!("IP:{}", std::net::IpAddr::from(a)))
                .unwrap_or_default(),
            16 => <[u8; 16]>::try_from(*b)
                .map(|a| format!("IP:{}", std::net::IpAddr::from(a)))
                .unwrap_or_default(),
            _ => format!("IP:({} bytes)", b.len()),
        },
        other => other.to_string(),
    }
}

/// The fields as a definition list.
pub fn html(der: &[u8]) -> String {
    match fields(der) {
        Ok(rows) => {
            let mut out = String::from("<dl class=\"fields\">");
            for (k, v) in rows {
                out.push_str(&format!("<dt>{}</dt><dd>{}</dd>", esc(k), esc(&v)));
            }
            out.push_str("</dl>");
            out
        }
        Err(e) => format!(
            "<p class=\"warning\">The certificate does not parse: {}</p>",
            esc(&e)
        ),
    }
}

/// PEM of a DER certificate.
pub fn pem(der: &[u8]) -> String {
    ca_proto::pem::encode(ca_proto::pem::Label::Certificate, der)
}
