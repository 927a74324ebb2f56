//! Gaussian noise that is a pure function of a 64-bit key and each element's index, computed
//! with tensor operations on the tensor's device. libtorch's generator is one per process and
//! shared by threads, and tch exposes no other, so noise drawn from it (dither) can be
//! neither resumed from a checkpoint nor kept apart between concurrent runs; this noise can.
//! Each uniform is a 32-bit integer hash (two rounds keyed by the key's halves) of the
//! element's counter; Box-Muller turns pairs into normals.

use tch::{Device, Kind, Tensor};

const LOW_32: i64 = 0xffff_ffff;

/// One round of a 32-bit integer hash on int64 tensors holding values below 2^32. Its
/// multipliers stay below 2^31, so every product fits in an int64 without overflow.
fn mix32(x: &Tensor) -> Tensor {
    let step = |x: Tensor, shift: i64, multiplier: i64| {
        let x = x.bitwise_xor_tensor(&x.bitwise_right_shift_tensor_scalar(shift));
        (x * multiplier).bitwise_and(LOW_32)
    };
    let x = step(x.shallow_clone(), 16, 0x7feb_352d);
    let x = step(x, 15, 0x6b43_a9b5);
    x.bitwise_xor_tensor(&x.bitwise_right_shift_tensor_scalar(16))
}

/// Uniforms in (0, 1] for counters `counter` (int64, below 2^32) under `key`.
fn uniform(counter: &Tensor, key: u64) -> Tensor {
    let (low, high) = ((key & 0xffff_ffff) as i64, (key >> 32) as i64);
    let h = mix32(&counter.bitwise_xor(low));
    let h = mix32(&h.bitwise_xor(high));
    // 24 bits: exact in float32.
    (h.bitwise_right_shift_tensor_scalar(8).to_kind(Kind::Float) + 1.0) / f64::from(1 << 24)
}

/// Standard normal noise of `shape` (float32) on `device`, a function of `key` only.
pub fn normal(shape: &[i64], key: u64, device: Device) -> Tensor {
    let numel: i64 = shape.iter().product();
    let pairs = (numel + 1) / 2;
    let counter = Tensor::arange(pairs, (Kind::Int64, device)) * 2;
    let (u1, u2) = (uniform(&counter, key), uniform(&(&counter + 1), key));
    let radius = (u1.log() * -2.0).sqrt();
    let angle = u2 * std::f64::consts::TAU;
    Tensor::cat(&[&radius * angle.cos(), radius * angle.sin()], 0)
        .narrow(0, 0, numel)
        .view(shape)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_key_same_noise_other_key_other_noise() {
        let a = normal(&[3, 1001], 7, Device::Cpu);
        assert_eq!(a.size(), [3, 1001]);
        assert!(a.equal(&normal(&[3, 1001], 7, Device::Cpu)));
        let b = normal(&[3, 1001], 8, Device::Cpu);
        let same = a.eq_tensor(&b).sum(Kind::Int64).int64_value(&[]);
        assert_eq!(same, 0, "keys 7 and 8 share {same} values");
    }

    #[test]
    fn is_standard_normal() {
        let x = normal(&[400_000], 0x1234_5678_9abc_def0, Device::Cpu).to_kind(Kind::Double);
        let mean = x.mean(Kind::Double).double_value(&[]);
        let var = x.var(true).double_value(&[]);
        // Standard errors: 1/sqrt(n) = 0.0016 for the mean, sqrt(2/n) = 0.0022 for the variance.
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.015, "variance {var}");
        let tail = x
            .abs()
            .gt(3.0)
            .to_kind(Kind::Double)
            .mean(Kind::Double)
            .double_value(&[]);
        assert!((tail - 0.0027).abs() < 0.0006, "P(|x| > 3) = {tail}");
        // Neighbouring elements are uncorrelated.
        let n = 399_999;
        let lag = (x.narrow(0, 0, n) * x.narrow(0, 1, n))
            .mean(Kind::Double)
            .double_value(&[]);
        assert!(lag.abs() < 0.01, "lag-1 correlation {lag}");
    }
}
