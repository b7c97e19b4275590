//! The set of class policies a server runs with, keyed by class name.

use std::collections::BTreeMap;

use crate::{ClassPolicy, PolicyError, SHIPPED};

/// Class policies by class name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicySet(BTreeMap<String, ClassPolicy>);

impl PolicySet {
    pub fn new() -> PolicySet {
        PolicySet::default()
    }

    /// Parses the policies shipped with this crate ([`SHIPPED`]).
    pub fn shipped() -> Result<PolicySet, PolicyError> {
        SHIPPED
            .iter()
            .map(|(class, text)| {
                ClassPolicy::parse(class, &format!("policies/classes/{class}.toml"), text)
            })
            .collect()
    }

    /// Adds a class, returning the one it replaces.
    pub fn insert(&mut self, policy: ClassPolicy) -> Option<ClassPolicy> {
        self.0.insert(policy.name.clone(), policy)
    }

    pub fn get(&self, class: &str) -> Option<&ClassPolicy> {
        self.0.get(class)
    }

    /// Classes in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &ClassPolicy)> {
        self.0.iter().map(|(n, p)| (n.as_str(), p))
    }

    /// Class names in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromIterator<ClassPolicy> for PolicySet {
    fn from_iter<I: IntoIterator<Item = ClassPolicy>>(iter: I) -> PolicySet {
        let mut set = PolicySet::new();
        for p in iter {
            set.insert(p);
        }
        set
    }
}
