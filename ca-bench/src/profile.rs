//! A system-wide `perf` profile of one wrk run (the first Trellis run at
//! 16 keep-alive connections), summarised by thread and library for the
//! report's "Where the time goes". Optional: without `perf`, or without
//! the right to profile, the report says why and gives the commands.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// Lines of the summary table kept.
const TOP: usize = 18;

pub struct Profile {
    child: Child,
    data: PathBuf,
    _dir: tempfile::TempDir,
}

impl Profile {
    /// Start `perf record -a` for `seconds`; the reason when it cannot.
    pub fn start(seconds: u64) -> Result<Profile, String> {
        let dir = tempfile::Builder::new()
            .prefix("ca-bench-perf-")
            .tempdir()
            .map_err(|e| format!("temporary directory: {e}"))?;
        let data = dir.path().join("perf.data");
        let child = Command::new("perf")
            .args(["record", "-a", "-F", "499", "-o"])
            .arg(&data)
            .args(["--", "sleep", &seconds.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("perf does not run ({e}; apt-get install linux-perf)"))?;
        Ok(Profile {
            child,
            data,
            _dir: dir,
        })
    }

    /// Wait for the recording; the share of samples by thread name and
    /// library, as a markdown table.
    pub fn finish(self) -> Result<String, String> {
        let out = self
            .child
            .wait_with_output()
            .map_err(|e| format!("perf record: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "perf record failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let report = Command::new("perf")
            .args(["report", "--sort", "comm,dso", "--stdio", "-i"])
            .arg(&self.data)
            .stderr(Stdio::null())
            .output()
            .map_err(|e| format!("perf report: {e}"))?;
        let text = String::from_utf8_lossy(&report.stdout);
        let rows = parse(&text);
        if rows.is_empty() {
            return Err("perf report gave no samples".into());
        }
        let mut table =
            String::from("| share of all CPU samples | thread | library |\n|---:|---|---|\n");
        for (share, comm, dso) in rows.into_iter().take(TOP) {
            table.push_str(&format!("| {share} | {comm} | {dso} |\n"));
        }
        Ok(table)
    }
}

/// `perf report --sort comm,dso` lines: share, thread, library.
fn parse(text: &str) -> Vec<(String, String, String)> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let share = words.next().filter(|w| w.ends_with('%'))?;
            let comm = words.next()?;
            let dso = words.collect::<Vec<_>>().join(" ");
            Some((share.to_string(), comm.to_string(), dso))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn report_lines_are_split_into_share_thread_and_library() {
        let text = "# Overhead  Command  Shared Object\n#\n    12.44%  swapper          [kernel.kallsyms]\n    11.77%  hsm-1            ca-server\n\n";
        assert_eq!(
            super::parse(text),
            vec![
                (
                    "12.44%".into(),
                    "swapper".into(),
                    "[kernel.kallsyms]".into()
                ),
                ("11.77%".into(), "hsm-1".into(), "ca-server".into()),
            ]
        );
    }
}
