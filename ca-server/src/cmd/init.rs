//! `ca-server init`: create every class hierarchy, the log key and the
//! server's TLS certificate (idempotent), then print each class's root.

use crate::admin;
use crate::config::Config;
use crate::issue::Recorder;
use crate::state::StateDir;
use anyhow::Result;

pub fn run(config: &Config) -> Result<()> {
    let module = admin::open_module(config)?;
    let policies = admin::load_policies(config)?;
    let created = admin::init_classes(config, &module, &policies)?;
    for class in &created {
        println!("created class '{class}': root and active intermediate");
    }
    let classes: Vec<String> = policies.names().map(str::to_string).collect();
    for class in super::revoke::ensure_root_crls(config, &classes) {
        println!(
            "signed the root CRL of class '{class}' (valid {} days)",
            super::revoke::DEFAULT_ROOT_CRL_DAYS
        );
    }
    if admin::ensure_log_key(config, &module)? {
        println!(
            "created the issuance log key for log '{}'",
            config.log.log_id
        );
    }
    let authority = admin::open_authority(config, &module, policies)?;
    // Takes the log's exclusive lock: init refuses to touch a log that a
    // running server writes.
    let log = admin::open_log(config, &module)?;
    authority.set_recorder(Recorder::Log(log));
    if crate::server_cert::ensure(config, &authority)? {
        println!("issued the server's TLS certificate from class 'ca'");
    }
    let state = StateDir::new(&config.state_dir);
    for class in authority.classes() {
        println!(
            "class {:<6} root {}  bundle {}",
            class.name,
            &class.root_fingerprint[..16],
            state.root_cert(&class.name).display()
        );
    }
    authority.pool().shutdown();
    Ok(())
}
