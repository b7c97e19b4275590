//! Secrets at load (issue 11, items 10-12) against the real `ca-server serve`:
//! every bad PIN or secret file and every malformed file that may hold
//! secrets is refused at start with a non-zero exit and one clear line, and
//! neither stdout nor stderr contains the secret or PIN; two keys sharing a
//! secret are refused naming both; and the `ca` class (the server's own
//! identity) is not issued to a `*`-scoped key, only to a key naming it.

use serde_json::json;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use trellis_e2e::{bin, now_unix, openssl_csr, run, text, TestServer};

/// Distinctive values planted in the deployment; none may ever be printed.
const PIN: &str = "pin-online-5ec2e7a1b9";
const SECRET: &str = "5ec2e7c0ffee5ec2e7c0ffee5ec2e7c0ffee5ec2e7c0ffee5ec2e7c0ffee0042";
const P256: &[&str] = &["ec", "-pkeyopt", "ec_paramgen_curve:P-256"];
/// The server must give up at once; this bounds a hang (e.g. on a FIFO).
const DEADLINE: Duration = Duration::from_secs(60);

/// A fresh `ca-server dev --init-only` deployment whose online PIN and `db`
/// secret are the distinctive values above.
struct Deployment {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

impl Deployment {
    fn new() -> Deployment {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("var");
        let secrets = dir.join("secrets");
        std::fs::create_dir_all(&secrets).unwrap();
        for (file, value) in [("online.pin", PIN), ("auth-db.hex", SECRET)] {
            write_private(&secrets.join(file), format!("{value}\n").as_bytes());
        }
        let init = run(Command::new(bin("ca-server"))
            .args(["dev", "--init-only", "--dir"])
            .arg(&dir));
        assert!(init.status.success(), "{}", text(&init));
        Deployment { _tmp: tmp, dir }
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.dir.join(relative)
    }

    /// Replace `from` by `to` in a file of the deployment (exactly once),
    /// keeping its mode.
    fn edit(&self, file: &str, from: &str, to: &str) {
        let path = self.path(file);
        let before = std::fs::read_to_string(&path).unwrap();
        assert_eq!(before.matches(from).count(), 1, "{from:?} in {file}");
        std::fs::write(&path, before.replacen(from, to, 1)).unwrap();
    }

    /// `ca-server serve` on this deployment: (exit success, stdout+stderr).
    /// Killed, and the test failed, if it is still running at the deadline.
    fn serve(&self) -> (bool, String) {
        let out = self.dir.with_extension("serve.out");
        let err = self.dir.with_extension("serve.err");
        let mut child = Command::new(bin("ca-server"))
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(self.path("config.toml"))
            .env_remove("SOFTHSM2_CONF")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("starting ca-server: {e}"));
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > DEADLINE {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "ca-server serve was still running after {DEADLINE:?}:\n{}{}",
                    std::fs::read_to_string(&out).unwrap_or_default(),
                    std::fs::read_to_string(&err).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let output = format!(
            "{}{}",
            std::fs::read_to_string(&out).unwrap_or_default(),
            std::fs::read_to_string(&err).unwrap_or_default()
        );
        (status.success(), output)
    }

