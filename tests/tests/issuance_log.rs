//! The issuance log end to end: evidence in every sign response verifies on
//! the client side, concurrent requests share fsyncs and tree heads, `log
//! verify` / `show` / `monitor` work on what a real server wrote, a torn tail
//! is cut on restart, tampering is caught, and disk faults stop issuance
//! without losing anything a client received.

use ca_proto::logentry::LogEntry;
use ca_proto::sth::{LogEvidence, LogPublicKey};
use serde_json::json;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use trellis_e2e::{bin, openssl_csr, run, text, TestServer};

const P256: &[&str] = &["ec", "-pkeyopt", "ec_paramgen_curve:P-256"];

fn csr(dir: &Path, name: &str, host: &str) -> String {
    openssl_csr(
        dir,
        name,
        P256,
        &format!("/CN={host}"),
        &["-addext", &format!("subjectAltName=DNS:{host}")],
    )
}

fn log_key(server: &TestServer) -> LogPublicKey {
    let pem = server
        .client()
        .request("GET", "/v1/log/dev-1/key", &[], b"")
        .text();
    LogPublicKey::from_pem(&pem).expect("log key PEM")
}

fn ca_server(dir: &Path, args: &[&str]) -> std::process::Output {
    run(Command::new(bin("ca-server"))
        .args(args)
        .arg("--dir")
        .arg(dir))
}

#[test]
fn every_issued_certificate_comes_with_a_verifiable_inclusion_proof() {
    let server = TestServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let key = log_key(&server);
    let pem = csr(tmp.path(), "a", "a.db.internal");
    let (status, body) = server.native_sign("db", &json!({"class": "db", "csr": pem}));
    assert_eq!(status, 200, "{body}");
    let evidence: LogEvidence =
        serde_json::from_value(body["log"].clone()).expect("log evidence in the response");
    let entry_bytes = evidence.verify(&key).expect("evidence verifies");
    let entry = LogEntry::from_bytes(&entry_bytes).unwrap();
    assert_eq!(entry.serial(), body["serial"].as_str());
    let cert_pem = body["certificate"].as_str().unwrap();
    let der = pem_der(cert_pem);
    assert_eq!(
        entry.certificate_der().unwrap(),
        der,
        "the logged certificate is the one returned"
    );

    // tampering with the evidence is caught
    let mut forged = evidence.clone();
    forged.index += 1;
    assert!(forged.verify(&key).is_err());
    let mut forged = evidence.clone();
    forged.sth.tree_size += 1;
    assert!(forged.verify(&key).is_err());

    // the proof endpoint agrees with the evidence, against a later head too
    let (status2, _) = server.native_sign(
        "db",
        &json!({"class": "db", "csr": csr(tmp.path(), "b", "b.db.internal")}),
    );
    assert_eq!(status2, 200);
    // entries and proof need a signed request (any valid key)
    let proof = server
        .signed_get("db", &format!("/v1/log/dev-1/proof?seq={}", evidence.index))
        .json();
    let later = LogEvidence {
        log_id: "dev-1".into(),
        index: evidence.index,
        entry: evidence.entry.clone(),
        sth: serde_json::from_value(proof["sth"].clone()).unwrap(),
        inclusion_proof: serde_json::from_value(proof["inclusion_proof"].clone()).unwrap(),
    };
    assert!(later.sth.tree_size > evidence.sth.tree_size);
    later
        .verify(&key)
        .expect("proof against the newer head verifies");
    let entries = server
        .signed_get("db", "/v1/log/dev-1/entries?start=0&end=10")
        .json();
    assert_eq!(
        entries["entries"].as_array().unwrap().len() as u64,
        later.sth.tree_size
    );
    let bad = server.signed_get("db", "/v1/log/dev-1/proof?seq=999999");
    assert_eq!(bad.status, 404);
}

