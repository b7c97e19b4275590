//! Key pairs inside the token: generation with minimal, portable templates
//! and a read-back of what the token made, lookup by label, and reading
//! back the public half with the mechanism chosen for it.

use crate::der::{rsa_public_key_der, unwrap_ec_point};
use crate::error::{HsmError, HsmResult};
use crate::mechanisms::SignMechanism;
use crate::module::{HsmSession, Token};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use std::fmt;
use std::str::FromStr;

const OID_P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_P384: &[u8] = &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22];

/// Algorithms a CA key may have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyAlgorithm {
    EcP256,
    EcP384,
    Rsa2048,
    Rsa3072,
    Rsa4096,
}

impl KeyAlgorithm {
    /// Every algorithm a CA key may have.
    pub const ALL: [KeyAlgorithm; 5] = [
        KeyAlgorithm::EcP256,
        KeyAlgorithm::EcP384,
        KeyAlgorithm::Rsa2048,
        KeyAlgorithm::Rsa3072,
        KeyAlgorithm::Rsa4096,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            KeyAlgorithm::EcP256 => "ec-p256",
            KeyAlgorithm::EcP384 => "ec-p384",
            KeyAlgorithm::Rsa2048 => "rsa-2048",
            KeyAlgorithm::Rsa3072 => "rsa-3072",
            KeyAlgorithm::Rsa4096 => "rsa-4096",
        }
    }

    /// The signature algorithm rcgen writes for this key.
    pub fn rcgen_algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            KeyAlgorithm::EcP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyAlgorithm::EcP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            _ => &rcgen::PKCS_RSA_SHA256,
        }
    }

    pub(crate) fn rsa_bits(&self) -> Option<u64> {
        match self {
            KeyAlgorithm::Rsa2048 => Some(2048),
            KeyAlgorithm::Rsa3072 => Some(3072),
            KeyAlgorithm::Rsa4096 => Some(4096),
            _ => None,
        }
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A key algorithm name that is none of [`KeyAlgorithm`]'s; holds the name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown key algorithm '{0}' (ec-p256, ec-p384, rsa-2048, rsa-3072, rsa-4096)")]
pub struct UnknownAlgorithm(pub String);

impl FromStr for KeyAlgorithm {
    type Err = UnknownAlgorithm;
    fn from_str(s: &str) -> Result<Self, UnknownAlgorithm> {
        Ok(match s {
            "ec-p256" => KeyAlgorithm::EcP256,
            "ec-p384" => KeyAlgorithm::EcP384,
            "rsa-2048" => KeyAlgorithm::Rsa2048,
            "rsa-3072" => KeyAlgorithm::Rsa3072,
            "rsa-4096" => KeyAlgorithm::Rsa4096,
            other => return Err(UnknownAlgorithm(other.to_owned())),
        })
    }
}

/// A key pair in the token: its label, algorithm, public key as rcgen
/// wants it (uncompressed EC point, or PKCS#1 RSAPublicKey), and the
/// mechanism chosen for it on its token.
#[derive(Clone, Debug)]
pub struct KeyInfo {
    pub label: String,
    pub algorithm: KeyAlgorithm,
    pub public_key: Vec<u8>,
    pub mechanism: SignMechanism,
}

/// The security attributes of a private key, read back from the token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PrivateKeyAttributes {
    pub token: bool,
    pub private: bool,
    pub sensitive: bool,
    pub extractable: bool,
    pub always_sensitive: bool,
    pub never_extractable: bool,
    pub sign: bool,
    /// Informational: a CA key is never asked to decrypt, unwrap or derive,
    /// and some tokens refuse templates that say so.
    pub decrypt: bool,
    pub unwrap: bool,
    pub derive: bool,
}

impl PrivateKeyAttributes {
    /// What makes this key unfit to be a CA key, if anything: it must be a
    /// private token object, sensitive, never extractable, and able to sign.
    pub fn weakness(&self) -> Option<&'static str> {
        if !self.token {
            Some("it is not a token object (CKA_TOKEN=false)")
        } else if !self.private {
            Some("it is readable without login (CKA_PRIVATE=false)")
        } else if !self.sensitive {
            Some("it is not sensitive (CKA_SENSITIVE=false)")
        } else if self.extractable {
            Some("it is extractable (CKA_EXTRACTABLE=true)")
        } else if !self.sign {
            Some("it cannot sign (CKA_SIGN=false)")
        } else {
            None
        }
    }
}

