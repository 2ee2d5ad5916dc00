//! The working set a sampler chain narrows down: at first the caller's dense logit vector (index
//! = token id), and once a stage drops tokens, a list of `(id, logit)` pairs. Staying dense as
//! long as possible keeps the common chains cheap on 256k-token vocabularies: biases and
//! penalties touch only the tokens they name, and top-k turns the vector into a list of k entries
//! in linear time with `select_nth_unstable`.
//!
//! Filtering follows Hugging Face transformers' logits warpers (the oracle in the tests): top-k
//! keeps every token tied with the k-th logit, top-p keeps the smallest prefix of the sorted
//! distribution whose mass reaches p, min-p keeps tokens whose probability is at least min-p
//! times the top one, and each keeps at least one token.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

use crate::sampling::rng::Rng;

/// A candidate token and its current logit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TokenLogit {
    /// Token id.
    pub id: u32,
    /// Logit after the stages applied so far.
    pub logit: f32,
}

/// Largest logit first; equal logits by ascending id, so every order we produce is deterministic.
fn by_logit_desc(a: &TokenLogit, b: &TokenLogit) -> Ordering {
    b.logit.total_cmp(&a.logit).then(a.id.cmp(&b.id))
}

/// NaN logits (a broken model) are treated as impossible tokens rather than poisoning sorts.
fn clean(x: f32) -> f32 {
    if x.is_nan() {
        f32::NEG_INFINITY
    } else {
        x
    }
}

/// Top-k on a dense vector uses the heap scan when k is at most this fraction of the vocabulary;
/// for larger k a selection over the full list is cheaper than heap updates.
const DENSE_TOP_K_RATIO: usize = 16;

/// f32 ordered by `total_cmp`, for the top-k heap.
#[derive(Clone, Copy, PartialEq)]
struct TotalF32(f32);

impl Eq for TotalF32 {}

impl PartialOrd for TotalF32 {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for TotalF32 {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// Tokens to consider in the first round of the chunked top-p sort; the nucleus of a peaked
/// distribution usually fits, and each further round takes four times as many.
const TOP_P_FIRST_CHUNK: usize = 64;

/// The candidate set one `sample` call works on.
pub struct Candidates<'a> {
    dense: &'a mut [f32],
    list: &'a mut Vec<TokenLogit>,
    is_dense: bool,
    sorted: bool,
}

impl<'a> Candidates<'a> {
    /// Wraps the full logit vector; `list` is scratch space reused between calls.
    pub fn new(dense: &'a mut [f32], list: &'a mut Vec<TokenLogit>) -> Self {
        list.clear();
        Candidates {
            dense,
            list,
            is_dense: true,
            sorted: false,
        }
    }

    /// Number of tokens still in the running.
    pub fn len(&self) -> usize {
        if self.is_dense {
            self.dense.len()
        } else {
            self.list.len()
        }
    }

    /// True when no token is left (only for an empty vocabulary).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn materialize(&mut self) {
        if self.is_dense {
            self.list.clear();
            // Tokens at -inf (banned by a bias, NaN from the model) can never be drawn; leaving
            // them out keeps them out of every later stage's work.
            self.list.extend(
                self.dense
                    .iter()
                    .enumerate()
                    .filter(|(_, &l)| clean(l) != f32::NEG_INFINITY)
                    .map(|(i, &l)| TokenLogit {
                        id: i as u32,
                        logit: l,
                    }),
            );
            self.is_dense = false;
            self.sorted = false;
        }
    }

    /// Rewrites the logits of the tokens in `table` (sorted by id, ids unique) with `f`; ids
    /// outside the vocabulary or already filtered out are skipped.
    pub fn update<T>(&mut self, table: &[(u32, T)], mut f: impl FnMut(f32, &T) -> f32) {
        if self.is_dense {
            for (id, v) in table {
                if let Some(l) = self.dense.get_mut(*id as usize) {
                    *l = f(*l, v);
                }
            }
        } else {
            for c in self.list.iter_mut() {
                if let Ok(i) = table.binary_search_by_key(&c.id, |e| e.0) {
                    c.logit = clean(f(c.logit, &table[i].1));
                }
            }
            self.sorted = false;
        }
    }

