//! Bodies of the issuance log's read API (`GET /v1/log/{log_id}/…`, paths
//! in [`routes`](crate::routes)):
//!
//! - `sth`: a [`SignedTreeHead`] (its own field order);
//! - `key`: the log's public key, PEM text (`application/x-pem-file`);
//! - `proof?seq=N`: a [`ProofResponse`];
//! - `entries?start=A&end=B`: an [`EntriesPage`].
//!
//! Responses accept unknown fields (newer servers may add some).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::ser::SerializeStruct;
use serde::{Deserialize, Serialize, Serializer};

use crate::merkle::Hash;
use crate::sth::{LogEvidence, SignedTreeHead};

/// Body of `GET /v1/log/{log_id}/proof?seq=N`: the inclusion proof of entry
/// `index` in the tree of `sth`.
///
/// On the wire the fields, and the fields of `sth`, come in alphabetical
/// order: `{"inclusion_proof":[…],"index":N,"sth":{"log_id":…,"root_hash":…,
/// "signature":…,"timestamp_ms":…,"tree_size":…},"tree_size":N}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProofResponse {
    /// RFC 9162 inclusion proof, leaf upwards, each hash 64 lowercase hex
    /// digits.
    pub inclusion_proof: Vec<String>,
    /// The entry's index (sequence number).
    pub index: u64,
    /// The signed tree head the proof leads to.
    #[serde(serialize_with = "sth_in_alphabetical_order")]
    pub sth: SignedTreeHead,
    /// `sth.tree_size`.
    pub tree_size: u64,
}

impl ProofResponse {
    /// The proof of entry `index` in `sth`'s tree.
    pub fn new(index: u64, sth: SignedTreeHead, proof: &[Hash]) -> ProofResponse {
        ProofResponse {
            inclusion_proof: proof.iter().map(hex::encode).collect(),
            index,
            tree_size: sth.tree_size,
            sth,
        }
    }

    /// The proof as the log evidence of `entry` (the entry's exact bytes,
    /// e.g. from an [`EntriesPage`]), for [`LogEvidence::verify`].
    pub fn into_evidence(self, entry: &[u8]) -> LogEvidence {
        LogEvidence {
            log_id: self.sth.log_id.clone(),
            index: self.index,
            entry: STANDARD.encode(entry),
            sth: self.sth,
            inclusion_proof: self.inclusion_proof,
        }
    }
}

/// The tree head inside a proof body, its fields sorted by name (the
/// body's shape since the endpoint exists).
fn sth_in_alphabetical_order<S: Serializer>(
    sth: &SignedTreeHead,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let mut s = serializer.serialize_struct("SignedTreeHead", 5)?;
    s.serialize_field("log_id", &sth.log_id)?;
    s.serialize_field("root_hash", &sth.root_hash)?;
    s.serialize_field("signature", &sth.signature)?;
    s.serialize_field("timestamp_ms", &sth.timestamp_ms)?;
    s.serialize_field("tree_size", &sth.tree_size)?;
    s.end()
}

/// One entry of an [`EntriesPage`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageEntry {
    /// The entry's sequence number.
    pub seq: u64,
    /// Standard base64 (padded) of the exact entry bytes (the Merkle leaf).
    pub entry: String,
}

impl PageEntry {
    /// Entry `seq` with its exact bytes.
    pub fn new(seq: u64, bytes: &[u8]) -> PageEntry {
        PageEntry {
            seq,
            entry: STANDARD.encode(bytes),
        }
    }

    /// The exact entry bytes.
    pub fn bytes(&self) -> Result<Vec<u8>, base64::DecodeError> {
        STANDARD.decode(&self.entry)
    }
}

/// Body of `GET /v1/log/{log_id}/entries?start=A&end=B`:
/// `{"entries":[{"seq":N,"entry":"…"}…],"tree_size":N,"next":N|null}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntriesPage {
    /// Entries in order, from `start`.
    pub entries: Vec<PageEntry>,
    /// The signed tree size the page was read against.
    pub tree_size: u64,
    /// The first entry not sent when the page stopped before the end of the
    /// range (ask again from there); `null` when the range is complete.
    pub next: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sth() -> SignedTreeHead {
        SignedTreeHead::new("log-1", 4, &[7; 32], 1_700_000_000_000, &[1, 2])
    }

    #[test]
    fn the_proof_body_keeps_its_shape() {
        let body = ProofResponse::new(3, sth(), &[[9; 32], [8; 32]]);
        let json = serde_json::to_string(&body).expect("ser");
        // The bytes the server built with `json!` (sorted keys throughout).
        let old = serde_json::to_string(&serde_json::json!({
            "index": 3,
            "tree_size": 4,
            "inclusion_proof": [hex::encode([9; 32]), hex::encode([8; 32])],
            "sth": sth(),
        }))
        .expect("ser");
        assert_eq!(json, old);
        assert!(json.starts_with(r#"{"inclusion_proof":["0909"#), "{json}");
        assert!(
            json.contains(r#""index":3,"sth":{"log_id":"log-1","root_hash":"0707"#),
            "{json}"
        );
        assert!(json.ends_with(r#""tree_size":4},"tree_size":4}"#), "{json}");
        let back: ProofResponse = serde_json::from_str(&json).expect("de");
        assert_eq!(back, body);
        // The nested head has every field of a head, whatever their order.
        let value: serde_json::Value = serde_json::from_str(&json).expect("value");
        assert_eq!(value["sth"], serde_json::to_value(sth()).expect("sth"));
    }

    #[test]
    fn a_proof_is_the_evidence_of_its_entry() {
        let evidence = ProofResponse::new(3, sth(), &[[9; 32]]).into_evidence(b"entry");
        assert_eq!(evidence, LogEvidence::new(3, b"entry", sth(), &[[9; 32]]));
    }

    #[test]
    fn the_entries_page_keeps_its_shape() {
        let page = EntriesPage {
            entries: vec![
                PageEntry::new(7, b"{\"a\":1}"),
                PageEntry::new(8, &[0, 255, 34, 92]),
            ],
            tree_size: 12,
            next: Some(9),
        };
        let json = serde_json::to_string(&page).expect("ser");
        assert_eq!(
            json,
            r#"{"entries":[{"seq":7,"entry":"eyJhIjoxfQ=="},{"seq":8,"entry":"AP8iXA=="}],"tree_size":12,"next":9}"#
        );
        let back: EntriesPage = serde_json::from_str(&json).expect("de");
        assert_eq!(back, page);
        assert_eq!(back.entries[1].bytes().expect("b64"), vec![0, 255, 34, 92]);
        let empty = EntriesPage {
            entries: vec![],
            tree_size: 0,
            next: None,
        };
        assert_eq!(
            serde_json::to_string(&empty).expect("ser"),
            r#"{"entries":[],"tree_size":0,"next":null}"#
        );
        // Newer servers may add fields.
        let more: EntriesPage =
            serde_json::from_str(r#"{"entries":[],"tree_size":0,"next":null,"x":1}"#).expect("de");
        assert_eq!(more, empty);
    }
}
