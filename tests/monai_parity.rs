//! Numerical parity with MONAI's DiNTS: our network, loaded from MONAI's own state dicts and
//! architecture files, must reproduce MONAI's logits on the same input.
//!
//! The fixtures in `tests/fixtures/monai/` were written by `tools/make_monai_fixtures.py`
//! (MONAI 1.6.1, torch CPU float32, seeded; every parameter randomised). The tolerance is
//! max |ours - MONAI| / max |MONAI| <= 1e-4: MONAI's own float32 logits differ from its
//! float64 logits by up to 6.4e-5 on the deepest fixture (paper_code), ours by 1e-5.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use burn::tensor::{Device, Tensor, TensorData};
use hypersegnas::arch::{Op, SearchSpace, preset};
use hypersegnas::model::TensorSource;
use hypersegnas::monai::npy::{NpyArray, read_npy};
use hypersegnas::monai::open::{self, ArchSpec, Origin};
use hypersegnas::monai::{KeyScheme, StateDict, infer, read_arch_pth};

const TOLERANCE: f32 = 1e-4;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/monai")
        .join(name)
}

fn run(device: &Device, weights: &Path, arch: Option<ArchSpec>, input: &NpyArray) -> Vec<f32> {
    let opened = open::open(weights, arch.as_ref(), device).unwrap();
    let shape: [usize; 5] = [
        1,
        input.shape[0],
        input.shape[1],
        input.shape[2],
        input.shape[3],
    ];
    let x = Tensor::<5>::from_data(TensorData::new(input.values.clone(), shape), device);
    let y = opened
        .network
        .forward(x, &opened.arch, opened.mode)
        .unwrap();
    y.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

/// Loads case `name` from `weights` with its MONAI arch file and compares with MONAI.
fn check_case(device: &Device, name: &str, weights: &str, arch: Option<ArchSpec>) -> f32 {
    let input = read_npy(&fixture(&format!("{name}_input.npy"))).unwrap();
    let expected = read_npy(&fixture(&format!("{name}_logits.npy"))).unwrap();
    let ours = run(device, &fixture(weights), arch, &input);
    let err = common::relative_error(&ours, &expected.values);
    eprintln!("{name} ({weights}): max |ours - MONAI| / max |MONAI| = {err:.3e}");
    assert!(err <= TOLERANCE, "{name}: relative error {err:.3e}");
    err
}

fn arch_file(name: &str) -> Option<ArchSpec> {
    Some(ArchSpec::File(fixture(&format!("{name}_arch.pth"))))
}

#[test]
fn dints_paper_code_with_zero_head_node_matches_monai() {
    check_case(
        &Device::flex(),
        "paper_code",
        "paper_code.pt",
        arch_file("paper_code"),
    );
}

#[test]
fn instance_with_all_five_ops_matches_monai() {
    check_case(
        &Device::flex(),
        "all_ops",
        "all_ops.pt",
        arch_file("all_ops"),
    );
}

#[test]
fn search_space_checkpoint_decodes_like_monai_and_matches() {
    // Without --arch, the architecture is decoded from log_alpha_a / log_alpha_c; it must be
    // the one MONAI's decode() wrote into the arch file.
    let sd = StateDict::open(&fixture("search_space.pt")).unwrap();
    let inferred = infer(&sd).unwrap();
    assert_eq!(inferred.scheme, KeyScheme::SearchSpace);
    let monai = read_arch_pth(&fixture("search_space_arch.pth")).unwrap();
    assert_eq!(inferred.decoded.as_ref(), Some(&monai));
    check_case(&Device::flex(), "search_space", "search_space.pt", None);
    check_case(
        &Device::flex(),
        "search_space",
        "search_space.pt",
        Some(ArchSpec::Checkpoint),
    );
}

#[test]
fn no_downsample_network_from_safetensors_matches_monai() {
    check_case(
        &Device::flex(),
        "no_downsample",
        "no_downsample.safetensors",
        arch_file("no_downsample"),
    );
}

#[test]
fn no_downsample_network_takes_sides_divisible_by_two_to_the_levels() {
    // 3 levels without downsampling: MONAI runs 8 x 8 x 24 (multiples of 2^3, not 2^4).
    check_case(
        &Device::flex(),
        "no_downsample_side8",
        "no_downsample.safetensors",
        arch_file("no_downsample"),
    );
}

#[test]
fn sizes_below_monai_recommended_multiple_match_monai() {
    // MONAI asks for multiples of 2^(D + 1) (2^D without downsampling) but runs any multiple
    // of the deepest level's factor that leaves it more than one voxel: 3 x 2 x 1 voxels at
    // 1/16 for the paper code, 3 x 5 x 2 at 1/4 without downsampling.
    check_case(
        &Device::flex(),
        "paper_code_48x32x16",
        "paper_code.pt",
        arch_file("paper_code"),
    );
    check_case(
        &Device::flex(),
        "no_downsample_12x20x8",
        "no_downsample.safetensors",
        arch_file("no_downsample"),
    );
}

#[test]
fn architecture_on_the_upper_levels_takes_the_sizes_monai_runs() {
    // Levels 0 and 1 of 3 only: 12 x 20 x 12 is not a multiple of 8, but no active cell
    // reaches 1/8, so MONAI runs it, and so must we.
    check_case(
        &Device::flex(),
        "upper_levels",
        "upper_levels.pt",
        arch_file("upper_levels"),
    );
}

#[test]
fn wgpu_sizes_below_monai_recommended_multiple_match_monai() {
    let Some(device) = common::wgpu_device() else {
        return;
    };
    check_case(
        &device,
        "paper_code_48x32x16",
        "paper_code.pt",
        arch_file("paper_code"),
    );
}

#[test]
fn pre_2023_keys_with_prefix_and_wrapper_match_monai() {
    check_case(
        &Device::flex(),
        "legacy_keys",
        "legacy_keys.pt",
        arch_file("legacy_keys"),
    );
}

#[test]
fn wgpu_instance_with_all_five_ops_matches_monai() {
    let Some(device) = common::wgpu_device() else {
        return;
    };
    check_case(&device, "all_ops", "all_ops.pt", arch_file("all_ops"));
}

#[test]
fn wgpu_no_downsample_matches_monai() {
    let Some(device) = common::wgpu_device() else {
        return;
    };
    check_case(
        &device,
        "no_downsample",
        "no_downsample.safetensors",
        arch_file("no_downsample"),
    );
}

#[test]
fn shapes_determine_the_network() {
    #[derive(serde::Deserialize)]
    struct Case {
        name: String,
        files: std::collections::HashMap<String, String>,
        scheme: String,
        #[serde(default)]
        depths: usize,
        #[serde(default)]
        use_downsample: bool,
        #[serde(default)]
        filters: Vec<usize>,
        #[serde(default)]
        in_channels: usize,
        #[serde(default)]
        classes: usize,
    }
    let text = std::fs::read_to_string(fixture("cases.json")).unwrap();
    let cases: Vec<Case> = serde_json::from_str(&text).unwrap();
    assert!(cases.len() >= 5);
    for case in cases.iter().filter(|c| !c.filters.is_empty()) {
        let weights = case
            .files
            .get("pt")
            .or(case.files.get("safetensors"))
            .unwrap();
        let sd = StateDict::open(&fixture(weights)).unwrap();
        let inferred = infer(&sd).unwrap();
        let cfg = &inferred.config;
        let scheme = match inferred.scheme {
            KeyScheme::SearchSpace => "search_space",
            KeyScheme::Instance => "instance",
            KeyScheme::LegacyInstance => "legacy_instance",
        };
        assert_eq!(scheme, case.scheme, "{}", case.name);
        assert_eq!(cfg.space.num_depths, case.depths, "{}", case.name);
        assert_eq!(cfg.use_downsample, case.use_downsample, "{}", case.name);
        assert_eq!(cfg.in_channels, case.in_channels, "{}", case.name);
        assert_eq!(cfg.num_classes, case.classes, "{}", case.name);
        let filters = cfg.filters();
        assert_eq!(
            &filters[..case.filters.len()],
            &case.filters[..],
            "{}",
            case.name
        );
    }
}

#[test]
fn arch_files_hold_the_published_dints_code() {
    // The fixture's arch file is the DiNTS paper's code written by MONAI's layout (numpy
    // float64 arch_code_a, int64 arch_code_c and node_a, pickled with protocol 2).
    let code = read_arch_pth(&fixture("paper_code_arch.pth")).unwrap();
    let expected = preset("dints-paper", &SearchSpace::dints(12, 4)).unwrap();
    assert_eq!(code, expected);
    assert_eq!(code.get(0, 1), None);
    assert_eq!(code.get(0, 4), Some(Op::Conv3x3x1));
}

#[test]
fn safetensors_and_torch_state_dicts_read_the_same_kind_of_values() {
    let sd = StateDict::open(&fixture("no_downsample.safetensors")).unwrap();
    let key = "stem_finals.1.bias";
    assert_eq!(sd.shape(key), Some(vec![2]));
    let pt = StateDict::open(&fixture("legacy_keys.pt")).unwrap();
    // `module.` is stripped and the {"model": ...} wrapper unwrapped.
    assert!(pt.keys().iter().all(|k| !k.starts_with("module.")));
    assert!(pt.shape("stem_finals.1.weight").is_some());
}

#[test]
fn truncated_and_corrupted_torch_files_are_errors_naming_the_file() {
    let bytes = std::fs::read(fixture("legacy_keys.pt")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.pt");
    let cuts: Vec<usize> = (0..40)
        .map(|i| i * bytes.len() / 40)
        .chain([bytes.len() - 1, bytes.len() - 22, 30, 64])
        .collect();
    for len in cuts {
        std::fs::write(&path, &bytes[..len]).unwrap();
        let err = match open::open(&path, arch_file("legacy_keys").as_ref(), &Device::flex()) {
            Ok(_) => panic!("a {len}-byte prefix loaded"),
            Err(e) => e,
        };
        assert!(err.contains("broken.pt"), "{len}: {err}");
    }
    // A flipped bit inside a tensor record fails the record's CRC-32 (torch.load would
    // read different weights without a word).
    let mut flipped = bytes.clone();
    let zip = hypersegnas::monai::zip::ZipArchive::parse(&bytes).unwrap();
    let entry = zip
        .entries()
        .iter()
        .filter(|e| e.name.contains("/data/"))
        .max_by_key(|e| e.size)
        .unwrap();
    let (start, end) = zip.stored_range(entry).unwrap().unwrap();
    flipped[(start + end) / 2] ^= 0x10;
    std::fs::write(&path, &flipped).unwrap();
    let err = match open::open(&path, arch_file("legacy_keys").as_ref(), &Device::flex()) {
        Ok(_) => panic!("a damaged tensor record loaded"),
        Err(e) => e,
    };
    assert!(
        err.contains("broken.pt") && err.contains("CRC-32") && err.contains(&entry.name),
        "{err}"
    );
    // So does one in a record the loader has no use for (the version number).
    let version = zip
        .entries()
        .iter()
        .find(|e| e.name.ends_with("/version"))
        .unwrap();
    let (start, _) = zip.stored_range(version).unwrap().unwrap();
    let mut flipped = bytes.clone();
    flipped[start] ^= 0x01;
    std::fs::write(&path, &flipped).unwrap();
    let err = match open::open(&path, arch_file("legacy_keys").as_ref(), &Device::flex()) {
        Ok(_) => panic!("a damaged version record loaded"),
        Err(e) => e,
    };
    assert!(
        err.contains("CRC-32") && err.contains(&version.name),
        "{err}"
    );
    // Flipped bytes: any error is fine, a panic is not.
    let mut state = 12345u32;
    for _ in 0..60 {
        let mut corrupt = bytes.clone();
        for _ in 0..8 {
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let at = (state as usize >> 4) % corrupt.len();
            corrupt[at] ^= 0x5a;
        }
        std::fs::write(&path, &corrupt).unwrap();
        let _ = open::open(&path, arch_file("legacy_keys").as_ref(), &Device::flex());
    }
    // Arch files too.
    let arch = std::fs::read(fixture("paper_code_arch.pth")).unwrap();
    let arch_path = dir.path().join("arch.pth");
    for len in (0..arch.len()).step_by(97) {
        std::fs::write(&arch_path, &arch[..len]).unwrap();
        let err = read_arch_pth(&arch_path).unwrap_err().to_string();
        assert!(err.contains("arch.pth"), "{len}: {err}");
    }
}

#[test]
fn instance_without_architecture_is_refused_with_advice() {
    let err = match open::open(&fixture("all_ops.pt"), None, &Device::flex()) {
        Ok(_) => panic!("loaded without an architecture"),
        Err(e) => e,
    };
    assert!(
        err.contains("all_ops.pt") && err.contains("--arch"),
        "{err}"
    );
    // A wrong architecture (another case's) is refused by the key check.
    let err = match open::open(
        &fixture("all_ops.pt"),
        arch_file("no_downsample").as_ref(),
        &Device::flex(),
    ) {
        Ok(_) => panic!("loaded with a foreign architecture"),
        Err(e) => e,
    };
    assert!(err.contains("all_ops.pt"), "{err}");
}

#[test]
fn monai_networks_are_reported_as_such() {
    let opened = open::open(
        &fixture("legacy_keys.pt"),
        arch_file("legacy_keys").as_ref(),
        &Device::flex(),
    )
    .unwrap();
    match opened.origin {
        Origin::Monai(inferred) => assert_eq!(inferred.scheme, KeyScheme::LegacyInstance),
        Origin::Native => panic!("reported as native"),
    }
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hypersegnas"))
}

/// `forward` on the CPU with the `legacy_keys` network and its arch file, plus `extra`.
fn forward_legacy(input: &Path, output: &Path, extra: &[&str]) -> std::process::Output {
    bin()
        .args(["forward", "--device", "cpu", "--checkpoint"])
        .arg(fixture("legacy_keys.pt"))
        .arg("--arch")
        .arg(fixture("legacy_keys_arch.pth"))
        .arg("--input")
        .arg(input)
        .arg("--output")
        .arg(output)
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn info_verifies_a_searched_instance_with_its_arch_file() {
    let info = |extra: &[&Path]| {
        let mut cmd = bin();
        cmd.arg("info").arg(fixture("all_ops.pt")).arg("--verify");
        for (flag, value) in ["--arch"].iter().zip(extra) {
            cmd.arg(flag).arg(value);
        }
        cmd.output().unwrap()
    };
    let out = info(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("all_ops.pt") && stderr.contains("--arch"),
        "{stderr}"
    );

    let out = info(&[&fixture("all_ops_arch.pth")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("verified    every tensor loads with")
            && stdout.contains("all_ops_arch.pth"),
        "{stdout}"
    );

    // Another network's architecture does not fit these tensors.
    let out = info(&[&fixture("no_downsample_arch.pth")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("all_ops.pt"));
}

#[test]
fn forward_cli_writes_monai_logits() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("logits.npy");
    let status = forward_legacy(&fixture("legacy_keys_input.npy"), &out, &[]);
    assert!(status.status.success(), "{status:?}");
    let ours = read_npy(&out).unwrap();
    let expected = read_npy(&fixture("legacy_keys_logits.npy")).unwrap();
    assert_eq!(ours.shape, expected.shape);
    assert!(common::relative_error(&ours.values, &expected.values) <= TOLERANCE);
    // No temporary file is left behind.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn forward_cli_warns_about_nan_inputs_and_keeps_them() {
    let dir = tempfile::tempdir().unwrap();
    let mut patch = read_npy(&fixture("legacy_keys_input.npy")).unwrap();
    patch.values[5] = f32::NAN;
    patch.values[9] = f32::INFINITY;
    let input = dir.path().join("nan.npy");
    hypersegnas::monai::npy::write_npy(&input, &patch.shape, &patch.values).unwrap();
    let out = dir.path().join("logits.npy");
    let output = forward_legacy(&input, &out, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("nan.npy: 2 of 1024 values are NaN or infinite"),
        "{stderr}"
    );
    // As in PyTorch, the instance norms carry the NaN into every logit.
    let logits = read_npy(&out).unwrap();
    assert!(logits.values.iter().any(|v| v.is_nan()));

    // A finite value near the f32 limit stays finite: its square would overflow f32 in the
    // first instance norm (MONAI's float32 logits stay finite here too).
    patch.values[5] = 3e38;
    patch.values[9] = -2e38;
    hypersegnas::monai::npy::write_npy(&input, &patch.shape, &patch.values).unwrap();
    let output = forward_legacy(&input, &out, &["--force"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(!stderr.contains("NaN"), "{stderr}");
    let logits = read_npy(&out).unwrap();
    assert!(logits.values.iter().all(|v| v.is_finite()));
}

#[test]
fn forward_cli_refuses_bad_patches_with_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("logits.npy");
    let write = |name: &str, shape: &[usize], values: &[f32]| {
        let path = dir.path().join(name);
        hypersegnas::monai::npy::write_npy(&path, shape, values).unwrap();
        path
    };
    let wrong_channels = write("c2.npy", &[2, 16, 8, 8], &vec![0.0; 2 * 16 * 64]);
    let wrong_size = write("odd.npy", &[1, 10, 8, 8], &vec![0.0; 10 * 64]);
    let wrong_rank = write("rank.npy", &[16, 8, 8], &vec![0.0; 16 * 64]);
    let mut f64_bytes = std::fs::read(&wrong_rank).unwrap();
    let at = f64_bytes.windows(3).position(|w| w == b"<f4").unwrap();
    f64_bytes[at..at + 3].copy_from_slice(b"<f8");
    let wrong_dtype = dir.path().join("f8.npy");
    std::fs::write(&wrong_dtype, f64_bytes).unwrap();
    for (input, needle) in [
        (&wrong_channels, "channels"),
        (&wrong_size, "multiples of 4"),
        (&wrong_rank, "expected [C, D, H, W]"),
        (&wrong_dtype, "float32"),
    ] {
        let output = forward_legacy(input, &out, &[]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        let name = input.file_name().unwrap().to_string_lossy();
        assert!(
            stderr.contains(needle) && stderr.contains(name.as_ref()),
            "{stderr}"
        );
        assert!(!out.exists());
    }
    // A missing output folder is refused before any work.
    let missing = dir.path().join("missing/logits.npy");
    let output = forward_legacy(&fixture("legacy_keys_input.npy"), &missing, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("does not exist") && !stderr.contains("forward pass done"));
    // The output may not overwrite the input.
    let output = forward_legacy(&wrong_channels, &wrong_channels, &["--force"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("refusing to overwrite"));
}

#[test]
fn pancreas_pipeline_matches_monai_transforms_and_sliding_window() {
    // MONAI's label map for a crop of a real CT, from the bundle's transforms
    // (Orientationd RAS, Spacingd 1 mm bilinear, ScaleIntensityRanged -87..199 clipped),
    // SlidingWindowInferer (ROI 32 here, overlap 0.625, constant blending), softmax, Invertd
    // and argmax, with a small random DiNTS instance.
    let Some(ct) = common::data_file("totalsegmentator/tests/reference_files/example_ct_sm.nii.gz")
    else {
        return;
    };
    let full = hypersegnas::volume::read_volume(&ct).unwrap();
    let (x0, y0, z0) = (40, 30, 8);
    let dims = [32, 32, 16];
    let mut data = Vec::with_capacity(dims.iter().product());
    for z in 0..dims[2] {
        for y in 0..dims[1] {
            for x in 0..dims[0] {
                let at = (x + x0) + full.dims[0] * ((y + y0) + full.dims[1] * (z + z0));
                data.push(full.data[at]);
            }
        }
    }
    let mut world_from_voxel = full.world_from_voxel;
    for (r, row) in world_from_voxel.iter_mut().take(3).enumerate() {
        let shift: f64 = (0..3)
            .map(|c| full.world_from_voxel[r][c] * [x0, y0, z0][c] as f64)
            .sum();
        row[3] += shift;
    }
    let crop = hypersegnas::volume::Volume {
        data,
        dims,
        world_from_voxel,
        ..full
    };

    let device = Device::flex();
    let opened = open::open(
        &fixture("pancreas_pipeline.pt"),
        arch_file("pancreas_pipeline").as_ref(),
        &device,
    )
    .unwrap();
    let options = hypersegnas::inference::WindowOptions {
        roi: [32; 3],
        overlap: 0.625,
        blend: hypersegnas::inference::Blend::Constant,
        batch: 4,
        mode: opened.mode,
    };
    let seg = hypersegnas::inference::segment_with(
        &opened.network,
        &device,
        &crop,
        &hypersegnas::checkpoint::Preprocess::monai_pancreas(),
        &opened.arch,
        &options,
        hypersegnas::inference::SoftmaxOrder::AfterBlending,
        false,
        &mut |_| std::ops::ControlFlow::Continue(()),
    )
    .unwrap();

    // MONAI's array is [x, y, z] in C order; ours is x fastest.
    let expected = read_labels(&fixture("pancreas_pipeline_labels.npy"));
    let mut differ = 0;
    for x in 0..dims[0] {
        for y in 0..dims[1] {
            for z in 0..dims[2] {
                let theirs = expected[(x * dims[1] + y) * dims[2] + z];
                let ours = seg.labels[x + dims[0] * (y + dims[1] * z)];
                differ += (theirs as u16 != ours) as usize;
            }
        }
    }
    let fraction = differ as f64 / expected.len() as f64;
    eprintln!(
        "pancreas pipeline: {differ} of {} voxels differ",
        expected.len()
    );
    assert!(fraction <= 0.001, "{differ} voxels differ ({fraction:.4})");
    // The fixture is not degenerate: every class occurs.
    assert!(seg.counts.iter().all(|&n| n > 0), "{:?}", seg.counts);
}

/// A uint8 `.npy` label map (written by numpy, `|u1`).
fn read_labels(path: &Path) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap();
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + header_len]).unwrap();
    assert!(header.contains("'|u1'"), "{header}");
    bytes[10 + header_len..].to_vec()
}

#[test]
fn segment_cli_runs_a_monai_checkpoint_with_the_pancreas_pipeline() {
    let Some(ct) = common::data_file("totalsegmentator/tests/reference_files/example_ct_sm.nii.gz")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("mask.nii.gz");
    let output = bin()
        .arg("segment")
        .arg(&ct)
        .arg("--checkpoint")
        .arg(fixture("pancreas_pipeline.pt"))
        .arg("--arch")
        .arg(fixture("pancreas_pipeline_arch.pth"))
        .args([
            "--pipeline",
            "monai-pancreas",
            "--device",
            "cpu",
            "--batch",
            "4",
        ])
        // 16 windows instead of the pipeline's 63 keep the test short; the pipeline's own
        // overlap is covered by the parity test above.
        .args(["--overlap", "0"])
        .arg("-o")
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // The label map lies on the input's grid, and the MONAI network's classes are named.
    let mask = hypersegnas::volume::read_volume(&out).unwrap();
    let input = hypersegnas::volume::read_volume(&ct).unwrap();
    assert_eq!(mask.dims, input.dims);
    assert!(stdout.contains("class_2"), "{stdout}");
    assert!(
        mask.data
            .iter()
            .all(|&v| v == v.round() && (0.0..3.0).contains(&v))
    );
}
