//! Policy files: every shipped file parses into what it says, and invalid
//! files are rejected with the right file and line.

use std::time::Duration;

use policies::{
    load_dir, ClassPolicy, CommonNameRule, ExtKeyUsage, PolicyError, PolicySet, SHIPPED,
};

const GOOD: &str = r#"
description = "test"
default_profile = "server"

[names]
dns = ["*.db.internal", "db.internal"]
ip_cidrs = ["10.0.0.0/8"]
uris = ["spiffe://trellis.internal/db/*"]

[profiles.server]
key_usages = ["digital_signature"]
ext_key_usages = ["server_auth"]
default_ttl = "24h"
max_ttl = "72h"
"#;

/// GOOD with the first occurrence of `from` replaced by `to`.
fn variant(from: &str, to: &str) -> String {
    assert!(GOOD.contains(from), "{from:?} not in GOOD");
    GOOD.replacen(from, to, 1)
}

fn err(text: &str) -> PolicyError {
    match ClassPolicy::parse("db", "classes/db.toml", text) {
        Ok(p) => panic!("accepted: {p:?}"),
        Err(e) => e,
    }
}

/// Asserts the error points at `line` and mentions `needle`.
fn assert_err(text: &str, line: usize, needle: &str) {
    let e = err(text);
    let shown = e.to_string();
    assert_eq!(e.line(), Some(line), "{shown}");
    assert!(
        shown.starts_with(&format!("classes/db.toml:{line}:")),
        "{shown}"
    );
    assert!(shown.contains(needle), "{shown} lacks {needle:?}");
}

#[test]
fn every_shipped_policy_parses() {
    let names: Vec<&str> = SHIPPED.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, ["api", "ca", "db", "web"]);
    let set = PolicySet::shipped().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(set.names().collect::<Vec<_>>(), names);
    for class in ["api", "db", "web"] {
        let p = set.get(class).unwrap_or_else(|| panic!("{class}"));
        let profiles: Vec<&str> = p.profiles().map(|(n, _)| n).collect();
        assert_eq!(profiles, ["client", "peer", "server"], "{class}");
        assert_eq!(p.default_profile(), "server");
        assert!(p.ip_cidrs().is_empty(), "{class}");
        assert_eq!(p.common_name_rule(), CommonNameRule::MustBeSan);
        let pats: Vec<String> = p.dns_patterns().iter().map(|d| d.to_string()).collect();
        assert_eq!(
            pats,
            [format!("*.{class}.internal"), format!("{class}.internal")]
        );
        let peer = p.profile("peer").unwrap_or_else(|| panic!("peer"));
        assert_eq!(
            peer.ext_key_usages,
            [ExtKeyUsage::ServerAuth, ExtKeyUsage::ClientAuth]
        );
        assert_eq!(p.max_ttl(), Duration::from_secs(72 * 3600));
    }
    let ca = set.get("ca").unwrap_or_else(|| panic!("ca"));
    assert_eq!(
        ca.profiles().map(|(n, _)| n).collect::<Vec<_>>(),
        ["server"]
    );
    assert_eq!(ca.common_name_rule(), CommonNameRule::AnyAllowedName);
    assert_eq!(ca.ip_cidrs().len(), 2);
    assert_eq!(ca.max_ttl(), Duration::from_secs(90 * 86_400));
    let server = ca.profile("server").unwrap_or_else(|| panic!("server"));
    assert_eq!(server.default_ttl, Duration::from_secs(30 * 86_400));
}

#[test]
fn good_policy_parses() {
    let p = ClassPolicy::parse("db", "classes/db.toml", GOOD).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(p.name, "db");
    assert_eq!(p.max_sans(), 10);
    assert_eq!(p.rsa_min_bits(), 2048);
    assert_eq!(p.signature_algorithms().len(), 10);
}

#[test]
fn unknown_field_is_reported_with_line_and_column() {
    let e = err(&variant("dns = ", "dns_patern = "));
    assert_eq!(e.to_string(), "classes/db.toml:6:1: unknown field `dns_patern`, expected one of `dns`, `allow_wildcard_certs`, `ip_cidrs`, `uris`, `common_name`, `max_sans`");
    assert_err(&variant("max_ttl", "max_tl"), 14, "unknown field `max_tl`");
    assert_err(&variant("description", "descripton"), 2, "unknown field");
}

