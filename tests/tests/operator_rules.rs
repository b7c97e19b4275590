//! The operator's alert rules and dashboard end to end (issue 17, parts 3
//! and 4): `promtool check rules` and `promtool test rules` on
//! `deploy/prometheus/` (every alert fires in one case and stays quiet in
//! another, and carries severity, summary, description and runbook); the
//! Grafana dashboard's expressions parse; and every metric that the rules
//! and the dashboard use is in a live scrape of a real `ca-server dev` or of
//! a real `ca-client` daemon, both scrapes passing `promtool check metrics`
//! and the naming conventions checked here.
//!
//! Counter families with labels appear only once something was counted, so
//! the test makes it happen for real: an issuance, a denial, a failed
//! authentication, a rate-limit refusal, a revocation and an OCSP answer;
//! HSM errors and unreadiness through the fault-injecting PKCS#11 module
//! (`tests/fault-pkcs11`, as in `hsm_faults.rs`), which also makes the
//! sidecar's first renewal fail; stopping the server makes its CRL
//! refreshes fail.
//!
//! `promtool check metrics` lints accepted: none. Both scrapes are clean
//! with promtool 2.42 (Debian 12); a new lint from a newer promtool fails
//! this test until the metric is renamed or the lint is listed in
//! [`ACCEPTED_LINTS`] with the reason. promtool does not check that a unit
//! is the name's suffix nor that a point in time is `_timestamp_seconds`;
//! [`convention_problems`] does.

use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use trellis_e2e::{bin, init_dev_with_server_settings, openssl_csr, run, text, Daemon, TestServer};

const P256: &[&str] = &["ec", "-pkeyopt", "ec_paramgen_curve:P-256"];

/// `promtool check metrics` findings tolerated, as (metric, lint text).
const ACCEPTED_LINTS: &[(&str, &str)] = &[];

/// Names that break [`convention_problems`] knowingly, with why.
const NAMING_EXCEPTIONS: &[(&str, &str)] = &[];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn prometheus_dir() -> PathBuf {
    repo().join("deploy/prometheus")
}

fn promtool() -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("promtool"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "promtool is missing: `make test` installs it (scripts/ensure-deps.sh test: \
                 Debian's prometheus package)"
            )
        })
}

// ---------------------------------------------------------------------------
// the rules and the dashboard, without a server

#[test]
fn promtool_checks_and_unit_tests_the_alert_rules() {
    let dir = prometheus_dir();
    let out = run(Command::new(promtool())
        .args(["check", "rules", "alerts.yml"])
        .current_dir(&dir));
    assert!(out.status.success(), "promtool check rules: {}", text(&out));
    let out = run(Command::new(promtool())
        .args(["test", "rules", "alerts_test.yml"])
        .current_dir(&dir));
    assert!(
        out.status.success() && text(&out).contains("SUCCESS"),
        "promtool test rules: {}",
        text(&out)
    );

    // Every alert: severity, summary, description, runbook; a firing and a
    // quiet unit test.
    let rules = std::fs::read_to_string(dir.join("alerts.yml")).unwrap();
    let alerts = alert_blocks(&rules);
    assert!(alerts.len() >= 15, "{:?}", alerts.keys());
    for (name, block) in &alerts {
        for field in ["severity:", "summary:", "description:", "runbook:"] {
            assert!(block.contains(field), "alert {name} has no {field}");
        }
        assert!(
            block.contains("severity: warning") || block.contains("severity: critical"),
            "alert {name}: severity is warning or critical"
        );
    }
    let tests = std::fs::read_to_string(dir.join("alerts_test.yml")).unwrap();
    let (firing, quiet) = unit_test_cases(&tests);
    for name in alerts.keys() {
        assert!(firing.contains(name), "no unit test where {name} fires");
        assert!(
            quiet.contains(name),
            "no unit test where {name} stays quiet"
        );
    }
    for name in firing.union(&quiet) {
        assert!(
            alerts.contains_key(name),
            "alerts_test.yml tests unknown {name}"
        );
    }
}

