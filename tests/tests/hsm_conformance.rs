//! One HSM conformance suite, run against four real PKCS#11 modules that the
//! tests start themselves from Debian's packages: SoftHSM2, tpm2-pkcs11 on
//! swtpm with tpm2-abrmd, opencryptoki's software token behind its own
//! `pkcsslotd`, and NSS softoken (which needs `[hsm] init_params`).
//!
//! For each module, a deployment written from scratch with `ca-server init
//! --config` and then, through the real binaries:
//! - every key the deployment made is on its token, sensitive, never
//!   extractable, able to sign (`ca-server hsm check`, which reads the
//!   attributes back), with the mechanism Trellis chose for that token;
//! - every CA signature verifies independently (`openssl verify` of each
//!   class's intermediate against its root, and of an issued leaf);
//! - the log's signed tree heads verify under its public key (ring);
//! - `rotate prepare` and `rotate activate`, run by other processes, are
//!   picked up by the running server without a restart: new leaves chain to
//!   the new intermediate (tpm2-pkcs11 needs a controlled re-initialisation
//!   of the module for that);
//! - `ca-server log verify` passes after the server stops.
//!
//! opencryptoki's token has no EC at all: the suite first asks for EC keys
//! and checks the refusal names the token, the key and what is missing, with
//! nothing created; then runs with RSA keys (`CKM_RSA_PKCS` over a locally
//! built DigestInfo).

use ca_proto::sth::{LogEvidence, LogPublicKey};
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use trellis_e2e::hsm_env::{self, HsmEnv};
use trellis_e2e::{bin, openssl_csr, openssl_verify, run, text, TestServer};

const P256: &[&str] = &["ec", "-pkeyopt", "ec_paramgen_curve:P-256"];

/// A deployment of Trellis on one module, written the way an operator
/// would from `deploy/config/ca-server.toml`.
struct Deployment<'e> {
    env: &'e HsmEnv,
    dir: PathBuf,
    config: PathBuf,
}

fn write_private(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

impl<'e> Deployment<'e> {
    fn new(env: &'e HsmEnv, dir: &Path, algorithm: &str) -> Deployment<'e> {
        let secrets = dir.join("secrets");
        std::fs::create_dir_all(&secrets).unwrap();
        std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o700)).unwrap();
        write_private(
            &secrets.join("online.pin"),
            &format!("{}\n", env.online_pin),
        );
        write_private(&secrets.join("root.pin"), &format!("{}\n", env.root_pin));
        let policies = dir.join("policies");
        std::fs::create_dir_all(&policies).unwrap();
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/classes");
        for entry in std::fs::read_dir(&shipped).unwrap() {
            let path = entry.unwrap().path();
            std::fs::copy(&path, policies.join(path.file_name().unwrap())).unwrap();
        }
        let mut keys = String::new();
        for (id, classes) in [("db", "\"db\""), ("admin", "\"*\"")] {
            let secret: String = (0..32)
                .map(|i| format!("{:02x}", (i * 37 + id.len() * 11) as u8 ^ 0x5a))
                .collect();
            write_private(
                &secrets.join(format!("auth-{id}.hex")),
                &format!("{secret}\n"),
            );
            keys.push_str(&format!(
                "[[key]]\nid = \"{id}\"\nsecret = \"file:secrets/auth-{id}.hex\"\nclasses = [{classes}]\nprofiles = [\"*\"]\n\n"
            ));
        }
        write_private(&dir.join("auth-keys.toml"), &keys);
        let init_params = env
            .init_params
            .as_ref()
            .map(|p| {
                format!(
                    "init_params = \"{}\"\n",
                    p.replace('\\', "\\\\").replace('"', "\\\"")
                )
            })
            .unwrap_or_default();
        let config = dir.join("config.toml");
        std::fs::write(
            &config,
            format!(
                r#"state_dir = "."
policies_dir = "policies"

[hsm]
module = "{module}"
online_token = "{online}"
online_pin = "file:secrets/online.pin"
root_token = "{root}"
root_pin = "file:secrets/root.pin"
signing_sessions = 2
{init_params}
[ca]
key_algorithm = "{algorithm}"
organization = "Trellis conformance ({name})"

[server]
listen = "127.0.0.1:0"
tls_names = ["localhost", "127.0.0.1"]
auth_keys = "auth-keys.toml"

[log]
log_id = "conf-1"
"#,
                module = env.module.display(),
                online = env.online_token,
                root = env.root_token,
                name = env.name,
            ),
        )
        .unwrap();
        Deployment {
            env,
            dir: dir.to_path_buf(),
            config,
        }
    }

    /// `ca-server ARGS --config CONFIG`, in the module's environment.
    fn ca_server(&self, args: &[&str]) -> std::process::Output {
        run(self
            .env
            .command(&bin("ca-server"))
            .args(args)
            .arg("--config")
            .arg(&self.config))
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.ca_server(args);
        assert!(
            out.status.success(),
            "[{}] ca-server {args:?}: {}",
            self.env.name,
            text(&out)
        );
        text(&out)
    }

    fn serve(&self) -> TestServer {
        let mut cmd = self.env.command(&bin("ca-server"));
        cmd.args(["serve", "--config"]).arg(&self.config);
        TestServer::spawn(cmd, &self.dir)
    }

    fn active_intermediate(&self, class: &str) -> String {
        let state = std::fs::read_to_string(self.dir.join(format!("classes/{class}/state.toml")))
            .unwrap_or_default();
        // The active record's key label: `key = "…"` followed by
        // `status = "active"` in the same [[intermediates]] table.
        state
            .split("[[intermediates]]")
            .find(|t| t.contains("status = \"active\""))
            .and_then(|t| t.lines().find_map(|l| l.trim().strip_prefix("key = \"")))
            .and_then(|l| l.strip_suffix('"'))
            .unwrap_or_else(|| panic!("no active intermediate in {class}'s state:\n{state}"))
            .to_string()
    }
}

