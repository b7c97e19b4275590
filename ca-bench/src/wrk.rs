//! The independent load generator: `wrk` (C, OpenSSL, Debian's `wrk`)
//! over HTTPS against Trellis (HSM-backed, issuance log on; and the same
//! server with `--no-log` for the log's cost), `multirootca` and `cfssl
//! serve`, all on the CFSSL `authsign` API.
//!
//! - **Bodies**: the same [`BODIES`] CSRs for every target, made into
//!   `authsign` bodies up front with `ca_proto::cfssl::make_authsign` exactly
//!   as `load.rs` does (one set per target: each has its own HMAC key and
//!   label), one body per line of a data file that `wrk.lua` reads; each wrk
//!   thread sends them in turn. The CFSSL token covers only the inner
//!   request, so the bodies are replayable.
//! - **Loads** ([`LOADS`]): 16 and 64 keep-alive connections, and 16
//!   connections with `Connection: close` (the server answers with it and
//!   closes; wrk then opens a new TCP and TLS connection for the next
//!   request; wrk keeps its TLS session, so most of these resume a TLS 1.3
//!   session: see the report's text). Each run is checked against the
//!   kernel's count of accepted TCP connections (`TcpPassiveOpens` in
//!   `/proc/net/snmp`, machine-wide): about one per request with `close`,
//!   about one per connection otherwise.
//! - **OK** means HTTP 200 with `"success":true` in the body (counted by the
//!   script's `response()`); anything else, and wrk's socket errors, are
//!   errors. Latency is wrk's (from the request's first byte written to the
//!   response's end: a new connection's TCP and TLS handshakes are in the
//!   throughput but not in the latency).
//! - **Alternation**: every target runs once per load, in turn (Trellis,
//!   multirootca, cfssl serve, …), `repeats` times over; each run has its
//!   own warm-up run (not counted); the report gives each configuration's
//!   median rate (and the latency of that run) and lists every run.

use crate::csrs::Csr;
use crate::load::Protocol;
use crate::report::{Latency, Ratio, Report, Row};
use crate::targets::cfssl::CfsslCa;
use crate::targets::trellis::Deployment;
use crate::targets::Server;
use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Distinct CSRs (bodies) per target.
pub const BODIES: usize = 2000;

/// The script, written next to the bodies.
const SCRIPT: &str = include_str!("wrk.lua");

#[derive(Args, Clone, Debug)]
pub struct WrkOpts {
    /// Measured seconds of each wrk run (whole seconds).
    #[arg(long, default_value_t = 5)]
    pub wrk_seconds: u64,
    /// Warm-up seconds before each wrk run (a separate wrk run, not counted;
    /// 0 = none).
    #[arg(long, default_value_t = 1)]
    pub wrk_warmup: u64,
    /// Runs of each configuration (alternating targets); the median counts.
    #[arg(long, default_value_t = 3)]
    pub wrk_repeats: usize,
    /// wrk threads (at most the connections of a load).
    #[arg(long, default_value_t = 2)]
    pub wrk_threads: usize,
    /// Only these targets (comma-separated: trellis, multirootca,
    /// cfssl-serve, trellis-nolog), e.g. to profile one under load.
    #[arg(long, value_delimiter = ',')]
    pub wrk_only: Vec<String>,
}

impl WrkOpts {
    fn wants(&self, key: &str) -> bool {
        self.wrk_only.is_empty() || self.wrk_only.iter().any(|k| k == key)
    }
}

impl WrkOpts {
    pub fn check(&self) -> Result<()> {
        if !(1..=600).contains(&self.wrk_seconds) || self.wrk_warmup > 60 {
            bail!("--wrk-seconds must be 1..=600 and --wrk-warmup 0..=60");
        }
        if !(1..=20).contains(&self.wrk_repeats) || !(1..=64).contains(&self.wrk_threads) {
            bail!("--wrk-repeats must be 1..=20 and --wrk-threads 1..=64");
        }
        Ok(())
    }