#[test]
fn the_dashboard_is_importable_and_its_queries_parse() {
    let dashboard = dashboard();
    let inputs = dashboard["__inputs"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        inputs
            .iter()
            .any(|i| i["name"] == "DS_PROMETHEUS" && i["pluginId"] == "prometheus"),
        "{inputs:?}"
    );
    assert!(dashboard["schemaVersion"].as_u64().unwrap_or(0) >= 36);
    assert!(dashboard["uid"].is_string() && dashboard["title"].is_string());
    // Every Prometheus datasource reference is the input variable.
    let mut sources = Vec::new();
    walk(&dashboard, &mut |key, value| {
        if key == "datasource" && value["type"] == "prometheus" {
            sources.push(value["uid"].clone());
        }
    });
    assert!(sources.len() > 20);
    assert!(
        sources.iter().all(|uid| uid == "${DS_PROMETHEUS}"),
        "{sources:?}"
    );
    // Panel ids are unique; every panel but rows has a query.
    let panels = dashboard["panels"].as_array().cloned().unwrap_or_default();
    let ids: BTreeSet<u64> = panels.iter().filter_map(|p| p["id"].as_u64()).collect();
    assert_eq!(ids.len(), panels.len(), "duplicate panel ids");
    for p in panels.iter().filter(|p| p["type"] != "row") {
        assert!(
            p["targets"].as_array().is_some_and(|t| !t.is_empty()),
            "panel {} has no query",
            p["title"]
        );
    }

    // The queries parse: promtool checks them as recording rules (with the
    // dashboard variables given plain values).
    let exprs = dashboard_queries(&dashboard);
    let tmp = tempfile::tempdir().unwrap();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, expr) in exprs
        .iter()
        .filter(|e| !e.starts_with("label_values("))
        .enumerate()
    {
        let expr = expr
            .replace("$__rate_interval", "5m")
            .replace("$instance", ".*")
            .replace("$class", ".*")
            .replace("$sidecar", ".*");
        rules.push_str(&format!(
            "      - record: dashboard:query{i}\n        expr: {}\n",
            serde_json::to_string(&expr).unwrap()
        ));
    }
    let file = tmp.path().join("dashboard-rules.yml");
    std::fs::write(&file, rules).unwrap();
    let out = run(Command::new(promtool()).args(["check", "rules"]).arg(&file));
    assert!(out.status.success(), "dashboard queries: {}", text(&out));
}

#[test]
fn metric_names_are_read_out_of_expressions() {
    let names = |e: &str| metric_names(e).into_iter().collect::<Vec<_>>();
    assert_eq!(
        names(
            r#"(a_total{role="x",key=~"y.*"} - time()) < ignoring(role, status) group_left() (2 * b_seconds)"#
        ),
        ["a_total", "b_seconds"]
    );
    assert_eq!(
        names("sum without (reason) (rate(c_total[10m])) > 3 * sum by (x) (rate(c_total[1d] offset 10m)) and d > 0.05"),
        ["c_total", "d"]
    );
    assert_eq!(
        names("histogram_quantile(0.99, sum by (le) (rate(h_seconds_bucket{i=~\"$instance\"}[$__rate_interval]))) > 1e-3"),
        ["h_seconds_bucket"]
    );
    assert_eq!(names("label_values(m_metric, class)"), ["m_metric"]);
    assert_eq!(names("count(g == 1) or vector(0)"), ["g"]);
}

// ---------------------------------------------------------------------------
// the live scrapes

