//! The monitor's counts as a Prometheus text-format file (for
//! node_exporter's textfile collector), rendered by the `prometheus`
//! crate's `TextEncoder` from a registry of its own.

use super::monitor::{FindingKind, Tally};
use prometheus::{Encoder, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};

pub struct MonitorMetrics {
    registry: Registry,
    findings: IntGaugeVec,
    checked: IntGauge,
}

impl MonitorMetrics {
    pub fn new() -> prometheus::Result<MonitorMetrics> {
        let registry = Registry::new_custom(Some("trellis_monitor".into()), None)?;
        let findings = IntGaugeVec::new(
            Opts::new("findings", "Findings of the issuance-log monitor by kind"),
            &["kind"],
        )?;
        let checked = IntGauge::new(
            "entries_checked",
            "Issuance-log entries the monitor has checked",
        )?;
        registry.register(Box::new(findings.clone()))?;
        registry.register(Box::new(checked.clone()))?;
        Ok(MonitorMetrics {
            registry,
            findings,
            checked,
        })
    }

    /// The file's contents for these counts (every kind, zeros included).
    pub fn render(&self, tally: &Tally) -> prometheus::Result<Vec<u8>> {
        for kind in FindingKind::ALL {
            self.findings
                .with_label_values(&[kind.as_str()])
                .set(i64::try_from(tally.count(kind)).unwrap_or(i64::MAX));
        }
        self.checked
            .set(i64::try_from(tally.checked).unwrap_or(i64::MAX));
        let mut out = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::monitor::Finding;

    #[test]
    fn every_kind_is_rendered_with_its_count() {
        let mut tally = Tally::default();
        tally.checked = 7;
        for kind in [
            FindingKind::IpSan,
            FindingKind::IpSan,
            FindingKind::BadEntry,
        ] {
            tally.add(&Finding {
                kind,
                seq: 0,
                class: "db".into(),
                serial: None,
                detail: String::new(),
            });
        }
        let text = String::from_utf8(MonitorMetrics::new().unwrap().render(&tally).unwrap())
            .expect("text format is UTF-8");
        for line in [
            "# TYPE trellis_monitor_findings gauge",
            "trellis_monitor_findings{kind=\"ip_san\"} 2",
            "trellis_monitor_findings{kind=\"bad_entry\"} 1",
            "trellis_monitor_findings{kind=\"policy_violation\"} 0",
            "trellis_monitor_findings{kind=\"unknown_issuer\"} 0",
            "trellis_monitor_findings{kind=\"entry_mismatch\"} 0",
            "trellis_monitor_entries_checked 7",
        ] {
            assert!(text.lines().any(|l| l == line), "no '{line}' in:\n{text}");
        }
        assert_eq!(tally.failures(), 1);
    }
}
