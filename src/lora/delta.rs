//! The LoRA update in plain f32 (the reference every backend's `lora_add` is checked against),
//! and the row permutation that puts a Q/K adapter into llama.cpp's adjacent-pair RoPE layout.

use super::LoraPair;
use crate::error::{Error, Result};

/// Adds the LoRA update of `pair` for `n` input rows: `out += scale * scaling * (x Aᵀ) Bᵀ`, with
/// `x` `n x in` and `out` `n x out`, row-major, all in f32. `scale` is the per-request multiplier
/// (1 = the adapter as trained; PEFT's `rescale_adapter_scale` / `LoraLayer.set_scale`).
///
/// The order of operations is PEFT's: `lora_B(lora_A(x))` first, then one multiply by the combined
/// factor, then the add into the base projection's output.
pub fn add_delta(pair: &LoraPair, x: &[f32], n: usize, scale: f32, out: &mut [f32]) -> Result<()> {
    let (din, dout, r) = (pair.in_features, pair.out_features, pair.rank);
    let need_x = n.checked_mul(din);
    let need_out = n.checked_mul(dout);
    if need_x != Some(x.len()) || need_out != Some(out.len()) {
        return Err(Error::InvalidArgument(format!(
            "LoRA delta for {n} rows of {din} -> {dout}: got {} inputs and {} outputs",
            x.len(),
            out.len()
        )));
    }
    if pair.a.len() != r * din || pair.b.len() != dout * r {
        return Err(Error::Internal(format!(
            "LoRA pair of rank {r} holds {} + {} values for {din} -> {dout}",
            pair.a.len(),
            pair.b.len()
        )));
    }
    let factor = pair.factor(scale);
    let mut t = vec![0f32; r];
    for (xr, or) in x
        .chunks_exact(din.max(1))
        .zip(out.chunks_exact_mut(dout.max(1)))
    {
        for (tj, arow) in t.iter_mut().zip(pair.a.chunks_exact(din.max(1))) {
            *tj = crate::quant::dot_f32(arow, xr);
        }
        for (o, brow) in or.iter_mut().zip(pair.b.chunks_exact(r.max(1))) {
            *o += factor * crate::quant::dot_f32(brow, &t);
        }
    }
    Ok(())
}

/// Folds the update of `pair` into a row-major `out x in` f32 weight: `w += scale * scaling * B A`
/// (merged inference for a single fixed adapter, and a second reference for [`add_delta`]).
pub fn merge_into(pair: &LoraPair, w: &mut [f32], scale: f32) -> Result<()> {
    let (din, dout, r) = (pair.in_features, pair.out_features, pair.rank);
    if Some(w.len()) != din.checked_mul(dout) || pair.a.len() != r * din || pair.b.len() != dout * r
    {
        return Err(Error::InvalidArgument(format!(
            "cannot merge a rank-{r} LoRA pair for {din} -> {dout} into a weight of {} values",
            w.len()
        )));
    }
    let factor = pair.factor(scale);
    for (wrow, brow) in w
        .chunks_exact_mut(din.max(1))
        .zip(pair.b.chunks_exact(r.max(1)))
    {
        for (&bj, arow) in brow.iter().zip(pair.a.chunks_exact(din.max(1))) {
            let f = factor * bj;
            for (wi, &ai) in wrow.iter_mut().zip(arow) {
                *wi += f * ai;
            }
        }
    }
    Ok(())
}