    /// Divides every logit by `t` (temperature; Hugging Face divides rather than multiplying by
    /// the reciprocal, and so do we, to match bit for bit).
    pub fn divide(&mut self, t: f32) {
        if self.is_dense {
            self.dense.iter_mut().for_each(|l| *l /= t);
        } else {
            self.list.iter_mut().for_each(|c| c.logit /= t);
        }
    }

    /// Keeps the `k` largest logits and any tied with the k-th; 0 keeps everything.
    pub fn top_k(&mut self, k: usize) {
        if k == 0 || k >= self.len() {
            return;
        }
        if self.is_dense && k <= self.dense.len() / DENSE_TOP_K_RATIO {
            self.top_k_dense(k);
            return;
        }
        self.materialize();
        // Materializing drops -inf tokens, so the list may now be no longer than k.
        if k >= self.list.len() {
            return;
        }
        if !self.sorted {
            self.list.select_nth_unstable_by(k - 1, by_logit_desc);
        }
        let kth = self.list[k - 1].logit;
        // Tokens tied with the k-th may lie anywhere after it; pull them forward.
        let mut keep = k;
        for i in k..self.list.len() {
            if self.list[i].logit >= kth {
                self.list.swap(keep, i);
                keep += 1;
            }
        }
        // A sorted list keeps its order: its ties already follow the k-th contiguously.
        self.list.truncate(keep);
    }

    /// Top-k straight from the dense vector: one pass with a k-entry min-heap finds the k-th
    /// largest logit (most tokens fail the single comparison with the heap's minimum), and a
    /// second pass lists every token at or above it. No 256k-entry list is built or permuted.
    fn top_k_dense(&mut self, k: usize) {
        let mut heap: BinaryHeap<Reverse<TotalF32>> = BinaryHeap::with_capacity(k);
        for &l in self.dense.iter() {
            let l = clean(l);
            if heap.len() < k {
                heap.push(Reverse(TotalF32(l)));
            } else if let Some(mut min) = heap.peek_mut() {
                if l.total_cmp(&min.0 .0) == Ordering::Greater {
                    *min = Reverse(TotalF32(l));
                }
            }
        }
        let kth = heap.peek().map_or(f32::NEG_INFINITY, |m| m.0 .0);
        self.list.clear();
        self.list.extend(
            self.dense
                .iter()
                .enumerate()
                .filter(|(_, &l)| l >= kth && l != f32::NEG_INFINITY)
                .map(|(i, &l)| TokenLogit {
                    id: i as u32,
                    logit: l,
                }),
        );
        self.is_dense = false;
        self.sorted = false;
    }

    /// Keeps the most likely tokens until their probability mass reaches `p`; 1 keeps everything.
    pub fn top_p(&mut self, p: f32) {
        if p >= 1.0 || self.len() <= 1 {
            return;
        }
        self.materialize();
        let max = self
            .list
            .iter()
            .fold(f32::NEG_INFINITY, |m, c| m.max(c.logit));
        if !max.is_finite() {
            return;
        }
        let weight = |c: &TokenLogit| f64::from(c.logit - max).exp();
        let total: f64 = self.list.iter().map(weight).sum();
        let target = f64::from(p) * total;
        // Tokens lighter than (1 - p) / n of the mass can never be in the nucleus: together they
        // weigh less than 1 - p, and they are the lightest, so the tail they form is cut
        // whatever else is. Dropping them first (one linear pass) leaves little to sort for the
        // peaked distributions models produce. The 1e-6 slack keeps rounding from dropping a
        // token that sits exactly on the bound.
        let n_all = self.list.len() as f64;
        let light = ((1.0 - f64::from(p)) * total / n_all * (1.0 - 1e-6)).ln();
        if light.is_finite() {
            self.list.retain(|c| f64::from(c.logit - max) >= light);
        }
        // Sort only as much of the list as the nucleus needs: select the next chunk of largest
        // logits, sort that chunk, accumulate, and stop once the mass reaches the target.
        let mut cum = 0.0;
        let mut start = 0;
        let mut chunk = TOP_P_FIRST_CHUNK;
        let n = self.list.len();
        while start < n {
            let end = (start + chunk).min(n);
            if !self.sorted {
                if end < n {
                    self.list[start..].select_nth_unstable_by(end - start - 1, by_logit_desc);
                }
                self.list[start..end].sort_unstable_by(by_logit_desc);
            }
            for i in start..end {
                // Keep token i when the mass of the tokens ranked above it is still below p.
                if cum >= target {
                    self.list.truncate(i.max(1));
                    self.sorted = true;
                    return;
                }
                cum += weight(&self.list[i]);
            }
            start = end;
            chunk = chunk.saturating_mul(4);
        }
        self.sorted = true;
    }

