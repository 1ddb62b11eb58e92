//! Conditional writes: what a writer expects the current snapshot to be (HTTP's `If-Match` and
//! `If-None-Match`, already parsed). The store checks it under the session's lock, in the same
//! critical section as the write, so of two writers expecting the same snapshot only one wins.

use super::name::SnapshotId;

/// A set of expected snapshot ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expected {
    /// `*`: any snapshot at all.
    Any,
    /// One of these ids (as text: an id that does not parse simply never matches).
    OneOf(Vec<String>),
}

impl Expected {
    /// Whether `current` (the id of the resource's current state, if it exists) is expected.
    pub fn matches(&self, current: Option<&SnapshotId>) -> bool {
        match (self, current) {
            (_, None) => false,
            (Expected::Any, Some(_)) => true,
            (Expected::OneOf(ids), Some(current)) => ids.contains(&current.to_string()),
        }
    }
}

/// A write's conditions on the current snapshot; the default has none and always holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Precondition {
    /// The current snapshot must be one of these (`If-Match`).
    pub if_match: Option<Expected>,
    /// The current snapshot must not be one of these (`If-None-Match`; `*`: there must be none).
    pub if_none_match: Option<Expected>,
}

impl Precondition {
    /// Whether the conditions hold when `current` is the current snapshot's id (`None`: there
    /// is none).
    pub fn holds(&self, current: Option<&SnapshotId>) -> bool {
        let match_ok = self.if_match.as_ref().is_none_or(|e| e.matches(current));
        let none_match_ok = self
            .if_none_match
            .as_ref()
            .is_none_or(|e| !e.matches(current));
        match_ok && none_match_ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "20261123T185337.123456Z-9f86d081884c7d65";
    const B: &str = "20261123T185338.000000Z-0123456789abcdef";

    fn id(text: &str) -> SnapshotId {
        SnapshotId::parse(text).unwrap()
    }

    fn one_of(ids: &[&str]) -> Option<Expected> {
        Some(Expected::OneOf(ids.iter().map(|s| s.to_string()).collect()))
    }

    #[test]
    fn no_conditions_always_hold() {
        assert!(Precondition::default().holds(None));
        assert!(Precondition::default().holds(Some(&id(A))));
    }

    #[test]
    fn if_match_needs_the_current_snapshot_to_be_listed() {
        let pre = Precondition {
            if_match: one_of(&[B, A]),
            ..Default::default()
        };
        assert!(pre.holds(Some(&id(A))));
        assert!(!pre.holds(Some(&id("20261123T185339.000000Z-0123456789abcdef"))));
        assert!(!pre.holds(None));
    }

    #[test]
    fn if_match_any_needs_some_snapshot() {
        let pre = Precondition {
            if_match: Some(Expected::Any),
            ..Default::default()
        };
        assert!(pre.holds(Some(&id(A))));
        assert!(!pre.holds(None));
    }

    #[test]
    fn if_none_match_any_needs_no_snapshot() {
        let pre = Precondition {
            if_none_match: Some(Expected::Any),
            ..Default::default()
        };
        assert!(pre.holds(None));
        assert!(!pre.holds(Some(&id(A))));
    }

    #[test]
    fn if_none_match_ids_refuse_only_those() {
        let pre = Precondition {
            if_none_match: one_of(&[A]),
            ..Default::default()
        };
        assert!(!pre.holds(Some(&id(A))));
        assert!(pre.holds(Some(&id(B))));
        assert!(pre.holds(None));
    }
}
