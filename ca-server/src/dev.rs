//! `ca-server dev --dir DIR`: a complete development deployment in one
//! directory, created idempotently — SoftHSM2 tokens with generated PINs, the
//! shipped class policies, `config.toml`, every class hierarchy and the
//! server's TLS certificate. A second run reuses everything it finds.
//!
//! Secret files (the PINs, `secrets/auth-*.hex`, `auth-keys.toml`) are
//! written 0600 in a 0700 `secrets/` directory, as the server's strict
//! secret file rules require; files found there with group or other
//! permissions (e.g. planted by hand) are made private again, and said so.

use crate::state::write_atomic;
use anyhow::{Context, Result};
use hsm::{softhsm, Module, Pin};
use std::path::{Path, PathBuf};

pub struct DevPaths {
    pub dir: PathBuf,
    pub config: PathBuf,
}

/// Lay out DIR (files only; no HSM access) and return the config path. Must
/// run before the PKCS#11 module is loaded: it sets `SOFTHSM2_CONF`.
pub fn prepare(dir: &Path, listen: &str) -> Result<DevPaths> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = std::fs::canonicalize(dir)?;
    let conf = softhsm::write_config(&dir.join("hsm"))?;
    softhsm::use_config(&conf);
    for name in ["so.pin", "root.pin", "online.pin"] {
        let path = dir.join("secrets").join(name);
        if !path.exists() {
            write_atomic(&path, format!("{}\n", random_secret(16)?).as_bytes(), 0o600)?;
        }
    }
    set_mode(&dir.join("secrets"), 0o700)?;
    make_private(&dir.join("secrets"))?;
    let policies = dir.join("policies");
    if !policies.exists() {
        for (class, text) in policies::SHIPPED {
            write_atomic(
                &policies.join(format!("{class}.toml")),
                text.as_bytes(),
                0o644,
            )?;
        }
    }
    write_auth_keys(&dir)?;
    make_private(&dir.join("auth-keys.toml"))?;
    let config = dir.join("config.toml");
    if !config.exists() {
        let module = softhsm::find_module()
            .context("SoftHSM2 is not installed (apt-get install softhsm2)")?;
        let text = format!(
            r#"# Trellis development deployment, written by `ca-server dev`.
# Relative paths are relative to this file. PINs are references, never values.
state_dir = "."
policies_dir = "policies"

[hsm]
module = "{module}"
softhsm2_conf = "hsm/softhsm2.conf"
online_token = "trellis-online"
online_pin = "file:secrets/online.pin"
root_token = "trellis-root"
root_pin = "file:secrets/root.pin"
signing_sessions = 0   # one per CPU
pin_signing_threads = true   # busy signing threads each on a CPU of its own

[ca]
key_algorithm = "ec-p256"
organization = "Trellis (development)"
root_validity_days = 3650
intermediate_validity_days = 365

[server]
listen = "{listen}"
tls_names = ["localhost", "127.0.0.1", "::1"]
auth_keys = "auth-keys.toml"
secret_file_mode = "strict"   # PIN and secret files: 0600/0400, owned by this user
max_body_bytes = 65536
max_connections = 4096
header_read_timeout_secs = 10
max_skew_secs = 300

[log]
log_id = "dev-1"
"#,
            module = module.display()
        );
        write_atomic(&config, text.as_bytes(), 0o644)?;
    }
    Ok(DevPaths { dir, config })
}

/// Create the two SoftHSM2 tokens unless they exist.
pub fn ensure_tokens(paths: &DevPaths, module: &Module) -> Result<Vec<&'static str>> {
    let pin = |name: &str| {
        Pin::resolve(&format!(
            "file:{}",
            paths.dir.join("secrets").join(name).display()
        ))
    };
    let so = pin("so.pin")?;
    let mut created = Vec::new();
    for (label, pin_file) in [
        ("trellis-root", "root.pin"),
        ("trellis-online", "online.pin"),
    ] {
        if softhsm::ensure_token(module, label, &so, &pin(pin_file)?)? {
            created.push(label);
        }
    }
    Ok(created)
}

/// One key per shipped class (that class only, CFSSL endpoint allowed) and
/// `admin` for every class, which may also revoke (`*`, which does not include `ca`: no key of the
/// development deployment can obtain the server's identity); secrets in
/// `secrets/auth-<id>.hex` (0600), the same files a local `ca-client` can
/// use.
fn write_auth_keys(dir: &Path) -> Result<()> {
    let path = dir.join("auth-keys.toml");
    if path.exists() {
        return Ok(());
    }
    let mut text = String::from(
        "# Auth keys of this development deployment, written by `ca-server dev`.\n\
         # Secrets live in the referenced files (mode 0600).\n",
    );
    let mut ids: Vec<&str> = policies::SHIPPED
        .iter()
        .map(|(c, _)| *c)
        .filter(|c| *c != "ca")
        .collect();
    ids.push("admin");
    for id in ids {
        let secret = dir.join("secrets").join(format!("auth-{id}.hex"));
        if !secret.exists() {
            write_atomic(
                &secret,
                format!("{}\n", random_secret(32)?).as_bytes(),
                0o600,
            )?;
        }
        let (classes, revoke) = if id == "admin" {
            ("\"*\"".to_string(), "\nrevoke = [\"*\"]")
        } else {
            (format!("\"{id}\""), "")
        };
        text.push_str(&format!(
            "\n[[key]]\nid = \"{id}\"\nsecret = \"file:secrets/auth-{id}.hex\"\nclasses = [{classes}]\nprofiles = [\"*\"]\ncfssl = true{revoke}\n"
        ));
    }
    write_atomic(&path, text.as_bytes(), 0o600)?;
    Ok(())
}

fn random_secret(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    getrandom::getrandom(&mut buf).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    Ok(hex::encode(buf))
}

/// `path` (a file, or every file of a directory) loses any group or other
/// permission.
fn make_private(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let files = if path.is_dir() {
        std::fs::read_dir(path)
            .with_context(|| format!("reading {}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect()
    } else {
        vec![path.to_path_buf()]
    };
    for file in files {
        let Ok(meta) = std::fs::symlink_metadata(&file) else {
            continue;
        };
        let mode = meta.permissions().mode() & 0o777;
        if meta.is_file() && mode & 0o077 != 0 {
            set_mode(&file, mode & 0o700)
                .with_context(|| format!("making {} private", file.display()))?;
            println!(
                "made {} private (mode {mode:03o} -> {:03o})",
                file.display(),
                mode & 0o700
            );
        }
    }
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}
