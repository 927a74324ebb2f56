//! The training curves of a run, drawn from its step log into `curves.svg` / `curves.png`:
//! the loss; the collapse monitor's teacher entropy and KL from uniform (DINO) or the batch
//! accuracy (fine-tuning); and the validation numbers by epoch (EER or micro-F1, minDCF), so that one can see whether
//! a run learns, collapses or overfits while it runs.

use std::path::Path;

use downstream_eval::plot::{FAMILY, Figure};
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::error::Result;
use crate::monitor::StepRecord;

/// File names of the figure, beside the step log.
pub use stage_kit::run_folder::{CURVES_PNG, CURVES_SVG};

/// One line of a panel.
struct Series {
    label: String,
    colour: RGBColor,
    points: Vec<(f64, f64)>,
}

/// A panel: its title, x axis name and lines.
struct Panel {
    title: &'static str,
    x: &'static str,
    series: Vec<Series>,
}

/// The figure: panels stacked vertically.
pub struct Curves {
    panels: Vec<Panel>,
}

impl Curves {
    /// The curves of the steps of one run (DINO when the teacher statistics are present).
    pub fn of(records: &[StepRecord]) -> Self {
        let step = |f: fn(&StepRecord) -> f64| -> Vec<(f64, f64)> {
            records
                .iter()
                .map(|r| ((r.step + 1) as f64, f(r)))
                .collect()
        };
        let dino = records.iter().any(|r| r.teacher_entropy != 0.0);
        let monitor = if dino {
            Panel {
                title: "Collapse monitor (teacher outputs, nats)",
                x: "step",
                series: vec![
                    Series {
                        label: "teacher entropy".into(),
                        colour: BLUE,
                        points: step(|r| r.teacher_entropy),
                    },
                    Series {
                        label: "KL from uniform".into(),
                        colour: RED,
                        points: step(|r| r.kl_from_uniform),
                    },
                ],
            }
        } else {
            Panel {
                title: "Batch accuracy (%)",
                x: "step",
                series: vec![Series {
                    label: "accuracy".into(),
                    colour: BLUE,
                    points: step(|r| 100.0 * r.accuracy),
                }],
            }
        };
        let validations: Vec<_> = records
            .iter()
            .filter_map(|r| r.validation.as_ref())
            .collect();
        let mut validation = Vec::new();
        let by_epoch = |f: &dyn Fn(&crate::validation::Validation) -> Option<f64>| {
            validations
                .iter()
                .filter_map(|v| f(v).map(|y| (v.epoch as f64, y)))
                .collect::<Vec<_>>()
        };
        let eer = by_epoch(&|v| v.eer.map(|e| 100.0 * e));
        if !eer.is_empty() {
            validation.push(Series {
                label: "EER (%)".into(),
                colour: BLUE,
                points: eer,
            });
        }
        let min_dcf = validations
            .iter()
            .find_map(|v| v.min_dcf.keys().next())
            .map(|key| Series {
                label: key.clone(),
                colour: MAGENTA,
                points: by_epoch(&|v| v.min_dcf.get(key).copied()),
            });
        let f1 = by_epoch(&|v| v.micro_f1.map(|f| 100.0 * f));
        if !f1.is_empty() {
            validation.push(Series {
                label: "micro-F1 (%)".into(),
                colour: GREEN,
                points: f1,
            });
        }
        let mut panels = vec![
            Panel {
                title: "Training loss",
                x: "step",
                series: vec![Series {
                    label: "loss".into(),
                    colour: BLACK,
                    points: step(|r| r.loss),
                }],
            },
            monitor,
        ];
        if !validation.is_empty() {
            panels.push(Panel {
                title: "Validation (%)",
                x: "epoch",
                series: validation,
            });
        }
        if let Some(series) = min_dcf {
            panels.push(Panel {
                title: "Validation minDCF",
                x: "epoch",
                series: vec![series],
            });
        }
        Curves { panels }
    }
}

