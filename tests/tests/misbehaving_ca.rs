//! The sidecar against a misbehaving CA: a real HTTPS server speaking the
//! native API (`trellis_e2e::fakeca`) with a hierarchy of its own (rcgen),
//! whose answers each test chooses, and the real `ca-client` binary.
//!
//! Every test first lets the CA behave (the sidecar enrols, pins the class
//! roots on first use, installs), then makes it misbehave in one way and
//! checks that the sidecar refuses with a clear one-line message and that
//! every file it had written is still there, byte for byte. The last test
//! follows a real `ca-server`'s root rotation.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ca_proto::logentry::{IssuedEntry, LogEntry, Outcome};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};
use ring::rand::SecureRandom;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use trellis_e2e::fakeca::{FakeCa, FakeLog, Reply, Request};
use trellis_e2e::{bin, run, text, Daemon, TestServer};

const NAME: &str = "pg-0.db.internal";

fn now() -> i64 {
    trellis_e2e::now_unix()
}

fn at(t: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(t).expect("time")
}

fn rfc3339(t: i64) -> String {
    at(t)
        .format(&time::format_description::well_known::Rfc3339)
        .expect("format")
}

fn pem(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("ascii"));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

fn pems(certs: &[CertificateDer<'_>]) -> String {
    certs.iter().map(|c| pem(c)).collect()
}

/// A CA of the fake hierarchy: its certificate, parameters and signer.
struct Ca {
    der: CertificateDer<'static>,
    params: CertificateParams,
    issuer: Issuer<'static, KeyPair>,
}

fn ca_params(ou: &str, cn: Option<&str>) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name
        .push(DnType::OrganizationName, "Fake Trellis");
    p.distinguished_name
        .push(DnType::OrganizationalUnitName, ou);
    if let Some(cn) = cn {
        p.distinguished_name.push(DnType::CommonName, cn);
    }
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.not_before = at(now() - 86_400);
    p.not_after = at(now() + 10 * 365 * 86_400);
    p
}

impl Ca {
    fn made(der: CertificateDer<'static>, params: CertificateParams, key: KeyPair) -> Arc<Ca> {
        Arc::new(Ca {
            der,
            issuer: Issuer::new(params.clone(), key),
            params,
        })
    }

    /// A self-signed root `O=Fake Trellis, OU=<ou>` (path length 1).
    fn root(ou: &str) -> Arc<Ca> {
        let key = KeyPair::generate().expect("key");
        let mut p = ca_params(ou, None);
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
        let der = p.self_signed(&key).expect("root").der().clone();
        Ca::made(der, p, key)
    }

    /// An intermediate (path length 0) signed by this CA, shaped by `shape`.
    fn intermediate(&self, cn: &str, shape: impl FnOnce(&mut CertificateParams)) -> Arc<Ca> {
        let key = KeyPair::generate().expect("key");
        let mut p = ca_params("intermediates", Some(cn));
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        p.key_usages.push(KeyUsagePurpose::DigitalSignature);
        p.not_after = at(now() + 365 * 86_400);
        p.use_authority_key_identifier_extension = true;
        shape(&mut p);
        let der = p.signed_by(&key, &self.issuer).expect("int").der().clone();
        Ca::made(der, p, key)
    }

    /// The root rotation `ca-server rotate root-prepare` performs: a new
    /// root with this root's name and a new key, and the cross certificate
    /// (the new name and key, signed by this root).
    fn rotated(&self) -> (Arc<Ca>, CertificateDer<'static>) {
        let key = KeyPair::generate().expect("key");
        let p = self.params.clone();
        let der = p.self_signed(&key).expect("new root").der().clone();
        let mut cross = p.clone();
        cross.use_authority_key_identifier_extension = true;
        let cross = cross
            .signed_by(&key, &self.issuer)
            .expect("cross")
            .der()
            .clone();
        (Ca::made(der, p, key), cross)
    }
}

/// The fake CA's world: the `ca` root its TLS certificate chains to, class
/// hierarchies, an issuance log, and the sidecar's secret.
struct World {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    ca_root: PathBuf,
    secret: PathBuf,
    tls_chain: Vec<CertificateDer<'static>>,
    tls_key: Vec<u8>,
    db_root: Arc<Ca>,
    db_int: Arc<Ca>,
    api_root: Arc<Ca>,
    log: Arc<FakeLog>,
}

