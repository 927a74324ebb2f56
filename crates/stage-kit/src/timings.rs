//! Summaries of repeated timings, for benchmarks: the fastest run (the machine's speed with
//! the least interference from other work) and the median (a typical run).

/// The smallest value; infinite when there is none.
pub fn fastest(seconds: &[f64]) -> f64 {
    seconds.iter().copied().fold(f64::INFINITY, f64::min)
}

/// The median (mean of the two middle values for an even count); NaN when there is none.
pub fn median(seconds: &[f64]) -> f64 {
    if seconds.is_empty() {
        return f64::NAN;
    }
    let mut sorted = seconds.to_vec();
    sorted.sort_by(f64::total_cmp);
    let m = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[m]
    } else {
        0.5 * (sorted[m - 1] + sorted[m])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fastest_and_median_of_odd_and_even_counts() {
        assert_eq!(fastest(&[3.0, 1.0, 2.0]), 1.0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&[]).is_nan());
        assert_eq!(fastest(&[]), f64::INFINITY);
    }
}
