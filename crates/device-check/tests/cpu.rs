//! The device check's comparisons on CPU tensors (the "device" is libtorch's CPU here, and
//! CUDA when there is one), through the code the GPU run uses.

use device_check::{compare, timing};
use tch::Device;

fn device() -> Device {
    Device::cuda_if_available()
}

#[test]
fn device_paths_match_the_cpu_ones() {
    let device = device();
    let mut rows = vec![
        compare::fbank(device).unwrap(),
        compare::stmn_check(device).unwrap(),
        compare::encoder(device, "tiny-resnet", "encoder.lresnet34").unwrap(),
        compare::encoder(device, "tiny-ecapa", "encoder.ecapa-512").unwrap(),
    ];
    let dir = tempfile::tempdir().unwrap();
    let audio = timing::generate_audio(dir.path(), 60).unwrap();
    rows.push(compare::augment(device, &audio.caches.noise, &audio.caches.rir).unwrap());
    rows.extend(compare::kmeans(device).unwrap());
    for r in &rows {
        assert_eq!(r.pass, Some(true), "{r:?}");
    }
    // Resume from a checkpoint reproduces the straight run on the CPU.
    let config = timing::config(Device::Cpu, "tiny-resnet", 4, 4, 2).unwrap();
    let resumed = timing::resume(config, &audio, &dir.path().join("resume")).unwrap();
    assert_eq!(resumed.value, 0.0, "{resumed:?}");
}
