//! The in-process limit, on the same machine in the same run: a
//! development deployment built by the same library calls as `ca-server
//! dev` (SoftHSM2 tokens, every class), then every CSR submitted to
//! `Authority::submit`, which runs decode + verify + decide + build + lint +
//! HSM sign on the signing pool (one thread and session per core) — no HTTP,
//! no TLS, no auth. Also the raw HSM signing rate with the `db`
//! intermediate's key, on one and on two threads (own session each).
//!
//! Loads the PKCS#11 module into this process (and sets `SOFTHSM2_CONF`),
//! so it is set up once per process.

use anyhow::{anyhow, bail, Context, Result};
use ca_server::config::Config;
use ca_server::issue::{Authority, Caller, IssueRequest, Operator, Recorder};

/// The in-process benchmark asks as the operator would.
const BENCH: Caller<'static> = Caller {
    key_id: "bench",
    scope: &Operator,
};
use ca_server::issue::{decode, prove};
use ca_server::{admin, dev};
use hsm::{KeyInfo, PoolSession, Token};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::csrs::Csr;
use crate::report::Row;

pub struct InProcess {
    authority: Arc<Authority>,
    token: Token,
    key: KeyInfo,
    _dir: tempfile::TempDir,
}

pub struct Measured {
    pub ok: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub elapsed: Duration,
    pub threads: usize,
}

impl Measured {
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }
}

impl InProcess {
    pub fn setup() -> Result<InProcess> {
        let dir = tempfile::Builder::new()
            .prefix("trellis-inprocess-")
            .tempdir()?;
        let paths = dev::prepare(dir.path(), "127.0.0.1:0")?;
        let config = Config::load(&paths.config)?;
        let module = admin::open_module(&config)?;
        dev::ensure_tokens(&paths, &module)?;
        let policies = admin::load_policies(&config)?;
        admin::init_classes(&config, &module, &policies)?;
        let authority = admin::open_authority(&config, &module, policies)?;
        // The pipeline's own limit: nothing is recorded (the log is measured
        // by the server runs).
        authority.set_recorder(Recorder::Nothing);
        let token = admin::online_token(&config, &module)?;
        let key = authority
            .class("db")
            .context("no class 'db'")?
            .active
            .key
            .clone();
        Ok(InProcess {
            authority,
            token,
            key,
            _dir: dir,
        })
    }

    fn request(csr: &Csr) -> IssueRequest {
        IssueRequest {
            class: "db".into(),
            profile: Some("server".into()),
            csr: csr.pem.as_bytes().to_vec(),
            hosts: None,
            ttl: None,
        }
    }

