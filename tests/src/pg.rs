//! A throwaway PostgreSQL cluster for the mTLS tests: initdb in a temp dir
//! (as the `postgres` user when the tests run as root — PostgreSQL refuses
//! root), TLS from a `ca-client` output directory (`combined.pem` for key and
//! certificate, `trust/api.pem` as the only client CA), `cert` authentication
//! for role `api` mapped from `*.api.internal` CNs, on a loopback port.
//! [`Postgres::reload`] returns only once the server has re-read its files.

use crate::{run, text};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// How long a `pg_ctl reload` may take to be seen by new sessions.
const RELOAD_WITHIN: Duration = Duration::from_secs(20);

/// A PostgreSQL program from the installed server package.
pub fn pg_bin(name: &str) -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.flatten()
                .map(|e| e.path().join("bin").join(name))
                .filter(|p| p.exists())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
        .pop()
        .unwrap_or_else(|| panic!("PostgreSQL's {name} is not installed (make test installs it)"))
}

pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// Run a PostgreSQL server tool as `postgres` when we are root.
pub fn as_pg(tool: &Path) -> Command {
    if is_root() {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"]).arg(tool);
        cmd
    } else {
        Command::new(tool)
    }
}

/// `ca-client` flags that make the server's files readable by PostgreSQL.
pub fn owner_args() -> &'static [&'static str] {
    if is_root() {
        &["--owner", "postgres"]
    } else {
        &[]
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// A running cluster; stopped (immediate) on drop.
pub struct Postgres {
    pub data: PathBuf,
    pub port: u16,
    ctl: PathBuf,
}

impl Postgres {
    /// initdb in `dir/pgdata`, TLS from `tls_dir`, start, create role `api`.
    /// `dir` must be traversable by `postgres` (mode 0755).
    pub fn start(dir: &Path, tls_dir: &Path) -> Postgres {
        use std::os::unix::fs::PermissionsExt;
        let data = dir.join("pgdata");
        std::fs::create_dir(&data).unwrap_or_else(|e| panic!("{}: {e}", data.display()));
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap_or_default();
        if is_root() {
            assert!(
                run(Command::new("chown").arg("postgres:postgres").arg(&data))
                    .status
                    .success()
            );
        }
        let init = run(as_pg(&pg_bin("initdb"))
            .args(["-A", "trust", "-U", "postgres", "-D"])
            .arg(&data));
        assert!(init.status.success(), "initdb: {}", text(&init));
        let port = free_port();
        let conf = format!(
            "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{sock}'\nssl = on\n\
             ssl_cert_file = '{tls}/combined.pem'\nssl_key_file = '{tls}/combined.pem'\nssl_ca_file = '{tls}/trust/api.pem'\n\
             ssl_min_protocol_version = 'TLSv1.2'\nlog_connections = on\nfsync = off\n",
            sock = data.display(),
            tls = tls_dir.display()
        );
        let mut config = std::fs::read_to_string(data.join("postgresql.conf")).unwrap_or_default();
        config.push_str(&conf);
        std::fs::write(data.join("postgresql.conf"), config)
            .unwrap_or_else(|e| panic!("postgresql.conf: {e}"));
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all postgres trust\nhostssl all api 127.0.0.1/32 cert map=apitier\nhost all all 0.0.0.0/0 reject\n",
        )
        .unwrap_or_else(|e| panic!("pg_hba.conf: {e}"));
        std::fs::write(
            data.join("pg_ident.conf"),
            "apitier /^[a-z0-9-]+\\.api\\.internal$ api\n",
        )
        .unwrap_or_else(|e| panic!("pg_ident.conf: {e}"));
        let ctl = pg_bin("pg_ctl");
        let start = run(as_pg(&ctl)
            .args(["start", "-w", "-l"])
            .arg(data.join("pg.log"))
            .arg("-D")
            .arg(&data));
        let pg = Postgres { data, port, ctl };
        assert!(
            start.status.success(),
            "pg_ctl start: {}\n{}",
            text(&start),
            pg.log()
        );
        let role = run(as_pg(&pg_bin("psql"))
            .args(["-X", "-h"])
            .arg(&pg.data)
            .args([
                "-p",
                &port.to_string(),
                "-U",
                "postgres",
                "-c",
                "CREATE ROLE api LOGIN",
            ]));
        assert!(role.status.success(), "{}", text(&role));
        pg
    }

    /// `pg_ctl reload`, and wait until the postmaster has re-read the
    /// configuration and the TLS files: a new session's
    /// `pg_conf_load_time()` moves past the one before. The postmaster
    /// reloads the configuration, `pg_hba.conf` and the TLS context in one
    /// step before it accepts the next connection, so every connection
    /// made after this returns sees all of them. Panics if the TLS files
    /// or the authentication files could not be loaded (PostgreSQL then keeps
    /// the old ones).
    pub fn reload(&self) {
        let before = self.conf_load_time();
        let log_before = self.log().len();
        let out = run(as_pg(&self.ctl).args(["reload", "-D"]).arg(&self.data));
        assert!(out.status.success(), "pg_ctl reload: {}", text(&out));
        let deadline = Instant::now() + RELOAD_WITHIN;
        while self.conf_load_time() == before {
            assert!(
                Instant::now() < deadline,
                "PostgreSQL did not reload within {RELOAD_WITHIN:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20)); // poll interval
        }
        let log = self.log();
        let since = log.get(log_before..).unwrap_or(&log);
        for refused in [
            "SSL configuration was not reloaded",
            "pg_hba.conf was not reloaded",
            "pg_ident.conf was not reloaded",
        ] {
            assert!(
                !since.contains(refused),
                "PostgreSQL kept its old files ({refused}):\n{since}"
            );
        }
    }

    /// `pg_conf_load_time()` as a new session (over the Unix socket) sees it:
    /// when the postmaster last loaded its configuration.
    fn conf_load_time(&self) -> String {
        let out = run(as_pg(&pg_bin("psql"))
            .args(["-X", "-A", "-t", "-h"])
            .arg(&self.data)
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-c",
                "SELECT pg_conf_load_time()",
            ]));
        assert!(out.status.success(), "pg_conf_load_time(): {}", text(&out));
        let time = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(!time.is_empty(), "pg_conf_load_time() returned nothing");
        time
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.data.join("pg.log")).unwrap_or_default()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = as_pg(&self.ctl)
            .args(["stop", "-m", "immediate", "-D"])
            .arg(&self.data)
            .output();
    }
}

/// A `ca-client` daemon beside PostgreSQL, stopped with SIGTERM (and
/// reaped) when dropped.
pub struct Sidecar(pub Child);

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}