    pub fn settings(&self) -> String {
        format!(
            "wrk: {} s measured after a {} s warm-up run, {} runs per configuration alternating targets (median), {} wrk threads, {} distinct authsign bodies per target",
            self.wrk_seconds, self.wrk_warmup, self.wrk_repeats, self.wrk_threads, BODIES
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Load {
    /// This many connections, kept alive.
    KeepAlive(usize),
    /// This many connections, each closed after one request.
    Close(usize),
}

pub const LOADS: [Load; 3] = [Load::KeepAlive(16), Load::KeepAlive(64), Load::Close(16)];

impl Load {
    pub fn connections(self) -> usize {
        match self {
            Load::KeepAlive(n) | Load::Close(n) => n,
        }
    }

    /// Stable part of row ids: `ka16`, `ka64`, `close16`.
    pub fn key(self) -> String {
        match self {
            Load::KeepAlive(n) => format!("ka{n}"),
            Load::Close(n) => format!("close{n}"),
        }
    }

    pub fn describe(self) -> String {
        match self {
            Load::KeepAlive(n) => format!("{n} connections, keep-alive"),
            Load::Close(n) => format!("{n} connections, new TLS connection per request"),
        }
    }

    fn mode(self) -> &'static str {
        match self {
            Load::KeepAlive(_) => "keepalive",
            Load::Close(_) => "close",
        }
    }
}

/// The id of a wrk row (median of the runs): `wrk-<target>-<load>`.
pub fn row_id(target: &str, load: Load) -> String {
    format!("wrk-{target}-{}", load.key())
}

/// One wrk run, parsed.
#[derive(Clone, Debug)]
pub struct Run {
    /// HTTP 200 with `"success":true`.
    pub ok: u64,
    /// Other answers (non-200, or 200 without success).
    pub bad: u64,
    /// Completed requests (wrk's count).
    pub requests: u64,
    /// wrk's `Non-2xx or 3xx responses`.
    pub non2xx: u64,
    /// wrk's socket errors (connect, read, write, timeout).
    pub socket_errors: [u64; 4],
    pub seconds: f64,
    /// wrk's own `Requests/sec` (every completed request).
    pub wrk_rps: f64,
    pub latency: Latency,
    pub first_bad: Option<String>,
    /// TCP connections the kernel accepted during the run (machine-wide).
    pub accepted: Option<u64>,
}

impl Run {
    /// Certificates per second.
    pub fn rate(&self) -> f64 {
        if self.seconds > 0.0 {
            self.ok as f64 / self.seconds
        } else {
            0.0
        }
    }

    pub fn errors(&self) -> u64 {
        self.bad + self.socket_errors.iter().sum::<u64>()
    }

    /// Answers not OK, and how many of them wrk saw as non-2xx.
    fn bad_summary(&self) -> String {
        if self.bad == 0 {
            "0".into()
        } else {
            format!("{} ({} non-2xx)", self.bad, self.non2xx)
        }
    }

    fn socket_summary(&self) -> String {
        let [c, r, w, t] = self.socket_errors;
        if c + r + w + t == 0 {
            "0".into()
        } else {
            format!("connect {c}, read {r}, write {w}, timeout {t}")
        }
    }
}

/// The kernel's count of accepted TCP connections (`Tcp: PassiveOpens`).
pub fn passive_opens() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/net/snmp").ok()?;
    let mut tcp = text.lines().filter(|l| l.starts_with("Tcp:"));
    let (names, values) = (tcp.next()?, tcp.next()?);
    let at = names.split_whitespace().position(|n| n == "PassiveOpens")?;
    values.split_whitespace().nth(at)?.parse().ok()
}

/// Whether `wrk` is on the PATH.
pub fn available() -> bool {
    Command::new("wrk")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("wrk"))
        .unwrap_or(false)
}