    /// Drops tokens whose probability is below `min_p` times the most likely token's; 0 keeps all.
    pub fn min_p(&mut self, min_p: f32) {
        if min_p <= 0.0 || self.is_empty() {
            return;
        }
        let max = if self.is_dense {
            self.dense.iter().fold(f32::NEG_INFINITY, |m, &l| m.max(l))
        } else {
            self.list
                .iter()
                .fold(f32::NEG_INFINITY, |m, c| m.max(c.logit))
        };
        if !max.is_finite() {
            return;
        }
        // p_i / p_max = exp(l_i - l_max) >= min_p  <=>  l_i - l_max >= ln(min_p): one logarithm
        // instead of an exponential per token, in f64 so the cut sits where the exact
        // probabilities put it. The top token always passes (0 >= ln(min_p) for min_p <= 1).
        let log_min_p = f64::from(min_p).ln();
        let keep = |l: f32| f64::from(l - max) >= log_min_p;
        if self.is_dense {
            self.list.clear();
            self.list.extend(
                self.dense
                    .iter()
                    .enumerate()
                    .filter(|(_, &l)| !l.is_nan() && keep(l))
                    .map(|(i, &l)| TokenLogit {
                        id: i as u32,
                        logit: l,
                    }),
            );
            self.is_dense = false;
            self.sorted = false;
        } else {
            self.list.retain(|c| keep(c.logit));
        }
    }

    /// The token with the largest logit; ties go to the lowest id. 0 for an empty set.
    pub fn argmax(&self) -> u32 {
        if self.is_dense {
            let mut best = 0usize;
            let mut best_l = f32::NEG_INFINITY;
            for (i, &l) in self.dense.iter().enumerate() {
                if l > best_l {
                    best = i;
                    best_l = l;
                }
            }
            best as u32
        } else {
            self.list
                .iter()
                .min_by(|a, b| by_logit_desc(a, b))
                .map_or(0, |c| c.id)
        }
    }

    /// Draws a token from the softmax of the remaining logits. Falls back to the argmax when no
    /// token has positive probability (every logit -inf).
    pub fn draw(&mut self, rng: &mut Rng, weights: &mut Vec<f32>) -> u32 {
        let max = if self.is_dense {
            self.dense.iter().fold(f32::NEG_INFINITY, |m, &l| m.max(l))
        } else {
            self.list
                .iter()
                .fold(f32::NEG_INFINITY, |m, c| m.max(c.logit))
        };
        if !max.is_finite() {
            return self.argmax();
        }
        weights.clear();
        if self.is_dense {
            weights.extend(
                self.dense
                    .iter()
                    .map(|&l| if l.is_nan() { 0.0 } else { (l - max).exp() }),
            );
        } else {
            weights.extend(self.list.iter().map(|c| (c.logit - max).exp()));
        }
        let total: f64 = weights.iter().map(|&w| f64::from(w)).sum();
        let u = rng.next_f64() * total;
        let mut cum = 0.0;
        let mut last = None;
        for (i, &w) in weights.iter().enumerate() {
            if w > 0.0 {
                cum += f64::from(w);
                last = Some(i);
                if cum > u {
                    return self.id_at(i);
                }
            }
        }
        // Rounding can leave `u` a hair above the final sum; the last possible token takes it.
        last.map_or_else(|| self.argmax(), |i| self.id_at(i))
    }

    fn id_at(&self, i: usize) -> u32 {
        if self.is_dense {
            i as u32
        } else {
            self.list[i].id
        }
    }

