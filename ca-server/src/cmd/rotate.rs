//! `ca-server rotate …`: intermediate rotation (prepare, activate, retire)
//! and root rotation (root-prepare, root-activate, root-retire). Each step
//! changes the class state and then nudges a server running from the same
//! state directory with SIGHUP (it also polls every second).

use crate::admin;
use crate::config::Config;
use crate::hierarchy::{roots, rotate, ClassState};
use crate::state::StateDir;
use anyhow::Result;

/// New intermediate key in the online token, signed by the class root.
pub fn prepare(config: &Config, class: &str) -> Result<()> {
    let (state, module, _) = admin_context(config, class)?;
    let tokens = admin::admin_tokens(config, &module)?;
    let label = rotate::prepare(&state, class, &tokens, &admin::ca_shape(config)?)?;
    println!("prepared intermediate '{label}' for class '{class}'; then: ca-server rotate activate --class {class}");
    signal_server(&state);
    Ok(())
}

/// Issue from the prepared intermediate; the active one is retired.
pub fn activate(config: &Config, class: &str) -> Result<()> {
    let (state, _, _) = admin_context(config, class)?;
    let (active, retired) = rotate::activate(&state, class)?;
    println!(
        "class '{class}' now issues from '{active}'{}",
        retired
            .map(|r| format!("; '{r}' is retired"))
            .unwrap_or_default()
    );
    signal_server(&state);
    Ok(())
}

/// Root rotation, step 1: a new root cross-signed by the current one.
pub fn root_prepare(config: &Config, class: &str) -> Result<()> {
    let (state, module, _) = admin_context(config, class)?;
    let tokens = admin::admin_tokens(config, &module)?;
    let label = roots::prepare(&state, class, &tokens, &admin::ca_shape(config)?)?;
    println!("prepared root '{label}' for class '{class}', cross-signed by the current root and published in the bundle;");
    println!("wait until every peer refreshed its bundle, then: ca-server rotate root-activate --class {class}");
    signal_server(&state);
    Ok(())
}

/// Root rotation, step 2: the new root signs new intermediates.
pub fn root_activate(config: &Config, class: &str) -> Result<()> {
    let (state, _, _) = admin_context(config, class)?;
    let (new, previous) = roots::activate(&state, class)?;
    // The class's root-signed CRL comes from the root in force.
    super::revoke::sign_root_crl(config, &state, class, super::revoke::DEFAULT_ROOT_CRL_DAYS)?;
    println!("class '{class}' root is now '{new}' ('{previous}' stays in the bundle);");
    println!(
        "next: ca-server rotate prepare/activate --class {class} to move issuance under the new root"
    );
    signal_server(&state);
    Ok(())
}

/// Root rotation, step 3: the previous root leaves the bundle.
pub fn root_retire(config: &Config, class: &str) -> Result<()> {
    let (state, _, _) = admin_context(config, class)?;
    let previous = roots::retire(&state, class)?;
    println!("root '{previous}' left the bundle of class '{class}'");
    signal_server(&state);
    Ok(())
}

/// Forget retired intermediates whose leaves have all expired (and, with
/// `destroy_keys`, destroy their keys in the online token).
pub fn retire(config: &Config, class: &str, destroy_keys: bool) -> Result<()> {
    let (state, module, max_ttl) = admin_context(config, class)?;
    let record = ClassState::read(&state, class)?;
    let expired = rotate::expired_retirees(&record, max_ttl, time::OffsetDateTime::now_utc());
    if expired.is_empty() {
        println!("class '{class}': no retired intermediate whose leaves have all expired");
        return Ok(());
    }
    rotate::forget(&state, class, &expired)?;
    for label in &expired {
        if destroy_keys {
            admin::online_token(config, &module)?.destroy_key(label)?;
            println!("forgot '{label}' and destroyed its key");
        } else {
            println!("forgot '{label}' (key kept in the token; --destroy-keys removes it)");
        }
    }
    signal_server(&state);
    Ok(())
}

/// The state dir, the HSM module and the class's longest leaf TTL.
fn admin_context(
    config: &Config,
    class: &str,
) -> Result<(StateDir, hsm::Module, std::time::Duration)> {
    let policies = admin::load_policies(config)?;
    let policy = policies
        .get(class)
        .ok_or_else(|| anyhow::anyhow!("unknown class '{class}'"))?;
    let ttl = policy.max_ttl();
    Ok((
        StateDir::new(&config.state_dir),
        admin::open_module(config)?,
        ttl,
    ))
}

/// Nudge a server running from this state dir with SIGHUP. Best effort:
/// no pid file, a stale pid or no permission are all fine, since the
/// server polls the class state every second anyway.
pub(crate) fn signal_server(state: &StateDir) {
    let Ok(text) = std::fs::read_to_string(state.pid_file()) else {
        return;
    };
    if let Some(pid) = parse_pid(&text) {
        if let Err(e) = rustix::process::kill_process(pid, rustix::process::Signal::HUP) {
            tracing::debug!(event = "sighup_failed", pid = pid.as_raw_pid(), "{e}");
        }
    }
}

/// A positive pid (never 0 or negative: those would signal process groups).
fn parse_pid(text: &str) -> Option<rustix::process::Pid> {
    let pid = i32::try_from(text.trim().parse::<u32>().ok()?).ok()?;
    rustix::process::Pid::from_raw(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_positive_pids_are_signalled() {
        assert_eq!(parse_pid("1234\n").map(|p| p.as_raw_pid()), Some(1234));
        for bad in ["0", "-1", "", "12ab", "4294967295"] {
            assert!(parse_pid(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn sighup_reaches_the_process_named_by_the_pid_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let state = StateDir::new(dir.path());
        // `sleep` dies of SIGHUP (default action): the signal arrived. The
        // default is set for it: a run under `nohup` ignores SIGHUP, and
        // children inherit that.
        use std::os::unix::process::CommandExt;
        let mut command = std::process::Command::new("sleep");
        command.arg("30");
        // SAFETY: signal(2) is async-signal-safe; nothing else runs here.
        unsafe {
            command.pre_exec(|| {
                libc::signal(libc::SIGHUP, libc::SIG_DFL);
                Ok(())
            });
        }
        let mut child = command.spawn().expect("spawning sleep");
        crate::state::write_atomic(
            &state.pid_file(),
            format!("{}\n", child.id()).as_bytes(),
            0o644,
        )
        .expect("pid file");
        signal_server(&state);
        let status = child.wait().expect("waiting for sleep");
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGHUP), "{status:?}");
    }
}
