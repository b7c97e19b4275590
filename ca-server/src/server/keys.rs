//! The auth keys file (`auth-keys.toml`): who may ask for what. Each key has
//! an id, a secret (hex, or a `file:`/`env:` reference to hex), optionally the
//! previous secret during rotation, the classes and profiles it may use,
//! whether it may use the CFSSL-compatible endpoint (which cannot stop
//! replays), and its rate limit.
//!
//! Rules enforced at load:
//! - the file itself and every `file:` secret are secret files
//!   (`ca_proto::secret`: regular, owned by this user or root, private unless
//!   `[server] secret_file_mode` relaxes it, size-capped); no error message
//!   ever contains a secret (TOML errors give file:line:column only);
//! - every secret (current or previous, across all keys) is distinct, so a
//!   secret identifies exactly one key: the CFSSL endpoint, which tries every
//!   CFSSL-enabled key, can never let one key's secret act with another's
//!   scope;
//! - the `ca` class (the server's own TLS identity) is not covered by a `*`
//!   scope: only a key that names `"ca"` in `classes` may request it.

use ca_proto::auth::parse_secret;
use ca_proto::secret::{
    describe_parse_error, read_secret_file, ResolveError, SecretFileMode, SecretRef,
    MAX_CONFIG_BYTES,
};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;

/// The class that issues the server's own TLS certificate: never included
/// in a `*` scope.
pub const CA_CLASS: &str = "ca";

#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// The file could not be read, or is not a safe secret file.
    #[error("auth keys: {0}")]
    File(ResolveError),
    /// Not TOML, or not the schema: `path:line:column: what was expected`.
    #[error("auth keys: {0}")]
    Syntax(String),
    #[error("{path}: {problem}")]
    Invalid { path: String, problem: KeyProblem },
}

/// What is wrong with one key of `auth-keys.toml` (never its secret).
#[derive(Debug, thiserror::Error)]
pub enum KeyProblem {
    #[error("key id '{0}' must be 1-64 characters of [A-Za-z0-9._-]")]
    BadId(String),
    #[error("key id '{0}' appears twice")]
    Duplicate(String),
    #[error("key '{id}' {field}: {why}")]
    Secret {
        id: String,
        field: &'static str,
        why: SecretProblem,
    },
    #[error("key '{0}': previous_secret is the same as secret")]
    PreviousIsCurrent(String),
    #[error("keys '{other}' ({other_field}) and '{id}' ({field}) have the same secret; every key needs its own")]
    SharedSecret {
        other: String,
        other_field: &'static str,
        id: String,
        field: &'static str,
    },
    #[error("key '{0}': classes is empty")]
    NoClasses(String),
    #[error("key '{0}': rate_per_second must be > 0 and burst >= 1")]
    BadRate(String),
}

/// Why a key's secret could not be had (the value itself is never shown).
#[derive(Debug, thiserror::Error)]
pub enum SecretProblem {
    #[error("{0}")]
    Hex(ca_proto::auth::SecretError),
    #[error("{0}")]
    Reference(ResolveError),
    #[error("{origin}: {why}")]
    HexIn {
        origin: String,
        why: ca_proto::auth::SecretError,
    },
}