    /// Serve must refuse to start with one line saying `reason` (all the
    /// `reason` parts), without printing the PIN or the secret.
    fn refused(&self, case: &str, reason: &[&str]) -> String {
        let (ok, output) = self.serve();
        assert!(!ok, "{case}: the server started:\n{output}");
        assert_secret_free(case, &output);
        let line = output
            .lines()
            .find(|l| l.starts_with("ca-server: "))
            .unwrap_or_else(|| panic!("{case}: no error line in:\n{output}"))
            .to_string();
        eprintln!("{case}: {line}");
        let last = output.lines().rev().find(|l| !l.trim().is_empty());
        assert_eq!(
            last,
            Some(line.as_str()),
            "{case}: the reason is not one line"
        );
        for part in reason {
            assert!(line.contains(part), "{case}: {part:?} missing from: {line}");
        }
        line
    }
}

fn write_private(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
    chmod(path, 0o600);
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn assert_secret_free(case: &str, output: &str) {
    for needle in [PIN, SECRET, &SECRET[..24], &SECRET.to_uppercase()] {
        assert!(
            !output.contains(needle),
            "{case}: the output contains a secret ({needle}):\n{output}"
        );
    }
}

/// Line (1-based) of the first occurrence of `needle` in a file.
fn line_of(path: &Path, needle: &str) -> usize {
    let text = std::fs::read_to_string(path).unwrap();
    let offset = text.find(needle).unwrap();
    text[..offset].matches('\n').count() + 1
}

#[test]
fn the_unchanged_deployment_serves() {
    // The cases below fail for the reason they plant, not for another one.
    let d = Deployment::new();
    let server = TestServer::start_in(&d.dir, &[]);
    let csr = openssl_csr(
        &d.dir,
        "s",
        P256,
        "/CN=s.db.internal",
        &["-addext", "subjectAltName=DNS:s.db.internal"],
    );
    let (status, body) = server.native_sign("db", &json!({"class": "db", "csr": csr}));
    assert_eq!(status, 200, "{body}");
}

#[test]
fn a_pin_file_readable_by_others_is_refused() {
    let d = Deployment::new();
    chmod(&d.path("secrets/online.pin"), 0o644);
    d.refused("PIN 0644", &["online.pin", "mode 0644", "group or others"]);
    // group-readable is not enough in the default (strict) mode
    chmod(&d.path("secrets/online.pin"), 0o640);
    d.refused("PIN 0640", &["online.pin", "mode 0640"]);
}

#[test]
fn a_pin_file_in_a_directory_writable_by_others_is_refused() {
    let d = Deployment::new();
    let open = d.path("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::rename(d.path("secrets/online.pin"), open.join("online.pin")).unwrap();
    chmod(&open, 0o777);
    d.edit(
        "config.toml",
        "online_pin = \"file:secrets/online.pin\"",
        "online_pin = \"file:open/online.pin\"",
    );
    d.refused(
        "PIN in a 0777 directory",
        &["online.pin", "writable by others", "0777"],
    );
}

#[test]
fn a_pin_that_is_a_symlink_to_dev_zero_is_refused() {
    let d = Deployment::new();
    let pin = d.path("secrets/online.pin");
    std::fs::remove_file(&pin).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &pin).unwrap();
    d.refused(
        "PIN symlink to /dev/zero",
        &[
            "online.pin",
            "not a regular file",
            "symlink to a character device",
        ],
    );
}

#[test]
fn file_dev_zero_as_pin_or_secret_is_refused() {
    let d = Deployment::new();
    d.edit(
        "config.toml",
        "online_pin = \"file:secrets/online.pin\"",
        "online_pin = \"file:/dev/zero\"",
    );
    d.refused(
        "PIN file:/dev/zero",
        &["/dev/zero", "not a regular file (a character device)"],
    );
    d.edit(
        "config.toml",
        "online_pin = \"file:/dev/zero\"",
        "online_pin = \"file:secrets/online.pin\"",
    );
    d.edit(
        "auth-keys.toml",
        "secret = \"file:secrets/auth-db.hex\"",
        "secret = \"file:/dev/zero\"",
    );
    d.refused(
        "secret file:/dev/zero",
        &["key 'db' secret", "/dev/zero", "not a regular file"],
    );
}

#[test]
fn a_huge_secret_file_is_refused_without_reading_it_all() {
    let d = Deployment::new();
    let huge = SECRET.repeat(10 * 1024 * 1024 / SECRET.len() + 1);
    write_private(&d.path("secrets/auth-db.hex"), huge.as_bytes());
    d.refused(
        "10 MiB secret file",
        &["key 'db' secret", "auth-db.hex", "larger than 4096 bytes"],
    );
    // and as the PIN
    write_private(
        &d.path("secrets/auth-db.hex"),
        format!("{SECRET}\n").as_bytes(),
    );
    let mut pin = std::fs::File::create(d.path("secrets/online.pin")).unwrap();
    pin.write_all(PIN.repeat(10 * 1024 * 1024 / PIN.len()).as_bytes())
        .unwrap();
    d.refused("10 MiB PIN file", &["online.pin", "larger than 4096 bytes"]);
}

#[test]
fn a_fifo_as_secret_is_refused_at_once() {
    let d = Deployment::new();
    let secret = d.path("secrets/auth-db.hex");
    std::fs::remove_file(&secret).unwrap();
    let made = run(Command::new("mkfifo").arg(&secret));
    assert!(made.status.success(), "mkfifo: {}", text(&made));
    chmod(&secret, 0o600);
    let started = Instant::now();
    d.refused(
        "FIFO secret",
        &["auth-db.hex", "not a regular file (a FIFO)"],
    );
    assert!(started.elapsed() < Duration::from_secs(30), "it waited");
}

#[test]
fn a_toml_syntax_error_on_an_inline_secret_reports_the_position_only() {
    let d = Deployment::new();
    // an inline secret with its closing quote missing
    d.edit(
        "auth-keys.toml",
        "secret = \"file:secrets/auth-db.hex\"",
        &format!("secret = \"{SECRET}"),
    );
    let line = line_of(&d.path("auth-keys.toml"), SECRET);
    let shown = d.refused(
        "syntax error on the secret line",
        &["auth-keys.toml:", "invalid basic string"],
    );
    assert!(
        shown.contains(&format!("auth-keys.toml:{line}:")),
        "line {line} expected: {shown}"
    );
    // a secret of the wrong type, e.g. unquoted digits, is not repeated
    d.edit(
        "auth-keys.toml",
        &format!("secret = \"{SECRET}"),
        "secret = 5123456789012345",
    );
    d.refused(
        "unquoted secret",
        &["auth-keys.toml:", "invalid type: integer"],
    );
    // nor an inline secret that is not hex
    d.edit(
        "auth-keys.toml",
        "secret = 5123456789012345",
        &format!("secret = \"{SECRET}zz\""),
    );
    d.refused("inline secret not hex", &["key 'db' secret", "not hex"]);
    // the same for a syntax error in config.toml on the PIN line
    d.edit(
        "auth-keys.toml",
        &format!("secret = \"{SECRET}zz\""),
        "secret = \"file:secrets/auth-db.hex\"",
    );
    d.edit(
        "config.toml",
        "online_pin = \"file:secrets/online.pin\"",
        &format!("online_pin = \"{PIN}"),
    );
    let line = line_of(&d.path("config.toml"), PIN);
    d.refused(
        "syntax error on the PIN line",
        &[&format!("config.toml:{line}:"), "invalid basic string"],
    );
    // and a PIN written as a value, which is never accepted
    d.edit(
        "config.toml",
        &format!("online_pin = \"{PIN}"),
        &format!("online_pin = \"{PIN}\""),
    );
    d.refused(
        "PIN as a value",
        &["hsm.online_pin", "'file:PATH' or 'env:NAME'"],
    );
}

#[test]
fn auth_keys_pointing_at_the_pin_file_does_not_print_the_pin() {
    let d = Deployment::new();
    d.edit(
        "config.toml",
        "auth_keys = \"auth-keys.toml\"",
        "auth_keys = \"secrets/online.pin\"",
    );
    d.refused("auth_keys = the PIN file", &["online.pin:1:", "expected"]);
    // a binary file, too
    d.edit(
        "config.toml",
        "auth_keys = \"secrets/online.pin\"",
        "auth_keys = \"tls/server.key\"",
    );
    d.refused("auth_keys = a key file", &["server.key:"]);
}

#[test]
fn an_auth_keys_file_readable_by_others_is_refused() {
    let d = Deployment::new();
    chmod(&d.path("auth-keys.toml"), 0o644);
    d.refused("auth-keys.toml 0644", &["auth-keys.toml", "mode 0644"]);
}

#[test]
fn two_keys_with_the_same_secret_are_refused_naming_both() {
    let d = Deployment::new();
    let keys = d.path("auth-keys.toml");
    let mut text = std::fs::read_to_string(&keys).unwrap();
    text.push_str(&format!(
        "\n[[key]]\nid = \"ops\"\nsecret = \"00112233445566778899aabbccddeeff\"\n\
         previous_secret = \"{SECRET}\"\nclasses = [\"web\"]\ncfssl = true\n"
    ));
    std::fs::write(&keys, text).unwrap();
    let shown = d.refused(
        "same secret",
        &["'db' (secret)", "'ops' (previous_secret)", "same secret"],
    );
    assert!(!shown.contains("00112233"), "{shown}");
    // the same secret behind two files
    d.edit(
        "auth-keys.toml",
        &format!("previous_secret = \"{SECRET}\"\n"),
        "",
    );
    let copy = d.path("secrets/auth-copy.hex");
    write_private(&copy, format!("{SECRET}\n").as_bytes());
    d.edit(
        "auth-keys.toml",
        "secret = \"file:secrets/auth-web.hex\"",
        "secret = \"file:secrets/auth-copy.hex\"",
    );
    d.refused("same secret, two files", &["'db'", "'web'", "same secret"]);
}

#[test]
fn the_ca_class_is_issued_only_to_a_key_that_names_it() {
    let d = Deployment::new();
    // `ops` names the ca class; `admin` (shipped by dev) has ["*"]
    write_private(
        &d.path("secrets/auth-ops.hex"),
        b"a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90\n",
    );
    let keys = d.path("auth-keys.toml");
    let mut text = std::fs::read_to_string(&keys).unwrap();
    assert!(text
        .contains("id = \"admin\"\nsecret = \"file:secrets/auth-admin.hex\"\nclasses = [\"*\"]"));
    text.push_str(
        "\n[[key]]\nid = \"ops\"\nsecret = \"file:secrets/auth-ops.hex\"\nclasses = [\"ca\"]\ncfssl = true\n",
    );
    std::fs::write(&keys, text).unwrap();
    let server = TestServer::start_in(&d.dir, &[]);
    let tmp = tempfile::tempdir().unwrap();
    let csr = openssl_csr(
        tmp.path(),
        "own",
        P256,
        "/CN=localhost",
        &["-addext", "subjectAltName=DNS:localhost"],
    );
    let request = json!({"class": "ca", "csr": csr});

    let (status, body) = server.native_sign("admin", &request);
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "forbidden_scope", "{body}");
    // the `*` key still gets every other class
    let db = openssl_csr(
        tmp.path(),
        "db",
        P256,
        "/CN=s.db.internal",
        &["-addext", "subjectAltName=DNS:s.db.internal"],
    );
    let (status, body) = server.native_sign("admin", &json!({"class": "db", "csr": db}));
    assert_eq!(status, 200, "{body}");

    let (status, body) = server.native_sign("ops", &request);
    assert_eq!(status, 200, "{body}");
    assert!(
        body.to_string().contains("BEGIN CERTIFICATE"),
        "no certificate: {body}"
    );

    // the CFSSL endpoint, which tries every key: the same answers
    let inner = serde_json::to_vec(&json!({"certificate_request": csr, "label": "ca"})).unwrap();
    let client = server.client();
    for (key, want_ok) in [("admin", false), ("ops", true)] {
        let envelope = ca_proto::cfssl::make_authsign(&server.secret(key), &inner, now_unix());
        let response = client.request("POST", "/api/v1/cfssl/authsign", &[], &envelope);
        let body = response.json();
        if want_ok {
            assert_eq!(response.status, 200, "{key}: {body}");
            assert_eq!(body["success"], true, "{key}: {body}");
        } else {
            assert_eq!(response.status, 403, "{key}: {body}");
            assert!(
                body.to_string().contains("forbidden_scope"),
                "{key}: {body}"
            );
        }
    }
}
