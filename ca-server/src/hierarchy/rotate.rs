//! Intermediate rotation, SPIRE-style: `prepare` makes a new intermediate
//! (key in the online token, certificate signed by the class root — the one
//! step that needs the root PIN), `activate` switches issuance to it and
//! retires the old one, `retire` forgets retired intermediates once every
//! leaf they signed has expired. Peers trust the class root and every leaf
//! carries its chain, so no client changes anything.

use super::create::{create_intermediate, publish_active, AdminTokens, CaShape};
use super::record::{ClassState, IntermediateStatus};
use super::{read_pem_cert, HierarchyError, StateProblem};
use crate::state::StateDir;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Create the prepared intermediate. Returns its key label.
pub fn prepare(
    state: &StateDir,
    class: &str,
    tokens: &AdminTokens,
    shape: &CaShape,
) -> Result<String, HierarchyError> {
    let mut record = ClassState::read(state, class)?;
    if let Some(prepared) = record.prepared() {
        return Err(HierarchyError::state(
            class,
            StateProblem::AlreadyPrepared(prepared.key.clone()),
        ));
    }
    let root_key = tokens.root.public_key(&record.root_key)?;
    let root_der = read_pem_cert(&state.root_cert(class))?;
    let new = create_intermediate(
        state,
        class,
        tokens,
        shape,
        &root_key,
        &root_der,
        IntermediateStatus::Prepared,
    )?;
    let label = new.key.clone();
    record.intermediates.push(new);
    record.write(state, class)?;
    Ok(label)
}

/// Make the prepared intermediate active; the active one becomes retired.
/// Returns (new active, newly retired).
pub fn activate(state: &StateDir, class: &str) -> Result<(String, Option<String>), HierarchyError> {
    let mut record = ClassState::read(state, class)?;
    let prepared = record
        .prepared()
        .map(|p| p.key.clone())
        .ok_or_else(|| HierarchyError::state(class, StateProblem::NothingPrepared))?;
    let now = OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default();
    let mut retired = None;
    for int in &mut record.intermediates {
        if int.status == IntermediateStatus::Active {
            int.status = IntermediateStatus::Retired;
            int.retired_at = Some(now.clone());
            retired = Some(int.key.clone());
        } else if int.key == prepared {
            int.status = IntermediateStatus::Active;
        }
    }
    // Files first: a server that reloads between the two writes still finds
    // a consistent active intermediate in state.toml.
    publish_active(state, class, &prepared)?;
    record.write(state, class)?;
    Ok((prepared, retired))
}

/// Retired intermediates whose leaves have all expired: retired longer ago
/// than the class's longest leaf lifetime, or past their own notAfter.
pub fn expired_retirees(
    record: &ClassState,
    max_leaf_ttl: std::time::Duration,
    now: OffsetDateTime,
) -> Vec<String> {
    let ttl = time::Duration::try_from(max_leaf_ttl).unwrap_or(time::Duration::MAX);
    record
        .intermediates
        .iter()
        .filter(|i| i.status == IntermediateStatus::Retired)
        .filter(|i| {
            let parse = |s: &str| OffsetDateTime::parse(s, &Rfc3339).ok();
            let by_ttl = i
                .retired_at
                .as_deref()
                .and_then(parse)
                .and_then(|t| t.checked_add(ttl))
                .is_some_and(|t| t < now);
            let by_expiry = parse(&i.not_after).is_some_and(|t| t < now);
            by_ttl || by_expiry
        })
        .map(|i| i.key.clone())
        .collect()
}

/// Drop the given retired intermediates from the class state (their
/// certificates stay under `intermediates/` for the monitor).
pub fn forget(state: &StateDir, class: &str, labels: &[String]) -> Result<(), HierarchyError> {
    let mut record = ClassState::read(state, class)?;
    record
        .intermediates
        .retain(|i| !(i.status == IntermediateStatus::Retired && labels.contains(&i.key)));
    record.write(state, class)
}