fn world() -> World {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().to_path_buf();
    let ca = Ca::root("class ca");
    let tls_key = KeyPair::generate().expect("key");
    let mut p = CertificateParams::new(vec!["localhost".to_string()]).expect("p");
    p.is_ca = IsCa::ExplicitNoCa;
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p.not_before = at(now() - 3600);
    p.not_after = at(now() + 86_400);
    let tls = p
        .signed_by(&tls_key, &ca.issuer)
        .expect("tls")
        .der()
        .clone();
    let ca_root = dir.join("ca-root.pem");
    std::fs::write(&ca_root, pem(&ca.der)).expect("ca root");
    let secret = dir.join("db.hex");
    std::fs::write(&secret, format!("{}\n", "5a".repeat(32))).expect("secret");
    chmod(&secret, 0o600);
    let db_root = Ca::root("class db");
    let db_int = db_root.intermediate("Fake db intermediate", |_| {});

    let rng = ring::rand::SystemRandom::new();
    let alg = &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING;
    let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(alg, &rng).expect("log key");
    let pair = ring::signature::EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).expect("pair");
    use ring::signature::KeyPair as _;
    let point = pair.public_key().as_ref().to_vec();
    let log = FakeLog::new(
        "fake-1",
        point,
        Box::new(move |msg| {
            pair.sign(&ring::rand::SystemRandom::new(), msg)
                .expect("sign")
                .as_ref()
                .to_vec()
        }),
    );
    World {
        _tmp: tmp,
        dir,
        ca_root,
        secret,
        tls_chain: vec![tls],
        tls_key: tls_key.serialize_der(),
        db_root,
        db_int,
        api_root: Ca::root("class api"),
        log: Arc::new(log),
    }
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// How the fake CA answers; each test changes what it needs.
#[derive(Clone)]
struct Plan {
    /// Who signs leaves.
    issuer: Arc<Ca>,
    /// The chain after the leaf (default: the issuer).
    chain: Option<Vec<CertificateDer<'static>>>,
    /// SANs instead of the requested names.
    dns: Option<Vec<String>>,
    /// A CA:TRUE leaf with keyCertSign.
    ca_leaf: bool,
    /// notBefore relative to now (the real server backdates by 300 s).
    not_before: i64,
    /// Lifetime (default: the requested TTL + 300 s).
    lifetime: Option<i64>,
    /// Bundles by class.
    bundles: BTreeMap<String, Vec<CertificateDer<'static>>>,
    /// `/chain` by class.
    class_chains: BTreeMap<String, Vec<CertificateDer<'static>>>,
    /// The class the log entry names (default: the requested one).
    entry_class: Option<String>,
    /// The names the log entry lists (default: the certificate's).
    entry_dns: Option<Vec<String>>,
    /// The serial the response claims (default: the certificate's).
    response_serial: Option<String>,
    /// Answer the signing request with this error status.
    sign_error: Option<u16>,
}

impl Plan {
    fn honest(w: &World) -> Plan {
        let mut bundles = BTreeMap::new();
        bundles.insert("db".to_string(), vec![w.db_root.der.clone()]);
        bundles.insert("api".to_string(), vec![w.api_root.der.clone()]);
        let mut class_chains = BTreeMap::new();
        class_chains.insert(
            "db".to_string(),
            vec![w.db_int.der.clone(), w.db_root.der.clone()],
        );
        Plan {
            issuer: w.db_int.clone(),
            chain: None,
            dns: None,
            ca_leaf: false,
            not_before: -300,
            lifetime: None,
            bundles,
            class_chains,
            entry_class: None,
            entry_dns: None,
            response_serial: None,
            sign_error: None,
        }
    }
}

fn classes_json() -> serde_json::Value {
    let profile = |name: &str, eku: &[&str]| {
        serde_json::json!({
            "name": name, "default_ttl": "24h", "max_ttl": "72h",
            "key_usages": ["digital_signature"], "ext_key_usages": eku,
        })
    };
    let class = |name: &str| {
        serde_json::json!({
            "name": name, "description": format!("fake {name}"),
            "profiles": [
                profile("server", &["server_auth"]),
                profile("client", &["client_auth"]),
                profile("peer", &["server_auth", "client_auth"]),
            ],
            "root_fingerprints_sha256": [], "active_intermediate": "",
        })
    };
    serde_json::json!({"classes": [class("db"), class("api"), class("web")]})
}

fn handle(log: &FakeLog, plan: &Mutex<Plan>, req: &Request) -> Reply {
    let plan = plan.lock().expect("plan").clone();
    let parts: Vec<&str> = req.path.trim_start_matches('/').split('/').collect();
    match (req.method.as_str(), parts.as_slice()) {
        ("GET", ["v1", "classes"]) => Reply::json(&classes_json()),
        ("GET", ["v1", "classes", class, "bundle"]) => match plan.bundles.get(*class) {
            Some(b) => Reply::pem(pems(b)),
            None => Reply::error(404, "unknown_class", "unknown class"),
        },
        ("GET", ["v1", "classes", class, "chain"]) => {
            match plan.class_chains.get(*class).or(plan.bundles.get(*class)) {
                Some(c) => Reply::pem(pems(c)),
                None => Reply::error(404, "unknown_class", "unknown class"),
            }
        }
        ("GET", ["v1", "log", id, "key"]) if *id == log.log_id => Reply::pem(log.key_pem()),
        ("POST", ["v1", "sign"]) => {
            sign(log, &plan, req).unwrap_or_else(|e| Reply::error(400, "malformed_request", &e))
        }
        _ => Reply::error(404, "not_found", "no such endpoint"),
    }
}

