//! Algorithm 1 on a tiny network and a real CT: the loss goes down, the annealing blend is
//! exact, and a run interrupted after a checkpoint resumes at the saved iteration with the
//! same learning rate and ends with the same weights as an uninterrupted run.

mod common;

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::path::Path;

use burn::tensor::{Device, Tensor, TensorData};
use hypersegnas::arch;
use hypersegnas::checkpoint::{SafetensorsFile, view_to_f32};
use hypersegnas::model::{Network, NetworkConfig, WeightMode};
use hypersegnas::train::{self, Event, RunKind, Schedule, TrainConfig};

/// A tiny run on the small TotalSegmentator CT (spleen), at 6 mm.
fn config(dir: &Path, supernet: usize, anneal: usize, every: usize) -> Option<TrainConfig> {
    let ct = common::data_file("totalsegmentator/tests/reference_files/example_ct_sm.nii.gz")?;
    let seg = common::data_file("totalsegmentator/tests/reference_files/example_seg.nii.gz")?;
    let text = format!(
        r#"
output_dir = "run"
seed = 3
device = "cpu"
checkpoint_every = {every}
validate_every = 0
w_fixed_samples = 2

[network]
preset = "demo"
num_layers = 3
num_depths = 3
man_hidden = [16]

[[classes]]
name = "spleen"
values = [1]

[[train]]
image = "{ct}"
label = "{seg}"

[preprocess]
orientation = "RAS"
spacing = [6.0, 6.0, 6.0]
intensity = {{ kind = "ct_window", a_min = -175.0, a_max = 250.0, clip = true }}

[patch]
size = [64, 64, 64]

[schedule]
supernet_iters = {supernet}
anneal_iters = {anneal}
warmup_iters = 2
peak_lr = 0.05
"#,
        ct = ct.display(),
        seg = seg.display()
    );
    let path = dir.join("train.toml");
    std::fs::write(&path, text).unwrap();
    Some(TrainConfig::read(&path).unwrap())
}

fn losses(events: &[Event]) -> Vec<f32> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Step(s) => Some(s.loss),
            _ => None,
        })
        .collect()
}

fn tensors(path: &Path) -> HashMap<String, Vec<f32>> {
    let file = SafetensorsFile::open(path).unwrap();
    let t = file.tensors().unwrap();
    t.tensors()
        .into_iter()
        .map(|(k, v)| (k, view_to_f32(&v).unwrap()))
        .collect()
}

#[test]
fn loss_goes_down_on_a_real_ct() {
    let dir = tempfile::tempdir().unwrap();
    let Some(cfg) = config(dir.path(), 36, 4, 40) else {
        return;
    };
    let mut events = Vec::new();
    let outcome = train::train(&cfg, &RunKind::Search, false, &mut |e| {
        events.push(e.clone());
        ControlFlow::Continue(())
    })
    .unwrap();
    assert!(!outcome.interrupted);
    assert_eq!(outcome.iteration, 40);
    let l = losses(&events);
    assert_eq!(l.len(), 40);
    let first: f32 = l[..8].iter().sum::<f32>() / 8.0;
    let last: f32 = l[l.len() - 8..].iter().sum::<f32>() / 8.0;
    eprintln!("mean loss of the first 8 steps {first:.4}, of the last 8 {last:.4}");
    assert!(
        last < first * 0.9,
        "loss did not go down: {first} -> {last}"
    );

    // The logs and the plot are there; the checkpoint says where the run stands.
    let out = dir.path().join("run");
    let csv = std::fs::read_to_string(out.join("train_log.csv")).unwrap();
    assert_eq!(csv.lines().count(), 41);
    assert!(
        csv.lines()
            .last()
            .unwrap()
            .starts_with("39,anneal,0.0016,1,")
    );
    assert!(out.join("curves.png").exists());
    let config = hypersegnas::checkpoint::read_config(&out.join("last.safetensors")).unwrap();
    let state = config.training.unwrap();
    assert_eq!(state["iteration"], 40);
    assert_eq!(state["w_fixed_ready"], true);

    // Annealing replaced the initial constant w_fixed with the MAN's mean output.
    let w = &tensors(&out.join("last.safetensors"))["w_fixed"];
    assert!(w.iter().any(|v| (v - 0.5).abs() > 1e-3));
}

