//! `ca-bench soak`: a bounded soak of a Trellis deployment. The server is
//! started exactly as for `ca-bench trellis` (HTTPS, `ca-server dev` on
//! 127.0.0.1 with a kernel-chosen port, rate limit raised), its native peak
//! is measured briefly (closed loop) unless `--rate` is given, and then the
//! native API is driven open-loop at half of that for a warm-up (by default
//! the server's replay window + 30 s, so that the replay cache is level
//! before the start figure) and M minutes (bounded by time and by a request
//! count), with a 10 s window:
//! achieved certificates/s, p99, errors and the server's resident set
//! (`VmRSS` of `/proc/<pid>/status`). Afterwards the server gets SIGTERM
//! and `ca-server log verify` checks the issuance log it wrote.
//!
//! Pass/fail: zero errors, resident set at the end within 10% of the one at
//! the end of the warm-up, the server stopping cleanly on SIGTERM, `log
//! verify` passing, every kept certificate valid, and the run complete.

use crate::csrs::Csr;
use crate::load::{self, Endpoint, Pace, SoakSpec, Spec};
use crate::report::{Facts, Latency};
use crate::targets::trellis::{Deployment, RATE_NOTE};
use crate::targets::{log_file, log_tail, mib, proc_status_kib, ChildGuard};
use crate::validate;
use anyhow::{bail, Context, Result};
use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Length of one sample window.
pub const WINDOW: Duration = Duration::from_secs(10);
/// Largest allowed resident-set change, start (after warm-up) to end.
const RSS_LIMIT: f64 = 0.10;
/// Bounds on waiting for the server to stop and for `log verify`.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);
const VERIFY_TIMEOUT: Duration = Duration::from_secs(900);
/// The default warm-up is this much longer than the replay window.
const WARMUP_MARGIN: Duration = Duration::from_secs(30);

pub struct Params {
    pub minutes: f64,
    pub rate: Option<f64>,
    /// None: the deployment's replay window + [`WARMUP_MARGIN`].
    pub warmup: Option<Duration>,
    pub peak_seconds: f64,
    pub clients: usize,
    pub open_clients: usize,
    pub client_threads: usize,
}

/// The criteria, each with whether it held and the evidence.
struct Criterion {
    name: &'static str,
    passed: bool,
    detail: String,
}