    /// Submit every CSR at once and wait for every reply.
    pub fn issue_all(&self, csrs: &[Csr]) -> Result<Measured> {
        let threads = self.authority.pool().size();
        // Warm up: open every pool session.
        for csr in csrs.iter().take(threads * 4) {
            self.authority
                .issue_blocking(Self::request(csr), &BENCH)
                .map_err(|e| anyhow!("in-process issuance fails: {e}"))?;
        }
        let requests: Vec<IssueRequest> = csrs.iter().map(Self::request).collect();
        // Every request in flight at once, each awaiting its pipeline job on
        // the signing pool. The runtime runs on this thread and only waits
        // and counts: a runtime thread of its own, handing each result to
        // this one, took a fifth of a core from the two pool threads.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let mut measured = Measured {
            ok: 0,
            errors: 0,
            first_error: None,
            elapsed: Duration::ZERO,
            threads,
        };
        let started = Instant::now();
        let all = runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(600), async {
                let mut running = tokio::task::JoinSet::new();
                for request in requests {
                    let authority = self.authority.clone();
                    running
                        .spawn(async move { authority.issue(request, &BENCH).await.map(|_| ()) });
                }
                while let Some(done) = running.join_next().await {
                    // An issuance refused, or its task lost (a panic).
                    match done
                        .map_err(|e| e.to_string())
                        .and_then(|issued| issued.map_err(|e| e.to_string()))
                    {
                        Ok(()) => measured.ok += 1,
                        Err(e) => {
                            measured.errors += 1;
                            measured.first_error.get_or_insert(e);
                        }
                    }
                }
            })
            .await
        });
        measured.elapsed = started.elapsed();
        if all.is_err() {
            bail!("in-process run took over 10 minutes");
        }
        Ok(measured)
    }

    /// The crypto floor's two operations, measured on every core at once:
    /// `threads` threads, each with its own session, each verifying a CSR
    /// signature and making one HSM signature in turn for `seconds`.
    /// Certificates' worth of crypto per second.
    pub fn floor_rate(&self, csrs: &[Csr], threads: usize, seconds: f64) -> Result<f64> {
        let ders = Arc::new(sample_ders(csrs)?);
        let deadline = Instant::now() + Duration::from_secs_f64(seconds);
        let started = Instant::now();
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let (token, key, ders) = (self.token.clone(), self.key.clone(), ders.clone());
                std::thread::spawn(move || -> Result<u64> {
                    let parsed = ders
                        .iter()
                        .map(|d| decode::parse(d))
                        .collect::<Result<Vec<_>, _>>()?;
                    let mut session = PoolSession::new(token);
                    let mut count = 0u64;
                    'run: loop {
                        for csr in &parsed {
                            if Instant::now() >= deadline {
                                break 'run;
                            }
                            prove::proof_of_possession(csr).map_err(|e| anyhow!("CSR: {e}"))?;
                            session.sign(&key, b"trellis ca-bench floor signature")?;
                            count += 1;
                        }
                    }
                    Ok(count)
                })
            })
            .collect();
        let mut total = 0;
        for w in workers {
            total += w.join().map_err(|_| anyhow!("floor thread panicked"))??;
        }
        Ok(total as f64 / started.elapsed().as_secs_f64())
    }

    /// Raw signatures per second with `threads` sessions for `seconds`.
    pub fn hsm_rate(&self, threads: usize, seconds: f64) -> Result<f64> {
        let deadline = Instant::now() + Duration::from_secs_f64(seconds);
        let started = Instant::now();
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let (token, key) = (self.token.clone(), self.key.clone());
                std::thread::spawn(move || {
                    let mut session = PoolSession::new(token);
                    let mut count = 0u64;
                    while Instant::now() < deadline {
                        session.sign(&key, b"trellis ca-bench raw signature")?;
                        count += 1;
                    }
                    Ok::<u64, hsm::HsmError>(count)
                })
            })
            .collect();
        let mut total = 0;
        for w in workers {
            total += w.join().map_err(|_| anyhow!("HSM thread panicked"))??;
        }
        Ok(total as f64 / started.elapsed().as_secs_f64())
    }
}

/// CRL and OCSP figures of the `db` active intermediate (issue 15).
pub struct RevocationFigures {
    /// (revoked serials, seconds to sign the CRL, DER bytes).
    pub crls: Vec<(usize, f64, usize)>,
    /// OCSP responses built and signed in the HSM per second (one thread,
    /// one CertID and a nonce each, no HTTP).
    pub ocsp_per_second: f64,
}

