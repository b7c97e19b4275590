//! A strict DER reader for the few small structures the decoder checks on
//! its own (the SubjectPublicKeyInfo, PKCS#1 RSAPublicKey, the CSR's
//! attributes): one TLV at a time, single-byte tags, definite and minimally
//! encoded lengths. Anything only BER allows is an error, never a guess.

/// Universal and context tags used by the decoder.
pub const BOOLEAN: u8 = 0x01;
pub const INTEGER: u8 = 0x02;
pub const BIT_STRING: u8 = 0x03;
pub const OCTET_STRING: u8 = 0x04;
pub const NULL: u8 = 0x05;
pub const OID: u8 = 0x06;
pub const SEQUENCE: u8 = 0x30;
pub const SET: u8 = 0x31;
/// `[0]` constructed (the CSR's attributes).
pub const CONTEXT_0: u8 = 0xa0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DerError {
    #[error("truncated DER")]
    Truncated,
    #[error("multi-byte DER tag")]
    HighTag,
    #[error("indefinite DER length")]
    Indefinite,
    #[error("DER length not minimally encoded")]
    NonMinimalLength,
    #[error("DER length too large")]
    LengthTooLarge,
    #[error("expected DER tag {expected:#04x}, found {found:#04x}")]
    UnexpectedTag { expected: u8, found: u8 },
    #[error("trailing bytes after a DER value")]
    Trailing,
    #[error("DER INTEGER not minimally encoded")]
    NonMinimalInteger,
    #[error("empty DER INTEGER")]
    EmptyInteger,
    #[error("malformed OBJECT IDENTIFIER")]
    BadOid,
}

/// One tag-length-value: `raw` is all of it, `content` the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tlv<'a> {
    pub tag: u8,
    pub content: &'a [u8],
    pub raw: &'a [u8],
}

/// Reads consecutive TLVs from a byte slice.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { rest: bytes }
    }

    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    pub fn peek_tag(&self) -> Option<u8> {
        self.rest.first().copied()
    }

    /// The next TLV, whatever its tag.
    pub fn any(&mut self) -> Result<Tlv<'a>, DerError> {
        let input = self.rest;
        let (&tag, after_tag) = input.split_first().ok_or(DerError::Truncated)?;
        if tag & 0x1f == 0x1f {
            return Err(DerError::HighTag);
        }
        let (&first, after_len) = after_tag.split_first().ok_or(DerError::Truncated)?;
        let (len, after_len) = match first {
            0x00..=0x7f => (usize::from(first), after_len),
            0x80 => return Err(DerError::Indefinite),
            _ => {
                let count = usize::from(first & 0x7f);
                if count > 4 {
                    return Err(DerError::LengthTooLarge);
                }
                if after_len.len() < count {
                    return Err(DerError::Truncated);
                }
                let (bytes, rest) = after_len.split_at(count);
                if bytes.first() == Some(&0) {
                    return Err(DerError::NonMinimalLength);
                }
                let len = bytes
                    .iter()
                    .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
                if len < 0x80 {
                    return Err(DerError::NonMinimalLength);
                }
                (len, rest)
            }
        };
        if after_len.len() < len {
            return Err(DerError::Truncated);
        }
        let (content, rest) = after_len.split_at(len);
        let header_len = input.len() - after_len.len();
        self.rest = rest;
        Ok(Tlv {
            tag,
            content,
            raw: &input[..header_len + len],
        })
    }

    /// The next TLV, which must carry `tag`.
    pub fn expect(&mut self, tag: u8) -> Result<Tlv<'a>, DerError> {
        let tlv = self.any()?;
        if tlv.tag != tag {
            return Err(DerError::UnexpectedTag {
                expected: tag,
                found: tlv.tag,
            });
        }
        Ok(tlv)
    }

    /// The next TLV if it carries `tag`, else nothing (and nothing consumed).
    pub fn optional(&mut self, tag: u8) -> Result<Option<Tlv<'a>>, DerError> {
        if self.peek_tag() == Some(tag) {
            self.expect(tag).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Nothing may follow.
    pub fn finish(&self) -> Result<(), DerError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(DerError::Trailing)
        }
    }
}

/// `bytes` is exactly one TLV with `tag`.
pub fn single(bytes: &[u8], tag: u8) -> Result<Tlv<'_>, DerError> {
    let mut reader = Reader::new(bytes);
    let tlv = reader.expect(tag)?;
    reader.finish()?;
    Ok(tlv)
}