/// Run the soak; returns the markdown report and whether every criterion held.
pub fn run(
    ca_server: &Path,
    csrs: &[Csr],
    p: &Params,
    facts: &mut Facts,
) -> Result<(String, bool)> {
    let windows = (p.minutes * 60.0 / WINDOW.as_secs_f64()).ceil().max(1.0) as usize;
    eprintln!("creating the Trellis deployment ...");
    let deployment = Deployment::create(ca_server)?;
    // The replay cache keeps each nonce for the accepted clock skew, so it
    // grows for that long under steady load and then stays level.
    let config = ca_server::config::Config::load(&deployment.dir.path().join("config.toml"))?;
    let replay_window = Duration::from_secs(config.server.max_skew_secs.max(0) as u64);
    let warmup = p.warmup.unwrap_or(replay_window + WARMUP_MARGIN);
    let mut server = deployment.start(false, &[])?;
    let pid = server._guard.pid();
    let endpoint = Endpoint {
        addr: server.addr,
        tls: server.tls.clone(),
        protocol: server.protocols[0].clone(),
    };
    let first = load::probe(&endpoint, &csrs[0])
        .with_context(|| format!("Trellis does not issue ({})", log_tail(&server.log, 3)))?;
    let c = validate::check(
        &[load::Sample {
            csr: 0,
            body: first,
        }],
        csrs,
        &endpoint.protocol,
        &server.trust,
    );
    if let Some(f) = c.first_failure {
        bail!("the certificate Trellis issued is wrong: {f}");
    }

    let mut notes = vec![format!(
        "Trellis: `ca-server dev` deployment (SoftHSM2), HTTPS, native `/v1/sign`, key \
         `db`, class `db`, profile `server`; {RATE_NOTE}."
    )];
    let (rate, peak_line) = match p.rate {
        Some(rate) => (rate, format!("given: {rate:.0}/s (--rate)")),
        None => {
            eprintln!(
                "measuring peak ({} clients, closed loop, {} s) ...",
                p.clients, p.peak_seconds
            );
            let peak = load::run(
                &endpoint,
                csrs,
                Spec {
                    clients: p.clients,
                    warmup: Duration::from_secs(1),
                    measure: Duration::from_secs_f64(p.peak_seconds),
                    pace: Pace::Closed,
                    threads: p.client_threads,
                },
            )?;
            let rate = peak.rate() / 2.0;
            eprintln!("  peak {:.0} certs/s → soak at {rate:.0}/s", peak.rate());
            if let Some(e) = &peak.first_error {
                notes.push(format!(
                    "Peak measurement: {} errors (not counted in the soak); first: {e}",
                    peak.errors
                ));
            }
            if rate.is_nan() || rate < 1.0 {
                bail!("peak measurement gave {:.1} certs/s", peak.rate());
            }
            (
                rate,
                format!(
                    "{:.0} certs/s closed loop ({} clients, {} s) → soak at {rate:.0}/s",
                    peak.rate(),
                    p.clients,
                    p.peak_seconds
                ),
            )
        }
    };
    let total = warmup + WINDOW * windows as u32;
    // Bound by count as well as by time: the schedule has rate × duration
    // slots; 5% and a few more are slack, never reached unless the clock is odd.
    let max_requests = (rate * total.as_secs_f64() * 1.05).ceil() as u64 + 100;
    eprintln!(
        "soak: {rate:.0}/s open loop, {} s warm-up + {windows} × {} s (at most {max_requests} requests) ...",
        warmup.as_secs_f64(),
        WINDOW.as_secs()
    );
    let before_warmup = proc_status_kib(pid, "VmRSS").context("no VmRSS for the server")?;
    let started = Instant::now();
    let outcome = load::soak(
        &endpoint,
        csrs,
        SoakSpec {
            clients: p.open_clients,
            rate,
            warmup,
            window: WINDOW,
            windows,
            max_requests,
            threads: p.client_threads,
        },
        || proc_status_kib(pid, "VmRSS").context("the server's /proc status is gone (exited?)"),
        |i, w| {
            eprintln!(
                "  window {:>3}/{windows}: {:>6.0} certs/s, p99 {:>7.2} ms, {} errors, RSS {:.1} MiB",
                i + 1,
                w.ok as f64 / WINDOW.as_secs_f64(),
                Latency::from_sorted_us(&w.latencies_us).map_or(f64::NAN, |l| l.p99),
                w.errors,
                mib(w.probe)
            )
        },
    )?;
    let ran = started.elapsed();
    let peak_rss = proc_status_kib(pid, "VmHWM");

    eprintln!("stopping the server (SIGTERM) ...");
    let stopped = server._guard.terminate(STOP_TIMEOUT);
    eprintln!("ca-server log verify ...");
    let verify = log_verify(ca_server, deployment.dir.path());

    let checked = validate::check(&outcome.samples, csrs, &endpoint.protocol, &server.trust);
    drop(server);

    // Figures.
    let rates: Vec<f64> = outcome
        .windows
        .iter()
        .map(|w| w.ok as f64 / WINDOW.as_secs_f64())
        .collect();
    let n = rates.len().max(1) as f64;
    let mean = rates.iter().sum::<f64>() / n;
    let sd = (rates.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / n).sqrt();
    let cv = if mean > 0.0 { sd / mean } else { f64::NAN };
    let min = rates.iter().copied().fold(f64::INFINITY, f64::min);
    let max = rates.iter().copied().fold(0.0, f64::max);
    let errors: u64 = outcome.warmup_errors + outcome.windows.iter().map(|w| w.errors).sum::<u64>();
    let ok: u64 = outcome.windows.iter().map(|w| w.ok).sum();
    let mut all_latencies: Vec<u32> = outcome
        .windows
        .iter()
        .flat_map(|w| w.latencies_us.iter().copied())
        .collect();
    all_latencies.sort_unstable();
    let overall = Latency::from_sorted_us(&all_latencies);
    let rss_start = outcome.start_probe;
    let rss_end = outcome.windows.last().map_or(0, |w| w.probe);
    let rss_max = outcome.windows.iter().map(|w| w.probe).max().unwrap_or(0);
    let rss_change = if rss_start > 0 {
        (rss_end as f64 - rss_start as f64) / rss_start as f64
    } else {
        f64::NAN
    };

    // Criteria.
    let criteria = [
        Criterion {
            name: "run complete",
            passed: outcome.stopped.is_none() && outcome.windows.len() == windows,
            detail: match &outcome.stopped {
                Some(why) => format!(
                    "stopped after {} of {windows} windows: {why}",
                    outcome.windows.len()
                ),
                None => format!("{windows} windows of {} s", WINDOW.as_secs()),
            },
        },
        Criterion {
            name: "errors = 0",
            passed: errors == 0,
            detail: match &outcome.first_error {
                Some(e) => format!("{errors} errors (warm-up included); first: {e}"),
                None => format!("{errors} errors (warm-up included)"),
            },
        },
        Criterion {
            name: "resident set flat within 10%",
            passed: rss_change.abs() <= RSS_LIMIT,
            detail: format!(
                "{:.1} MiB after warm-up → {:.1} MiB at the end ({:+.1}%)",
                mib(rss_start),
                mib(rss_end),
                rss_change * 100.0
            ),
        },
        Criterion {
            name: "server stops cleanly on SIGTERM",
            passed: matches!(&stopped, Ok(s) if s.success()),
            detail: match &stopped {
                Ok(s) => format!("exited: {s}"),
                Err(e) => format!("{e:#}"),
            },
        },
        Criterion {
            name: "`ca-server log verify` passes",
            passed: verify.as_ref().is_ok_and(|(ok, _)| *ok),
            detail: match &verify {
                Ok((_, text)) => text.clone(),
                Err(e) => format!("{e:#}"),
            },
        },
        Criterion {
            name: "sampled certificates valid",
            passed: checked.first_failure.is_none() && checked.checked > 0,
            detail: match &checked.first_failure {
                Some(f) => format!("{} valid; first failure: {f}", checked.summary()),
                None => format!("{} valid", checked.summary()),
            },
        },
    ];
    let passed = criteria.iter().all(|c| c.passed);

    // Report.
    facts.finish();
    let mut s = String::from("# Soak\n\n");
    s.push_str(
        "Written by `ca-bench soak` (`make soak`): Trellis driven open-loop at half of its \
         measured native peak for a bounded time, sampled every 10 s. Do not edit by hand: \
         re-run `make soak`.\n\n",
    );
    s.push_str(&facts.markdown());
    let _ = write!(
        s,
        "\n## Summary: {}\n\n| criterion | result | evidence |\n|---|---|---|\n",
        if passed { "PASS" } else { "FAIL" }
    );
    for c in &criteria {
        let _ = writeln!(
            s,
            "| {} | {} | {} |",
            c.name,
            if c.passed { "pass" } else { "FAIL" },
            c.detail.replace('|', "\\|").replace('\n', " ")
        );
    }
    s.push_str("\n| figure | value |\n|---|---|\n");
    let mut figure = |k: &str, v: String| {
        let _ = writeln!(s, "| {k} | {v} |");
    };
    figure("peak", peak_line);
    figure(
        "offered load",
        format!(
            "{rate:.0} requests/s open loop on {} connections",
            p.open_clients
        ),
    );
    figure(
        "duration",
        format!(
            "{:.0} s warm-up + {} × {} s measured ({:.0} s in all)",
            warmup.as_secs_f64(),
            outcome.windows.len(),
            WINDOW.as_secs(),
            ran.as_secs_f64()
        ),
    );
    figure(
        "requests",
        format!(
            "{} sent (bound {max_requests}); {} certificates in the measured windows, {} in the warm-up",
            outcome.sent, ok, outcome.warmup_ok
        ),
    );
    figure(
        "throughput per window (certs/s)",
        format!(
            "min {min:.1}, max {max:.1}, mean {mean:.1} (offered {rate:.1}; achieved/offered {:.3})",
            mean / rate
        ),
    );
    figure(
        "coefficient of variation of throughput",
        format!("{:.2}% (population standard deviation / mean)", cv * 100.0),
    );
    figure(
        "latency over all windows (ms)",
        overall.map_or("–".into(), |l| {
            format!(
                "p50 {:.2}, p90 {:.2}, p99 {:.2}, max {:.2}",
                l.p50, l.p90, l.p99, l.max
            )
        }),
    );
    figure(
        "server resident set (VmRSS)",
        format!(
            "{:.1} MiB after warm-up, {:.1} MiB at the end ({:+.1}%), highest sample {:.1} MiB{}",
            mib(rss_start),
            mib(rss_end),
            rss_change * 100.0,
            mib(rss_max),
            peak_rss.map_or(String::new(), |k| format!(
                ", VmHWM (peak since start) {:.1} MiB",
                mib(k)
            ))
        ),
    );
    figure("errors", errors.to_string());
    s.push_str(
        "\n## Samples\n\n| window | end (s after warm-up) | certs/s | p99 ms | errors | server RSS MiB |\n|---:|---:|---:|---:|---:|---:|\n",
    );
    let _ = writeln!(
        s,
        "| before warm-up (after the peak run) | −{:.0} | – | – | – | {:.1} |",
        warmup.as_secs_f64(),
        mib(before_warmup)
    );
    let _ = writeln!(
        s,
        "| warm-up | 0 | {:.1} | – | {} | {:.1} |",
        outcome.warmup_ok as f64 / warmup.as_secs_f64().max(1e-9),
        outcome.warmup_errors,
        mib(rss_start)
    );
    for (i, w) in outcome.windows.iter().enumerate() {
        let p99 = Latency::from_sorted_us(&w.latencies_us)
            .map_or("–".into(), |l| format!("{:.2}", l.p99));
        let _ = writeln!(
            s,
            "| {} | {} | {:.1} | {p99} | {} | {:.1} |",
            i + 1,
            (i + 1) as u64 * WINDOW.as_secs(),
            w.ok as f64 / WINDOW.as_secs_f64(),
            w.errors,
            mib(w.probe)
        );
    }
    notes.push(
        "Each answer counts in the 10 s window in which it completed; latency is measured \
         from the request's scheduled send time (queueing counts). The resident set is read \
         from `/proc/<pid>/status` at each window's end."
            .into(),
    );
    notes.push(format!(
        "The server's replay cache remembers every nonce for the ±{0} s timestamp window \
         (`server.max_skew_secs`), so under steady load it grows for {0} s and then stays \
         level at about rate × {0} entries (here ≈ {1:.0}k, of a 1M capacity); the default \
         warm-up ({0} s + {2} s) lets it level before the start figure is taken. A shorter \
         warm-up (`--warmup`) counts that growth as a change of the resident set.",
        replay_window.as_secs(),
        rate * replay_window.as_secs_f64() / 1000.0,
        WARMUP_MARGIN.as_secs()
    ));
    notes.push(format!(
        "The load generator runs on the same {} cores as the server.",
        facts.nproc
    ));
    s.push_str("\n## Notes\n\n");
    for n in &notes {
        let _ = writeln!(s, "- {n}");
    }
    Ok((s, passed))
}

/// `ca-server log verify --dir DIR`, bounded; (passed, what it said).
fn log_verify(ca_server: &Path, dir: &Path) -> Result<(bool, String)> {
    let out = dir.join("log-verify.out");
    let err = dir.join("log-verify.err");
    let child = Command::new(ca_server)
        .env_remove("SOFTHSM2_CONF")
        .args(["log", "verify", "--dir"])
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(log_file(&out)?)
        .stderr(log_file(&err)?)
        .spawn()
        .context("starting ca-server log verify")?;
    let mut guard = ChildGuard::new("ca-server log verify", child);
    let deadline = Instant::now() + VERIFY_TIMEOUT;
    let status = loop {
        if let Some(status) = guard.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            bail!("ca-server log verify did not finish within {VERIFY_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let said = [log_tail(&out, 3), log_tail(&err, 3)]
        .into_iter()
        .filter(|t| !t.trim().is_empty())
        .collect::<Vec<_>>()
        .join(" | ");
    Ok((status.success(), format!("{status}: {said}")))
}
