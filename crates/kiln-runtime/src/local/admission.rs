//! Admission control: a sandbox is admitted only while the sum of the limits of the
//! sandboxes this runtime holds (running, starting or reserved) stays within the node's
//! budget times an overcommit ratio, for memory and for disk alike. Limits are promises
//! of what a sandbox *may* use; the ratio says how far they may be oversold.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::{Resource, Result, RuntimeError};
use crate::runtime::NodeCapacity;
use crate::spec::{Limits, SandboxId};

/// What a refused caller is told to wait before asking again.
pub const RETRY_AFTER: Duration = Duration::from_secs(30);

/// A reservation nobody turned into a sandbox within this time lapses (a caller that
/// reserved and then died must not hold room for ever).
const RESERVATION_TTL: Duration = Duration::from_secs(600);

/// What the node may hold.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Memory for all sandboxes (the parent cgroup's limit).
    pub memory_bytes: u64,
    /// Sum of memory limits allowed, as a multiple of `memory_bytes`.
    pub memory_overcommit: f64,
    /// Sum of disk limits allowed, as a multiple of the disk space sandboxes can use.
    pub disk_overcommit: f64,
}

#[derive(Debug, Clone, Copy)]
struct Held {
    limits: Limits,
    /// A sandbox exists (or is being created) for it; otherwise a reservation.
    claimed: bool,
    since: Instant,
}

/// The limits held per sandbox id.
#[derive(Debug)]
pub struct Admission {
    budget: Mutex<Budget>,
    held: Mutex<HashMap<SandboxId, Held>>,
}

impl Admission {
    /// Nothing held yet.
    pub fn new(budget: Budget) -> Self {
        Admission {
            budget: Mutex::new(budget),
            held: Mutex::new(HashMap::new()),
        }
    }