/// A DER INTEGER's content, checked to be minimally encoded. Returns
/// (negative, magnitude bytes without the sign-only leading zero).
pub fn integer(content: &[u8]) -> Result<(bool, &[u8]), DerError> {
    match content {
        [] => Err(DerError::EmptyInteger),
        [0x00, next, ..] if next & 0x80 == 0 => Err(DerError::NonMinimalInteger),
        [0xff, next, ..] if next & 0x80 != 0 => Err(DerError::NonMinimalInteger),
        [0x00, rest @ ..] if !rest.is_empty() => Ok((false, rest)),
        [first, ..] => Ok((first & 0x80 != 0, content)),
    }
}

/// An OBJECT IDENTIFIER's content: non-empty, each sub-identifier
/// minimally encoded (no leading 0x80) and terminated.
pub fn oid(content: &[u8]) -> Result<(), DerError> {
    let mut start = true;
    for &b in content {
        if start && b == 0x80 {
            return Err(DerError::BadOid);
        }
        start = b & 0x80 == 0;
    }
    if content.is_empty() || !start {
        return Err(DerError::BadOid);
    }
    Ok(())
}

/// The next TLV, which must be a well-formed OBJECT IDENTIFIER.
pub fn expect_oid<'a>(reader: &mut Reader<'a>) -> Result<Tlv<'a>, DerError> {
    let tlv = reader.expect(OID)?;
    oid(tlv.content)?;
    Ok(tlv)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_short_and_long_lengths() {
        let mut r = Reader::new(&[0x04, 0x01, 0xaa, 0x30, 0x00]);
        let a = r.expect(OCTET_STRING).unwrap();
        assert_eq!((a.content, a.raw), (&[0xaa][..], &[0x04, 0x01, 0xaa][..]));
        assert_eq!(r.expect(SEQUENCE).unwrap().content, &[] as &[u8]);
        r.finish().unwrap();
        let mut long = vec![0x04, 0x81, 0x80];
        long.extend(std::iter::repeat_n(7, 0x80));
        assert_eq!(single(&long, OCTET_STRING).unwrap().content.len(), 0x80);
        let mut longer = vec![0x04, 0x82, 0x01, 0x00];
        longer.extend(std::iter::repeat_n(7, 0x100));
        assert_eq!(single(&longer, OCTET_STRING).unwrap().content.len(), 0x100);
    }

    #[test]
    fn refuses_ber_and_truncation() {
        let cases: [(&[u8], DerError); 8] = [
            (&[], DerError::Truncated),
            (&[0x04], DerError::Truncated),
            (&[0x04, 0x02, 0x00], DerError::Truncated),
            (&[0x04, 0x80, 0x00, 0x00], DerError::Indefinite),
            (&[0x04, 0x81, 0x01, 0x00], DerError::NonMinimalLength),
            (&[0x04, 0x82, 0x00, 0x80], DerError::NonMinimalLength),
            (&[0x1f, 0x01, 0x00], DerError::HighTag),
            (&[0x04, 0x85, 1, 0, 0, 0, 0], DerError::LengthTooLarge),
        ];
        for (bytes, expected) in cases {
            assert_eq!(Reader::new(bytes).any(), Err(expected), "{bytes:02x?}");
        }
        assert_eq!(single(&[0x05, 0x00, 0x00], NULL), Err(DerError::Trailing));
        assert_eq!(
            single(&[0x05, 0x00], OID),
            Err(DerError::UnexpectedTag {
                expected: OID,
                found: NULL
            })
        );
    }

    #[test]
    fn oids_are_well_formed() {
        assert_eq!(oid(&[0x2b, 0x65, 0x70]), Ok(()));
        assert_eq!(oid(&[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01]), Ok(()));
        assert_eq!(oid(&[]), Err(DerError::BadOid));
        assert_eq!(oid(&[0x2a, 0x86]), Err(DerError::BadOid));
        assert_eq!(oid(&[0x2a, 0x80, 0x01]), Err(DerError::BadOid));
        assert_eq!(oid(&[0x80, 0x01]), Err(DerError::BadOid));
    }

    #[test]
    fn integers_are_minimal() {
        assert_eq!(integer(&[0x00]), Ok((false, &[0x00][..])));
        assert_eq!(integer(&[0x01, 0x00, 0x01]), Ok((false, &[1, 0, 1][..])));
        assert_eq!(integer(&[0x00, 0x80]), Ok((false, &[0x80][..])));
        assert_eq!(integer(&[0xff]), Ok((true, &[0xff][..])));
        assert_eq!(integer(&[0x80, 0x00]), Ok((true, &[0x80, 0x00][..])));
        assert_eq!(integer(&[]), Err(DerError::EmptyInteger));
        assert_eq!(integer(&[0x00, 0x7f]), Err(DerError::NonMinimalInteger));
        assert_eq!(integer(&[0xff, 0x80]), Err(DerError::NonMinimalInteger));
    }
}