impl From<ResolveError> for KeysError {
    fn from(e: ResolveError) -> Self {
        KeysError::File(e)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    #[serde(default, rename = "key")]
    keys: Vec<KeyEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    id: String,
    secret: String,
    #[serde(default)]
    previous_secret: Option<String>,
    /// Class names, or `["*"]` for all but `ca`.
    classes: Vec<String>,
    /// Profile names, or `["*"]` for all (the default).
    #[serde(default = "all")]
    profiles: Vec<String>,
    /// May use `/api/v1/cfssl/authsign` (no replay protection there).
    #[serde(default)]
    cfssl: bool,
    /// Classes whose certificates this key may revoke (`POST /v1/revoke`),
    /// or `["*"]` for all but `ca`. Default: none.
    #[serde(default)]
    revoke: Vec<String>,
    /// Sustained requests per second (token bucket refill).
    #[serde(default = "default_rate")]
    rate_per_second: f64,
    /// Bucket size: the burst allowed above the sustained rate.
    #[serde(default = "default_burst")]
    burst: f64,
}

fn all() -> Vec<String> {
    vec!["*".into()]
}
fn default_rate() -> f64 {
    1000.0
}
fn default_burst() -> f64 {
    2000.0
}

/// A key as the server uses it. Secrets are only ever compared in constant
/// time (inside `ca_proto`) and never printed.
pub struct AuthKey {
    pub id: String,
    secrets: Vec<Vec<u8>>,
    classes: Vec<String>,
    profiles: Vec<String>,
    revoke: Vec<String>,
    pub cfssl: bool,
    pub rate_per_second: f64,
    pub burst: f64,
}

impl std::fmt::Debug for AuthKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthKey")
            .field("id", &self.id)
            .field("secrets", &"<redacted>")
            .field("classes", &self.classes)
            .field("profiles", &self.profiles)
            .field("revoke", &self.revoke)
            .finish()
    }
}

impl Drop for AuthKey {
    fn drop(&mut self) {
        for secret in &mut self.secrets {
            secret.iter_mut().for_each(|b| *b = 0);
        }
    }
}

impl AuthKey {
    /// Current secret first, then the previous one.
    pub fn secrets(&self) -> Vec<&[u8]> {
        self.secrets.iter().map(Vec::as_slice).collect()
    }

    /// `*` covers every class except `ca`, which must be named.
    pub fn may_use_class(&self, class: &str) -> bool {
        self.classes
            .iter()
            .any(|c| c == class || (c == "*" && class != CA_CLASS))
    }

    /// Whether the key may revoke certificates of `class` (`revoke`
    /// permission; `*` covers every class except `ca`).
    pub fn may_revoke(&self, class: &str) -> bool {
        self.revoke
            .iter()
            .any(|c| c == class || (c == "*" && class != CA_CLASS))
    }

    pub fn may_use_profile(&self, profile: &str) -> bool {
        self.profiles.iter().any(|p| p == "*" || p == profile)
    }
}

#[derive(Debug)]
pub struct AuthKeys {
    keys: BTreeMap<String, AuthKey>,
}

impl AuthKeys {
    /// Load with the strict secret file rules.
    pub fn load(path: &Path) -> Result<AuthKeys, KeysError> {
        AuthKeys::load_with(path, SecretFileMode::Strict)
    }

    /// Load with the configured rule for secret files' modes (`[server]
    /// secret_file_mode`), which applies to this file and to every `file:`
    /// secret it references.
    pub fn load_with(path: &Path, mode: SecretFileMode) -> Result<AuthKeys, KeysError> {
        let shown = path.display().to_string();
        let bytes = read_secret_file(path, mode, MAX_CONFIG_BYTES)?;
        let text = bytes.as_text(&shown)?;
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        Self::parse_file(text, base, mode, path)
    }

    /// Parse keys text (strict rules for referenced files); positions in
    /// errors are relative to `auth-keys.toml`.
    pub fn parse(text: &str, base: &Path) -> Result<AuthKeys, KeysError> {
        Self::parse_file(
            text,
            base,
            SecretFileMode::Strict,
            Path::new("auth-keys.toml"),
        )
    }

    fn parse_file(
        text: &str,
        base: &Path,
        mode: SecretFileMode,
        path: &Path,
    ) -> Result<AuthKeys, KeysError> {
        let file: KeysFile = toml::from_str(text).map_err(|e| {
            KeysError::Syntax(describe_parse_error(path, text, e.span(), e.message()))
        })?;
        Self::build(file, base, mode).map_err(|problem| KeysError::Invalid {
            path: path.display().to_string(),
            problem,
        })
    }

