//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

use burn::tensor::Device;

/// `../shared/data` relative to the repository root, if present.
pub fn shared_data() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data");
    dir.is_dir().then_some(dir)
}

/// A file under `../shared/data`, or `None` with a printed reason (the test then skips).
pub fn data_file(relative: &str) -> Option<PathBuf> {
    let Some(dir) = shared_data() else {
        eprintln!("skipping: ../shared/data is absent");
        return None;
    };
    let path = dir.join(relative);
    if path.exists() {
        Some(path)
    } else {
        eprintln!("skipping: {} is absent", path.display());
        None
    }
}

/// The wgpu device, or `None` with a printed reason. Under CI (`CI=true`, where `.ci/setup`
/// installs Mesa's software Vulkan driver) or with `HYPERSEGNAS_REQUIRE_WGPU=1`, a missing
/// adapter fails the test instead.
pub fn wgpu_device() -> Option<Device> {
    match hypersegnas::device::select(hypersegnas::device::DeviceChoice::Gpu) {
        Ok(selected) => {
            eprintln!("wgpu adapter: {}", selected.description);
            Some(selected.device)
        }
        Err(e) => {
            let required = std::env::var("HYPERSEGNAS_REQUIRE_WGPU").is_ok_and(|v| v == "1")
                || std::env::var("CI").is_ok_and(|v| v == "true");
            if required {
                panic!("a wgpu adapter is required here (CI or HYPERSEGNAS_REQUIRE_WGPU=1): {e}");
            }
            eprintln!("skipping the wgpu part: {e}");
            None
        }
    }
}

/// max |a - b| / max |b|.
pub fn relative_error(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let scale = b
        .iter()
        .fold(0f32, |m, v| m.max(v.abs()))
        .max(f32::MIN_POSITIVE);
    let diff = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    diff / scale
}

/// A deterministic pseudo-random input in [-1, 1].
pub fn noise(len: usize, seed: u32) -> Vec<f32> {
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(12345);
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state as f32 / u32::MAX as f32) * 2.0 - 1.0
        })
        .collect()
}
