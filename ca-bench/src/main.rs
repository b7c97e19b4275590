//! `ca-bench`: Trellis measured side by side with CFSSL on the same machine,
//! CSR set and load generator, plus the in-process limit and the raw HSM
//! rate; one markdown report with the ratios DESIGN.md sets targets for.
//! This file is the command line and the order of the runs; the parts are
//! `csrs` (the CSR set), `load` (the load generator), `wrk` (the
//! independent one), `targets` (the servers), `inprocess` (no-HTTP limit,
//! HSM rate, crypto floor), `containers` (concurrent `ca-client --once`),
//! `validate` (checking returned certificates) and `report` (the table);
//! `soak` (the bounded soak, `docs/soak.md`), `sidecar` (the idle
//! `ca-client`'s resident set) and `inventory` (the log inventory at a
//! million entries, `docs/inventory-bench.md`) are commands of their own.

mod containers;
mod csrs;
mod inprocess;
mod inventory;
mod load;
mod pacer;
mod profile;
mod report;
mod sidecar;
mod soak;
mod targets;
mod validate;
mod wrk;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use csrs::Csr;
use load::{Endpoint, Pace, Sample, Spec};
use report::{Facts, Latency, Ratio, Report, Row};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use targets::cfssl::CfsslCa;
use targets::trellis::Deployment;
use targets::Server;