/// Issue a db leaf; returns (leaf PEM, chain PEM, log evidence).
fn issue(server: &TestServer, dir: &Path, name: &str) -> (String, String, LogEvidence) {
    let host = format!("{name}.db.internal");
    let csr = openssl_csr(
        dir,
        name,
        P256,
        &format!("/CN={host}"),
        &["-addext", &format!("subjectAltName=DNS:{host}")],
    );
    let (status, body) = server.native_sign("db", &json!({"class": "db", "csr": csr}));
    assert_eq!(status, 200, "{body}\nserver log:\n{}", server.server_log());
    let evidence: LogEvidence =
        serde_json::from_value(body["log"].clone()).expect("log evidence in the response");
    (
        body["certificate"].as_str().unwrap_or_default().to_string(),
        body["chain"].as_str().unwrap_or_default().to_string(),
        evidence,
    )
}

/// The subject of a certificate, by openssl.
fn issuer_of(dir: &Path, pem: &str) -> String {
    let path = dir.join("issuer-probe.pem");
    std::fs::write(&path, pem).unwrap();
    let out = run(Command::new("openssl")
        .args(["x509", "-noout", "-issuer", "-in"])
        .arg(&path));
    text(&out).trim().to_string()
}

fn subject_of(path: &Path) -> String {
    let out = run(Command::new("openssl")
        .args(["x509", "-noout", "-subject", "-in"])
        .arg(path));
    text(&out)
        .trim()
        .replacen("subject=", "issuer=", 1)
        .to_string()
}

