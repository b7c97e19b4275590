//! The CSR key checks (`ca_server::issue::decode::spki`, `::curve`) on
//! arbitrary bytes, checked against independent implementations:
//!
//! - every input as a SubjectPublicKeyInfo: whatever `check_spki` accepts,
//!   x509-parser parses, rcgen takes as the key to certify and re-encodes
//!   byte for byte (what the after-signing lint compares), and the pipeline
//!   (`parse` + `facts` of a CSR around it) reports the same key;
//!   an accepted P-256/P-384 point is accepted by ring's ECDH, an accepted
//!   RSA key parses in x509-parser with the same modulus and exponent;
//! - the input's last 65 and 97 bytes as raw P-256 / P-384 points:
//!   `curve::validate_point` agrees with ring's point validation (ECDH with
//!   an ephemeral key succeeds exactly for valid points);
//! - the input as a signature algorithm OID: the family check never panics
//!   and never lets a known family sign for another.
#![no_main]

use ca_server::issue::decode::curve::{validate_point, Curve};
use ca_server::issue::decode::spki::{
    check_signature_algorithm, check_spki, CheckedKey, KeyFamily, SignatureFamily, SignatureParams,
};
use ca_server::issue::decode::{facts, parse};
use libfuzzer_sys::fuzz_target;
use policies::KeyAlgorithm;
use rcgen::PublicKeyData;
use ring::agreement;
use x509_parser::prelude::FromDer;

fn ring_accepts(curve: Curve, point: &[u8]) -> bool {
    let alg = match curve {
        Curve::P256 => &agreement::ECDH_P256,
        Curve::P384 => &agreement::ECDH_P384,
    };
    let rng = ring::rand::SystemRandom::new();
    let Ok(mine) = agreement::EphemeralPrivateKey::generate(alg, &rng) else {
        return false;
    };
    agreement::agree_ephemeral(mine, &agreement::UnparsedPublicKey::new(alg, point), |_| ()).is_ok()
}

fn differential(curve: Curve, point: &[u8]) {
    let ours = validate_point(curve, point);
    let ring = ring_accepts(curve, point);
    assert_eq!(
        ours.is_ok(),
        ring,
        "{curve:?} point {point:02x?}: ours {ours:?}, ring accepts: {ring}"
    );
}

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
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

/// A CSR around `spki` (unsigned: `facts` does not verify signatures).
fn csr_around(spki: &[u8], family: KeyFamily) -> Vec<u8> {
    let sig_alg = match family {
        KeyFamily::Rsa => tlv(
            0x30,
            &[
                tlv(
                    0x06,
                    &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0b],
                ),
                vec![0x05, 0x00],
            ]
            .concat(),
        ),
        KeyFamily::Ed25519 => tlv(0x30, &tlv(0x06, &[0x2b, 0x65, 0x70])),
        KeyFamily::Ec | KeyFamily::Other => tlv(
            0x30,
            &tlv(0x06, &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02]),
        ),
    };
    let info = tlv(
        0x30,
        &[
            tlv(0x02, &[0]),
            tlv(0x30, &[]),
            spki.to_vec(),
            tlv(0xa0, &[]),
        ]
        .concat(),
    );
    tlv(0x30, &[info, sig_alg, tlv(0x03, &[0, 0x30, 0x00])].concat())
}

fn accepted(data: &[u8], key: &CheckedKey) {
    let parsed = match x509_parser::x509::SubjectPublicKeyInfo::from_der(data) {
        Ok((rest, parsed)) if rest.is_empty() => parsed,
        // Parameters of keys we do not know are opaque to check_spki; the
        // pipeline's parse refuses what x509-parser cannot read anyway.
        _ if key.family == KeyFamily::Other => return,
        other => panic!("x509-parser refused what check_spki accepted: {other:?}"),
    };
    let bits = &parsed.subject_public_key.data;
    match &key.algorithm {
        KeyAlgorithm::EcP256 => assert!(ring_accepts(Curve::P256, bits)),
        KeyAlgorithm::EcP384 => assert!(ring_accepts(Curve::P384, bits)),
        KeyAlgorithm::Ed25519 => assert_eq!(bits.len(), 32),
        KeyAlgorithm::Rsa { bits: size } => {
            let (_, rsa) = x509_parser::public_key::RSAPublicKey::from_der(bits)
                .expect("x509-parser parses the RSA key");
            let n: Vec<u8> = rsa
                .modulus
                .iter()
                .copied()
                .skip_while(|&b| b == 0)
                .collect();
            let top = n.first().copied().expect("non-zero modulus");
            assert_eq!(
                *size as usize,
                (n.len() - 1) * 8 + 8 - top.leading_zeros() as usize
            );
            assert_eq!(n.last().map(|b| b & 1), Some(1));
            let e = rsa.try_exponent().expect("exponent fits");
            assert!(e >= 3 && e % 2 == 1 && e < 1 << 32, "exponent {e}");
        }
        KeyAlgorithm::Other(_) => {}
    }
    if key.family != KeyFamily::Other && !matches!(key.algorithm, KeyAlgorithm::Other(_)) {
        // What the signer is handed, re-encoded exactly as the CSR had it.
        let rcgen_key = rcgen::SubjectPublicKeyInfo::from_der(data)
            .expect("rcgen takes what check_spki accepted");
        assert_eq!(rcgen_key.subject_public_key_info(), data);
    }
    // The pipeline sees the same key.
    let csr = csr_around(data, key.family);
    let parsed = parse(&csr).expect("a CSR around an accepted SPKI parses");
    let facts = facts(&parsed).expect("facts of a CSR around an accepted SPKI");
    assert_eq!(facts.key, key.algorithm);
}

fuzz_target!(|data: &[u8]| {
    if let Ok(key) = check_spki(data) {
        accepted(data, &key);
    }
    for curve in [Curve::P256, Curve::P384] {
        if let Some(tail) = data.len().checked_sub(curve.point_len()) {
            differential(curve, &data[tail..]);
        }
    }
    differential(Curve::P256, data);
    let params = match data.first() {
        Some(b) if b % 3 == 0 => SignatureParams::Absent,
        Some(b) if b % 3 == 1 => SignatureParams::Null,
        _ => SignatureParams::Other,
    };
    let family = SignatureFamily::of(data);
    for key in [
        KeyFamily::Ec,
        KeyFamily::Rsa,
        KeyFamily::Ed25519,
        KeyFamily::Other,
    ] {
        let ok = check_signature_algorithm(key, data, params, 0).is_ok();
        let allowed = match key {
            KeyFamily::Ec => family == SignatureFamily::Ecdsa,
            KeyFamily::Rsa => matches!(family, SignatureFamily::RsaPkcs1 | SignatureFamily::RsaPss),
            KeyFamily::Ed25519 => family == SignatureFamily::Ed25519,
            KeyFamily::Other => true,
        };
        assert!(!ok || allowed, "{key:?} accepted signature OID {data:02x?}");
    }
});
