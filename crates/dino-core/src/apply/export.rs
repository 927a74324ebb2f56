//! `dino-core export`: the encoder as TorchScript (normalised features `[B, T, F]` in,
//! embeddings `[B, D]` out) for `torch.jit.load`, traced with libtorch's tracer.
//!
//! Tracing records the operations of one forward pass and freezes every number the Rust
//! side computes from shapes; the front-end (fbank and mean normalisation, whose STMN
//! window depends on the length) is therefore left out and reproduced in Python
//! (`python/speech_dino/frontend.py`). The traced module is checked against the Rust encoder
//! at the tracing length and at another one, so a length frozen into the graph fails the
//! export instead of giving wrong embeddings later.

use std::path::PathBuf;

use serde::Serialize;
use tch::nn::ModuleT;
use tch::{CModule, Device, Kind, Tensor};

use crate::apply::model_file::TrainedModel;
use crate::error::{Error, Result};

/// Frame counts the export is traced at (first) and checked at.
pub const CHECK_FRAMES: [i64; 2] = [300, 517];
/// Largest difference allowed between the traced module and the Rust encoder.
pub const TOLERANCE: f64 = 1e-4;

/// What to export.
#[derive(Debug, Clone)]
pub struct ExportRequest {
    pub model: PathBuf,
    pub out: PathBuf,
}

/// How the export went.
#[derive(Debug, Clone, Serialize)]
pub struct ExportReport {
    pub out: PathBuf,
    pub checked_frames: Vec<i64>,
    pub max_abs_difference: f64,
}

/// Traces, checks and writes the TorchScript module.
pub fn run(req: &ExportRequest) -> Result<ExportReport> {
    let mut model = TrainedModel::load(&req.model, Device::Cpu)?;
    // Parameters become constants of the trace, which takes them without gradients.
    model.vs.freeze();
    let bins = model.spec.encoder.feat_dim();
    tch::manual_seed(0);
    let example = |frames: i64| Tensor::randn([2, frames, bins], (Kind::Float, Device::Cpu));
    let encoder = &model.encoder;
    let module = tch::no_grad(|| {
        CModule::create_by_tracing(
            "SpeechDinoEncoder",
            "forward",
            &[example(CHECK_FRAMES[0])],
            &mut |inputs| vec![encoder.forward_t(&inputs[0], false)],
        )
    })
    .map_err(Error::torch("tracing the encoder"))?;
    let mut worst = 0f64;
    for frames in CHECK_FRAMES {
        let x = example(frames);
        let (ours, traced) = tch::no_grad(|| {
            (
                encoder.forward_t(&x, false),
                module
                    .forward_ts(&[&x])
                    .map_err(Error::torch("running the traced encoder")),
            )
        });
        let diff = (ours - traced?).abs().max().double_value(&[]);
        if diff > TOLERANCE {
            return Err(Error::Usage(format!(
                "the traced encoder differs from the model by {diff:.2e} at {frames} frames: \
                 some computation depends on the input length and cannot be traced"
            )));
        }
        worst = worst.max(diff);
    }
    stage_kit::write_atomically(&req.out, |partial| {
        module
            .save(partial)
            .map_err(Error::torch(format!("saving {}", req.out.display())))
    })?;
    Ok(ExportReport {
        out: req.out.clone(),
        checked_frames: CHECK_FRAMES.to_vec(),
        max_abs_difference: worst,
    })
}
