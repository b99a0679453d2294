//! Training: Algorithm 1 of the HyperSegNAS supplement (super-net training with the MAN,
//! then annealing to fixed channel weights), and fine-tuning one architecture.
//!
//! Every iteration draws its patch and architecture from a random number generator seeded by
//! `(seed, iteration)`, and the optimiser state is saved with each checkpoint, so a run that
//! is killed and resumed continues exactly where its last checkpoint left it.

pub mod config;
pub mod data;
pub mod loss;
pub(crate) mod plot;
pub mod schedule;

pub use config::{NetworkSpec, Sampling, TrainConfig};
pub use schedule::{Phase, Schedule};

use std::io::Write;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::{Module, Param};
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsParams, SgdConfig, decay::WeightDecayConfig};
use burn::tensor::{Device, Tensor, TensorData};
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::{Deserialize, Serialize};

use crate::arch::{self, ArchCode, sample_with};
use crate::checkpoint::{self, CheckpointConfig};
use crate::device;
use crate::fsutil::write_atomic;
use crate::inference::{self, Blend, WindowOptions};
use crate::model::{Network, WeightMode};
use data::{Sample, class_indices, load_sample, random_patch, read_pair};
use loss::dice_ce;

/// What a run trains.
#[derive(Clone, Debug)]
pub enum RunKind {
    /// Algorithm 1: super-net training then annealing.
    Search,
    /// Fine-tuning one architecture with fixed channel weights, starting from a super-net.
    Finetune {
        /// The super-net checkpoint.
        checkpoint: PathBuf,
        /// The architecture.
        arch: ArchCode,
    },
}

/// Training state stored in each checkpoint's configuration.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunState {
    /// `search` or `finetune`.
    pub kind: String,
    /// The next iteration to run.
    pub iteration: usize,
    /// Iterations of the whole run.
    pub total: usize,
    /// Has `w_fixed` been initialised from the MAN (at the start of annealing)?
    pub w_fixed_ready: bool,
    /// The optimiser state file beside the checkpoint.
    pub optimizer: Option<String>,
    /// Seed of the run.
    pub seed: u64,
    /// The run's architecture sampling (absent in checkpoints written before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling: Option<Sampling>,
}

/// Something a caller may show.
#[derive(Clone, Debug)]
pub enum Event {
    /// The run starts (or resumes) at `start` of `total` iterations.
    Started {
        /// First iteration.
        start: usize,
        /// Iterations in all.
        total: usize,
    },
    /// One optimiser step finished.
    Step(StepLog),
    /// Validation results.
    Validated(Vec<ValidationResult>),
    /// A checkpoint was written.
    Saved(PathBuf),
    /// A message for the log.
    Note(String),
}

/// One row of the training log.
#[derive(Clone, Debug)]
pub struct StepLog {
    /// Iteration (0-based).
    pub iteration: usize,
    /// Iterations in all.
    pub total: usize,
    /// Phase.
    pub phase: Phase,
    /// Learning rate used.
    pub lr: f64,
    /// Annealing weight (0 outside annealing).
    pub lambda: f64,
    /// Dice + CE.
    pub loss: f32,
    /// Dice part.
    pub dice_loss: f32,
    /// Cross-entropy part.
    pub ce_loss: f32,
    /// Seconds the step took.
    pub seconds: f64,
}

/// Mean Dice of one class over the validation volumes for one architecture and mode.
#[derive(Clone, Debug)]
pub struct ValidationResult {
    /// Iteration after which validation ran.
    pub iteration: usize,
    /// Architecture preset name.
    pub arch: String,
    /// `man` or `fixed`.
    pub mode: String,
    /// Class name.
    pub class: String,
    /// Mean Dice.
    pub dice: f64,
}

/// Training errors.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// Bad configuration or inputs (exit code 2 at the command line).
    #[error("{0}")]
    Input(String),
    /// A failure during training.
    #[error("{0}")]
    Internal(String),
}

/// How a run ended.
#[derive(Debug)]
pub struct Outcome {
    /// The last checkpoint written.
    pub checkpoint: PathBuf,
    /// The next iteration (equal to the total when finished).
    pub iteration: usize,
    /// True when stopped early by the caller.
    pub interrupted: bool,
    /// The last validation results.
    pub validation: Vec<ValidationResult>,
}

