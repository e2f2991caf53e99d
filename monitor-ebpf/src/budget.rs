//! Fairness under bursts: a token bucket per tracked process for captured
//! writes and sends (`CAPTURE_BUDGET`), so one holder writing flat out
//! spends its own budget instead of the ring buffer everyone shares; what
//! the budget or a full ring drops is counted per process for the agent,
//! which raises `monitor.capture.degraded` while it happens.
//!
//! Counted in bytes of the ring, not in writes: a token is one full
//! capture (`capture_bytes` of data and the record's header), and a record
//! pays for what it carries (`capture_cost_milli`), so the burst the agent
//! derives from `ring_bytes` fits in the ring whatever the writes' sizes.
//!
//! Threads of one process may race on its entry: the counts are then
//! approximate (never lower than one a drop per CPU in flight).
use aya_ebpf::helpers::generated::bpf_ktime_get_boot_ns;
use monitor_common::{capture_cost_milli, CaptureBudget};

use crate::{maps::CAPTURE_BUDGET, util::*};

const NS_PER_SEC: u64 = 1_000_000_000;

/// Take the price of one record carrying `data` captured bytes for
/// `tgid`; `false`: spent (counted, the record is not sent).
#[inline(always)]
pub fn take(tgid: u32, data: u64) -> bool {
    let rate = cfg(&config().capture_rate) as u64;
    if rate == 0 {
        return true;
    }
    let burst = (cfg(&config().capture_burst) as u64).max(1) * 1000;
    let cost = capture_cost_milli(data, cfg(&config().capture_bytes) as u64);
    let now = unsafe { bpf_ktime_get_boot_ns() };
    let Some(b) = CAPTURE_BUDGET.get_ptr_mut(&tgid) else {
        // First record seen: a full bucket, less this one (a burst is at
        // least one full capture: never below the cost).
        let fresh = CaptureBudget {
            last_ns: now,
            tokens_milli: burst - cost,
            budget_dropped: 0,
            ring_dropped: 0,
        };
        let _ = CAPTURE_BUDGET.insert(&tgid, &fresh, 0);
        return true;
    };
    let b = unsafe { &mut *b };
    let elapsed = now.saturating_sub(b.last_ns);
    // Refill (a second or more away: full).
    let tokens = if elapsed >= NS_PER_SEC {
        burst
    } else {
        let t = b.tokens_milli + elapsed * rate / (NS_PER_SEC / 1000);
        if t > burst {
            burst
        } else {
            t
        }
    };
    b.last_ns = now;
    if tokens < cost {
        b.tokens_milli = tokens;
        b.budget_dropped += 1;
        return false;
    }
    b.tokens_milli = tokens - cost;
    true
}

/// A captured record of `tgid` the full ring refused.
#[inline(always)]
pub fn ring_full(tgid: u32) {
    if let Some(b) = CAPTURE_BUDGET.get_ptr_mut(&tgid) {
        unsafe { (*b).ring_dropped += 1 };
    } else {
        let fresh = CaptureBudget {
            last_ns: 0,
            tokens_milli: 0,
            budget_dropped: 0,
            ring_dropped: 1,
        };
        let _ = CAPTURE_BUDGET.insert(&tgid, &fresh, 0);
    }
}
