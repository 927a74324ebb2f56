//! Limited-memory BFGS (Nocedal & Wright, Numerical Optimization, 2nd ed., alg. 7.4/7.5)
//! with a bisection line search for the strong Wolfe conditions; meant for smooth convex
//! objectives such as L2-regularised logistic regression.

/// L-BFGS settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lbfgs {
    /// Correction pairs kept.
    pub memory: usize,
    pub max_iterations: usize,
    /// Converged when the largest gradient component is at most this.
    pub gradient_tolerance: f64,
}

/// Where the minimiser stopped.
#[derive(Debug, Clone, PartialEq)]
pub struct Minimum {
    pub x: Vec<f64>,
    pub value: f64,
    pub iterations: usize,
    /// False when `max_iterations` ran out or the line search could not make progress.
    pub converged: bool,
}

/// Sufficient decrease and curvature constants of the strong Wolfe conditions.
const C1: f64 = 1e-4;
const C2: f64 = 0.9;
const MAX_LINE_SEARCH: usize = 50;
/// Relative change of the objective below which it counts as unchanged.
const FLAT: f64 = 1e-12;

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn max_abs(a: &[f64]) -> f64 {
    a.iter().fold(0.0, |m, v| m.max(v.abs()))
}

impl Lbfgs {
    /// Minimises `objective`, which returns f(x) and writes the gradient into its second
    /// argument, starting from `x`.
    pub fn minimize(
        &self,
        mut x: Vec<f64>,
        mut objective: impl FnMut(&[f64], &mut [f64]) -> f64,
    ) -> Minimum {
        let n = x.len();
        let mut gradient = vec![0.0; n];
        let mut value = objective(&x, &mut gradient);
        let mut pairs: std::collections::VecDeque<(Vec<f64>, Vec<f64>, f64)> =
            std::collections::VecDeque::with_capacity(self.memory);
        let (mut trial, mut trial_gradient) = (vec![0.0; n], vec![0.0; n]);
        for iteration in 0..self.max_iterations {
            if max_abs(&gradient) <= self.gradient_tolerance {
                return Minimum {
                    x,
                    value,
                    iterations: iteration,
                    converged: true,
                };
            }
            let mut direction = self.direction(&gradient, &pairs);
            let mut slope = dot(&gradient, &direction);
            if slope >= 0.0 {
                // Not a descent direction (numerical trouble): restart from steepest descent.
                pairs.clear();
                direction = gradient.iter().map(|g| -g).collect();
                slope = dot(&gradient, &direction);
            }
            // The first step is scaled so that it moves at most one unit.
            let mut step = if pairs.is_empty() {
                1.0_f64.min(1.0 / max_abs(&direction))
            } else {
                1.0
            };
            let (mut low, mut high) = (0.0, f64::INFINITY);
            let mut accepted = None;
            for _ in 0..MAX_LINE_SEARCH {
                for ((t, xi), d) in trial.iter_mut().zip(&x).zip(&direction) {
                    *t = xi + step * d;
                }
                let trial_value = objective(&trial, &mut trial_gradient);
                let trial_slope = dot(&trial_gradient, &direction);
                // Near the minimum, decreases vanish in rounding: there the gradient alone
                // guides the search (Hager & Zhang's approximate Wolfe conditions).
                let sufficient = trial_value <= value + C1 * step * slope
                    || (trial_value - value).abs() <= FLAT * value.abs();
                if !trial_value.is_finite() || !sufficient {
                    high = step;
                } else if trial_slope.abs() <= -C2 * slope {
                    accepted = Some(trial_value);
                    break;
                } else if trial_slope > 0.0 {
                    high = step;
                } else {
                    low = step;
                }
                step = if high.is_finite() {
                    0.5 * (low + high)
                } else {
                    2.0 * step
                };
            }
            let Some(new_value) = accepted else {
                return Minimum {
                    x,
                    value,
                    iterations: iteration,
                    converged: false,
                };
            };
            let s: Vec<f64> = direction.iter().map(|d| step * d).collect();
            let y: Vec<f64> = trial_gradient
                .iter()
                .zip(&gradient)
                .map(|(a, b)| a - b)
                .collect();
            let sy = dot(&s, &y);
            if sy > 1e-12 * dot(&y, &y).max(f64::MIN_POSITIVE) {
                if pairs.len() == self.memory {
                    pairs.pop_front();
                }
                pairs.push_back((s, y, 1.0 / sy));
            }
            std::mem::swap(&mut x, &mut trial);
            std::mem::swap(&mut gradient, &mut trial_gradient);
            value = new_value;
        }
        let converged = max_abs(&gradient) <= self.gradient_tolerance;
        Minimum {
            x,
            value,
            iterations: self.max_iterations,
            converged,
        }
    }

    /// -H g by the two-loop recursion over the stored (s, y, 1 / s.y) pairs.
    fn direction(
        &self,
        gradient: &[f64],
        pairs: &std::collections::VecDeque<(Vec<f64>, Vec<f64>, f64)>,
    ) -> Vec<f64> {
        let mut q: Vec<f64> = gradient.to_vec();
        let mut alphas = Vec::with_capacity(pairs.len());
        for (s, y, rho) in pairs.iter().rev() {
            let alpha = rho * dot(s, &q);
            q.iter_mut().zip(y).for_each(|(q, y)| *q -= alpha * y);
            alphas.push(alpha);
        }
        if let Some((s, y, _)) = pairs.back() {
            let gamma = dot(s, y) / dot(y, y);
            q.iter_mut().for_each(|q| *q *= gamma);
        }
        for ((s, y, rho), alpha) in pairs.iter().zip(alphas.iter().rev()) {
            let beta = rho * dot(y, &q);
            q.iter_mut()
                .zip(s)
                .for_each(|(q, s)| *q += (alpha - beta) * s);
        }
        q.iter_mut().for_each(|q| *q = -*q);
        q
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimises_an_ill_conditioned_quadratic_and_rosenbrock() {
        let lbfgs = Lbfgs {
            memory: 8,
            max_iterations: 500,
            gradient_tolerance: 1e-10,
        };
        let scales = [1.0, 10.0, 100.0, 1000.0];
        let quadratic = lbfgs.minimize(vec![1.0; 4], |x, g| {
            let mut f = 0.0;
            for i in 0..4 {
                g[i] = scales[i] * (x[i] - i as f64);
                f += 0.5 * scales[i] * (x[i] - i as f64).powi(2);
            }
            f
        });
        assert!(quadratic.converged, "{quadratic:?}");
        for (i, xi) in quadratic.x.iter().enumerate() {
            assert!((xi - i as f64).abs() < 1e-9);
        }
        let rosenbrock = lbfgs.minimize(vec![-1.2, 1.0], |x, g| {
            let (a, b) = (1.0 - x[0], x[1] - x[0] * x[0]);
            g[0] = -2.0 * a - 400.0 * x[0] * b;
            g[1] = 200.0 * b;
            a * a + 100.0 * b * b
        });
        assert!(rosenbrock.converged, "{rosenbrock:?}");
        assert!((rosenbrock.x[0] - 1.0).abs() < 1e-6 && (rosenbrock.x[1] - 1.0).abs() < 1e-6);
    }
}