fn input_err(e: impl std::fmt::Display) -> TrainError {
    TrainError::Input(e.to_string())
}

fn internal_err(e: impl std::fmt::Display) -> TrainError {
    TrainError::Internal(e.to_string())
}

/// A random number generator for iteration `i` of a run with `seed` (SplitMix64 mixing, so
/// neighbouring iterations get unrelated streams).
pub fn iteration_rng(seed: u64, i: u64) -> StdRng {
    let mut z = seed ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    StdRng::seed_from_u64(z ^ (z >> 31))
}

/// The checkpoint of an unfinished or finished run in `dir`.
pub fn last_checkpoint(dir: &Path) -> PathBuf {
    dir.join("last.safetensors")
}

/// Runs training as `config` says. With `resume`, an existing run in the output folder is
/// continued from its last checkpoint; without it, an existing run is an error (no work is
/// overwritten). `on_event` sees every step; returning `Break` stops after that step (the
/// last checkpoint stays as it was).
pub fn train(
    config: &TrainConfig,
    kind: &RunKind,
    resume: bool,
    on_event: &mut dyn FnMut(&Event) -> ControlFlow<()>,
) -> Result<Outcome, TrainError> {
    let out_dir = config.output_dir();
    let last = last_checkpoint(&out_dir);
    if last.exists() && !resume {
        return Err(TrainError::Input(format!(
            "{}: a run already exists there; resume it (--resume) or choose another output_dir",
            out_dir.display()
        )));
    }
    if resume && !last.exists() {
        return Err(TrainError::Input(format!(
            "{}: no run to resume (no last.safetensors there); start it without --resume",
            out_dir.display()
        )));
    }

    let selected = device::select(training_device(config.device, on_event)?).map_err(input_err)?;
    let device = selected.device.clone();

    // The network and its run state: resumed, from a super-net (fine-tuning), or fresh.
    let (network, mut ckpt_config, mut state) = if resume {
        let ckpt = checkpoint::load(&last, &device).map_err(input_err)?;
        let state: RunState = ckpt
            .config
            .training
            .clone()
            .and_then(|v| serde_json::from_value(v).ok())
            .ok_or_else(|| {
                TrainError::Input(format!("{}: holds no training state", last.display()))
            })?;
        (ckpt.network, ckpt.config, state)
    } else {
        match kind {
            RunKind::Search => {
                let net_config = config.network_config()?;
                let network =
                    Network::fresh(&net_config, &device, config.seed).map_err(input_err)?;
                let ckpt_config = config.checkpoint_config(net_config);
                (
                    network,
                    ckpt_config,
                    RunState::new("search", config.schedule.total(), config.seed),
                )
            }
            RunKind::Finetune {
                checkpoint: path,
                arch,
            } => {
                let ckpt = checkpoint::load(path, &device).map_err(input_err)?;
                arch.validate(&ckpt.config.network.space)
                    .map_err(|e| TrainError::Input(format!("architecture: {e}")))?;
                let mut ckpt_config = ckpt.config;
                ckpt_config.arch = Some(arch::ArchFile::from_code(arch));
                let mut state =
                    RunState::new("finetune", config.schedule.finetune_iters, config.seed);
                state.w_fixed_ready = true;
                (ckpt.network, ckpt_config, state)
            }
        }
    };
    let expected_total = match kind {
        RunKind::Search => config.schedule.total(),
        RunKind::Finetune { .. } => config.schedule.finetune_iters,
    };
    if state.total != expected_total {
        return Err(TrainError::Input(format!(
            "{}: the run was started for {} iterations but the configuration now asks for \
             {expected_total}; a run's schedule cannot change (start a new run in another \
             output_dir)",
            last.display(),
            state.total
        )));
    }
    let own_classes: Vec<String> = std::iter::once("background".to_string())
        .chain(config.classes.iter().map(|c| c.name.clone()))
        .collect();
    if ckpt_config.class_names != own_classes || ckpt_config.preprocess != config.preprocess {
        return Err(TrainError::Input(format!(
            "the checkpoint's classes ({}) or pre-processing ({:?}) differ from the \
             configuration's ({}; {:?})",
            ckpt_config.class_names.join(", "),
            ckpt_config.preprocess,
            own_classes.join(", "),
            config.preprocess
        )));
    }
    let total = state.total;
    let start = state.iteration;
    let space = network.config.space.clone();

    // Data on the processing grid.
    let pre = ckpt_config.preprocess.clone();
    let classes = &config.classes;
    let mut samples = Vec::new();
    for pair in config.train_pairs() {
        let _ = on_event(&Event::Note(format!("loading {}", pair.image.display())));
        let sample = load_sample(&pair, &pre, classes).map_err(input_err)?;
        if sample.foreground.is_empty() {
            let _ = on_event(&Event::Note(format!(
                "warning: {} has no foreground voxels",
                sample.name
            )));
        }
        samples.push(sample);
    }
    if samples.is_empty() {
        return Err(TrainError::Input(
            "the configuration lists no training pairs".into(),
        ));
    }
    if let Some(previous) = &state.sampling
        && *previous != config.sampling
    {
        return Err(TrainError::Input(format!(
            "{}: the run was started with [sampling] {previous:?} but the configuration now \
             says {:?}; a run's sampling cannot change (start a new run in another output_dir)",
            last.display(),
            config.sampling
        )));
    }
    state.sampling = Some(config.sampling.clone());
    if state.kind == "search"
        && config.sampling.dense_arch.is_some()
        && config.sampling.dense_warmup_iters >= config.schedule.supernet_iters
    {
        let _ = on_event(&Event::Note(format!(
            "warning: sampling.dense_warmup_iters ({}) covers all {} super-net iterations: no \
             architecture is drawn uniformly in this run",
            config.sampling.dense_warmup_iters, config.schedule.supernet_iters
        )));
    }
    // Only now, with every input read, does the run leave anything on disk.
    std::fs::create_dir_all(&out_dir)
        .map_err(|e| TrainError::Input(format!("{}: {e}", out_dir.display())))?;

    // Optimiser: SGD, momentum 0.9 (no dampening, as PyTorch), weight decay 4e-5.
    let sgd = SgdConfig::new()
        .with_momentum(Some(
            MomentumConfig::new()
                .with_momentum(config.momentum)
                .with_dampening(0.0),
        ))
        .with_weight_decay(Some(WeightDecayConfig::new(config.weight_decay as f32)));
    let mut optim = sgd.init();
    if let Some(name) = &state.optimizer
        && start > 0
    {
        let path = out_dir.join(name);
        match std::fs::read(&path) {
            Ok(bytes) => {
                optim = optim
                    .from_bytes(burn::tensor::Bytes::from_bytes_vec(bytes))
                    .map_err(|e| {
                        TrainError::Input(format!(
                            "{}: unreadable optimiser state: {e:?}",
                            path.display()
                        ))
                    })?;
            }
            Err(e) => {
                let _ = on_event(&Event::Note(format!(
                    "warning: {}: {e}; momentum restarts from zero",
                    path.display()
                )));
            }
        }
    }

    let mut log = Logs::open(&out_dir, start).map_err(internal_err)?;
    let mut network = network.map_model(|m| m.train());
    let ad_device = device.clone().autodiff();
    // Fine-tuning trains the checkpoint's own architecture; search samples one per step.
    let fixed_arch = if state.kind == "finetune" {
        let code = ckpt_config.default_arch().and_then(Result::ok);
        Some(code.ok_or_else(|| {
            TrainError::Input(format!(
                "{}: fine-tuning run without an architecture",
                last.display()
            ))
        })?)
    } else {
        None
    };
    let dense = match &config.sampling.dense_arch {
        Some(name) => Some(
            arch::preset(name, &space)
                .map_err(|e| TrainError::Input(format!("sampling.dense_arch: {e}")))?,
        ),
        None => None,
    };
    let schedule = &config.schedule;
    let mut validation = Vec::new();
    let mut checkpoint_path = last.clone();

    let _ = on_event(&Event::Started { start, total });
    for i in start..total {
        let step_started = Instant::now();
        let mut rng = iteration_rng(state.seed, i as u64);
        let (phase, lr, lambda) = if state.kind == "finetune" {
            (Phase::Finetune, schedule.finetune_lr, 1.0)
        } else {
            (schedule.phase(i), schedule.lr(i), schedule.lambda(i))
        };

        if phase == Phase::Anneal && !state.w_fixed_ready {
            network = init_w_fixed(network, &samples, config, state.seed, &device, &ad_device)?;
            state.w_fixed_ready = true;
            let _ = on_event(&Event::Note(format!(
                "iteration {i}: w_fixed set to the MAN's mean output over {} patches",
                config.w_fixed_samples
            )));
        }

        let code = match &fixed_arch {
            Some(code) => code.clone(),
            None => pick_architecture(i, &config.sampling, dense.as_ref(), &space, &mut rng),
        };
        let mode = match phase {
            Phase::Supernet => WeightMode::Man,
            Phase::Anneal => WeightMode::Blend(lambda as f32),
            Phase::Finetune => WeightMode::Fixed,
        };
        let (x, y) = batch(
            &samples,
            config,
            network.config.num_classes,
            &mut rng,
            &ad_device,
        );
        let logits = network.forward(x, &code, mode).map_err(internal_err)?;
        let (loss, dice, ce) = dice_ce(logits, y);
        let values: Vec<f32> = Tensor::cat(vec![loss.clone(), dice, ce], 0)
            .into_data()
            .try_to_vec::<f32>()
            .map_err(|e| internal_err(format!("{e:?}")))?;
        if !values[0].is_finite() {
            return Err(TrainError::Internal(format!(
                "iteration {i}: the loss is {} (learning rate {lr}); stopping before the \
                 weights are damaged (last good checkpoint: {})",
                values[0],
                last.display()
            )));
        }
        let grads = GradientsParams::from_grads(loss.backward(), &network.model);
        network = network.map_model(|m| optim.step(lr, m, grads));

        let step = StepLog {
            iteration: i,
            total,
            phase,
            lr,
            lambda,
            loss: values[0],
            dice_loss: values[1],
            ce_loss: values[2],
            seconds: step_started.elapsed().as_secs_f64(),
        };
        log.step(&step).map_err(internal_err)?;
        let stop = on_event(&Event::Step(step)).is_break();
        if stop {
            return Ok(Outcome {
                checkpoint: checkpoint_path,
                iteration: i + 1,
                interrupted: true,
                validation,
            });
        }

        let done = i + 1;
        let save_now =
            done == total || (config.checkpoint_every > 0 && done % config.checkpoint_every == 0);
        let validate_now = !config.val.is_empty()
            && (done == total || (config.validate_every > 0 && done % config.validate_every == 0));
        if validate_now {
            let valid = network.valid();
            validation = validate(
                &valid,
                &ckpt_config,
                config,
                state.w_fixed_ready,
                done,
                &device,
            )?;
            log.validation(&validation).map_err(internal_err)?;
            let _ = on_event(&Event::Validated(validation.clone()));
        }
        if save_now {
            state.iteration = done;
            let optim_name = format!("optimizer-{done:08}.bin");
            let bytes = optim
                .into_bytes()
                .map_err(|e| internal_err(format!("{e:?}")))?;
            write_atomic(&out_dir.join(&optim_name), &bytes).map_err(internal_err)?;
            let previous = state.optimizer.replace(optim_name);
            ckpt_config.training = Some(serde_json::to_value(&state).map_err(internal_err)?);
            checkpoint::save(&last, &network, &ckpt_config).map_err(internal_err)?;
            if let Some(old) = previous
                && Some(&old) != state.optimizer.as_ref()
            {
                let _ = std::fs::remove_file(out_dir.join(old));
            }
            checkpoint_path = last.clone();
            log.plot(&out_dir.join("curves.png"));
            let _ = on_event(&Event::Saved(last.clone()));
        }
    }
    Ok(Outcome {
        checkpoint: checkpoint_path,
        iteration: total,
        interrupted: false,
        validation,
    })
}