#[test]
fn concurrent_requests_share_tree_heads_and_the_log_verifies() {
    let mut server = TestServer::start();
    let tmp = tempfile::tempdir().unwrap();
    let csrs: Vec<String> = (0..40)
        .map(|i| csr(tmp.path(), &format!("c{i}"), &format!("c{i}.db.internal")))
        .collect();
    // one denial too
    let denied = openssl_csr(
        tmp.path(),
        "ip",
        P256,
        "/CN=ip.db.internal",
        &["-addext", "subjectAltName=DNS:ip.db.internal,IP:1.1.1.1"],
    );
    let server_ref = &server;
    let results: Vec<(u16, serde_json::Value)> = std::thread::scope(|s| {
        let handles: Vec<_> = csrs
            .iter()
            .map(|c| {
                s.spawn(move || server_ref.native_sign("db", &json!({"class": "db", "csr": c})))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let (status, _) = server.native_sign("db", &json!({"class": "db", "csr": denied}));
    assert_eq!(status, 403);
    assert!(results.iter().all(|(s, _)| *s == 200));
    let sizes: std::collections::HashSet<u64> = results
        .iter()
        .map(|(_, b)| b["log"]["sth"]["tree_size"].as_u64().unwrap())
        .collect();
    assert!(
        sizes.len() < results.len(),
        "40 concurrent requests got 40 different tree heads: no group commit"
    );
    server.stop();

    let verify = ca_server(&server.dir, &["log", "verify"]);
    assert!(verify.status.success(), "{}", text(&verify));
    // 40 from the clients, 1 denial, and the server's own TLS certificate
    assert!(
        text(&verify).contains("42 entries (41 issued, 1 denied, 0 revocations)"),
        "{}",
        text(&verify)
    );
    let own = ca_server(&server.dir, &["log", "show", "--class", "ca"]);
    assert!(
        text(&own).contains("key=ca-server") && text(&own).contains("names=localhost"),
        "{}",
        text(&own)
    );

    let show = ca_server(&server.dir, &["log", "show", "--denied"]);
    assert!(
        text(&show).contains("ip_not_allowed") && text(&show).lines().count() == 1,
        "{}",
        text(&show)
    );
    let serial = results[7].1["serial"].as_str().unwrap();
    let show = ca_server(&server.dir, &["log", "show", "--serial", serial]);
    assert!(text(&show).contains("c7.db.internal"), "{}", text(&show));
    let show = ca_server(
        &server.dir,
        &["log", "show", "--san", "c3.db.internal", "--json"],
    );
    assert_eq!(text(&show).lines().count(), 1);

    // the monitor finds nothing wrong... until the policy changes under it
    let monitor = ca_server(&server.dir, &["log", "monitor"]);
    assert!(monitor.status.success(), "{}", text(&monitor));
    let policy = server.dir.join("policies/db.toml");
    let original = std::fs::read_to_string(&policy).unwrap();
    std::fs::write(&policy, original.replace("\"*.db.internal\", ", "")).unwrap();
    let monitor = ca_server(&server.dir, &["log", "monitor"]);
    assert_eq!(monitor.status.code(), Some(3), "{}", text(&monitor));
    assert!(text(&monitor).contains("policy_violation"));
    std::fs::write(&policy, original).unwrap();
}

/// Where the records of a log file end, read independently of the server:
/// `[kind u8][len u32 BE][payload][crc32 u32 BE]` until the end of the file
/// or a zero kind byte (allocated space).
fn records_end(bytes: &[u8]) -> usize {
    let mut at = 0;
    while at + 5 <= bytes.len() && bytes[at] != 0 {
        let len = u32::from_be_bytes(bytes[at + 1..at + 5].try_into().unwrap()) as usize;
        at += 5 + len + 4;
    }
    at
}

/// The writer keeps zeroed space allocated past the last record, so a
/// group commit's fdatasync has no file size to commit. The space is never
/// mistaken for a tear: `log verify` accepts a running or crashed log,
/// restart cuts it without a warning, and a stopped log ends at its last
/// record.
#[test]
fn zeroed_space_past_the_records_is_no_tear_and_a_stopped_log_has_none() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("var");
    let data = dir.join("log/dev-1/log.dat");
    let mut server = TestServer::start_in(&dir, &[]);
    for i in 0..3 {
        let (status, body) = server.native_sign("db", &json!({"class": "db", "csr": csr(tmp.path(), &format!("z{i}"), &format!("z{i}.db.internal"))}));
        assert_eq!(status, 200, "{body}");
    }
    let running = std::fs::read(&data).unwrap();
    let end = records_end(&running);
    assert!(
        running.len() >= end + (1 << 19),
        "{} bytes of records, file of {}: no space allocated ahead",
        end,
        running.len()
    );
    assert!(running[end..].iter().all(|b| *b == 0));
    let verify = ca_server(&dir, &["log", "verify"]);
    assert!(verify.status.success(), "running: {}", text(&verify));

    // A crash leaves the space; verify accepts it, restart cuts it quietly.
    server.kill();
    let verify = ca_server(&dir, &["log", "verify"]);
    assert!(verify.status.success(), "after a crash: {}", text(&verify));
    let mut server = TestServer::start_in(&dir, &[]);
    assert!(
        !server.server_log().contains("torn"),
        "{}",
        server.server_log()
    );
    let (status, _) = server.native_sign(
        "db",
        &json!({"class": "db", "csr": csr(tmp.path(), "z9", "z9.db.internal")}),
    );
    assert_eq!(status, 200);
    server.stop();
    let stopped = std::fs::read(&data).unwrap();
    assert_eq!(
        records_end(&stopped),
        stopped.len(),
        "a stopped log ends at its last record"
    );
    assert!(stopped.len() > end, "the new entry and heads were kept");
    let verify = ca_server(&dir, &["log", "verify"]);
    assert!(verify.status.success(), "stopped: {}", text(&verify));
}

/// The writer answers a batch once its entries are durable, and writes the
/// batch's tree head after their fdatasync (signed meanwhile); the head
/// record becomes durable with the next batch. A crash between the two
/// leaves entries with no head after them: restart keeps every one, signs a
/// new head over the same tree, and the head the client was given (same
/// size, same root) still proves its entry against the recovered log.
#[test]
fn a_crash_before_the_head_record_loses_no_entry_and_the_clients_head_still_holds() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("var");
    let data = dir.join("log/dev-1/log.dat");
    let mut server = TestServer::start_in(&dir, &[]);
    let key = log_key(&server);
    let mut last = None;
    for i in 0..3 {
        let (status, body) = server.native_sign("db", &json!({"class": "db", "csr": csr(tmp.path(), &format!("h{i}"), &format!("h{i}.db.internal"))}));
        assert_eq!(status, 200, "{body}");
        last = Some(body);
    }
    let last = last.unwrap();
    let evidence: LogEvidence = serde_json::from_value(last["log"].clone()).unwrap();
    let serial = last["serial"].as_str().unwrap().to_string();
    server.kill();

    // The crash: the last batch's head record never reached the disk.
    let bytes = std::fs::read(&data).unwrap();
    let recs = records(&bytes[..records_end(&bytes)]);
    let (kind, head) = recs.last().unwrap();
    assert_eq!(*kind, 2, "the last record is a tree head");
    let cut = records_end(&bytes) - head.len();
    assert_eq!(recs[recs.len() - 2].0, 1, "an entry precedes it");
    std::fs::write(&data, &bytes[..cut]).unwrap();

    let mut server = TestServer::start_in(&dir, &[]);
    let client = server.client();
    let sth = client.request("GET", "/v1/log/dev-1/sth", &[], b"").json();
    assert_eq!(sth["tree_size"].as_u64(), Some(evidence.sth.tree_size));
    assert_eq!(
        sth["root_hash"].as_str(),
        Some(evidence.sth.root_hash.as_str())
    );
    evidence
        .verify(&key)
        .expect("the head the client holds still verifies");
    server.stop();
    let show = ca_server(&dir, &["log", "show", "--serial", &serial]);
    assert!(text(&show).contains(serial.as_str()), "{}", text(&show));
    let verify = ca_server(&dir, &["log", "verify"]);
    assert!(verify.status.success(), "{}", text(&verify));
}

#[test]
fn a_torn_tail_is_cut_on_restart_and_tampering_is_detected() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("var");
    let mut server = TestServer::start_in(&dir, &[]);
    let mut serials = Vec::new();
    for i in 0..3 {
        let (status, body) = server.native_sign("db", &json!({"class": "db", "csr": csr(tmp.path(), &format!("t{i}"), &format!("t{i}.db.internal"))}));
        assert_eq!(status, 200);
        serials.push(body["serial"].as_str().unwrap().to_string());
    }
    server.stop();
    let data = dir.join("log/dev-1/log.dat");
    let good = std::fs::read(&data).unwrap();
    // a crash in the middle of a write: half a record
    let mut torn = good.clone();
    torn.extend_from_slice(&[1, 0, 0, 1, 0, b'{', b'"']);
    std::fs::write(&data, &torn).unwrap();
    let verify = ca_server(&dir, &["log", "verify"]);
    assert!(!verify.status.success(), "verify accepted a torn tail");

    let mut server = TestServer::start_in(&dir, &[]);
    let log = server.server_log();
    assert!(
        log.contains("cutting a torn tail") && log.contains("cut_bytes=7"),
        "{log}"
    );
    let (status, _) = server.native_sign(
        "db",
        &json!({"class": "db", "csr": csr(tmp.path(), "t9", "t9.db.internal")}),
    );
    assert_eq!(status, 200);
    server.stop();
    let verify = ca_server(&dir, &["log", "verify"]);
    assert!(verify.status.success(), "{}", text(&verify));
    for serial in &serials {
        let show = ca_server(&dir, &["log", "show", "--serial", serial]);
        assert!(
            text(&show).contains(serial.as_str()),
            "{serial} lost after recovery"
        );
    }

    // rewrite one entry (with a valid checksum): the signed roots no longer match
    let bytes = std::fs::read(&data).unwrap();
    let forged = forge_first_entry(&bytes, "t0.db.internal", "t0.db.evil-twin");
    std::fs::write(&data, forged).unwrap();
    let verify = ca_server(&dir, &["log", "verify"]);
    assert!(!verify.status.success());
    assert!(
        text(&verify).contains("root does not match"),
        "{}",
        text(&verify)
    );
}

/// Replace text inside the first entry record and recompute its framing.
fn forge_first_entry(bytes: &[u8], from: &str, to: &str) -> Vec<u8> {
    let len = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
    let payload = String::from_utf8(bytes[5..5 + len].to_vec())
        .unwrap()
        .replacen(from, to, 1);
    let mut out = vec![1u8];
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload.as_bytes());
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out.extend_from_slice(&bytes[5 + len + 4..]);
    out
}