#[derive(Parser)]
#[command(
    name = "ca-bench",
    version,
    about = "Benchmark Trellis against CFSSL (cfssl serve, multirootca), the in-process limit and the raw HSM rate"
)]
struct Cli {
    /// The ca-server binary to run (default: next to this executable).
    #[arg(long, global = true)]
    ca_server: Option<PathBuf>,
    /// The ca-client binary to run (default: next to this executable).
    #[arg(long, global = true)]
    ca_client: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct Opts {
    /// Measured seconds per configuration (after the warm-up).
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Concurrent clients, each with its own keep-alive connection. Peak
    /// throughput needs enough of them to hide the log's fsync latency
    /// (group commit batches what is in flight); every target gets the same.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Connections for the open-loop run at half of peak (enough that free
    /// connections are always there for the next due request).
    #[arg(long, default_value_t = 64)]
    open_clients: usize,
    /// Distinct CSRs generated up front (used in turn, not timed).
    #[arg(long, default_value_t = 20000)]
    csrs: usize,
    /// Warm-up seconds before each measurement (not counted).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Threads of the load generator's runtime (it shares the machine with
    /// the server under test).
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// Also write the report (markdown) to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    #[command(flatten)]
    wrk: wrk::WrkOpts,
    #[command(flatten)]
    containers: containers::ContainerOpts,
}

#[derive(Subcommand)]
enum Command {
    /// Every configuration, the ratios, and the report (`make bench`).
    All(Opts),
    /// Trellis only: native and CFSSL-compatible API, p99 at half of peak,
    /// and log off when `ca-server dev` can turn it off.
    Trellis {
        #[command(flatten)]
        opts: Opts,
        /// Serve plain HTTP instead of HTTPS.
        #[arg(long)]
        insecure_http: bool,
    },
    /// CFSSL's `cfssl serve` only.
    CfsslServe(Opts),
    /// CFSSL's `multirootca` only.
    Multirootca(Opts),
    /// The in-process limit (no HTTP), the raw HSM rate and the crypto
    /// floor it is judged against.
    Inprocess(Opts),
    /// The raw HSM signing rate only.
    Hsm(Opts),
    /// The wrk runs only (Trellis, multirootca, cfssl serve; HTTPS).
    Wrk(Opts),
    /// The container start only (concurrent `ca-client --once`).
    Containers(Opts),
    /// A bounded soak of Trellis at half of its native peak: throughput,
    /// p99, errors and the server's resident set every 10 s, then
    /// `ca-server log verify`. Exits non-zero when a criterion fails.
    Soak(SoakOpts),
    /// The inventory over a synthetic log of 1,000,000 entries: build
    /// time, memory, search latency (not part of `all`: about a minute).
    Inventory(inventory::InventoryOpts),
    /// The resident set of an idle `ca-client` daemon (target < 20 MiB).
    SidecarRss {
        /// Also write the report (markdown) to this file.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Args, Clone)]
struct SoakOpts {
    /// Measured minutes (after the warm-up), in 10 s windows.
    #[arg(long, default_value_t = 10.0)]
    minutes: f64,
    /// Offered requests/s; default: half of the peak measured first.
    #[arg(long)]
    rate: Option<f64>,
    /// Seconds at the soak rate before the first window (the resident set
    /// at its end is the start figure). Default: the server's replay window
    /// (`max_skew_secs`, 300 s in a dev deployment) + 30 s, so that the
    /// replay cache, which grows for that long, is level when the
    /// resident set is first taken.
    #[arg(long)]
    warmup: Option<f64>,
    /// Measured seconds of the closed-loop peak run (without --rate).
    #[arg(long, default_value_t = 5.0)]
    peak_seconds: f64,
    /// Concurrent clients of the peak run.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Connections of the open loop.
    #[arg(long, default_value_t = 64)]
    open_clients: usize,
    /// Distinct CSRs generated up front (used in turn).
    #[arg(long, default_value_t = 20000)]
    csrs: usize,
    /// Threads of the load generator's runtime.
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// Also write the report (markdown) to this file.
    #[arg(long)]
    out: Option<PathBuf>,
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("ca-bench: {e:#}");
        std::process::exit(1);
    }
}

/// `name` next to this executable.
fn sibling(name: &str) -> Result<PathBuf> {
    Ok(std::env::current_exe()?
        .parent()
        .context("no directory for the executable")?
        .join(name))
}

/// Print a report and write it to `out`, if given.
fn publish(text: &str, out: Option<&PathBuf>) -> Result<()> {
    println!("{text}");
    if let Some(out) = out {
        if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(out, text).with_context(|| format!("writing {}", out.display()))?;
        eprintln!("wrote {}", out.display());
    }
    Ok(())
}

fn run(cli: Cli) -> Result<()> {
    let ca_server = match cli.ca_server {
        Some(path) => path,
        None => sibling("ca-server")?,
    };
    let ca_client = match cli.ca_client {
        Some(path) => path,
        None => sibling("ca-client")?,
    };
    let opts = match &cli.command {
        Command::All(o)
        | Command::Trellis { opts: o, .. }
        | Command::CfsslServe(o)
        | Command::Multirootca(o)
        | Command::Inprocess(o)
        | Command::Hsm(o)
        | Command::Wrk(o)
        | Command::Containers(o) => o.clone(),
        Command::Soak(o) => return run_soak(&ca_server, o),
        Command::Inventory(o) => return publish(&inventory::run(o)?, o.out.as_ref()),
        Command::SidecarRss { out } => {
            eprintln!("creating the Trellis deployment ...");
            let deployment = Deployment::create(&ca_server)?;
            eprintln!("running ca-client against it ...");
            let rss = sidecar::measure(&ca_client, &deployment)?;
            publish(&rss.markdown(), out.as_ref())?;
            if !rss.passed() {
                bail!(
                    "idle ca-client resident set {:.1} MiB is not below {} MiB",
                    targets::mib(rss.max_kib()),
                    sidecar::TARGET_KIB / 1024
                );
            }
            return Ok(());
        }
    };
    check(&opts)?;
    let settings = format!(
        "{} s measured after {} s warm-up per configuration; {} clients closed loop, {} open loop (send slots released on time by a pacing thread; latency counted from each slot's due time); {} distinct P-256 CSRs; load generator on {} runtime thread(s); {}",
        opts.seconds, opts.warmup, opts.clients, opts.open_clients, opts.csrs, opts.client_threads,
        opts.wrk.settings()
    );
    let mut facts = Facts::gather(settings);
    let started = Instant::now();
    let needs_csrs = !matches!(cli.command, Command::Hsm(_));
    let csrs = if needs_csrs {
        eprintln!("generating {} CSRs ...", opts.csrs);
        let t = Instant::now();
        let csrs = csrs::generate(opts.csrs)?;
        eprintln!("  done in {:.1} s", t.elapsed().as_secs_f64());
        csrs
    } else {
        Vec::new()
    };
    let mut bench = Bench {
        opts: opts.clone(),
        csrs,
        ca_server,
        ca_client,
        report: Report::default(),
    };
    match cli.command {
        Command::All(_) => bench.all(),
        Command::Trellis { insecure_http, .. } => {
            let deployment = bench.deployment()?;
            bench.trellis_both_logs(&deployment, insecure_http, true);
        }
        Command::CfsslServe(_) => {
            let ca = CfsslCa::create()?;
            bench.served("cfssl-serve", ca.serve());
        }
        Command::Multirootca(_) => {
            let ca = CfsslCa::create()?;
            bench.served("multirootca", ca.multirootca());
        }
        Command::Inprocess(_) => bench.inprocess(false),
        Command::Hsm(_) => bench.inprocess(true),
        Command::Wrk(_) => {
            let deployment = bench.deployment()?;
            let ca = CfsslCa::create()?;
            bench.wrk_phase(Some(&deployment), Some(&ca));
            wrk::ratios(&mut bench.report);
        }
        Command::Containers(_) => {
            let deployment = bench.deployment()?;
            bench.containers(&deployment);
        }
        Command::Soak(_) | Command::SidecarRss { .. } | Command::Inventory(_) => {
            unreachable!("handled above")
        }
    }
    bench.report.notes.push(format!(
        "The load generator runs on the same {} cores as the server under test, so every \
         HTTP row includes its cost (HMAC, JSON, TLS on the client side); total run time {:.0} s.",
        facts.nproc,
        started.elapsed().as_secs_f64()
    ));
    facts.finish();
    publish(&bench.report.markdown(&facts), opts.out.as_ref())?;
    if bench.report.rows.is_empty() {
        bail!("nothing was measured");
    }
    Ok(())
}

fn run_soak(ca_server: &std::path::Path, o: &SoakOpts) -> Result<()> {
    if !(o.minutes > 0.0 && o.minutes <= 24.0 * 60.0) {
        bail!("--minutes must be in (0, 1440]");
    }
    if let Some(rate) = o.rate {
        if !(1.0..=100_000.0).contains(&rate) {
            bail!("--rate must be in [1, 100000]");
        }
    }
    if let Some(w) = o.warmup {
        if !(0.0..=3600.0).contains(&w) {
            bail!("--warmup must be in [0, 3600]");
        }
    }
    if !(o.peak_seconds > 0.0 && o.peak_seconds <= 600.0) {
        bail!("--peak-seconds must be in (0, 600]");
    }
    if !(1..=1024).contains(&o.clients) || !(1..=1024).contains(&o.open_clients) {
        bail!("--clients and --open-clients must be 1..=1024");
    }
    if !(1..=1_000_000).contains(&o.csrs) {
        bail!("--csrs must be 1..=1000000");
    }
    if !(1..=64).contains(&o.client_threads) {
        bail!("--client-threads must be 1..=64");
    }
    let settings = format!(
        "{} min in 10 s windows after a warm-up of {}; {}; {} clients for the peak, {} open loop; {} distinct P-256 CSRs; load generator on {} runtime thread(s)",
        o.minutes,
        match o.warmup {
            Some(w) => format!("{w} s"),
            None => "the replay window + 30 s".into(),
        },
        match o.rate {
            Some(r) => format!("offered {r}/s (--rate)"),
            None => format!("offered half of the peak measured over {} s", o.peak_seconds),
        },
        o.clients,
        o.open_clients,
        o.csrs,
        o.client_threads
    );
    let mut facts = Facts::gather(settings);
    eprintln!("generating {} CSRs ...", o.csrs);
    let csrs = csrs::generate(o.csrs)?;
    let params = soak::Params {
        minutes: o.minutes,
        rate: o.rate,
        warmup: o.warmup.map(Duration::from_secs_f64),
        peak_seconds: o.peak_seconds,
        clients: o.clients,
        open_clients: o.open_clients,
        client_threads: o.client_threads,
    };
    let (text, passed) = soak::run(ca_server, &csrs, &params, &mut facts)?;
    publish(&text, o.out.as_ref())?;
    if !passed {
        bail!("the soak failed a criterion (see the summary)");
    }
    Ok(())
}

/// Every loop is bounded by these.
fn check(o: &Opts) -> Result<()> {
    if !(o.seconds > 0.0 && o.seconds <= 600.0) {
        bail!("--seconds must be in (0, 600]");
    }
    if !(o.warmup >= 0.0 && o.warmup <= 60.0) {
        bail!("--warmup must be in [0, 60]");
    }
    if !(1..=1024).contains(&o.clients) || !(1..=1024).contains(&o.open_clients) {
        bail!("--clients and --open-clients must be 1..=1024");
    }
    if !(1..=1_000_000).contains(&o.csrs) {
        bail!("--csrs must be 1..=1000000");
    }
    if !(1..=64).contains(&o.client_threads) {
        bail!("--client-threads must be 1..=64");
    }
    if !(1..=2000).contains(&o.containers.containers) {
        bail!("--containers must be 1..=2000");
    }
    o.wrk.check()
}

struct Bench {
    opts: Opts,
    csrs: Vec<Csr>,
    ca_server: PathBuf,
    ca_client: PathBuf,
    report: Report,
}

impl Bench {
    fn all(&mut self) {
        self.inprocess(true);
        let deployment = self
            .deployment()
            .map_err(|e| self.fail(format!("Trellis: {e:#}")))
            .ok();
        if let Some(deployment) = &deployment {
            self.trellis_both_logs(deployment, false, true);
            self.trellis_both_logs(deployment, true, false);
            self.sidecar_rss(deployment);
        }
        let ca = CfsslCa::create()
            .map_err(|e| self.fail(format!("CFSSL: {e:#}")))
            .ok();
        if let Some(ca) = &ca {
            self.served("cfssl-serve", ca.serve());
            self.served("multirootca", ca.multirootca());
        }
        self.wrk_phase(deployment.as_ref(), ca.as_ref());
        if let Some(deployment) = &deployment {
            self.containers(deployment);
        }
        self.ratios();
    }