impl RunState {
    fn new(kind: &str, total: usize, seed: u64) -> Self {
        Self {
            kind: kind.into(),
            iteration: 0,
            total,
            w_fixed_ready: false,
            optimizer: None,
            seed,
            sampling: None,
        }
    }
}

/// A training batch: patches and their one-hot labels on `device`.
fn batch(
    samples: &[Sample],
    config: &TrainConfig,
    classes: usize,
    rng: &mut StdRng,
    device: &Device,
) -> (Tensor<5>, Tensor<5>) {
    let size = config.patch.size;
    let voxels: usize = size.iter().product();
    let mut image = Vec::with_capacity(config.batch * voxels);
    let mut one_hot = vec![0.0f32; config.batch * classes * voxels];
    for b in 0..config.batch {
        let sample = &samples[rng.random_range(0..samples.len())];
        let patch = random_patch(sample, &config.patch, rng);
        image.extend_from_slice(&patch.image);
        for (v, &l) in patch.label.iter().enumerate() {
            let k = (l as usize).min(classes - 1);
            one_hot[(b * classes + k) * voxels + v] = 1.0;
        }
    }
    let shape = [config.batch, 1, size[0], size[1], size[2]];
    let x = Tensor::from_data(TensorData::new(image, shape), device);
    let one_hot_shape = [config.batch, classes, size[0], size[1], size[2]];
    let y = Tensor::from_data(TensorData::new(one_hot, one_hot_shape), device);
    (x, y)
}

