//! Container start: N `ca-client --once` processes (init containers)
//! started at the same moment against one Trellis server (HTTPS, issuance
//! log on, the deployment's `db` key). Each process generates its key,
//! opens its own TLS connection, gets a certificate for its own name
//! (`start-<i>.db.internal`), checks the log evidence and the chain, writes
//! its files and exits. Measured per process: the wall time from just
//! before its spawn to its exit (as the parent sees it); and the total, from
//! the first spawn to the last exit. A process counts as started only when
//! it exited 0 and its `cert.pem` exists. Target (issue 16): p99 ≤ 50 ms.

use crate::report::{Latency, Ratio, Row};
use crate::targets::trellis::Deployment;
use crate::targets::{log_file, log_tail};
use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The target for the slowest 1% of starts.
pub const TARGET_P99_MS: f64 = 50.0;
/// A process that has not exited by then is killed and counted as failed.
const PROCESS_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Args, Clone, Debug)]
pub struct ContainerOpts {
    /// `ca-client --once` processes started at once (container start).
    #[arg(long, default_value_t = 200)]
    pub containers: usize,
}

pub struct Starts {
    /// Wall times of the processes that succeeded, sorted, microseconds.
    pub walls_us: Vec<u32>,
    pub failures: usize,
    pub first_failure: Option<String>,
    /// First spawn to last exit.
    pub total: Duration,
    /// First spawn to last spawn.
    pub spawn_spread: Duration,
    /// Wall times of [`ALONE`] starts one after another (before the
    /// concurrent ones), sorted, microseconds.
    pub alone_us: Vec<u32>,
    /// CPU (user + system) of the concurrent processes together, and of
    /// the server meanwhile.
    pub clients_cpu: Option<Duration>,
    pub server_cpu: Option<Duration>,
}

impl Starts {
    /// The least time from the first spawn to the last exit on `cores`:
    /// all the CPU the processes and the server used, over every core.
    pub fn cpu_bound(&self, cores: usize) -> Option<Duration> {
        Some((self.clients_cpu? + self.server_cpu?) / cores.max(1) as u32)
    }
}

/// Sequential starts measured before the concurrent ones.
const ALONE: usize = 5;

/// utime + stime (`first` = the index of utime among the fields after the
/// command name: 11 for a process's own, 13 for its waited-for children)
/// of a `/proc/<pid>/stat` file, in clock ticks.
pub(crate) fn cpu_ticks(path: &str, first: usize) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let fields: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
    Some(fields.get(first)?.parse::<u64>().ok()? + fields.get(first + 1)?.parse::<u64>().ok()?)
}

