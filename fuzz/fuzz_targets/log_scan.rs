//! The issuance log's record framing, torn-tail scanner and entry/tree-head
//! decoding on arbitrary file contents.
#![no_main]

use ca_proto::logentry::LogEntry;
use ca_proto::sth::SignedTreeHead;
use ca_server::log::record::{decode, encode, payload, scan, Decoded, KIND_ENTRY, KIND_FREE};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let s = scan(data);
    let valid_len = usize::try_from(s.valid_len).expect("valid_len fits");
    assert!(valid_len <= data.len());
    // The valid prefix ends at the end, at a tear, or where allocated
    // (zero) space begins.
    match s.torn {
        Some(_) => assert!(valid_len < data.len()),
        None => assert!(valid_len == data.len() || data[valid_len] == KIND_FREE),
    }

    // Records tile the valid prefix, each decodes again to the same record,
    // and re-encoding them reproduces the prefix byte for byte.
    let mut end = 0usize;
    let mut again = Vec::new();
    for r in &s.records {
        assert_eq!(r.offset as usize, end);
        let body = payload(data, r);
        match decode(&data[end..]) {
            Decoded::Record { kind, payload, len } => {
                assert_eq!((kind, len), (r.kind, r.len));
                assert_eq!(payload, body);
            }
            Decoded::Torn(why) => panic!("located record at {end} does not decode: {why}"),
            Decoded::Free => panic!("located record at {end} reads as free space"),
        }
        end += r.len;
        encode(r.kind, body, &mut again);
        if r.kind == KIND_ENTRY {
            if let Ok(entry) = LogEntry::from_bytes(body) {
                let _ = entry.certificate_der();
                let bytes = entry.to_bytes();
                assert_eq!(LogEntry::from_bytes(&bytes).ok(), Some(entry));
            }
        } else if let Ok(sth) = serde_json::from_slice::<SignedTreeHead>(body) {
            let _ = sth.root();
        }
    }
    assert_eq!(end, valid_len);
    assert_eq!(again, &data[..valid_len]);
    if !data.is_empty() {
        let _ = decode(data);
    }
});
