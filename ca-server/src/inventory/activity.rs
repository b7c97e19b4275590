//! Activity over the last day, for the console's charts: per minute, the
//! entries per (class, decision), denials per reason code and requests per
//! auth key, kept for 24 hours of entry time and summed on demand. Bounded:
//! at most [`MINUTES`] buckets, each with at most [`MAX_DISTINCT`] reason
//! codes and keys (the rest counted as `(other)`).

use super::index::{decision_index, DECISIONS};
use super::query::decision_name;
use ca_proto::logentry::{LogDecision, LogEntry};
use std::collections::{BTreeMap, HashMap, VecDeque};

/// Minutes kept (a day and an hour of slack for clock skew).
pub const MINUTES: usize = 25 * 60;
/// Distinct reason codes and auth keys per minute at most.
pub const MAX_DISTINCT: usize = 256;
const OTHER: &str = "(other)";

#[derive(Default)]
struct Minute {
    at: i64,
    /// Keyed by (class, decision index: issued, denied, revoked).
    by_class: HashMap<(String, usize), u64>,
    reasons: HashMap<String, u64>,
    keys: HashMap<String, u64>,
}

fn bump(map: &mut HashMap<String, u64>, key: &str) {
    if let Some(n) = map.get_mut(key) {
        *n += 1;
    } else if map.len() < MAX_DISTINCT {
        map.insert(key.to_string(), 1);
    } else {
        *map.entry(OTHER.to_string()).or_default() += 1;
    }
}

/// The counters; see the module documentation.
#[derive(Default)]
pub struct Activity {
    minutes: VecDeque<Minute>,
    /// Entries from this number on are counted (each entry once, even when
    /// a batch is read again after the writer cut it).
    next_seq: u64,
}

/// Counts of one class.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ClassActivity {
    pub issued_hour: u64,
    pub denied_hour: u64,
    pub issued_day: u64,
    pub denied_day: u64,
    pub revoked_day: u64,
    /// (issued, denied) per hour, oldest first; the last is the current
    /// hour.
    pub hourly: [(u64, u64); 24],
}

/// What the activity page shows.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    pub classes: BTreeMap<String, ClassActivity>,
    /// Denials per reason code over the day, most first.
    pub reasons_day: Vec<(String, u64)>,
    /// Requests per auth key over the day, most first.
    pub keys_day: Vec<(String, u64)>,
}

impl Activity {
    /// Count `entry` if it is new and from the last day before `now`.
    pub fn add(&mut self, entry: &LogEntry, now: i64) {
        if entry.seq < self.next_seq {
            return;
        }
        self.next_seq = entry.seq + 1;
        let t = entry.time.unix_timestamp();
        if t < now - 86_400 || t > now + 3600 {
            return;
        }
        let at = t.div_euclid(60);
        let minute = match self.minutes.iter().rposition(|m| m.at <= at) {
            Some(i) if self.minutes[i].at == at => &mut self.minutes[i],
            found => {
                let i = found.map_or(0, |i| i + 1);
                self.minutes.insert(
                    i,
                    Minute {
                        at,
                        ..Minute::default()
                    },
                );
                &mut self.minutes[i]
            }
        };
        *minute
            .by_class
            .entry((entry.class.clone(), decision_index(entry.decision())))
            .or_default() += 1;
        if entry.decision() != LogDecision::Revoked {
            bump(&mut minute.keys, &entry.key_id);
        }
        for reason in entry.reasons() {
            bump(&mut minute.reasons, &reason.code);
        }
        while self.minutes.len() > MINUTES {
            self.minutes.pop_front();
        }
    }

    /// Drop minutes older than a day before `now`.
    pub fn prune(&mut self, now: i64) {
        let oldest = (now - 86_400).div_euclid(60);
        while self.minutes.front().is_some_and(|m| m.at < oldest) {
            self.minutes.pop_front();
        }
    }

    /// Sums over the last hour and day before `now`.
    pub fn summary(&self, now: i64) -> Summary {
        let now_min = now.div_euclid(60);
        let mut s = Summary::default();
        let mut reasons: HashMap<&str, u64> = HashMap::new();
        let mut keys: HashMap<&str, u64> = HashMap::new();
        for m in &self.minutes {
            let age = now_min - m.at;
            if !(0..1440).contains(&age) {
                continue;
            }
            let hour_slot = 23 - (age / 60) as usize;
            for ((class, decision), n) in &m.by_class {
                let c = s.classes.entry(class.clone()).or_default();
                match DECISIONS.get(*decision) {
                    Some(LogDecision::Issued) => {
                        c.issued_day += n;
                        c.hourly[hour_slot].0 += n;
                        if age < 60 {
                            c.issued_hour += n;
                        }
                    }
                    Some(LogDecision::Denied) => {
                        c.denied_day += n;
                        c.hourly[hour_slot].1 += n;
                        if age < 60 {
                            c.denied_hour += n;
                        }
                    }
                    _ => c.revoked_day += n,
                }
            }
            for (r, n) in &m.reasons {
                *reasons.entry(r).or_default() += n;
            }
            for (k, n) in &m.keys {
                *keys.entry(k).or_default() += n;
            }
        }
        let sorted = |m: HashMap<&str, u64>| {
            let mut v: Vec<(String, u64)> =
                m.into_iter().map(|(k, n)| (k.to_string(), n)).collect();
            v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            v
        };
        s.reasons_day = sorted(reasons);
        s.keys_day = sorted(keys);
        s
    }
}

/// `issued`/`denied`/`revoked`.
pub fn label(d: LogDecision) -> &'static str {
    decision_name(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(seq: u64, t: i64, class: &str, denied: bool) -> LogEntry {
        let time = ca_proto::time::Rfc3339::from_unix_timestamp(t).unwrap();
        let mut v = serde_json::json!({
            "seq": seq, "time": time.as_str(), "log_id": "t", "class": class,
            "profile": "server", "key_id": format!("k{}", seq % 2),
            "decision": "denied", "dns": ["a.db.internal"],
            "reasons": [{"code": "name_not_allowed", "detail": "x"}],
        });
        if !denied {
            v = serde_json::json!({
                "seq": seq, "time": time.as_str(), "log_id": "t", "class": class,
                "profile": "server", "key_id": "k0", "decision": "issued",
                "serial": "01", "dns": ["a.db.internal"], "not_before": time.as_str(),
                "not_after": time.as_str(), "spki_sha256": "00", "issuer": "00",
                "certificate": "AA==",
            });
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn counts_fall_into_the_hour_and_the_day() {
        let now = 1_800_000_000;
        let mut a = Activity::default();
        a.add(&entry(0, now - 30, "db", false), now);
        a.add(&entry(1, now - 2 * 3600, "db", true), now);
        a.add(&entry(2, now - 2 * 3600, "db", true), now);
        a.add(&entry(3, now - 2 * 86_400, "db", false), now); // too old
        a.add(&entry(2, now - 10, "db", true), now); // seen already
        let s = a.summary(now);
        let db = &s.classes["db"];
        assert_eq!((db.issued_hour, db.denied_hour), (1, 0));
        assert_eq!((db.issued_day, db.denied_day), (1, 2));
        assert_eq!(db.hourly[23], (1, 0));
        assert_eq!(db.hourly[21], (0, 2));
        assert_eq!(s.reasons_day, [("name_not_allowed".to_string(), 2)]);
        assert_eq!(s.keys_day[0], ("k0".to_string(), 2));
        a.prune(now + 86_400);
        assert!(a.summary(now + 86_400).classes.is_empty());
    }
}