/// Reorders the rows of a row-major `rows x cols` matrix whose rows are `n_head` heads of
/// `rows / n_head` features, as llama.cpp's converter reorders Llama `attn_q`/`attn_k` rows: in
/// each head, Hugging Face's rotate-half pair `(i, i + d/2)` becomes the adjacent pair
/// `(2i, 2i + 1)`. Fails unless each head has an even number of rows.
pub fn permute_rows_for_adjacent_rope(
    m: &[f32],
    rows: usize,
    cols: usize,
    n_head: usize,
) -> Result<Vec<f32>> {
    if n_head == 0
        || !rows.is_multiple_of(n_head)
        || !(rows / n_head).is_multiple_of(2)
        || Some(m.len()) != rows.checked_mul(cols)
    {
        return Err(Error::InvalidArgument(format!(
            "cannot permute {rows} x {cols} rows ({} values) into {n_head} heads of adjacent RoPE pairs",
            m.len()
        )));
    }
    let hd = rows / n_head;
    let half = hd / 2;
    let mut out = Vec::with_capacity(m.len());
    for h in 0..n_head {
        for i in 0..half {
            for j in 0..2 {
                let src = h * hd + j * half + i;
                out.extend_from_slice(&m[src * cols..(src + 1) * cols]);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(
        a: Vec<f32>,
        b: Vec<f32>,
        rank: usize,
        din: usize,
        dout: usize,
        scaling: f32,
    ) -> LoraPair {
        LoraPair {
            a,
            b,
            rank,
            in_features: din,
            out_features: dout,
            scaling,
        }
    }

    #[test]
    fn delta_matches_explicit_matrix_product() {
        // A = [[1, 2, 3]], B = [[1], [-1]], scaling 2, scale 0.5: delta = (x . [1,2,3]) * [1, -1].
        let p = pair(vec![1.0, 2.0, 3.0], vec![1.0, -1.0], 1, 3, 2, 2.0);
        let x = [1.0, 0.0, 1.0, 0.5, 0.5, 0.5];
        let mut out = [10.0, 10.0, 0.0, 0.0];
        add_delta(&p, &x, 2, 0.5, &mut out).unwrap();
        assert_eq!(out, [14.0, 6.0, 3.0, -3.0]);
    }

    #[test]
    fn merged_weight_gives_the_same_update() {
        let p = pair(
            vec![1.0, 2.0, 3.0, 0.5, -1.0, 0.25],
            vec![1.0, -1.0, 2.0, 0.0],
            2,
            3,
            2,
            1.5,
        );
        let mut w = vec![0.0; 6];
        merge_into(&p, &mut w, 0.5).unwrap();
        let x = [0.3, -0.7, 1.1];
        let mut via_delta = [0.0; 2];
        add_delta(&p, &x, 1, 0.5, &mut via_delta).unwrap();
        for (o, row) in w.chunks(3).enumerate() {
            let via_merge: f32 = row.iter().zip(&x).map(|(a, b)| a * b).sum();
            assert!(
                (via_merge - via_delta[o]).abs() < 1e-6,
                "{via_merge} vs {}",
                via_delta[o]
            );
        }
        assert!(merge_into(&p, &mut w[..5], 1.0).is_err());
    }

    #[test]
    fn wrong_lengths_are_errors() {
        let p = pair(vec![1.0, 2.0, 3.0], vec![1.0, -1.0], 1, 3, 2, 1.0);
        let mut out = [0.0; 4];
        assert!(add_delta(&p, &[0.0; 5], 2, 1.0, &mut out).is_err());
        assert!(add_delta(&p, &[0.0; 6], 2, 1.0, &mut out[..3]).is_err());
        assert!(add_delta(&p, &[0.0; 6], usize::MAX, 1.0, &mut out).is_err());
    }

    #[test]
    fn permutation_pairs_half_rows_into_adjacent_rows() {
        // Two heads of four rows (one column): rows [h0: 0 1 2 3, h1: 4 5 6 7] become
        // [0 2 1 3, 4 6 5 7] (pairs (0,2), (1,3) adjacent).
        let m: Vec<f32> = (0..8).map(|v| v as f32).collect();
        let p = permute_rows_for_adjacent_rope(&m, 8, 1, 2).unwrap();
        assert_eq!(p, vec![0.0, 2.0, 1.0, 3.0, 4.0, 6.0, 5.0, 7.0]);
        assert!(permute_rows_for_adjacent_rope(&m, 8, 1, 3).is_err());
        assert!(permute_rows_for_adjacent_rope(&m, 8, 1, 8).is_err());
    }
}