/// Where a run trains. Burn 0.22's wgpu backend has no backward pass for trilinear
/// up-sampling (the super-net's up cells), so training runs on the CPU backend: `auto` says
/// so and `gpu` is refused before anything is written.
fn training_device(
    choice: device::DeviceChoice,
    on_event: &mut dyn FnMut(&Event) -> ControlFlow<()>,
) -> Result<device::DeviceChoice, TrainError> {
    match choice {
        device::DeviceChoice::Gpu => Err(TrainError::Input(
            "device = \"gpu\": training needs the gradient of trilinear up-sampling, which \
             Burn's wgpu backend does not implement; use device = \"cpu\" (inference and \
             evaluation do run on the GPU)"
                .into(),
        )),
        device::DeviceChoice::Auto => {
            let _ = on_event(&Event::Note(
                "device auto: training runs on the CPU backend (Burn's wgpu backend has no \
                 gradient for trilinear up-sampling)"
                    .into(),
            ));
            Ok(device::DeviceChoice::Cpu)
        }
        device::DeviceChoice::Cpu => Ok(device::DeviceChoice::Cpu),
    }
}

/// The architecture of search iteration `i`: `dense` during the warm-up and, after it, with
/// probability `dense_probability`; otherwise a uniform draw over the valid codes
/// (Algorithm 1, and all there is when `dense` is `None`).
pub fn pick_architecture<R: Rng>(
    i: usize,
    sampling: &Sampling,
    dense: Option<&ArchCode>,
    space: &arch::SearchSpace,
    rng: &mut R,
) -> ArchCode {
    if let Some(dense) = dense
        && (i < sampling.dense_warmup_iters
            || (sampling.dense_probability > 0.0 && rng.random_bool(sampling.dense_probability)))
    {
        return dense.clone();
    }
    sample_with(space, rng)
}

