//! R1 quorum: assigning approvers to quorum rules so that as many rule slots
//! as possible are filled (maximum bipartite matching, not first-fit).
//!
//! A rule `{roles, count}` has `count` slots; an approver may fill a slot of a
//! rule when they hold one of its roles; each approver fills one slot at most.

use std::collections::BTreeSet;

use crate::plan::QuorumRule;
use crate::values::Role;

/// The outcome of assigning approvers to rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    /// `(approver index, rule index)` for every approver who counts.
    pub counted: Vec<(usize, usize)>,
    /// Per rule, how many more approvers it needs.
    pub missing: Vec<u32>,
}

impl Assignment {
    pub fn is_satisfied(&self) -> bool {
        self.missing.iter().all(|m| *m == 0)
    }
}

/// Assigns each approver (given by the roles they held when approving) to at
/// most one rule slot, maximising the number of filled slots.
pub fn assign(rules: &[QuorumRule], approvers: &[BTreeSet<Role>]) -> Assignment {
    // slot -> rule index
    let slots: Vec<usize> = rules
        .iter()
        .enumerate()
        .flat_map(|(i, r)| std::iter::repeat_n(i, r.count as usize))
        .collect();
    let fits = |a: usize, s: usize| !rules[slots[s]].roles.is_disjoint(&approvers[a]);
    // slot -> approver filling it
    let mut slot_owner: Vec<Option<usize>> = vec![None; slots.len()];

    fn augment(
        a: usize,
        seen: &mut [bool],
        slot_owner: &mut [Option<usize>],
        fits: &dyn Fn(usize, usize) -> bool,
    ) -> bool {
        for s in 0..slot_owner.len() {
            if seen[s] || !fits(a, s) {
                continue;
            }
            seen[s] = true;
            let free = match slot_owner[s] {
                None => true,
                Some(other) => augment(other, seen, slot_owner, fits),
            };
            if free {
                slot_owner[s] = Some(a);
                return true;
            }
        }
        false
    }

    for a in 0..approvers.len() {
        let mut seen = vec![false; slots.len()];
        augment(a, &mut seen, &mut slot_owner, &fits);
    }

    let mut counted: Vec<(usize, usize)> = slot_owner
        .iter()
        .enumerate()
        .filter_map(|(s, owner)| owner.map(|a| (a, slots[s])))
        .collect();
    counted.sort_unstable();
    let mut missing: Vec<u32> = rules.iter().map(|r| r.count).collect();
    for (_, rule) in &counted {
        missing[*rule] -= 1;
    }
    Assignment { counted, missing }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(roles: &[Role], count: u32) -> QuorumRule {
        QuorumRule {
            roles: roles.iter().copied().collect(),
            count,
        }
    }

    fn holder(roles: &[Role]) -> BTreeSet<Role> {
        roles.iter().copied().collect()
    }

    #[test]
    fn matching_beats_first_fit() {
        // Rule 0 takes approver or sre; rule 1 only sre. First-fit would put the
        // sre+approver person on rule 0 and leave rule 1 empty.
        let rules = [rule(&[Role::Approver, Role::Sre], 1), rule(&[Role::Sre], 1)];
        let approvers = [
            holder(&[Role::Sre, Role::Approver]),
            holder(&[Role::Approver]),
        ];
        let a = assign(&rules, &approvers);
        assert!(a.is_satisfied(), "{a:?}");
        assert_eq!(a.counted, vec![(0, 1), (1, 0)]);
    }

    #[test]
    fn one_person_counts_once() {
        let rules = [rule(&[Role::Approver], 1), rule(&[Role::Sre], 1)];
        let a = assign(&rules, &[holder(&[Role::Approver, Role::Sre])]);
        assert!(!a.is_satisfied());
        assert_eq!(a.counted.len(), 1);
        assert_eq!(a.missing.iter().sum::<u32>(), 1);
    }

    #[test]
    fn example_two_approvers_and_one_sre() {
        let rules = [rule(&[Role::Approver], 2), rule(&[Role::Sre], 1)];
        let a = assign(
            &rules,
            &[
                holder(&[Role::Approver]),
                holder(&[Role::Sre]),
                holder(&[Role::Approver]),
            ],
        );
        assert!(a.is_satisfied());
        let partial = assign(
            &rules,
            &[holder(&[Role::Approver]), holder(&[Role::Approver])],
        );
        assert_eq!(partial.missing, vec![0, 1]);
    }
}
