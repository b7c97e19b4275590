//! The log file's framing: `[kind u8][len u32 BE][payload][crc32 u32 BE]`,
//! the CRC over kind, length and payload. A record that is short, too long,
//! of unknown kind or fails its CRC ends the valid prefix: everything after
//! it is a torn tail to cut.

pub const KIND_ENTRY: u8 = 1;
pub const KIND_TREE_HEAD: u8 = 2;
/// No entry comes near this; a larger length is corruption, not a record.
pub const MAX_PAYLOAD: usize = 1 << 20;
const HEADER: usize = 5;
const TRAILER: usize = 4;

pub fn encode(kind: u8, payload: &[u8], out: &mut Vec<u8>) {
    let start = out.len();
    out.push(kind);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    Record {
        kind: u8,
        payload: &'a [u8],
        len: usize,
    },
    /// Not a whole, valid record: the valid prefix ends here.
    Torn(&'static str),
}

/// Decode the record at the start of `bytes` (`bytes` non-empty).
pub fn decode(bytes: &[u8]) -> Decoded<'_> {
    let Some(header) = bytes.get(..HEADER) else {
        return Decoded::Torn("truncated header");
    };
    let kind = header[0];
    if kind != KIND_ENTRY && kind != KIND_TREE_HEAD {
        return Decoded::Torn("unknown record kind");
    }
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if len > MAX_PAYLOAD {
        return Decoded::Torn("record length out of range");
    }
    let Some(crc_bytes) = bytes.get(HEADER + len..HEADER + len + TRAILER) else {
        return Decoded::Torn("truncated record");
    };
    let crc = u32::from_be_bytes([crc_bytes[0], crc_bytes[1], crc_bytes[2], crc_bytes[3]]);
    if crc32fast::hash(&bytes[..HEADER + len]) != crc {
        return Decoded::Torn("checksum mismatch");
    }
    Decoded::Record {
        kind,
        payload: &bytes[HEADER..HEADER + len],
        len: HEADER + len + TRAILER,
    }
}

/// One valid record found by [`scan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Located {
    pub kind: u8,
    pub offset: u64,
    pub len: usize,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Scan {
    pub records: Vec<Located>,
    /// Length of the valid prefix.
    pub valid_len: u64,
    /// Why the scan stopped early, if it did.
    pub torn: Option<&'static str>,
}

/// Walk a whole log file's bytes.
pub fn scan(bytes: &[u8]) -> Scan {
    let mut records = Vec::new();
    let mut offset = 0usize;
    while offset < bytes.len() {
        match decode(&bytes[offset..]) {
            Decoded::Record { kind, len, .. } => {
                records.push(Located {
                    kind,
                    offset: offset as u64,
                    len,
                });
                offset += len;
            }
            Decoded::Torn(why) => {
                return Scan {
                    records,
                    valid_len: offset as u64,
                    torn: Some(why),
                }
            }
        }
    }
    Scan {
        records,
        valid_len: offset as u64,
        torn: None,
    }
}

/// The payload of a located record within the file's bytes.
pub fn payload<'a>(bytes: &'a [u8], at: &Located) -> &'a [u8] {
    let start = at.offset as usize + HEADER;
    let end = at.offset as usize + at.len - TRAILER;
    bytes.get(start..end).unwrap_or_default()
}

/// What [`for_each`] found.
#[derive(Debug, PartialEq, Eq)]
pub struct Walked {
    pub records: u64,
    /// Length of the valid prefix.
    pub valid_len: u64,
    /// Why the walk stopped early, if it did.
    pub torn: Option<&'static str>,
}

