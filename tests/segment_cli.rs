//! The `hypersegnas` binary end to end: a fresh demo checkpoint segments a real CT on the
//! CPU and on wgpu, the label map sits on the CT's own grid, and bad input gives exit code
//! 2 with the file named and no output written.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use hypersegnas::volume;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hypersegnas"))
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("the binary runs");
    eprintln!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A fresh demo checkpoint with coarse spacing so a CT takes few windows.
fn demo_checkpoint(dir: &Path, spacing: &str, roi: &str) -> PathBuf {
    let path = dir.join("demo.safetensors");
    let out = run(bin()
        .args([
            "init",
            "--network",
            "demo",
            "--classes",
            "background,spleen",
        ])
        .args(["--spacing", spacing, "--roi", roi, "--seed", "1", "-o"])
        .arg(&path));
    assert!(out.status.success());
    path
}

fn check_same_grid(mask: &Path, ct: &Path) {
    let input = volume::read_volume(ct).unwrap();
    let output = volume::read_volume(mask).unwrap();
    assert_eq!(output.dims, input.dims);
    assert_eq!(output.world_from_voxel, input.world_from_voxel);
    let (hi, ho) = (&input.header, &output.header);
    assert_eq!(ho.sform_code, hi.sform_code);
    assert_eq!(ho.qform_code, hi.qform_code);
    assert_eq!(
        (ho.srow_x, ho.srow_y, ho.srow_z),
        (hi.srow_x, hi.srow_y, hi.srow_z)
    );
    assert_eq!(
        (ho.quatern_b, ho.quatern_c, ho.quatern_d),
        (hi.quatern_b, hi.quatern_c, hi.quatern_d)
    );
    assert_eq!(
        (ho.quatern_x, ho.quatern_y, ho.quatern_z),
        (hi.quatern_x, hi.quatern_y, hi.quatern_z)
    );
    assert_eq!(ho.pixdim[..4], hi.pixdim[..4]);
    assert_eq!(ho.datatype, 2, "label maps are uint8 for two classes");
    assert!(output.data.iter().all(|v| *v == 0.0 || *v == 1.0));
}

#[test]
fn segment_example_ct_on_cpu() {
    let Some(ct) = common::data_file("totalsegmentator/tests/reference_files/example_ct.nii.gz")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ckpt = demo_checkpoint(dir.path(), "3", "64");
    let mask = dir.path().join("mask.nii.gz");
    let probs = dir.path().join("probs.nii.gz");
    let out = run(bin()
        .arg("segment")
        .arg(&ct)
        .arg("--checkpoint")
        .arg(&ckpt)
        .args([
            "--preset",
            "dints-paper",
            "--device",
            "cpu",
            "--mode",
            "man",
            "-o",
        ])
        .arg(&mask)
        .arg("--probabilities")
        .arg(&probs));
    assert!(out.status.success());
    check_same_grid(&mask, &ct);
    let p = volume::read_volume(&probs).unwrap();
    assert_eq!(p.dims, volume::read_volume(&ct).unwrap().dims);
    assert!(
        p.warnings.iter().any(|w| w.contains("2 volumes")),
        "{:?}",
        p.warnings
    );
}

#[test]
fn segment_example_ct_on_wgpu() {
    let Some(ct) = common::data_file("totalsegmentator/tests/reference_files/example_ct.nii.gz")
    else {
        return;
    };
    if common::wgpu_device().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // 6 mm spacing: the CT becomes about 61 x 50 x 56 voxels, one padded 64^3 window.
    let ckpt = demo_checkpoint(dir.path(), "6", "64");
    let mask = dir.path().join("mask.nii");
    let out = run(bin()
        .arg("segment")
        .arg(&ct)
        .arg("--checkpoint")
        .arg(&ckpt)
        .args([
            "--preset", "unet", "--device", "gpu", "--mode", "fixed", "-o",
        ])
        .arg(&mask));
    assert!(out.status.success());
    check_same_grid(&mask, &ct);
}

