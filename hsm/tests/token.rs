//! The HSM layer against a real SoftHSM2 token created in a private directory
//! for this test run.

use hsm::{
    softhsm, HsmError, HsmSigningKey, KeyAlgorithm, KeyInfo, Module, Pin, PoolSession, SigningPool,
    Token,
};
use ring::signature::{
    UnparsedPublicKey, ECDSA_P256_SHA256_ASN1, ECDSA_P384_SHA384_ASN1, RSA_PKCS1_2048_8192_SHA256,
};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const TOKEN: &str = "trellis-test";

struct Fixture {
    module: Module,
    _dir: tempfile::TempDir,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("trellis-hsm-test")
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .expect("temp dir");
        let conf = softhsm::write_config(dir.path()).expect("softhsm config");
        softhsm::use_config(&conf);
        let path: PathBuf =
            softhsm::find_module().expect("SoftHSM2 is not installed (make test installs it)");
        let module = Module::load(&path).expect("load SoftHSM2");
        let created = softhsm::ensure_token(
            &module,
            TOKEN,
            &Pin::from_secret("so-1234".into()),
            &user_pin(),
        )
        .expect("init token");
        assert!(created);
        assert!(!softhsm::ensure_token(
            &module,
            TOKEN,
            &Pin::from_secret("so-1234".into()),
            &user_pin()
        )
        .unwrap());
        // Every token the tests use exists before they run in parallel:
        // initialising a token re-enumerates SoftHSM2's slots, which upsets
        // key generation running at the same moment.
        for (label, so) in [("trellis-lonely", "so-1"), ("trellis-relogin", "so-2")] {
            softhsm::ensure_token(&module, label, &Pin::from_secret(so.into()), &user_pin())
                .unwrap();
        }
        Fixture { module, _dir: dir }
    })
}

/// The tests take turns: SoftHSM2 intermittently answers CKR_GENERAL_ERROR
/// or CKR_TEMPLATE_INCONSISTENT to key generation while other threads of the
/// process log in or search the same token. Key generation is an admin step
/// (one at a time per process in `hsm` as well); concurrency that matters in
/// service — signing from several sessions — is tested inside one test.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn user_pin() -> Pin {
    Pin::from_secret("user-5678".into())
}

fn token() -> Token {
    fixture().module.token(TOKEN, user_pin()).expect("token")
}

fn unique(label: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{label}-{}", N.fetch_add(1, Ordering::Relaxed))
}

fn verify(key: &KeyInfo, message: &[u8], signature: &[u8]) -> bool {
    let alg: &dyn ring::signature::VerificationAlgorithm = match key.algorithm {
        KeyAlgorithm::EcP256 => &ECDSA_P256_SHA256_ASN1,
        KeyAlgorithm::EcP384 => &ECDSA_P384_SHA384_ASN1,
        _ => &RSA_PKCS1_2048_8192_SHA256,
    };
    UnparsedPublicKey::new(alg, &key.public_key)
        .verify(message, signature)
        .is_ok()
}

#[test]
fn generated_keys_are_sensitive_and_never_extractable() {
    let _serial = serial();
    let token = token();
    for alg in KeyAlgorithm::ALL {
        let label = unique(&format!("attr-{alg}"));
        let key = token.generate_key(&label, alg).expect("generate");
        assert_eq!(key.algorithm, alg);
        let attrs = token.private_key_attributes(&label).unwrap();
        assert!(
            attrs.token && attrs.private && attrs.sensitive && attrs.sign,
            "{alg}: {attrs:?}"
        );
        assert!(!attrs.extractable, "{alg} is extractable");
        assert!(
            attrs.always_sensitive && attrs.never_extractable,
            "{alg}: {attrs:?}"
        );
        // the public key read back later is the one generation returned
        assert_eq!(token.public_key(&label).unwrap().public_key, key.public_key);
    }
}

#[test]
fn a_label_cannot_be_generated_twice() {
    let _serial = serial();
    let token = token();
    let label = unique("twice");
    token.generate_key(&label, KeyAlgorithm::EcP256).unwrap();
    let err = token
        .generate_key(&label, KeyAlgorithm::EcP256)
        .unwrap_err();
    assert!(matches!(err, HsmError::KeyExists { .. }), "{err}");
}