#[test]
fn syntax_and_type_errors_have_lines() {
    assert_err(&variant("[names]", "[names"), 5, "");
    assert_err(
        &variant("\"server_auth\"", "\"key_cert_sign\""),
        12,
        "unknown variant `key_cert_sign`",
    );
    assert_err(
        &variant("\"digital_signature\"", "\"key_cert_sign\""),
        11,
        "unknown variant",
    );
    assert_err(
        &variant("[names]", "[names]\ncommon_name = \"whatever\""),
        6,
        "unknown variant",
    );
    assert_err(
        &variant(
            "[names]",
            "[keys]\nsignature_algorithms = [\"sha1-rsa\"]\n[names]",
        ),
        6,
        "unknown signature algorithm",
    );
    assert_err(
        &variant("[names]", "[keys]\nallowed = [\"ec-p192\"]\n[names]"),
        6,
        "unknown variant",
    );
    assert_err(&variant("[names]", "[names]\nmax_sans = -1"), 6, "");
}

/// Errors inside multi-line arrays of a real shipped file point at the element's line.
#[test]
fn errors_in_shipped_file_point_at_the_element() {
    let db = SHIPPED
        .iter()
        .find(|(n, _)| *n == "db")
        .map(|(_, t)| *t)
        .unwrap_or_default();
    let line_of = |needle: &str| {
        db.lines()
            .position(|l| l.contains(needle) && !l.trim_start().starts_with('#'))
            .map(|i| i + 1)
            .unwrap_or_else(|| panic!("{needle:?} not in db.toml"))
    };
    let check = |from: &str, to: &str, needle: &str| {
        let line = line_of(from);
        let text = db.replace(from, to);
        let e = ClassPolicy::parse("db", "classes/db.toml", &text).err();
        let shown = e.as_ref().map(|e| e.to_string()).unwrap_or_default();
        assert_eq!(e.and_then(|e| e.line()), Some(line), "{shown}");
        assert!(shown.contains(needle), "{shown}");
    };
    check(
        "\"rsa-pss-sha512\",",
        "\"sha1WithRSAEncryption\",",
        "unknown signature algorithm",
    );
    check("\"rsa-pkcs1-sha256\",", "\"ecdsa-sha256\",", "duplicate");
    check(
        "\"*.db.internal\", \"db.internal\"",
        "\"*.db.internal\", \"db.*.internal\"",
        "invalid DNS pattern",
    );
    check("max_sans = 10", "max_sans = 0", "max_sans");
    check("dns = [", "dns_patern = [", "unknown field `dns_patern`");
}

#[test]
fn invalid_values_are_reported_with_line() {
    assert_err(&variant("10.0.0.0/8", "10.0.0.0/33"), 7, "invalid CIDR");
    assert_err(&variant("10.0.0.0/8", "not-a-cidr"), 7, "invalid CIDR");
    assert_err(&variant("10.0.0.0/8", "10.0.0.1/8"), 7, "host bits");
    assert_err(
        &variant("\"*.db.internal\"", "\"*foo.x\""),
        6,
        "invalid DNS pattern",
    );
    assert_err(
        &variant("\"*.db.internal\"", "\"a.*.b\""),
        6,
        "invalid DNS pattern",
    );
    assert_err(
        &variant("\"*.db.internal\"", "\"db.internal\""),
        6,
        "duplicate",
    );
    assert_err(
        &variant("trellis.internal/db/*", "trellis.internal/*/db"),
        8,
        "invalid URI pattern",
    );
    assert_err(
        &variant("default_ttl = \"24h\"", "default_ttl = \"96h\""),
        13,
        "longer than max_ttl",
    );
    assert_err(
        &variant("default_ttl = \"24h\"", "default_ttl = \"0s\""),
        13,
        "greater than zero",
    );
    assert_err(
        &variant("default_ttl = \"24h\"", "default_ttl = \"30s\""),
        13,
        "at least",
    );
    assert_err(
        &variant("max_ttl = \"72h\"", "max_ttl = \"72\""),
        14,
        "invalid duration",
    );
    assert_err(
        &variant("max_ttl = \"72h\"", "max_ttl = \"400d\""),
        14,
        "at most",
    );
    assert_err(
        &variant("default_profile = \"server\"", "default_profile = \"srv\""),
        3,
        "not defined",
    );
    assert_err(&variant("[names]", "[names]\nmax_sans = 0"), 6, "max_sans");
    assert_err(
        &variant("[names]", "[keys]\nrsa_min_bits = 1024\n[names]"),
        6,
        "rsa_min_bits",
    );
    assert_err(
        &variant("[names]", "[keys]\nallowed = []\n[names]"),
        6,
        "must not be empty",
    );
    assert_err(&variant("[\"server_auth\"]", "[]"), 12, "must not be empty");
    assert_err(
        &variant("[\"server_auth\"]", "[\"server_auth\", \"server_auth\"]"),
        12,
        "duplicate",
    );
    assert_err(
        &variant("[profiles.server]", "[profiles.Server]"),
        10,
        "profile name",
    );
}