#[test]
fn every_metric_the_rules_and_the_dashboard_use_is_in_a_live_scrape() {
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path();
    let (dir, real_module) = behind_fault_module(work);
    add_slow_key(&dir);
    let fault = work.join("token-gone");
    let mut server = TestServer::start_with_env(
        &dir,
        &[],
        &[
            ("TRELLIS_PKCS11_REAL_MODULE", real_module.as_str()),
            ("TRELLIS_PKCS11_FAULT_FILE", fault.to_str().unwrap()),
        ],
    );

    // Traffic for the counters that exist only once something was counted.
    let silent = TcpStream::connect(&server.addr).unwrap();
    let leaf = issue(&server, work, "leaf", "leaf.db.internal");
    let csr = openssl_csr(
        work,
        "evil",
        P256,
        "/CN=evil.example.com",
        &["-addext", "subjectAltName=DNS:evil.example.com"],
    );
    let (status, body) = server.native_sign("db", &json!({"class": "db", "csr": csr}));
    assert_eq!(status, 403, "a denial: {body}");
    let wrong = ca_proto::auth::Credentials::new("db", vec![7u8; 32]);
    let body = br#"{"class":"db","csr":"x"}"#;
    let header = ca_proto::auth::sign_request(
        &wrong,
        "POST",
        "/v1/sign",
        body,
        trellis_e2e::now_unix(),
        &ca_proto::auth::new_nonce(),
    );
    let response = server
        .client()
        .request("POST", "/v1/sign", &[("authorization", &header)], body);
    assert_eq!(response.status, 401, "{}", response.text());
    let statuses: Vec<u16> = (0..3)
        .map(|_| {
            server
                .native_sign("slow", &json!({"class": "db", "csr": "x"}))
                .0
        })
        .collect();
    assert!(statuses.contains(&429), "rate limit: {statuses:?}");
    let revoke = json!({"class": "db", "serial": leaf.serial, "reason": "superseded"});
    let bytes = serde_json::to_vec(&revoke).unwrap();
    let header = server.auth_header_for("admin", "POST", "/v1/revoke", &bytes);
    let response = server.client().request(
        "POST",
        "/v1/revoke",
        &[
            ("authorization", &header),
            ("content-type", "application/json"),
        ],
        &bytes,
    );
    assert_eq!(response.status, 200, "{}", response.text());
    ocsp(&server, work, &leaf);

    let closed = wait_until(Duration::from_secs(10), || {
        server_scrape(&server).contains("trellis_connections_closed_total{")
    });
    assert!(closed, "the silent connection was not closed");
    drop(silent);

    // The token goes away: a signature fails, the replica turns unready.
    // (The probe uses a pool thread's cached key handle, so it fails only
    // on a thread whose session a failed signature has reset: sign until
    // the scrape's probe lands on one.)
    std::fs::write(&fault, b"").unwrap();
    let mut scrape = String::new();
    let unready = wait_until(Duration::from_secs(20), || {
        let (status, body) = server.native_sign("db", &json!({"class": "db", "csr": leaf.csr}));
        assert_eq!(status, 503, "{body}");
        scrape = server_scrape(&server);
        value(&scrape, "trellis_ready") == Some(0.0)
    });
    assert!(
        unready,
        "trellis_ready stayed 1 without the token\n{scrape}"
    );
    assert!(sum(&scrape, "trellis_hsm_errors_total") >= 1.0, "{scrape}");

    // The sidecar starts meanwhile: its first renewal fails.
    let out = work.join("tls");
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let mut cmd = Command::new(bin("ca-client"));
    cmd.arg("--ca")
        .arg(server.url())
        .arg("--ca-root")
        .arg(dir.join("classes/ca/root.pem"))
        .args(["--class", "db", "--profile", "server", "--key-id", "db"])
        .arg("--key-secret-file")
        .arg(dir.join("secrets/auth-db.hex"))
        .args([
            "--dns",
            "a.db.internal",
            "--ttl",
            "1h",
            "--crl-refresh",
            "1s",
        ])
        .args(["--metrics-listen", &metrics_addr])
        .arg("--out")
        .arg(&out)
        .env_remove("RUST_LOG");
    let mut daemon = Daemon::start(cmd);
    let failed = wait_until(Duration::from_secs(60), || {
        client_scrape(&metrics_addr).contains("trellis_client_renewal_failures_total{")
    });
    assert!(failed, "no failed renewal counted\n{}", daemon.log());

    // The token is back: the sidecar gets its certificate and CRLs.
    std::fs::remove_file(&fault).unwrap();
    let installed = wait_until(Duration::from_secs(60), || {
        let page = client_scrape(&metrics_addr);
        value(&page, "trellis_client_last_success_timestamp_seconds").unwrap_or(0.0) > 0.0
            && page.contains("trellis_client_crl_next_update_timestamp_seconds{")
    });
    assert!(
        installed,
        "no certificate and CRLs after the token came back\n{}\n{}",
        client_scrape(&metrics_addr),
        daemon.log()
    );
    let server_page = server_scrape(&server);
    assert_eq!(
        value(&server_page, "trellis_ready"),
        Some(1.0),
        "{server_page}"
    );
    assert_eq!(value(&server_page, "trellis_log_healthy"), Some(1.0));
    for class in ["api", "ca", "db", "web"] {
        assert_eq!(
            value(
                &server_page,
                &format!("trellis_class_suspended{{class=\"{class}\"}}")
            ),
            Some(0.0),
            "{server_page}"
        );
        for role in ["root", "intermediate"] {
            let series = server_page
                .lines()
                .filter(|l| {
                    l.starts_with("trellis_ca_certificate_expiry_timestamp_seconds{")
                        && l.contains(&format!("class=\"{class}\""))
                        && l.contains(&format!("role=\"{role}\""))
                        && l.contains("status=\"active\"")
                })
                .count();
            assert_eq!(series, 1, "{class} {role}\n{server_page}");
        }
    }

    // The CA goes away: CRL refreshes fail.
    server.stop();
    let crl_failed = wait_until(Duration::from_secs(30), || {
        client_scrape(&metrics_addr).contains("trellis_client_crl_refresh_failures_total{")
    });
    let client_page = client_scrape(&metrics_addr);
    assert!(crl_failed, "{client_page}\n{}", daemon.log());
    let _ = daemon.terminate();

    // Conventions: promtool's lints and ours.
    for (what, page) in [("ca-server", &server_page), ("ca-client", &client_page)] {
        let lints = promtool_lints(page);
        let unexpected: Vec<&(String, String)> = lints
            .iter()
            .filter(|(metric, lint)| {
                !ACCEPTED_LINTS
                    .iter()
                    .any(|(m, l)| m == metric && lint.contains(l))
            })
            .collect();
        assert!(
            unexpected.is_empty(),
            "promtool check metrics on the {what} scrape: {unexpected:?}"
        );
        let problems = convention_problems(page);
        assert!(problems.is_empty(), "{what}: {problems:?}");
    }

    // Every metric used exists in one of the scrapes.
    let mut families = families(&server_page);
    let client_families = families_of_client(&client_page);
    for (name, kind) in client_families {
        assert!(
            families.insert(name.clone(), kind).is_none(),
            "{name} is both a server and a sidecar metric"
        );
    }
    let rules = std::fs::read_to_string(prometheus_dir().join("alerts.yml")).unwrap();
    let mut used: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (alert, expr) in alert_exprs(&rules) {
        for name in metric_names(&expr) {
            used.entry(name)
                .or_default()
                .insert(format!("alert {alert}"));
        }
    }
    let dashboard = dashboard();
    for expr in dashboard_queries(&dashboard) {
        for name in metric_names(&expr) {
            used.entry(name).or_default().insert("dashboard".into());
        }
    }
    assert!(used.len() >= 30, "{:?}", used.keys());
    let missing: Vec<String> = used
        .iter()
        .filter(|(name, _)| !exists(&families, name))
        .map(|(name, by)| format!("{name} (used by {by:?})"))
        .collect();
    assert!(
        missing.is_empty(),
        "metrics used but in neither scrape: {missing:#?}\nserver families: {:?}",
        families.keys()
    );
    eprintln!(
        "{} metrics used by the rules and the dashboard, all in live scrapes ({:.1} s)",
        used.len(),
        started.elapsed().as_secs_f64()
    );
}

