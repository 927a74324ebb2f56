//! Figures as SVG and PNG from one drawing routine: a bundled font (DejaVu Sans, so text
//! renders the same on every machine), atomic writes, and the probit scale of DET plots.

use std::path::Path;
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::error::{EvalError, Result};

/// DejaVu Sans 2.37 (Bitstream Vera licence, see `assets/DejaVuSans-LICENSE.txt`).
static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

/// Font family under which the bundled font is registered; figures use this name.
pub const FAMILY: &str = "sans-serif";

/// Registers the bundled font with plotters (once per process).
fn register_font() {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        if plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_err() {
            panic!("the bundled DejaVu Sans font does not parse");
        }
    });
}

/// A figure that can draw itself on any plotters backend.
pub trait Figure {
    /// Width and height in pixels (SVG user units).
    fn size(&self) -> (u32, u32);

    /// Draws the whole figure on `root`.
    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
    ) -> std::result::Result<(), DrawingAreaErrorKind<DB::ErrorType>>;
}

/// Renders `figure` to `svg` and `png`, each written atomically.
pub fn save(figure: &impl Figure, svg: &Path, png: &Path) -> Result<()> {
    register_font();
    let (width, height) = figure.size();

    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, (width, height)).into_drawing_area();
        figure
            .draw(&root)
            .and_then(|()| root.present())
            .map_err(|e| plot_error(svg, e))?;
    }
    stage_kit::write_bytes_atomically(svg, text.as_bytes())?;

    let mut pixels = vec![0u8; width as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (width, height)).into_drawing_area();
        figure
            .draw(&root)
            .and_then(|()| root.present())
            .map_err(|e| plot_error(png, e))?;
    }
    stage_kit::write_atomically(png, |partial| {
        image::save_buffer_with_format(
            partial,
            &pixels,
            width,
            height,
            image::ColorType::Rgb8,
            image::ImageFormat::Png,
        )
        .map_err(|e| plot_error(png, e))
    })
}

fn plot_error(path: &Path, error: impl std::fmt::Display) -> EvalError {
    EvalError::Plot {
        path: path.to_path_buf(),
        message: error.to_string(),
    }
}

/// Standard normal quantile (probit), the axis scale of DET curves.
pub fn probit(p: f64) -> f64 {
    if p <= 0.0 {
        return f64::NEG_INFINITY;
    }
    if p >= 1.0 {
        return f64::INFINITY;
    }
    // Abramowitz & Stegun 26.2.23 (error < 4.5e-4) as the start, then Newton steps on
    // Phi(x) = erfc(-x / sqrt 2) / 2.
    let q = p.min(1.0 - p);
    let t = (-2.0 * q.ln()).sqrt();
    let tail = t
        - (2.515517 + 0.802853 * t + 0.010328 * t * t)
            / (1.0 + 1.432788 * t + 0.189269 * t * t + 0.001308 * t * t * t);
    let mut x = if p < 0.5 { -tail } else { tail };
    for _ in 0..3 {
        let cdf = 0.5 * libm::erfc(-x / std::f64::consts::SQRT_2);
        let density = (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
        x -= (cdf - p) / density;
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probit_matches_known_quantiles() {
        for (p, z) in [
            (0.5, 0.0),
            (0.975, 1.959963984540054),
            (0.01, -2.326347874040841),
            (1e-4, -3.719016485455709),
            (0.9, 1.2815515655446004),
        ] {
            assert!(
                (probit(p) - z).abs() < 1e-9,
                "probit({p}) = {} != {z}",
                probit(p)
            );
        }
        assert_eq!(probit(0.0), f64::NEG_INFINITY);
    }
}
