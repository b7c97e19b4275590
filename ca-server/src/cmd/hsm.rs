//! `ca-server hsm check`: what the configured HSM offers and what Trellis
//! makes of it, for an operator bringing up a new module. Per token (online,
//! and root when its PIN is at hand): where it was found, what it says of
//! itself, whether each algorithm can be generated and how it would sign;
//! per key the class state and the log name: its algorithm, the mechanism
//! chosen for it and its private key's security attributes; and the keys on
//! the token that nothing names (left by a failed ceremony, or another
//! deployment's), which it never touches. Exit status 1
//! when anything is unfit: a configured algorithm the token cannot hold, or
//! a key that is extractable, not sensitive or cannot sign.

use super::Exit;
use crate::admin::{load_policies, open_module};
use crate::config::Config;
use crate::hierarchy::ClassState;
use crate::state::StateDir;
use anyhow::Result;
use hsm::{KeyAlgorithm, Module, Token, TokenSelector};
use serde_json::{json, Value};

/// `ca-server hsm check [--json]`: [`Exit::Unfit`] when anything is unfit.
pub fn check(config: &Config, as_json: bool) -> Result<Exit> {
    Ok(if run(config, as_json)? {
        Exit::Success
    } else {
        Exit::Unfit
    })
}

/// Run the check; print text (or one JSON document) and return whether
/// everything is fit.
pub fn run(config: &Config, as_json: bool) -> Result<bool> {
    let module = open_module(config)?;
    let mut problems: Vec<String> = Vec::new();
    let online_keys = online_key_labels(config)?;
    let root_keys = root_key_labels(config)?;
    // One token may hold both roles (a single HSM partition).
    let known: Vec<String> = online_keys.iter().chain(&root_keys).cloned().collect();
    let online = token_report(
        &module,
        Role {
            name: "online",
            selector: config.hsm.online_selector(),
            pin: config.read_online_pin(),
            keys: &online_keys,
        },
        &known,
        config,
        &mut problems,
    );
    let root = token_report(
        &module,
        Role {
            name: "root",
            selector: config.hsm.root_selector(),
            pin: config.read_root_pin(),
            keys: &root_keys,
        },
        &known,
        config,
        &mut problems,
    );
    let tokens: Vec<Value> = module
        .tokens()?
        .into_iter()
        .map(|(slot, info)| match info {
            Ok(i) => json!({
                "slot": slot.id(), "label": i.label, "serial": i.serial,
                "manufacturer": i.manufacturer, "model": i.model,
                "initialized": i.initialized, "clock": i.clock,
            }),
            Err(e) => json!({ "slot": slot.id(), "error": e.to_string() }),
        })
        .collect();
    let report = json!({
        "module": config.hsm.module.display().to_string(),
        "slots": tokens,
        "online": online,
        "root": root,
        "problems": problems,
    });
    if as_json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_text(&report);
    }
    Ok(problems.is_empty())
}

/// Intermediate keys of every class, and this replica's log key.
fn online_key_labels(config: &Config) -> Result<Vec<String>> {
    let state = StateDir::new(&config.state_dir);
    let mut labels = Vec::new();
    for class in load_policies(config)?.names() {
        if let Ok(record) = ClassState::read(&state, class) {
            labels.extend(record.intermediates.iter().map(|i| i.key.clone()));
        }
    }
    labels.push(crate::log::key_label(&config.log.log_id));
    Ok(labels)
}

fn root_key_labels(config: &Config) -> Result<Vec<String>> {
    let state = StateDir::new(&config.state_dir);
    let mut labels = Vec::new();
    for class in load_policies(config)?.names() {
        if let Ok(record) = ClassState::read(&state, class) {
            labels.push(record.root_key.clone());
            labels.extend(record.published_roots.iter().cloned());
        }
    }
    labels.dedup();
    Ok(labels)
}

/// One token role of the configuration and the keys the state names on it.
struct Role<'a> {
    name: &'a str,
    selector: TokenSelector,
    pin: hsm::HsmResult<hsm::Pin>,
    keys: &'a [String],
}

