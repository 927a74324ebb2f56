//! The batched tch fbank against the Rust one, for the option grid of the golden test, on
//! every mel bin within 120 dB (float64) or 80 dB (float32) of its frame's strongest bin.
//! Below that the bins of upsampled or low-passed audio are empty, and what an FFT puts there
//! is its own rounding (in torchaudio as well). On CUDA too when a GPU is present.

mod common;

use feature_extract::fbank::Fbank;
use feature_extract::fbank_tch::TchFbank;
use ndarray::Array2;
use tch::{Device, Kind, Tensor};

/// Rounding steps of the FFT and the mel sum, in units of the kind's epsilon relative to the
/// strongest bin. float32's differ by CPU (AVX2 and AVX-512 kernels round differently): a
/// flat 1e-3 passed on AVX2 and failed by 1.7e-5 on an AVX-512 machine (8 kHz, 80 mel bins).
const ROUNDING_ULPS: f32 = 8.0;

fn devices() -> Vec<Device> {
    let mut d = vec![Device::Cpu];
    if tch::Cuda::is_available() {
        d.push(Device::Cuda(0));
    }
    d
}

#[test]
fn tch_fbank_matches_the_rust_fbank_on_cpu_and_cuda() {
    let signals = common::signals();
    let len16 = signals.iter().map(|(_, x)| x.len()).min().unwrap();
    // (worst difference, values compared, values) for float64 and float32.
    let mut stats = [(0.0f32, 0usize, 0usize); 2];
    for device in devices() {
        for opts in common::option_grid() {
            let batch: Vec<Vec<f32>> = signals
                .iter()
                .map(|(_, x)| {
                    let x = &x[..len16];
                    if opts.sample_rate == 16000 {
                        x.to_vec()
                    } else {
                        feature_extract::decode::resample(x, 16000, opts.sample_rate).unwrap()
                    }
                })
                .collect();
            let t = batch[0].len();
            let flat: Vec<f32> = batch.concat();
            let waves = Tensor::from_slice(&flat)
                .view([batch.len() as i64, t as i64])
                .to_device(device);
            let rust = Fbank::new(&opts).unwrap();
            let expected: Vec<Array2<f32>> = batch.iter().map(|x| rust.compute(x)).collect();
            for kind in [Kind::Double, Kind::Float] {
                let tch_fbank = TchFbank::new(&opts, device).unwrap().with_kind(kind);
                let out = tch_fbank.forward(&waves).to_device(Device::Cpu);
                let (frames, dim) = expected[0].dim();
                assert_eq!(out.size(), [batch.len() as i64, frames as i64, dim as i64]);
                let values: Vec<f32> =
                    Vec::<f32>::try_from(out.contiguous().flatten(0, -1)).unwrap();
                for (b, e) in expected.iter().enumerate() {
                    for (r, row) in e.rows().into_iter().enumerate() {
                        let peak = row.iter().copied().fold(f32::MIN, f32::max);
                        for (c, &want) in row.iter().enumerate() {
                            let got = values[(b * frames + r) * dim + c];
                            let diff = (got - want).abs();
                            let (slot, range_db, epsilon) = match kind {
                                Kind::Double => (0, 120.0, f64::EPSILON as f32),
                                _ => (1, 80.0, f32::EPSILON),
                            };
                            let stat = &mut stats[slot];
                            stat.2 += 1;
                            // The range in the log domain: dB / 10 * ln 10 for power,
                            // half that for magnitudes.
                            let db_per_nat = if opts.use_power { 10.0 } else { 20.0 };
                            let floor = peak - range_db / db_per_nat * std::f32::consts::LN_10;
                            // The FFT's rounding is relative to the frame's strongest bin: a
                            // bin `weaker` times below it in magnitude has `weaker` times
                            // that relative error, twice it in the log of a power.
                            let (weaker, per_log) = if opts.use_power {
                                (((peak - want) / 2.0).exp(), 2.0)
                            } else {
                                ((peak - want).exp(), 1.0)
                            };
                            let tolerance = 1e-3 + per_log * ROUNDING_ULPS * epsilon * weaker;
                            if want >= floor {
                                assert!(
                                    diff <= tolerance,
                                    "{got} vs {want}, tolerance {tolerance:.1e} ({opts:?}, \
                                     {device:?}, {kind:?})"
                                );
                                stat.0 = stat.0.max(diff);
                                stat.1 += 1;
                            }
                        }
                    }
                }
            }
        }
    }
    let share = |s: (f32, usize, usize)| 100.0 * s.1 as f64 / s.2 as f64;
    eprintln!(
        "tch fbank vs Rust on {:?}: float64 max abs {:.1e} on {:.2} % of the values, \
         float32 max abs {:.1e} on {:.2} %",
        devices(),
        stats[0].0,
        share(stats[0]),
        stats[1].0,
        share(stats[1])
    );
}