fn pem_der(pem: &str) -> Vec<u8> {
    use base64::Engine;
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap()
}

/// Full disk and read-only filesystem under the log: 503 `log_unavailable`,
/// unready, nothing half-written, and service resumes when the disk is back.
/// Needs root for the tmpfs mount: CI runs as root, and elsewhere the test
/// fails saying so rather than pass without having run.
#[test]
fn disk_faults_stop_issuance_and_lose_nothing() {
    assert!(
        is_root(),
        "needs root: it mounts a tmpfs under the log (CI runs the tests as root; \
         run them as root, e.g. in the dev container)"
    );
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("var");
    let init = run(Command::new(bin("ca-server"))
        .args(["dev", "--init-only", "--dir"])
        .arg(&dir));
    assert!(init.status.success(), "{}", text(&init));
    let log_dir = dir.join("log/dev-1");
    let key_pem = std::fs::read(log_dir.join("log-key.pem")).unwrap();
    let mount = Mount::tmpfs(&log_dir, "512k");
    std::fs::write(log_dir.join("log-key.pem"), key_pem).unwrap();

    let mut server = TestServer::start_in(&dir, &[]);
    let client = server.client();
    let mut received = Vec::new();
    let mut sign = |name: &str| {
        let (status, body) = server.native_sign(
            "db",
            &json!({"class": "db", "csr": csr(tmp.path(), name, &format!("{name}.db.internal"))}),
        );
        if status == 200 {
            received.push(body["serial"].as_str().unwrap().to_string());
        }
        (status, body)
    };
    assert_eq!(sign("d0").0, 200);

    // fill the disk (dd fails with "No space left on device": that is the point)
    let filler = log_dir.join("filler");
    let dd = run(Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", filler.display()))
        .args(["bs=4k", "count=1000"]));
    assert!(
        text(&dd).contains("No space left on device"),
        "the tmpfs did not fill: {}",
        text(&dd)
    );
    let (status, body) = sign("d1");
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (503, Some("log_unavailable")),
        "{body}"
    );
    assert!(body.get("certificate").is_none());
    assert_eq!(client.request("GET", "/readyz", &[], b"").status, 503);
    std::fs::remove_file(&filler).unwrap();
    assert_eq!(sign("d2").0, 200, "service resumes when space is back");
    assert_eq!(client.request("GET", "/readyz", &[], b"").status, 200);

    assert_eq!(sign("d3").0, 200);
    server.stop();

    // Read-only filesystem (a remount needs the log closed): the server
    // refuses to start, naming the log and the error, rather than serve
    // certificates it cannot record.
    mount.remount("ro");
    let out = run(Command::new(bin("ca-server"))
        .args(["dev", "--listen", "127.0.0.1:0", "--dir"])
        .arg(&dir));
    assert!(!out.status.success());
    let msg = text(&out);
    assert!(
        msg.contains("log") && msg.contains("Read-only file system"),
        "{msg}"
    );
    assert!(!msg.contains("listening on"), "{msg}");
    mount.remount("rw");
    let mut server = TestServer::start_in(&dir, &[]);
    let (status, body) = server.native_sign(
        "db",
        &json!({"class": "db", "csr": csr(tmp.path(), "d4", "d4.db.internal")}),
    );
    assert_eq!(status, 200, "{body}");
    received.push(body["serial"].as_str().unwrap().to_string());
    server.stop();

    let verify = ca_server(&dir, &["log", "verify"]);
    assert!(verify.status.success(), "{}", text(&verify));
    assert_eq!(received.len(), 4);
    for serial in &received {
        let show = ca_server(&dir, &["log", "show", "--serial", serial]);
        assert!(
            text(&show).contains(serial.as_str()),
            "certificate {serial} was returned but is not in the log"
        );
    }
    assert!(
        text(&verify).contains("4 entries (4 issued, 0 denied, 0 revocations)"),
        "{}",
        text(&verify)
    );
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