/// `bodies` CFSSL authsign bodies for `protocol` (which must be CFSSL), one
/// per line, and the script, in `dir`; returns the bodies file.
pub fn write_bodies(dir: &Path, name: &str, protocol: &Protocol, csrs: &[Csr]) -> Result<PathBuf> {
    let Protocol::Cfssl { secret, .. } = protocol else {
        bail!("wrk drives the CFSSL authsign API only");
    };
    if csrs.is_empty() {
        bail!("no CSRs");
    }
    let now = crate::load::unix_now();
    let mut text = Vec::new();
    for csr in csrs.iter().take(BODIES) {
        let inner = protocol.prepare(csr);
        let body = ca_proto::cfssl::make_authsign(secret, &inner, now);
        if body.contains(&b'\n') {
            bail!("an authsign body has a newline");
        }
        text.extend_from_slice(&body);
        text.push(b'\n');
    }
    let path = dir.join(format!("{name}.bodies"));
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    let script = dir.join("authsign.lua");
    if !script.exists() {
        std::fs::write(&script, SCRIPT)?;
    }
    Ok(path)
}

/// One wrk run against `port` for `seconds`.
pub fn run(port: u16, bodies: &Path, load: Load, seconds: u64, threads: usize) -> Result<Run> {
    let script = bodies
        .parent()
        .context("bodies file has no directory")?
        .join("authsign.lua");
    let connections = load.connections();
    let url = format!("https://127.0.0.1:{port}{}", ca_proto::cfssl::PATH_AUTHSIGN);
    let before = passive_opens();
    let out = Command::new("wrk")
        .args(["-t", &threads.clamp(1, connections).to_string()])
        .args(["-c", &connections.to_string()])
        .args(["-d", &format!("{seconds}s")])
        .args(["--timeout", "10s", "--latency", "-s"])
        .arg(&script)
        .arg(&url)
        .arg("--")
        .arg(bodies)
        .arg(load.mode())
        .output()
        .context("running wrk (apt-get install wrk)")?;
    let after = passive_opens();
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "wrk failed ({}): {} {}",
            out.status,
            stdout.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let mut run = parse(&stdout)?;
    run.accepted = before.zip(after).map(|(b, a)| a.saturating_sub(b));
    Ok(run)
}

/// wrk's text (with `--latency`) and the script's `ca-bench:` lines.
pub fn parse(text: &str) -> Result<Run> {
    let ours = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("ca-bench: ok "))
        .ok_or_else(|| anyhow!("no 'ca-bench:' line in wrk's output: {}", text.trim()))?;
    let words: Vec<&str> = std::iter::once("ok")
        .chain(ours.split_whitespace())
        .collect();
    let field = |name: &str| -> Result<f64> {
        words
            .chunks(2)
            .find(|kv| kv[0] == name)
            .and_then(|kv| kv.get(1))
            .and_then(|v| v.parse::<f64>().ok())
            .ok_or_else(|| anyhow!("wrk output: no {name}"))
    };
    let first_bad = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("ca-bench: first_bad"))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let after =
        |prefix: &str| -> Option<&str> { text.lines().find_map(|l| l.trim().strip_prefix(prefix)) };
    let socket_errors = match after("Socket errors:") {
        Some(s) => {
            let mut v = [0u64; 4];
            for (i, name) in ["connect", "read", "write", "timeout"].iter().enumerate() {
                v[i] = s
                    .split(',')
                    .find_map(|part| part.trim().strip_prefix(name))
                    .and_then(|n| n.trim().parse().ok())
                    .unwrap_or(0);
            }
            v
        }
        None => [
            field("connect")? as u64,
            field("read")? as u64,
            field("write")? as u64,
            field("timeout")? as u64,
        ],
    };
    let non2xx = after("Non-2xx or 3xx responses:")
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let wrk_rps = after("Requests/sec:")
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| anyhow!("wrk output: no Requests/sec"))?;
    let ms = |name: &str| -> Result<f64> { Ok(field(name)? / 1000.0) };
    Ok(Run {
        ok: field("ok")? as u64,
        bad: field("bad")? as u64,
        requests: field("requests")? as u64,
        non2xx,
        socket_errors,
        seconds: field("duration_us")? / 1e6,
        wrk_rps,
        latency: Latency {
            p50: ms("p50_us")?,
            p90: ms("p90_us")?,
            p99: ms("p99_us")?,
            max: ms("max_us")?,
        },
        first_bad,
        accepted: None,
    })
}

/// A server under wrk: its row-id key, bodies, the loads it takes.
struct Target {
    key: &'static str,
    server: Server,
    bodies: PathBuf,
    loads: Vec<Load>,
}