/// Sets `w_fixed` to the MAN's mean output over `w_fixed_samples` random patches and
/// architectures: the weights the annealing phase blends towards start where the MAN is on
/// average, so the blend starts without a jump.
fn init_w_fixed(
    network: Network,
    samples: &[Sample],
    config: &TrainConfig,
    seed: u64,
    device: &Device,
    ad_device: &Device,
) -> Result<Network, TrainError> {
    let mut rng = iteration_rng(seed ^ 0x5eed_f1ed, u64::MAX);
    let valid = network.valid();
    let total = valid.config.man_output_len();
    let mut sum = vec![0f64; total];
    let n = config.w_fixed_samples.max(1);
    for _ in 0..n {
        let code = sample_with(&valid.config.space, &mut rng);
        let sample = &samples[rng.random_range(0..samples.len())];
        let patch = random_patch(sample, &config.patch, &mut rng);
        let s = config.patch.size;
        let x = Tensor::<5>::from_data(
            TensorData::new(patch.image, [1, 1, s[0], s[1], s[2]]),
            device,
        );
        let w: Vec<f32> = valid
            .man_weights(x, &code)
            .map_err(internal_err)?
            .into_data()
            .try_to_vec::<f32>()
            .map_err(|e| internal_err(format!("{e:?}")))?;
        for (acc, v) in sum.iter_mut().zip(w) {
            *acc += v as f64;
        }
    }
    let mean: Vec<f32> = sum.iter().map(|s| (s / n as f64) as f32).collect();
    let mean = Tensor::<1>::from_data(TensorData::new(mean, [total]), ad_device);
    Ok(network.map_model(|mut model| {
        if let Some(old) = model.w_fixed.take() {
            let mut param = Param::from_tensor(mean);
            param.id = old.id;
            model.w_fixed = Some(param);
        }
        model
    }))
}