/// Key generation and destruction are rare admin steps; SoftHSM2's file
/// object store answers CKR_GENERAL_ERROR now and then when a process
/// creates token objects from several threads at once, so a process does
/// them one at a time.
static OBJECT_CHANGES: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Generate a key pair inside the token, after checking that the token can
/// generate and sign with it. The templates carry only what matters and
/// nothing that contradicts across the pair (tpm2-pkcs11 maps the usage
/// attributes of both halves onto one TPM object and refuses a
/// contradiction, e.g. `CKA_VERIFY`/`CKA_ENCRYPT` on the public half): the
/// private key is a private token object, sensitive, not extractable, and
/// may sign but not decrypt, unwrap or derive; the public key is a token
/// object with no usage attributes at all. The
/// private key's attributes are read back: a token that silently made a
/// weaker key gets it destroyed and the generation refused.
pub fn generate(token: &Token, label: &str, algorithm: KeyAlgorithm) -> HsmResult<KeyInfo> {
    let caps = token.capabilities()?;
    caps.check_generate(label, algorithm)
        .map_err(HsmError::Unsupported)?;
    let session = token.open_session()?;
    let token_label = token.label();
    let _one_at_a_time = OBJECT_CHANGES.lock().unwrap_or_else(|p| p.into_inner());
    if find_private(&session, label)?.is_some() {
        return Err(HsmError::KeyExists {
            label: label.into(),
            token: token_label.into(),
        });
    }
    let id = label.as_bytes().to_vec();
    let mut public = vec![
        Attribute::Token(true),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id.clone()),
    ];
    let private = vec![
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        // Not a decryption or unwrapping oracle, and no key agreement: every
        // module tested takes these on the private half alone (tpm2-pkcs11
        // refuses them only when the public half says otherwise).
        Attribute::Decrypt(false),
        Attribute::Unwrap(false),
        Attribute::Derive(false),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id),
    ];
    let mechanism = match algorithm {
        KeyAlgorithm::EcP256 | KeyAlgorithm::EcP384 => {
            let oid = if algorithm == KeyAlgorithm::EcP256 {
                OID_P256
            } else {
                OID_P384
            };
            public.push(Attribute::EcParams(oid.to_vec()));
            Mechanism::EccKeyPairGen
        }
        _ => {
            let bits = algorithm.rsa_bits().unwrap_or(2048);
            public.push(Attribute::ModulusBits(bits.into()));
            public.push(Attribute::PublicExponent(vec![0x01, 0x00, 0x01]));
            Mechanism::RsaPkcsKeyPairGen
        }
    };
    session.call(
        || format!("generating {algorithm} key '{label}' on token '{token_label}'"),
        |s| s.generate_key_pair(&mechanism, &public, &private),
    )?;
    let attributes = private_key_attributes(&session, token_label, label)?;
    if let Some(weakness) = attributes.weakness() {
        let _ = destroy(&session, token_label, label);
        return Err(HsmError::WeakKey {
            label: label.into(),
            token: token_label.into(),
            weakness: weakness.into(),
        });
    }
    public_key(&session, token, label)
}

/// The token (persistent) private key labelled `label`: never a session
/// copy that a signing session made of it (`pool.rs`).
pub(crate) fn find_private(session: &HsmSession, label: &str) -> HsmResult<Option<ObjectHandle>> {
    find(session, ObjectClass::PRIVATE_KEY, label)
}

/// The token object of `class` labelled `label` (session objects, which
/// every session of this process sees, are not looked at).
fn find(session: &HsmSession, class: ObjectClass, label: &str) -> HsmResult<Option<ObjectHandle>> {
    Ok(find_all(session, class, label, true)?.into_iter().next())
}

fn find_all(
    session: &HsmSession,
    class: ObjectClass,
    label: &str,
    token: bool,
) -> HsmResult<Vec<ObjectHandle>> {
    let template = [
        Attribute::Class(class),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Token(token),
    ];
    session.call(
        || format!("looking up key '{label}'"),
        |s| s.find_objects(&template),
    )
}