#[test]
fn token_signatures_verify_independently() {
    let _serial = serial();
    let token = token();
    let mut session = PoolSession::new(token.clone());
    for alg in [
        KeyAlgorithm::EcP256,
        KeyAlgorithm::EcP384,
        KeyAlgorithm::Rsa2048,
    ] {
        let key = token
            .generate_key(&unique(&format!("sig-{alg}")), alg)
            .unwrap();
        let message = format!("to be signed by {alg}");
        let sig = session.sign(&key, message.as_bytes()).unwrap();
        assert!(
            verify(&key, message.as_bytes(), &sig),
            "{alg} signature does not verify"
        );
        assert!(
            !verify(&key, b"another message", &sig),
            "{alg} verifies the wrong message"
        );
    }
}

#[test]
fn rcgen_signs_through_the_token() {
    let _serial = serial();
    let token = token();
    let key = token
        .generate_key(&unique("rcgen"), KeyAlgorithm::EcP256)
        .unwrap();
    let mut session = PoolSession::new(token);
    let signer = HsmSigningKey::new(&mut session, &key);
    let mut params = rcgen::CertificateParams::new(vec!["hsm.test".to_string()]).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let cert = params
        .self_signed(&signer)
        .expect("self-signed by the token");
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.der()).unwrap();
    parsed
        .verify_signature(None)
        .expect("self-signature verifies");
}

