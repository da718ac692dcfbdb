//! Value-adaptive quantisers: integer weights rewritten so that they have
//! fewer non-zero signed power-of-two terms (and so more zero digits to
//! skip), and a row order that gathers large weights into the same chunks.
//! They apply to any `[k][n]` integer weights, before a mapping encodes them.

use serde::{Deserialize, Serialize};

/// How rows are ordered on the array.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RowOrder {
    /// As the weights come.
    #[default]
    Natural,
    /// By each row's largest `|w|` over the columns, largest first (ties:
    /// larger `sum |w|` first, then the original order); the inputs follow.
    Magnitude,
}

impl RowOrder {
    /// The name experiment files use.
    pub fn label(&self) -> &'static str {
        match self {
            RowOrder::Natural => "natural",
            RowOrder::Magnitude => "magnitude",
        }
    }
}

/// `[quantize]`: a term budget per weight, a term budget per group of
/// weights of a column, and the row order. The default changes nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Quantizer {
    /// Each weight becomes the nearest value with at most this many non-zero
    /// signed power-of-two terms (ties to the smaller magnitude).
    pub terms: Option<u32>,
    /// Groups of `group` consecutive rows of a column keep their
    /// `group_terms` largest terms (Term Revealing); `None`: no group budget.
    pub group: Option<(usize, u32)>,
    pub row_order: RowOrder,
}

impl Quantizer {
    /// Whether it leaves every weight and row where it is.
    pub fn is_identity(&self) -> bool {
        *self == Quantizer::default()
    }

    /// Whether it changes weight values (not only the row order).
    pub fn changes_values(&self) -> bool {
        self.terms.is_some() || self.group.is_some()
    }

    /// A short name of the setting: `none`, or its parts joined by `;`, e.g.
    /// `terms=2;group=8:12;rows=magnitude`.
    pub fn label(&self) -> String {
        let mut parts = Vec::new();
        if let Some(t) = self.terms {
            parts.push(format!("terms={t}"));
        }
        if let Some((g, t)) = self.group {
            parts.push(format!("group={g}:{t}"));
        }
        if self.row_order != RowOrder::Natural {
            parts.push(format!("rows={}", self.row_order.label()));
        }
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join(";")
        }
    }

    /// Applies the term budgets to `[k][n]` weights of `weight_bits` bits
    /// (values in `[-(2^(Bw-1)-1), 2^(Bw-1)-1]`): first per weight, then
    /// per group. The row order is separate ([`Quantizer::row_permutation`]).
    pub fn apply(&self, w: &mut [i32], k: usize, n: usize, weight_bits: u32) {
        debug_assert_eq!(w.len(), k * n);
        if let Some(t) = self.terms {
            let table = NearestTerms::new(weight_bits, t);
            for v in w.iter_mut() {
                *v = table.nearest(*v);
            }
        }
        if let Some((g, t)) = self.group {
            let mut col = Vec::with_capacity(g);
            for c in 0..n {
                for start in (0..k).step_by(g) {
                    let rows = start..(start + g).min(k);
                    col.clear();
                    col.extend(rows.clone().map(|r| w[r * n + c]));
                    keep_largest_terms(&mut col, t, weight_bits);
                    for (r, &v) in rows.zip(&col) {
                        w[r * n + c] = v;
                    }
                }
            }
        }
    }

    /// The array's row `r` holds original row `perm[r]`; `None` for the
    /// natural order.
    pub fn row_permutation(&self, w: &[i32], k: usize, n: usize) -> Option<Vec<usize>> {
        match self.row_order {
            RowOrder::Natural => None,
            RowOrder::Magnitude => {
                let stat = |r: usize| {
                    let row = &w[r * n..(r + 1) * n];
                    let max = row.iter().map(|v| v.unsigned_abs()).max().unwrap_or(0);
                    let sum: u64 = row.iter().map(|v| v.unsigned_abs() as u64).sum();
                    (max, sum)
                };
                let mut perm: Vec<usize> = (0..k).collect();
                // Stable: equal rows keep their order.
                perm.sort_by_key(|&r| std::cmp::Reverse(stat(r)));
                Some(perm)
            }
        }
    }
}

