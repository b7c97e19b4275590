//! The log file's framing: `[kind u8][len u32 BE][payload][crc32 u32 BE]`,
//! the CRC over kind, length and payload. A record that is short, too long,
//! of unknown kind or fails its CRC ends the valid prefix: everything after
//! it is a torn tail to cut. A zero kind byte ends the records too, but is
//! no tear: the writer keeps zeroed space allocated ahead of the last
//! record ([`KIND_FREE`]).

pub const KIND_ENTRY: u8 = 1;
pub const KIND_TREE_HEAD: u8 = 2;
/// The first byte of space the writer allocated (zeros) but has not used.
pub const KIND_FREE: u8 = 0;
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
    /// Allocated space (a zero kind byte): the records end here.
    Free,
}

/// Decode the record at the start of `bytes` (`bytes` non-empty).
pub fn decode(bytes: &[u8]) -> Decoded<'_> {
    if bytes.first() == Some(&KIND_FREE) {
        return Decoded::Free;
    }
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
    /// Length of the valid prefix (allocated space after it is neither
    /// counted nor torn).
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
            Decoded::Free => break,
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
/// Recovery uses this; every record is judged by [`decode`] (through
/// [`Reader`]), the one decoder, which the `log_scan` fuzz target covers.
pub fn for_each<R: std::io::Read, E>(
    reader: R,
    mut visit: impl FnMut(u8, u64, &[u8]) -> Result<(), E>,
) -> Result<Walked, WalkError<E>> {
    let mut records = Reader::new(reader, 0);
    let mut count = 0u64;
    loop {
        let torn = match records.next_record().map_err(WalkError::Io)? {
            Next::Record(r) => {
                visit(r.kind, r.offset, r.payload).map_err(WalkError::Visit)?;
                count += 1;
                continue;
            }
            Next::End => None,
            Next::Torn(why) => Some(why),
        };
        return Ok(Walked {
            records: count,
            valid_len: records.offset(),
            torn,
        });
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

/// One valid record read by [`Reader`].
#[derive(Debug, PartialEq, Eq)]
pub struct Record<'a> {
    pub kind: u8,
    /// File offset of the record's first byte.
    pub offset: u64,
    pub payload: &'a [u8],
}

/// What [`Reader::next_record`] found at the reader's offset.
#[derive(Debug, PartialEq, Eq)]
pub enum Next<'a> {
    Record(Record<'a>),
    /// The reader ended exactly at a record boundary, or allocated space
    /// ([`KIND_FREE`]) begins there.
    End,
    /// Not a whole, valid record (as [`decode`] judges it): the valid
    /// prefix ends at [`Reader::offset`]. At the end of a log that is being
    /// written, this may be a record not yet completely written.
    Torn(&'static str),
}

/// Reads records one at a time from a reader positioned at a record
/// boundary, holding at most one record in memory (at most
/// [`MAX_PAYLOAD`] plus framing). Every record is judged by [`decode`].
pub struct Reader<R> {
    reader: R,
    buf: Vec<u8>,
    offset: u64,
}

impl<R: std::io::Read> Reader<R> {
    /// `reader` must be positioned at file offset `offset`, a record
    /// boundary (0 for a whole file).
    pub fn new(reader: R, offset: u64) -> Reader<R> {
        Reader {
            reader,
            buf: Vec::new(),
            offset,
        }
    }

    /// File offset of the next record: after the last valid one returned.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The next record. After [`Next::Torn`] or [`Next::End`] the reader
    /// stays where it is (its offset is the end of the valid prefix); read
    /// again from that offset with a new reader once the file has grown.
    pub fn next_record(&mut self) -> std::io::Result<Next<'_>> {
        self.buf.resize(HEADER, 0);
        let got = read_full(&mut self.reader, &mut self.buf)?;
        if got == 0 {
            return Ok(Next::End);
        }
        if got == HEADER {
            let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
            // Read the rest only for a plausible header; `decode` judges it.
            let len = usize::try_from(len).unwrap_or(usize::MAX);
            let kind_known = self.buf[0] == KIND_ENTRY || self.buf[0] == KIND_TREE_HEAD;
            if kind_known && len <= MAX_PAYLOAD {
                self.buf.resize(HEADER + len + TRAILER, 0);
                let rest = read_full(&mut self.reader, &mut self.buf[HEADER..])?;
                self.buf.truncate(HEADER + rest);
            }
        } else {
            self.buf.truncate(got);
        }
        match decode(&self.buf) {
            Decoded::Record { kind, len, .. } => {
                let offset = self.offset;
                self.offset += len as u64;
                Ok(Next::Record(Record {
                    kind,
                    offset,
                    payload: &self.buf[HEADER..len - TRAILER],
                }))
            }
            Decoded::Torn(why) => Ok(Next::Torn(why)),
            Decoded::Free => Ok(Next::End),
        }
    }
}

/// Open `path` for reading records from `offset` (a record boundary) on,
/// buffered.
pub fn open_at(
    path: &std::path::Path,
    offset: u64,
) -> std::io::Result<Reader<std::io::BufReader<std::fs::File>>> {
    use std::io::Seek;
    let mut file = std::fs::File::open(path)?;
    file.seek(std::io::SeekFrom::Start(offset))?;
    Ok(Reader::new(
        std::io::BufReader::with_capacity(64 * 1024, file),
        offset,
    ))
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

#[cfg(test)]
mod reader_tests {
    use super::*;

    #[test]
    fn the_reader_agrees_with_the_scanner_at_every_cut() {
        let mut file = Vec::new();
        encode(KIND_ENTRY, b"first entry", &mut file);
        encode(KIND_TREE_HEAD, b"{\"sth\":1}", &mut file);
        encode(KIND_ENTRY, &[7u8; 300], &mut file);
        for cut in 0..=file.len() {
            let bytes = &file[..cut];
            let scan = scan(bytes);
            let mut reader = Reader::new(bytes, 0);
            let mut seen = Vec::new();
            let torn = loop {
                match reader.next_record().unwrap() {
                    Next::Record(r) => {
                        assert_eq!(r.payload, payload(bytes, &scan.records[seen.len()]));
                        seen.push((r.kind, r.offset));
                    }
                    Next::End => break None,
                    Next::Torn(why) => break Some(why),
                }
            };
            let expected: Vec<_> = scan.records.iter().map(|r| (r.kind, r.offset)).collect();
            assert_eq!(seen, expected, "cut at {cut}");
            assert_eq!(torn, scan.torn, "cut at {cut}");
            assert_eq!(reader.offset(), scan.valid_len, "cut at {cut}");
        }
    }

    #[test]
    fn a_reader_continues_from_an_offset() {
        let mut file = Vec::new();
        encode(KIND_ENTRY, b"one", &mut file);
        let second = file.len() as u64;
        encode(KIND_ENTRY, b"two", &mut file);
        let mut reader = Reader::new(&file[second as usize..], second);
        match reader.next_record().unwrap() {
            Next::Record(r) => assert_eq!((r.offset, r.payload), (second, &b"two"[..])),
            other => panic!("expected a record, got {other:?}"),
        }
        assert_eq!(reader.next_record().unwrap(), Next::End);
        assert_eq!(reader.offset(), file.len() as u64);
    }

    #[test]
    fn garbage_lengths_are_not_read() {
        // a header claiming 4 GiB: torn at once, nothing allocated for it
        let bytes = [KIND_ENTRY, 0xff, 0xff, 0xff, 0xff, 0, 0];
        let mut reader = Reader::new(&bytes[..], 0);
        assert_eq!(
            reader.next_record().unwrap(),
            Next::Torn("record length out of range")
        );
        assert_eq!(reader.offset(), 0);
    }

    #[test]
    fn allocated_zeros_end_the_records_without_a_tear() {
        let mut file = Vec::new();
        encode(KIND_ENTRY, b"one", &mut file);
        encode(KIND_TREE_HEAD, b"{}", &mut file);
        let records_end = file.len() as u64;
        file.extend_from_slice(&[0u8; 4096]);
        let scanned = scan(&file);
        assert_eq!(
            (scanned.records.len(), scanned.valid_len, scanned.torn),
            (2, records_end, None)
        );
        let walked = for_each(&file[..], |_, _, _| Ok::<_, ()>(())).unwrap();
        assert_eq!(
            (walked.records, walked.valid_len, walked.torn),
            (2, records_end, None)
        );
        let mut reader = Reader::new(&file[records_end as usize..], records_end);
        assert_eq!(reader.next_record().unwrap(), Next::End);
        assert_eq!(reader.offset(), records_end);
        // A record being written into the space is a tear until whole.
        let mut next = Vec::new();
        encode(KIND_ENTRY, b"two", &mut next);
        for cut in 1..next.len() {
            let mut partial = file.clone();
            let at = records_end as usize;
            partial[at..at + cut].copy_from_slice(&next[..cut]);
            assert!(scan(&partial).torn.is_some(), "cut {cut}");
        }
    }
}