/// Dice per class on the validation volumes (original grids), for each validation
/// architecture, in MAN mode and (once `w_fixed` exists) fixed mode.
fn validate(
    network: &Network,
    ckpt_config: &CheckpointConfig,
    config: &TrainConfig,
    w_fixed_ready: bool,
    iteration: usize,
    device: &Device,
) -> Result<Vec<ValidationResult>, TrainError> {
    let mut modes = vec![("man", WeightMode::Man)];
    if w_fixed_ready {
        modes.push(("fixed", WeightMode::Fixed));
    }
    let archs: Vec<(String, ArchCode)> = match ckpt_config.default_arch().and_then(Result::ok) {
        Some(code) => vec![("own".to_string(), code)],
        None => config
            .val_archs
            .iter()
            .map(|name| {
                arch::preset(name, &network.config.space)
                    .map(|c| (name.clone(), c))
                    .map_err(input_err)
            })
            .collect::<Result<_, _>>()?,
    };
    let mut volumes = Vec::new();
    for pair in config.val_pairs() {
        let (image, label) = read_pair(&pair).map_err(input_err)?;
        volumes.push((image, class_indices(&label.data, &config.classes)));
    }
    let mut results = Vec::new();
    for (arch_name, code) in &archs {
        for (mode_name, mode) in &modes {
            let options = WindowOptions {
                roi: ckpt_config.roi,
                overlap: config.val_overlap,
                blend: Blend::Gaussian,
                batch: 1,
                mode: *mode,
            };
            let mut sums = vec![0f64; config.classes.len()];
            for (image, truth) in &volumes {
                let seg = inference::segment(
                    network,
                    device,
                    image,
                    &ckpt_config.preprocess,
                    code,
                    &options,
                    false,
                    &mut |_| ControlFlow::Continue(()),
                )
                .map_err(internal_err)?;
                for (k, sum) in sums.iter_mut().enumerate() {
                    *sum += dice(&seg.labels, truth, (k + 1) as u16);
                }
            }
            for (k, sum) in sums.iter().enumerate() {
                results.push(ValidationResult {
                    iteration,
                    arch: arch_name.clone(),
                    mode: mode_name.to_string(),
                    class: config.classes[k].name.clone(),
                    dice: sum / volumes.len().max(1) as f64,
                });
            }
        }
    }
    Ok(results)
}

/// Dice of class `k` between a prediction and a reference (1 when both are empty).
pub fn dice(prediction: &[u16], truth: &[u8], k: u16) -> f64 {
    let (mut both, mut p, mut t) = (0usize, 0usize, 0usize);
    for (&a, &b) in prediction.iter().zip(truth) {
        let (a, b) = (a == k, b as u16 == k);
        both += (a && b) as usize;
        p += a as usize;
        t += b as usize;
    }
    if p + t == 0 {
        1.0
    } else {
        2.0 * both as f64 / (p + t) as f64
    }
}

/// The CSV logs of a run and what the plot needs.
struct Logs {
    steps: std::fs::File,
    vals: std::fs::File,
    losses: Vec<(usize, f32)>,
    dice: Vec<ValidationResult>,
}

impl Logs {
    const STEP_HEADER: &'static str = "iteration,phase,lr,lambda,loss,dice_loss,ce_loss,seconds";
    const VAL_HEADER: &'static str = "iteration,arch,mode,class,dice";