/// `[k][n]` rows (or `[b][k]` inputs' elements, with `n = 1` per element
/// and `b` vectors: see [`permute_inputs`]) taken in the order `perm`.
pub fn permute_rows(w: &[i32], n: usize, perm: &[usize]) -> Vec<i32> {
    let mut out = Vec::with_capacity(w.len());
    for &r in perm {
        out.extend_from_slice(&w[r * n..(r + 1) * n]);
    }
    out
}

/// `[b][k]` input vectors with their elements taken in the order `perm`, so
/// that they meet the rows [`permute_rows`] moved.
pub fn permute_inputs<T: Copy>(x: &[T], perm: &[usize]) -> Vec<T> {
    let k = perm.len();
    let mut out = Vec::with_capacity(x.len());
    for v in x.chunks_exact(k) {
        out.extend(perm.iter().map(|&r| v[r]));
    }
    out
}

/// The signed power-of-two terms of `w` in canonical signed digit form
/// (non-adjacent form, the fewest terms of any signed-digit form), largest
/// first: `(sign, exponent)`.
pub fn csd_terms(w: i32) -> Vec<(i32, u32)> {
    let mut terms = Vec::new();
    let mut v = w as i64;
    let mut e = 0;
    while v != 0 {
        if v & 1 != 0 {
            let digit = 2 - v.rem_euclid(4);
            terms.push((digit as i32, e));
            v -= digit;
        }
        v /= 2;
        e += 1;
    }
    terms.reverse();
    terms
}

/// The number of non-zero CSD digits of `w`.
pub fn term_count(w: i32) -> u32 {
    csd_terms(w).len() as u32
}

/// For each value of `[-qmax, qmax]`, the nearest value with at most `t`
/// CSD terms.
struct NearestTerms {
    qmax: i32,
    table: Vec<i32>,
}

impl NearestTerms {
    fn new(weight_bits: u32, t: u32) -> NearestTerms {
        let qmax = (1i32 << (weight_bits - 1)) - 1;
        let allowed: Vec<i32> = (-qmax..=qmax).filter(|&v| term_count(v) <= t).collect();
        let table = (-qmax..=qmax)
            .map(|v| {
                // Allowed values are sorted; of two at equal distance the
                // smaller magnitude wins.
                *allowed
                    .iter()
                    .min_by_key(|&&a| ((a - v).abs(), a.abs()))
                    .expect("0 is always allowed")
            })
            .collect();
        NearestTerms { qmax, table }
    }

    fn nearest(&self, v: i32) -> i32 {
        self.table[(v.clamp(-self.qmax, self.qmax) + self.qmax) as usize]
    }
}

/// Keeps the `t` largest CSD terms of a group of weights (ties: the earlier
/// weight's first) and drops the rest, as Term Revealing does: each weight
/// becomes the sum of its kept terms, a prefix of its own terms, largest
/// first. A weight's term `2^(Bw-1)` alone would leave the weight range, so
/// it is kept only together with the next term (two of the budget).
fn keep_largest_terms(group: &mut [i32], t: u32, weight_bits: u32) {
    let terms: Vec<Vec<(i32, u32)>> = group.iter().map(|&w| csd_terms(w)).collect();
    if terms.iter().map(Vec::len).sum::<usize>() <= t as usize {
        return;
    }
    let mut all: Vec<(u32, usize, usize)> = Vec::new();
    for (i, ts) in terms.iter().enumerate() {
        all.extend(ts.iter().enumerate().map(|(r, &(_, e))| (e, i, r)));
    }
    all.sort_by_key(|&(e, i, _)| (std::cmp::Reverse(e), i));
    // How many leading terms each weight keeps; `closed` once one was skipped.
    let mut kept = vec![0usize; group.len()];
    let mut closed = vec![false; group.len()];
    let mut left = t as usize;
    for &(e, i, r) in &all {
        if closed[i] || r < kept[i] {
            continue;
        }
        let need = if r == 0 && e == weight_bits - 1 { 2 } else { 1 };
        if need > left {
            closed[i] = true;
            continue;
        }
        kept[i] = r + need;
        left -= need;
    }
    for ((v, ts), &k) in group.iter_mut().zip(&terms).zip(&kept) {
        *v = ts[..k].iter().map(|&(s, e)| s << e).sum();
    }
}

