//! Frame times of the explorer on a 512 x 512 x 300 CT-sized volume: idle frames against
//! frames drawn while a whole-volume inference runs on the worker thread, and frames that
//! move the slice (new slices extracted for upload). Ratios are against the idle frames of
//! the same run.
//!
//! ```sh
//! cargo bench --profile dev --bench ui_frames
//! ```
//!
//! The app runs in egui_kittest's harness without a renderer, so the numbers are the UI
//! thread's own work per frame (layout, slice extraction, plot), not GPU drawing.

use std::sync::Arc;
use std::sync::atomic::AtomicI32;
use std::time::{Duration, Instant};

use egui_kittest::Harness;
use hypersegnas::app::{ExplorerApp, StartOptions};
use hypersegnas::device::DeviceChoice;
use hypersegnas::volume::{self, Volume};

fn stats(name: &str, mut times: Vec<Duration>, reference: Option<f64>) -> f64 {
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let p50 = ms(times[times.len() / 2]);
    let p95 = ms(times[(times.len() * 95 / 100).min(times.len() - 1)]);
    let max = ms(*times.last().unwrap());
    let ratio = reference.map_or(String::new(), |r| {
        format!("  median / idle median = {:.2}", p50 / r)
    });
    println!(
        "{name:<32} {:>5} frames  median {p50:7.2} ms  p95 {p95:7.2} ms  max {max:7.2} ms{ratio}",
        times.len()
    );
    p50
}

fn main() {
    let dims = [512usize, 512, 300];
    let n: usize = dims.iter().product();
    println!(
        "building a {}x{}x{} synthetic CT ({} MB as f32)",
        dims[0],
        dims[1],
        dims[2],
        (n * 4) >> 20
    );
    let mut data = vec![-1000.0f32; n];
    for z in 0..dims[2] {
        for y in 0..dims[1] {
            for x in 0..dims[0] {
                let (dx, dy) = (x as f32 - 256.0, y as f32 - 256.0);
                if dx * dx / 200.0f32.powi(2) + dy * dy / 150.0f32.powi(2) < 1.0 {
                    data[x + dims[0] * (y + dims[1] * z)] = 40.0 + ((x ^ y ^ z) % 50) as f32;
                }
            }
        }
    }
    let affine = [
        [0.78, 0.0, 0.0, -200.0],
        [0.0, 0.78, 0.0, -200.0],
        [0.0, 0.0, 1.0, -150.0],
        [0.0, 0.0, 0.0, 1.0],
    ];
    let vol = Volume::from_array(data, dims, affine);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big_ct.nii");
    volume::write_float_channels(&path, &vol.data, 1, &vol).unwrap();
    drop(vol);

    let start = StartOptions {
        volume: Some(path),
        device: Some(DeviceChoice::Cpu),
        ..Default::default()
    };
    let mut h = Harness::builder()
        .with_size(egui::Vec2::new(1600.0, 1000.0))
        .build_eframe(move |cc| ExplorerApp::new(cc, start, Arc::new(AtomicI32::new(0))));
    let t = Instant::now();
    while h.state().volume_dims().is_none() || h.state().model_info().is_none() {
        h.step();
        std::thread::sleep(Duration::from_millis(5));
    }
    println!(
        "volume and checkpoint loaded in {:.1} s (off the UI thread)",
        t.elapsed().as_secs_f64()
    );

    // The start-up whole-volume run is now on the worker thread.
    let mut busy = Vec::new();
    let t = Instant::now();
    while h.state().busy() && t.elapsed() < Duration::from_secs(600) {
        let f = Instant::now();
        h.step();
        busy.push(f.elapsed());
        std::thread::sleep(Duration::from_millis(16));
    }
    println!(
        "whole-volume inference took {:.1} s",
        t.elapsed().as_secs_f64()
    );
    while h.state().busy() {
        h.step();
        std::thread::sleep(Duration::from_millis(16));
    }

    let mut idle = Vec::new();
    for _ in 0..200 {
        let f = Instant::now();
        h.step();
        idle.push(f.elapsed());
    }
    let mut slices = Vec::new();
    for k in 0..100 {
        h.state_mut().set_crosshair([200 + k, 180 + k, 50 + k]);
        let f = Instant::now();
        h.step();
        slices.push(f.elapsed());
    }
    let reference = stats("idle", idle, None);
    stats("during whole-volume inference", busy, Some(reference));
    stats("moving the crosshair (3 slices)", slices, Some(reference));
}
