//! Decryption budgets: token buckets per user per room, per room and global, each with an hourly and a daily
//! limit. A budget is a security control, not a rate limit for comfort: a compromised user key, or a compromised
//! parent replaying valid-looking traffic, can extract at most this much before the pod refuses and audits an
//! alert.

use std::collections::HashMap;

/// One scope's limits. Zero means "no limit" for that period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Decryptions per hour.
    pub hourly: u64,
    /// Decryptions per day.
    pub daily: u64,
}

/// The budget configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetConfig {
    /// For one user in one room.
    pub per_user_room: Limits,
    /// For one room, all users together.
    pub per_room: Limits,
    /// For the whole pod.
    pub global: Limits,
}

impl Default for BudgetConfig {
    /// Generous for people reading documents, small next to a bulk extraction.
    fn default() -> Self {
        Self {
            per_user_room: Limits {
                hourly: 200,
                daily: 1_000,
            },
            per_room: Limits {
                hourly: 5_000,
                daily: 50_000,
            },
            global: Limits {
                hourly: 500_000,
                daily: 5_000_000,
            },
        }
    }
}

const HOUR_MS: u64 = 3_600_000;
const DAY_MS: u64 = 24 * HOUR_MS;

/// A token bucket holding up to `capacity` tokens, refilled at `capacity` per `period_ms`. Tokens are kept in
/// thousandths so that refill is exact in integers.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    milli_tokens: u64,
    updated_ms: u64,
}

impl Bucket {
    fn full(capacity: u64, now_ms: u64) -> Self {
        Self {
            milli_tokens: capacity.saturating_mul(1000),
            updated_ms: now_ms,
        }
    }

    fn refill(&mut self, capacity: u64, period_ms: u64, now_ms: u64) {
        let elapsed = now_ms.saturating_sub(self.updated_ms);
        // capacity * 1000 tokens per period_ms -> capacity * 1000 * elapsed / period_ms.
        let added = u128::from(capacity)
            .saturating_mul(1000)
            .saturating_mul(u128::from(elapsed))
            .checked_div(u128::from(period_ms))
            .unwrap_or(0);
        let max = capacity.saturating_mul(1000);
        self.milli_tokens = u64::try_from(u128::from(self.milli_tokens).saturating_add(added))
            .unwrap_or(u64::MAX)
            .min(max);
        self.updated_ms = self.updated_ms.max(now_ms);
    }
}

/// Which budget ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The user's budget in this room.
    UserInRoom,
    /// The room's budget.
    Room,
    /// The pod's budget.
    Global,
}

impl Scope {
    /// A short name for audit reasons.
    pub fn name(self) -> &'static str {
        match self {
            Self::UserInRoom => "user budget in room",
            Self::Room => "room budget",
            Self::Global => "global budget",
        }
    }
}

type Key = ([u8; 32], [u8; 32]);

#[derive(Debug, Clone, Copy)]
struct Pair {
    hour: Bucket,
    day: Bucket,
}

impl Pair {
    fn new(limits: Limits, now_ms: u64) -> Self {
        Self {
            hour: Bucket::full(limits.hourly, now_ms),
            day: Bucket::full(limits.daily, now_ms),
        }
    }

    fn refill(&mut self, limits: Limits, now_ms: u64) {
        self.hour.refill(limits.hourly, HOUR_MS, now_ms);
        self.day.refill(limits.daily, DAY_MS, now_ms);
    }

    fn has_one(&self, limits: Limits) -> bool {
        (limits.hourly == 0 || self.hour.milli_tokens >= 1000)
            && (limits.daily == 0 || self.day.milli_tokens >= 1000)
    }

    fn take_one(&mut self) {
        self.hour.milli_tokens = self.hour.milli_tokens.saturating_sub(1000);
        self.day.milli_tokens = self.day.milli_tokens.saturating_sub(1000);
    }
}

/// The budgets of one pod.
#[derive(Debug)]
pub struct Budgets {
    config: BudgetConfig,
    users: HashMap<Key, Pair>,
    rooms: HashMap<[u8; 32], Pair>,
    global: Pair,
}