#[test]
fn an_interrupted_run_resumes_where_its_checkpoint_left_it() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let Some(cfg_a) = config(a.path(), 6, 2, 4) else {
        return;
    };
    let cfg_b = config(b.path(), 6, 2, 4).unwrap();

    // Run A: uninterrupted, 8 iterations.
    train::train(&cfg_a, &RunKind::Search, false, &mut |_| {
        ControlFlow::Continue(())
    })
    .unwrap();

    // Run B: stopped after iteration 5 (the checkpoint of iteration 4 is the last one).
    let outcome = train::train(&cfg_b, &RunKind::Search, false, &mut |e| match e {
        Event::Step(s) if s.iteration == 5 => ControlFlow::Break(()),
        _ => ControlFlow::Continue(()),
    })
    .unwrap();
    assert!(outcome.interrupted);

    // Starting again without --resume refuses to overwrite the run.
    let err = train::train(&cfg_b, &RunKind::Search, false, &mut |_| {
        ControlFlow::Continue(())
    })
    .unwrap_err()
    .to_string();
    assert!(err.contains("already exists"), "{err}");

    // Resume: starts at 4 with the schedule's learning rate for iteration 4.
    let mut events = Vec::new();
    train::train(&cfg_b, &RunKind::Search, true, &mut |e| {
        events.push(e.clone());
        ControlFlow::Continue(())
    })
    .unwrap();
    let start = events.iter().find_map(|e| match e {
        Event::Started { start, .. } => Some(*start),
        _ => None,
    });
    assert_eq!(start, Some(4));
    let first_step = events
        .iter()
        .find_map(|e| match e {
            Event::Step(s) => Some(s.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(first_step.iteration, 4);
    assert_eq!(first_step.lr, cfg_b.schedule.lr(4));

    // The log has each iteration once, and the weights match the uninterrupted run.
    let csv = std::fs::read_to_string(b.path().join("run/train_log.csv")).unwrap();
    let iterations: Vec<&str> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap())
        .collect();
    assert_eq!(iterations, vec!["0", "1", "2", "3", "4", "5", "6", "7"]);
    let ta = tensors(&a.path().join("run/last.safetensors"));
    let tb = tensors(&b.path().join("run/last.safetensors"));
    assert_eq!(ta.len(), tb.len());
    for (key, va) in &ta {
        let err = common::relative_error(&tb[key], va);
        assert!(err < 1e-4, "{key}: {err}");
    }
}

#[test]
fn annealing_blend_is_exact_at_zero_half_and_one() {
    let device = Device::flex();
    let config = NetworkConfig::demo(1, 2);
    let network = Network::fresh(&config, &device, 8).unwrap();
    let code = arch::preset("random-4", &config.space).unwrap();
    let x = Tensor::<5>::from_data(
        TensorData::new(common::noise(64 * 64 * 64, 2), [1, 1, 64, 64, 64]),
        &device,
    );
    let weights = |mode| -> Vec<f32> {
        network
            .channel_weights(&x, &code, mode)
            .unwrap()
            .unwrap()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap()
    };
    let w_h = weights(WeightMode::Man);
    let w_fixed = weights(WeightMode::Fixed);
    assert!(common::relative_error(&w_h, &w_fixed) > 1e-3);
    assert_eq!(weights(WeightMode::Blend(0.0)), w_h);
    assert_eq!(weights(WeightMode::Blend(1.0)), w_fixed);
    let half = weights(WeightMode::Blend(0.5));
    for ((h, a), b) in half.iter().zip(&w_h).zip(&w_fixed) {
        assert!((h - 0.5 * (a + b)).abs() < 1e-6);
    }
}

#[test]
fn schedule_defaults_are_the_papers() {
    let s = Schedule::default();
    assert_eq!(
        (s.supernet_iters, s.anneal_iters, s.warmup_iters),
        (160_000, 20_000, 1000)
    );
    assert_eq!(s.finetune_iters, 5000);
    assert_eq!(s.finetune_lr, 0.0016);
}

#[test]
fn runs_that_cannot_proceed_are_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let Some(mut cfg) = config(dir.path(), 3, 0, 2) else {
        return;
    };
    let out = cfg.output_dir();
    let go = &mut |_: &Event| ControlFlow::Continue(());

    // Burn's wgpu backend has no gradient for trilinear up-sampling: refused with the reason.
    cfg.device = hypersegnas::device::DeviceChoice::Gpu;
    let err = train::train(&cfg, &RunKind::Search, false, go)
        .unwrap_err()
        .to_string();
    assert!(err.contains("trilinear"), "{err}");
    cfg.device = hypersegnas::device::DeviceChoice::Cpu;

    // --resume with nothing to resume (a misspelt output_dir, say) does not start afresh.
    let err = train::train(&cfg, &RunKind::Search, true, go)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no run to resume"), "{err}");

    // A missing training image is named, and no output folder is left behind.
    let mut missing = cfg.clone();
    missing.train[0].image = dir.path().join("absent.nii.gz");
    let err = train::train(&missing, &RunKind::Search, false, go)
        .unwrap_err()
        .to_string();
    assert!(err.contains("absent.nii.gz"), "{err}");
    assert!(!out.exists(), "{} was created", out.display());

    // A run resumed with another [sampling] than it was started with is refused.
    let outcome = train::train(&cfg, &RunKind::Search, false, &mut |e| match e {
        Event::Step(s) if s.iteration == 2 => ControlFlow::Break(()),
        _ => ControlFlow::Continue(()),
    })
    .unwrap();
    assert!(outcome.interrupted);
    cfg.sampling.dense_arch = Some("all-conv".into());
    cfg.sampling.dense_probability = 0.5;
    let err = train::train(&cfg, &RunKind::Search, true, go)
        .unwrap_err()
        .to_string();
    assert!(err.contains("sampling cannot change"), "{err}");
}