/// Read the public key of the pair labelled `label`, and choose how it
/// signs on this token.
pub fn public_key(session: &HsmSession, token: &Token, label: &str) -> HsmResult<KeyInfo> {
    let token_label = token.label();
    let not_found = || HsmError::KeyNotFound {
        label: label.into(),
        token: token_label.into(),
    };
    let handle = find(session, ObjectClass::PUBLIC_KEY, label)?.ok_or_else(not_found)?;
    let context = || format!("reading public key '{label}' on token '{token_label}'");
    let attrs = session.call(context, |s| {
        s.get_attributes(handle, &[AttributeType::KeyType])
    })?;
    let key_type = attrs.iter().find_map(|a| match a {
        Attribute::KeyType(k) => Some(*k),
        _ => None,
    });
    let bad = |message: &str| HsmError::BadKey {
        label: label.into(),
        message: message.into(),
    };
    let (algorithm, public_key) = match key_type {
        Some(KeyType::EC) => {
            let attrs = session.call(context, |s| {
                s.get_attributes(handle, &[AttributeType::EcParams, AttributeType::EcPoint])
            })?;
            let (mut params, mut point) = (None, None);
            for a in attrs {
                match a {
                    Attribute::EcParams(p) => params = Some(p),
                    Attribute::EcPoint(p) => point = Some(p),
                    _ => {}
                }
            }
            let algorithm = match params.as_deref() {
                Some(OID_P256) => KeyAlgorithm::EcP256,
                Some(OID_P384) => KeyAlgorithm::EcP384,
                _ => return Err(bad("unsupported EC curve")),
            };
            let point = point
                .as_deref()
                .and_then(unwrap_ec_point)
                .ok_or_else(|| bad("unreadable CKA_EC_POINT"))?;
            (algorithm, point)
        }
        Some(KeyType::RSA) => {
            let attrs = session.call(context, |s| {
                s.get_attributes(
                    handle,
                    &[AttributeType::Modulus, AttributeType::PublicExponent],
                )
            })?;
            let (mut modulus, mut exponent) = (None, None);
            for a in attrs {
                match a {
                    Attribute::Modulus(m) => modulus = Some(m),
                    Attribute::PublicExponent(e) => exponent = Some(e),
                    _ => {}
                }
            }
            let (modulus, exponent) = modulus
                .zip(exponent)
                .ok_or_else(|| bad("missing RSA modulus"))?;
            let significant = modulus.iter().skip_while(|&&b| b == 0).count();
            let algorithm = match significant * 8 {
                2048 => KeyAlgorithm::Rsa2048,
                3072 => KeyAlgorithm::Rsa3072,
                4096 => KeyAlgorithm::Rsa4096,
                _ => return Err(bad("unsupported RSA modulus size")),
            };
            (algorithm, rsa_public_key_der(&modulus, &exponent))
        }
        _ => return Err(bad("unsupported key type")),
    };
    let mechanism = token
        .capabilities()?
        .sign_mechanism(label, algorithm)
        .map_err(HsmError::Unsupported)?;
    Ok(KeyInfo {
        label: label.into(),
        algorithm,
        public_key,
        mechanism,
    })
}

/// Read back the security attributes of the private key labelled `label`.
pub fn private_key_attributes(
    session: &HsmSession,
    token_label: &str,
    label: &str,
) -> HsmResult<PrivateKeyAttributes> {
    let handle = find_private(session, label)?.ok_or_else(|| HsmError::KeyNotFound {
        label: label.into(),
        token: token_label.into(),
    })?;
    attributes_of(session, handle, label)
}

fn attributes_of(
    session: &HsmSession,
    handle: ObjectHandle,
    label: &str,
) -> HsmResult<PrivateKeyAttributes> {
    let wanted = [
        AttributeType::Token,
        AttributeType::Private,
        AttributeType::Sensitive,
        AttributeType::Extractable,
        AttributeType::AlwaysSensitive,
        AttributeType::NeverExtractable,
        AttributeType::Sign,
        AttributeType::Decrypt,
        AttributeType::Unwrap,
        AttributeType::Derive,
    ];
    let mut out = PrivateKeyAttributes {
        token: false,
        private: false,
        sensitive: false,
        extractable: true,
        always_sensitive: false,
        never_extractable: false,
        sign: false,
        decrypt: false,
        unwrap: false,
        derive: false,
    };
    // One attribute at a time: a module that does not know one of them
    // (CKR_ATTRIBUTE_TYPE_INVALID) must not hide the others. An attribute
    // that cannot be read keeps the pessimistic default above.
    for attribute in wanted {
        let Ok(attrs) = session.call(
            || format!("reading attributes of key '{label}'"),
            |s| s.get_attributes(handle, &[attribute]),
        ) else {
            continue;
        };
        for a in attrs {
            match a {
                Attribute::Token(v) => out.token = v,
                Attribute::Private(v) => out.private = v,
                Attribute::Sensitive(v) => out.sensitive = v,
                Attribute::Extractable(v) => out.extractable = v,
                Attribute::AlwaysSensitive(v) => out.always_sensitive = v,
                Attribute::NeverExtractable(v) => out.never_extractable = v,
                Attribute::Sign(v) => out.sign = v,
                Attribute::Decrypt(v) => out.decrypt = v,
                Attribute::Unwrap(v) => out.unwrap = v,
                Attribute::Derive(v) => out.derive = v,
                _ => {}
            }
        }
    }
    Ok(out)
}