    /// The idle sidecar's resident set, as a line of the ratios table.
    fn sidecar_rss(&mut self, deployment: &Deployment) {
        eprintln!("idle ca-client resident set ...");
        let value = match sidecar::measure(&self.ca_client, deployment) {
            Ok(rss) => {
                eprintln!("  {}", rss.summary());
                rss.summary()
            }
            Err(e) => {
                self.fail(format!("ca-client resident set: {e:#}"));
                "not measured".into()
            }
        };
        self.report.ratios.push(Ratio {
            name: "idle sidecar resident set (`ca-client` daemon, VmRSS)".into(),
            value,
            target: format!("< {} MiB", sidecar::TARGET_KIB / 1024),
        });
        self.report.notes.push(
            "Sidecar memory: `ca-client` as a daemon (class `db`, one DNS name, 24 h              certificate, `--metrics-listen` on) against the Trellis deployment; VmRSS from              `/proc/<pid>/status` sampled 5 times over 10 s, starting 5 s after `cert.pem`              was installed (also `ca-bench sidecar-rss`)."
                .into(),
        );
    }

    fn fail(&mut self, what: String) {
        eprintln!("  FAILED: {what}");
        self.report.failures.push(what);
    }

    fn spec(&self, pace: Pace) -> Spec {
        Spec {
            clients: match pace {
                Pace::Closed => self.opts.clients,
                Pace::Open { .. } => self.opts.open_clients,
            },
            warmup: Duration::from_secs_f64(self.opts.warmup),
            measure: Duration::from_secs_f64(self.opts.seconds),
            pace,
            threads: self.opts.client_threads,
        }
    }

