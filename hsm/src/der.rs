//! The few DER encodings the HSM layer needs: ECDSA `r‖s` → `Ecdsa-Sig-Value`,
//! unwrapping `CKA_EC_POINT`, and PKCS#1 `RSAPublicKey` from modulus and
//! exponent. Small enough that a DER crate would cost more than it saves.

/// Convert a raw PKCS#11 ECDSA signature (`r‖s`, each half the length) into
/// the DER `SEQUENCE { INTEGER r, INTEGER s }` that X.509 carries.
pub fn ecdsa_raw_to_der(raw: &[u8]) -> Option<Vec<u8>> {
    if raw.is_empty() || raw.len() % 2 != 0 {
        return None;
    }
    let (r, s) = raw.split_at(raw.len() / 2);
    let mut body = Vec::with_capacity(raw.len() + 8);
    write_unsigned_integer(&mut body, r);
    write_unsigned_integer(&mut body, s);
    let mut out = Vec::with_capacity(body.len() + 4);
    out.push(0x30);
    write_length(&mut out, body.len());
    out.extend_from_slice(&body);
    Some(out)
}

/// PKCS#1 `RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }`.
pub fn rsa_public_key_der(modulus: &[u8], exponent: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(modulus.len() + exponent.len() + 16);
    write_unsigned_integer(&mut body, modulus);
    write_unsigned_integer(&mut body, exponent);
    let mut out = Vec::with_capacity(body.len() + 4);
    out.push(0x30);
    write_length(&mut out, body.len());
    out.extend_from_slice(&body);
    out
}

/// `CKA_EC_POINT` is a DER OCTET STRING wrapping the uncompressed point
/// (SoftHSM2 and most tokens); accept a bare point too.
pub(crate) fn unwrap_ec_point(value: &[u8]) -> Option<Vec<u8>> {
    if value.first() == Some(&0x04) && matches!(value.len(), 65 | 97 | 133) {
        return Some(value.to_vec());
    }
    if value.first() != Some(&0x04) || value.len() < 2 {
        return None;
    }
    let (len, header) = match value[1] {
        n if n < 0x80 => (n as usize, 2),
        0x81 => (*value.get(2)? as usize, 3),
        0x82 => (
            ((*value.get(2)? as usize) << 8) | *value.get(3)? as usize,
            4,
        ),
        _ => return None,
    };
    let point = value.get(header..header + len)?;
    (header + len == value.len() && point.first() == Some(&0x04)).then(|| point.to_vec())
}

fn write_unsigned_integer(out: &mut Vec<u8>, bytes: &[u8]) {
    let first_nonzero = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    let trimmed = &bytes[first_nonzero..];
    let needs_pad = trimmed.first().is_none_or(|&b| b & 0x80 != 0);
    out.push(0x02);
    write_length(out, trimmed.len() + usize::from(needs_pad));
    if needs_pad {
        out.push(0);
    }
    out.extend_from_slice(trimmed);
}

fn write_length(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else if len <= 0xff {
        out.extend_from_slice(&[0x81, len as u8]);
    } else {
        out.extend_from_slice(&[0x82, (len >> 8) as u8, len as u8]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ecdsa_integers_are_minimal_and_positive() {
        let mut raw = vec![0u8; 64];
        raw[0] = 0x80; // r needs a 0x00 pad
        raw[32] = 0x00;
        raw[33] = 0x01; // s has a leading zero to strip
        let der = ecdsa_raw_to_der(&raw).unwrap();
        assert_eq!(der[0], 0x30);
        assert_eq!(&der[2..5], &[0x02, 33, 0x00]);
        let s_at = 2 + 2 + 33;
        assert_eq!(&der[s_at..s_at + 2], &[0x02, 31]);
        assert_eq!(der[s_at + 2], 0x01);
        assert_eq!(der[1] as usize, der.len() - 2);
        assert!(ecdsa_raw_to_der(&[1, 2, 3]).is_none());
        // all-zero half still encodes as INTEGER 0
        let der = ecdsa_raw_to_der(&[0, 0, 1, 1]).unwrap();
        assert_eq!(
            der,
            vec![0x30, 0x07, 0x02, 0x01, 0x00, 0x02, 0x02, 0x01, 0x01]
        );
    }

    #[test]
    fn ec_point_is_unwrapped_from_its_octet_string() {
        let mut point = vec![0x04];
        point.extend_from_slice(&[7u8; 64]);
        let mut wrapped = vec![0x04, 65];
        wrapped.extend_from_slice(&point);
        assert_eq!(unwrap_ec_point(&wrapped).unwrap(), point);
        assert_eq!(unwrap_ec_point(&point).unwrap(), point);
        assert!(unwrap_ec_point(&wrapped[..10]).is_none());
    }
}