// ---------------------------------------------------------------------------
// the deployment

fn behind_fault_module(work: &Path) -> (PathBuf, String) {
    let dir = work.join("var");
    // A connection that never says hello is closed after two seconds (the
    // closed-connections counter).
    init_dev_with_server_settings(&dir, "handshake_timeout_secs = 2");
    let module = trellis_e2e::build_fault_module(work);
    let path = dir.join("config.toml");
    let config = std::fs::read_to_string(&path).unwrap();
    let real_line = config
        .lines()
        .find(|l| l.starts_with("module = "))
        .unwrap()
        .to_string();
    std::fs::write(
        &path,
        config.replace(&real_line, &format!("module = \"{}\"", module.display())),
    )
    .unwrap();
    let real = real_line
        .trim_start_matches("module = ")
        .trim_matches('"')
        .to_string();
    (dir, real)
}

/// A key `slow` for class db with a burst of 1, so that its second request
/// is refused by the rate limit.
fn add_slow_key(dir: &Path) {
    use std::os::unix::fs::OpenOptionsExt;
    let secret = dir.join("secrets/auth-slow.hex");
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&secret)
        .and_then(|mut f| f.write_all(format!("{}\n", "5a".repeat(32)).as_bytes()))
        .unwrap();
    let keys = dir.join("auth-keys.toml");
    let mut text = std::fs::read_to_string(&keys).unwrap();
    text.push_str(
        "\n[[key]]\nid = \"slow\"\nsecret = \"file:secrets/auth-slow.hex\"\nclasses = [\"db\"]\n\
         profiles = [\"*\"]\nrate_per_second = 0.01\nburst = 1\n",
    );
    std::fs::write(&keys, text).unwrap();
}