impl Figure for Curves {
    fn size(&self) -> (u32, u32) {
        (800, 280 * self.panels.len() as u32)
    }

    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
    ) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
        root.fill(&WHITE)?;
        let areas = root.split_evenly((self.panels.len(), 1));
        for (panel, area) in self.panels.iter().zip(&areas) {
            let points = panel.series.iter().flat_map(|s| &s.points);
            let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
            for &(x, y) in points.filter(|(_, y)| y.is_finite()) {
                (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
            }
            if x0 > x1 {
                (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
            }
            // Room around flat lines and single points.
            let pad = ((y1 - y0) * 0.05).max(1e-3 * y1.abs().max(1.0));
            let x1 = if x1 > x0 { x1 } else { x0 + 1.0 };
            let mut chart = ChartBuilder::on(area)
                .caption(panel.title, (FAMILY, 18))
                .margin(12)
                .x_label_area_size(36)
                .y_label_area_size(56)
                .build_cartesian_2d(x0..x1, (y0 - pad)..(y1 + pad))?;
            chart
                .configure_mesh()
                .x_desc(panel.x)
                .label_style((FAMILY, 13))
                .axis_desc_style((FAMILY, 14))
                .light_line_style(WHITE)
                .bold_line_style(BLACK.mix(0.12))
                .draw()?;
            for s in &panel.series {
                let colour = s.colour;
                let finite = s.points.iter().copied().filter(|(_, y)| y.is_finite());
                chart
                    .draw_series(LineSeries::new(finite.clone(), colour.stroke_width(2)))?
                    .label(s.label.clone())
                    .legend(move |(x, y)| {
                        PathElement::new([(x, y), (x + 20, y)], colour.stroke_width(2))
                    });
                if panel.x == "epoch" {
                    chart.draw_series(finite.map(|p| Circle::new(p, 4, colour.filled())))?;
                }
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .label_font((FAMILY, 13))
                .background_style(WHITE.mix(0.9))
                .border_style(BLACK.mix(0.4))
                .draw()?;
        }
        Ok(())
    }
}

/// Draws the curves of the step log at `log` beside it.
pub fn draw(log: &Path) -> Result<()> {
    let records = crate::monitor::read_log(log)?;
    let dir = log.parent().unwrap_or(Path::new("."));
    downstream_eval::plot::save(
        &Curves::of(&records),
        &dir.join(CURVES_SVG),
        &dir.join(CURVES_PNG),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::Validation;

    #[test]
    fn dino_runs_get_the_monitor_and_validated_runs_a_validation_panel() {
        let records: Vec<StepRecord> = (0..6)
            .map(|step| StepRecord {
                step,
                loss: 5.0 - step as f64 * 0.1,
                teacher_entropy: 3.0,
                kl_from_uniform: 0.5,
                validation: (step % 3 == 2).then(|| Validation {
                    epoch: step / 3 + 1,
                    eer: Some(0.3),
                    min_dcf: [("min_dcf_0.01".to_owned(), 0.9)].into(),
                    micro_f1: None,
                }),
                ..Default::default()
            })
            .collect();
        let curves = Curves::of(&records);
        let titles: Vec<&str> = curves.panels.iter().map(|p| p.title).collect();
        assert_eq!(
            titles,
            [
                "Training loss",
                "Collapse monitor (teacher outputs, nats)",
                "Validation (%)",
                "Validation minDCF"
            ]
        );
        assert_eq!(
            curves.panels[2].series[0].points,
            [(1.0, 30.0), (2.0, 30.0)]
        );
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log.jsonl");
        let lines: Vec<String> = records
            .iter()
            .map(|r| serde_json::to_string(r).unwrap())
            .collect();
        std::fs::write(&log, lines.join("\n")).unwrap();
        draw(&log).unwrap();
        let svg = std::fs::read_to_string(dir.path().join(CURVES_SVG)).unwrap();
        assert!(
            svg.contains("Validation") && svg.contains("EER (%)"),
            "{svg}"
        );
        // Fine-tuning: accuracy instead of the monitor, no validation panel.
        let plain: Vec<StepRecord> = records
            .iter()
            .map(|r| StepRecord {
                teacher_entropy: 0.0,
                validation: None,
                ..r.clone()
            })
            .collect();
        let titles: Vec<&str> = Curves::of(&plain).panels.iter().map(|p| p.title).collect();
        assert_eq!(titles, ["Training loss", "Batch accuracy (%)"]);
    }
}