fn sign(log: &FakeLog, plan: &Plan, req: &Request) -> Result<Reply, String> {
    let auth = req
        .headers
        .iter()
        .find(|(k, _)| k == "authorization")
        .map(|(_, v)| v.as_str())
        .unwrap_or_default();
    if !auth.starts_with("TRELLIS-HMAC-SHA256 keyid=db,") {
        return Ok(Reply::error(401, "unauthenticated", "unauthenticated"));
    }
    if let Some(status) = plan.sign_error {
        return Ok(Reply::error(
            status,
            "hsm_unavailable",
            "the HSM is unavailable",
        ));
    }
    let request: ca_proto::native::SignRequest =
        serde_json::from_slice(&req.body).map_err(|e| e.to_string())?;
    let csr = CertificateSigningRequestParams::from_pem(&request.csr).map_err(|e| e.to_string())?;
    let hosts = request.hosts.clone().unwrap_or_default();
    let names = plan.dns.clone().unwrap_or_else(|| hosts.clone());
    let ttl = match &request.ttl {
        Some(t) => ca_proto::native::parse_duration(t)
            .map_err(|e| e.to_string())?
            .as_secs() as i64,
        None => 86_400,
    };
    let nb = now() + plan.not_before;
    let na = nb + plan.lifetime.unwrap_or(ttl + 300);
    let mut p = CertificateParams::new(names.clone()).map_err(|e| e.to_string())?;
    p.distinguished_name = DistinguishedName::new();
    if let Some(cn) = hosts.first() {
        p.distinguished_name.push(DnType::CommonName, cn.clone());
    }
    if plan.ca_leaf {
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyCertSign,
        ];
    } else {
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    }
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p.not_before = at(nb);
    p.not_after = at(na);
    let mut serial = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut serial)
        .map_err(|_| "no randomness".to_string())?;
    serial[0] = (serial[0] & 0x7f) | 0x01;
    p.serial_number = Some(SerialNumber::from_slice(&serial));
    p.use_authority_key_identifier_extension = true;
    let der = p
        .signed_by(&csr.public_key, &plan.issuer.issuer)
        .map_err(|e| e.to_string())?
        .der()
        .clone();
    let chain = plan
        .chain
        .clone()
        .unwrap_or_else(|| vec![plan.issuer.der.clone()]);
    let (_, parsed) = x509_parser::parse_x509_certificate(&der).map_err(|e| e.to_string())?;
    let spki = hex::encode(Sha256::digest(parsed.public_key().raw));
    use base64::Engine;
    let entry = LogEntry {
        seq: 0,
        time: rfc3339(now()).parse().expect("time"),
        log_id: String::new(),
        class: plan.entry_class.clone().unwrap_or(request.class.clone()),
        profile: request.profile.clone().unwrap_or_else(|| "server".into()),
        key_id: "db".into(),
        outcome: Outcome::Issued(IssuedEntry {
            serial: hex::encode(serial),
            subject: hosts.first().cloned(),
            dns: plan.entry_dns.clone().unwrap_or(names),
            ips: vec![],
            uris: vec![],
            not_before: rfc3339(nb).parse().expect("time"),
            not_after: rfc3339(na).parse().expect("time"),
            spki_sha256: spki,
            issuer: hex::encode(Sha256::digest(&plan.issuer.der)),
            certificate: base64::engine::general_purpose::STANDARD.encode(&der),
        }),
    };
    let evidence = log.append(entry);
    Ok(Reply::json(&serde_json::json!({
        "certificate": pem(&der),
        "chain": format!("{}{}", pem(&der), pems(&chain)),
        "serial": plan.response_serial.clone().unwrap_or_else(|| hex::encode(serial)),
        "not_before": rfc3339(nb),
        "not_after": rfc3339(na),
        "log": evidence,
    })))
}

/// A fake CA with a world, the plan it follows, and the sidecar's output
/// directory (empty until [`Fixture::enrolled`]).
struct Fixture {
    w: World,
    plan: Arc<Mutex<Plan>>,
    fake: FakeCa,
    out: PathBuf,
}

fn fixture() -> Fixture {
    let w = world();
    let plan = Arc::new(Mutex::new(Plan::honest(&w)));
    let (log, p) = (w.log.clone(), plan.clone());
    let fake = FakeCa::start(
        w.tls_chain.clone(),
        PrivateKeyDer::Pkcs8(w.tls_key.clone().into()),
        Arc::new(move |req| handle(&log, &p, req)),
    );
    let out = w.dir.join("out");
    Fixture { w, plan, fake, out }
}

impl Fixture {
    /// The sidecar's command (class db, profile server, `pg-0.db.internal`,
    /// trusting api).
    fn sidecar(&self) -> Command {
        self.sidecar_to(&self.out)
    }

    /// The same, writing into `out`.
    fn sidecar_to(&self, out: &Path) -> Command {
        let mut cmd = Command::new(bin("ca-client"));
        cmd.arg("--ca")
            .arg(self.fake.url())
            .arg("--ca-root")
            .arg(&self.w.ca_root)
            .args(["--class", "db", "--profile", "server", "--key-id", "db"])
            .arg("--key-secret-file")
            .arg(&self.w.secret)
            .args(["--dns", NAME, "--trust", "api", "--out"])
            .arg(out)
            .env_remove("RUST_LOG");
        cmd
    }

    fn set(&self, change: impl FnOnce(&mut Plan)) {
        let mut plan = Plan::honest(&self.w);
        change(&mut plan);
        *self.plan.lock().expect("plan") = plan;
    }

