//! The CSR set every target is driven with: N distinct P-256 CSRs, CN and
//! SAN `bench-<i>.db.internal` (a name the `db` class allows), made up front
//! on every core and never timed. Each keeps its public key so that returned
//! certificates can be checked to carry it.

use anyhow::{Context, Result};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};

pub struct Csr {
    /// The one DNS name, also the CN.
    pub name: String,
    /// PEM, as every API takes it.
    pub pem: String,
    /// The subject public key (uncompressed point), to match the leaf's.
    pub public_key: Vec<u8>,
}

pub fn name(i: usize) -> String {
    format!("bench-{i}.db.internal")
}

fn one(i: usize) -> Result<Csr> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let name = name(i);
    let mut params = CertificateParams::new(vec![name.clone()])?;
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, name.as_str());
    let pem = params
        .serialize_request(&key)
        .with_context(|| format!("CSR {i}"))?
        .pem()?;
    Ok(Csr {
        name,
        pem,
        public_key: key.public_key_raw().to_vec(),
    })
}

/// `n` CSRs, generated on all cores.
pub fn generate(n: usize) -> Result<Vec<Csr>> {
    let threads = std::thread::available_parallelism().map_or(2, |p| p.get());
    let chunk = n.div_ceil(threads).max(1);
    let parts: Vec<Result<Vec<Csr>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .step_by(chunk)
            .map(|start| s.spawn(move || (start..(start + chunk).min(n)).map(one).collect()))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("CSR thread panicked")))
            })
            .collect()
    });
    let mut all = Vec::with_capacity(n);
    for part in parts {
        all.extend(part?);
    }
    Ok(all)
}