    /// The budget.
    pub fn budget(&self) -> Budget {
        *self.budget.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces the memory budget (the Docker backend learns it from the engine).
    pub fn set_memory_budget(&self, bytes: u64) {
        self.budget
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .memory_bytes = bytes;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SandboxId, Held>> {
        // Every update is one insert or remove: a poisoned map is still consistent.
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Holds room for `id` (a reservation, claimed later by a create), or refuses.
    /// `disk_space` is the disk space sandboxes can use: free space plus what the
    /// sandboxes already hold. Reserving again for the same id replaces its limits.
    pub fn reserve(&self, id: &SandboxId, limits: &Limits, disk_space: u64) -> Result<()> {
        self.hold(id, limits, disk_space, false)
    }

    /// Claims the room for a sandbox being created: its reservation when it has one,
    /// else new room (or a refusal).
    pub fn claim(&self, id: &SandboxId, limits: &Limits, disk_space: u64) -> Result<()> {
        self.hold(id, limits, disk_space, true)
    }

    /// Records a sandbox that exists already (adopted after a restart), whatever the
    /// budget says: it runs either way.
    pub fn adopt(&self, id: &SandboxId, limits: &Limits) {
        self.lock().insert(
            id.clone(),
            Held {
                limits: *limits,
                claimed: true,
                since: Instant::now(),
            },
        );
    }

    /// Gives the room of `id` back (destroyed, failed to start, or never started).
    pub fn release(&self, id: &SandboxId) {
        self.lock().remove(id);
    }

    /// Sum of the memory and disk limits held now.
    pub fn held(&self) -> (u64, u64) {
        let budget = self.budget();
        let held = self.lock();
        sums(&held, None, budget.memory_bytes, u64::MAX)
    }

    /// What is held against the budget, for metrics; `disk_budget` is the disk space
    /// sandboxes can use, which each backend measures its own way.
    pub fn capacity(&self, disk_budget: u64) -> NodeCapacity {
        let budget = self.budget();
        let (memory, disk) = self.held();
        NodeCapacity {
            memory_reserved_bytes: memory,
            memory_budget_bytes: budget.memory_bytes,
            memory_overcommit: budget.memory_overcommit,
            disk_reserved_bytes: disk,
            disk_budget_bytes: disk_budget,
            disk_overcommit: budget.disk_overcommit,
        }
    }

    fn hold(&self, id: &SandboxId, limits: &Limits, disk_space: u64, claim: bool) -> Result<()> {
        let budget = self.budget();
        let mut held = self.lock();
        held.retain(|_, h| h.claimed || h.since.elapsed() < RESERVATION_TTL);
        if let Some(existing) = held.get_mut(id) {
            if existing.limits == *limits {
                existing.claimed |= claim;
                return Ok(());
            }
        }
        let (memory, disk) = sums(&held, Some(id), budget.memory_bytes, disk_space);
        check(
            Resource::Memory,
            memory,
            limits.memory_bytes.unwrap_or(budget.memory_bytes),
            budget.memory_bytes,
            budget.memory_overcommit,
        )?;
        check(
            Resource::Disk,
            disk,
            limits.disk_bytes.unwrap_or(disk_space),
            disk_space,
            budget.disk_overcommit,
        )?;
        let claimed = claim || held.get(id).is_some_and(|h| h.claimed);
        held.insert(
            id.clone(),
            Held {
                limits: *limits,
                claimed,
                since: Instant::now(),
            },
        );
        Ok(())
    }
}

/// Sums of memory and disk limits held, except `skip`'s; an unlimited resource counts as
/// the whole budget.
fn sums(
    held: &HashMap<SandboxId, Held>,
    skip: Option<&SandboxId>,
    memory_budget: u64,
    disk_space: u64,
) -> (u64, u64) {
    held.iter()
        .filter(|(id, _)| Some(*id) != skip)
        .fold((0u64, 0u64), |(m, d), (_, h)| {
            (
                m.saturating_add(h.limits.memory_bytes.unwrap_or(memory_budget)),
                d.saturating_add(h.limits.disk_bytes.unwrap_or(disk_space)),
            )
        })
}

/// Refuses when `held + wanted` exceeds `budget × ratio`.
fn check(resource: Resource, held: u64, wanted: u64, budget: u64, ratio: f64) -> Result<()> {
    // u64 → f64 loses precision only past 2^53 bytes (8 PiB): irrelevant here.
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss
    )]
    let allowed = (budget as f64 * ratio.max(0.0)).min(u64::MAX as f64) as u64;
    let total = held.saturating_add(wanted);
    if total <= allowed {
        return Ok(());
    }
    Err(RuntimeError::Capacity {
        resource,
        message: format!(
            "the sandboxes here hold {} MiB of {resource} limits; {} MiB more would pass \
             the node's {} MiB ({} MiB × overcommit {ratio})",
            held >> 20,
            wanted >> 20,
            allowed >> 20,
            budget >> 20,
        ),
        retry_after: RETRY_AFTER,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn limits(memory: u64, disk: u64) -> Limits {
        Limits {
            memory_bytes: Some(memory),
            disk_bytes: Some(disk),
            ..Limits::default()
        }
    }

    fn id(n: usize) -> SandboxId {
        SandboxId::new(format!("s{n}")).unwrap()
    }

    /// An admission of `budget` holding `count` sandboxes of `limits` on `space` bytes.
    fn holding(budget: Budget, count: usize, limits: &Limits, space: u64) -> Admission {
        let admission = Admission::new(budget);
        for n in 0..count {
            admission.claim(&id(n), limits, space).unwrap();
        }
        admission
    }

    fn assert_full_of(err: &RuntimeError, want: Resource) {
        assert!(
            matches!(err, RuntimeError::Capacity { resource, .. } if *resource == want),
            "{err}"
        );
    }

    #[test]
    fn the_21st_2_gib_sandbox_does_not_fit_20_gib_at_2x_and_a_release_makes_room() {
        let budget = Budget {
            memory_bytes: 20 * GIB,
            memory_overcommit: 2.0,
            disk_overcommit: 2.0,
        };
        let admission = holding(budget, 20, &limits(2 * GIB, GIB), 100 * GIB);
        let err = admission
            .reserve(&id(20), &limits(2 * GIB, GIB), 100 * GIB)
            .unwrap_err();
        assert_full_of(&err, Resource::Memory);
        assert_eq!(admission.held(), (40 * GIB, 20 * GIB));
        admission.release(&id(3));
        admission
            .reserve(&id(20), &limits(2 * GIB, GIB), 100 * GIB)
            .unwrap();
        // The create claims the reservation: no second helping.
        admission
            .claim(&id(20), &limits(2 * GIB, GIB), 100 * GIB)
            .unwrap();
        assert_eq!(admission.held().0, 40 * GIB);
    }

    #[test]
    fn disk_is_checked_against_the_space_times_the_ratio() {
        let budget = Budget {
            memory_bytes: 100 * GIB,
            memory_overcommit: 1.0,
            disk_overcommit: 2.0,
        };
        // 30 GiB of space × 2 = 60 GiB: six 10 GiB sandboxes, not seven.
        let admission = holding(budget, 6, &limits(GIB, 10 * GIB), 30 * GIB);
        let err = admission
            .claim(&id(6), &limits(GIB, 10 * GIB), 30 * GIB)
            .unwrap_err();
        assert_full_of(&err, Resource::Disk);
    }

    #[test]
    fn an_unlimited_sandbox_counts_as_the_whole_budget_and_adoption_always_fits() {
        let admission = Admission::new(Budget {
            memory_bytes: 4 * GIB,
            memory_overcommit: 1.0,
            disk_overcommit: 1.0,
        });
        let unlimited = Limits {
            memory_bytes: None,
            disk_bytes: None,
            ..Limits::default()
        };
        admission.claim(&id(0), &unlimited, 8 * GIB).unwrap();
        assert!(admission.claim(&id(1), &limits(1, 1), 8 * GIB).is_err());
        admission.release(&id(0));
        admission.adopt(&id(2), &limits(8 * GIB, 8 * GIB));
        assert_eq!(admission.held(), (8 * GIB, 8 * GIB));
    }
}