    fn build(file: KeysFile, base: &Path, mode: SecretFileMode) -> Result<AuthKeys, KeyProblem> {
        let mut keys = BTreeMap::new();
        // SHA-256 of every secret → (key id, field): secrets are compared
        // through their digests, never directly, and only at load.
        let mut seen: BTreeMap<[u8; 32], (String, &'static str)> = BTreeMap::new();
        for entry in file.keys {
            let id = entry.id.clone();
            if !ca_proto::auth::valid_key_id(&id) {
                return Err(KeyProblem::BadId(id));
            }
            if keys.contains_key(&id) {
                return Err(KeyProblem::Duplicate(id));
            }
            let secret_of = |field: &'static str, reference: &str| {
                resolve_secret(reference, base, mode).map_err(|why| KeyProblem::Secret {
                    id: id.clone(),
                    field,
                    why,
                })
            };
            let mut secrets = vec![secret_of("secret", &entry.secret)?];
            if let Some(prev) = &entry.previous_secret {
                secrets.push(secret_of("previous_secret", prev)?);
            }
            for (secret, field) in secrets.iter().zip(["secret", "previous_secret"]) {
                let digest: [u8; 32] = Sha256::digest(secret).into();
                if let Some((other, other_field)) = seen.get(&digest) {
                    return Err(if *other == id {
                        KeyProblem::PreviousIsCurrent(id)
                    } else {
                        KeyProblem::SharedSecret {
                            other: other.clone(),
                            other_field,
                            id,
                            field,
                        }
                    });
                }
                seen.insert(digest, (id.clone(), field));
            }
            if entry.classes.is_empty() {
                return Err(KeyProblem::NoClasses(id));
            }
            if !(entry.rate_per_second > 0.0 && entry.burst >= 1.0) {
                return Err(KeyProblem::BadRate(id));
            }
            let key = AuthKey {
                id: id.clone(),
                secrets,
                classes: entry.classes,
                profiles: entry.profiles,
                revoke: entry.revoke,
                cfssl: entry.cfssl,
                rate_per_second: entry.rate_per_second,
                burst: entry.burst,
            };
            keys.insert(id, key);
        }
        Ok(AuthKeys { keys })
    }

