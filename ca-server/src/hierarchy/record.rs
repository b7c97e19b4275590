//! `classes/<class>/state.toml`: which keys a class uses and the lifecycle of
//! its intermediates (prepared → active → retired).

use super::HierarchyError;
use crate::state::{write_atomic, StateDir};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IntermediateStatus {
    Prepared,
    Active,
    Retired,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntermediateRecord {
    /// Key label in the online token; also names the certificate file.
    pub key: String,
    pub status: IntermediateStatus,
    /// RFC 3339.
    pub not_after: String,
    /// When it stopped issuing (RFC 3339); set on activation of its successor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired_at: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassState {
    /// Key label of the root in the root token: it signs new intermediates.
    pub root_key: String,
    /// Other roots published in the trust bundle next to the current one:
    /// the next root while a root rotation is prepared, the previous root
    /// until it is retired. Certificates in `roots/<label>.pem`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub published_roots: Vec<String>,
    /// When the current root was cross-signed by the previous one: that
    /// root's label. Chains of intermediates under the current root then end
    /// with the cross certificate, so peers trusting only the old root
    /// still build a path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cross_signed_by: Option<String>,
    #[serde(default)]
    pub intermediates: Vec<IntermediateRecord>,
}

impl ClassState {
    pub fn exists(state: &StateDir, class: &str) -> bool {
        state.class_state(class).exists()
    }

    pub fn read(state: &StateDir, class: &str) -> Result<ClassState, HierarchyError> {
        let path = state.class_state(class);
        let text = std::fs::read_to_string(&path).map_err(|source| HierarchyError::Io {
            path: path.display().to_string(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| {
            HierarchyError::state(
                class,
                super::StateProblem::Unreadable {
                    path: path.display().to_string(),
                    source: Box::new(source),
                },
            )
        })
    }

    pub fn write(&self, state: &StateDir, class: &str) -> Result<(), HierarchyError> {
        let path = state.class_state(class);
        let text = toml::to_string_pretty(self).map_err(|e| {
            HierarchyError::state(class, super::StateProblem::Unwritable(Box::new(e)))
        })?;
        write_atomic(&path, text.as_bytes(), 0o644).map_err(|source| HierarchyError::Io {
            path: path.display().to_string(),
            source,
        })
    }

    pub fn active(&self) -> Option<&IntermediateRecord> {
        self.with_status(IntermediateStatus::Active)
    }

    pub fn prepared(&self) -> Option<&IntermediateRecord> {
        self.with_status(IntermediateStatus::Prepared)
    }

    fn with_status(&self, status: IntermediateStatus) -> Option<&IntermediateRecord> {
        self.intermediates.iter().find(|i| i.status == status)
    }
}