/// The suite proper, on a module, with CA keys of `algorithm`; `mechanism`
/// is what `hsm check` must report for them.
/// Returns how often the server re-initialised the module.
fn conformance(env: &HsmEnv, work: &Path, algorithm: &str, mechanism: &str) -> usize {
    let started = Instant::now();
    let dir = work.join("deployment");
    let deployment = Deployment::new(env, &dir, algorithm);
    deployment.ok(&["init"]);

    // Key generation attributes, read back from the token.
    let check: Value = serde_json::from_str(&deployment.ok(&["hsm", "check", "--json"]))
        .expect("hsm check --json");
    assert_eq!(check["problems"], json!([]), "{check:#}");
    let mut keys = 0;
    for role in ["online", "root"] {
        for key in check[role]["keys"].as_array().into_iter().flatten() {
            let label = key["label"].as_str().unwrap_or_default();
            if key["present"] == json!(false) {
                // Only the log key may be made later, by `serve`.
                assert!(
                    label.starts_with("trellis-log-"),
                    "{role} key {label} missing"
                );
                continue;
            }
            keys += usize::from(!label.starts_with("trellis-log-"));
            assert_eq!(key["algorithm"], json!(algorithm), "{key}");
            assert_eq!(key["mechanism"], json!(mechanism), "{key}");
            let p = &key["private_key"];
            for (attribute, want) in [
                ("token", true),
                ("private", true),
                ("sensitive", true),
                ("extractable", false),
                ("sign", true),
            ] {
                assert_eq!(
                    p[attribute],
                    json!(want),
                    "[{}] {label}: {attribute}",
                    env.name
                );
            }
        }
    }
    // Four classes: a root and an intermediate each (and the log key).
    assert_eq!(keys, 8, "{check:#}");

    // Every class's intermediate verifies against its root (both signed in
    // the token: the root by itself, the intermediate by the root).
    for class in ["api", "ca", "db", "web"] {
        let active = deployment.active_intermediate(class);
        let root = dir.join(format!("classes/{class}/root.pem"));
        let intermediate = dir.join(format!("classes/{class}/intermediates/{active}.pem"));
        let out = run(Command::new("openssl")
            .arg("verify")
            .arg("-CAfile")
            .arg(&root)
            .arg(&intermediate));
        assert!(
            out.status.success(),
            "[{}] {class}: {}",
            env.name,
            text(&out)
        );
    }

    let server = deployment.serve();
    let tmp = work.join("csrs");
    std::fs::create_dir_all(&tmp).unwrap();
    let log_key = LogPublicKey::from_pem(
        &server
            .client()
            .request("GET", "/v1/log/conf-1/key", &[], b"")
            .text(),
    )
    .expect("log key");
    let (leaf, chain, evidence) = issue(&server, &tmp, "first");
    evidence.verify(&log_key).expect("log evidence verifies");
    let leaf_path = tmp.join("first.crt");
    let chain_path = tmp.join("first.chain.pem");
    std::fs::write(&leaf_path, &leaf).unwrap();
    std::fs::write(&chain_path, &chain).unwrap();
    let (ok, why) = openssl_verify(&dir.join("classes/db/root.pem"), &chain_path, &leaf_path);
    assert!(ok, "[{}] leaf: {why}", env.name);
    // The log key is on the token now, fit like the others, with the
    // algorithm the configuration asked for.
    let check: Value = serde_json::from_str(&deployment.ok(&["hsm", "check", "--json"])).unwrap();
    let log = check["online"]["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|k| k["label"] == json!("trellis-log-conf-1"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(log["fit"], json!(true), "{log}");
    assert_eq!(log["algorithm"], json!(algorithm), "{log}");

    // Rotation by other processes, picked up without a restart.
    let before = deployment.active_intermediate("db");
    deployment.ok(&["rotate", "prepare", "--class", "db"]);
    deployment.ok(&["rotate", "activate", "--class", "db"]);
    let after = deployment.active_intermediate("db");
    assert_ne!(before, after);
    let want_issuer = subject_of(&dir.join(format!("classes/db/intermediates/{after}.pem")));
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut n = 0;
    let rotated = loop {
        n += 1;
        let (leaf, chain, evidence) = issue(&server, &tmp, &format!("rot{n}"));
        evidence.verify(&log_key).expect("log evidence verifies");
        if issuer_of(&tmp, &leaf) == want_issuer {
            break (leaf, chain);
        }
        assert!(
            Instant::now() < deadline,
            "[{}] the running server still issues from {before} 30 s after activating {after}:\n{}",
            env.name,
            server.server_log()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    std::fs::write(&leaf_path, &rotated.0).unwrap();
    std::fs::write(&chain_path, &rotated.1).unwrap();
    let (ok, why) = openssl_verify(&dir.join("classes/db/root.pem"), &chain_path, &leaf_path);
    assert!(ok, "[{}] leaf after rotation: {why}", env.name);

    let reinitialised = server.server_log().matches("hsm_reinitialized").count();
    let mut server = server;
    server.stop();
    let verified = deployment.ok(&["log", "verify"]);
    assert!(verified.lines().any(|l| l.trim() == "OK"), "{verified}");
    eprintln!(
        "[{}] conformance with {algorithm} ({mechanism}): {:.1} s, {reinitialised} re-initialisation(s)",
        env.name,
        started.elapsed().as_secs_f64()
    );
    reinitialised
}

fn workdir(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(&format!("trellis-{name}-"))
        .tempdir()
        .unwrap_or_else(|e| panic!("tempdir: {e}"))
}

#[test]
fn softhsm2_passes_the_conformance_suite() {
    let work = workdir("softhsm2");
    let env = hsm_env::softhsm2(&work.path().join("hsm"));
    // SoftHSM2 shows other processes' objects: no re-initialisation.
    assert_eq!(conformance(&env, work.path(), "ec-p256", "CKM_ECDSA"), 0);
}

#[test]
fn tpm2_pkcs11_passes_the_conformance_suite() {
    let work = workdir("tpm2");
    let env = hsm_env::tpm2::tpm2(&work.path().join("hsm"));
    // tpm2-pkcs11 reads a token's objects when initialised: the rotation was
    // seen through a controlled re-initialisation.
    assert!(conformance(&env, work.path(), "ec-p256", "CKM_ECDSA") >= 1);
}

#[test]
fn opencryptoki_refuses_ec_clearly_then_passes_with_rsa() {
    let work = workdir("opencryptoki");
    let env = hsm_env::opencryptoki::opencryptoki(&work.path().join("hsm"));
    let refused = Deployment::new(&env, &work.path().join("deployment"), "ec-p256");
    let out = refused.ca_server(&["init"]);
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("token 'trellis-hsm' cannot hold key")
            && said.contains("(ec-p256)")
            && said.contains("CKM_EC_KEY_PAIR_GEN"),
        "the refusal names the token, the key and what is missing: {said}"
    );
    // Nothing was half-made: no class state, and `hsm check` of the EC
    // configuration reports the missing mechanism as its one problem.
    assert!(!work
        .path()
        .join("deployment/classes/db/state.toml")
        .exists());
    let check = refused.ca_server(&["hsm", "check", "--json"]);
    assert!(!check.status.success());
    let report: Value = serde_json::from_slice(&check.stdout).expect("hsm check --json");
    let problems = report["problems"].to_string();
    assert!(problems.contains("CKM_EC_KEY_PAIR_GEN"), "{report:#}");
    assert!(
        report["online"]["algorithms"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|a| a["algorithm"] == json!("rsa-2048") && a["sign"] == json!("CKM_RSA_PKCS")),
        "{report:#}"
    );
    std::fs::remove_dir_all(work.path().join("deployment")).unwrap();
    conformance(&env, work.path(), "rsa-2048", "CKM_RSA_PKCS");
}

#[test]
fn nss_softoken_passes_the_conformance_suite_with_init_params() {
    let work = workdir("nss");
    let env = hsm_env::nss::nss(&work.path().join("hsm"));
    // Without the library parameters the module cannot start, and says what
    // to set.
    let mut bare = Deployment::new(&env, &work.path().join("bare"), "ec-p256");
    let text_config = std::fs::read_to_string(&bare.config).unwrap();
    let without: String = text_config
        .lines()
        .filter(|l| !l.starts_with("init_params"))
        .map(|l| format!("{l}\n"))
        .collect();
    bare.config = work.path().join("bare/config-without-params.toml");
    std::fs::write(&bare.config, without).unwrap();
    let out = bare.ca_server(&["hsm", "check"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("init_params"),
        "the failure names the setting: {}",
        text(&out)
    );
    conformance(&env, work.path(), "ec-p256", "CKM_ECDSA");
}

/// Write `path` the way the admin commands do: a new file renamed over it.
fn replace_file(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn a_retired_intermediate_is_never_used_when_its_successor_cannot_load() {
    let work = workdir("suspend");
    let env = hsm_env::softhsm2(&work.path().join("hsm"));
    let dir = work.path().join("deployment");
    let deployment = Deployment::new(&env, &dir, "ec-p256");
    deployment.ok(&["init"]);
    let server = deployment.serve();
    let tmp = work.path().join("csrs");
    std::fs::create_dir_all(&tmp).unwrap();
    let (first, _, _) = issue(&server, &tmp, "before");

    // Another replica's operator activates an intermediate whose key this
    // replica's token does not have.
    let state_path = dir.join("classes/db/state.toml");
    let state = std::fs::read_to_string(&state_path).unwrap();
    let active = deployment.active_intermediate("db");
    let ints = dir.join("classes/db/intermediates");
    std::fs::copy(
        ints.join(format!("{active}.pem")),
        ints.join("db-int-elsewhere.pem"),
    )
    .unwrap();
    replace_file(
        &state_path,
        &state.replace(&format!("key = \"{active}\""), "key = \"db-int-elsewhere\""),
    );
    let db_csr = openssl_csr(
        &tmp,
        "after",
        P256,
        "/CN=after.db.internal",
        &["-addext", "subjectAltName=DNS:after.db.internal"],
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let refused = loop {
        let (status, body) = server.native_sign("db", &json!({"class": "db", "csr": db_csr}));
        if status != 200 {
            break (status, body);
        }
        // Whatever was issued meanwhile came from the intermediate the state
        // named active at the time.
        assert_eq!(
            issuer_of(&tmp, body["certificate"].as_str().unwrap_or_default()),
            issuer_of(&tmp, &first)
        );
        assert!(Instant::now() < deadline, "the class was never suspended");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(refused.0, 503, "{}", refused.1);
    assert_eq!(
        refused.1["error"]["code"],
        json!("hsm_unavailable"),
        "{}",
        refused.1
    );
    assert!(
        refused.1["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("class 'db' is not issuing"),
        "{}",
        refused.1
    );
    assert!(server.server_log().contains("class_suspended"));
    // The replica says it is not ready, so a balancer routes elsewhere.
    let ready = server.client().request("GET", "/readyz", &[], b"");
    assert_eq!(ready.status, 503, "{}", ready.text());
    assert!(ready.text().contains("class db"), "{}", ready.text());
    // Other classes go on issuing.
    let web_csr = openssl_csr(
        &tmp,
        "web",
        P256,
        "/CN=a.web.internal",
        &["-addext", "subjectAltName=DNS:a.web.internal"],
    );
    let (status, body) = server.native_sign("admin", &json!({"class": "web", "csr": web_csr}));
    assert_eq!(status, 200, "{body}");
    // Restoring the state brings the class back without a restart.
    replace_file(&state_path, &state);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, _) = server.native_sign("db", &json!({"class": "db", "csr": db_csr}));
        if status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "the class never came back");
        std::thread::sleep(Duration::from_millis(100));
    }
    let ready = server.client().request("GET", "/readyz", &[], b"");
    assert_eq!(ready.status, 200, "{}", ready.text());
}

#[test]
fn tokens_that_share_a_label_are_told_apart_by_serial_or_refused() {
    let work = workdir("twins");
    let env = hsm_env::softhsm2(&work.path().join("hsm"));
    for _ in 0..2 {
        let out = run(env
            .command(Path::new("softhsm2-util"))
            .args(["--init-token", "--free", "--label", "trellis-twin"])
            .args(["--so-pin", "so-twin-1", "--pin", &env.online_pin]));
        assert!(out.status.success(), "{}", text(&out));
    }
    let dir = work.path().join("deployment");
    let deployment = Deployment::new(&env, &dir, "ec-p256");
    let config = std::fs::read_to_string(&deployment.config).unwrap();
    let twin = config.replace(
        &format!("online_token = \"{}\"", env.online_token),
        "online_token = \"trellis-twin\"",
    );
    std::fs::write(&deployment.config, &twin).unwrap();
    let out = deployment.ca_server(&["hsm", "check", "--json"]);
    assert!(!out.status.success());
    let report: Value = serde_json::from_slice(&out.stdout).expect("hsm check --json");
    let problems = report["problems"].to_string();
    assert!(
        problems.contains("more than one token matches 'trellis-twin'")
            && problems.contains("serial"),
        "{report:#}"
    );
    // The serials `hsm check` lists pick one of them.
    let serial = report["slots"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["label"] == json!("trellis-twin"))
        .and_then(|s| s["serial"].as_str())
        .expect("the twins are listed with their serials")
        .to_string();
    std::fs::write(
        &deployment.config,
        twin.replace(
            "online_token = \"trellis-twin\"",
            &format!("online_token = \"trellis-twin\"\nonline_token_serial = \"{serial}\""),
        ),
    )
    .unwrap();
    let report: Value =
        serde_json::from_str(&deployment.ok(&["hsm", "check", "--json"])).expect("json");
    assert_eq!(report["problems"], json!([]), "{report:#}");
    assert!(
        report["online"]["token"]
            .as_str()
            .unwrap_or_default()
            .contains(&serial),
        "{report:#}"
    );
}