    /// Opens the logs, dropping rows at or after `start` (left by an interrupted run).
    fn open(dir: &Path, start: usize) -> std::io::Result<Self> {
        let keep = |path: &Path, header: &str| -> std::io::Result<Vec<String>> {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let mut rows = vec![header.to_string()];
            rows.extend(
                text.lines()
                    .skip(1)
                    .filter(|line| {
                        line.split(',')
                            .next()
                            .and_then(|n| n.parse::<usize>().ok())
                            .is_some_and(|n| {
                                n < start || (header == Self::VAL_HEADER && n <= start)
                            })
                    })
                    .map(String::from),
            );
            write_atomic(path, (rows.join("\n") + "\n").as_bytes())?;
            Ok(rows)
        };
        let step_path = dir.join("train_log.csv");
        let val_path = dir.join("val_log.csv");
        let step_rows = keep(&step_path, Self::STEP_HEADER)?;
        let val_rows = keep(&val_path, Self::VAL_HEADER)?;
        let losses = step_rows
            .iter()
            .skip(1)
            .filter_map(|r| {
                let f: Vec<&str> = r.split(',').collect();
                Some((f.first()?.parse().ok()?, f.get(4)?.parse().ok()?))
            })
            .collect();
        let dice = val_rows
            .iter()
            .skip(1)
            .filter_map(|r| {
                let f: Vec<&str> = r.split(',').collect();
                Some(ValidationResult {
                    iteration: f.first()?.parse().ok()?,
                    arch: f.get(1)?.to_string(),
                    mode: f.get(2)?.to_string(),
                    class: f.get(3)?.to_string(),
                    dice: f.get(4)?.parse().ok()?,
                })
            })
            .collect();
        let append = |p: &Path| std::fs::OpenOptions::new().append(true).open(p);
        Ok(Self {
            steps: append(&step_path)?,
            vals: append(&val_path)?,
            losses,
            dice,
        })
    }

    fn step(&mut self, s: &StepLog) -> std::io::Result<()> {
        let phase = match s.phase {
            Phase::Supernet => "supernet",
            Phase::Anneal => "anneal",
            Phase::Finetune => "finetune",
        };
        writeln!(
            self.steps,
            "{},{phase},{},{},{},{},{},{:.3}",
            s.iteration, s.lr, s.lambda, s.loss, s.dice_loss, s.ce_loss, s.seconds
        )?;
        self.losses.push((s.iteration, s.loss));
        Ok(())
    }

    fn validation(&mut self, results: &[ValidationResult]) -> std::io::Result<()> {
        for r in results {
            writeln!(
                self.vals,
                "{},{},{},{},{:.5}",
                r.iteration, r.arch, r.mode, r.class, r.dice
            )?;
        }
        self.dice.extend_from_slice(results);
        Ok(())
    }

    /// Writes the loss and validation curves; a failure is only logged.
    fn plot(&self, path: &Path) {
        if let Err(e) = plot::curves(path, &self.losses, &self.dice) {
            tracing::warn!("{}: plot not written: {e}", path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn space() -> arch::SearchSpace {
        arch::SearchSpace::hypersegnas(12, 4)
    }

    #[test]
    fn without_a_dense_arch_every_iteration_is_a_uniform_draw() {
        let space = space();
        let sampling = Sampling::default();
        let a = pick_architecture(0, &sampling, None, &space, &mut iteration_rng(7, 0));
        let b = sample_with(&space, &mut iteration_rng(7, 0));
        assert_eq!(a, b, "the default must be Algorithm 1's draw, unchanged");
    }

    #[test]
    fn dense_arch_during_warm_up_then_at_the_configured_rate() {
        let space = space();
        let dense = arch::preset("all-conv", &space).unwrap();
        let sampling = Sampling {
            dense_arch: Some("all-conv".into()),
            dense_warmup_iters: 50,
            dense_probability: 0.3,
        };
        let picks: Vec<bool> = (0..2050)
            .map(|i| {
                let mut rng = iteration_rng(3, i as u64);
                pick_architecture(i, &sampling, Some(&dense), &space, &mut rng) == dense
            })
            .collect();
        assert!(
            picks[..50].iter().all(|&d| d),
            "warm-up trains the dense code only"
        );
        let rate = picks[50..].iter().filter(|&&d| d).count() as f64 / 2000.0;
        // Binomial(2000, 0.3): standard deviation 0.0102; a uniform draw is never all-conv.
        assert!((rate - 0.3).abs() < 0.04, "dense rate {rate}");
    }
}
