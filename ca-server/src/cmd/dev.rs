//! `ca-server dev --dir DIR`: lay out (or reuse) a development deployment
//! with `crate::dev`, create its SoftHSM2 tokens, initialise it like
//! `init`, and serve it.

use super::serve::{self, Listen};
use crate::config::{default_listen, Config};
use anyhow::Result;
use std::path::Path;

pub fn run(dir: &Path, listen: &Listen, init_only: bool) -> Result<()> {
    let default_listen = listen.address.clone().unwrap_or_else(default_listen);
    let paths = crate::dev::prepare(dir, &default_listen)?;
    let config = Config::load(&paths.config)?;
    let module = crate::admin::open_module(&config)?;
    for token in crate::dev::ensure_tokens(&paths, &module)? {
        println!(
            "created SoftHSM2 token '{token}' in {}",
            paths.dir.join("hsm").display()
        );
    }
    super::init::run(&config)?;
    if init_only {
        return Ok(());
    }
    let port = port_of(listen.address.as_deref().unwrap_or(&config.server.listen)).to_string();
    let ca_root = crate::state::StateDir::new(&config.state_dir).root_cert("ca");
    println!(
        "next, in another shell:\n  ./target/release/ca-client --once --ca https://localhost:{port} --ca-root {root} \\\n    --class db --key-id db --key-secret-file {d}/secrets/auth-db.hex --dns pg-0.db.internal --trust api --out /tmp/db-cert",
        root = ca_root.display(),
        d = paths.dir.display()
    );
    serve::run(&config, listen)
}

fn port_of(listen: &str) -> &str {
    listen.rsplit(':').next().unwrap_or("8443")
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_port_is_the_part_after_the_last_colon() {
        assert_eq!(super::port_of("127.0.0.1:8443"), "8443");
        assert_eq!(super::port_of("[::1]:9000"), "9000");
    }
}
