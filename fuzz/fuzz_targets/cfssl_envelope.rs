//! The CFSSL authsign envelope and the inner sign/info requests, and the
//! native sign request, on arbitrary bytes.
#![no_main]

use ca_proto::cfssl::{
    decode_authsign, make_authsign, verify_token, CfsslInfoRequest, CfsslSignRequest,
};
use ca_proto::native::SignRequest;
use libfuzzer_sys::fuzz_target;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

fn requests(bytes: &[u8]) {
    if let Ok(r) = CfsslSignRequest::from_json(bytes) {
        match (r.hostname.as_deref(), r.effective_hosts()) {
            (Some(h), Some(hosts)) if !h.is_empty() => {
                for host in &hosts {
                    assert!(!host.is_empty() && !host.contains(','));
                    assert_eq!(host.trim(), host);
                }
            }
            (_, hosts) => assert_eq!(hosts, r.hosts),
        }
    }
    let _ = CfsslInfoRequest::from_json(bytes);
    match SignRequest::from_json(bytes) {
        Ok(r) => {
            let _ = r.ttl_duration();
        }
        Err(e) => {
            // Error messages are bounded (they go back to the client).
            assert!(e.message().len() < 400, "{}", e.message());
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok((env, request, token)) = decode_authsign(data) {
        let _ = format!("{env:?}");
        let _ = verify_token(&[SECRET], &request, &token);
        requests(&request);
    }
    requests(data);

    // What our own client builder makes always decodes to the same bytes
    // and verifies.
    let body = make_authsign(SECRET, data, 1_764_325_000);
    let (env, request, token) = decode_authsign(&body).expect("own envelope decodes");
    assert_eq!(env.timestamp, Some(1_764_325_000));
    assert_eq!(request, data);
    assert_eq!(verify_token(&[SECRET], &request, &token), Ok(()));
});