struct Leaf {
    serial: String,
    csr: String,
    cert: PathBuf,
    intermediate: PathBuf,
}

fn issue(server: &TestServer, dir: &Path, name: &str, host: &str) -> Leaf {
    let csr = openssl_csr(
        dir,
        name,
        P256,
        &format!("/CN={host}"),
        &["-addext", &format!("subjectAltName=DNS:{host}")],
    );
    let (status, body) = server.native_sign("db", &json!({"class": "db", "csr": csr}));
    assert_eq!(status, 200, "{body}");
    let chain = body["chain"].as_str().unwrap_or_default();
    let second = chain
        .match_indices("-----BEGIN CERTIFICATE-----")
        .nth(1)
        .map(|(at, _)| &chain[at..])
        .unwrap_or_else(|| panic!("no intermediate in the chain: {body}"));
    let cert = dir.join(format!("{name}.pem"));
    let intermediate = dir.join(format!("{name}-int.pem"));
    std::fs::write(&cert, body["certificate"].as_str().unwrap_or_default()).unwrap();
    std::fs::write(&intermediate, second).unwrap();
    Leaf {
        serial: body["serial"].as_str().unwrap_or_default().to_string(),
        csr,
        cert,
        intermediate,
    }
}

/// One OCSP request for `leaf` (built by openssl), answered 200.
fn ocsp(server: &TestServer, dir: &Path, leaf: &Leaf) {
    let request = dir.join("leaf.ocsp-req.der");
    let out = run(Command::new("openssl")
        .args(["ocsp", "-issuer"])
        .arg(&leaf.intermediate)
        .arg("-cert")
        .arg(&leaf.cert)
        .arg("-reqout")
        .arg(&request));
    assert!(out.status.success(), "openssl ocsp: {}", text(&out));
    let body = std::fs::read(&request).unwrap();
    let response = server.client().request(
        "POST",
        "/ocsp/db",
        &[("content-type", "application/ocsp-request")],
        &body,
    );
    assert_eq!(response.status, 200, "{}", response.text());
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    cond()
}

fn server_scrape(server: &TestServer) -> String {
    let page = server.client().request("GET", "/metrics", &[], b"");
    assert_eq!(page.status, 200);
    page.text()
}

/// The sidecar's `/metrics` body (empty when it does not answer).
fn client_scrape(addr: &str) -> String {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    );
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------
// the exposition format

