//! Energy VAD against Kaldi's `compute-vad` rule and STMN/CMN against hyperion's
//! `MeanVarianceNorm`, both re-implemented in this test's Python from their sources' semantics
//! (torchaudio supplies the Kaldi frame energies), on fixture speech with silences.

mod common;

use feature_extract::fbank::{Fbank, FbankOptions};
use feature_extract::normalize::{StmnOptions, cmn, stmn, stmn_tch};
use feature_extract::{decode, vad};
use ndarray::Array2;
use serde_json::Value;

/// Kaldi's `ComputeVadEnergy` on the raw log energy of `compute-mfcc-feats` (C0 with
/// use-energy, no energy floor): prints energies and decisions per input file.
const KALDI_VAD: &str = r#"
import json, sys
import numpy as np, torch
from torchaudio.compliance.kaldi import fbank
out = []
for path in sys.argv[1:]:
    x = torch.from_numpy(np.fromfile(path, dtype=np.float32)).unsqueeze(0).double()
    e = fbank(x, use_energy=True, energy_floor=0.0, num_mel_bins=23)[:, 0].numpy()
    T = len(e)
    threshold = 5.5 + 0.5 * e.sum() / T
    voiced = []
    for t in range(T):
        num = den = 0
        for t2 in range(t - 2, t + 3):
            if 0 <= t2 < T:
                den += 1
                num += e[t2] > threshold
        voiced.append(bool(num >= den * 0.12))
    out.append({"energy": e.tolist(), "voiced": voiced, "threshold": threshold})
print(json.dumps(out))
"#;

/// hyperion's MeanVarianceNorm(norm_mean=True, norm_var=False, left=right=150).forward on
/// [1, T, D] features; reads `T D` and raw f32 from each file, writes `<file>.out`.
const HYPERION_STMN: &str = r#"
import sys
import numpy as np, torch
import torch.nn.functional as F
for path, frames, dims in zip(sys.argv[1::3], sys.argv[2::3], sys.argv[3::3]):
    x = torch.from_numpy(np.fromfile(path, dtype=np.float32).reshape(1, int(frames), int(dims)))
    left = right = 150
    total = left + right + 1
    x = x - x.mean(dim=1, keepdim=True)
    if x.shape[1] > total:
        xx = F.pad(x.transpose(1, -1), (left, right), mode="reflect").transpose(1, -1)
        c = torch.cumsum(xx, dim=1)
        m = (c[:, total - 1:] - c[:, :-total + 1]) / total
        x = x - m
    x.numpy().astype(np.float32).tofile(path + ".out")
"#;

fn fixture_audio(step: usize, count: usize) -> Vec<Vec<f32>> {
    common::files(&common::fixture().join("wav"), "wav")
        .iter()
        .step_by(step)
        .take(count)
        .map(|p| decode::load_mono(p, 16000).unwrap())
        .collect()
}

#[test]
fn vad_follows_kaldi_compute_vad_on_fixture_speech() {
    let dir = tempfile::tempdir().unwrap();
    let audio = fixture_audio(7, 8);
    let paths: Vec<_> = audio
        .iter()
        .enumerate()
        .map(|(i, x)| {
            let p = dir.path().join(format!("{i}.f32"));
            common::write_f32(&p, x);
            p
        })
        .collect();
    let reference: Vec<Value> =
        serde_json::from_str(&stage_kit::reference::run_python(KALDI_VAD, &paths).unwrap())
            .unwrap();
    let fbank_opts = FbankOptions::default();
    let (mut frames, mut voiced, mut trimmed) = (0usize, 0usize, 0usize);
    for (x, r) in audio.iter().zip(&reference) {
        let ours = vad::frame_decisions(x, &fbank_opts, &vad::VadOptions::default());
        let want: Vec<bool> = r["voiced"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_bool().unwrap())
            .collect();
        assert_eq!(ours, want);
        frames += ours.len();
        voiced += ours.iter().filter(|&&v| v).count();
        let kept = vad::trim(x, &ours, &Fbank::new(&fbank_opts).unwrap().geometry());
        assert!(!kept.is_empty() && kept.len() <= x.len());
        trimmed += x.len() - kept.len();
    }
    let share = voiced as f64 / frames as f64;
    eprintln!(
        "VAD: {frames} frames, {:.1} % voiced, identical to Kaldi's rule",
        100.0 * share
    );
    assert!(share > 0.3 && share < 0.98, "{share}");
    assert!(trimmed > 0);
}

#[test]
fn stmn_and_cmn_follow_hyperion() {
    let dir = tempfile::tempdir().unwrap();
    let fbank = Fbank::new(&FbankOptions::default()).unwrap();
    let feats: Vec<Array2<f32>> = fixture_audio(3, 16)
        .iter()
        .map(|x| fbank.compute(x))
        .collect();
    assert!(feats.iter().any(|f| f.nrows() > 301) && feats.iter().any(|f| f.nrows() <= 301));
    let mut args = Vec::new();
    for (i, f) in feats.iter().enumerate() {
        let p = dir.path().join(format!("{i}.f32"));
        common::write_f32(&p, f.as_slice().unwrap());
        args.extend([
            p.display().to_string(),
            f.nrows().to_string(),
            f.ncols().to_string(),
        ]);
    }
    stage_kit::reference::run_python(HYPERION_STMN, &args).unwrap();
    let mut worst = 0.0f32;
    for (i, f) in feats.iter().enumerate() {
        let want = common::read_f32(&dir.path().join(format!("{i}.f32.out")));
        let ours = stmn(f, &StmnOptions::default());
        let t = tch::Tensor::from_slice(f.as_slice().unwrap()).view([
            1,
            f.nrows() as i64,
            f.ncols() as i64,
        ]);
        let ours_tch: Vec<f32> =
            Vec::try_from(stmn_tch(&t, &StmnOptions::default()).flatten(0, -1)).unwrap();
        for ((a, b), w) in ours.iter().zip(&ours_tch).zip(&want) {
            worst = worst.max((a - w).abs()).max((b - w).abs());
        }
        if f.nrows() <= 301 {
            assert_eq!(ours, cmn(f));
        }
    }
    eprintln!("STMN vs hyperion: max abs difference {worst:.1e}");
    assert!(worst < 1e-4, "{worst}");
}