#[test]
fn missing_pieces_and_bad_class_names() {
    let e = err("default_profile = \"server\"\n");
    assert!(e.to_string().contains("profiles"), "{e}");
    let e = err(&GOOD.replace("default_profile = \"server\"\n", ""));
    assert!(e.to_string().contains("default_profile"), "{e}");
    for bad in ["DB", "", "a_b", &"x".repeat(33)] {
        let e = ClassPolicy::parse(bad, "f.toml", GOOD).err();
        assert!(
            matches!(e, Some(PolicyError::Invalid { line: None, .. })),
            "{bad:?}: {e:?}"
        );
    }
}

#[test]
fn load_dir_reads_toml_files_by_stem() {
    let dir = std::env::temp_dir().join(format!("trellis-policies-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let write = |name: &str, text: &str| {
        std::fs::write(dir.join(name), text).unwrap_or_else(|e| panic!("{e}"));
    };
    for (class, text) in SHIPPED {
        write(&format!("{class}.toml"), text);
    }
    write("README.md", "not a policy");
    write(".db.toml.swp", "junk");
    let set = load_dir(&dir).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(set.names().collect::<Vec<_>>(), ["api", "ca", "db", "web"]);
    assert_eq!(set, PolicySet::shipped().unwrap_or_else(|e| panic!("{e}")));

    write("Bad_Name.toml", GOOD);
    let e = load_dir(&dir).err();
    assert!(matches!(e, Some(PolicyError::Invalid { .. })), "{e:?}");
    std::fs::remove_file(dir.join("Bad_Name.toml")).unwrap_or_else(|e| panic!("{e}"));

    write("zz.toml", &variant("10.0.0.0/8", "10.0.0.0/40"));
    let e = load_dir(&dir)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains("zz.toml:7: invalid CIDR"), "{e}");

    let _ = std::fs::remove_dir_all(&dir);
    assert!(matches!(load_dir(&dir), Err(PolicyError::Io { .. })));
}

#[test]
fn crl_url_is_an_http_url_and_reaches_the_policy() {
    let none = ClassPolicy::parse("db", "classes/db.toml", GOOD).unwrap();
    assert_eq!(none.crl_url(), None);
    let with = variant(
        "description = \"test\"",
        "description = \"test\"\ncrl_url = \"https://ca.internal:8443/v1/classes/db/crl/\"",
    );
    let p = ClassPolicy::parse("db", "classes/db.toml", &with).unwrap();
    assert_eq!(
        p.crl_url(),
        Some("https://ca.internal:8443/v1/classes/db/crl")
    );
    for bad in [
        "ftp://x/crl",
        "https://a b/crl",
        "crl",
        "https://é.example/crl",
    ] {
        let text = variant(
            "description = \"test\"",
            &format!("description = \"test\"\ncrl_url = \"{bad}\""),
        );
        assert_err(&text, 3, "crl_url must be an http:// or https:// URL");
    }
}