    pub fn get(&self, id: &str) -> Option<&AuthKey> {
        self.keys.get(id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &AuthKey> {
        self.keys.values()
    }
}

/// `file:PATH` (relative to the keys file), `env:NAME`, or inline hex. The
/// error never contains the value.
fn resolve_secret(
    reference: &str,
    base: &Path,
    mode: SecretFileMode,
) -> Result<Vec<u8>, SecretProblem> {
    if !SecretRef::is_reference(reference) {
        return parse_secret(reference).map_err(SecretProblem::Hex);
    }
    let reference = SecretRef::parse(reference, base).map_err(SecretProblem::Reference)?;
    let origin = reference.origin();
    let secret = reference.resolve(mode).map_err(SecretProblem::Reference)?;
    let text = secret.as_text(&origin).map_err(SecretProblem::Reference)?;
    parse_secret(text).map_err(|why| SecretProblem::HexIn { origin, why })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const A: &str = "00112233445566778899aabbccddeeff";
    const B: &str = "ffeeddccbbaa99887766554433221100";
    const C: &str = "5ec2e75ec2e75ec2e75ec2e75ec2e7aa";

    fn key(id: &str, secret: &str, previous: Option<&str>, classes: &str) -> String {
        let previous = previous
            .map(|p| format!("previous_secret = \"{p}\"\n"))
            .unwrap_or_default();
        format!(
            "[[key]]\nid = \"{id}\"\nsecret = \"{secret}\"\n{previous}classes = {classes}\ncfssl = true\n"
        )
    }

    #[test]
    fn parses_scopes_and_rotation_and_hides_secrets() {
        let keys = AuthKeys::parse(
            r#"
            [[key]]
            id = "db"
            secret = "00112233445566778899aabbccddeeff"
            previous_secret = "ffeeddccbbaa99887766554433221100"
            classes = ["db"]
            profiles = ["server"]
            cfssl = true
            "#,
            Path::new("."),
        )
        .unwrap();
        let db = keys.get("db").unwrap();
        assert!(db.may_use_class("db") && !db.may_use_class("api"));
        assert!(db.may_use_profile("server") && !db.may_use_profile("client"));
        assert_eq!(db.secrets().len(), 2);
        assert!(!format!("{db:?}").contains("00112233"));
    }

    #[test]
    fn rejects_bad_entries() {
        for bad in [
            "[[key]]\nid = \"x\"\nsecret = \"zz\"\nclasses = [\"db\"]",
            "[[key]]\nid = \"x y\"\nsecret = \"00112233445566778899aabbccddeeff\"\nclasses = [\"db\"]",
            "[[key]]\nid = \"x\"\nsecret = \"00112233445566778899aabbccddeeff\"\nclasses = []",
            "[[key]]\nid = \"x\"\nsecret = \"00112233445566778899aabbccddeeff\"\nclasses = [\"db\"]\nsurprise = 1",
        ] {
            assert!(AuthKeys::parse(bad, Path::new(".")).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_star_scope_does_not_include_the_ca_class() {
        let text = [
            key("admin", A, None, "[\"*\"]"),
            key("ops", B, None, "[\"ca\"]"),
            key("both", C, None, "[\"*\", \"ca\"]"),
        ]
        .concat();
        let keys = AuthKeys::parse(&text, Path::new(".")).unwrap();
        let admin = keys.get("admin").unwrap();
        assert!(admin.may_use_class("db") && admin.may_use_class("web"));
        assert!(!admin.may_use_class(CA_CLASS), "`*` must not cover `ca`");
        let ops = keys.get("ops").unwrap();
        assert!(ops.may_use_class(CA_CLASS) && !ops.may_use_class("db"));
        let both = keys.get("both").unwrap();
        assert!(both.may_use_class(CA_CLASS) && both.may_use_class("db"));
    }

    #[test]
    fn two_keys_with_one_secret_are_refused_naming_both() {
        for (text, names) in [
            // same current secret
            (
                [
                    key("db", C, None, "[\"db\"]"),
                    key("api", C, None, "[\"api\"]"),
                ]
                .concat(),
                ["'db' (secret)", "'api' (secret)"],
            ),
            // one key's current is the other's previous
            (
                [
                    key("db", C, None, "[\"db\"]"),
                    key("api", A, Some(C), "[\"api\"]"),
                ]
                .concat(),
                ["'db' (secret)", "'api' (previous_secret)"],
            ),
            (
                [
                    key("db", A, Some(C), "[\"db\"]"),
                    key("api", C, None, "[\"api\"]"),
                ]
                .concat(),
                ["'db' (previous_secret)", "'api' (secret)"],
            ),
            // both previous, and hex case does not make two secrets
            (
                [
                    key("db", A, Some(C), "[\"db\"]"),
                    key("api", B, Some(&C.to_uppercase()), "[\"api\"]"),
                ]
                .concat(),
                ["'db' (previous_secret)", "'api' (previous_secret)"],
            ),
        ] {
            let e = AuthKeys::parse(&text, Path::new("."))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            for name in names {
                assert!(e.contains(name), "{e} should name {name}");
            }
            assert!(!e.to_lowercase().contains(C), "the secret was echoed: {e}");
        }
        let own = key("db", C, Some(C), "[\"db\"]");
        let e = AuthKeys::parse(&own, Path::new("."))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("previous_secret is the same as secret"), "{e}");
    }

    #[test]
    fn the_same_secret_in_two_files_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["db.hex", "api.hex"] {
            let path = dir.path().join(name);
            std::fs::write(&path, format!("{C}\n")).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let text = [
            key("db", "file:db.hex", None, "[\"db\"]"),
            key("api", "env:TRELLIS_KEYS_RS_TEST_SECRET", None, "[\"api\"]"),
            key("web", "file:api.hex", None, "[\"web\"]"),
        ]
        .concat();
        std::env::set_var("TRELLIS_KEYS_RS_TEST_SECRET", A);
        let e = AuthKeys::parse(&text, dir.path())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("'db'") && e.contains("'web'"), "{e}");
        assert!(!e.contains(C), "{e}");
    }

    /// What the CFSSL endpoint does: try every CFSSL-enabled key. With
    /// distinct secrets, a token made with one key's secret (current or
    /// previous) verifies for that key alone.
    #[test]
    fn a_cfssl_token_matches_exactly_one_key() {
        let text = [
            key("db", A, Some(B), "[\"db\"]"),
            key("admin", C, None, "[\"*\"]"),
        ]
        .concat();
        let keys = AuthKeys::parse(&text, Path::new(".")).unwrap();
        let inner = br#"{"certificate_request":"x","label":"api"}"#;
        for (secret, owner) in [(A, "db"), (B, "db"), (C, "admin")] {
            let secret = parse_secret(secret).unwrap();
            let envelope = ca_proto::cfssl::make_authsign(&secret, inner, 0);
            let (_, request, token) = ca_proto::cfssl::decode_authsign(&envelope).unwrap();
            let matching: Vec<&str> = keys
                .iter()
                .filter(|k| k.cfssl)
                .filter(|k| ca_proto::cfssl::verify_token(&k.secrets(), &request, &token).is_ok())
                .map(|k| k.id.as_str())
                .collect();
            assert_eq!(matching, [owner]);
        }
        // …and the db key's secret cannot act with admin's scope
        assert!(!keys.get("db").unwrap().may_use_class("api"));
    }

    #[test]
    fn syntax_errors_give_the_position_not_the_secret() {
        let text = format!("[[key]]\nid = \"db\"\nsecret = \"{C}\nclasses = [\"db\"]\n");
        let e = AuthKeys::parse(&text, Path::new("."))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.starts_with("auth keys: auth-keys.toml:3:"), "{e}");
        assert!(!e.contains(C) && !e.contains('\n'), "{e}");
        // a value of the wrong type is not repeated either
        let text = format!("[[key]]\nid = \"db\"\nsecret = \"{A}\"\nclasses = \"{C}\"\n");
        let e = AuthKeys::parse(&text, Path::new("."))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains("auth-keys.toml:4:11") && e.contains("invalid type"),
            "{e}"
        );
        assert!(!e.contains(C), "{e}");
        // nor an invalid inline secret
        let bad = "5ec2e7-not-hex-5ec2e7-not-hex-5ec2e7";
        let e = AuthKeys::parse(&key("db", bad, None, "[\"db\"]"), Path::new("."))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("not hex") && !e.contains(bad), "{e}");
    }

