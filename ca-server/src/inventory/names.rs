//! Names as the inventory indexes and searches them: one *key* per name,
//! its kind first (`d:` DNS name or DNS-like common name, `i:` IP address,
//! `u:` URI, `c:` any other common name), DNS names with their labels
//! reversed (`pg-1.db.internal` → `d:internal.db.pg-1`), so that every name
//! under a suffix is one contiguous range of a sorted map: `*.db.internal`
//! is the prefix `d:internal.db.`.
//!
//! [`NameTable`] interns each distinct key once (shared by the sorted map
//! and the id → key table) and hands out dense `u32` ids; postings refer to
//! names by id.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::ops::Bound;
use std::sync::Arc;

/// Longest name indexed (longer ones are not indexed, and not searchable).
pub const MAX_NAME_LEN: usize = 1024;

/// What a `name=` search asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameQuery {
    /// Exactly this key.
    Exact(String),
    /// Every DNS name under this key prefix (ends with `.`).
    Suffix(String),
}

impl NameQuery {
    /// A search term: `*.suffix` is a suffix search over DNS names; an IP
    /// address, a URI (`scheme://…`) or a name matches exactly (DNS names
    /// without regard to case or a trailing dot). `None` for an empty or
    /// too long term.
    pub fn parse(term: &str) -> Option<NameQuery> {
        let term = term.trim();
        if term.is_empty() || term.len() > MAX_NAME_LEN {
            return None;
        }
        if let Some(suffix) = term.strip_prefix("*.") {
            let suffix = dns_form(suffix)?;
            return Some(NameQuery::Suffix(format!("d:{suffix}.")));
        }
        key(term).map(NameQuery::Exact)
    }

    /// Whether the name with this key matches.
    pub fn matches(&self, key: &str) -> bool {
        match self {
            NameQuery::Exact(k) => k == key,
            NameQuery::Suffix(prefix) => key.starts_with(prefix.as_str()),
        }
    }
}

/// The key of a name (a SAN or a common name), or `None` when it cannot be
/// indexed (empty, or longer than [`MAX_NAME_LEN`]).
pub fn key(name: &str) -> Option<String> {
    let name = name.trim();
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return None;
    }
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Some(format!("i:{ip}"));
    }
    if name.contains("://") {
        return Some(format!("u:{name}"));
    }
    match dns_form(name) {
        Some(reversed) => Some(format!("d:{reversed}")),
        None => Some(format!("c:{}", name.to_lowercase())),
    }
}

/// A DNS-like name, lowercased, without a trailing dot, labels reversed;
/// `None` when it holds characters no host name has (then it is a plain
/// common name).
fn dns_form(name: &str) -> Option<String> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'*'))
        || name.split('.').any(str::is_empty)
    {
        return None;
    }
    let lower = name.to_ascii_lowercase();
    Some(lower.rsplit('.').collect::<Vec<_>>().join("."))
}

/// The name a key stands for, as an operator writes it.
pub fn display(key: &str) -> String {
    match key.split_once(':') {
        Some(("d", reversed)) => reversed.rsplit('.').collect::<Vec<_>>().join("."),
        Some((_, rest)) => rest.to_string(),
        None => key.to_string(),
    }
}

/// Every distinct name key seen, with a dense id each.
#[derive(Default)]
pub struct NameTable {
    by_key: BTreeMap<Arc<str>, u32>,
    keys: Vec<Arc<str>>,
}

impl NameTable {
    /// The id of `key`, added when new; `None` when the table holds
    /// `u32::MAX` names already.
    pub fn intern(&mut self, key: &str) -> Option<u32> {
        if let Some(id) = self.by_key.get(key) {
            return Some(*id);
        }
        let id = u32::try_from(self.keys.len()).ok()?;
        let shared: Arc<str> = Arc::from(key);
        self.by_key.insert(shared.clone(), id);
        self.keys.push(shared);
        Some(id)
    }