fn token_report(
    module: &Module,
    role: Role<'_>,
    known: &[String],
    config: &Config,
    problems: &mut Vec<String>,
) -> Value {
    let Role {
        name: role,
        selector,
        pin,
        keys,
    } = role;
    let pin = match pin {
        Ok(pin) => pin,
        Err(e) => {
            return json!({ "token": selector.to_string(), "skipped": format!("PIN not available: {e}") })
        }
    };
    let token = match module.token(selector.clone(), pin) {
        Ok(t) => t,
        Err(e) => {
            problems.push(format!("{role} token: {e}"));
            return json!({ "token": selector.to_string(), "error": e.to_string() });
        }
    };
    let caps = match token.capabilities() {
        Ok(c) => c,
        Err(e) => {
            problems.push(format!("{role} token: {e}"));
            return json!({ "token": selector.to_string(), "error": e.to_string() });
        }
    };
    let algorithms: Vec<Value> = KeyAlgorithm::ALL
        .iter()
        .map(|a| match caps.check_generate("(new key)", *a) {
            Ok(m) => json!({ "algorithm": a.as_str(), "generate": true, "sign": m.name(*a) }),
            Err(missing) => {
                json!({ "algorithm": a.as_str(), "generate": false, "missing": missing.what })
            }
        })
        .collect();
    let mut wanted = vec![config.ca_key_algorithm().ok()];
    if role == "online" {
        wanted.push(config.log_key_algorithm().ok());
    }
    for algorithm in wanted.into_iter().flatten() {
        if let Err(missing) = caps.check_generate("(configured)", algorithm) {
            problems.push(format!(
                "{role} token: configured {algorithm} keys cannot be made: {missing}"
            ));
        }
    }
    let reports: Vec<Value> = keys
        .iter()
        .map(|k| key_report(&token, k, problems))
        .collect();
    // Keys on the token that no state names: left by a failed ceremony, or
    // another deployment's. Reported, never touched.
    let others: Vec<String> = match token.private_key_labels() {
        Ok(labels) => labels.into_iter().filter(|l| !known.contains(l)).collect(),
        Err(e) => vec![format!("(could not list: {e})")],
    };
    json!({
        "token": selector.to_string(),
        "mechanisms": caps.names(),
        "algorithms": algorithms,
        "keys": reports,
        "other_keys": others,
    })
}

fn key_report(token: &Token, label: &str, problems: &mut Vec<String>) -> Value {
    let key = match token.public_key(label) {
        Ok(k) => k,
        Err(hsm::HsmError::KeyNotFound { .. }) => {
            return json!({ "label": label, "present": false });
        }
        Err(e) => {
            problems.push(format!("key '{label}': {e}"));
            return json!({ "label": label, "error": e.to_string() });
        }
    };
    let attributes = match token.private_key_attributes(label) {
        Ok(a) => a,
        Err(e) => {
            problems.push(format!("key '{label}': {e}"));
            return json!({ "label": label, "error": e.to_string() });
        }
    };
    if let Some(weakness) = attributes.weakness() {
        problems.push(format!("key '{label}': {weakness}"));
    }
    json!({
        "label": label,
        "present": true,
        "algorithm": key.algorithm.as_str(),
        "mechanism": key.mechanism.name(key.algorithm),
        "private_key": {
            "token": attributes.token,
            "private": attributes.private,
            "sensitive": attributes.sensitive,
            "extractable": attributes.extractable,
            "always_sensitive": attributes.always_sensitive,
            "never_extractable": attributes.never_extractable,
            "sign": attributes.sign,
            "decrypt": attributes.decrypt,
            "unwrap": attributes.unwrap,
            "derive": attributes.derive,
        },
        "fit": attributes.weakness().is_none(),
    })
}

fn print_text(report: &Value) {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    println!("module {}", s(&report["module"]));
    for slot in report["slots"].as_array().into_iter().flatten() {
        match slot.get("error") {
            Some(e) => println!("  slot {}: unreadable: {}", slot["slot"], s(e)),
            None => println!(
                "  slot {}: '{}' serial '{}' ({} {}){}",
                slot["slot"],
                s(&slot["label"]),
                s(&slot["serial"]),
                s(&slot["manufacturer"]),
                s(&slot["model"]),
                slot["clock"]
                    .as_str()
                    .map(|c| format!(" clock '{c}'"))
                    .unwrap_or_default()
            ),
        }
    }
    for role in ["online", "root"] {
        let t = &report[role];
        println!("{role} token {}", s(&t["token"]));
        if let Some(skip) = t.get("skipped").or(t.get("error")) {
            println!("  {}", s(skip));
            continue;
        }
        for a in t["algorithms"].as_array().into_iter().flatten() {
            match a["generate"].as_bool() {
                Some(true) => println!(
                    "  {:9} generate, sign with {}",
                    s(&a["algorithm"]),
                    s(&a["sign"])
                ),
                _ => println!("  {:9} no: {}", s(&a["algorithm"]), s(&a["missing"])),
            }
        }
        for k in t["keys"].as_array().into_iter().flatten() {
            if k["present"] == json!(false) {
                println!("  key {}: not on this token", s(&k["label"]));
            } else if let Some(e) = k.get("error") {
                println!("  key {}: {}", s(&k["label"]), s(e));
            } else {
                let p = &k["private_key"];
                println!(
                    "  key {}: {} via {}; sensitive={} extractable={} never_extractable={} sign={} decrypt={}{}",
                    s(&k["label"]),
                    s(&k["algorithm"]),
                    s(&k["mechanism"]),
                    p["sensitive"],
                    p["extractable"],
                    p["never_extractable"],
                    p["sign"],
                    p["decrypt"],
                    if k["fit"] == json!(true) { "" } else { "  UNFIT" }
                );
            }
        }
        for other in t["other_keys"].as_array().into_iter().flatten() {
            println!("  other key {} (named by no class state or log)", s(other));
        }
    }
    let problems = report["problems"].as_array().cloned().unwrap_or_default();
    if problems.is_empty() {
        println!("ok: every configured algorithm and every key is fit");
    }
    for p in problems {
        println!("PROBLEM: {}", s(&p));
    }
}
