use serde::Serialize;

/// Every check, in the order they run: name and what it compares or measures.
pub const CHECKS: &[(&str, &str)] = &[
    (
        "fbank",
        "Kaldi fbank on the device against the Rust transform (max error / scale <= 1e-3)",
    ),
    (
        "stmn",
        "sliding-window mean normalisation on the device against Rust (<= 1e-3)",
    ),
    (
        "encoder.lresnet34",
        "LResNet34 forward (eval) on the device against the CPU, same weights (<= 1e-3)",
    ),
    (
        "encoder.ecapa-512",
        "ECAPA-TDNN (C = 512) forward on the device against the CPU (<= 1e-3)",
    ),
    (
        "augment",
        "noise + RIR on the device (augment_tch) against the CPU path, same draws (<= 1e-4)",
    ),
    (
        "kmeans.assign",
        "nearest-centroid labels on the device against the CPU engine (agreement)",
    ),
    (
        "kmeans.merge",
        "centroid merge on the device against the CPU (identical clusters)",
    ),
    (
        "fp16.dino",
        "50 DINO steps with fp16 autocast and the loss scaler: overflows skipped, scale recovers, loss finite",
    ),
    (
        "resume",
        "5 + 5 steps resumed from a checkpoint against 10 steps straight (max parameter difference)",
    ),
    (
        "time.pretrain",
        "LResNet34, batch 128, 2 x 4 s + 4 x 2 s crops, 16 loader workers on generated audio: samples/s, data-wait share",
    ),
    (
        "time.kmeans",
        "k-means on 1.1 M x 256 planted embeddings at k = 273,000: s/iteration",
    ),
    (
        "time.merge",
        "the centroid merge at that size: rounds and seconds",
    ),
];

/// One line of the summary.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub check: String,
    pub value: f64,
    pub unit: String,
    /// The bound a comparison must stay within (timings have none).
    pub limit: Option<f64>,
    /// Whether the comparison passed (`None` for timings).
    pub pass: Option<bool>,
    pub note: String,
}

impl Row {
    /// A comparison: `value` must be at most `limit`.
    pub fn at_most(check: &str, value: f64, limit: f64, note: impl Into<String>) -> Self {
        Row {
            check: check.to_owned(),
            value,
            unit: String::new(),
            limit: Some(limit),
            pass: Some(value <= limit),
            note: note.into(),
        }
    }

    /// A comparison that holds or not.
    pub fn holds(check: &str, pass: bool, value: f64, note: impl Into<String>) -> Self {
        Row {
            check: check.to_owned(),
            value,
            unit: String::new(),
            limit: None,
            pass: Some(pass),
            note: note.into(),
        }
    }

    /// A measurement.
    pub fn measured(check: &str, value: f64, unit: &str, note: impl Into<String>) -> Self {
        Row {
            check: check.to_owned(),
            value,
            unit: unit.to_owned(),
            limit: None,
            pass: None,
            note: note.into(),
        }
    }

    /// A check that could not run, with the reason.
    pub fn failed(check: &str, error: &anyhow::Error) -> Self {
        Row::holds(check, false, f64::NAN, format!("error: {error:#}"))
    }
}

/// Everything the run found, as written to JSON.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub device: String,
    pub libtorch: String,
    pub wall_seconds: f64,
    pub rows: Vec<Row>,
}

impl Summary {
    /// Whether every comparison passed.
    pub fn passed(&self) -> bool {
        self.rows.iter().all(|r| r.pass != Some(false))
    }

    /// The rows as a fixed-width table.
    pub fn table(&self) -> String {
        let mut out = format!(
            "device {}, libtorch {}, {:.0} s\n{:<20} {:>14} {:<10} {:>10} {:<5} note\n",
            self.device, self.libtorch, self.wall_seconds, "check", "value", "unit", "limit", "ok"
        );
        for r in &self.rows {
            out += &format!(
                "{:<20} {:>14.6} {:<10} {:>10} {:<5} {}\n",
                r.check,
                r.value,
                r.unit,
                r.limit.map_or(String::new(), |l| format!("{l:.0e}")),
                match r.pass {
                    Some(true) => "yes",
                    Some(false) => "NO",
                    None => "",
                },
                r.note
            );
        }
        out
    }
}
