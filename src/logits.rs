//! Reading a row of logits: the top classes and a softmax probability.

/// Indices of the `k` largest values, largest first; ties go to the lower index.
pub fn top_k(row: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..row.len()).collect();
    idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
    idx.truncate(k.min(row.len()));
    idx
}

/// Softmax probability of class `c` given logits `row`.
pub fn softmax_at(row: &[f32], c: usize) -> f32 {
    let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let z: f64 = row.iter().map(|&v| ((v - m) as f64).exp()).sum();
    (((row[c] - m) as f64).exp() / z) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_orders_and_breaks_ties_low() {
        assert_eq!(top_k(&[1.0, 3.0, 3.0, 0.0, 2.0, 5.0], 3), vec![5, 1, 2]);
        assert_eq!(top_k(&[1.0, 2.0], 5), vec![1, 0]);
    }

    #[test]
    fn softmax_matches_closed_form() {
        let p = softmax_at(&[0.0, (3.0f32).ln()], 1);
        assert!((p - 0.75).abs() < 1e-6);
        // Large logits must not overflow.
        assert!((softmax_at(&[1000.0, 1000.0], 0) - 0.5).abs() < 1e-6);
    }
}
