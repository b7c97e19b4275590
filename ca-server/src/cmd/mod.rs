//! The bodies of the `ca-server` subcommands, one module per command
//! group. `main.rs` holds only the command line (clap definitions) and
//! dispatches here, so tests can drive the very code the binary runs.
//!
//! A command that succeeds may still end with a non-zero exit status that
//! carries meaning (`hsm check` found something unfit, `policy check` would
//! deny, `log monitor` found failures): it returns that as [`Exit`].

pub mod dev;
pub mod hsm;
pub mod init;
pub mod log;
pub mod policy;
pub mod revoke;
pub mod rotate;
pub mod serve;
pub mod status;

/// How a command that ran to completion ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Exit status 0.
    Success,
    /// `hsm check`: a token or key is unfit (exit status 1).
    Unfit,
    /// `policy check`: policy would deny the request (exit status 2).
    Denied,
    /// `log monitor`: at least one finding is a failure (exit status 3).
    Findings,
}

impl Exit {
    /// The process exit status.
    pub fn code(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::Unfit => 1,
            Exit::Denied => 2,
            Exit::Findings => 3,
        }
    }
}

/// Tracing on stderr: text (coloured on a terminal) or JSON lines;
/// `RUST_LOG` filters, `info` by default. Lines go through
/// [`crate::stderr`]'s buffer: keep the handle until the command is done,
/// and drop it before anything else is printed, to keep the order.
pub fn init_logging(json: bool) -> Option<crate::stderr::Diagnostics> {
    use tracing_subscriber::fmt::writer::BoxMakeWriter;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let diagnostics = crate::stderr::Diagnostics::start(std::io::stderr(), crate::stderr::EVERY);
    let writer = match &diagnostics {
        Ok(d) => BoxMakeWriter::new(d.lines()),
        // No thread for it: write each line as it comes.
        Err(_) => BoxMakeWriter::new(std::io::stderr),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer);
    if json {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
    diagnostics.ok()
}