    /// The surviving candidates with their current logits (materializing the list if needed);
    /// tokens at -inf are not candidates.
    pub fn as_list(&mut self) -> &[TokenLogit] {
        self.materialize();
        self.list
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(c: &mut Candidates) -> Vec<u32> {
        let mut v: Vec<u32> = c.as_list().iter().map(|t| t.id).collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn top_k_keeps_ties_with_the_kth() {
        let mut logits = vec![1.0, 3.0, 2.0, 2.0, 0.5, 2.0];
        let mut scratch = Vec::new();
        let mut c = Candidates::new(&mut logits, &mut scratch);
        c.top_k(2);
        assert_eq!(ids(&mut c), vec![1, 2, 3, 5]);
    }

    #[test]
    fn dense_heap_top_k_equals_selection_top_k() {
        let mut rng = Rng::new(11);
        for round in 0..200 {
            let n = 64 + (rng.next_u64() % 2000) as usize;
            // Coarse values make many ties at the k-th logit; a few -inf and NaN as well.
            let base: Vec<f32> = (0..n)
                .map(|_| match rng.next_u64() % 50 {
                    0 => f32::NEG_INFINITY,
                    1 => f32::NAN,
                    _ => (rng.next_f64() * 8.0).round() as f32 - 4.0,
                })
                .collect();
            let k = 1 + (rng.next_u64() % (n as u64 / 16)) as usize;
            let mut a = base.clone();
            let mut sa = Vec::new();
            let mut ca = Candidates::new(&mut a, &mut sa);
            ca.top_k(k); // dense heap path (k <= n / 16)
            let mut b = base.clone();
            let mut sb = Vec::new();
            let mut cb = Candidates::new(&mut b, &mut sb);
            cb.materialize();
            cb.top_k(k); // list selection path
            assert_eq!(ids(&mut ca), ids(&mut cb), "round {round} n {n} k {k}");
        }
    }

    #[test]
    fn top_p_keeps_the_token_that_crosses_p() {
        // probabilities 0.5, 0.25, 0.125, 0.125 (logits are log2-spaced)
        let l = std::f32::consts::LN_2;
        let mut logits = vec![3.0 * l, 2.0 * l, l, l];
        let mut scratch = Vec::new();
        let mut c = Candidates::new(&mut logits, &mut scratch);
        c.top_p(0.6);
        assert_eq!(ids(&mut c), vec![0, 1]);
    }

    #[test]
    fn top_p_over_many_chunks_matches_full_sort() {
        let n = 5000;
        let mut rng = Rng::new(3);
        let base: Vec<f32> = (0..n).map(|_| (rng.next_f64() * 4.0) as f32).collect();
        for p in [0.1f32, 0.5, 0.9, 0.999] {
            let mut logits = base.clone();
            let mut scratch = Vec::new();
            let mut c = Candidates::new(&mut logits, &mut scratch);
            c.top_p(p);
            let got = ids(&mut c);
            // Reference: full sort, then the same rule.
            let mut order: Vec<usize> = (0..n).collect();
            order.sort_by(|&a, &b| base[b].total_cmp(&base[a]).then(a.cmp(&b)));
            let max = base[order[0]];
            let w: Vec<f64> = order
                .iter()
                .map(|&i| f64::from(base[i] - max).exp())
                .collect();
            let total: f64 = w.iter().sum();
            let mut cum = 0.0;
            let mut want = Vec::new();
            for (r, &i) in order.iter().enumerate() {
                if cum >= f64::from(p) * total {
                    break;
                }
                cum += w[r];
                want.push(i as u32);
            }
            want.sort_unstable();
            assert_eq!(got, want, "p = {p}");
        }
    }

    #[test]
    fn nan_and_all_banned_do_not_panic() {
        let mut logits = vec![f32::NAN, f32::NEG_INFINITY, f32::NEG_INFINITY];
        let mut scratch = Vec::new();
        let mut weights = Vec::new();
        let mut rng = Rng::new(0);
        let mut c = Candidates::new(&mut logits, &mut scratch);
        c.top_k(2);
        c.top_p(0.5);
        c.min_p(0.1);
        let t = c.draw(&mut rng, &mut weights);
        assert!(t < 3);
    }
}