    fn deployment(&mut self) -> Result<Deployment> {
        eprintln!("creating the Trellis deployment ...");
        let deployment = Deployment::create(&self.ca_server)?;
        self.report.notes.push(format!(
            "Trellis: `ca-server dev` deployment (SoftHSM2), key `db`, class `db`, profile \
             `server`; {}.",
            targets::trellis::RATE_NOTE
        ));
        Ok(deployment)
    }

    /// Probe, drive, validate, and add a row (or a failure). Returns the rate.
    fn drive(&mut self, server: &Server, protocol: usize, id: &str, pace: Pace) -> Option<f64> {
        let endpoint = Endpoint {
            addr: server.addr,
            tls: server.tls.clone(),
            protocol: server.protocols[protocol].clone(),
        };
        let name = format!("{} ({})", server.label, endpoint.protocol.name());
        eprintln!("{name}: {pace:?} ...");
        let probed = load::probe(&endpoint, &self.csrs[0]).and_then(|body| {
            let sample = [Sample { csr: 0, body }];
            let c = validate::check(&sample, &self.csrs, &endpoint.protocol, &server.trust);
            match c.first_failure {
                Some(f) => bail!("the certificate it issued is wrong: {f}"),
                None => Ok(()),
            }
        });
        if let Err(e) = probed {
            self.fail(format!(
                "{name}: does not issue: {e:#} (server log ends: {})",
                targets::log_tail(&server.log, 3)
            ));
            return None;
        }
        let outcome = match load::run(&endpoint, &self.csrs, self.spec(pace)) {
            Ok(o) => o,
            Err(e) => {
                self.fail(format!("{name}: {e:#}"));
                return None;
            }
        };
        let checked = validate::check(
            &outcome.samples,
            &self.csrs,
            &endpoint.protocol,
            &server.trust,
        );
        if let Some(f) = &checked.first_failure {
            self.fail(format!("{name}: invalid certificate in the sample: {f}"));
        }
        if let Some(e) = &outcome.first_error {
            self.report.notes.push(format!(
                "{name}, {pace:?}: {} errors; first: {e}",
                outcome.errors
            ));
        }
        let rate = outcome.rate();
        eprintln!(
            "  {rate:.0} certs/s, {} errors, sample {}",
            outcome.errors,
            checked.summary()
        );
        self.report.rows.push(Row {
            id: id.into(),
            target: server.label.clone(),
            protocol: endpoint.protocol.name().into(),
            tls: if server.tls.is_some() { "yes" } else { "no" },
            clients: self.spec(pace).clients.to_string(),
            load: match pace {
                Pace::Closed => "closed loop".into(),
                Pace::Open { rate } => format!("open loop, {rate:.0}/s"),
            },
            rate,
            latency: Latency::from_sorted_us(&outcome.latencies_us),
            errors: outcome.errors,
            validated: checked.summary(),
        });
        Some(rate)
    }

