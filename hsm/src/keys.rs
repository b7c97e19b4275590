//! Key pairs inside the token: generation with the narrowest attributes,
//! lookup by label, and reading back the public half.

use crate::der::{rsa_public_key_der, unwrap_ec_point};
use crate::error::{HsmError, HsmResult};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
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

    fn rsa_bits(&self) -> Option<u64> {
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

impl FromStr for KeyAlgorithm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "ec-p256" => KeyAlgorithm::EcP256,
            "ec-p384" => KeyAlgorithm::EcP384,
            "rsa-2048" => KeyAlgorithm::Rsa2048,
            "rsa-3072" => KeyAlgorithm::Rsa3072,
            "rsa-4096" => KeyAlgorithm::Rsa4096,
            other => {
                return Err(format!(
                "unknown key algorithm '{other}' (ec-p256, ec-p384, rsa-2048, rsa-3072, rsa-4096)"
            ))
            }
        })
    }
}

/// A key pair in the token: its label, algorithm and public key as rcgen
/// wants it (uncompressed EC point, or PKCS#1 RSAPublicKey).
#[derive(Clone, Debug)]
pub struct KeyInfo {
    pub label: String,
    pub algorithm: KeyAlgorithm,
    pub public_key: Vec<u8>,
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
}

/// Generate a key pair inside the token. The private key is a token object,
/// private, sensitive, not extractable, and may only sign.
/// Key generation and destruction are rare admin steps; SoftHSM2's file
/// object store answers CKR_GENERAL_ERROR now and then when a process
/// creates token objects from several threads at once, so a process does
/// them one at a time.
static OBJECT_CHANGES: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub fn generate(
    session: &Session,
    token_label: &str,
    label: &str,
    algorithm: KeyAlgorithm,
) -> HsmResult<KeyInfo> {
    let _one_at_a_time = OBJECT_CHANGES.lock().unwrap_or_else(|p| p.into_inner());
    if find_private(session, label)?.is_some() {
        return Err(HsmError::KeyExists {
            label: label.into(),
            token: token_label.into(),
        });
    }
    let id = label.as_bytes().to_vec();
    let mut public = vec![
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Verify(true),
        Attribute::Encrypt(false),
        Attribute::Wrap(false),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id.clone()),
    ];
    let private = vec![
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
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
    session
        .generate_key_pair(&mechanism, &public, &private)
        .map_err(|e| {
            HsmError::pkcs11(
                format!("generating {algorithm} key '{label}' on token '{token_label}'"),
                e,
            )
        })?;
    public_key(session, token_label, label)
}

pub(crate) fn find_private(session: &Session, label: &str) -> HsmResult<Option<ObjectHandle>> {
    find(session, ObjectClass::PRIVATE_KEY, label)
}

fn find(session: &Session, class: ObjectClass, label: &str) -> HsmResult<Option<ObjectHandle>> {
    let template = [
        Attribute::Class(class),
        Attribute::Label(label.as_bytes().to_vec()),
    ];
    let found = session
        .find_objects(&template)
        .map_err(|e| HsmError::pkcs11(format!("looking up key '{label}'"), e))?;
    Ok(found.into_iter().next())
}

/// Read the public key of the pair labelled `label`.
pub fn public_key(session: &Session, token_label: &str, label: &str) -> HsmResult<KeyInfo> {
    let not_found = || HsmError::KeyNotFound {
        label: label.into(),
        token: token_label.into(),
    };
    let handle = find(session, ObjectClass::PUBLIC_KEY, label)?.ok_or_else(not_found)?;
    let ctx = |e| {
        HsmError::pkcs11(
            format!("reading public key '{label}' on token '{token_label}'"),
            e,
        )
    };
    let attrs = session
        .get_attributes(handle, &[AttributeType::KeyType])
        .map_err(ctx)?;
    let key_type = attrs.iter().find_map(|a| match a {
        Attribute::KeyType(k) => Some(*k),
        _ => None,
    });
    let bad = |message: &str| HsmError::BadKey {
        label: label.into(),
        message: message.into(),
    };
    match key_type {
        Some(KeyType::EC) => {
            let attrs = session
                .get_attributes(handle, &[AttributeType::EcParams, AttributeType::EcPoint])
                .map_err(ctx)?;
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
            Ok(KeyInfo {
                label: label.into(),
                algorithm,
                public_key: point,
            })
        }
        Some(KeyType::RSA) => {
            let attrs = session
                .get_attributes(
                    handle,
                    &[AttributeType::Modulus, AttributeType::PublicExponent],
                )
                .map_err(ctx)?;
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
            Ok(KeyInfo {
                label: label.into(),
                algorithm,
                public_key: rsa_public_key_der(&modulus, &exponent),
            })
        }
        _ => Err(bad("unsupported key type")),
    }
}

/// Read back the security attributes of the private key labelled `label`.
pub fn private_key_attributes(
    session: &Session,
    token_label: &str,
    label: &str,
) -> HsmResult<PrivateKeyAttributes> {
    let handle = find_private(session, label)?.ok_or_else(|| HsmError::KeyNotFound {
        label: label.into(),
        token: token_label.into(),
    })?;
    let attrs = session
        .get_attributes(
            handle,
            &[
                AttributeType::Token,
                AttributeType::Private,
                AttributeType::Sensitive,
                AttributeType::Extractable,
                AttributeType::AlwaysSensitive,
                AttributeType::NeverExtractable,
                AttributeType::Sign,
            ],
        )
        .map_err(|e| HsmError::pkcs11(format!("reading attributes of key '{label}'"), e))?;
    let mut out = PrivateKeyAttributes {
        token: false,
        private: false,
        sensitive: false,
        extractable: true,
        always_sensitive: false,
        never_extractable: false,
        sign: false,
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
            _ => {}
        }
    }
    Ok(out)
}

/// Destroy both halves of the pair labelled `label`.
pub fn destroy(session: &Session, token_label: &str, label: &str) -> HsmResult<()> {
    let _one_at_a_time = OBJECT_CHANGES.lock().unwrap_or_else(|p| p.into_inner());
    for class in [ObjectClass::PRIVATE_KEY, ObjectClass::PUBLIC_KEY] {
        if let Some(handle) = find(session, class, label)? {
            session.destroy_object(handle).map_err(|e| {
                HsmError::pkcs11(
                    format!("destroying key '{label}' on token '{token_label}'"),
                    e,
                )
            })?;
        }
    }
    Ok(())
}

impl crate::module::Token {
    /// Generate a key pair in this token (admin path: opens its own session).
    pub fn generate_key(&self, label: &str, algorithm: KeyAlgorithm) -> HsmResult<KeyInfo> {
        generate(&self.open_session()?, self.label(), label, algorithm)
    }

    /// The public half of the pair labelled `label`.
    pub fn public_key(&self, label: &str) -> HsmResult<KeyInfo> {
        public_key(&self.open_session()?, self.label(), label)
    }

    pub fn private_key_attributes(&self, label: &str) -> HsmResult<PrivateKeyAttributes> {
        private_key_attributes(&self.open_session()?, self.label(), label)
    }

    pub fn destroy_key(&self, label: &str) -> HsmResult<()> {
        destroy(&self.open_session()?, self.label(), label)
    }
}