impl Budgets {
    /// Full budgets at `now_ms`.
    pub fn new(config: BudgetConfig, now_ms: u64) -> Self {
        Self {
            config,
            users: HashMap::new(),
            rooms: HashMap::new(),
            global: Pair::new(config.global, now_ms),
        }
    }

    /// Charges one decryption to `user` in `room`, or says which budget is spent. Either every bucket is charged
    /// or none is.
    pub fn charge(&mut self, user: &[u8; 32], room: &[u8; 32], now_ms: u64) -> Result<(), Scope> {
        let c = self.config;
        let user_pair = self
            .users
            .entry((*user, *room))
            .or_insert_with(|| Pair::new(c.per_user_room, now_ms));
        user_pair.refill(c.per_user_room, now_ms);
        let user_ok = user_pair.has_one(c.per_user_room);
        let room_pair = self
            .rooms
            .entry(*room)
            .or_insert_with(|| Pair::new(c.per_room, now_ms));
        room_pair.refill(c.per_room, now_ms);
        let room_ok = room_pair.has_one(c.per_room);
        self.global.refill(c.global, now_ms);
        let global_ok = self.global.has_one(c.global);
        if !user_ok {
            return Err(Scope::UserInRoom);
        }
        if !room_ok {
            return Err(Scope::Room);
        }
        if !global_ok {
            return Err(Scope::Global);
        }
        if let Some(p) = self.users.get_mut(&(*user, *room)) {
            p.take_one();
        }
        if let Some(p) = self.rooms.get_mut(room) {
            p.take_one();
        }
        self.global.take_one();
        Ok(())
    }

    /// Forgets buckets that have refilled completely, so memory follows active users, not all users ever seen.
    pub fn prune(&mut self, now_ms: u64) {
        let c = self.config;
        let full = |p: &mut Pair, l: Limits| {
            p.refill(l, now_ms);
            p.hour.milli_tokens >= l.hourly.saturating_mul(1000)
                && p.day.milli_tokens >= l.daily.saturating_mul(1000)
        };
        self.users.retain(|_, p| !full(p, c.per_user_room));
        self.rooms.retain(|_, p| !full(p, c.per_room));
    }

    /// Number of tracked user-in-room buckets.
    pub fn tracked(&self) -> usize {
        self.users.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> BudgetConfig {
        BudgetConfig {
            per_user_room: Limits {
                hourly: 3,
                daily: 5,
            },
            per_room: Limits {
                hourly: 4,
                daily: 100,
            },
            global: Limits {
                hourly: 100,
                daily: 100,
            },
        }
    }

    #[test]
    fn user_budget_runs_out_and_refills_hourly_then_daily() {
        let mut b = Budgets::new(small(), 0);
        let (u, r) = ([1u8; 32], [2u8; 32]);
        for _ in 0..3 {
            b.charge(&u, &r, 0).unwrap();
        }
        assert_eq!(b.charge(&u, &r, 0), Err(Scope::UserInRoom));
        // An hour later three more tokens in the hourly bucket, but only two left in the daily one.
        b.charge(&u, &r, HOUR_MS).unwrap();
        b.charge(&u, &r, HOUR_MS).unwrap();
        // Room budget: 4 per hour refilled; the user's daily budget (5) is now spent.
        assert_eq!(b.charge(&u, &r, HOUR_MS), Err(Scope::UserInRoom));
        b.charge(&u, &r, HOUR_MS + DAY_MS).unwrap();
    }

    #[test]
    fn room_budget_is_shared_and_refusal_charges_nothing() {
        let mut b = Budgets::new(small(), 0);
        let r = [2u8; 32];
        for i in 0..4u8 {
            b.charge(&[i; 32], &r, 0).unwrap();
        }
        assert_eq!(b.charge(&[9; 32], &r, 0), Err(Scope::Room));
        // The refused user was not charged: in another room they still have three.
        for _ in 0..3 {
            b.charge(&[9; 32], &[3; 32], 0).unwrap();
        }
        b.prune(10 * DAY_MS);
        assert_eq!(b.tracked(), 0);
    }
}
