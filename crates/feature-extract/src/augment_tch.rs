//! The filtering and mixing of [`crate::augment`] as batched tch operations, so that on a
//! GPU the CPU only reads, crops and draws ([`Augmenter::draw`]) and the device reverberates
//! and mixes the whole batch: FFT convolution of the crops that drew an RIR (one FFT size for
//! all, aligned on each RIR's direct path), then the summed noise scaled to each crop's drawn
//! SNR against the crop's power after reverberation. Same draws, same result as
//! [`Augmenter::apply_draw`] to float rounding.

use tch::{Device, Kind, Tensor};

use crate::augment::{Augmenter, Draw};

/// Augments the crops `x` (`[B, L]`, float, on any device) with `draws[i]` for row `i`.
pub fn apply_draws(augmenter: &Augmenter, x: &Tensor, draws: &[Draw]) -> Tensor {
    let (b, len) = x.size2().expect("crops are [B, L]");
    assert_eq!(b as usize, draws.len(), "one draw per crop");
    let device = x.device();
    let x = x.to_kind(Kind::Float);
    let x = reverberate(augmenter, &x, draws, len as usize, device);
    add_noise(&x, draws, len as usize, device)
}

/// Rows of `x` that drew an RIR, convolved and cut at `direct .. direct + len`.
fn reverberate(
    augmenter: &Augmenter,
    x: &Tensor,
    draws: &[Draw],
    len: usize,
    device: Device,
) -> Tensor {
    let rows: Vec<(i64, &[f32], usize)> = draws
        .iter()
        .enumerate()
        .filter_map(|(i, d)| {
            let (c, r) = d.rir?;
            let (taps, direct) = augmenter.rir_taps(c, r);
            Some((i as i64, taps, direct))
        })
        .collect();
    if rows.is_empty() {
        return x.shallow_clone();
    }
    let longest = rows.iter().map(|r| r.1.len()).max().expect("some rows");
    let n = (len + longest - 1).next_power_of_two() as i64;
    let mut taps = vec![0.0f32; rows.len() * longest];
    let mut gather = Vec::with_capacity(rows.len() * len);
    for (k, (_, h, direct)) in rows.iter().enumerate() {
        taps[k * longest..k * longest + h.len()].copy_from_slice(h);
        gather.extend((0..len as i64).map(|t| *direct as i64 + t));
    }
    let index = Tensor::from_slice(&rows.iter().map(|r| r.0).collect::<Vec<_>>()).to_device(device);
    let h = Tensor::from_slice(&taps)
        .view([rows.len() as i64, longest as i64])
        .to_device(device);
    let signals = x.index_select(0, &index);
    let spectrum = signals.fft_rfft(n, -1, "backward") * h.fft_rfft(n, -1, "backward");
    let full = spectrum.fft_irfft(n, -1, "backward");
    let cut = full.gather(
        1,
        &Tensor::from_slice(&gather)
            .view([rows.len() as i64, len as i64])
            .to_device(device),
        false,
    );
    x.index_copy(0, &index, &cut)
}

/// `x` plus each drawn noise scaled to `power(x) / (power(noise) 10^(snr / 10))`.
fn add_noise(x: &Tensor, draws: &[Draw], len: usize, device: Device) -> Tensor {
    let rows: Vec<(i64, &crate::augment::NoiseDraw)> = draws
        .iter()
        .enumerate()
        .filter_map(|(i, d)| d.noise.as_ref().map(|n| (i as i64, n)))
        .collect();
    if rows.is_empty() {
        return x.shallow_clone();
    }
    let mut signal = Vec::with_capacity(rows.len() * len);
    for (_, n) in &rows {
        signal.extend_from_slice(&n.signal);
    }
    let index = Tensor::from_slice(&rows.iter().map(|r| r.0).collect::<Vec<_>>()).to_device(device);
    let noise = Tensor::from_slice(&signal)
        .view([rows.len() as i64, len as i64])
        .to_device(device)
        .to_kind(Kind::Double);
    let snr =
        Tensor::from_slice(&rows.iter().map(|r| r.1.snr_db).collect::<Vec<_>>()).to_device(device);
    let clean = x.index_select(0, &index).to_kind(Kind::Double);
    let px = clean.square().mean_dim(-1, false, None);
    let pn = noise.square().mean_dim(-1, false, None);
    // Silent crops or noises are left alone, as on the CPU.
    let usable = px.gt(0.0).logical_and(&pn.gt(0.0));
    let scale = (&px / (&pn * Tensor::from(10.0f64).to_device(device).pow(&(snr / 10.0))))
        .sqrt()
        .where_self(&usable, &Tensor::zeros_like(&px));
    let mixed = clean + noise * scale.unsqueeze(-1);
    x.index_copy(0, &index, &mixed.to_kind(Kind::Float))
}
