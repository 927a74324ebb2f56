//! The DET curve (miss against false-alarm probability on probit axes, Martin et al. 1997)
//! with the EER and the minDCF operating points marked.

use std::ops::Range;

use plotters::coord::Shift;
use plotters::coord::ranged1d::{KeyPointHint, NoDefaultFormatting, Ranged, ValueFormatter};
use plotters::prelude::*;

use crate::plot::{FAMILY, Figure, probit};
use crate::sv::detection::{MinDcf, Roc};

/// Axis ticks (probabilities); those inside the axis range are drawn.
const TICKS: &[f64] = &[
    0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 0.9,
    0.95, 0.98,
];

/// Curve points closer than this (in probit units) to the last drawn one are skipped: a
/// VoxCeleb1-H list has ~10^5 operating points, far more than a figure can show.
const MIN_STEP: f64 = 0.004;

/// A DET plot of one system.
pub struct DetPlot<'a> {
    pub roc: &'a Roc,
    pub eer: f64,
    pub min_dcfs: &'a [MinDcf],
    pub title: String,
}

impl DetPlot<'_> {
    /// Probability range of both axes: down to the finest resolution of the trial list
    /// (at most 0.01 %), up to 50 % (99 % for systems worse than 25 % EER); the low end stays
    /// below half the high one, however few the trials.
    fn range(&self) -> (f64, f64) {
        let finest = 1.0 / self.roc.num_targets.max(self.roc.num_nontargets) as f64;
        let high = if self.eer < 0.25 { 0.5 } else { 0.99 };
        let low = TICKS
            .iter()
            .copied()
            .rfind(|&t| t <= finest.min(high / 2.0))
            .unwrap_or(TICKS[0]);
        (low, high)
    }

    /// Curve points in probit coordinates, clipped to the axes and thinned.
    fn curve(&self, low: f64, high: f64) -> Vec<(f64, f64)> {
        let clip = |p: f64| probit(p.clamp(low, high));
        let mut points: Vec<(f64, f64)> = Vec::new();
        for k in 0..self.roc.len() {
            let p = (clip(self.roc.p_fa(k)), clip(self.roc.p_miss(k)));
            let far = points
                .last()
                .is_none_or(|q| (p.0 - q.0).hypot(p.1 - q.1) >= MIN_STEP);
            if far || k + 1 == self.roc.len() {
                points.push(p);
            }
        }
        points
    }
}

/// A linear axis in probit units whose grid lines and labels sit at round probabilities.
struct ProbitAxis {
    range: Range<f64>,
    ticks: Vec<f64>,
}

impl ProbitAxis {
    fn new(low: f64, high: f64) -> Self {
        ProbitAxis {
            range: probit(low)..probit(high),
            ticks: TICKS
                .iter()
                .filter(|&&t| t >= low && t <= high)
                .map(|&t| probit(t))
                .collect(),
        }
    }
}

impl Ranged for ProbitAxis {
    type FormatOption = NoDefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let fraction = (value - self.range.start) / (self.range.end - self.range.start);
        limit.0 + (fraction * f64::from(limit.1 - limit.0)).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        // Only bold grid lines: one per tick.
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> Range<f64> {
        self.range.clone()
    }
}

impl ValueFormatter<f64> for ProbitAxis {
    fn format(value: &f64) -> String {
        percent(0.5 * libm::erfc(-value / std::f64::consts::SQRT_2))
    }
}

/// `0.0005` -> `0.05`, `0.2` -> `20`: a probability as a percentage without trailing zeros.
fn percent(p: f64) -> String {
    let text = format!("{:.2}", p * 100.0);
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

impl Figure for DetPlot<'_> {
    fn size(&self) -> (u32, u32) {
        (720, 720)
    }

    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
    ) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
        root.fill(&WHITE)?;
        let (low, high) = self.range();
        let mut chart = ChartBuilder::on(root)
            .caption(&self.title, (FAMILY, 22))
            .margin(16)
            .x_label_area_size(50)
            .y_label_area_size(60)
            .build_cartesian_2d(ProbitAxis::new(low, high), ProbitAxis::new(low, high))?;
        chart
            .configure_mesh()
            .x_desc("False alarm probability (%)")
            .y_desc("Miss probability (%)")
            .label_style((FAMILY, 14))
            .axis_desc_style((FAMILY, 16))
            .light_line_style(WHITE)
            .bold_line_style(BLACK.mix(0.15))
            .draw()?;

        let diagonal = [(probit(low), probit(low)), (probit(high), probit(high))];
        chart.draw_series(LineSeries::new(diagonal, BLACK.mix(0.3)))?;
        chart
            .draw_series(LineSeries::new(self.curve(low, high), BLUE.stroke_width(2)))?
            .label(format!("DET, EER {:.2} %", 100.0 * self.eer))
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLUE.stroke_width(2)));

        let eer = probit(self.eer.clamp(low, high));
        chart.draw_series([Circle::new((eer, eer), 6, RED.filled())])?;
        let colours = [GREEN, MAGENTA, CYAN, BLACK];
        for (dcf, colour) in self.min_dcfs.iter().zip(colours.iter().cycle()) {
            let at = (
                probit(dcf.p_fa.clamp(low, high)),
                probit(dcf.p_miss.clamp(low, high)),
            );
            let colour = *colour;
            chart
                .draw_series([TriangleMarker::new(at, 7, colour.filled())])?
                .label(format!("minDCF(p={}) = {:.4}", dcf.p_target, dcf.min_dcf))
                .legend(move |(x, y)| TriangleMarker::new((x + 10, y), 6, colour.filled()));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font((FAMILY, 15))
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK.mix(0.4))
            .draw()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_and_ranges() {
        assert_eq!(percent(0.0005), "0.05");
        assert_eq!(percent(0.2), "20");
        assert_eq!(percent(0.015), "1.5");
        let roc = Roc::new(&[0.1, 0.2, 0.3, 0.9], &[false, true, false, true]).unwrap();
        let plot = DetPlot {
            roc: &roc,
            eer: 0.5,
            min_dcfs: &[],
            title: String::new(),
        };
        assert_eq!(plot.range(), (0.4, 0.99));
        let curve = plot.curve(0.2, 0.99);
        assert_eq!(curve.len(), roc.len());
        assert!((curve[0].0 - probit(0.99)).abs() < 1e-12);
    }

    #[test]
    fn one_target_and_one_nontarget_trial_give_an_axis_range_to_draw() {
        for scores in [[0.1, 0.9], [0.9, 0.1]] {
            let roc = Roc::new(&scores, &[false, true]).unwrap();
            for eer in [0.0, 0.5, 1.0] {
                let plot = DetPlot {
                    roc: &roc,
                    eer,
                    min_dcfs: &[],
                    title: String::new(),
                };
                let (low, high) = plot.range();
                assert!(low < high, "{low} {high}");
                let dir = tempfile::tempdir().unwrap();
                let (svg, png) = (dir.path().join("d.svg"), dir.path().join("d.png"));
                crate::plot::save(&plot, &svg, &png).unwrap();
            }
        }
    }
}