    /// Trellis with the issuance log on and, when this build can turn it
    /// off, off; a note when it cannot.
    fn trellis_both_logs(&mut self, deployment: &Deployment, insecure_http: bool, half_load: bool) {
        let flag = deployment.log_off_flag();
        self.trellis(deployment, insecure_http, None, half_load, flag.is_some());
        match flag {
            Some(flag) => self.trellis(deployment, insecure_http, Some(&flag), false, true),
            None => {
                let note = "Issuance log: not yet implemented — `ca-server dev --help` offers no \
                            option to turn it off, so no log-off row was measured and log-on / \
                            log-off is not reported.";
                if !self.report.notes.iter().any(|n| n == note) {
                    self.report.notes.push(note.into());
                }
            }
        }
    }

    /// Trellis over HTTPS (or HTTP), with the log (or `log_off` passed to
    /// `ca-server dev`): native, CFSSL-compatible, and with `half_load` the
    /// native API open-loop at half its measured peak.
    fn trellis(
        &mut self,
        deployment: &Deployment,
        insecure_http: bool,
        log_off: Option<&str>,
        half_load: bool,
        log_can_be_off: bool,
    ) {
        let extra: Vec<String> = log_off.iter().map(|f| f.to_string()).collect();
        let scheme = if insecure_http { "http" } else { "https" };
        let mut server = match deployment.start(insecure_http, &extra) {
            Ok(s) => s,
            Err(e) => {
                self.fail(format!(
                    "Trellis ({scheme} {}) does not start: {e:#}",
                    extra.join(" ")
                ));
                return;
            }
        };
        server.label = match log_off {
            Some(flag) => format!("Trellis, {flag}"),
            None if log_can_be_off => "Trellis, log on".into(),
            None => "Trellis".into(),
        };
        let suffix = if log_off.is_some() { "-nolog" } else { "" };
        let native = format!("trellis-native-{scheme}{suffix}");
        let peak = self.drive(&server, 0, &native, Pace::Closed);
        self.drive(
            &server,
            1,
            &format!("trellis-cfssl-{scheme}{suffix}"),
            Pace::Closed,
        );
        if log_off.is_none() {
            if let Some(note) = group_commit_note(deployment, &server, scheme) {
                self.report.notes.push(note);
            }
        }
        if !half_load {
            return;
        }
        let Some(peak) = peak.filter(|p| *p > 0.0) else {
            return;
        };
        let rate = peak / 2.0;
        let half = format!("{native}-half");
        self.drive(&server, 0, &half, Pace::Open { rate });
        let value = match self.report.row(&half) {
            Some(Row {
                latency: Some(l),
                rate: achieved,
                ..
            }) => format!(
                "{:.2} ms (offered {rate:.0}/s, achieved {achieved:.0}/s)",
                l.p99
            ),
            _ => "not measured".into(),
        };
        self.report.ratios.push(Ratio {
            name: format!(
                "p99 at 50% of peak load ({}, native, {scheme}, open loop)",
                server.label
            ),
            value,
            target: "< 5 ms".into(),
        });
        self.report.notes.push(
            "Open-loop latency is measured from each request's scheduled send time \
             (so queueing behind a slow request counts; includes ≤ 1 ms of timer slack)."
                .into(),
        );
    }

