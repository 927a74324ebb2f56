//! Per-step schedules (learning rate, weight decay, teacher momentum, teacher temperature),
//! as functions of the global step so that a resumed run continues them exactly.

/// Linear warm-up from `start` to `base` over `warmup_steps`, then a half cosine from `base`
/// to `end` at `total_steps` (DINO's `cosine_scheduler`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cosine {
    pub start: f64,
    pub base: f64,
    pub end: f64,
    pub warmup_steps: usize,
    pub total_steps: usize,
}

impl Cosine {
    /// A cosine from `base` to `end` without warm-up.
    pub fn new(base: f64, end: f64, total_steps: usize) -> Self {
        Cosine {
            start: base,
            base,
            end,
            warmup_steps: 0,
            total_steps,
        }
    }

    pub fn with_warmup(self, start: f64, warmup_steps: usize) -> Self {
        Cosine {
            start,
            warmup_steps: warmup_steps.min(self.total_steps),
            ..self
        }
    }

    pub fn at(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.start + (self.base - self.start) * step as f64 / self.warmup_steps as f64;
        }
        let span = self.total_steps.saturating_sub(self.warmup_steps).max(1);
        let progress = ((step - self.warmup_steps) as f64 / span as f64).min(1.0);
        self.end + 0.5 * (self.base - self.end) * (1.0 + (std::f64::consts::PI * progress).cos())
    }
}

/// Teacher temperature: linear from `warmup` to `final_temp` over `warmup_epochs`, then flat.
pub fn teacher_temperature(
    warmup: f64,
    final_temp: f64,
    warmup_epochs: usize,
    epoch_progress: f64,
) -> f64 {
    if warmup_epochs == 0 || epoch_progress >= warmup_epochs as f64 {
        return final_temp;
    }
    warmup + (final_temp - warmup) * epoch_progress / warmup_epochs as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine() {
        let s = Cosine::new(1.0, 0.0, 110).with_warmup(0.0, 10);
        assert_eq!(s.at(0), 0.0);
        assert!((s.at(5) - 0.5).abs() < 1e-12);
        assert!((s.at(10) - 1.0).abs() < 1e-12);
        assert!((s.at(60) - 0.5).abs() < 1e-12);
        assert!(s.at(110).abs() < 1e-12);
        assert!(s.at(500).abs() < 1e-12);
    }

    #[test]
    fn teacher_momentum_goes_from_0996_to_1() {
        let m = Cosine::new(0.996, 1.0, 1000);
        assert_eq!(m.at(0), 0.996);
        assert!((m.at(1000) - 1.0).abs() < 1e-12);
        assert!(m.at(500) > 0.996 && m.at(500) < 1.0);
    }

    #[test]
    fn teacher_temperature_warms_up_linearly() {
        assert_eq!(teacher_temperature(0.04, 0.07, 0, 0.0), 0.07);
        assert!((teacher_temperature(0.04, 0.07, 10, 5.0) - 0.055).abs() < 1e-12);
        assert_eq!(teacher_temperature(0.04, 0.07, 10, 12.0), 0.07);
    }
}
