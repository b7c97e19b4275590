//! The auth keys file (`auth-keys.toml`): who may ask for what. Each key has
//! an id, a secret (hex, or a `file:`/`env:` reference to hex), optionally the
//! previous secret during rotation, the classes and profiles it may use,
//! whether it may use the CFSSL-compatible endpoint (which cannot stop
//! replays), and its rate limit.

use ca_proto::auth::parse_secret;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
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
    /// Class names, or `["*"]` for all.
    classes: Vec<String>,
    /// Profile names, or `["*"]` for all (the default).
    #[serde(default = "all")]
    profiles: Vec<String>,
    /// May use `/api/v1/cfssl/authsign` (no replay protection there).
    #[serde(default)]
    cfssl: bool,
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
            .finish()
    }
}

impl AuthKey {
    /// Current secret first, then the previous one.
    pub fn secrets(&self) -> Vec<&[u8]> {
        self.secrets.iter().map(Vec::as_slice).collect()
    }

    pub fn may_use_class(&self, class: &str) -> bool {
        self.classes.iter().any(|c| c == "*" || c == class)
    }

    pub fn may_use_profile(&self, profile: &str) -> bool {
        self.profiles.iter().any(|p| p == "*" || p == profile)
    }
}

pub struct AuthKeys {
    keys: BTreeMap<String, AuthKey>,
}

impl AuthKeys {
    pub fn load(path: &Path) -> Result<AuthKeys, KeysError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| KeysError::Read {
            path: shown.clone(),
            source,
        })?;
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        Self::parse(&text, base).map_err(|message| KeysError::Invalid {
            path: shown,
            message,
        })
    }

    pub fn parse(text: &str, base: &Path) -> Result<AuthKeys, String> {
        let file: KeysFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut keys = BTreeMap::new();
        for entry in file.keys {
            let id = entry.id.clone();
            if !ca_proto::auth::valid_key_id(&id) {
                return Err(format!(
                    "key id '{id}' must be 1-64 characters of [A-Za-z0-9._-]"
                ));
            }
            let mut secrets =
                vec![resolve_secret(&entry.secret, base).map_err(|e| format!("key '{id}': {e}"))?];
            if let Some(prev) = &entry.previous_secret {
                secrets.push(
                    resolve_secret(prev, base)
                        .map_err(|e| format!("key '{id}' previous_secret: {e}"))?,
                );
            }
            if entry.classes.is_empty() {
                return Err(format!("key '{id}': classes is empty"));
            }
            if !(entry.rate_per_second > 0.0 && entry.burst >= 1.0) {
                return Err(format!(
                    "key '{id}': rate_per_second must be > 0 and burst >= 1"
                ));
            }
            let key = AuthKey {
                id: id.clone(),
                secrets,
                classes: entry.classes,
                profiles: entry.profiles,
                cfssl: entry.cfssl,
                rate_per_second: entry.rate_per_second,
                burst: entry.burst,
            };
            if keys.insert(id.clone(), key).is_some() {
                return Err(format!("key id '{id}' appears twice"));
            }
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

/// `file:PATH` (relative to the keys file), `env:NAME`, or inline hex.
fn resolve_secret(reference: &str, base: &Path) -> Result<Vec<u8>, String> {
    let hex_text = if let Some(path) = reference.strip_prefix("file:") {
        let path = base.join(path);
        std::fs::read_to_string(&path)
            .map_err(|e| format!("reading secret file {}: {e}", path.display()))?
    } else if let Some(name) = reference.strip_prefix("env:") {
        std::env::var(name).map_err(|_| format!("environment variable {name} is not set"))?
    } else {
        reference.to_string()
    };
    parse_secret(hex_text.trim()).map_err(|e| format!("secret: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