    /// A CFSSL server: its one (authsign) protocol, closed loop.
    fn served(&mut self, id: &str, server: Result<Server>) {
        match server {
            Ok(server) => {
                self.drive(&server, 0, id, Pace::Closed);
            }
            Err(e) => self.fail(format!("{id} does not start: {e:#}")),
        }
    }

    /// The in-process limit (when there are CSRs), the raw HSM rate and the
    /// crypto floor; `with_revocation`, CRL and OCSP figures.
    fn inprocess(&mut self, with_revocation: bool) {
        eprintln!("in-process deployment ...");
        let inp = match inprocess::InProcess::setup() {
            Ok(i) => i,
            Err(e) => {
                self.fail(format!("in-process setup: {e:#}"));
                return;
            }
        };
        if !self.csrs.is_empty() {
            match inp.issue_all(&self.csrs) {
                Ok(m) => {
                    eprintln!("  in-process: {:.0} certs/s", m.rate());
                    if let Some(e) = &m.first_error {
                        self.report
                            .notes
                            .push(format!("in-process: {} errors; first: {e}", m.errors));
                    }
                    self.report.rows.push(Row::in_process(
                        "inprocess",
                        "Trellis in-process limit",
                        "Authority::submit, no HTTP",
                        format!("{} pool threads", m.threads),
                        format!("{} CSRs at once", self.csrs.len()),
                        m.rate(),
                        m.errors,
                    ));
                }
                Err(e) => self.fail(format!("in-process: {e:#}")),
            }
        }
        let seconds = self.opts.seconds.min(3.0);
        if with_revocation {
            self.revocation_figures(&inp, seconds);
        }
        self.hsm_rates_and_floor(&inp, seconds);
    }

    fn revocation_figures(&mut self, inp: &inprocess::InProcess, seconds: f64) {
        eprintln!("CRL signing and OCSP answers ...");
        match inp.revocation(&[10_000, 100_000], seconds) {
            Ok(figures) => {
                for (n, secs, bytes) in &figures.crls {
                    eprintln!(
                        "  CRL with {n} serials: {:.1} ms, {} KiB",
                        secs * 1e3,
                        bytes / 1024
                    );
                    self.report.ratios.push(Ratio {
                        name: format!("CRL of {n} revoked serials: sign time, DER size (in-process, SoftHSM2)"),
                        value: format!("{:.1} ms, {:.1} MiB", secs * 1e3, *bytes as f64 / 1048576.0),
                        target: "(measured)".into(),
                    });
                }
                eprintln!("  OCSP: {:.0} responses/s", figures.ocsp_per_second);
                self.report.ratios.push(Ratio {
                    name: "OCSP responses built and HSM-signed per second (one thread, nonce, no HTTP)".into(),
                    value: format!("{:.0}/s", figures.ocsp_per_second),
                    target: "(measured)".into(),
                });
            }
            Err(e) => self.fail(format!("revocation figures: {e:#}")),
        }
    }

    fn hsm_rates_and_floor(&mut self, inp: &inprocess::InProcess, seconds: f64) {
        for (threads, id) in [(1usize, "hsm-1"), (2, "hsm-2")] {
            match inp.hsm_rate(threads, seconds) {
                Ok(rate) => {
                    eprintln!("  HSM, {threads} thread(s): {rate:.0} signatures/s");
                    self.report.rows.push(Row::in_process(
                        id,
                        "SoftHSM2 raw P-256 sign (signatures/s)",
                        "PoolSession::sign",
                        format!("{threads} thread(s)"),
                        format!("closed loop, {seconds} s"),
                        rate,
                        0,
                    ))
                }
                Err(e) => self.fail(format!("HSM rate: {e:#}")),
            }
        }
        self.crypto_floor(inp, seconds);
    }

