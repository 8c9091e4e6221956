//! Vector helpers of the attacks: the top class of a logit row and ℓp norms.

/// Index of the largest value; ties go to the lowest index.
pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

/// ℓ2 norm (accumulated in f64).
pub fn l2(v: &[f32]) -> f64 {
    v.iter()
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt()
}

/// ℓ∞ norm.
pub fn linf(v: &[f32]) -> f64 {
    v.iter().fold(0.0f64, |m, &x| m.max(f64::from(x.abs())))
}

/// ℓ1 norm (accumulated in f64).
pub fn l1(v: &[f32]) -> f64 {
    v.iter().map(|&x| f64::from(x.abs())).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_ties_go_to_the_lowest_index() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
        assert_eq!(argmax(&[0.0]), 0);
    }

    #[test]
    fn norms() {
        let v = [3.0f32, -4.0];
        assert_eq!(l2(&v), 5.0);
        assert_eq!(linf(&v), 4.0);
        assert_eq!(l1(&v), 7.0);
    }
}
