//! `ca-server dev` as a newcomer runs it: a fresh directory, twice.

use std::process::Command;
use trellis_e2e::{bin, openssl_verify, run, text};

#[test]
fn dev_creates_a_complete_deployment_and_reuses_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("var");
    let first = run(Command::new(bin("ca-server"))
        .args(["dev", "--init-only", "--dir"])
        .arg(&dir));
    assert!(first.status.success(), "{}", text(&first));
    let first_text = text(&first);
    for class in ["api", "ca", "db", "web"] {
        assert!(
            first_text.contains(&format!("created class '{class}'")),
            "{first_text}"
        );
        for file in ["root.pem", "intermediate.pem", "chain.pem", "state.toml"] {
            assert!(
                dir.join("classes").join(class).join(file).exists(),
                "{class}/{file}"
            );
        }
    }
    assert!(dir.join("config.toml").exists());
    let roots_before = std::fs::read(dir.join("classes/db/root.pem")).unwrap();

    // The server's TLS certificate chains to the `ca` class root.
    let (ok, out) = openssl_verify(
        &dir.join("classes/ca/root.pem"),
        &dir.join("classes/ca/intermediate.pem"),
        &dir.join("tls/server.pem"),
    );
    assert!(ok, "{out}");

    // Secrets are private.
    use std::os::unix::fs::PermissionsExt;
    for secret in [
        "secrets/root.pin",
        "secrets/online.pin",
        "secrets/so.pin",
        "tls/server.key",
    ] {
        let mode = std::fs::metadata(dir.join(secret))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{secret} has mode {mode:o}");
    }

    let second = run(Command::new(bin("ca-server"))
        .args(["dev", "--init-only", "--dir"])
        .arg(&dir));
    assert!(second.status.success(), "{}", text(&second));
    assert!(
        !text(&second).contains("created"),
        "second run created something: {}",
        text(&second)
    );
    assert_eq!(
        std::fs::read(dir.join("classes/db/root.pem")).unwrap(),
        roots_before
    );
}

#[test]
fn a_wrong_pin_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("var");
    let first = run(Command::new(bin("ca-server"))
        .args(["dev", "--init-only", "--dir"])
        .arg(&dir));
    assert!(first.status.success(), "{}", text(&first));
    std::fs::write(dir.join("secrets/online.pin"), "not-the-pin\n").unwrap();
    std::fs::remove_file(dir.join("tls/server.pem")).unwrap();
    let out = run(Command::new(bin("ca-server"))
        .args(["init", "--dir"])
        .arg(&dir));
    assert!(!out.status.success());
    let msg = text(&out);
    assert!(
        msg.contains("CKR_PIN_INCORRECT") && msg.contains("trellis-online"),
        "{msg}"
    );
    assert!(!msg.contains("not-the-pin"), "the PIN was echoed: {msg}");
}