    fn ratios(&mut self) {
        let r = &mut self.report;
        wrk::ratios(r);
        r.ratio(
            "own generator: Trellis native HTTPS / multirootca (HTTPS)",
            "trellis-native-https",
            "multirootca",
            "≥ 1.3 (judged by wrk above)",
        );
        r.ratio(
            "own generator: Trellis native HTTPS / cfssl serve (HTTPS)",
            "trellis-native-https",
            "cfssl-serve",
            "≥ 1.3 (judged by wrk above)",
        );
        r.ratio(
            "own generator: Trellis CFSSL-compatible HTTPS / multirootca (same API, both HTTPS)",
            "trellis-cfssl-https",
            "multirootca",
            "≥ 1.3 (judged by wrk above)",
        );
        r.ratio(
            "own generator: Trellis native HTTPS / HTTP (cost of TLS)",
            "trellis-native-https",
            "trellis-native-http",
            "(measured)",
        );
        r.ratio(
            "own generator: Trellis native HTTPS / in-process limit",
            "trellis-native-https",
            "inprocess",
            "≥ 0.75 (judged by wrk above)",
        );
        if r.rate("trellis-native-https-nolog").is_some() {
            for (name, on) in [
                (
                    "log on / log off (Trellis native, HTTPS)",
                    "trellis-native-https",
                ),
                (
                    "log on / log off (Trellis CFSSL-compatible, HTTPS)",
                    "trellis-cfssl-https",
                ),
                (
                    "log on / log off (Trellis native, HTTP)",
                    "trellis-native-http",
                ),
                (
                    "log on / log off (Trellis CFSSL-compatible, HTTP)",
                    "trellis-cfssl-http",
                ),
            ] {
                r.ratio(name, on, &format!("{on}-nolog"), "(cost of the log)");
            }
        } else {
            r.ratios.push(Ratio {
                name: "log on / log off".into(),
                value: "log: not yet implemented".into(),
                target: "(cost of the log)".into(),
            });
        }
        // Put the lines added while measuring (p99, sidecar memory, container
        // start) last.
        for prefix in ["p99", "idle sidecar", "container start"] {
            if let Some(i) = r.ratios.iter().position(|x| x.name.starts_with(prefix)) {
                let line = r.ratios.remove(i);
                r.ratios.push(line);
            }
        }
    }
}

/// Group-commit figures from the server's own metrics after the closed-loop
/// runs: batches, mean entries per batch (one fsync and one signed tree head
/// each), mean commit time.
fn group_commit_note(
    deployment: &targets::trellis::Deployment,
    server: &targets::Server,
    scheme: &str,
) -> Option<String> {
    let url = format!("{scheme}://localhost:{}/metrics", server.addr.port());
    let out = std::process::Command::new("curl")
        .args(["-s", "--max-time", "10", "--cacert"])
        .arg(deployment.dir.path().join("classes/ca/root.pem"))
        .arg(&url)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let value = |name: &str| -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    };
    let batches = value("trellis_log_batch_entries_count")?;
    let entries = value("trellis_log_batch_entries_sum")?;
    let commit = value("trellis_log_commit_seconds_sum")?;
    if batches <= 0.0 {
        return None;
    }
    let phases: Vec<String> = ca_server::metrics::LOG_COMMIT_PHASES
        .iter()
        .filter_map(|phase| {
            let line = format!("trellis_log_commit_phase_seconds_total{{phase=\"{phase}\"}}");
            let secs = value(&line)?;
            Some(format!("{phase} {:.3} ms", secs / batches * 1000.0))
        })
        .collect();
    Some(format!(
        "Group commit ({scheme}, log on, after the closed-loop runs): {entries:.0} entries in {batches:.0} batches = {:.1} entries per fsync and signed tree head on average; mean batch commit (write, fsync with the HSM-signed head meanwhile, head record) {:.2} ms; per batch by phase: {}.",
        entries / batches,
        commit / batches * 1000.0,
        phases.join(", ")
    ))
}
