//! The issuance core against a real SoftHSM2 deployment made by the same code
//! as `ca-server dev`, checked with `openssl verify -x509_strict`.

use ca_server::admin;
use ca_server::config::Config;
use ca_server::dev;
use ca_server::issue::{Authority, Caller, IssueError, IssueRequest, Operator, Recorder, Scope};
use rcgen::{CertificateParams, CustomExtension, DistinguishedName, DnType, KeyPair};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};
use x509_parser::extensions::ParsedExtension;

struct Fixture {
    dir: PathBuf,
    authority: Arc<Authority>,
    log: ca_server::log::IssuanceLog,
    _tmp: tempfile::TempDir,
}

/// The callers of these tests: the operator (every class), and a key that
/// may ask for `api` only.
const OPERATOR: Caller<'static> = Caller {
    key_id: "test-operator",
    scope: &Operator,
};

struct ApiOnly;
impl Scope for ApiOnly {
    fn allows(&self, class: &str, _profile: &str) -> bool {
        class == "api"
    }
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let tmp = tempfile::Builder::new()
            .prefix("trellis-issuance")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap();
        let paths = dev::prepare(tmp.path(), "127.0.0.1:0").unwrap();
        let config = Config::load(&paths.config).unwrap();
        let module = admin::open_module(&config).unwrap();
        dev::ensure_tokens(&paths, &module).unwrap();
        let policies = admin::load_policies(&config).unwrap();
        let created = admin::init_classes(&config, &module, &policies).unwrap();
        assert!(created.contains(&"db".to_string()) && created.contains(&"api".to_string()));
        // idempotent: a second run creates nothing
        assert!(admin::init_classes(&config, &module, &policies)
            .unwrap()
            .is_empty());
        // Keys for the log test are made here, before tests run in parallel
        // (SoftHSM2 dislikes key generation next to concurrent signing).
        let mut log_config = config.clone();
        log_config.log.log_id = "index-test".into();
        admin::ensure_log_key(&log_config, &module).unwrap();
        log_config.log.log_id = "gather-test".into();
        admin::ensure_log_key(&log_config, &module).unwrap();
        log_config.log.log_id = "late-evidence".into();
        admin::ensure_log_key(&log_config, &module).unwrap();
        admin::ensure_log_key(&config, &module).unwrap();
        let authority = admin::open_authority(&config, &module, policies).unwrap();
        let log = admin::open_log(&config, &module).unwrap();
        authority.set_recorder(Recorder::Log(log.clone()));
        Fixture {
            dir: paths.dir,
            authority,
            log,
            _tmp: tmp,
        }
    })
}

fn csr(names: &[&str], customize: impl FnOnce(&mut CertificateParams)) -> (Vec<u8>, KeyPair) {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name = DistinguishedName::new();
    if let Some(first) = names.first() {
        params.distinguished_name.push(DnType::CommonName, *first);
    }
    customize(&mut params);
    (params.serialize_request(&key).unwrap().der().to_vec(), key)
}

fn request(class: &str, profile: &str, csr: Vec<u8>) -> IssueRequest {
    IssueRequest {
        class: class.into(),
        profile: Some(profile.into()),
        csr,
        hosts: None,
        ttl: None,
    }
}

