//! The report: one table with every configuration measured, the ratios the
//! design sets targets for, notes and failures, and the facts about the
//! machine and the run — as markdown, printed and optionally written to a
//! file (`docs/benchmarks.md` under `make bench`).

use std::fmt::Write as _;
use std::process::Command;

/// Latency percentiles in milliseconds.
#[derive(Clone, Copy, Debug)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Latency {
    /// From sorted microseconds; None when empty.
    pub fn from_sorted_us(us: &[u32]) -> Option<Latency> {
        let at = |p: f64| {
            let rank = ((p * us.len() as f64).ceil() as usize).clamp(1, us.len());
            us[rank - 1] as f64 / 1000.0
        };
        (!us.is_empty()).then(|| Latency {
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            max: at(1.0),
        })
    }
}

pub struct Row {
    /// Stable key for ratios.
    pub id: String,
    pub target: String,
    pub protocol: String,
    pub tls: &'static str,
    pub clients: String,
    pub load: String,
    /// Certificates (or signatures) per second.
    pub rate: f64,
    pub latency: Option<Latency>,
    pub errors: u64,
    pub validated: String,
}

impl Row {
    /// A row measured inside this process, without HTTP: no TLS, no
    /// latencies, no certificates kept for validation.
    pub fn in_process(
        id: &str,
        target: &str,
        protocol: &str,
        clients: String,
        load: String,
        rate: f64,
        errors: u64,
    ) -> Row {
        Row {
            id: id.into(),
            target: target.into(),
            protocol: protocol.into(),
            tls: "–",
            clients,
            load,
            rate,
            latency: None,
            errors,
            validated: "–".into(),
        }
    }
}

pub struct Ratio {
    pub name: String,
    pub value: String,
    pub target: String,
}

#[derive(Default)]
pub struct Report {
    pub rows: Vec<Row>,
    pub ratios: Vec<Ratio>,
    pub notes: Vec<String>,
    pub failures: Vec<String>,
    /// Further sections (title, markdown body), after the ratios.
    pub sections: Vec<(String, String)>,
}

impl Report {
    pub fn rate(&self, id: &str) -> Option<f64> {
        self.rows.iter().find(|r| r.id == id).map(|r| r.rate)
    }

    pub fn row(&self, id: &str) -> Option<&Row> {
        self.rows.iter().find(|r| r.id == id)
    }

    /// `a / b` as a ratio line, or why it is missing.
    pub fn ratio(&mut self, name: &str, a: &str, b: &str, target: &str) {
        let value = match (self.rate(a), self.rate(b)) {
            (Some(x), Some(y)) if y > 0.0 => format!("{:.2}", x / y),
            _ => "not measured".into(),
        };
        self.ratios.push(Ratio {
            name: name.into(),
            value,
            target: target.into(),
        });
    }

    pub fn table(&self) -> String {
        let mut s = String::from(
            "| target | protocol | TLS | clients | load | certs/s | p50 ms | p90 ms | p99 ms | max ms | errors | sample valid |\n\
             |---|---|---|---|---|---:|---:|---:|---:|---:|---:|---|\n",
        );
        for r in &self.rows {
            let ms = |f: fn(&Latency) -> f64| {
                r.latency
                    .as_ref()
                    .map_or("–".to_string(), |l| format!("{:.2}", f(l)))
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} |",
                r.target,
                r.protocol,
                r.tls,
                r.clients,
                r.load,
                r.rate,
                ms(|l| l.p50),
                ms(|l| l.p90),
                ms(|l| l.p99),
                ms(|l| l.max),
                r.errors,
                r.validated
            );
        }
        s
    }

    pub fn markdown(&self, facts: &Facts) -> String {
        let mut s = String::from("# Benchmarks\n\n");
        s.push_str(
            "Written by `ca-bench` (`make bench`); every figure below comes from the one run \
             described here, on one machine, with the same CSR set and load generator for \
             every target. Do not edit by hand: re-run `make bench`.\n\n",
        );
        s.push_str(&facts.markdown());
        s.push_str("\n## Results\n\n");
        s.push_str(&self.table());
        s.push_str("\n## Ratios\n\n| ratio | value | design target |\n|---|---:|---|\n");
        for r in &self.ratios {
            let _ = writeln!(s, "| {} | {} | {} |", r.name, r.value, r.target);
        }
        for (title, body) in &self.sections {
            let _ = write!(s, "\n## {title}\n\n{}\n", body.trim_end());
        }
        if !self.failures.is_empty() {
            s.push_str("\n## Failures\n\n");
            for f in &self.failures {
                let _ = writeln!(s, "- {f}");
            }
        }
        if !self.notes.is_empty() {
            s.push_str("\n## Notes\n\n");
            for n in &self.notes {
                let _ = writeln!(s, "- {n}");
            }
        }
        s
    }
}