/// Whether the kernel's accepted-connection count fits the load: about one
/// per request with `close` (at least 90%), about one per connection with
/// keep-alive (at most the connections + 10% of the requests, machine-wide
/// noise included). None when the count is missing.
pub fn connections_fit(load: Load, run: &Run) -> Option<bool> {
    let accepted = run.accepted? as f64;
    let answered = (run.ok + run.bad) as f64;
    Some(match load {
        Load::Close(_) => accepted >= 0.9 * answered,
        Load::KeepAlive(n) => accepted <= n as f64 + 0.1 * answered + 10.0,
    })
}

impl crate::Bench {
    /// The wrk runs (every target, load and repeat, alternating), their
    /// median rows and the list of runs. `deployment` is Trellis with the
    /// log (a second deployment is made for `--no-log`); `cfssl` the CFSSL
    /// CA for multirootca and cfssl serve.
    pub(crate) fn wrk_phase(&mut self, deployment: Option<&Deployment>, cfssl: Option<&CfsslCa>) {
        let o = self.opts.wrk.clone();
        if !available() {
            self.fail(
                "wrk is not installed (scripts/ensure-deps.sh test installs it): no wrk rows"
                    .into(),
            );
            return;
        }
        let dir = match tempfile::Builder::new().prefix("ca-bench-wrk-").tempdir() {
            Ok(d) => d,
            Err(e) => return self.fail(format!("wrk: temporary directory: {e}")),
        };
        eprintln!("wrk: starting the targets ...");
        let log_off = match Deployment::create(&self.ca_server) {
            Ok(d) => Some(d),
            Err(e) => {
                self.fail(format!("wrk: Trellis --no-log deployment: {e:#}"));
                None
            }
        };
        let mut targets: Vec<Target> = Vec::new();
        let all = LOADS.to_vec();
        let mut add = |me: &mut Self,
                       key: &'static str,
                       label: &str,
                       server: Result<Server>,
                       loads: Vec<Load>| {
            if !me.opts.wrk.wants(key) {
                return;
            }
            let mut server = match server {
                Ok(s) => s,
                Err(e) => return me.fail(format!("wrk: {label} does not start: {e:#}")),
            };
            server.label = label.into();
            eprintln!(
                "wrk: {label}: pid {} on {}",
                server._guard.pid(),
                server.addr
            );
            let Some(protocol) = server
                .protocols
                .iter()
                .find(|p| matches!(p, Protocol::Cfssl { .. }))
                .cloned()
            else {
                return me.fail(format!("wrk: {label} has no CFSSL API"));
            };
            if let Err(e) = me.wrk_probe(&server, &protocol) {
                return me.fail(format!(
                    "wrk: {label} does not issue: {e:#} (server log ends: {})",
                    crate::targets::log_tail(&server.log, 3)
                ));
            }
            match write_bodies(dir.path(), key, &protocol, &me.csrs) {
                Ok(bodies) => targets.push(Target {
                    key,
                    server,
                    bodies,
                    loads,
                }),
                Err(e) => me.fail(format!("wrk: {label}: {e:#}")),
            }
        };
        if let Some(d) = deployment {
            add(
                self,
                "trellis",
                "Trellis, log on",
                d.start(false, &[]),
                all.clone(),
            );
        }
        if let Some(ca) = cfssl {
            add(
                self,
                "multirootca",
                "multirootca",
                ca.multirootca(),
                all.clone(),
            );
            add(self, "cfssl-serve", "cfssl serve", ca.serve(), all.clone());
        }
        if let Some(d) = &log_off {
            match d.log_off_flag() {
                Some(flag) => add(
                    self,
                    "trellis-nolog",
                    &format!("Trellis, {flag}"),
                    d.start(false, std::slice::from_ref(&flag)),
                    vec![LOADS[0]],
                ),
                None => self.fail("wrk: `ca-server dev` has no option to turn the log off".into()),
            }
        }
        if targets.is_empty() {
            return;
        }
        // Measure steady state: a Trellis server started on a deployment
        // whose log already holds the earlier phases' entries first indexes
        // them (inventory, revocation index) on its background threads.
        let pids: Vec<u32> = targets.iter().map(|t| t.server._guard.pid()).collect();
        let (waited, settled) = wait_idle(&pids, IDLE_CPU, IDLE_WAIT_MAX);
        eprintln!(
            "wrk: targets idle after {:.1} s{}",
            waited.as_secs_f64(),
            if settled { "" } else { " (not idle: gave up)" }
        );
        self.report.notes.push(format!(
            "wrk: before the first run, every target process was waited for until it used under {:.0}% of a core over a second (a Trellis server started on the deployment of the earlier phases first indexes their entries in the background): {:.1} s{}.",
            IDLE_CPU * 100.0,
            waited.as_secs_f64(),
            if settled { "" } else { ", and they were still busy at the limit" }
        ));
        // runs[target][load index in LOADS]
        let mut runs: Vec<Vec<Vec<Run>>> = targets
            .iter()
            .map(|_| vec![Vec::new(); LOADS.len()])
            .collect();
        let mut listing = String::from(
            "| run | target | load | certs/s | wrk req/s | OK | not OK | socket errors | p50 ms | p99 ms | TCP connections accepted (kernel) |\n\
             |---:|---|---|---:|---:|---:|---:|---|---:|---:|---:|\n",
        );
        // The first measured Trellis run at the first load is profiled.
        let mut profiled: Option<Result<String, String>> = None;
        for repeat in 0..o.wrk_repeats {
            for (li, &load) in LOADS.iter().enumerate() {
                for (ti, t) in targets.iter_mut().enumerate() {
                    if !t.loads.contains(&load) {
                        continue;
                    }
                    let name = format!(
                        "{} ({}), run {}",
                        t.server.label,
                        load.describe(),
                        repeat + 1
                    );
                    if let Err(e) = t.server._guard.check_alive() {
                        self.fail(format!("wrk: {name}: {e:#}"));
                        continue;
                    }
                    let port = t.server.addr.port();
                    eprintln!("wrk: running {name} ...");
                    if o.wrk_warmup > 0 {
                        if let Err(e) = run(port, &t.bodies, load, o.wrk_warmup, o.wrk_threads) {
                            self.fail(format!("wrk: {name}, warm-up: {e:#}"));
                            continue;
                        }
                    }
                    let profile = (profiled.is_none() && t.key == "trellis" && li == 0)
                        .then(|| crate::profile::Profile::start(o.wrk_seconds));
                    let measured = run(port, &t.bodies, load, o.wrk_seconds, o.wrk_threads);
                    if let Some(profile) = profile {
                        profiled = Some(
                            profile
                                .and_then(crate::profile::Profile::finish)
                                .map(|table| format!("Profiled: {name}.\n\n{table}")),
                        );
                    }
                    match measured {
                        Ok(r) => {
                            eprintln!(
                                "wrk: {name}: {:.0} certs/s, {} not OK, socket errors {}, p99 {:.2} ms, {} TCP connections accepted",
                                r.rate(),
                                r.bad,
                                r.socket_summary(),
                                r.latency.p99,
                                r.accepted.map_or("?".into(), |a| a.to_string())
                            );
                            let _ = writeln!(
                                listing,
                                "| {} | {} | {} | {:.0} | {:.0} | {} | {} | {} | {:.2} | {:.2} | {} |",
                                repeat + 1,
                                t.server.label,
                                load.describe(),
                                r.rate(),
                                r.wrk_rps,
                                r.ok,
                                r.bad_summary(),
                                r.socket_summary(),
                                r.latency.p50,
                                r.latency.p99,
                                r.accepted.map_or("–".into(), |a| a.to_string())
                            );
                            if r.ok + r.bad != r.requests {
                                self.report.notes.push(format!(
                                    "wrk: {name}: the script saw {} answers, wrk counted {} requests",
                                    r.ok + r.bad,
                                    r.requests
                                ));
                            }
                            if let Some(bad) = &r.first_bad {
                                self.report
                                    .notes
                                    .push(format!("wrk: {name}: {} not OK; first: {bad}", r.bad));
                            }
                            if connections_fit(load, &r) == Some(false) {
                                self.fail(format!(
                                    "wrk: {name}: the kernel accepted {} TCP connections for {} answers: {}",
                                    r.accepted.unwrap_or(0),
                                    r.ok + r.bad,
                                    match load {
                                        Load::Close(_) => "wrk did not open a new connection per request",
                                        Load::KeepAlive(_) => "connections were not kept alive",
                                    }
                                ));
                            }
                            runs[ti][li].push(r);
                        }
                        Err(e) => self.fail(format!("wrk: {name}: {e:#}")),
                    }
                }
            }
        }
        for (ti, t) in targets.iter().enumerate() {
            for (li, &load) in LOADS.iter().enumerate() {
                let mut these = runs[ti][li].clone();
                if these.is_empty() {
                    continue;
                }
                these.sort_by(|a, b| a.rate().total_cmp(&b.rate()));
                let n = these.len();
                let rate = if n % 2 == 1 {
                    these[n / 2].rate()
                } else {
                    (these[n / 2 - 1].rate() + these[n / 2].rate()) / 2.0
                };
                let middle = &these[(n - 1) / 2];
                let all_rates: Vec<String> = runs[ti][li]
                    .iter()
                    .map(|r| format!("{:.0}", r.rate()))
                    .collect();
                self.report.rows.push(Row {
                    id: row_id(t.key, load),
                    target: t.server.label.clone(),
                    protocol: "cfssl authsign, wrk".into(),
                    tls: "yes",
                    clients: load.connections().to_string(),
                    load: format!(
                        "{}; median of {} × {} s ({})",
                        match load {
                            Load::KeepAlive(_) => "keep-alive",
                            Load::Close(_) => "new TLS connection per request",
                        },
                        n,
                        o.wrk_seconds,
                        all_rates.join(", ")
                    ),
                    rate,
                    latency: Some(middle.latency),
                    errors: these.iter().map(Run::errors).sum(),
                    validated: "–".into(),
                });
            }
        }
        self.report
            .sections
            .push(crate::report::profile_section(profiled));
        self.report.sections.push((
            "wrk runs".into(),
            format!(
                "Every wrk run in the order run (targets alternate, so drift on the machine hits each \
                 alike). certs/s counts only HTTP 200 answers whose body says `\"success\":true`; \
                 `wrk req/s` is wrk's own figure (every completed request). TCP connections \
                 accepted is the kernel's `TcpPassiveOpens` over the run (machine-wide): with a new \
                 connection per request it is about one per answer, with keep-alive about the \
                 number of connections. The rows in Results are each configuration's median run \
                 (latency of that run: wrk's, from the request's first byte to the end of the \
                 answer, so a new connection's handshakes count in the rate but not in the \
                 latency). Before the runs, each target issued one certificate that was checked \
                 like the own generator's samples. A new connection is not always a full TLS \
                 handshake: wrk keeps its OpenSSL session across reconnects (`SSL_clear` after a \
                 clean shutdown), so against servers that issue TLS 1.3 tickets (all three do) \
                 most reconnects resume the session (PSK with ECDHE, no certificate signature); a \
                 packet capture when this harness was written found a PSK in about 85% of the \
                 ClientHellos of that load, accepted by each server. Fresh clients with no \
                 session are what the container-start row measures.\n\n{listing}"
            ),
        ));
    }