struct Mount(std::path::PathBuf);

impl Mount {
    fn tmpfs(at: &Path, size: &str) -> Mount {
        std::fs::create_dir_all(at).unwrap();
        let out = run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at));
        assert!(out.status.success(), "mount: {}", text(&out));
        Mount(at.to_path_buf())
    }
    fn remount(&self, mode: &str) {
        let out = run(Command::new("mount")
            .args(["-o", &format!("remount,{mode}")])
            .arg(&self.0));
        assert!(out.status.success(), "remount {mode}: {}", text(&out));
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// The log's records as (kind, whole record bytes), to cut and splice.
fn records(bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 9 <= bytes.len() {
        let len = u32::from_be_bytes([bytes[at + 1], bytes[at + 2], bytes[at + 3], bytes[at + 4]])
            as usize;
        out.push((bytes[at], bytes[at..at + 9 + len].to_vec()));
        at += 9 + len;
    }
    out
}

#[test]
fn removed_reordered_and_forged_records_are_detected() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("var");
    let mut server = TestServer::start_in(&dir, &[]);
    for i in 0..4 {
        let (status, _) = server.native_sign("db", &json!({"class": "db", "csr": csr(tmp.path(), &format!("x{i}"), &format!("x{i}.db.internal"))}));
        assert_eq!(status, 200);
    }
    server.stop();
    let data = dir.join("log/dev-1/log.dat");
    let original = std::fs::read(&data).unwrap();
    let recs = records(&original);
    let entries: Vec<usize> = recs
        .iter()
        .enumerate()
        .filter(|(_, (k, _))| *k == 1)
        .map(|(i, _)| i)
        .collect();
    let heads: Vec<usize> = recs
        .iter()
        .enumerate()
        .filter(|(_, (k, _))| *k == 2)
        .map(|(i, _)| i)
        .collect();
    assert!(
        entries.len() == 5 && !heads.is_empty(),
        "the server's TLS certificate and 4 leaves"
    );
    let join = |recs: &[(u8, Vec<u8>)]| {
        recs.iter()
            .flat_map(|(_, r)| r.clone())
            .collect::<Vec<u8>>()
    };
    let check = |what: &str, bytes: Vec<u8>, expect: &str| {
        std::fs::write(&data, bytes).unwrap();
        let out = ca_server(&dir, &["log", "verify"]);
        assert!(
            !out.status.success(),
            "{what} was not detected: {}",
            text(&out)
        );
        assert!(text(&out).contains(expect), "{what}: {}", text(&out));
    };

    let mut removed = recs.clone();
    removed.remove(entries[1]);
    check("a removed entry", join(&removed), "expected");

    let mut reordered = recs.clone();
    reordered.swap(entries[1], entries[2]);
    check("reordered entries", join(&reordered), "expected");

    // a forged head: the last head's root replaced (signature kept)
    let mut forged = recs.clone();
    let last = *heads.last().unwrap();
    let payload = String::from_utf8(forged[last].1[5..forged[last].1.len() - 4].to_vec()).unwrap();
    let mut head: serde_json::Value = serde_json::from_str(&payload).unwrap();
    head["root_hash"] = json!("00".repeat(32));
    let payload = serde_json::to_vec(&head).unwrap();
    let mut record = vec![2u8];
    record.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    record.extend_from_slice(&payload);
    let crc = crc32fast::hash(&record);
    record.extend_from_slice(&crc.to_be_bytes());
    forged[last] = (2, record);
    check("a forged tree head", join(&forged), "bad signature");

    std::fs::write(&data, &original).unwrap();
    let out = ca_server(&dir, &["log", "verify"]);
    assert!(out.status.success(), "{}", text(&out));
}

