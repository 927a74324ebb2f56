//! The confusion matrix as a heat map: rows are true classes, columns predictions, each
//! cell shaded by its share of the row (recall on the diagonal) and labelled with the
//! count and that share.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::emotion::metrics::ConfusionMatrix;
use crate::plot::{FAMILY, Figure};

/// Pixel layout.
const CELL: u32 = 78;
const LEFT: u32 = 150;
const TOP: u32 = 70;
const BOTTOM: u32 = 110;
const RIGHT: u32 = 30;

/// A confusion-matrix figure with its class names and title.
pub struct ConfusionPlot<'a> {
    pub matrix: &'a ConfusionMatrix,
    pub classes: &'a [String],
    pub title: String,
}

/// White to dark blue; the square root spreads out the small shares off the diagonal.
fn shade(fraction: f64) -> RGBColor {
    let t = fraction.clamp(0.0, 1.0).sqrt();
    let mix = |a: f64, b: f64| (a + (b - a) * t).round() as u8;
    RGBColor(mix(255.0, 8.0), mix(255.0, 48.0), mix(255.0, 107.0))
}

impl Figure for ConfusionPlot<'_> {
    fn size(&self) -> (u32, u32) {
        let k = self.classes.len() as u32;
        ((LEFT + k * CELL + RIGHT).max(560), TOP + k * CELL + BOTTOM)
    }

    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
    ) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
        root.fill(&WHITE)?;
        let (width, _) = self.size();
        let k = self.classes.len() as i32;
        let cell = CELL as i32;
        let (left, top) = (LEFT as i32, TOP as i32);
        let centred = |size: i32| {
            TextStyle::from((FAMILY, size).into_font()).pos(Pos::new(HPos::Center, VPos::Center))
        };
        root.draw(&Text::new(
            self.title.clone(),
            (width as i32 / 2, 24),
            centred(20),
        ))?;
        for (t, row) in self.matrix.counts.iter().enumerate() {
            let row_total: u64 = row.iter().sum();
            for (p, &count) in row.iter().enumerate() {
                let fraction = count as f64 / row_total.max(1) as f64;
                let (x, y) = (left + p as i32 * cell, top + t as i32 * cell);
                root.draw(&Rectangle::new(
                    [(x, y), (x + cell, y + cell)],
                    shade(fraction).filled(),
                ))?;
                root.draw(&Rectangle::new(
                    [(x, y), (x + cell, y + cell)],
                    BLACK.mix(0.2),
                ))?;
                let ink = if fraction > 0.3 { WHITE } else { BLACK };
                let centre = (x + cell / 2, y + cell / 2);
                root.draw(&Text::new(
                    count.to_string(),
                    (centre.0, centre.1 - 9),
                    centred(17).color(&ink),
                ))?;
                root.draw(&Text::new(
                    format!("{:.0} %", 100.0 * fraction),
                    (centre.0, centre.1 + 12),
                    centred(12).color(&ink),
                ))?;
            }
        }
        let right_aligned =
            TextStyle::from((FAMILY, 15).into_font()).pos(Pos::new(HPos::Right, VPos::Center));
        for (i, class) in self.classes.iter().enumerate() {
            let middle = i as i32 * cell + cell / 2;
            root.draw(&Text::new(
                class.clone(),
                (left - 8, top + middle),
                right_aligned.clone(),
            ))?;
            root.draw(&Text::new(
                class.clone(),
                (left + middle, top + k * cell + 14),
                centred(15),
            ))?;
        }
        root.draw(&Text::new(
            "predicted",
            (left + k * cell / 2, top + k * cell + 48),
            centred(16),
        ))?;
        root.draw(&Text::new("true", (24, top + k * cell / 2), centred(16)))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shading_runs_from_white_to_blue() {
        assert_eq!(shade(0.0), RGBColor(255, 255, 255));
        assert_eq!(shade(1.0), RGBColor(8, 48, 107));
    }
}
