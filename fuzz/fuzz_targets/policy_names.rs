//! DNS-name and URI normalisation and the shipped `db` policy's decision on
//! arbitrary names. The input is split on NUL into several strings: they
//! are the request's `hosts`, and (in a second decision) the CSR's own CN
//! and SANs.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use policies::{
    normalize_dns_name, normalize_uri, ClassPolicy, CsrFacts, Decision, DnsPattern, KeyAlgorithm,
    PolicySet, Request, SignatureAlgorithm, UriPattern,
};

fn db() -> &'static ClassPolicy {
    static SET: OnceLock<PolicySet> = OnceLock::new();
    SET.get_or_init(|| PolicySet::shipped().expect("shipped policies parse"))
        .get("db")
        .expect("db class")
}

fn names(s: &str) {
    if let Ok(n) = normalize_dns_name(s) {
        assert_eq!(normalize_dns_name(&n).as_ref(), Ok(&n), "input {s:?}");
        assert!(n.is_ascii() && n == n.to_ascii_lowercase(), "{n:?}");
        assert!(!n.ends_with('.') && n.len() <= 253, "{n:?}");
        if let Ok(p) = DnsPattern::parse(s) {
            // A pattern always matches its own normal form.
            assert!(p.matches(&n), "{p} vs {n}");
        }
    }
    if let Ok(u) = normalize_uri(s) {
        assert_eq!(normalize_uri(&u).as_ref(), Ok(&u), "input {s:?}");
        if let Ok(UriPattern::Exact(e)) = UriPattern::parse(s) {
            assert_eq!(e, u);
        }
    }
}

/// What a grant holds must be what the policy allows.
fn check_grant(policy: &ClassPolicy, d: &Decision) {
    let Decision::Grant(g) = d else {
        if let Decision::Deny(reasons) = d {
            assert!(!reasons.is_empty());
        }
        return;
    };
    assert!(g.dns_names().len() + g.ip_addrs().len() + g.uris().len() <= policy.max_sans());
    for n in g.dns_names() {
        assert_eq!(normalize_dns_name(n).as_ref(), Ok(n));
        assert!(!n.starts_with("*."), "wildcard granted: {n}");
        assert!(
            policy.dns_patterns().iter().any(|p| p.matches(n)),
            "granted {n}"
        );
    }
    for u in g.uris() {
        assert_eq!(normalize_uri(u).as_ref(), Ok(u));
        assert!(
            policy.uri_patterns().iter().any(|p| p.matches(u)),
            "granted {u}"
        );
    }
    for ip in g.ip_addrs() {
        assert!(policy.ip_cidrs().iter().any(|n| n.contains(ip)));
    }
    if let Some(cn) = g.common_name() {
        assert!(
            g.dns_names().iter().any(|n| n == cn) || g.ip_addrs().iter().any(|ip| ip.to_string() == cn),
            "CN {cn} is not a granted SAN"
        );
    }
}

/// A pattern (first string) against a name (second string): a match means
/// what the pattern documents, nothing more.
fn matching(pattern: &str, name: &str) {
    if let (Ok(p), Ok(n)) = (DnsPattern::parse(pattern), normalize_dns_name(name)) {
        if p.matches(&n) {
            match &p {
                DnsPattern::Exact(e) => assert_eq!(e, &n),
                DnsPattern::Wildcard(suffix) => {
                    let label = n
                        .strip_suffix(suffix.as_str())
                        .and_then(|h| h.strip_suffix('.'))
                        .unwrap_or_else(|| panic!("{n} matched *.{suffix}"));
                    assert!(!label.is_empty() && !label.contains('.'), "{n} vs {p}");
                }
            }
        }
    }
    if let (Ok(p), Ok(u)) = (UriPattern::parse(pattern), normalize_uri(name)) {
        if p.matches(&u) {
            match &p {
                UriPattern::Exact(e) => assert_eq!(e, &u),
                UriPattern::Prefix(prefix) => {
                    let tail = u.strip_prefix(prefix.as_str()).expect("prefix");
                    assert!(!tail.is_empty(), "{u} vs {p}");
                    assert!(!tail.contains(['?', '#', '%']), "{u} vs {p}");
                    assert!(
                        tail.split('/')
                            .all(|s| !s.is_empty() && s != "." && s != ".."),
                        "{u} vs {p}"
                    );
                }
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    names(&text);
    let parts: Vec<String> = text.split('\0').map(str::to_owned).collect();
    for p in &parts {
        names(p);
    }
    for pair in parts.windows(2) {
        matching(&pair[0], &pair[1]);
    }

    let policy = db();
    let facts = CsrFacts {
        common_name: parts.first().cloned(),
        dns_names: parts
            .iter()
            .skip(1)
            .filter(|p| !p.contains("://"))
            .cloned()
            .collect(),
        ip_addrs: parts.iter().filter_map(|p| p.parse().ok()).collect(),
        uris: parts
            .iter()
            .filter(|p| p.contains("://"))
            .cloned()
            .collect(),
        key: KeyAlgorithm::EcP256,
        signature: SignatureAlgorithm::EcdsaSha256,
        requests_ca: false,
    };
    let with_hosts = Request {
        profile: None,
        csr: &facts,
        hosts: Some(&parts),
        ttl: None,
    };
    check_grant(policy, &policy.decide(&with_hosts));
    let from_csr = Request {
        profile: Some("client"),
        csr: &facts,
        hosts: None,
        ttl: None,
    };
    check_grant(policy, &policy.decide(&from_csr));
});
