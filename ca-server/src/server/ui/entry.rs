//! `/ui/entry/{log_id}/{seq}`: one log entry — what was decided, the
//! certificate's decoded fields (issued entries), the reasons (denials),
//! the canonical entry itself, and its inclusion proof with the signed
//! tree head it leads to, verified here with `ca_proto` (the tree head's
//! signature under the log key, then the leaf hash and the proof up to the
//! head's root) — the same check a sidecar makes.

use super::cert;
use super::html::{badge, esc, page, relative, short_hex, short_time, table, Nav};
use super::query_link;
use super::Console;
use crate::inventory::query::decision_name;
use crate::log::LogReader;
use ca_proto::logentry::{LogEntry, Outcome};
use ca_proto::merkle::leaf_hash;
use ca_proto::sth::LogEvidence;
use hyper::StatusCode;
use std::fmt::Write;

pub fn render(
    console: &Console,
    reader: &LogReader,
    log_id: &str,
    seq: &str,
) -> (StatusCode, String) {
    let title = format!("Entry {}", seq.chars().take(24).collect::<String>());
    let fail = |status: StatusCode, text: &str| {
        (
            status,
            page(
                &title,
                Nav::Search,
                console.log.log_id(),
                &format!("<p class=\"notice\">{}</p>", esc(text)),
            ),
        )
    };
    let Ok(seq) = seq.parse::<u64>() else {
        return fail(StatusCode::NOT_FOUND, "No such entry.");
    };
    if log_id != console.log.log_id() {
        return fail(StatusCode::NOT_FOUND, "This replica serves another log.");
    }
    let sth = reader.sth();
    if seq >= sth.tree_size {
        return fail(StatusCode::NOT_FOUND, "No such entry in the signed tree.");
    }
    let read = reader
        .entries_page(seq, Some(seq + 1), 1, usize::MAX)
        .and_then(|page| {
            let (s, bytes) = page
                .entries
                .into_iter()
                .next()
                .ok_or(crate::log::LogError::OutOfRange)?;
            let (proof_sth, proof) = reader.proof(s)?;
            Ok((bytes, proof_sth, proof))
        });
    let (bytes, proof_sth, proof) = match read {
        Ok(found) => found,
        Err(e) => {
            tracing::error!(event = "console_entry_failed", seq, "{e}");
            return fail(
                StatusCode::SERVICE_UNAVAILABLE,
                "The entry cannot be read right now (see the server's log).",
            );
        }
    };
    let entry = match LogEntry::from_bytes(&bytes) {
        Ok(e) => e,
        Err(e) => {
            return fail(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("The entry does not parse: {e}"),
            )
        }
    };
    let now = super::now();
    let mut body = String::new();
    let decision = decision_name(entry.decision());
    let _ = write!(
        body,
        "<section class=\"cards\"><div class=\"card\"><h2>Decision</h2><p>{}</p><dl>\
         <dt>Time</dt><dd>{} UTC ({})</dd><dt>Class</dt><dd><a href=\"/ui/search?{}\">{}</a></dd>\
         <dt>Profile</dt><dd>{}</dd><dt>Auth key</dt><dd><a href=\"/ui/search?{}\">{}</a></dd></dl></div>",
        badge(decision, decision),
        esc(&short_time(entry.time.unix_timestamp())),
        esc(&relative(entry.time.unix_timestamp(), now)),
        esc(&query_link(&[("class", &entry.class)])),
        esc(&entry.class),
        esc(&entry.profile),
        esc(&query_link(&[("key", &entry.key_id)])),
        esc(&entry.key_id),
    );
    body.push_str(&proof_card(console, seq, &bytes, proof_sth, &proof));
    body.push_str("</section>");
    match &entry.outcome {
        Outcome::Issued(i) => {
            let _ = write!(
                body,
                "<h2>Certificate</h2><p class=\"links\"><a href=\"/ui/search?{}\">every entry of this serial</a> · \
                 <a href=\"/ui/search?{}\">every certificate of this key</a></p>",
                esc(&query_link(&[("serial", &i.serial)])),
                esc(&query_link(&[("spki", &i.spki_sha256)])),
            );
            match entry.certificate_der() {
                Some(der) => {
                    body.push_str(&cert::html(&der));
                    let _ = write!(
                        body,
                        "<details><summary>PEM</summary><pre>{}</pre></details>",
                        esc(&cert::pem(&der))
                    );
                }
                None => {
                    body.push_str("<p class=\"warning\">The entry's certificate is not base64.</p>")
                }
            }
        }
        Outcome::Denied(d) => {
            let rows: Vec<Vec<String>> = d
                .reasons
                .iter()
                .map(|r| vec![format!("<code>{}</code>", esc(&r.code)), esc(&r.detail)])
                .collect();
            let _ = write!(
                body,
                "<h2>Why it was denied</h2>{}<h2>What was asked for</h2><p>{}</p>",
                table("reasons", &["Reason", "Detail"], &rows),
                esc(&d
                    .dns
                    .iter()
                    .chain(&d.ips)
                    .chain(&d.uris)
                    .chain(d.subject.iter())
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "))
            );
        }
        Outcome::Revoked(r) => {
            let _ = write!(
                body,
                "<h2>Revocation</h2><dl class=\"fields\"><dt>Serial</dt><dd><a href=\"/ui/search?{}\">{}</a></dd>\
                 <dt>Reason</dt><dd>{}</dd><dt>Revoked at</dt><dd>{}</dd><dt>Certificate expires</dt><dd>{}</dd>\
                 <dt>Issuer</dt><dd>{}</dd></dl>",
                esc(&query_link(&[("serial", &r.serial)])),
                esc(&r.serial),
                esc(&r.reason),
                esc(r.revoked_at.as_str()),
                esc(r.not_after.as_str()),
                short_hex(&r.issuer),
            );
        }
    }
    let pretty = serde_json::from_slice::<serde_json::Value>(&bytes)
        .and_then(|v| serde_json::to_string_pretty(&v))
        .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
    let _ = write!(
        body,
        "<h2>Log entry</h2><p>The exact bytes hashed as Merkle leaf {seq} ({} bytes), shown indented.</p>\
         <details><summary>entry JSON</summary><pre>{}</pre></details>",
        bytes.len(),
        esc(&pretty)
    );
    (
        StatusCode::OK,
        page(&title, Nav::Search, console.log.log_id(), &body),
    )
}

fn proof_card(
    console: &Console,
    seq: u64,
    bytes: &[u8],
    sth: ca_proto::sth::SignedTreeHead,
    proof: &[ca_proto::merkle::Hash],
) -> String {
    let evidence = LogEvidence::new(seq, bytes, sth.clone(), proof);
    let verdict = match evidence.verify(console.log.public_key()) {
        Ok(entry) if entry == bytes => badge("ok", "verified"),
        Ok(_) => badge("bad", "the proof is for other bytes"),
        Err(e) => badge("bad", &format!("does not verify: {e}")),
    };
    let path: Vec<String> = proof
        .iter()
        .enumerate()
        .map(|(i, h)| format!("<li>{i}: <code>{}</code></li>", hex::encode(h)))
        .collect();
    format!(
        "<div class=\"card\" id=\"proof\"><h2>Inclusion proof</h2><p>{verdict}</p><dl>\
         <dt>Leaf</dt><dd>{seq} of {size}</dd><dt>Leaf hash</dt><dd>{leaf}</dd>\
         <dt>Tree head</dt><dd>size {size}, signed {signed} UTC</dd>\
         <dt>Root hash</dt><dd>{root}</dd><dt>Log key</dt><dd>{key}</dd></dl>\
         <details><summary>Audit path ({n} hashes)</summary><ol class=\"hashes\">{path}</ol></details></div>",
        size = sth.tree_size,
        leaf = short_hex(&hex::encode(leaf_hash(bytes))),
        signed = esc(&short_time(sth.timestamp_ms / 1000)),
        root = short_hex(&sth.root_hash),
        key = short_hex(&console.log.public_key().key_id()),
        n = proof.len(),
        path = path.join(""),
    )
}