/// The value of the one sample `series` (a name, or a name with labels as
/// rendered).
fn value(page: &str, series: &str) -> Option<f64> {
    page.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// The sum of every sample of the family `name`.
fn sum(page: &str, name: &str) -> f64 {
    page.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Metric families of a scrape: name → type (`# TYPE` lines).
fn families(page: &str) -> BTreeMap<String, String> {
    page.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| {
            let (name, kind) = l.split_once(' ')?;
            Some((name.to_string(), kind.trim().to_string()))
        })
        .collect()
}

fn families_of_client(page: &str) -> BTreeMap<String, String> {
    let f = families(page);
    assert!(
        f.keys().all(|n| n.starts_with("trellis_client_")),
        "sidecar metrics are trellis_client_*: {:?}",
        f.keys()
    );
    f
}

/// A name an expression uses exists: a family, or a histogram's (or
/// summary's) `_bucket`/`_sum`/`_count` series.
fn exists(families: &BTreeMap<String, String>, name: &str) -> bool {
    if families.contains_key(name) {
        return true;
    }
    ["_bucket", "_sum", "_count"].iter().any(|suffix| {
        name.strip_suffix(suffix).is_some_and(|base| {
            families.get(base).is_some_and(|kind| {
                kind == "histogram" || (kind == "summary" && *suffix != "_bucket")
            })
        })
    })
}

/// `promtool check metrics` on a scrape: (metric, lint) pairs.
fn promtool_lints(page: &str) -> Vec<(String, String)> {
    let mut child = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(page.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let report = text(&out);
    let lints: Vec<(String, String)> = report
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (metric, lint) = l.trim().split_once(' ').unwrap_or((l.trim(), ""));
            (metric.to_string(), lint.to_string())
        })
        .collect();
    assert!(
        out.status.success() || !lints.is_empty(),
        "promtool check metrics failed without findings: {report}"
    );
    lints
}

/// The naming conventions promtool does not check: a unit word is the
/// name's suffix (before `_total` on counters), and a family whose help
/// says it is a Unix time is `_timestamp_seconds`.
fn convention_problems(page: &str) -> Vec<String> {
    let helps: BTreeMap<&str, &str> = page
        .lines()
        .filter_map(|l| l.strip_prefix("# HELP "))
        .filter_map(|l| l.split_once(' '))
        .collect();
    let mut problems = Vec::new();
    for (name, kind) in families(page) {
        if NAMING_EXCEPTIONS.iter().any(|(n, _)| *n == name) {
            continue;
        }
        let base = if kind == "counter" {
            name.strip_suffix("_total").unwrap_or(&name)
        } else {
            &name
        };
        for unit in ["seconds", "bytes"] {
            let words: Vec<&str> = base.split('_').collect();
            if words.contains(&unit) && words.last() != Some(&unit) {
                problems.push(format!("{name}: the unit '{unit}' is not the suffix"));
            }
        }
        let help = helps.get(name.as_str()).copied().unwrap_or_default();
        if help.contains("Unix") && !name.ends_with("_timestamp_seconds") {
            problems.push(format!(
                "{name}: a point in time (\"{help}\") is named `_timestamp_seconds`"
            ));
        }
    }
    problems
}

// ---------------------------------------------------------------------------
// alerts.yml, alerts_test.yml and the dashboard

/// Each alert's lines, by name (from its `- alert:` line to the next rule or
/// group).
fn alert_blocks(rules: &str) -> BTreeMap<String, String> {
    let mut blocks = BTreeMap::new();
    let mut current: Option<(String, String)> = None;
    for line in rules.lines() {
        let trimmed = line.trim_start();
        let starts_rule = trimmed.starts_with("- alert:")
            || trimmed.starts_with("- record:")
            || trimmed.starts_with("- name:");
        if starts_rule {
            if let Some((name, block)) = current.take() {
                blocks.insert(name, block);
            }
            if let Some(name) = trimmed.strip_prefix("- alert:") {
                current = Some((name.trim().to_string(), String::new()));
            }
        }
        if let Some((_, block)) = current.as_mut() {
            block.push_str(line);
            block.push('\n');
        }
    }
    if let Some((name, block)) = current {
        blocks.insert(name, block);
    }
    blocks
}

/// Each alert's expression (inline, or a `|`/`>` block).
fn alert_exprs(rules: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (name, block) in alert_blocks(rules) {
        let lines: Vec<&str> = block.lines().collect();
        let Some(at) = lines
            .iter()
            .position(|l| l.trim_start().starts_with("expr:"))
        else {
            panic!("alert {name} has no expr");
        };
        let indent = lines[at].len() - lines[at].trim_start().len();
        let inline = lines[at].trim_start().trim_start_matches("expr:").trim();
        let expr = if inline.starts_with('|') || inline.starts_with('>') {
            lines[at + 1..]
                .iter()
                .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > indent)
                .map(|l| l.trim())
                .collect::<Vec<_>>()
                .join(" ")
        } else {
            inline.trim_matches(|c| c == '"' || c == '\'').to_string()
        };
        out.push((name, expr));
    }
    out
}

