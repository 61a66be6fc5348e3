//! Closed forms of Amar, Barak, Drezner and Okun (2009) for the window gossip, as in gossimon's
//! libgossip/gossiplib.c (notes/anchors-mission.md §1.10). Unit: one gossip step.

/// `(expected average age, expected maximal age)` in steps for `n` nodes and window `w`.
///
/// Returns `None` where the formula is undefined (`n < 3`, `w < 1` or `w >= n`).
pub fn expected_ages(n: usize, w: usize) -> Option<(f64, f64)> {
    if n < 3 || w < 1 || w >= n {
        return None;
    }
    let nf = n as f64;
    let wf = w as f64;
    let t = (wf * (nf - 1.0) / (nf - wf)).ln() * (nf - 1.0) / nf;
    let e = (nf * t / (nf - 1.0)).exp();
    let xt = nf * e / (nf - 1.0 + e);
    let aw = t - ((nf - 1.0) / xt) * ((nf - 1.0 + e).ln() - nf.ln());
    let av = 1.0 / (1.0 - (1.0 - 1.0 / (nf - 1.0)).powf(xt)) + aw;
    let mx = -(nf.ln() + 0.577) / (xt * (1.0 - 1.0 / (nf - 1.0)).ln());
    if av.is_finite() && mx.is_finite() {
        Some((av, mx))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn matches_the_values_in_the_notes() {
        let (av, mx) = super::expected_ages(16, 8).unwrap();
        assert!((av - 3.72).abs() < 0.01 && (mx - 6.07).abs() < 0.01, "{av} {mx}");
        let (av, _) = super::expected_ages(8, 4).unwrap();
        assert!((av - 2.90).abs() < 0.01);
        assert!(super::expected_ages(2, 1).is_none());
    }
}
