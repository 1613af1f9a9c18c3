//! Matching anchors / proposals to ground truth (torchvision's `_utils.Matcher`) and the balanced
//! positive / negative sampler (`BalancedPositiveNegativeSampler`), whose draws come from the
//! counter-based generator: a sample is a pure function of (seed, iteration, image).

use crate::rng;

/// What a prediction was matched to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Match {
    /// The index of the ground-truth box (best IoU >= high, or a low-quality match).
    Gt(usize),
    /// Best IoU < low: background.
    Below,
    /// low <= best IoU < high: ignored.
    Between,
}

/// IoU thresholds and whether each ground-truth box also keeps its best predictions (the RPN's
/// "highest IoU with a ground-truth box" positives of [32]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Matcher {
    pub high: f32,
    pub low: f32,
    pub allow_low_quality: bool,
}

impl Matcher {
    /// `iou` is `gts x preds`, row-major (`boxes::box_iou(gts, preds)`). Each prediction gets its
    /// best ground truth (the first on ties) thresholded; with low-quality matches, every
    /// prediction whose IoU with some ground truth equals that ground truth's best (ties included)
    /// keeps its own best match even below `high`.
    pub fn assign(&self, iou: &[f32], gts: usize, preds: usize) -> Vec<Match> {
        assert!(self.low <= self.high, "matcher: low threshold above high");
        assert_eq!(iou.len(), gts * preds, "matcher: IoU matrix size");
        if gts == 0 {
            return vec![Match::Below; preds];
        }
        let mut best = vec![(f32::NEG_INFINITY, 0usize); preds];
        for g in 0..gts {
            for (p, b) in best.iter_mut().enumerate() {
                if iou[g * preds + p] > b.0 {
                    *b = (iou[g * preds + p], g);
                }
            }
        }
        let mut out: Vec<Match> = best
            .iter()
            .map(|&(v, g)| {
                if v < self.low {
                    Match::Below
                } else if v < self.high {
                    Match::Between
                } else {
                    Match::Gt(g)
                }
            })
            .collect();
        if self.allow_low_quality {
            for g in 0..gts {
                let row = &iou[g * preds..(g + 1) * preds];
                let top = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                for (p, &v) in row.iter().enumerate() {
                    if v == top {
                        out[p] = Match::Gt(best[p].1);
                    }
                }
            }
        }
        out
    }
}

/// Picks up to `per_image` predictions, at most `positive_fraction` of them positive (`Match::Gt`),
/// the rest negative (`Match::Below`), uniformly without replacement. Returns (positives,
/// negatives), each in increasing index order. The draws are the stream
/// `"detect/sample/<seed>/<iteration>/<image>"`: the same arguments give the same sample.
pub fn sample(
    matches: &[Match],
    per_image: usize,
    positive_fraction: f32,
    seed: u64,
    iteration: u64,
    image: usize,
) -> (Vec<usize>, Vec<usize>) {
    sample_stream(matches, per_image, positive_fraction, &format!("detect/sample/{seed}/{iteration}/{image}"))
}

/// [`sample`] drawing from the named counter stream `stream` (the RPN and the RoI head name their
/// own, so that their draws for one image and iteration are independent). The number of
/// positives is `floor(per_image * positive_fraction)` at most, as torchvision's `int(...)`.
pub fn sample_stream(
    matches: &[Match],
    per_image: usize,
    positive_fraction: f32,
    stream: &str,
) -> (Vec<usize>, Vec<usize>) {
    let pos: Vec<usize> = (0..matches.len()).filter(|&i| matches!(matches[i], Match::Gt(_))).collect();
    let neg: Vec<usize> = (0..matches.len()).filter(|&i| matches[i] == Match::Below).collect();
    let n_pos = ((per_image as f32 * positive_fraction) as usize).min(pos.len()).min(per_image);
    let n_neg = (per_image - n_pos).min(neg.len());
    (choose(pos, n_pos, stream, 0), choose(neg, n_neg, stream, 1 << 40))
}

/// `k` of `items` by a partial Fisher-Yates shuffle over counter draws from `first` on, sorted.
fn choose(mut items: Vec<usize>, k: usize, stream: &str, first: u64) -> Vec<usize> {
    let n = items.len();
    let base = rng::fnv1a64(stream).wrapping_add(first);
    for i in 0..k {
        let r = rng::splitmix64(base.wrapping_add(i as u64));
        // multiply-shift: uniform in 0..n-i up to a bias below 2^-32 for these sizes
        let j = i + (((r >> 32) * (n - i) as u64) >> 32) as usize;
        items.swap(i, j);
    }
    items.truncate(k);
    items.sort_unstable();
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_and_low_quality_matches() {
        // 2 gts x 4 preds
        let iou = [0.8, 0.5, 0.2, 0.0, 0.1, 0.6, 0.35, 0.35];
        let m = Matcher { high: 0.7, low: 0.3, allow_low_quality: false };
        assert_eq!(m.assign(&iou, 2, 4), vec![Match::Gt(0), Match::Between, Match::Between, Match::Between]);
        let m = Matcher { allow_low_quality: true, ..m };
        // gt 1's best (0.6) is pred 1; pred 3 = 0.35 is not gt 1's best
        assert_eq!(m.assign(&iou, 2, 4), vec![Match::Gt(0), Match::Gt(1), Match::Between, Match::Between]);
        let iou = [0.2, 0.2, 0.1];
        // ties: both best predictions kept
        assert_eq!(m.assign(&iou, 1, 3), vec![Match::Gt(0), Match::Gt(0), Match::Below]);
        assert_eq!(m.assign(&[], 0, 2), vec![Match::Below; 2]);
    }

    #[test]
    fn sampler_is_balanced_and_a_function_of_seed_and_iteration() {
        let matches: Vec<Match> = (0..1000)
            .map(|i| {
                if i % 50 == 0 {
                    Match::Gt(0)
                } else if i % 3 == 0 {
                    Match::Between
                } else {
                    Match::Below
                }
            })
            .collect();
        let (p, n) = sample(&matches, 256, 0.5, 7, 3, 0);
        assert_eq!((p.len(), n.len()), (20, 236));
        assert!(p.iter().all(|&i| i % 50 == 0) && n.iter().all(|&i| matches[i] == Match::Below));
        let mut uniq = n.clone();
        uniq.dedup();
        assert_eq!(uniq.len(), n.len());
        assert_eq!(sample(&matches, 256, 0.5, 7, 3, 0), (p.clone(), n.clone()));
        assert_ne!(sample(&matches, 256, 0.5, 7, 4, 0).1, n);
        assert_ne!(sample(&matches, 256, 0.5, 8, 3, 0).1, n);
    }
}
