//! Raw HSM signing rate: P-256 and RSA-2048 signatures per second with one
//! and two sessions (one thread each), on a SoftHSM2 token made for the run.
//!
//! `cargo run --release -p hsm --features bench --bin hsm-bench [-- SECONDS]`
//! (`make hsm-bench`)

use hsm::{softhsm, KeyAlgorithm, Module, Pin, PoolSession};
use std::time::{Duration, Instant};

fn main() {
    if let Err(e) = run() {
        eprintln!("hsm-bench: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let seconds: f64 = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(3.0);
    let dir = tempfile::Builder::new()
        .prefix("trellis-hsm-bench")
        .tempdir()?;
    softhsm::use_config(&softhsm::write_config(dir.path())?);
    let module = Module::load(&softhsm::find_module().ok_or("SoftHSM2 is not installed")?)?;
    let pin = Pin::from_secret("bench-pin".into());
    softhsm::ensure_token(&module, "bench", &Pin::from_secret("bench-so".into()), &pin)?;
    let token = module.token("bench", pin)?;
    println!("| key | sessions | signatures/s |");
    println!("|---|---|---|");
    for alg in [KeyAlgorithm::EcP256, KeyAlgorithm::Rsa2048] {
        let key = token.generate_key(&format!("bench-{alg}"), alg)?;
        for sessions in [1usize, 2] {
            let deadline = Instant::now() + Duration::from_secs_f64(seconds);
            let started = Instant::now();
            let threads: Vec<_> = (0..sessions)
                .map(|_| {
                    let (token, key) = (token.clone(), key.clone());
                    std::thread::spawn(move || {
                        let mut session = PoolSession::new(token);
                        let mut count = 0u64;
                        while Instant::now() < deadline {
                            session
                                .sign(&key, b"trellis hsm bench message")
                                .map(|_| count += 1)?;
                        }
                        Ok::<u64, hsm::HsmError>(count)
                    })
                })
                .collect();
            let mut total = 0;
            for t in threads {
                total += t.join().map_err(|_| "bench thread panicked")??;
            }
            let rate = total as f64 / started.elapsed().as_secs_f64();
            println!("| {alg} | {sessions} | {rate:.0} |");
        }
    }
    Ok(())
}