#[test]
fn bad_inputs_exit_with_code_2_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = demo_checkpoint(dir.path(), "6", "64");
    let mask = dir.path().join("mask.nii.gz");

    // A corrupt volume.
    let corrupt = dir.path().join("corrupt.nii.gz");
    std::fs::write(&corrupt, b"\x1f\x8b not really gzip").unwrap();
    let out = run(bin()
        .arg("segment")
        .arg(&corrupt)
        .arg("--checkpoint")
        .arg(&ckpt)
        .args(["--device", "cpu", "-o"])
        .arg(&mask));
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("corrupt.nii.gz"), "{stderr}");
    assert_eq!(
        stderr
            .trim()
            .lines()
            .last()
            .map(|l| l.starts_with("hypersegnas:")),
        Some(true)
    );
    assert!(!mask.exists());

    // Writing over the input is refused.
    let Some(ct) = common::data_file("nifti-rs/resources/minimal.nii.gz") else {
        return;
    };
    let copy = dir.path().join("input.nii.gz");
    std::fs::copy(&ct, &copy).unwrap();
    let before = std::fs::read(&copy).unwrap();
    let out = run(bin()
        .arg("segment")
        .arg(&copy)
        .arg("--checkpoint")
        .arg(&ckpt)
        .args(["--device", "cpu", "-o"])
        .arg(&copy));
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(std::fs::read(&copy).unwrap(), before);

    // A checkpoint that is not one.
    let out = run(bin()
        .arg("segment")
        .arg(&copy)
        .arg("--checkpoint")
        .arg(&corrupt)
        .args(["--device", "cpu", "-o"])
        .arg(&mask));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("corrupt.nii.gz"));

    // An invalid architecture file names itself and the reason.
    let arch = dir.path().join("arch.json");
    std::fs::write(
        &arch,
        r#"{"num_layers": 12, "num_depths": 4, "cells": [["conv"]]}"#,
    )
    .unwrap();
    let out = run(bin()
        .arg("segment")
        .arg(&copy)
        .arg("--checkpoint")
        .arg(&ckpt)
        .arg("--arch")
        .arg(&arch)
        .args(["--device", "cpu", "-o"])
        .arg(&mask));
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("arch.json") && stderr.contains("rows"),
        "{stderr}"
    );
    assert!(!mask.exists());

    // An existing output is kept unless --force is given.
    std::fs::write(&mask, b"an earlier result").unwrap();
    let segment = |force: bool| {
        let mut cmd = bin();
        cmd.arg("segment")
            .arg(&copy)
            .arg("--checkpoint")
            .arg(&ckpt)
            .args(["--device", "cpu", "-o"])
            .arg(&mask);
        if force {
            cmd.arg("--force");
        }
        run(&mut cmd)
    };
    let out = segment(false);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("mask.nii.gz: exists; pass --force"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&mask).unwrap(), b"an earlier result");
    assert!(segment(true).status.success());
    assert_eq!(
        volume::read_volume(&mask).unwrap().dims,
        volume::read_volume(&copy).unwrap().dims
    );
}

#[test]
fn info_describes_volumes_checkpoints_and_architectures() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = demo_checkpoint(dir.path(), "3", "64");
    let out = run(bin().arg("info").arg(&ckpt));
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("12 layers x 4 levels x 10 edges") && text.contains("spleen"),
        "{text}"
    );
    let out = run(bin().arg("info").arg(&ckpt).arg("--verify"));
    assert!(out.status.success());

    // A NaN weight (as a diverged run saves) fails verification, naming the tensor.
    let mut bytes = std::fs::read(&ckpt).unwrap();
    let header = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let data = 8 + header;
    bytes[data..data + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    let broken = dir.path().join("nan.safetensors");
    std::fs::write(&broken, &bytes).unwrap();
    let out = run(bin().arg("info").arg(&broken).arg("--verify"));
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("nan.safetensors: 1 weight values in 1 tensor(s) are NaN"),
        "{stderr}"
    );

    let arch = dir.path().join("paper.json");
    let out = run(bin()
        .args(["arch", "--preset", "dints-paper", "--space", "dints", "-o"])
        .arg(&arch));
    assert!(out.status.success());
    let out = run(bin().arg("info").arg(&arch));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("valid in     dints space"), "{text}");
    assert!(
        text.contains("1110 1111"),
        "node_a row 0 then row 1: {text}"
    );

    if let Some(lps) =
        common::data_file("niivue/packages/niivue/tests/images/nifti_space/LPS.nii.gz")
    {
        let out = run(bin().arg("info").arg(&lps));
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).contains("LPS"));
    }
}

