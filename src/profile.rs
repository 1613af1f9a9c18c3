//! Optional per-operation timing for `resnet bench --profile`: where a step's
//! time goes. Off by default (one relaxed atomic load per operation).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

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
/// (seconds, calls) per label (an operation and a layer's shape), for [`time_labelled`].
static LABELLED: Mutex<BTreeMap<String, (f64, u64)>> = Mutex::new(BTreeMap::new());

pub fn enable(on: bool) {
    ON.store(on, Ordering::Relaxed);
}

/// Time `f` under `op` when profiling is on.
#[inline]
pub fn time<R>(op: Op, f: impl FnOnce() -> R) -> R {
    if !ON.load(Ordering::Relaxed) {
        return f();
    }
    timed(op, f).0
}

/// `f()` and how long it took, the time added under `op` (profiling is on).
fn timed<R>(op: Op, f: impl FnOnce() -> R) -> (R, Duration) {
    let t = Instant::now();
    let r = f();
    let e = t.elapsed();
    NANOS[op as usize].fetch_add(e.as_nanos() as u64, Ordering::Relaxed);
    (r, e)
}

/// [`time`], and the same time also under the label `label()` (built only when profiling is on):
/// a layer's shape, so that a whole net's time can be read per shape.
#[inline]
pub fn time_labelled<R>(op: Op, label: impl FnOnce() -> String, f: impl FnOnce() -> R) -> R {
    if !ON.load(Ordering::Relaxed) {
        return f();
    }
    let (r, e) = timed(op, f);
    let mut m = LABELLED.lock().unwrap_or_else(|p| p.into_inner());
    let slot = m.entry(format!("{op:?} {}", label())).or_insert((0.0, 0));
    slot.0 += e.as_secs_f64();
    slot.1 += 1;
    r
}

/// (label, seconds, calls) of [`time_labelled`] since the last reset, by label.
pub fn take_labelled() -> Vec<(String, f64, u64)> {
    let mut m = LABELLED.lock().unwrap_or_else(|p| p.into_inner());
    std::mem::take(&mut *m).into_iter().map(|(k, (s, c))| (k, s, c)).collect()
}

/// Seconds spent per operation since the last reset.
pub fn take() -> Vec<(Op, f64)> {
    OPS.iter().map(|&op| (op, NANOS[op as usize].swap(0, Ordering::Relaxed) as f64 * 1e-9)).collect()
}
