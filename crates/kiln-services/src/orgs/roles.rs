//! Who may change whom: the role rules, apart from storage so they can be tested alone.
//! (That an organization keeps an owner is checked by the store, in the writing
//! transaction.)
use kiln_store::OrgRole;

/// May `actor` give the member whose role is `current` the role `new`? Owners and admins
/// manage members; only an owner touches an owner's role or makes someone an owner.
pub fn may_change_role(actor: OrgRole, current: OrgRole, new: OrgRole) -> bool {
    if !actor.can_manage() {
        return false;
    }
    if current == OrgRole::Owner || new == OrgRole::Owner {
        return actor == OrgRole::Owner;
    }
    true
}

/// May `actor` remove the member whose role is `target`? Anyone may leave; removing
/// someone else takes an owner or admin, and removing an owner takes an owner.
pub fn may_remove(actor: OrgRole, target: OrgRole, is_self: bool) -> bool {
    if is_self {
        return true;
    }
    actor.can_manage() && (target != OrgRole::Owner || actor == OrgRole::Owner)
}

/// May `actor` invite someone as `role`? Only an owner invites an owner.
pub fn may_invite(actor: OrgRole, role: OrgRole) -> bool {
    actor.can_manage() && (role != OrgRole::Owner || actor == OrgRole::Owner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use OrgRole::{Admin, Member, Owner};

    #[test]
    fn members_change_nobody() {
        for current in [Owner, Admin, Member] {
            for new in [Owner, Admin, Member] {
                assert!(!may_change_role(Member, current, new));
            }
        }
        assert!(!may_remove(Member, Member, false));
        assert!(may_remove(Member, Member, true), "anyone may leave");
        assert!(!may_invite(Member, Member));
    }

    #[test]
    fn admins_manage_non_owners_only() {
        assert!(may_change_role(Admin, Member, Admin));
        assert!(may_change_role(Admin, Admin, Member));
        assert!(
            !may_change_role(Admin, Member, Owner),
            "no promotion to owner"
        );
        assert!(
            !may_change_role(Admin, Owner, Member),
            "no demotion of an owner"
        );
        assert!(may_remove(Admin, Member, false));
        assert!(!may_remove(Admin, Owner, false));
        assert!(may_invite(Admin, Admin));
        assert!(!may_invite(Admin, Owner));
    }

    #[test]
    fn owners_manage_everyone() {
        for current in [Owner, Admin, Member] {
            for new in [Owner, Admin, Member] {
                assert!(may_change_role(Owner, current, new));
            }
            assert!(may_remove(Owner, current, false));
            assert!(may_invite(Owner, current));
        }
    }
}