    #[test]
    fn the_keys_file_and_its_secret_files_must_be_private() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("db.hex");
        std::fs::write(&secret, format!("{C}\n")).unwrap();
        let path = dir.path().join("auth-keys.toml");
        std::fs::write(&path, key("db", "file:db.hex", None, "[\"db\"]")).unwrap();
        let chmod = |p: &Path, m: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
        };
        chmod(&path, 0o600);
        chmod(&secret, 0o644);
        let e = AuthKeys::load(&path).unwrap_err().to_string();
        assert!(e.contains("db.hex") && e.contains("mode 0644"), "{e}");
        assert!(!e.contains(C), "{e}");
        chmod(&secret, 0o640);
        assert!(AuthKeys::load(&path).is_err());
        assert!(AuthKeys::load_with(&path, SecretFileMode::GroupReadable).is_ok());
        chmod(&secret, 0o600);
        assert!(AuthKeys::load(&path).is_ok());
        chmod(&path, 0o644);
        let e = AuthKeys::load(&path).unwrap_err().to_string();
        assert!(
            e.contains("auth-keys.toml") && e.contains("mode 0644"),
            "{e}"
        );
        // a PIN (any non-TOML file) as the keys file: position, no content
        let pin = dir.path().join("online.pin");
        std::fs::write(&pin, "pin-online-7f3e9d2c\n").unwrap();
        chmod(&pin, 0o600);
        let e = AuthKeys::load(&pin).unwrap_err().to_string();
        assert!(
            e.contains("online.pin:1:") && !e.contains("7f3e9d2c"),
            "{e}"
        );
        let e = AuthKeys::load(Path::new("/dev/zero"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a regular file"), "{e}");
    }
}
