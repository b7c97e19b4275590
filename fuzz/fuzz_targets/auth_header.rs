//! The native `Authorization` header parser and verifier on arbitrary text.
#![no_main]

use ca_proto::auth::{parse_authorization, sign_request, verify, Credentials, AUTH_SCHEME};
use libfuzzer_sys::fuzz_target;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
const NOW: i64 = 1_764_325_000;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(h) = parse_authorization(&text) else {
        return;
    };
    // Redacted Debug never panics.
    let _ = format!("{h:?}");
    let _ = verify(&h, &[SECRET], "POST", "/v1/sign", b"{}", NOW, 300);
    // With the clock at the header's own time, the MAC path runs too.
    let _ = verify(&h, &[SECRET], "POST", "/v1/sign", data, h.ts, 300);

    // The grammar is canonical: what was accepted re-renders to a header
    // that parses to the same value, and the timestamp text the MAC covers
    // is exactly what `verify` re-formats.
    let canonical = format!(
        "{AUTH_SCHEME} keyid={}, ts={}, nonce={}, sig={}",
        h.key_id,
        h.ts,
        h.nonce,
        hex::encode(h.sig)
    );
    assert_eq!(parse_authorization(&canonical), Ok(h.clone()));
    let ts_text = text
        .split(',')
        .map(|f| f.trim_matches(' '))
        .map(|f| {
            f.strip_prefix(AUTH_SCHEME)
                .map(str::trim_start)
                .unwrap_or(f)
        })
        .find_map(|f| f.strip_prefix("ts="))
        .expect("ts field");
    assert_eq!(ts_text, h.ts.to_string());

    // A header we sign for the parsed key id and nonce verifies.
    let creds = Credentials::new(h.key_id.clone(), SECRET.to_vec());
    let signed = sign_request(&creds, "POST", "/v1/sign", data, h.ts, &h.nonce);
    let again = parse_authorization(&signed).expect("own header parses");
    assert_eq!(
        verify(&again, &[SECRET], "POST", "/v1/sign", data, h.ts, 0),
        Ok(())
    );
});