    /// A fixture whose sidecar enrolled once with the honest CA.
    fn enrolled() -> Fixture {
        let f = fixture();
        let out = run(f.sidecar().arg("--once"));
        assert!(out.status.success(), "honest enrolment: {}", text(&out));
        assert!(f.out.join("cert.pem").exists());
        assert_eq!(
            std::fs::read_to_string(f.out.join("trust/api.pem")).expect("trust"),
            pem(&f.w.api_root.der)
        );
        f
    }

    /// With `change` applied to the honest plan, `--once` fails with one
    /// line containing every needle, and no file in the output directory
    /// changed (contents and links, byte for byte).
    fn refused(&self, what: &str, change: impl FnOnce(&mut Plan), needles: &[&str]) -> String {
        self.set(change);
        let before = snapshot(&self.out);
        let out = run(self.sidecar().arg("--once"));
        let err = one_line_failure(what, &out);
        for needle in needles {
            assert!(err.contains(needle), "{what}: {needle:?} not in {err}");
        }
        assert_eq!(snapshot(&self.out), before, "{what}: files changed");
        err
    }
}

fn one_line_failure(what: &str, out: &std::process::Output) -> String {
    assert_eq!(out.status.code(), Some(1), "{what}: {}", text(out));
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(err.lines().count(), 1, "{what}: not one line: {err:?}");
    err
}

#[derive(Debug, PartialEq, Eq)]
enum Node {
    Dir,
    File(Vec<u8>),
    Link(PathBuf),
}

/// Every entry below `dir`, links not followed.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Node> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            let rel = path.strip_prefix(dir).expect("below").to_path_buf();
            let meta = std::fs::symlink_metadata(&path).expect("meta");
            if meta.file_type().is_symlink() {
                out.insert(rel, Node::Link(std::fs::read_link(&path).expect("link")));
            } else if meta.is_dir() {
                out.insert(rel, Node::Dir);
                todo.push(path);
            } else {
                out.insert(rel, Node::File(std::fs::read(&path).expect("read")));
            }
        }
    }
    out
}

#[test]
fn a_ca_true_leaf_is_refused() {
    let f = Fixture::enrolled();
    f.refused(
        "CA:TRUE leaf",
        |p| p.ca_leaf = true,
        &["is a CA certificate (basicConstraints CA:TRUE)"],
    );
}

#[test]
fn an_intermediate_that_is_no_ca_or_expired_is_refused() {
    let f = Fixture::enrolled();
    let not_ca =
        f.w.db_root
            .intermediate("Fake db intermediate", |p| p.is_ca = IsCa::ExplicitNoCa);
    f.refused(
        "CA:FALSE intermediate",
        |p| p.issuer = not_ca,
        &[
            "does not chain to a pinned root of class 'db'",
            "is not a CA (CA:FALSE)",
        ],
    );
    let expired = f.w.db_root.intermediate("Fake db intermediate", |p| {
        p.not_before = at(now() - 7 * 86_400);
        p.not_after = at(now() - 86_400);
    });
    f.refused(
        "expired intermediate",
        |p| p.issuer = expired,
        &["does not chain to a pinned root", "expired at"],
    );
    // An intermediate of a root that was never pinned (a look-alike "db").
    let other = Ca::root("class db").intermediate("Fake db intermediate", |_| {});
    f.refused(
        "foreign intermediate",
        |p| p.issuer = other,
        &["does not chain to a pinned root", "does not verify"],
    );
}

#[test]
fn names_that_were_not_requested_are_refused() {
    let f = Fixture::enrolled();
    for (what, names) in [
        ("evil.example", vec!["evil.example"]),
        ("wildcard", vec!["*.api.internal"]),
        ("one more", vec![NAME, "evil.example"]),
    ] {
        f.refused(
            what,
            |p| p.dns = Some(names.iter().map(|s| s.to_string()).collect()),
            &[
                &format!("the issued certificate names [{}]", {
                    let mut sorted = names.clone();
                    sorted.sort();
                    sorted.join(", ")
                }),
                &format!("but [{NAME}] was requested"),
            ],
        );
    }
}

#[test]
fn a_fifty_year_lifetime_is_refused() {
    let f = Fixture::enrolled();
    f.refused(
        "50-year lifetime",
        |p| p.lifetime = Some(50 * 365 * 86_400),
        &[
            "the issued certificate lives 18250d",
            "more than the 1d6m allowed (the profile's default ttl 1d",
        ],
    );
}

fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    cond()
}

fn field(line: &str, name: &str) -> Option<f64> {
    let rest = line.split(&format!("{name}=")).nth(1)?;
    rest.split_whitespace().next()?.parse().ok()
}