/// Walk the records of a reader (a whole log file) without holding it in
/// memory: `visit(kind, offset, payload)` for each valid record, stopping at
/// the first torn one. An error from `visit` stops the walk and is returned.
pub fn for_each<R: std::io::Read, E>(
    mut reader: R,
    mut visit: impl FnMut(u8, u64, &[u8]) -> Result<(), E>,
) -> Result<Walked, WalkError<E>> {
    let mut offset = 0u64;
    let mut records = 0u64;
    let mut payload = Vec::new();
    let torn = |why, records, offset| {
        Ok(Walked {
            records,
            valid_len: offset,
            torn: Some(why),
        })
    };
    loop {
        let mut header = [0u8; HEADER];
        match read_full(&mut reader, &mut header).map_err(WalkError::Io)? {
            0 => {
                return Ok(Walked {
                    records,
                    valid_len: offset,
                    torn: None,
                })
            }
            HEADER => {}
            _ => return torn("truncated header", records, offset),
        }
        let kind = header[0];
        if kind != KIND_ENTRY && kind != KIND_TREE_HEAD {
            return torn("unknown record kind", records, offset);
        }
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        if len > MAX_PAYLOAD {
            return torn("record length out of range", records, offset);
        }
        payload.resize(len + TRAILER, 0);
        if read_full(&mut reader, &mut payload).map_err(WalkError::Io)? != len + TRAILER {
            return torn("truncated record", records, offset);
        }
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&header);
        hasher.update(&payload[..len]);
        let crc = u32::from_be_bytes([
            payload[len],
            payload[len + 1],
            payload[len + 2],
            payload[len + 3],
        ]);
        if hasher.finalize() != crc {
            return torn("checksum mismatch", records, offset);
        }
        visit(kind, offset, &payload[..len]).map_err(WalkError::Visit)?;
        records += 1;
        offset += (HEADER + len + TRAILER) as u64;
    }
}

#[derive(Debug)]
pub enum WalkError<E> {
    Io(std::io::Error),
    Visit(E),
}

/// Read until `buf` is full or the reader ends; the count read.
fn read_full(reader: &mut impl std::io::Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload_of<'a>(bytes: &'a [u8], at: &Located) -> &'a [u8] {
        payload(bytes, at)
    }

    #[test]
    fn torn_tails_are_found_at_every_cut() {
        let mut file = Vec::new();
        encode(KIND_ENTRY, b"first entry", &mut file);
        encode(KIND_TREE_HEAD, b"{\"sth\":1}", &mut file);
        let whole = file.len();
        encode(KIND_ENTRY, b"third", &mut file);
        let full = scan(&file);
        assert_eq!(full.records.len(), 3);
        assert_eq!(full.torn, None);
        assert_eq!(payload(&file, &full.records[1]), b"{\"sth\":1}");
        for cut in whole + 1..file.len() {
            let s = scan(&file[..cut]);
            assert_eq!(s.records.len(), 2, "cut at {cut}");
            assert_eq!(s.valid_len as usize, whole);
            assert!(s.torn.is_some());
        }
        // the streaming walk agrees with the in-memory scan at every cut
        for cut in 0..=file.len() {
            let s = scan(&file[..cut]);
            let mut seen = Vec::new();
            let walked = for_each::<_, ()>(&file[..cut], |kind, offset, payload| {
                seen.push((kind, offset, payload.to_vec()));
                Ok(())
            })
            .unwrap();
            assert_eq!(walked.valid_len, s.valid_len, "cut at {cut}");
            assert_eq!(walked.torn.is_some(), s.torn.is_some(), "cut at {cut}");
            assert_eq!(seen.len(), s.records.len());
            for ((kind, offset, payload), located) in seen.iter().zip(&s.records) {
                assert_eq!((*kind, *offset), (located.kind, located.offset));
                assert_eq!(payload.as_slice(), payload_of(&file, located));
            }
        }
        // a flipped bit anywhere in the last record is caught by the CRC
        for i in whole..file.len() {
            let mut bad = file.clone();
            bad[i] ^= 0x10;
            let s = scan(&bad);
            assert_eq!(s.records.len(), 2, "flip at {i}");
        }
    }
}
