//! pass@k, the unbiased estimator of Chen et al. (2021): with n samples of which c pass,
//! pass@k = 1 − C(n−c, k) / C(n, k), computed as the numerically stable product
//! 1 − ∏_{i=n−c+1}^{n} (1 − k/i), and averaged over problems.

/// pass@k of one problem with `n` samples of which `c` passed. `None` when k is 0 or above n.
pub fn pass_at_k(n: u64, c: u64, k: u64) -> Option<f64> {
    if k == 0 || k > n || c > n {
        return None;
    }
    if n - c < k {
        return Some(1.0);
    }
    let product: f64 = ((n - c + 1)..=n)
        .map(|i| 1.0 - k as f64 / i as f64)
        .product();
    Some(1.0 - product)
}

/// Mean pass@k over problems given as `(n, c)`; `None` when no problem has at least k samples.
pub fn mean_pass_at_k(problems: &[(u64, u64)], k: u64) -> Option<f64> {
    let values: Vec<f64> = problems
        .iter()
        .filter_map(|&(n, c)| pass_at_k(n, c, k))
        .collect();
    (!values.is_empty() && values.len() == problems.len())
        .then(|| values.iter().sum::<f64>() / values.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn hand_computed_values() {
        // k = 1 is the pass fraction.
        assert!(close(pass_at_k(10, 3, 1).unwrap(), 0.3));
        // n=5, c=2, k=2: 1 - C(3,2)/C(5,2) = 1 - 3/10.
        assert!(close(pass_at_k(5, 2, 2).unwrap(), 0.7));
        // n=10, c=1, k=5: 1 - C(9,5)/C(10,5) = 1 - 126/252.
        assert!(close(pass_at_k(10, 1, 5).unwrap(), 0.5));
        // n=4, c=1, k=2: 1 - C(3,2)/C(4,2) = 1 - 3/6.
        assert!(close(pass_at_k(4, 1, 2).unwrap(), 0.5));
        // n=20, c=4, k=10: 1 - C(16,10)/C(20,10) = 1 - 8008/184756.
        assert!(close(
            pass_at_k(20, 4, 10).unwrap(),
            1.0 - 8008.0 / 184756.0
        ));
    }

    #[test]
    fn edges() {
        assert_eq!(pass_at_k(10, 0, 5), Some(0.0));
        assert_eq!(pass_at_k(10, 10, 10), Some(1.0));
        // Fewer failures than k: every k-subset contains a pass.
        assert_eq!(pass_at_k(10, 8, 3), Some(1.0));
        assert_eq!(pass_at_k(1, 1, 1), Some(1.0));
        assert_eq!(pass_at_k(3, 1, 4), None);
        assert_eq!(pass_at_k(3, 1, 0), None);
        assert_eq!(pass_at_k(3, 4, 1), None);
    }

    #[test]
    fn stable_for_large_n() {
        // n=200, c=1, k=100: 1 - C(199,100)/C(200,100) = 1 - 100/200; binomials overflow f64 here.
        assert!((pass_at_k(200, 1, 100).unwrap() - 0.5).abs() < 1e-12);
        let v = pass_at_k(1000, 3, 1).unwrap();
        assert!(close(v, 0.003));
    }

    #[test]
    fn mean_over_problems() {
        let problems = [(1, 1), (1, 0), (1, 0), (1, 1)];
        assert_eq!(mean_pass_at_k(&problems, 1), Some(0.5));
        assert_eq!(mean_pass_at_k(&problems, 2), None);
        assert_eq!(mean_pass_at_k(&[], 1), None);
        assert!(close(
            mean_pass_at_k(&[(5, 2), (10, 1)], 2).unwrap(),
            (0.7 + 0.2) / 2.0
        ));
    }
}