#[test]
fn a_future_not_before_beyond_the_skew_is_refused_and_retried_with_backoff() {
    let f = Fixture::enrolled();
    // The CA's clock an hour fast: notBefore = its now − 5 min.
    let err = f.refused(
        "future notBefore",
        |p| p.not_before = 3600 - 300,
        &[
            "is not valid before",
            "s ahead of ours (at most 300 s accepted)",
        ],
    );
    let offset: i64 = err
        .split("appears to be ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no offset in {err}"));
    assert!((offset - 3600).abs() <= 2, "{err}");

    // The daemon (no usable certificate: a fresh directory) keeps asking,
    // backing off 1 s, 2 s, 4 s, … and installs nothing.
    let out = f.w.dir.join("daemon");
    let daemon = Daemon::start(f.sidecar_to(&out));
    let signs_before = f.fake.count("POST", "/v1/sign");
    assert!(
        wait_until(Duration::from_secs(60), || daemon
            .matching("renewal failed")
            .len()
            >= 4),
        "{}",
        daemon.log()
    );
    let failures = daemon.matching("renewal failed");
    for line in &failures {
        assert!(
            line.contains("clock appears to be") && line.contains("reason=not_yet_valid"),
            "{line}"
        );
    }
    let ceilings: Vec<f64> = failures
        .iter()
        .filter_map(|l| field(l, "backoff_ceiling_secs"))
        .collect();
    assert_eq!(&ceilings[..4], &[1.0, 2.0, 4.0, 8.0], "{}", daemon.log());
    assert!(f.fake.count("POST", "/v1/sign") >= signs_before + 4);
    assert!(!out.join("cert.pem").exists(), "nothing installed");
}

#[test]
fn a_not_before_within_the_skew_is_installed_and_renewed_on_schedule() {
    let f = fixture();
    // The CA's clock 20 s + 5 min fast: notBefore 20 s ahead of us.
    f.set(|p| {
        p.not_before = 20;
        p.lifetime = Some(20);
    });
    let once = run(f.sidecar().args(["--once", "--ttl", "20s"]));
    assert!(once.status.success(), "{}", text(&once));

    let mut cmd = f.sidecar();
    cmd.args(["--ttl", "20s", "--renew-fraction", "0.5"]);
    let started = Instant::now();
    let signs = f.fake.count("POST", "/v1/sign");
    let daemon = Daemon::start(cmd);
    // Renewal is due at notBefore + 50 % of 20 s − jitter (≤ 1 s): about
    // 30 s from the install, never before notBefore, never idle.
    assert!(
        wait_until(Duration::from_secs(60), || f.fake.count("POST", "/v1/sign")
            > signs),
        "no renewal\n{}",
        daemon.log()
    );
    let hit = f
        .fake
        .hits()
        .into_iter()
        .filter(|h| h.path == "/v1/sign")
        .nth(signs)
        .expect("hit");
    let after = hit.at.duration_since(started);
    assert!(
        after >= Duration::from_secs(25) && after <= Duration::from_secs(36),
        "renewed after {after:?}\n{}",
        daemon.log()
    );
}

/// Runs `cmd` to completion; returns (exit code, stderr, CPU time of the
/// process itself: user + system, from wait4).
fn run_measured(cmd: &mut Command) -> (Option<i32>, String, Duration) {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stderr = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain data, zero is a valid value; wait4 on our own
    // child, which nothing else waits for.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(rc, pid, "wait4: {}", std::io::Error::last_os_error());
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    let cpu = tv(usage.ru_utime) + tv(usage.ru_stime);
    let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    std::mem::forget(child);
    (code, reader.join().unwrap_or_default(), cpu)
}