#[test]
fn pool_signs_from_two_threads_and_every_signature_verifies() {
    let _serial = serial();
    let token = token();
    let key = token
        .generate_key(&unique("pool"), KeyAlgorithm::EcP256)
        .unwrap();
    let pool = std::sync::Arc::new(SigningPool::new(token, 2).unwrap());
    let threads: Vec<_> = (0..2)
        .map(|t| {
            let pool = pool.clone();
            let key = key.clone();
            std::thread::spawn(move || {
                (0..200)
                    .map(|i| {
                        let message = format!("thread {t} message {i}").into_bytes();
                        let k = key.clone();
                        let m = message.clone();
                        let sig = pool.run(move |s| s.sign(&k, &m)).unwrap().unwrap();
                        (message, sig)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut count = 0;
    for t in threads {
        for (message, sig) in t.join().unwrap() {
            assert!(verify(&key, &message, &sig));
            count += 1;
        }
    }
    assert_eq!(count, 400);
    // both pool threads took part: jobs record their thread names
    let names: std::collections::HashSet<String> = (0..50)
        .map(|_| {
            pool.run(|_| {
                std::thread::sleep(std::time::Duration::from_millis(2));
                std::thread::current().name().unwrap_or("").to_string()
            })
            .unwrap()
        })
        .collect();
    assert!(names.iter().all(|n| n.starts_with("hsm-")), "{names:?}");
}

/// A pool with a thread for every CPU the process may use binds each
/// thread to its own CPU while the pool is saturated, and frees it when it finds
/// nothing to do; one with fewer threads, or told not to, never binds.
/// Every signature verifies either way.
#[test]
fn a_busy_pool_with_a_thread_per_cpu_runs_each_on_its_own_cpu() {
    let _serial = serial();
    let token = token();
    let key = token
        .generate_key(&unique("placed"), KeyAlgorithm::EcP256)
        .unwrap();
    let allowed = hsm::affinity::allowed_cpus();
    assert!(!allowed.is_empty());
    let pool = SigningPool::new(token.clone(), allowed.len()).unwrap();
    let want: Vec<Option<usize>> = allowed.iter().map(|&c| Some(c)).collect();
    assert_eq!(pool.cpus(), want.as_slice());

    // Busy: every thread held by a job until all are, then a backlog
    // queued behind them. Jobs taken while others waited run bound, each
    // thread on its own CPU.
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let gate = std::sync::Arc::new(std::sync::Barrier::new(allowed.len() + 1));
    for _ in 0..allowed.len() {
        let (held, gate) = (held_tx.clone(), gate.clone());
        pool.execute(move |_| {
            let _ = held.send(());
            gate.wait();
        })
        .unwrap();
    }
    for _ in 0..allowed.len() {
        held_rx.recv().unwrap();
    }
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let backlog = 40 * allowed.len();
    for i in 0..backlog {
        let (k, done) = (key.clone(), done_tx.clone());
        pool.execute(move |s| {
            let signed = s.sign(&k, &[i as u8]);
            let thread = std::thread::current().name().unwrap_or("").to_string();
            let _ = done.send((i, thread, hsm::affinity::allowed_cpus(), signed));
        })
        .unwrap();
    }
    gate.wait();
    let mut bound_to: std::collections::BTreeMap<String, std::collections::BTreeSet<usize>> =
        Default::default();
    for _ in 0..backlog {
        let (i, thread, mask, signed) = done_rx.recv().unwrap();
        assert!(verify(&key, &[i as u8], &signed.unwrap()));
        if mask.len() == 1 {
            bound_to.entry(thread).or_default().insert(mask[0]);
        } else {
            assert_eq!(mask, allowed, "a thread is bound to its CPU or free");
        }
    }
    // Every thread took backlog jobs bound; each to one CPU, all different.
    assert_eq!(bound_to.len(), allowed.len(), "{bound_to:?}");
    let mut cpus: Vec<usize> = bound_to
        .values()
        .map(|set| {
            assert_eq!(set.len(), 1, "{bound_to:?}");
            *set.iter().next().unwrap()
        })
        .collect();
    cpus.sort_unstable();
    assert_eq!(cpus, allowed);

    // Idle again: a lone job finds nothing else waiting and runs free.
    for _ in 0..3 {
        assert_eq!(
            pool.run(|_| hsm::affinity::allowed_cpus()).unwrap(),
            allowed
        );
    }
    drop(pool);

    let free =
        SigningPool::with_placement(token.clone(), allowed.len(), hsm::Placement::Free).unwrap();
    assert!(free.cpus().iter().all(Option::is_none));
    if allowed.len() > 1 {
        let fewer = SigningPool::new(token, allowed.len() - 1).unwrap();
        assert!(fewer.cpus().iter().all(Option::is_none));
    }
}

#[test]
fn a_session_that_lost_its_login_is_reopened() {
    let _serial = serial();
    // Its own token: logging out affects every session of the process on a
    // token, and the other tests run in parallel on `trellis-test`.
    let module = &fixture().module;
    softhsm::ensure_token(
        module,
        "trellis-relogin",
        &Pin::from_secret("so-2".into()),
        &user_pin(),
    )
    .unwrap();
    let token = module.token("trellis-relogin", user_pin()).unwrap();
    let key = token
        .generate_key(&unique("relogin"), KeyAlgorithm::EcP256)
        .unwrap();
    let mut session = PoolSession::new(token.clone());
    assert!(verify(&key, b"one", &session.sign(&key, b"one").unwrap()));
    token.logout().unwrap();
    let sig = session
        .sign(&key, b"two")
        .expect("re-opened and logged in again");
    assert!(verify(&key, b"two", &sig));
}

#[test]
fn errors_name_the_return_value_and_the_operation() {
    let _serial = serial();
    let module = &fixture().module;
    // A token nobody in this process is logged in to: once logged in, PKCS#11
    // answers any login with CKR_USER_ALREADY_LOGGED_IN, PIN right or wrong.
    softhsm::ensure_token(
        module,
        "trellis-lonely",
        &Pin::from_secret("so-1".into()),
        &user_pin(),
    )
    .unwrap();
    let err = module
        .token("trellis-lonely", Pin::from_secret("wrong-pin".into()))
        .unwrap()
        .open_session()
        .err()
        .expect("a wrong PIN is refused");
    let text = err.to_string();
    assert!(
        text.contains("CKR_PIN_INCORRECT") && text.contains("trellis-lonely"),
        "{text}"
    );

    let missing = module.token("no-such-token", user_pin()).err().unwrap();
    assert!(
        matches!(missing, HsmError::TokenNotFound { .. }),
        "{missing}"
    );
    // The refusal lists what the module does have, so a typo is obvious.
    assert!(missing.to_string().contains("'trellis-test'"), "{missing}");

    let key = KeyInfo {
        label: "never-generated".into(),
        algorithm: KeyAlgorithm::EcP256,
        public_key: vec![4; 65],
        mechanism: hsm::SignMechanism::Ecdsa,
    };
    let err = PoolSession::new(token()).sign(&key, b"x").unwrap_err();
    assert!(err.to_string().contains("never-generated"), "{err}");
}

#[test]
fn signing_sessions_use_sensitive_session_copies_that_go_with_the_token_key() {
    let _serial = serial();
    let token = token();
    let label = unique("copy");
    let key = token.generate_key(&label, KeyAlgorithm::EcP256).unwrap();
    let (mut a, mut b) = (
        PoolSession::new(token.clone()),
        PoolSession::new(token.clone()),
    );
    for session in [&mut a, &mut b] {
        let signature = session.sign(&key, b"copy").unwrap();
        assert!(verify(&key, b"copy", &signature));
        assert!(session.signs_with_copy(&label), "SoftHSM2 copies keys");
    }
    let copies = token.session_copies(&label).unwrap();
    assert_eq!(copies.len(), 2, "one per session");
    for c in &copies {
        assert!(!c.token, "{c:?}");
        assert!(
            c.sensitive && !c.extractable,
            "a copy keeps the key inside: {c:?}"
        );
        assert!(c.always_sensitive && c.never_extractable && c.sign, "{c:?}");
    }
    let labels = token.private_key_labels().unwrap();
    assert_eq!(
        labels.iter().filter(|l| **l == label).count(),
        1,
        "copies are not keys of the token"
    );
    assert!(token.private_key_attributes(&label).unwrap().token);

    token.destroy_key(&label).unwrap();
    let destroyed = Instant::now();
    // A probe looks the token key up: refused at once, and its copy goes.
    let err = b.probe(&label).unwrap_err();
    assert!(matches!(err, HsmError::KeyNotFound { .. }), "{err}");
    assert_eq!(token.session_copies(&label).unwrap().len(), 1);
    // A signing session finds out within KEY_RECHECK. Bounded: the loop
    // fails the test once the copy outlived the token key by a second more.
    let refused = loop {
        match a.sign(&key, b"after") {
            Ok(_) => assert!(
                destroyed.elapsed() < hsm::KEY_RECHECK + Duration::from_secs(1),
                "still signing {:?} after the token key was destroyed",
                destroyed.elapsed()
            ),
            Err(e) => break e,
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(matches!(refused, HsmError::KeyNotFound { .. }), "{refused}");
    assert!(token.session_copies(&label).unwrap().is_empty());
}

#[test]
fn a_new_key_under_an_old_label_is_copied_anew() {
    let _serial = serial();
    let token = token();
    let label = unique("relabel");
    let old = token.generate_key(&label, KeyAlgorithm::EcP256).unwrap();
    let mut session = PoolSession::new(token.clone());
    assert!(verify(&old, b"m", &session.sign(&old, b"m").unwrap()));
    token.destroy_key(&label).unwrap();
    let new = token.generate_key(&label, KeyAlgorithm::EcP256).unwrap();
    let replaced = Instant::now();
    // Bounded: the old key's copy may sign for at most KEY_RECHECK more.
    loop {
        let signature = session.sign(&new, b"m").unwrap();
        if verify(&new, b"m", &signature) {
            break;
        }
        assert!(verify(&old, b"m", &signature), "signed by neither key");
        assert!(
            replaced.elapsed() < hsm::KEY_RECHECK + Duration::from_secs(1),
            "still signing with the destroyed key's copy after {:?}",
            replaced.elapsed()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(session.signs_with_copy(&label));
    assert_eq!(
        token.session_copies(&label).unwrap().len(),
        1,
        "the old copy is gone"
    );
}
