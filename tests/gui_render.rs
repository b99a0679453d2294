//! The slice shader through egui_kittest's wgpu renderer (Mesa's llvmpipe here and in CI):
//! slices are drawn, and changing the window or the overlay opacity re-renders without
//! re-uploading voxels, while moving to another slice uploads that view's slice once.

mod common;

use std::sync::Arc;
use std::sync::atomic::AtomicI32;
use std::time::{Duration, Instant};

use egui_kittest::Harness;
use hypersegnas::app::{ExplorerApp, StartOptions, render};
use hypersegnas::device::DeviceChoice;
use hypersegnas::volume::{self, Volume};

#[test]
fn window_changes_do_not_reupload_voxels() {
    let dir = tempfile::tempdir().unwrap();
    let n = 40;
    let data: Vec<f32> = (0..n * n * n)
        .map(|i| ((i % n) as f32 * 10.0) + ((i / (n * n)) as f32))
        .collect();
    let affine = [
        [2.0, 0.0, 0.0, 0.0],
        [0.0, 2.0, 0.0, 0.0],
        [0.0, 0.0, 2.0, 0.0],
        [0.0, 0.0, 0.0, 1.0],
    ];
    let vol = Volume::from_array(data, [n, n, n], affine);
    let path = dir.path().join("ramp.nii.gz");
    volume::write_float_channels(&path, &vol.data, 1, &vol).unwrap();

    let start = StartOptions {
        volume: Some(path),
        device: Some(DeviceChoice::Cpu),
        ..Default::default()
    };
    let mut h = Harness::builder()
        .with_size(egui::Vec2::new(1600.0, 1000.0))
        .wgpu()
        .build_eframe(move |cc| ExplorerApp::new(cc, start, Arc::new(AtomicI32::new(0))));
    let started = Instant::now();
    while h.state().volume_dims().is_none() || h.state().busy() || h.state().model_info().is_none()
    {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "start-up timed out"
        );
        h.step();
        std::thread::sleep(Duration::from_millis(20));
    }
    h.run_steps(4);
    let image = match h.render() {
        Ok(image) => image,
        Err(e) => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("wgpu rendering failed: {e}");
            }
            eprintln!("skipping: no wgpu adapter for rendering ({e})");
            return;
        }
    };
    // The axial view (top-left quarter of the central panel) shows the intensity ramp.
    let crop: Vec<u8> = (80..460)
        .flat_map(|y| (480..800).map(move |x| (x, y)))
        .map(|(x, y)| image.get_pixel(x, y)[0])
        .collect();
    let mut levels = crop.clone();
    levels.sort();
    levels.dedup();
    assert!(
        levels.len() > 10,
        "the axial slice is drawn ({} grey levels)",
        levels.len()
    );

    let uploads = render::upload_count();
    assert!(uploads >= 3, "three views uploaded their slices");
    h.state_mut().settings_mut().display.center += 50.0;
    h.state_mut().settings_mut().display.opacity = 0.9;
    h.run_steps(3);
    let _ = h.render().unwrap();
    assert_eq!(
        render::upload_count(),
        uploads,
        "a window change re-uploads nothing"
    );
    let after = h.render().unwrap();
    let changed = (80..460)
        .flat_map(|y| (480..800).map(move |x| (x, y)))
        .filter(|&(x, y)| after.get_pixel(x, y)[0] != image.get_pixel(x, y)[0])
        .count();
    assert!(
        changed > 1000,
        "the new window shows ({changed} pixels changed)"
    );

    // Another axial slice: exactly one view uploads.
    let dims = h.state().volume_dims().unwrap();
    h.state_mut()
        .set_crosshair([dims[0] / 2, dims[1] / 2, dims[2] / 2 + 3]);
    h.run_steps(2);
    let _ = h.render().unwrap();
    assert_eq!(
        render::upload_count(),
        uploads + 1,
        "only the axial view re-uploads"
    );
}