/// Clock ticks (`getconf CLK_TCK`, 100 on Linux) as a duration.
pub(crate) fn ticks(n: u64) -> Duration {
    Duration::from_millis(n * 10)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Start a server from `deployment` and `n` `ca-client --once` against it.
pub fn measure(ca_client: &Path, deployment: &Deployment, n: usize) -> Result<Starts> {
    if !ca_client.exists() {
        bail!(
            "{} is missing: build it (cargo build --release -p ca-client) or give --ca-client",
            ca_client.display()
        );
    }
    let mut server = deployment.start(false, &[])?;
    let dir = deployment.dir.path();
    let work = tempfile::Builder::new()
        .prefix("ca-bench-containers-")
        .tempdir()?;
    let url = format!("https://localhost:{}", server.addr.port());
    let command = |name: String| -> Result<Command> {
        let mut c = Command::new(ca_client);
        c.env_remove("RUST_LOG")
            .env_remove("CA_CLIENT_CONFIG")
            .arg("--once")
            .args(["--ca", &url])
            .arg("--ca-root")
            .arg(dir.join("classes/ca/root.pem"))
            .args(["--class", "db", "--profile", "server", "--key-id", "db"])
            .arg("--key-secret-file")
            .arg(dir.join("secrets/auth-db.hex"))
            .args(["--dns", &format!("{name}.db.internal")])
            .arg("--out")
            .arg(work.path().join(&name))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file(&work.path().join(format!("{name}.log")))?);
        Ok(c)
    };
    // One process at a time first: the start without contention.
    let mut alone_us = Vec::with_capacity(ALONE);
    for i in 0..ALONE {
        let name = format!("alone-{i}");
        let mut c = command(name.clone())?;
        let start = Instant::now();
        let status = c.status().context("running ca-client")?;
        if !status.success() {
            bail!(
                "ca-client --once alone exited {status}: {}",
                log_tail(&work.path().join(format!("{name}.log")), 2)
            );
        }
        alone_us.push(start.elapsed().as_micros().min(u32::MAX as u128) as u32);
    }
    alone_us.sort_unstable();
    let commands = (0..n)
        .map(|i| command(format!("start-{i}")))
        .collect::<Result<Vec<_>>>()?;
    let server_cpu_before = cpu_ticks(&format!("/proc/{}/stat", server._guard.pid()), 11);
    let children_cpu_before = cpu_ticks("/proc/self/stat", 13);
    let barrier = Arc::new(Barrier::new(n + 1));
    // The pid of each running child (None before its spawn and once
    // reaped), for the watchdog below.
    let running: Arc<Mutex<Vec<Option<u32>>>> = Arc::new(Mutex::new(vec![None; n]));
    let finished = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = commands
        .into_iter()
        .enumerate()
        .map(|(i, mut command)| {
            let (barrier, running, finished) = (barrier.clone(), running.clone(), finished.clone());
            std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || -> (usize, Instant, Instant, Result<()>) {
                    barrier.wait();
                    let start = Instant::now();
                    let outcome = (|| {
                        let mut child = command.spawn().context("spawn")?;
                        lock(&running)[i] = Some(child.id());
                        let status = child.wait();
                        lock(&running)[i] = None;
                        let status = status?;
                        if !status.success() {
                            bail!("exited {status}");
                        }
                        Ok(())
                    })();
                    let end = Instant::now();
                    finished.fetch_add(1, Ordering::Relaxed);
                    (i, start, end, outcome)
                })
                .context("thread")
        })
        .collect::<Result<_>>()?;
    barrier.wait();
    // Watchdog: a process still running after PROCESS_TIMEOUT is killed
    // (and then fails).
    let deadline = Instant::now() + PROCESS_TIMEOUT;
    while finished.load(Ordering::Relaxed) < n {
        if Instant::now() > deadline {
            for pid in lock(&running).iter().flatten() {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut results = Vec::with_capacity(n);
    for t in threads {
        results.push(
            t.join()
                .map_err(|_| anyhow::anyhow!("a start thread panicked"))?,
        );
    }
    server._guard.check_alive()?;
    let server_cpu = cpu_ticks(&format!("/proc/{}/stat", server._guard.pid()), 11)
        .zip(server_cpu_before)
        .map(|(a, b)| ticks(a.saturating_sub(b)));
    let clients_cpu = cpu_ticks("/proc/self/stat", 13)
        .zip(children_cpu_before)
        .map(|(a, b)| ticks(a.saturating_sub(b)));
    let first = results.iter().map(|r| r.1).min().context("no process")?;
    let last_spawn = results.iter().map(|r| r.1).max().unwrap_or(first);
    let last = results.iter().map(|r| r.2).max().unwrap_or(first);
    let mut starts = Starts {
        walls_us: Vec::with_capacity(n),
        failures: 0,
        first_failure: None,
        total: last - first,
        spawn_spread: last_spawn - first,
        alone_us,
        clients_cpu,
        server_cpu,
    };
    for (i, start, end, outcome) in results {
        let outcome = outcome.and_then(|()| {
            let cert = work.path().join(format!("start-{i}/cert.pem"));
            if cert.exists() {
                Ok(())
            } else {
                bail!("exited 0 but wrote no {}", cert.display())
            }
        });
        match outcome {
            Ok(()) => starts
                .walls_us
                .push((end - start).as_micros().min(u32::MAX as u128) as u32),
            Err(e) => {
                starts.failures += 1;
                starts.first_failure.get_or_insert_with(|| {
                    format!(
                        "ca-client {i}: {e:#}: {}",
                        log_tail(&work.path().join(format!("start-{i}.log")), 2)
                    )
                });
            }
        }
    }
    starts.walls_us.sort_unstable();
    Ok(starts)
}

impl crate::Bench {
    /// The container-start run, as a row and a ratio line.
    pub(crate) fn containers(&mut self, deployment: &Deployment) {
        let n = self.opts.containers.containers;
        eprintln!("container start: {n} concurrent ca-client --once ...");
        let starts = match measure(&self.ca_client, deployment, n) {
            Ok(s) => s,
            Err(e) => return self.fail(format!("container start: {e:#}")),
        };
        let ok = starts.walls_us.len();
        let latency = Latency::from_sorted_us(&starts.walls_us);
        eprintln!(
            "  {ok}/{n} started; p50 {} ms, p99 {} ms; total {:.0} ms",
            latency.map_or("–".into(), |l| format!("{:.1}", l.p50)),
            latency.map_or("–".into(), |l| format!("{:.1}", l.p99)),
            starts.total.as_secs_f64() * 1e3
        );
        if let Some(f) = &starts.first_failure {
            self.fail(format!(
                "container start: {} of {n} failed; first: {f}",
                starts.failures
            ));
        }
        self.report.rows.push(Row {
            id: "containers".into(),
            target: "Trellis, log on: container start (`ca-client --once`)".into(),
            protocol: "native /v1/sign (ca-client)".into(),
            tls: "yes",
            clients: format!("{n} processes"),
            load: "all started at once; latency = wall time per process".into(),
            rate: ok as f64 / starts.total.as_secs_f64().max(1e-9),
            latency,
            errors: starts.failures as u64,
            validated: format!("{ok}/{n}"),
        });
        let alone = Latency::from_sorted_us(&starts.alone_us);
        let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
        let ms = |d: Option<Duration>| {
            d.map_or("–".to_string(), |d| {
                format!("{:.0} ms", d.as_secs_f64() * 1e3)
            })
        };
        let per = |d: Option<Duration>| {
            d.map_or("–".to_string(), |d| {
                format!("{:.1} ms", d.as_secs_f64() * 1e3 / n as f64)
            })
        };
        self.report.ratios.push(Ratio {
            name: format!("container start: p99 wall time of {n} concurrent `ca-client --once`"),
            value: match latency {
                Some(l) if starts.failures == 0 => format!(
                    "{:.1} ms (p50 {:.1} ms, max {:.1} ms; all {n} done in {:.0} ms; one start \
                     alone {}; CPU floor of the total {})",
                    l.p99,
                    l.p50,
                    l.max,
                    starts.total.as_secs_f64() * 1e3,
                    alone.map_or("–".into(), |l| format!("{:.1} ms", l.p50)),
                    ms(starts.cpu_bound(cores)),
                ),
                Some(l) => format!(
                    "{:.1} ms of the {ok} that started ({} failed)",
                    l.p99, starts.failures
                ),
                None => "none started".into(),
            },
            target: format!("≤ {TARGET_P99_MS:.0} ms"),
        });
        self.report.notes.push(format!(
            "Container start: {n} `ca-client --once` processes (each: P-256 key generation, a new \
             TLS connection, issuance, log evidence and chain checks, files written) spawned at \
             once by as many waiting threads (the last spawn {:.1} ms after the first), against one \
             Trellis server (HTTPS, log on); wall time per process from just before its spawn to \
             its exit; the certs/s of that row is started processes / total time.",
            starts.spawn_spread.as_secs_f64() * 1e3
        ));
        self.report.notes.push(format!(
            "Container start, CPU: the {n} processes used {} of CPU ({} each), the server {} \
             ({} per start); on {cores} cores the last of them cannot exit sooner than {} after \
             the first spawn (all that CPU over every core; they were all spawned within {:.0} \
             ms), whatever the schedule. One start alone (median of {ALONE} one after another, \
             before the concurrent run): {}.",
            ms(starts.clients_cpu),
            per(starts.clients_cpu),
            ms(starts.server_cpu),
            per(starts.server_cpu),
            ms(starts.cpu_bound(cores)),
            starts.spawn_spread.as_secs_f64() * 1e3,
            alone.map_or("–".into(), |l| format!("{:.1} ms", l.p50)),
        ));
    }
}