    /// One authsign request through the own generator's client, the
    /// certificate checked as the samples are.
    fn wrk_probe(&self, server: &Server, protocol: &Protocol) -> Result<()> {
        let endpoint = crate::load::Endpoint {
            addr: server.addr,
            tls: server.tls.clone(),
            protocol: protocol.clone(),
        };
        let body = crate::load::probe(&endpoint, &self.csrs[0])?;
        let sample = [crate::load::Sample { csr: 0, body }];
        let checked = crate::validate::check(&sample, &self.csrs, protocol, &server.trust);
        match checked.first_failure {
            Some(f) => bail!("the certificate it issued is wrong: {f}"),
            None => Ok(()),
        }
    }
}

/// The ratio lines of the wrk runs (issue 16's targets).
pub fn ratios(r: &mut Report) {
    for load in LOADS {
        for (other, name) in [
            ("multirootca", "multirootca"),
            ("cfssl-serve", "cfssl serve"),
        ] {
            r.ratio(
                &format!("wrk, {}: Trellis (HSM, log on) / {name}", load.describe()),
                &row_id("trellis", load),
                &row_id(other, load),
                "≥ 1.3",
            );
        }
    }
    r.ratio(
        "wrk, 64 connections keep-alive: Trellis / in-process limit",
        &row_id("trellis", LOADS[1]),
        "inprocess",
        "≥ 0.75",
    );
    r.ratio(
        "wrk, 16 connections keep-alive: Trellis log on / --no-log",
        &row_id("trellis", LOADS[0]),
        &row_id("trellis-nolog", LOADS[0]),
        "≥ 0.90",
    );
    if r.row(&row_id("trellis", LOADS[0])).is_none() {
        r.ratios.push(Ratio {
            name: "wrk".into(),
            value: "not measured".into(),
            target: "(see Failures)".into(),
        });
    }
}