impl InProcess {
    /// Time CRL signing with `sizes` revoked serials each, and the OCSP
    /// answer rate for `seconds`.
    pub fn revocation(&self, sizes: &[usize], seconds: f64) -> Result<RevocationFigures> {
        use ca_server::revoke::{crl, store::RevocationRecord};
        let class = self.authority.class("db").context("no class 'db'")?;
        let cert = class.active.cert_der.clone();
        let mut crls = Vec::new();
        for &n in sizes {
            let records: Vec<RevocationRecord> = (0..n)
                .map(|i| RevocationRecord {
                    serial: format!("7{:031x}", i),
                    spki_sha256: "00".repeat(32),
                    issuer: class.active.fingerprint.clone(),
                    issuer_key: self.key.label.clone(),
                    not_after: "2099-01-01T00:00:00Z".into(),
                    reason: ca_proto::revocation::RevocationReason::KeyCompromise,
                    revoked_at: "2026-12-05T00:00:00Z".into(),
                    by: "bench".into(),
                    key: None,
                })
                .collect();
            let key = self.key.clone();
            let cert = cert.clone();
            let (seconds, bytes) =
                self.authority
                    .pool()
                    .run(move |session| -> Result<(f64, usize)> {
                        let refs: Vec<&RevocationRecord> = records.iter().collect();
                        let now = time::OffsetDateTime::now_utc();
                        let started = Instant::now();
                        let signed = crl::sign(
                            session,
                            &cert,
                            &key,
                            &refs,
                            now,
                            now + time::Duration::hours(6),
                            crl::Scope::Leaves,
                            None,
                        )?;
                        Ok((started.elapsed().as_secs_f64(), signed.der.len()))
                    })??;
            crls.push((n, seconds, bytes));
        }
        let hashes = ca_proto::ocsp::IssuerHashes::of_certificate(&cert)?;
        let id = ca_proto::ocsp::CertId {
            hash: ca_proto::ocsp::CertIdHash::Sha1,
            hash_params_null: true,
            issuer_name_hash: hashes.name_sha1.to_vec(),
            issuer_key_hash: hashes.key_sha1.to_vec(),
            serial: vec![0x7a; 16],
        };
        let key = self.key.clone();
        let ocsp_per_second = self.authority.pool().run(move |session| -> Result<f64> {
            let answers = [(id, ca_proto::ocsp::CertStatus::Good)];
            let started = Instant::now();
            let mut done = 0u64;
            while started.elapsed().as_secs_f64() < seconds {
                let nonce = done.to_be_bytes();
                let params = ca_proto::ocsp::ResponseParams {
                    responder_key_hash: &hashes.key_sha1,
                    answers: &answers,
                    produced_at: 1_800_000_000,
                    this_update: 1_800_000_000,
                    next_update: 1_800_021_600,
                    nonce: Some(&nonce),
                };
                ca_proto::ocsp::build_response(
                    &params,
                    ca_proto::ocsp::SignatureAlgorithm::EcdsaSha256,
                    |tbs| session.sign(&key, tbs),
                )
                .map_err(|e| anyhow!("OCSP response: {e}"))?;
                done += 1;
            }
            Ok(done as f64 / started.elapsed().as_secs_f64())
        })??;
        Ok(RevocationFigures {
            crls,
            ocsp_per_second,
        })
    }
}

/// Seconds per CSR signature verification on one thread, through the
/// pipeline's own step (`issue::prove::proof_of_possession`: key and
/// signature algorithm checked to agree, then x509-parser/ring verify),
/// over up to 256 distinct CSRs parsed beforehand, for at least `seconds`.
/// Returns (seconds per verification, verifications).
pub fn verify_seconds(csrs: &[Csr], seconds: f64) -> Result<(f64, u64)> {
    let ders = sample_ders(csrs)?;
    let parsed = ders
        .iter()
        .map(|d| decode::parse(d))
        .collect::<Result<Vec<_>, _>>()?;
    let verify = |csr| prove::proof_of_possession(csr).map_err(|e| anyhow!("CSR: {e}"));
    for csr in &parsed {
        verify(csr)?;
    }
    let started = Instant::now();
    let mut done = 0u64;
    while started.elapsed().as_secs_f64() < seconds {
        for csr in &parsed {
            verify(csr)?;
        }
        done += parsed.len() as u64;
    }
    Ok((started.elapsed().as_secs_f64() / done as f64, done))
}

