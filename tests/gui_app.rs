//! Interaction tests of the explorer with egui_kittest: the architecture grid, undo, the
//! Run button's validity check and the Figure 7 panel, driven through the accessibility tree
//! as a user would click. The app runs with the bundled demo super-net on the CPU and a small
//! synthetic CT written to a temporary folder (no display or GPU needed).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicI32;
use std::time::{Duration, Instant};

use egui_kittest::Harness;
use egui_kittest::kittest::{NodeT, Queryable};
use hypersegnas::app::{ExplorerApp, StartOptions};
use hypersegnas::device::DeviceChoice;
use hypersegnas::volume::{self, Volume};

/// A 48^3 "CT" at 2 mm with a bright sphere (the foreground) inside a body-like box, and its
/// label map.
fn write_phantom(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let n = 48;
    let mut data = vec![-1000.0f32; n * n * n];
    let mut labels = vec![0u16; n * n * n];
    for z in 0..n {
        for y in 0..n {
            for x in 0..n {
                let i = x + n * (y + n * z);
                let inside_body =
                    (6..42).contains(&x) && (6..42).contains(&y) && (4..44).contains(&z);
                if inside_body {
                    data[i] = 40.0 + ((x * 7 + y * 13 + z * 3) % 11) as f32;
                }
                let d2 = (x as f32 - 30.0).powi(2)
                    + (y as f32 - 22.0).powi(2)
                    + (z as f32 - 24.0).powi(2);
                if d2 < 36.0 {
                    data[i] = 120.0;
                    labels[i] = 1;
                }
            }
        }
    }
    let affine = [
        [2.0, 0.0, 0.0, -48.0],
        [0.0, 2.0, 0.0, -48.0],
        [0.0, 0.0, 2.0, -48.0],
        [0.0, 0.0, 0.0, 1.0],
    ];
    let vol = Volume::from_array(data, [n, n, n], affine);
    let image = dir.join("phantom_ct.nii.gz");
    let label = dir.join("phantom_seg.nii.gz");
    volume::write_float_channels(&image, &vol.data, 1, &vol).unwrap();
    volume::write_label_map(&label, &labels, &vol).unwrap();
    (image, label)
}

fn harness(start: StartOptions) -> Harness<'static, ExplorerApp> {
    Harness::builder()
        .with_size(egui::Vec2::new(1600.0, 1000.0))
        .build_eframe(move |cc| ExplorerApp::new(cc, start, Arc::new(AtomicI32::new(0))))
}

/// Steps frames until `done` holds (the worker threads answer in real time).
fn wait_for(
    h: &mut Harness<'static, ExplorerApp>,
    what: &str,
    done: impl Fn(&ExplorerApp) -> bool,
) {
    let started = Instant::now();
    while !done(h.state()) {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "timed out waiting for {what}"
        );
        h.step();
        std::thread::sleep(Duration::from_millis(20));
    }
    h.run_steps(3);
}

fn start_with_phantom(dir: &Path) -> Harness<'static, ExplorerApp> {
    let (image, label) = write_phantom(dir);
    let mut h = harness(StartOptions {
        volume: Some(image),
        label: Some(label),
        device: Some(DeviceChoice::Cpu),
        ..Default::default()
    });
    // Loading, the first whole-volume run and the automatic Figure 7 patches.
    wait_for(&mut h, "start-up", |app| {
        app.model_info().is_some()
            && app.volume_dims().is_some()
            && !app.busy()
            && app.weights_ready() > 0
    });
    h
}

#[test]
fn clicking_a_cell_cycles_it_and_undo_restores_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = start_with_phantom(dir.path());
    let before = h.state().arch().unwrap().clone();
    let op_before = before.get(0, 0);

    h.get_by_label("layer 1 edge 1").click();
    h.run_steps(2);
    let after = h.state().arch().unwrap().clone();
    let expected = match op_before {
        None => Some(hypersegnas::arch::Op::Skip),
        Some(hypersegnas::arch::Op::Skip) => Some(hypersegnas::arch::Op::Conv3x3x3),
        Some(_) => None,
    };
    assert_eq!(
        after.get(0, 0),
        expected,
        "a click moves the cell to the next state"
    );
    for l in 0..12 {
        for e in 0..10 {
            if (l, e) != (0, 0) {
                assert_eq!(
                    after.get(l, e),
                    before.get(l, e),
                    "only the clicked cell changes"
                );
            }
        }
    }

    // Undo through the keyboard shortcut, then redo through the button.
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::Z);
    h.run_steps(2);
    assert_eq!(
        h.state().arch().unwrap(),
        &before,
        "Ctrl+Z restores the code"
    );
    h.get_by_label("Redo").click();
    h.run_steps(2);
    assert_eq!(h.state().arch().unwrap(), &after);
}