/// Alert names with a unit test where they fire, and where they stay quiet.
fn unit_test_cases(tests: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut firing, mut quiet) = (BTreeSet::new(), BTreeSet::new());
    let mut alert: Option<String> = None;
    let mut lines = tests.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim();
        if let Some(name) = trimmed.strip_prefix("alertname:") {
            alert = Some(name.trim().to_string());
        } else if let Some(rest) = trimmed.strip_prefix("exp_alerts:") {
            let Some(name) = alert.take() else { continue };
            if rest.trim() == "[]" {
                quiet.insert(name);
            } else if lines
                .peek()
                .is_some_and(|next| next.trim_start().starts_with("- exp_labels:"))
            {
                firing.insert(name);
            }
        }
    }
    (firing, quiet)
}

fn dashboard() -> Value {
    let path = repo().join("deploy/grafana/trellis.json");
    let text = std::fs::read_to_string(&path).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Calls `f(key, value)` for every member of every object in `v`.
fn walk(v: &Value, f: &mut impl FnMut(&str, &Value)) {
    match v {
        Value::Object(map) => {
            for (k, inner) in map {
                f(k, inner);
                walk(inner, f);
            }
        }
        Value::Array(items) => items.iter().for_each(|i| walk(i, f)),
        _ => {}
    }
}

/// Every PromQL text of the dashboard: panel targets and variable queries.
fn dashboard_queries(dashboard: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk(dashboard, &mut |key, value| match (key, value) {
        ("expr", Value::String(e)) => out.push(e.clone()),
        ("query", Value::String(q)) => out.push(q.clone()),
        ("query", Value::Object(o)) => {
            if let Some(q) = o.get("query").and_then(Value::as_str) {
                out.push(q.to_string());
            }
        }
        _ => {}
    });
    out.sort();
    out.dedup();
    out
}

/// The metric names a PromQL expression (or Grafana's
/// `label_values(metric, label)`) reads: identifiers outside strings, label
/// matchers and ranges that are not functions, keywords, the label lists
/// of `by`/`without`/`on`/`ignoring`/`group_*`, numbers or durations, or
/// Grafana variables.
fn metric_names(expr: &str) -> BTreeSet<String> {
    const KEYWORDS: &[&str] = &[
        "and",
        "or",
        "unless",
        "offset",
        "bool",
        "inf",
        "nan",
        "atan2",
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    ];
    const LISTS: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let skip_to = |from: usize, close: char| {
        chars[from..]
            .iter()
            .position(|c| *c == close)
            .map_or(chars.len(), |p| from + p + 1)
    };
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            let mut j = i + 1;
            while j < chars.len() && chars[j] != c {
                j += if chars[j] == '\\' { 2 } else { 1 };
            }
            i = j + 1;
        } else if c == '{' {
            i = skip_to(i, '}');
        } else if c == '[' {
            i = skip_to(i, ']');
        } else if c == '$' {
            i += 1;
            while i < chars.len() && is_ident(chars[i]) {
                i += 1;
            }
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            while i < chars.len() && (is_ident(chars[i]) || chars[i] == '.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && is_ident(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut next = i;
            while next < chars.len() && chars[next].is_whitespace() {
                next += 1;
            }
            let call = chars.get(next) == Some(&'(');
            if call && LISTS.contains(&word.as_str()) {
                i = skip_to(next, ')');
            } else if call && word == "label_values" {
                let close = skip_to(next, ')');
                let args: String = chars[next + 1..close.saturating_sub(1)].iter().collect();
                let first = args.split(',').next().unwrap_or_default();
                names.extend(metric_names(first));
                i = close;
            } else if !call && !KEYWORDS.contains(&word.as_str()) && !LISTS.contains(&word.as_str())
            {
                names.insert(word);
            }
        } else {
            i += 1;
        }
    }
    names
}
