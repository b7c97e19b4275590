//! Checking the kept sample of returned certificates, after the timed run:
//! each must parse, be signed by the target's issuing CA (which chains to
//! the target's root), be valid now, name the CSR's DNS name and carry the
//! CSR's public key.

use crate::csrs::Csr;
use crate::load::{Protocol, Sample};
use anyhow::{anyhow, bail, Context, Result};
use std::path::Path;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::*;

/// What a target's certificates must chain to.
pub struct Trust {
    /// The CA that signs leaves (DER).
    pub issuer: Vec<u8>,
    /// The root the issuer chains to (DER; the issuer itself for a one-level CA).
    pub root: Vec<u8>,
}

impl Trust {
    /// From PEM files; checks that the issuer is signed by the root.
    pub fn from_files(issuer: &Path, root: &Path) -> Result<Trust> {
        let trust = Trust {
            issuer: pem_file(issuer)?,
            root: pem_file(root)?,
        };
        let (_, issuer) = parse_x509_certificate(&trust.issuer)?;
        let (_, root) = parse_x509_certificate(&trust.root)?;
        issuer
            .verify_signature(Some(root.public_key()))
            .map_err(|e| anyhow!("issuer does not chain to the root: {e}"))?;
        Ok(trust)
    }
}

fn pem_file(path: &Path) -> Result<Vec<u8>> {
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    pem_der(&text)
}

fn pem_der(text: &[u8]) -> Result<Vec<u8>> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(text).map_err(|e| anyhow!("PEM: {e}"))?;
    Ok(pem.contents)
}

/// How many samples were checked and how many passed; the first failure.
pub struct Checked {
    pub checked: usize,
    pub passed: usize,
    pub first_failure: Option<String>,
}

impl Checked {
    pub fn summary(&self) -> String {
        format!("{}/{}", self.passed, self.checked)
    }
}

pub fn check(samples: &[Sample], csrs: &[Csr], protocol: &Protocol, trust: &Trust) -> Checked {
    let mut result = Checked {
        checked: 0,
        passed: 0,
        first_failure: None,
    };
    for sample in samples {
        result.checked += 1;
        match one(sample, csrs, protocol, trust) {
            Ok(()) => result.passed += 1,
            Err(e) => {
                result
                    .first_failure
                    .get_or_insert_with(|| format!("{}: {e:#}", csrs[sample.csr].name));
            }
        }
    }
    result
}

fn one(sample: &Sample, csrs: &[Csr], protocol: &Protocol, trust: &Trust) -> Result<()> {
    let csr = &csrs[sample.csr];
    let pem = protocol.certificate(&sample.body)?;
    let der = pem_der(pem.as_bytes())?;
    let (_, leaf) = parse_x509_certificate(&der)?;
    let (_, issuer) = parse_x509_certificate(&trust.issuer)?;
    if leaf.issuer().as_raw() != issuer.subject().as_raw() {
        bail!("issuer name is not the target's issuing CA");
    }
    leaf.verify_signature(Some(issuer.public_key()))
        .map_err(|e| anyhow!("signature does not verify: {e}"))?;
    if !leaf.validity().is_valid() {
        bail!("not valid now");
    }
    if leaf.public_key().subject_public_key.data.as_ref() != csr.public_key.as_slice() {
        bail!("public key is not the CSR's");
    }
    let names: Vec<String> = leaf
        .extensions()
        .iter()
        .filter_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(san) => Some(san),
            _ => None,
        })
        .flat_map(|san| san.general_names.iter())
        .filter_map(|n| match n {
            GeneralName::DNSName(d) => Some(d.to_string()),
            _ => None,
        })
        .collect();
    if names != [csr.name.clone()] {
        bail!("DNS names {names:?}, expected [{}]", csr.name);
    }
    Ok(())
}