#[test]
fn an_invalid_edit_disables_run_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = start_with_phantom(dir.path());
    assert!(
        h.state().run_blocker().is_none(),
        "Run is enabled after start-up"
    );
    assert!(!h.get_by_label("Run").accesskit_node().is_disabled());

    // Start from the unet preset, which leaves most nodes inactive, and find an off cell
    // whose source node is inactive: switching it on makes an edge leave a node that nothing
    // feeds.
    let space = h.state().model_info().unwrap().config.network.space.clone();
    let code = hypersegnas::arch::preset("unet", &space).unwrap();
    h.state_mut().set_arch(code.clone());
    h.run_steps(2);
    assert!(
        h.state().run_blocker().is_none(),
        "the unet preset is valid"
    );
    let node_a = code.node_a();
    let (layer, edge) = (1..code.num_layers())
        .flat_map(|l| (0..code.num_edges()).map(move |e| (l, e)))
        .find(|&(l, e)| code.get(l, e).is_none() && !node_a[l][space.edge(e).source])
        .expect("the unet preset has an inactive node");
    h.get_by_label(&format!("layer {} edge {}", layer + 1, edge + 1))
        .click();
    h.run_steps(2);

    let blocker = h.state().run_blocker().expect("the edit is invalid");
    assert!(blocker.contains("invalid architecture"), "{blocker}");
    assert!(
        h.get_by_label("Run").accesskit_node().is_disabled(),
        "Run is disabled"
    );
    h.get_by_label_contains("Run disabled: invalid architecture");

    // Undo makes it valid again.
    h.get_by_label("Undo").click();
    // The valid code recomputes the Figure 7 weights; Run waits for that.
    wait_for(&mut h, "channel weights", |app| !app.busy());
    assert!(h.state().run_blocker().is_none());
    assert!(!h.get_by_label("Run").accesskit_node().is_disabled());
}

#[test]
fn figure7_plots_one_line_per_patch() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = start_with_phantom(dir.path());
    // Start-up sampled 4 foreground and 4 background patches from the ground truth.
    assert_eq!(h.state().fig7.patches.len(), 8);
    assert_eq!(h.state().weights_ready(), 8);
    assert_eq!(h.state().plotted_lines(), 8);
    h.get_by_label("Figure 7 plot: 8 lines");

    // Three per group through the panel's controls.
    h.state_mut().fig7.per_group = 3;
    h.get_by_label("Sample foreground/background").click();
    wait_for(&mut h, "channel weights", |app| {
        app.weights_ready() == 6 && !app.busy()
    });
    assert_eq!(h.state().plotted_lines(), 6);

    // One more, picked by hand at the crosshair.
    h.state_mut().add_patch(
        [30, 22, 24],
        hypersegnas::app::worker::PatchKind::Foreground,
    );
    wait_for(&mut h, "channel weights", |app| {
        app.weights_ready() == 7 && !app.busy()
    });
    assert_eq!(h.state().plotted_lines(), 7);
    h.get_by_label("Figure 7 plot: 7 lines");
}

#[test]
fn a_result_for_a_replaced_volume_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let (image, _) = write_phantom(dir.path());
    // A second volume with another grid.
    let dims = [40, 30, 20];
    let affine = [
        [2.0, 0.0, 0.0, 0.0],
        [0.0, 2.0, 0.0, 0.0],
        [0.0, 0.0, 3.0, 0.0],
        [0.0, 0.0, 0.0, 1.0],
    ];
    let other = Volume::from_array(vec![10.0; 40 * 30 * 20], dims, affine);
    let other_path = dir.path().join("other.nii");
    volume::write_float_channels(&other_path, &other.data, 1, &other).unwrap();

    let mut h = harness(StartOptions {
        volume: Some(image),
        device: Some(DeviceChoice::Cpu),
        ..Default::default()
    });
    // Wait until the first inference is under way, then open the other volume.
    wait_for(&mut h, "the first run", |app| {
        app.busy() && app.volume_dims().is_some()
    });
    h.state_mut().open_any(other_path);
    wait_for(&mut h, "the second volume", |app| {
        app.volume_dims() == Some(dims) && !app.busy()
    });
    h.run_steps(5);
    // The first run was still going when the volume changed: its 48^3 labels must not land
    // on the new volume. (A run on the new volume itself may have started meanwhile.)
    let kept = h.state().prediction().map(|p| p.len());
    assert!(
        kept.is_none() || kept == Some(40 * 30 * 20),
        "a result for the replaced volume was kept ({kept:?} labels)"
    );
}