/// A target is idle below this share of one core.
const IDLE_CPU: f64 = 0.05;
/// Longest wait for the targets to become idle.
const IDLE_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(120);

/// CPU seconds used so far by the processes `pids` (user + system).
fn cpu_seconds(pids: &[u32]) -> f64 {
    let ticks: u64 = pids
        .iter()
        .filter_map(|pid| crate::containers::cpu_ticks(&format!("/proc/{pid}/stat"), 11))
        .sum();
    crate::containers::ticks(ticks).as_secs_f64()
}

/// Wait until the processes together use under `share` of a core over one
/// second, at most `max`; returns how long it took and whether they did.
fn wait_idle(pids: &[u32], share: f64, max: std::time::Duration) -> (std::time::Duration, bool) {
    let started = std::time::Instant::now();
    let mut before = cpu_seconds(pids);
    while started.elapsed() < max {
        std::thread::sleep(std::time::Duration::from_secs(1));
        let now = cpu_seconds(pids);
        if now - before < share {
            return (started.elapsed(), true);
        }
        before = now;
    }
    (started.elapsed(), false)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = "Running 5s test @ https://127.0.0.1:1234/api/v1/cfssl/authsign
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.71ms    1.20ms  20.00ms   80.00%
    Req/Sec     2.97k   300.00     3.50k    70.00%
  Latency Distribution
     50%    2.50ms
     75%    3.00ms
     90%    4.00ms
     99%    7.00ms
  29700 requests in 5.00s, 40.00MB read
  Socket errors: connect 0, read 3, write 0, timeout 1
  Non-2xx or 3xx responses: 5
Requests/sec:   5940.00
Transfer/sec:      8.00MB
ca-bench: ok 29695 bad 5 requests 29700 duration_us 5000123 connect 0 read 3 write 0 status 5 timeout 1 p50_us 2500 p90_us 4000 p99_us 7012 max_us 20000
ca-bench: first_bad HTTP 400: {\"success\":false}
";

    #[test]
    fn parses_wrk_and_the_script() {
        let r = parse(OUTPUT).unwrap();
        assert_eq!((r.ok, r.bad, r.requests, r.non2xx), (29695, 5, 29700, 5));
        assert_eq!(r.socket_errors, [0, 3, 0, 1]);
        assert_eq!(r.errors(), 9);
        assert!((r.seconds - 5.000123).abs() < 1e-9);
        assert!((r.wrk_rps - 5940.0).abs() < 1e-9);
        assert!((r.latency.p99 - 7.012).abs() < 1e-9);
        assert_eq!(
            r.first_bad.as_deref(),
            Some("HTTP 400: {\"success\":false}")
        );
        assert!((r.rate() - 29695.0 / 5.000123).abs() < 1e-6);
    }

    #[test]
    fn connection_counts_are_judged_per_load() {
        let mut r = parse(OUTPUT).unwrap();
        r.accepted = Some(29_000);
        assert_eq!(connections_fit(Load::Close(16), &r), Some(true));
        assert_eq!(connections_fit(Load::KeepAlive(16), &r), Some(false));
        r.accepted = Some(16);
        assert_eq!(connections_fit(Load::Close(16), &r), Some(false));
        assert_eq!(connections_fit(Load::KeepAlive(16), &r), Some(true));
    }
}