fn openssl_verify(dir: &Path, root: &Path, intermediate: &Path, leaf_pem: &str) -> (bool, String) {
    let leaf = dir.join(format!("leaf-{}.pem", std::process::id()));
    std::fs::write(&leaf, leaf_pem).unwrap();
    let out = Command::new("openssl")
        .args(["verify", "-x509_strict", "-CAfile"])
        .arg(root)
        .arg("-untrusted")
        .arg(intermediate)
        .arg(&leaf)
        .output()
        .expect("openssl is installed");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn a_db_leaf_verifies_against_the_db_root_and_not_against_another_class() {
    let f = fixture();
    let (der, _key) = csr(&["api-1.db.internal"], |_| {});
    let issued = f
        .authority
        .issue_blocking(request("db", "server", der), &OPERATOR)
        .unwrap();
    let classes = f.dir.join("classes");
    let (ok, text) = openssl_verify(
        &f.dir,
        &classes.join("db/root.pem"),
        &classes.join("db/intermediate.pem"),
        &issued.pem,
    );
    assert!(ok, "db leaf does not verify: {text}");
    // chain.pem = intermediate + root also serves as an -untrusted bundle
    for other in ["api", "web", "ca"] {
        let (ok, text) = openssl_verify(
            &f.dir,
            &classes.join(format!("{other}/root.pem")),
            &classes.join("db/intermediate.pem"),
            &issued.pem,
        );
        assert!(!ok, "db leaf verified against the {other} root: {text}");
        let (ok, _) = openssl_verify(
            &f.dir,
            &classes.join(format!("{other}/root.pem")),
            &classes.join(format!("{other}/intermediate.pem")),
            &issued.pem,
        );
        assert!(!ok, "db leaf verified through the {other} chain");
    }
}

#[test]
fn leaves_carry_the_profile_and_nothing_from_the_csr() {
    let f = fixture();
    // The CSR asks for an arbitrary extension and clientAuth; neither may appear.
    let (der, key) = csr(&["pg-0.db.internal"], |p| {
        p.custom_extensions.push(CustomExtension::from_oid_content(
            &[1, 3, 6, 1, 4, 1, 99999, 1],
            vec![0x05, 0x00],
        ));
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    });
    let before = time::OffsetDateTime::now_utc();
    let issued = f
        .authority
        .issue_blocking(request("db", "server", der), &OPERATOR)
        .unwrap();
    let (_, cert) = x509_parser::parse_x509_certificate(&issued.der).unwrap();
    assert_eq!(
        cert.public_key().subject_public_key.data.as_ref(),
        key.public_key_raw()
    );
    let backdate = before.unix_timestamp() - cert.validity().not_before.timestamp();
    assert!(
        (299..=301).contains(&backdate),
        "notBefore backdated {backdate}s"
    );
    let lifetime = cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
    assert!(
        (24 * 3600 + 299..=24 * 3600 + 301).contains(&lifetime),
        "lifetime {lifetime}s"
    );
    assert_eq!(cert.raw_serial().len(), 16);
    let mut seen = Vec::new();
    for ext in cert.extensions() {
        seen.push(ext.oid.to_id_string());
        match ext.parsed_extension() {
            ParsedExtension::BasicConstraints(bc) => assert!(!bc.ca && ext.critical),
            ParsedExtension::KeyUsage(ku) => {
                assert!(ku.digital_signature() && !ku.key_encipherment() && !ku.key_cert_sign())
            }
            ParsedExtension::ExtendedKeyUsage(eku) => assert!(eku.server_auth && !eku.client_auth),
            ParsedExtension::SubjectAlternativeName(san) => assert_eq!(san.general_names.len(), 1),
            _ => {}
        }
    }
    seen.sort();
    assert_eq!(
        seen,
        [
            "2.5.29.14",
            "2.5.29.15",
            "2.5.29.17",
            "2.5.29.19",
            "2.5.29.35",
            "2.5.29.37"
        ],
        "extensions: SKI, KU, SAN, BC, AKI, EKU and nothing else"
    );
}

#[test]
fn a_csr_asking_for_ca_true_is_denied() {
    let f = fixture();
    let (der, _) = csr(&["ca-wannabe.db.internal"], |p| {
        // basicConstraints { cA TRUE }, requested as an extension
        p.custom_extensions.push(CustomExtension::from_oid_content(
            &[2, 5, 29, 19],
            vec![0x30, 0x03, 0x01, 0x01, 0xff],
        ));
    });
    match f
        .authority
        .issue_blocking(request("db", "server", der), &OPERATOR)
    {
        Err(IssueError::Denied { reasons, .. }) => {
            assert!(
                reasons.iter().any(|r| r.code.as_str() == "ca_requested"),
                "{reasons:?}"
            )
        }
        other => panic!("expected a denial, got {other:?}"),
    }
}

#[test]
fn a_csr_with_a_broken_signature_is_refused() {
    let f = fixture();
    let (mut der, _) = csr(&["x.db.internal"], |_| {});
    let last = der.len() - 1;
    der[last] ^= 0x01;
    let err = f
        .authority
        .issue_blocking(request("db", "server", der), &OPERATOR)
        .unwrap_err();
    assert_eq!(err.code().as_str(), "bad_csr_signature", "{err}");
    let err = f
        .authority
        .issue_blocking(request("db", "server", b"not a csr".to_vec()), &OPERATOR)
        .unwrap_err();
    assert_eq!(err.code().as_str(), "malformed_csr", "{err}");
}

#[test]
fn two_thousand_issued_serials_are_distinct_16_byte_and_random() {
    let f = fixture();
    let (der, _) = csr(&["serial.db.internal"], |_| {});
    let (tx, rx) = std::sync::mpsc::channel();
    // 16 callers at once, 125 certificates each.
    for _ in 0..16 {
        let tx = tx.clone();
        let authority = f.authority.clone();
        let der = der.clone();
        std::thread::spawn(move || {
            for _ in 0..125 {
                let _ = tx.send(
                    authority
                        .issue_blocking(request("db", "client", der.clone()), &OPERATOR)
                        .map(|i| i.serial_hex),
                );
            }
        });
    }
    drop(tx);
    let serials: Vec<Vec<u8>> = rx
        .iter()
        .map(|r| hex::decode(r.unwrap()).unwrap())
        .collect();
    assert_eq!(serials.len(), 2000);
    assert!(serials.iter().all(|s| s.len() == 16 && s[0] & 0x80 == 0));
    let distinct: std::collections::HashSet<_> = serials.iter().collect();
    assert_eq!(distinct.len(), 2000);
    let varying = (0..128)
        .filter(|bit| {
            let get = |s: &Vec<u8>| s[bit / 8] >> (7 - bit % 8) & 1;
            serials.iter().any(|s| get(s) != get(&serials[0]))
        })
        .count();
    assert!(varying >= 120, "only {varying} of 128 serial bits vary");
}

/// A denial entry for the log tests: `key_id`, and `i` in its reason.
fn denied_entry(key_id: String, i: u64) -> ca_proto::logentry::LogEntry {
    use ca_proto::logentry::{DeniedEntry, LogEntry, LogReason, Outcome};
    LogEntry {
        seq: 0,
        time: "2026-11-28T00:00:00Z".parse().unwrap(),
        log_id: String::new(),
        class: "db".into(),
        profile: "server".into(),
        key_id,
        outcome: Outcome::Denied(DeniedEntry {
            subject: None,
            dns: vec![],
            ips: vec![],
            uris: vec![],
            reasons: vec![LogReason {
                code: "test".into(),
                detail: format!("entry {i}"),
            }],
        }),
    }
}

/// The fixture's configuration with a log of its own (`log_id`, whose key
/// the fixture made first), and the HSM module.
fn own_log(log_id: &str) -> (Config, hsm::Module) {
    let mut config = Config::load(&fixture().dir.join("config.toml")).unwrap();
    config.log.log_id = log_id.into();
    let module = admin::open_module(&config).unwrap();
    (config, module)
}

#[test]
fn log_entries_are_read_back_through_the_sparse_index_before_and_after_recovery() {
    use ca_proto::logentry::LogEntry;
    let (config, module) = own_log("index-test");
    let entry = |i: u64| denied_entry(format!("k{i}"), i);
    let total = 2 * 1024 + 77;
    {
        let log = admin::open_log(&config, &module).unwrap();
        for i in 0..total {
            log.append_blocking(entry(i)).unwrap();
        }
    }
    // reopen: recovery rebuilds the index from the file
    for round in 0..2 {
        let log = admin::open_log(&config, &module).unwrap();
        for (start, end) in [(0, 3), (1020, 1030), (2047, 2049), (total - 5, total + 100)] {
            let got = log.entries(start, end).unwrap();
            let want: Vec<u64> = (start..end.min(total)).collect();
            assert_eq!(
                got.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
                want,
                "round {round} {start}..{end}"
            );
            for (seq, bytes) in got {
                let e = LogEntry::from_bytes(&bytes).unwrap();
                assert_eq!((e.seq, e.key_id), (seq, format!("k{seq}")));
            }
        }
        let (sth, proof) = log.proof(1500).unwrap();
        let bytes = log.entries(1500, 1501).unwrap().remove(0).1;
        let root: [u8; 32] = hex::decode(&sth.root_hash).unwrap().try_into().unwrap();
        assert!(ca_proto::merkle::verify_inclusion(
            &ca_proto::merkle::leaf_hash(&bytes),
            1500,
            sth.tree_size,
            &proof,
            &root
        ));
    }
}

#[test]
fn every_certificate_comes_back_recorded_and_every_refusal_is_recorded() {
    use ca_proto::logentry::{LogDecision, LogEntry};
    let f = fixture();
    let (der, _) = csr(&["recorded.db.internal"], |_| {});
    let issued = f
        .authority
        .issue_blocking(request("db", "server", der.clone()), &OPERATOR)
        .unwrap();
    // The evidence is for this very certificate, in the log the authority
    // records to, under the log's key.
    let evidence = issued
        .evidence()
        .expect("the proof reads")
        .expect("recorded issuance has evidence");
    let entry = LogEntry::from_bytes(&evidence.verify(f.log.public_key()).unwrap()).unwrap();
    assert_eq!(entry.decision(), LogDecision::Issued);
    assert_eq!(entry.certificate_der().unwrap(), issued.der);
    assert_eq!(entry.key_id, "test-operator");
    let stored = f.log.entries(evidence.index, evidence.index + 1).unwrap();
    assert_eq!(LogEntry::from_bytes(&stored[0].1).unwrap(), entry);

    // A key outside its scope is refused by the authority, and the refusal
    // is an entry with the requested names.
    let before = f.log.sth().tree_size;
    let caller = Caller {
        key_id: "api-only",
        scope: &ApiOnly,
    };
    let err = f
        .authority
        .issue_blocking(request("db", "server", der), &caller)
        .unwrap_err();
    assert!(matches!(err, IssueError::ForbiddenScope { .. }), "{err}");
    let sth = f.log.sth();
    assert!(sth.tree_size > before);
    let entries = f.log.entries(before, sth.tree_size).unwrap();
    let denial = entries
        .iter()
        .map(|(_, b)| LogEntry::from_bytes(b).unwrap())
        .find(|e| e.key_id == "api-only")
        .expect("the scope refusal is recorded");
    assert_eq!(denial.decision(), LogDecision::Denied);
    assert_eq!(denial.reasons()[0].code, "forbidden_scope");
    assert!(denial.certificate().is_none() && denial.serial().is_none());

    // A policy denial is recorded with its domain reasons.
    let (outside, _) = csr(&["host.not-db.example"], |_| {});
    let before = f.log.sth().tree_size;
    let err = f
        .authority
        .issue_blocking(request("db", "server", outside), &OPERATOR)
        .unwrap_err();
    assert!(matches!(err, IssueError::Denied { .. }), "{err}");
    let entries = f.log.entries(before, f.log.sth().tree_size).unwrap();
    let denial = entries
        .iter()
        .map(|(_, b)| LogEntry::from_bytes(b).unwrap())
        .find(|e| e.dns() == ["host.not-db.example"])
        .expect("the policy denial is recorded with the requested name");
    assert!(denial
        .reasons()
        .iter()
        .all(|r| !r.code.is_empty() && !r.detail.is_empty()));
}

#[test]
fn an_authority_without_a_recorder_refuses_to_issue() {
    let f = fixture();
    let config = Config::load(&f.dir.join("config.toml")).unwrap();
    let module = admin::open_module(&config).unwrap();
    let policies = admin::load_policies(&config).unwrap();
    let bare = admin::open_authority(&config, &module, policies).unwrap();
    let (der, _) = csr(&["unrecorded.db.internal"], |_| {});
    let err = bare
        .issue_blocking(request("db", "server", der), &OPERATOR)
        .unwrap_err();
    assert!(matches!(err, IssueError::NoRecorder), "{err}");
    assert_eq!(err.code().as_str(), "log_unavailable");
}

/// A group commit waits for the entry of a certificate being signed when
/// the batch formed (`IssuanceLog::promise`), so both share one fsync and
/// one signed tree head; and it waits no longer than that entry takes.
#[test]
fn a_batch_waits_for_the_certificate_being_signed_and_no_longer() {
    use std::time::{Duration, Instant};
    let (mut config, module) = own_log("gather-test");
    // Long enough that the second entry below comes well within it.
    config.log.commit_gather_us = 1_000_000;
    config.log.check().unwrap();
    let log = admin::open_log(&config, &module).unwrap();
    let entry = |i: u64| denied_entry(format!("gather-{i}"), i);
    let (tx, rx) = std::sync::mpsc::channel();
    let started = Instant::now();
    // A certificate is being signed on another thread...
    let promise = log.promise();
    // ...when this entry starts a batch.
    let first_tx = tx.clone();
    log.append_then(entry(1), move |r| {
        let _ = first_tx.send((1, r));
    });
    let signer = {
        let log = log.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            log.append_then(entry(2), move |r| {
                let _ = tx.send((2, r));
            });
            drop(promise);
        })
    };
    let mut heads = std::collections::BTreeMap::new();
    for _ in 0..2 {
        let (i, outcome) = rx.recv_timeout(Duration::from_secs(30)).unwrap();
        heads.insert(i, outcome.unwrap().sth().tree_size);
    }
    signer.join().unwrap();
    assert_eq!(
        heads[&1], heads[&2],
        "the first entry's batch did not wait for the promised one: {heads:?}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "the batch waited for the deadline, not for the promised entry: {:?}",
        started.elapsed()
    );

    // With gathering off, a promise holds nothing up: the entry is
    // committed alone while the promise is still held.
    let log = log.with_commit_gather(Duration::ZERO);
    let _held = log.promise();
    let before = log.sth().tree_size;
    let logged = log.append_blocking(entry(3)).unwrap();
    assert_eq!(logged.sth().tree_size, before + 1);
}