#[test]
fn segment_without_a_checkpoint_uses_the_bundled_demo() {
    let Some(ct) =
        common::data_file("ivadomed_data-testing/ct_scan/sub-spleen2/ct/sub-spleen2_ct.nii.gz")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mask = dir.path().join("spleen.nii.gz");
    let out = run(bin()
        .arg("segment")
        .arg(&ct)
        .args(["--device", "cpu", "--mode", "fixed", "-o"])
        .arg(&mask));
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("bundled demo checkpoint"));
    assert!(String::from_utf8_lossy(&out.stdout).contains("spleen"));
    check_same_grid(&mask, &ct);
}

#[test]
fn evaluate_reports_dice_per_architecture_and_mode() {
    let base = "ivadomed_data-testing/ct_scan";
    let (Some(ct), Some(label)) = (
        common::data_file(&format!("{base}/sub-spleen2/ct/sub-spleen2_ct.nii.gz")),
        common::data_file(&format!(
            "{base}/derivatives/labels/sub-spleen2/ct/sub-spleen2_ct_seg-manual.nii.gz"
        )),
    ) else {
        return;
    };
    let out = run(bin()
        .arg("evaluate")
        .arg(&ct)
        .arg("--label")
        .arg(&label)
        .args([
            "--presets",
            "unet",
            "--modes",
            "fixed,man",
            "--device",
            "cpu",
        ]));
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let rows: Vec<&str> = text.lines().filter(|l| l.starts_with("unet")).collect();
    assert_eq!(rows.len(), 2, "{text}");
    for row in rows {
        let dice: f64 = row.split_whitespace().last().unwrap().parse().unwrap();
        assert!((0.0..=1.0).contains(&dice));
    }
}

/// Regressions from a hostile-input pass: each of these once panicked, ran the whole
/// inference before failing, or left a file behind.
#[test]
fn output_and_size_problems_are_refused_before_any_work() {
    let Some(ct) = common::data_file("nibabel/nibabel/tests/data/anatomical.nii") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ckpt = demo_checkpoint(dir.path(), "6", "64");
    let segment = |extra: &[&str]| {
        let mut cmd = bin();
        cmd.arg("segment").arg(&ct).arg("--checkpoint").arg(&ckpt);
        cmd.args(["--device", "cpu"])
            .args(extra)
            .current_dir(dir.path());
        run(&mut cmd)
    };
    for (args, needle) in [
        (vec!["-o", "mask.txt"], "mask.txt"),
        (vec!["-o", "no/such/folder/m.nii.gz"], "does not exist"),
        (
            vec!["-o", "same.nii.gz", "--probabilities", "same.nii.gz"],
            "different files",
        ),
        (
            vec!["-o", "same.nii.gz", "--probabilities", "./same.nii.gz"],
            "different files",
        ),
        (
            vec!["-o", "m.nii.gz", "--roi", "100000"],
            "larger than 1024",
        ),
        (
            vec!["-o", "m.nii.gz", "--roi", "4294967296"],
            "larger than 1024",
        ),
        (vec!["-o", "m.nii.gz", "--batch", "0"], "--batch"),
    ] {
        let out = segment(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n != "demo.safetensors")
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");

    // An absurd target spacing is refused instead of allocating the grid.
    let tiny = dir.path().join("tiny.safetensors");
    let out = run(bin()
        .args([
            "init",
            "--network",
            "demo",
            "--spacing",
            "0.01",
            "--roi",
            "64",
            "-o",
        ])
        .arg(&tiny));
    assert!(out.status.success());
    let out = run(bin()
        .arg("segment")
        .arg(&ct)
        .arg("--checkpoint")
        .arg(&tiny)
        .args(["--device", "cpu", "-o"])
        .arg(dir.path().join("m.nii.gz")));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("more than the limit"));

    // init refuses to replace a file unless told to.
    let out = run(bin()
        .args(["init", "--network", "demo", "--roi", "64", "-o"])
        .arg(&ckpt));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--force"));
}