/// What a quantiser did to a weight set: its error and the terms it left.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QuantStats {
    /// `10 log10(sum w^2 / sum (w - q)^2)`; infinite when nothing changed.
    pub sqnr_db: f64,
    /// Weights whose value changed.
    pub changed: usize,
    /// Mean CSD terms per weight before and after.
    pub terms_before: f64,
    pub terms_after: f64,
}

impl QuantStats {
    /// Compares quantised weights `q` with the originals `w`.
    pub fn of(w: &[i32], q: &[i32]) -> QuantStats {
        let signal: f64 = w.iter().map(|&v| (v as f64).powi(2)).sum();
        let noise: f64 = w
            .iter()
            .zip(q)
            .map(|(&a, &b)| ((a - b) as f64).powi(2))
            .sum();
        let mean_terms = |v: &[i32]| {
            v.iter().map(|&x| term_count(x) as f64).sum::<f64>() / v.len().max(1) as f64
        };
        QuantStats {
            sqnr_db: if noise == 0.0 {
                f64::INFINITY
            } else {
                10.0 * (signal / noise).log10()
            },
            changed: w.iter().zip(q).filter(|(a, b)| a != b).count(),
            terms_before: mean_terms(w),
            terms_after: mean_terms(q),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(terms: &[(i32, u32)]) -> i32 {
        terms.iter().map(|&(s, e)| s << e).sum()
    }

    #[test]
    fn csd_terms_are_largest_first_and_sum_to_the_weight() {
        assert_eq!(csd_terms(7), vec![(1, 3), (-1, 0)]);
        assert_eq!(csd_terms(-96), vec![(-1, 7), (1, 5)]);
        assert_eq!(csd_terms(0), vec![]);
        assert_eq!(term_count(127), 2);
        assert_eq!(term_count(85), 4); // 1010101b
        for w in -127..=127 {
            let t = csd_terms(w);
            assert_eq!(value(&t), w);
            assert!(t.windows(2).all(|p| p[0].1 > p[1].1 + 1), "w={w}: {t:?}");
        }
    }

    #[test]
    fn term_budget_gives_the_nearest_value_with_that_many_terms() {
        let q = |w: i32, t: u32| {
            let mut v = [w];
            Quantizer {
                terms: Some(t),
                ..Quantizer::default()
            }
            .apply(&mut v, 1, 1, 8);
            v[0]
        };
        // 85 = 64 + 16 + 4 + 1: one term -> 64, two -> 80 (64 + 16) or 96
        // (128 - 32)? |85 - 80| = 5 < 11, so 80; three -> 84.
        assert_eq!(q(85, 1), 64);
        assert_eq!(q(85, 2), 80);
        assert_eq!(q(85, 3), 84);
        assert_eq!(q(85, 4), 85);
        // 3 is 4 - 1 (two terms); with one, 2 and 4 are equally near: 2.
        assert_eq!(q(3, 1), 2);
        assert_eq!(q(-3, 1), -2);
        // 127 = 128 - 1 but 128 is out of the 8-bit range: 127 -> 64 with one term.
        assert_eq!(q(127, 1), 64);
        assert_eq!(q(127, 2), 127);
        for t in 1..=4 {
            for w in -127..=127 {
                let v = q(w, t);
                assert!(term_count(v) <= t, "w={w} t={t} -> {v}");
                // Nothing with at most t terms is nearer.
                for u in -127..=127i32 {
                    if term_count(u) <= t {
                        assert!((u - w).abs() >= (v - w).abs(), "w={w} t={t}: {u} beats {v}");
                    }
                }
                if term_count(w) <= t {
                    assert_eq!(v, w);
                }
            }
        }
    }

    #[test]
    fn group_budget_keeps_the_largest_terms_of_each_group() {
        // One column, groups of 3 rows, 3 terms per group.
        // Group 0: 7 = 8 - 1, 96 = 128 - 32, 1: terms by size 128, 32, 8, 1, 1.
        let mut w = vec![7, 96, 1, 5, 0, 0, 3];
        let qz = Quantizer {
            group: Some((3, 3)),
            ..Quantizer::default()
        };
        qz.apply(&mut w, 7, 1, 8);
        // Kept: +128 and -32 (row 1) and +8 (row 0).
        assert_eq!(&w[..3], &[8, 96, 0]);
        // Group 1: 5 = 4 + 1 and two zeros: two terms, all kept.
        assert_eq!(&w[3..6], &[5, 0, 0]);
        // The short last group: 3 = 4 - 1, two terms, kept.
        assert_eq!(w[6], 3);
        // 127 = 128 - 1 keeps both of its terms or neither: alone, 128 would
        // leave the 8-bit range.
        let mut w3 = vec![127, 64];
        qz.apply(&mut w3, 2, 1, 8);
        assert_eq!(w3, vec![127, 64]);
        let two = Quantizer {
            group: Some((2, 2)),
            ..Quantizer::default()
        };
        let mut w4 = vec![127, 64, 96, 127];
        two.apply(&mut w4, 4, 1, 8);
        assert_eq!(w4, vec![127, 0, 96, 0]);
        let one = Quantizer {
            group: Some((2, 1)),
            ..Quantizer::default()
        };
        let mut w5 = vec![127, 64, 127, 3];
        one.apply(&mut w5, 4, 1, 8);
        assert_eq!(w5, vec![0, 64, 0, 4]);
        for w in -127..=127 {
            for t in 1..=3 {
                let mut v = [w, 1];
                Quantizer {
                    group: Some((2, t)),
                    ..Quantizer::default()
                }
                .apply(&mut v, 2, 1, 8);
                assert!(v.iter().all(|x| x.abs() <= 127), "w={w} t={t}: {v:?}");
                let used: u32 = v.iter().map(|&x| term_count(x)).sum();
                assert!(used <= t, "w={w} t={t}: {v:?}");
            }
        }
        // Two columns are budgeted separately.
        let mut w2 = vec![85, 1, 85, 1];
        qz.apply(&mut w2, 2, 2, 8);
        // Column 0: 85 (4 terms) and 85: terms 64,64,16,16,4,...: keeps 64, 64, 16 (row 0 first).
        assert_eq!((w2[0], w2[2]), (80, 64));
        assert_eq!((w2[1], w2[3]), (1, 1));
    }

    #[test]
    fn magnitude_order_sorts_rows_by_their_largest_weight_and_keeps_products() {
        let (k, n) = (5, 2);
        let w = vec![1, -2, 100, 3, -7, 7, 0, 0, 50, -100];
        let qz = Quantizer {
            row_order: RowOrder::Magnitude,
            ..Quantizer::default()
        };
        let perm = qz.row_permutation(&w, k, n).unwrap();
        // Row stats (max, sum): (2,3), (100,103), (7,14), (0,0), (100,150).
        assert_eq!(perm, vec![4, 1, 2, 0, 3]);
        let pw = permute_rows(&w, n, &perm);
        let x = vec![1, 2, 3, 4, 5, 5, 4, 3, 2, 1];
        let px = permute_inputs(&x, &perm);
        let y = |w: &[i32], x: &[i32]| -> Vec<i64> {
            (0..2)
                .flat_map(|b| {
                    (0..n).map(move |c| {
                        (0..k)
                            .map(|r| x[b * k + r] as i64 * w[r * n + c] as i64)
                            .sum()
                    })
                })
                .collect()
        };
        assert_eq!(y(&pw, &px), y(&w, &x));
        assert!(Quantizer::default().row_permutation(&w, k, n).is_none());
    }

    #[test]
    fn stats_and_labels() {
        let s = QuantStats::of(&[3, 4], &[2, 4]);
        assert!((s.sqnr_db - 10.0 * (25.0f64).log10()).abs() < 1e-12);
        assert_eq!(s.changed, 1);
        assert_eq!((s.terms_before, s.terms_after), (1.5, 1.0));
        assert_eq!(QuantStats::of(&[1], &[1]).sqnr_db, f64::INFINITY);
        assert_eq!(Quantizer::default().label(), "none");
        let q = Quantizer {
            terms: Some(2),
            group: Some((8, 12)),
            row_order: RowOrder::Magnitude,
        };
        assert_eq!(q.label(), "terms=2;group=8:12;rows=magnitude");
    }
}