#[test]
fn evidence_asked_for_after_later_batches_still_proves_the_entry_under_its_own_head() {
    use ca_proto::logentry::LogEntry;
    let (config, module) = own_log("late-evidence");
    let log = admin::open_log(&config, &module).unwrap();
    let first = log
        .append_blocking(denied_entry("first".into(), 0))
        .unwrap();
    let middle = log
        .append_blocking(denied_entry("middle".into(), 1))
        .unwrap();
    // More than the node files keep in memory per level (2048), in
    // batches: the proofs are now read from the files, and the tree has
    // grown far past the heads the two entries were committed under.
    let later = log.append_many_blocking(
        (2..2600)
            .map(|i| denied_entry(format!("k{i}"), i))
            .collect(),
    );
    assert!(later.iter().all(|r| r.is_ok()));
    for (logged, key_id) in [(&first, "first"), (&middle, "middle")] {
        let evidence = logged.evidence().unwrap();
        assert_eq!(evidence.index, logged.seq());
        assert_eq!(&evidence.sth, logged.sth());
        assert!(logged.sth().tree_size < 100, "{:?}", logged);
        let bytes = evidence.verify(log.public_key()).unwrap();
        assert_eq!(bytes, logged.entry_bytes());
        let entry = LogEntry::from_bytes(&bytes).unwrap();
        assert_eq!(entry.key_id, key_id);
        assert_eq!(entry.seq, logged.seq());
    }
    // And the newest entry proves under the newest head.
    let last = later.last().unwrap().as_ref().unwrap();
    assert_eq!(last.sth().tree_size, log.sth().tree_size);
    last.evidence().unwrap().verify(log.public_key()).unwrap();
}
