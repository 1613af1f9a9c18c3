//! Optional per-operation timing for `resnet bench --profile`: where a step's
//! time goes. Off by default (one relaxed atomic load per operation).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

#[derive(Clone, Copy, Debug)]
pub enum Op {
    ConvForward,
    ConvBackwardData,
    ConvBackwardWeight,
    BnForward,
    BnBackward,
    Other,
}

pub const OPS: [Op; 6] =
    [Op::ConvForward, Op::ConvBackwardData, Op::ConvBackwardWeight, Op::BnForward, Op::BnBackward, Op::Other];

static ON: AtomicBool = AtomicBool::new(false);
static NANOS: [AtomicU64; 6] = [const { AtomicU64::new(0) }; 6];

pub fn enable(on: bool) {
    ON.store(on, Ordering::Relaxed);
}

/// Time `f` under `op` when profiling is on.
#[inline]
pub fn time<R>(op: Op, f: impl FnOnce() -> R) -> R {
    if !ON.load(Ordering::Relaxed) {
        return f();
    }
    let t = Instant::now();
    let r = f();
    NANOS[op as usize].fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
    r
}

/// Seconds spent per operation since the last reset.
pub fn take() -> Vec<(Op, f64)> {
    OPS.iter().map(|&op| (op, NANOS[op as usize].swap(0, Ordering::Relaxed) as f64 * 1e-9)).collect()
}