#[test]
fn a_thousand_certificate_chain_or_bundle_costs_under_a_second_of_cpu() {
    let f = Fixture::enrolled();
    // 1,000 intermediates with the intermediate's name, each its own key,
    // all signed by the pinned root; and 1,000 roots with the root's name.
    let int_name = f.w.db_int.params.clone();
    let mut chain = vec![f.w.db_int.der.clone()];
    for _ in 1..1000 {
        let key = KeyPair::generate().expect("key");
        chain.push(
            int_name
                .clone()
                .signed_by(&key, &f.w.db_root.issuer)
                .expect("int")
                .der()
                .clone(),
        );
    }
    let root_name = f.w.db_root.params.clone();
    let mut roots = vec![f.w.db_root.der.clone()];
    for _ in 1..1000 {
        let key = KeyPair::generate().expect("key");
        roots.push(root_name.self_signed(&key).expect("root").der().clone());
    }
    let pem_len = pems(&chain).len();
    assert!(pem_len > 400_000 && pem_len < 1 << 20, "{pem_len} bytes");

    let mut measured = Vec::new();
    for (what, plan, needle) in [
        (
            "chain",
            Box::new(move |p: &mut Plan| p.chain = Some(chain)) as Box<dyn FnOnce(&mut Plan)>,
            "1001 certificates, more than the 8 accepted",
        ),
        (
            "bundle",
            Box::new(move |p: &mut Plan| {
                p.bundles.insert("db".into(), roots);
            }),
            "1000 certificates, more than the 64 accepted",
        ),
    ] {
        f.set(plan);
        let before = snapshot(&f.out);
        let (code, err, cpu) = run_measured(f.sidecar().arg("--once"));
        assert_eq!(code, Some(1), "{what}: {err}");
        assert!(err.contains(needle), "{what}: {err}");
        assert_eq!(snapshot(&f.out), before, "{what}: files changed");
        assert!(cpu < Duration::from_secs(1), "{what}: {cpu:?} of CPU");
        measured.push(format!("{what}: {cpu:?}"));
    }
    eprintln!(
        "CPU per --once against 1,000 certificates: {}",
        measured.join(", ")
    );

    // A daemon facing the bundle keeps answering /healthz promptly.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let mut cmd = f.sidecar();
    cmd.args(["--metrics-listen", &format!("127.0.0.1:{port}")]);
    let daemon = Daemon::start(cmd);
    assert!(
        wait_until(Duration::from_secs(30), || !daemon
            .matching("more than the 64 accepted")
            .is_empty()),
        "{}",
        daemon.log()
    );
    for _ in 0..10 {
        let asked = Instant::now();
        let answered = healthz(port);
        assert!(answered.is_some(), "no /healthz answer\n{}", daemon.log());
        assert!(
            asked.elapsed() < Duration::from_secs(1),
            "{:?}",
            asked.elapsed()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn healthz(port: u16) -> Option<u16> {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn evidence_that_disagrees_with_the_certificate_is_refused() {
    let f = Fixture::enrolled();
    f.refused(
        "entry for class web",
        |p| p.entry_class = Some("web".into()),
        &[
            "the logged entry does not match the certificate",
            "class 'web', the request for 'db'",
        ],
    );
    f.refused(
        "entry naming evil.example",
        |p| p.entry_dns = Some(vec!["evil.example".into()]),
        &["the logged entry does not match", "it names [evil.example]"],
    );
    f.refused(
        "response serial",
        |p| p.response_serial = Some("0badc0ffee".into()),
        &["the response's serial is 0badc0ffee, but the certificate's is"],
    );
}

#[test]
fn a_bundle_replaced_by_an_attacker_root_is_refused_and_nothing_is_written() {
    let f = Fixture::enrolled();
    let evil = Ca::root("class api");
    let err = f.refused(
        "api bundle replaced",
        |p| {
            p.bundles.insert("api".into(), vec![evil.der.clone()]);
        },
        &[
            "bundle of class 'api' refused: it holds no pinned root",
            "is neither pinned nor cross-signed by a pinned root",
        ],
    );
    assert!(!err.contains("installed"), "{err}");
    assert_eq!(
        f.fake.count("POST", "/v1/sign"),
        1,
        "the refused bundle stopped the run before signing"
    );
    // The own class too (the "db intermediate" of an unknown root).
    let evil_db = Ca::root("class db");
    let evil_int = evil_db.intermediate("Fake db intermediate", |_| {});
    f.refused(
        "db bundle replaced",
        |p| {
            p.bundles.insert("db".into(), vec![evil_db.der.clone()]);
            p.issuer = evil_int;
        },
        &["bundle of class 'db'", "holds no pinned root"],
    );
}

#[test]
fn bundles_are_written_only_when_the_whole_run_succeeds() {
    let f = Fixture::enrolled();
    // A legitimate rotation of the api root (cross-signed, the cross
    // certificate in the api chain), but the run fails later.
    let (new_api, cross) = f.w.api_root.rotated();
    let rotate = |p: &mut Plan| {
        p.bundles.insert(
            "api".into(),
            vec![f.w.api_root.der.clone(), new_api.der.clone()],
        );
        p.class_chains
            .insert("api".into(), vec![cross.clone(), new_api.der.clone()]);
    };
    f.refused(
        "signing fails",
        |p| {
            rotate(p);
            p.sign_error = Some(503);
        },
        &["HTTP 503 hsm_unavailable"],
    );
    f.refused(
        "evidence fails",
        |p| {
            rotate(p);
            p.entry_class = Some("web".into());
        },
        &["the logged entry does not match"],
    );
    // The same rotation in a run that succeeds: now both roots are trusted.
    f.set(rotate);
    let ok = run(f.sidecar().arg("--once"));
    assert!(ok.status.success(), "{}", text(&ok));
    assert_eq!(
        std::fs::read_to_string(f.out.join("trust/api.pem")).expect("trust"),
        format!("{}{}", pem(&f.w.api_root.der), pem(&new_api.der))
    );
}

#[test]
fn a_planted_trust_symlink_is_not_followed() {
    let f = Fixture::enrolled();
    let elsewhere = f.w.dir.join("elsewhere");
    std::fs::create_dir(&elsewhere).expect("dir");
    std::fs::remove_dir_all(f.out.join("trust")).expect("rm");
    std::os::unix::fs::symlink(&elsewhere, f.out.join("trust")).expect("plant");
    let signs = f.fake.count("POST", "/v1/sign");
    f.refused(
        "trust symlink",
        |_| {},
        &["trust is a symbolic link that ca-client did not create: refusing to follow it"],
    );
    assert_eq!(std::fs::read_dir(&elsewhere).expect("dir").count(), 0);
    assert_eq!(
        f.fake.count("POST", "/v1/sign"),
        signs,
        "nothing was requested"
    );

    // The same for a fresh directory with nothing but the planted link,
    // and for the state directory.
    std::fs::remove_file(f.out.join("trust")).expect("rm");
    std::os::unix::fs::symlink(&elsewhere, f.out.join(".state-planted")).expect("ln");
    std::fs::rename(f.out.join(".state"), f.w.dir.join("moved-state")).expect("mv");
    std::fs::rename(f.out.join(".state-planted"), f.out.join(".state")).expect("mv");
    f.refused(
        "state symlink",
        |_| {},
        &[".state is a symbolic link that ca-client did not create"],
    );
    assert_eq!(std::fs::read_dir(&elsewhere).expect("dir").count(), 0);
}

#[test]
fn a_secret_file_readable_by_others_is_refused_unless_relaxed() {
    let f = fixture();
    for mode in [0o644, 0o604] {
        chmod(&f.w.secret, mode);
        for relaxed in [false, true] {
            let mut cmd = f.sidecar();
            cmd.arg("--once");
            if relaxed {
                cmd.args(["--secret-file-mode", "group-readable"]);
            }
            let out = run(&mut cmd);
            assert_eq!(out.status.code(), Some(2), "{mode:o}: {}", text(&out));
            let err = String::from_utf8_lossy(&out.stderr).to_string();
            assert_eq!(err.lines().count(), 1, "{err}");
            assert!(
                err.contains(&format!("mode {mode:04o}"))
                    && err.contains(&f.w.secret.display().to_string())
                    && !err.contains(&"5a".repeat(32)),
                "{err}"
            );
        }
    }
    chmod(&f.w.secret, 0o640);
    let strict = run(f.sidecar().arg("--once"));
    assert_eq!(strict.status.code(), Some(2), "{}", text(&strict));
    assert!(
        text(&strict).contains("secret_file_mode = \"group-readable\""),
        "{}",
        text(&strict)
    );
    assert_eq!(f.fake.count("POST", "/v1/sign"), 0, "nothing was requested");
    let relaxed = run(f
        .sidecar()
        .args(["--once", "--secret-file-mode", "group-readable"]));
    assert!(relaxed.status.success(), "{}", text(&relaxed));
}

#[test]
fn a_cross_signed_root_rotation_is_accepted_and_an_unrelated_root_refused() {
    let f = fixture();
    let trust_db = |f: &Fixture| {
        let mut cmd = f.sidecar();
        cmd.args(["--trust", "db", "--trust", "api", "--once"]);
        run(&mut cmd)
    };
    let first = trust_db(&f);
    assert!(first.status.success(), "{}", text(&first));
    let old = f.w.db_root.der.clone();
    let db_pem = || std::fs::read_to_string(f.out.join("trust/db.pem")).expect("db.pem");
    assert_eq!(db_pem(), pem(&old));

    // 1. prepared: both roots in the bundle, no cross certificate served
    //    yet: the new root waits outside, loudly; the run succeeds.
    let (new, cross) = f.w.db_root.rotated();
    let (n, o) = (new.der.clone(), old.clone());
    f.set(move |p| {
        p.bundles.insert("db".into(), vec![o, n]);
    });
    let before = db_pem();
    let prepared = trust_db(&f);
    assert!(prepared.status.success(), "{}", text(&prepared));
    let warning = String::from_utf8_lossy(&prepared.stderr).to_string();
    assert!(
        warning.contains("bundle of class 'db'")
            && warning.contains("is neither pinned nor cross-signed by a pinned root")
            && warning.contains("kept out"),
        "{warning}"
    );
    assert_eq!(db_pem(), before);

    // 2. activated: issuance under the new root, chains [int, cross].
    let new_int = new.intermediate("Fake db intermediate 2", |_| {});
    let plan_rotated = {
        let (n, o, c, i) = (new.der.clone(), old.clone(), cross.clone(), new_int.clone());
        move |p: &mut Plan| {
            p.bundles.insert("db".into(), vec![n.clone(), o.clone()]);
            p.class_chains
                .insert("db".into(), vec![i.der.clone(), c.clone(), n.clone()]);
            p.issuer = i.clone();
            p.chain = Some(vec![i.der.clone(), c.clone()]);
        }
    };
    f.set(plan_rotated.clone());
    let activated = trust_db(&f);
    assert!(activated.status.success(), "{}", text(&activated));
    assert!(activated.stderr.is_empty(), "{}", text(&activated));
    assert_eq!(db_pem(), format!("{}{}", pem(&new.der), pem(&old)));
    let chain = std::fs::read_to_string(f.out.join("chain.pem")).expect("chain");
    assert_eq!(chain, format!("{}{}", pem(&new_int.der), pem(&cross)));

    // 3. an unrelated root, with the same name and a "cross certificate"
    //    it signed itself: kept out, loudly; the pinned roots stay.
    let evil = Ca::root("class db");
    let (evil_new, evil_cross) = evil.rotated();
    let (en, ec) = (evil_new.der.clone(), evil_cross.clone());
    let p2 = plan_rotated.clone();
    f.set(move |p| {
        p2(p);
        let bundle = p.bundles.get_mut("db").expect("db");
        bundle.push(en.clone());
        p.class_chains
            .get_mut("db")
            .expect("chain")
            .push(ec.clone());
    });
    let before = snapshot(&f.out.join("trust"));
    let added = trust_db(&f);
    assert!(added.status.success(), "{}", text(&added));
    assert!(
        String::from_utf8_lossy(&added.stderr).contains("neither pinned nor cross-signed"),
        "{}",
        text(&added)
    );
    assert_eq!(snapshot(&f.out.join("trust")), before);

    // 4. the bundle replaced by the unrelated roots: refused, nothing changes.
    let (e1, e2) = (evil.der.clone(), evil_new.der.clone());
    let p3 = plan_rotated.clone();
    let all_before = snapshot(&f.out);
    f.set(move |p| {
        p3(p);
        p.bundles.insert("db".into(), vec![e1.clone(), e2.clone()]);
    });
    let replaced = trust_db(&f);
    let err = one_line_failure("replaced", &replaced);
    assert!(err.contains("holds no pinned root"), "{err}");
    assert_eq!(snapshot(&f.out), all_before);

    // 5. retired: only the new root, pinned by now.
    let p4 = plan_rotated;
    let n = new.der.clone();
    f.set(move |p| {
        p4(p);
        p.bundles.insert("db".into(), vec![n.clone()]);
    });
    let retired = trust_db(&f);
    assert!(retired.status.success(), "{}", text(&retired));
    assert_eq!(db_pem(), pem(&new.der));
}

fn admin(server: &TestServer, args: &[&str]) {
    let out = run(Command::new(bin("ca-server"))
        .args(args)
        .arg("--dir")
        .arg(&server.dir));
    assert!(out.status.success(), "ca-server {args:?}: {}", text(&out));
}

/// The real server's root rotation, step by step, with sidecars of the
/// rotated class and of a class that trusts it.
#[test]
fn a_real_servers_root_rotation_is_followed_by_the_pins() {
    let server = TestServer::start();
    let tmp = tempfile::tempdir().expect("tmp");
    let sidecar = |class: &str, dns: &str, out: &Path| {
        let mut cmd = Command::new(bin("ca-client"));
        cmd.arg("--ca")
            .arg(server.url())
            .arg("--ca-root")
            .arg(server.dir.join("classes/ca/root.pem"))
            .args(["--class", class, "--key-id", class, "--key-secret-file"])
            .arg(server.dir.join(format!("secrets/auth-{class}.hex")))
            .args(["--dns", dns, "--trust", "db", "--once", "--out"])
            .arg(out)
            .env_remove("RUST_LOG");
        run(&mut cmd)
    };
    let (api_out, db_out) = (tmp.path().join("api"), tmp.path().join("db"));
    let bundle = || {
        server
            .client()
            .request("GET", "/v1/classes/db/bundle", &[], b"")
            .text()
    };
    let old_bundle = bundle();
    for (class, dns, out) in [
        ("api", "a.api.internal", &api_out),
        ("db", "a.db.internal", &db_out),
    ] {
        let got = sidecar(class, dns, out);
        assert!(got.status.success(), "{class}: {}", text(&got));
        assert_eq!(
            std::fs::read_to_string(out.join("trust/db.pem")).expect("db.pem"),
            old_bundle
        );
    }

    admin(&server, &["rotate", "root-prepare", "--class", "db"]);
    assert!(wait_until(Duration::from_secs(20), || bundle()
        .matches("BEGIN CERTIFICATE")
        .count()
        == 2));
    for (class, dns, out) in [
        ("api", "a.api.internal", &api_out),
        ("db", "a.db.internal", &db_out),
    ] {
        let got = sidecar(class, dns, out);
        assert!(got.status.success(), "{class}: {}", text(&got));
        assert!(
            String::from_utf8_lossy(&got.stderr).contains("neither pinned nor cross-signed"),
            "{class}: {}",
            text(&got)
        );
        assert_eq!(
            std::fs::read_to_string(out.join("trust/db.pem")).expect("db.pem"),
            old_bundle,
            "{class}: the unproven new root stays out"
        );
    }

    admin(&server, &["rotate", "root-activate", "--class", "db"]);
    admin(&server, &["rotate", "prepare", "--class", "db"]);
    admin(&server, &["rotate", "activate", "--class", "db"]);
    assert!(wait_until(Duration::from_secs(20), || server
        .client()
        .request("GET", "/v1/classes/db/chain", &[], b"")
        .text()
        .matches("BEGIN CERTIFICATE")
        .count()
        == 3));
    let rotated = bundle();
    assert_ne!(rotated, old_bundle);
    for (class, dns, out) in [
        ("api", "a.api.internal", &api_out),
        ("db", "a.db.internal", &db_out),
    ] {
        let got = sidecar(class, dns, out);
        assert!(got.status.success(), "{class}: {}", text(&got));
        assert!(got.stderr.is_empty(), "{class}: {}", text(&got));
        assert_eq!(
            std::fs::read_to_string(out.join("trust/db.pem")).expect("db.pem"),
            rotated,
            "{class}: the cross-signed new root is trusted"
        );
    }
    // The db sidecar's new chain runs through the cross certificate.
    let chain = std::fs::read_to_string(db_out.join("chain.pem")).expect("chain");
    assert_eq!(chain.matches("BEGIN CERTIFICATE").count(), 2, "{chain}");
}