/// Stops the load threads when the scope ends, on a panic too.
struct StopOnDrop<'a>(&'a std::sync::atomic::AtomicBool);
impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// SIGKILL a server under concurrent load at random moments, several times;
/// after each restart the log verifies and holds every certificate any client
/// received.
#[test]
fn sigkill_under_load_loses_nothing_a_client_received() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("var");
    let csrs: Vec<String> = (0..4)
        .map(|i| csr(tmp.path(), &format!("k{i}"), &format!("k{i}.db.internal")))
        .collect();
    let received = Mutex::new(Vec::<String>::new());
    let mut seed = std::process::id() as u64 ^ trellis_e2e::now_unix() as u64;
    for round in 0..4 {
        let mut server = TestServer::start_in(&dir, &[]);
        let stop = AtomicBool::new(false);
        let received_before = received.lock().unwrap().len();
        std::thread::scope(|s| {
            let _stop = StopOnDrop(&stop);
            for c in &csrs {
                let (server, stop, received) = (&server, &stop, &received);
                s.spawn(move || {
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) && n < 2000 {
                        n += 1;
                        let body = serde_json::to_vec(&json!({"class": "db", "csr": c})).unwrap();
                        let header = server.auth_header(
                            "db",
                            &body,
                            trellis_e2e::now_unix(),
                            &ca_proto::auth::new_nonce(),
                        );
                        let response =
                            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                server.client().request(
                                    "POST",
                                    "/v1/sign",
                                    &[("authorization", &header)],
                                    &body,
                                )
                            }));
                        match response {
                            Ok(r) if r.status == 200 => {
                                if let Some(serial) = r.json()["serial"].as_str() {
                                    received.lock().unwrap().push(serial.to_string());
                                }
                            }
                            Ok(_) => {}
                            Err(_) => break, // connection refused: the server is gone
                        }
                    }
                });
            }
            // under load: this round's first certificate has been received
            let deadline = Instant::now() + Duration::from_secs(60);
            while received.lock().unwrap().len() == received_before {
                assert!(
                    Instant::now() < deadline,
                    "round {round}: no certificate within 60 s:\n{}",
                    server.server_log()
                );
                std::thread::sleep(Duration::from_millis(10)); // poll interval
            }
            // then the kill at a pseudo-random moment within the next second
            // (the moment is the fault being injected, not a wait)
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            std::thread::sleep(Duration::from_millis((seed >> 33) % 1000));
            if let Some(pid) = server.pid() {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
            stop.store(true, Ordering::Relaxed);
        });
        server.kill();
        // restart: recovery cuts any torn tail; stop cleanly; verify offline
        let mut again = TestServer::start_in(&dir, &[]);
        again.stop();
        let verify = ca_server(&dir, &["log", "verify"]);
        assert!(verify.status.success(), "round {round}: {}", text(&verify));
    }
    let received = received.into_inner().unwrap();
    assert!(
        received.len() > 20,
        "the load produced only {} certificates",
        received.len()
    );
    let logged = ca_server(&dir, &["log", "show", "--json"]);
    let logged: std::collections::HashSet<String> = String::from_utf8_lossy(&logged.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|e| e["serial"].as_str().map(str::to_string))
        .collect();
    let missing: Vec<&String> = received.iter().filter(|s| !logged.contains(*s)).collect();
    assert!(
        missing.is_empty(),
        "{} certificates were returned but are not in the log: {missing:?}",
        missing.len()
    );
}