/// Destroy both halves of the pair labelled `label`.
pub fn destroy(session: &HsmSession, token_label: &str, label: &str) -> HsmResult<()> {
    for class in [ObjectClass::PRIVATE_KEY, ObjectClass::PUBLIC_KEY] {
        if let Some(handle) = find(session, class, label)? {
            session.call(
                || format!("destroying key '{label}' on token '{token_label}'"),
                |s| s.destroy_object(handle),
            )?;
        }
    }
    Ok(())
}

impl Token {
    /// Generate a key pair in this token (admin path: opens its own session).
    pub fn generate_key(&self, label: &str, algorithm: KeyAlgorithm) -> HsmResult<KeyInfo> {
        generate(self, label, algorithm)
    }

    /// The public half of the pair labelled `label`.
    pub fn public_key(&self, label: &str) -> HsmResult<KeyInfo> {
        public_key(&self.open_session()?, self, label)
    }

    /// The public half of the pair labelled `label`, looking harder when it
    /// is not visible: a new session first, then (at most every
    /// `reinit_interval`) a re-initialisation of the module, for modules
    /// that show only the objects that existed when they were initialised.
    pub fn public_key_rediscovering(
        &self,
        label: &str,
        reinit_interval: std::time::Duration,
    ) -> HsmResult<KeyInfo> {
        match self.public_key(label) {
            Err(HsmError::KeyNotFound { .. }) => {
                if self.module().reinitialize_at_most_every(reinit_interval)? {
                    self.public_key(label)
                } else {
                    Err(HsmError::KeyNotFound {
                        label: label.into(),
                        token: self.label().into(),
                    })
                }
            }
            other => other,
        }
    }

    /// The labels of every private key on this token (that the user can
    /// see), sorted: for finding keys no state file names.
    pub fn private_key_labels(&self) -> HsmResult<Vec<String>> {
        let session = self.open_session()?;
        let handles = session.call(
            || format!("listing the private keys of token '{}'", self.label()),
            |s| {
                s.find_objects(&[
                    Attribute::Class(ObjectClass::PRIVATE_KEY),
                    Attribute::Token(true),
                ])
            },
        )?;
        let mut labels = Vec::with_capacity(handles.len());
        for handle in handles {
            let attrs = session.call(
                || format!("reading a key label on token '{}'", self.label()),
                |s| s.get_attributes(handle, &[AttributeType::Label]),
            )?;
            for a in attrs {
                if let Attribute::Label(l) = a {
                    labels.push(String::from_utf8_lossy(&l).into_owned());
                }
            }
        }
        labels.sort();
        Ok(labels)
    }

    pub fn private_key_attributes(&self, label: &str) -> HsmResult<PrivateKeyAttributes> {
        private_key_attributes(&self.open_session()?, self.label(), label)
    }

    /// The attributes of every session copy of the private key `label` that
    /// this process's signing sessions hold (see `pool.rs`): for checking
    /// that copies stay sensitive and go with the token key.
    pub fn session_copies(&self, label: &str) -> HsmResult<Vec<PrivateKeyAttributes>> {
        let session = self.open_session()?;
        find_all(&session, ObjectClass::PRIVATE_KEY, label, false)?
            .into_iter()
            .map(|handle| attributes_of(&session, handle, label))
            .collect()
    }

    pub fn destroy_key(&self, label: &str) -> HsmResult<()> {
        let _one_at_a_time = OBJECT_CHANGES.lock().unwrap_or_else(|p| p.into_inner());
        destroy(&self.open_session()?, self.label(), label)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algorithm_names_round_trip_and_unknown_ones_are_named() {
        for alg in KeyAlgorithm::ALL {
            assert_eq!(alg.as_str().parse::<KeyAlgorithm>(), Ok(alg));
        }
        let err = "ed448".parse::<KeyAlgorithm>().unwrap_err();
        assert_eq!(err, UnknownAlgorithm("ed448".into()));
        assert_eq!(
            err.to_string(),
            "unknown key algorithm 'ed448' (ec-p256, ec-p384, rsa-2048, rsa-3072, rsa-4096)"
        );
    }
}