    pub fn id(&self, key: &str) -> Option<u32> {
        self.by_key.get(key).copied()
    }

    pub fn key(&self, id: u32) -> Option<&str> {
        self.keys.get(id as usize).map(|k| &**k)
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Ids of the names a query matches, at most `max + 1` of them (so the
    /// caller can tell "more than `max`"), in key order.
    pub fn matching(&self, query: &NameQuery, max: usize) -> Vec<u32> {
        match query {
            NameQuery::Exact(k) => self.id(k).into_iter().collect(),
            NameQuery::Suffix(prefix) => self
                .by_key
                .range::<str, _>((Bound::Included(prefix.as_str()), Bound::Unbounded))
                .take_while(|(k, _)| k.starts_with(prefix.as_str()))
                .take(max.saturating_add(1))
                .map(|(_, id)| *id)
                .collect(),
        }
    }

    /// Heap bytes held, estimated (key text, the map's and the table's
    /// slots).
    pub fn heap_bytes(&self) -> usize {
        let text: usize = self.keys.iter().map(|k| k.len() + 16).sum();
        // A B-tree slot (key pointer + id) at ~2/3 fill, and the Vec slot.
        text + self.keys.len() * (24 * 3 / 2 + 16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_reverse_dns_labels_and_keep_other_kinds_apart() {
        assert_eq!(
            key("PG-1.db.internal.").as_deref(),
            Some("d:internal.db.pg-1")
        );
        assert_eq!(key("10.0.0.1").as_deref(), Some("i:10.0.0.1"));
        assert_eq!(key("::1").as_deref(), Some("i:::1"));
        assert_eq!(
            key("spiffe://trellis.internal/db/x").as_deref(),
            Some("u:spiffe://trellis.internal/db/x")
        );
        assert_eq!(key("Alice Smith").as_deref(), Some("c:alice smith"));
        assert_eq!(key(""), None);
        assert_eq!(key(&"a".repeat(MAX_NAME_LEN + 1)), None);
        assert_eq!(display("d:internal.db.pg-1"), "pg-1.db.internal");
        assert_eq!(display("i:10.0.0.1"), "10.0.0.1");
    }

    #[test]
    fn a_suffix_is_a_key_prefix_that_ends_at_a_label() {
        let q = NameQuery::parse("*.db.internal").unwrap();
        assert_eq!(q, NameQuery::Suffix("d:internal.db.".into()));
        assert!(q.matches(&key("a.db.internal").unwrap()));
        assert!(q.matches(&key("a.b.db.internal").unwrap()));
        assert!(!q.matches(&key("db.internal").unwrap()));
        assert!(!q.matches(&key("xdb.internal").unwrap()));
        assert!(!q.matches(&key("a.db.internal.evil").unwrap()));
        assert_eq!(
            NameQuery::parse("A.DB.Internal"),
            Some(NameQuery::Exact("d:internal.db.a".into()))
        );
        assert_eq!(NameQuery::parse("*."), None);
        assert_eq!(NameQuery::parse(" "), None);
    }

    #[test]
    fn the_table_finds_every_name_under_a_suffix_and_nothing_else() {
        let mut t = NameTable::default();
        for n in [
            "a.db.internal",
            "b.db.internal",
            "c.x.db.internal",
            "db.internal",
            "a.web.internal",
            "adb.internal",
        ] {
            t.intern(&key(n).unwrap()).unwrap();
        }
        assert_eq!(t.intern(&key("a.db.internal").unwrap()), Some(0));
        let q = NameQuery::parse("*.db.internal").unwrap();
        let found: Vec<String> = t
            .matching(&q, 100)
            .into_iter()
            .map(|id| display(t.key(id).unwrap()))
            .collect();
        assert_eq!(found, ["a.db.internal", "b.db.internal", "c.x.db.internal"]);
        assert_eq!(t.matching(&q, 1).len(), 2, "max + 1 tells 'more'");
        assert_eq!(t.len(), 6);
    }
}
