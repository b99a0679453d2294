//! Starts the real binary's window under Xvfb (wgpu renderer on Mesa's software Vulkan
//! driver), loads the example CT with the bundled demo super-net, lets it finish the first
//! inference and the Figure 7 patches, and checks the PNG that `--screenshot` writes.
//!
//! Skips with a printed reason when the CT or Xvfb is missing, except under `CI=true`, where
//! a missing Xvfb is a failure (`.ci/setup` installs it).

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Xvfb {
    child: Child,
    display: String,
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_xvfb() -> Option<Xvfb> {
    let which = Command::new("sh")
        .args(["-c", "command -v Xvfb"])
        .output()
        .ok()?;
    if !which.status.success() {
        return None;
    }
    for n in 0..20 {
        let number = 90 + (std::process::id() as usize + n) % 400;
        let socket = format!("/tmp/.X11-unix/X{number}");
        if Path::new(&socket).exists() {
            continue;
        }
        let child = Command::new("Xvfb")
            .args([
                &format!(":{number}"),
                "-screen",
                "0",
                "1920x1080x24",
                "-nolisten",
                "tcp",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if Path::new(&socket).exists() {
                return Some(Xvfb {
                    child,
                    display: format!(":{number}"),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    None
}

fn decode_rgba(path: &Path) -> (usize, usize, Vec<u8>) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgba);
    buf.truncate(info.buffer_size());
    (info.width as usize, info.height as usize, buf)
}

/// Standard deviation of the luminance in a box, and the share of distinct grey levels.
fn variation(
    rgba: &[u8],
    width: usize,
    x0: usize,
    y0: usize,
    x1: usize,
    y1: usize,
) -> (f64, usize) {
    let mut values = Vec::new();
    for y in y0..y1 {
        for x in x0..x1 {
            let p = &rgba[(y * width + x) * 4..(y * width + x) * 4 + 3];
            values.push((p[0] as f64 + p[1] as f64 + p[2] as f64) / 3.0);
        }
    }
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / values.len() as f64;
    let mut levels: Vec<u8> = values.iter().map(|v| *v as u8).collect();
    levels.sort();
    levels.dedup();
    (var.sqrt(), levels.len())
}

#[test]
fn screenshot_of_the_real_window_shows_slices_and_the_plot() {
    let Some(ct) = common::data_file("totalsegmentator/tests/reference_files/example_ct.nii.gz")
    else {
        return;
    };
    let Some(xvfb) = start_xvfb() else {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("Xvfb is not installed (.ci/setup installs it)");
        }
        eprintln!("skipping: Xvfb is not installed (apt-get install xvfb)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let shot = dir.path().join("window.png");
    let runtime = dir.path().join("xdg");
    std::fs::create_dir_all(&runtime).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_hypersegnas"))
        .arg("gui")
        .arg(&ct)
        .args([
            "--device",
            "cpu",
            "--window-size",
            "1600x1000",
            "--screenshot",
        ])
        .arg(&shot)
        .env("DISPLAY", &xvfb.display)
        .env_remove("WAYLAND_DISPLAY")
        .env("WINIT_X11_SCALE_FACTOR", "1")
        .env("XDG_RUNTIME_DIR", &runtime)
        .env("XDG_DATA_HOME", dir.path().join("data"))
        .env("XDG_CONFIG_HOME", dir.path().join("config"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(900) {
            let _ = child.kill();
            panic!("the app did not finish within 15 minutes");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(status.success(), "exit status {status}; stderr:\n{stderr}");
    assert!(shot.exists(), "no screenshot written; stderr:\n{stderr}");

    let (w, h, rgba) = decode_rgba(&shot);
    assert_eq!((w, h), (1600, 1000), "the window's size");
    // Layout (points = pixels on Xvfb): architecture panel on the left (430), Figure 7 on the
    // right (440), the slice views in between; the axial view is the central panel's top-left
    // quarter.
    let (axial_sd, axial_levels) = variation(&rgba, w, 470, 60, 800, 480);
    assert!(
        axial_sd > 20.0 && axial_levels > 30,
        "the axial view is blank: sd {axial_sd}, {axial_levels} grey levels"
    );
    let (sag_sd, _) = variation(&rgba, w, 470, 540, 800, 950);
    assert!(sag_sd > 20.0, "the sagittal view is blank: sd {sag_sd}");
    let (plot_sd, plot_levels) = variation(&rgba, w, 1180, 200, 1580, 600);
    assert!(
        plot_sd > 5.0 && plot_levels > 8,
        "the Figure 7 plot is blank: sd {plot_sd}, {plot_levels} levels"
    );
    // The grid panel holds coloured cells.
    let (grid_sd, _) = variation(&rgba, w, 20, 80, 400, 300);
    assert!(
        grid_sd > 10.0,
        "the architecture grid is blank: sd {grid_sd}"
    );
}