#[test]
fn a_monai_instance_opens_with_its_architecture_file() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/monai");
    let dir = tempfile::tempdir().unwrap();
    let (image, _) = write_phantom(dir.path());
    let mut h = harness(StartOptions {
        volume: Some(image),
        checkpoint: Some(fixtures.join("paper_code.pt")),
        arch: Some(fixtures.join("paper_code_arch.pth")),
        device: Some(DeviceChoice::Cpu),
        ..Default::default()
    });
    wait_for(&mut h, "the MONAI network's first run", |app| {
        app.model_info().is_some() && app.prediction().is_some() && !app.busy()
    });
    let info = h.state().model_info().unwrap().clone();
    assert!(
        info.monai
            .as_deref()
            .unwrap()
            .starts_with("searched instance")
    );
    let expected =
        hypersegnas::monai::import::read_arch_pth(&fixtures.join("paper_code_arch.pth")).unwrap();
    assert_eq!(
        h.state().arch().unwrap(),
        &expected,
        "the grid shows the file's code"
    );
    assert!(h.state().run_blocker().is_none());

    // Turning on an edge the instance has no weights for blocks Run, with the reason.
    let node_a = expected.node_a();
    let space = info.config.network.space.clone();
    let (layer, edge) = (1..expected.num_layers())
        .flat_map(|l| (0..expected.num_edges()).map(move |e| (l, e)))
        .find(|&(l, e)| expected.get(l, e).is_none() && node_a[l][space.edge(e).source])
        .expect("the paper's code has an off edge leaving an active node");
    h.get_by_label(&format!("layer {} edge {}", layer + 1, edge + 1))
        .click();
    h.run_steps(2);
    let blocker = h.state().run_blocker().expect("Run is blocked");
    assert!(blocker.contains("no weights"), "{blocker}");
    assert!(h.get_by_label("Run").accesskit_node().is_disabled());
}

#[test]
fn saving_the_prediction_writes_a_label_map_and_never_an_input() {
    let dir = tempfile::tempdir().unwrap();
    let mut h = start_with_phantom(dir.path());
    let image = dir.path().join("phantom_ct.nii.gz");
    let truth = dir.path().join("phantom_seg.nii.gz");
    let before = (
        std::fs::read(&image).unwrap(),
        std::fs::read(&truth).unwrap(),
    );

    // Over the volume and over the ground truth: refused, both files unchanged.
    for input in [&image, &truth] {
        h.state_mut().save_prediction(input.clone());
        h.run_steps(2);
        std::thread::sleep(Duration::from_millis(500));
        h.run_steps(2);
    }
    assert_eq!(std::fs::read(&image).unwrap(), before.0);
    assert_eq!(std::fs::read(&truth).unwrap(), before.1);

    // A new file: the prediction on the volume's own grid.
    let out = dir.path().join("pred.nii.gz");
    h.state_mut().save_prediction(out.clone());
    let started = Instant::now();
    while !out.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no file written"
        );
        h.step();
        std::thread::sleep(Duration::from_millis(20));
    }
    let saved = volume::read_volume(&out).unwrap();
    assert_eq!(saved.dims, [48, 48, 48]);
    let predicted = h.state().prediction().unwrap();
    let saved_labels: Vec<u16> = saved.data.iter().map(|&v| v as u16).collect();
    assert_eq!(
        saved_labels, predicted,
        "an RAS phantom keeps its voxel order"
    );
}

#[test]
fn without_native_dialogs_a_typed_path_opens_a_volume() {
    if std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some_and(|v| !v.is_empty()) {
        eprintln!("skipping: a D-Bus session exists, so the native dialog would be used");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (image, _) = write_phantom(dir.path());
    let mut h = harness(StartOptions {
        device: Some(DeviceChoice::Cpu),
        ..Default::default()
    });
    wait_for(&mut h, "the checkpoint", |app| {
        app.model_info().is_some() && !app.busy()
    });
    h.get_by_label("File").click();
    h.run_steps(2);
    h.get_by_label("Open volume…  (Ctrl+O)").click();
    h.run_steps(2);
    h.get_by_label_contains("Path (absolute")
        .type_text(image.to_str().unwrap());
    h.run_steps(1);
    h.get_by_label("OK").click();
    wait_for(&mut h, "the typed volume", |app| {
        app.volume_dims() == Some([48, 48, 48])
    });
}