/// "Where the time goes": the profile of the first Trellis wrk run (or why
/// there is none), what its thread names mean, and how to profile by hand.
pub fn profile_section(profiled: Option<Result<String, String>>) -> (String, String) {
    let measured = match profiled {
        Some(Ok(table)) => format!(
            "A system-wide `perf record -a -F 499` during that run (every process on the machine, \
             wrk included), by thread name and library:\n\n{table}\n\
             Thread names: `hsm-N` the signing pool (CSR decoding and signature check with ring's P-256, \
             policy, building, lint, and the HSM signature in SoftHSM2's libcrypto); `log-writer` the \
             group commit (tree-head signature in the HSM, write, fdatasync, proofs); `trellis-http` \
             tokio's workers (TLS, HTTP, authentication, JSON); `inventory` the console's index and \
             findings; `wrk` the load generator; `swapper` idle CPU (with 16 connections, time spent \
             waiting for the log's fdatasync shows up here).\n\n"
        ),
        Some(Err(why)) => format!("Not profiled in this run: {why}.\n\n"),
        None => String::new(),
    };
    (
        "Where the time goes".into(),
        format!(
            "{measured}{}",
            r#"To profile by hand (root, or `kernel.perf_event_paranoid` ≤ 1; `apt-get install linux-perf`):
`ca-bench wrk` prints each server's pid as it starts them and a line before each run; Trellis
(log on) is the first target of the first load (16 connections, keep-alive), so a long first
run is the one to profile:

```sh
cargo build --release -p ca-server -p ca-client -p ca-bench
target/release/ca-bench wrk --csrs 2000 --wrk-seconds 30 --wrk-warmup 0 --wrk-repeats 1 --wrk-only trellis 2>&1 | tee /tmp/wrk.log &
# wait for "wrk: Trellis, log on: pid <PID> ..." and then "wrk: running Trellis, log on (16 connections, keep-alive) ..."
perf record -F 999 -g -p <PID> -o /tmp/perf.data -- sleep 20     # add -e cpu-clock on a VM without hardware counters
perf report -i /tmp/perf.data --no-children --sort comm,dso --stdio | head -30  # per thread and library
perf report -i /tmp/perf.data --no-children --sort dso,sym --stdio | head -60   # per symbol
```

The other loads follow in the same run (64 connections, then a new TLS connection per
request), each 30 s per target with these options: wait for their "running" line to profile
them. `--children` shows which of the server's own functions the time is spent under."#
        ),
    )
}

/// What the numbers depend on.
pub struct Facts {
    pub command: String,
    pub date: String,
    pub nproc: usize,
    pub cpu: String,
    pub kernel: String,
    pub load_before: String,
    pub load_after: String,
    pub cfssl: String,
    pub softhsm: String,
    pub temp_fs: String,
    pub build: &'static str,
    pub settings: String,
}

impl Facts {
    pub fn gather(settings: String) -> Facts {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let cpu = read("/proc/cpuinfo")
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
            .unwrap_or_else(|| "unknown".into());
        let now = time::OffsetDateTime::now_utc();
        let date = now
            .replace_nanosecond(0)
            .unwrap_or(now)
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        Facts {
            command: std::env::args().collect::<Vec<_>>().join(" "),
            date,
            nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
            load_before: loadavg(),
            load_after: String::new(),
            cfssl: first_line("cfssl", &["version"]),
            softhsm: first_line("softhsm2-util", &["--version"]),
            temp_fs: first_line(
                "findmnt",
                &[
                    "-n",
                    "-o",
                    "FSTYPE,SOURCE,TARGET",
                    "--target",
                    &std::env::temp_dir().to_string_lossy(),
                ],
            ),
            build: if cfg!(debug_assertions) {
                "debug (numbers are not meaningful)"
            } else {
                "release"
            },
            settings,
        }
    }

    pub fn finish(&mut self) {
        self.load_after = loadavg();
    }

    /// The command line and the table of facts.
    pub fn markdown(&self) -> String {
        let mut s = format!("Command: `{}`\n\n", self.command);
        s.push_str("| fact | value |\n|---|---|\n");
        for (k, v) in self.rows() {
            let _ = writeln!(s, "| {k} | {v} |");
        }
        s
    }

    fn rows(&self) -> Vec<(&'static str, String)> {
        vec![
            ("date (UTC)", self.date.clone()),
            ("nproc", self.nproc.to_string()),
            ("CPU", self.cpu.clone()),
            ("kernel", self.kernel.clone()),
            (
                "load average (1/5/15 min) before → after",
                format!("{} → {}", self.load_before, self.load_after),
            ),
            ("cfssl", self.cfssl.clone()),
            ("SoftHSM2", self.softhsm.clone()),
            (
                "file system of the temporary directories (tokens, issuance log)",
                self.temp_fs.clone(),
            ),
            ("ca-bench build", self.build.to_string()),
            ("settings", self.settings.clone()),
        ]
    }
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn first_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "not found".into())
}
