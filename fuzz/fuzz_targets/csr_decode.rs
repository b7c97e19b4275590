//! CSR decoding (PEM or DER, size limit, facts) and proof of possession on
//! arbitrary bytes: as given (PEM-ish text or raw DER), as raw DER handed
//! straight to the parser, and wrapped in a PEM block.
#![no_main]

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ca_server::issue::decode::{csr_der_from_input, facts, parse, MAX_CSR_BYTES};
use ca_server::issue::prove::proof_of_possession;
use libfuzzer_sys::fuzz_target;

fn pipeline(input: &[u8]) {
    let Ok(der) = csr_der_from_input(input) else {
        return;
    };
    assert!(der.len() <= MAX_CSR_BYTES);
    check_der(&der);
}

fn check_der(der: &[u8]) {
    let Ok(csr) = parse(der) else {
        return;
    };
    let facts = facts(&csr);
    let proof = proof_of_possession(&csr);
    if let Ok(f) = &facts {
        // Facts are rendered into reasons and log lines.
        let _ = format!("{f:?} {} {}", f.key, f.signature);
    }
    let _ = proof;
}

fuzz_target!(|data: &[u8]| {
    pipeline(data);
    check_der(data);
    let pem = format!(
        "junk before\n-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\njunk after\n",
        STANDARD.encode(data)
    );
    pipeline(pem.as_bytes());
});