/// Up to 256 of the CSRs, as DER: what the floor's measurements verify.
fn sample_ders(csrs: &[Csr]) -> Result<Vec<Vec<u8>>> {
    let ders = csrs
        .iter()
        .take(256)
        .map(|c| decode::csr_der_from_input(c.pem.as_bytes()))
        .collect::<Result<Vec<_>, _>>()?;
    if ders.is_empty() {
        bail!("no CSRs");
    }
    Ok(ders)
}

impl crate::Bench {
    /// The crypto floor: cores × 1 / (one CSR verification + one HSM
    /// signature), both measured here (the signature from the 1-thread raw
    /// HSM row), and the in-process limit against it.
    pub(crate) fn crypto_floor(&mut self, inp: &InProcess, seconds: f64) {
        if self.csrs.is_empty() {
            return;
        }
        eprintln!("CSR signature verification, 1 thread ...");
        let (t_verify, n) = match verify_seconds(&self.csrs, seconds) {
            Ok(v) => v,
            Err(e) => return self.fail(format!("CSR verification rate: {e:#}")),
        };
        eprintln!("  {:.0} verifications/s", 1.0 / t_verify);
        self.report.rows.push(Row::in_process(
            "verify-1",
            "P-256 CSR signature verification (verifications/s)",
            "issue::prove::proof_of_possession",
            "1 thread".into(),
            format!("closed loop, {seconds} s, {n} verifications"),
            1.0 / t_verify,
            0,
        ));
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let t_sign = self
            .report
            .rate("hsm-1")
            .filter(|r| *r > 0.0)
            .map(|sign_rate| 1.0 / sign_rate);
        let floor = t_sign.map(|t_sign| cores as f64 / (t_verify + t_sign));
        let (floor_value, ratio_value) = match (floor, t_sign) {
            (Some(floor), Some(t_sign)) => (
                format!(
                    "{floor:.0} certs/s ({cores} cores / ({:.1} µs verify + {:.1} µs HSM sign))",
                    t_verify * 1e6,
                    t_sign * 1e6
                ),
                match self.report.rate("inprocess") {
                    Some(limit) => format!("{:.2}", limit / floor),
                    None => "not measured".into(),
                },
            ),
            _ => (
                "not measured (no raw HSM rate)".into(),
                "not measured".into(),
            ),
        };
        self.report.ratios.push(crate::report::Ratio {
            name: "crypto floor = cores × 1 / (t_verify + t_sign), both measured in this run"
                .into(),
            value: floor_value,
            target: "(the bound)".into(),
        });
        self.report.ratios.push(crate::report::Ratio {
            name: "in-process limit / crypto floor".into(),
            value: ratio_value,
            target: "≥ 0.85".into(),
        });
        // The floor assumes each core verifies and signs as fast as one
        // thread alone; measured with every core at it at once.
        eprintln!("crypto floor's operations on {cores} threads at once ...");
        match inp.floor_rate(&self.csrs, cores, seconds) {
            Ok(rate) => {
                eprintln!("  {rate:.0} verifications + signatures/s");
                self.report.rows.push(Row::in_process(
                    "floor-all",
                    "crypto floor's operations on every core (verify + HSM sign per certificate)",
                    "proof_of_possession + PoolSession::sign",
                    format!("{cores} threads"),
                    format!("closed loop, {seconds} s"),
                    rate,
                    0,
                ));
                if let Some(computed) = floor {
                    self.report.ratios.push(crate::report::Ratio {
                        name: "the floor's operations on every core at once / crypto floor".into(),
                        value: format!("{:.2}", rate / computed),
                        target: "(measured: how far the floor holds on this machine)".into(),
                    });
                }
                if let Some(limit) = self.report.rate("inprocess") {
                    self.report.ratios.push(crate::report::Ratio {
                        name: "in-process limit / the floor's operations on every core at once"
                            .into(),
                        value: format!("{:.2}", limit / rate),
                        target: "(measured: the pipeline's own cost)".into(),
                    });
                }
            }
            Err(e) => self.fail(format!("crypto floor on every core: {e:#}")),
        }
    }
}
