//! `hypersegnas segment`: a label map (and optionally probabilities) for one volume.

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::time::Instant;

use hypersegnas::arch::{self, ArchCode};
use hypersegnas::checkpoint;
use hypersegnas::device::{self, DeviceChoice};
use hypersegnas::fsutil::same_file;
use hypersegnas::inference::{self, Blend, WindowError, WindowOptions};
use hypersegnas::model::WeightMode;
use hypersegnas::volume;

use super::{CliResult, Failure, input, internal, triple};

#[derive(clap::Args)]
pub struct SegmentArgs {
    /// Input volume (.nii, .nii.gz, .hdr/.img). 4-D input: the first volume is used.
    volume: PathBuf,
    /// Checkpoint (.safetensors). Default: the bundled demo super-net (spleen on CT).
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Architecture JSON file.
    #[arg(long, conflicts_with = "preset")]
    arch: Option<PathBuf>,
    /// Built-in architecture: all-conv, dints-paper, unet, random-SEED. Without --arch or
    /// --preset the checkpoint's own architecture is used, else all-conv.
    #[arg(long)]
    preset: Option<String>,
    /// Channel weights: man (generated per window), fixed (w_fixed), plain (none). Default:
    /// man when the checkpoint has a MAN, else plain.
    #[arg(long)]
    mode: Option<String>,
    /// Output label map (.nii or .nii.gz).
    #[arg(long, short)]
    output: PathBuf,
    /// Also write class probabilities (4-D float32) here.
    #[arg(long)]
    probabilities: Option<PathBuf>,
    /// Window overlap in [0, 1).
    #[arg(long, default_value_t = 0.5)]
    overlap: f32,
    /// Window blending.
    #[arg(long, value_enum, default_value = "gaussian")]
    blend: Blend,
    /// Sliding-window ROI (one value or x,y,z); default: the checkpoint's.
    #[arg(long, value_delimiter = ',')]
    roi: Option<Vec<usize>>,
    /// Windows per forward pass.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Where to run: auto (a hardware GPU if present, else CPU), gpu, cpu.
    #[arg(long, value_enum, default_value = "auto")]
    device: DeviceChoice,
}

pub fn run(args: SegmentArgs) -> CliResult {
    // Refuse to clobber inputs before doing any work.
    for out in std::iter::once(&args.output).chain(args.probabilities.as_ref()) {
        let is_checkpoint = args.checkpoint.as_ref().is_some_and(|c| same_file(out, c));
        if same_file(out, &args.volume) || is_checkpoint {
            return Err(Failure::Input(format!(
                "{}: refusing to overwrite an input file",
                out.display()
            )));
        }
    }

    if args
        .probabilities
        .as_ref()
        .is_some_and(|p| p == &args.output || same_file(p, &args.output))
    {
        return Err(Failure::Input(format!(
            "{}: the label map and the probabilities need different files",
            args.output.display()
        )));
    }
    for out in std::iter::once(&args.output).chain(args.probabilities.as_ref()) {
        input(volume::check_output_path(out))?;
    }
    if args.batch == 0 {
        return Err(Failure::Input("--batch must be at least 1".into()));
    }

    // Read the volume first: a bad input file fails before any device or model work.
    let vol = input(volume::read_volume(&args.volume))?;
    for warning in &vol.warnings {
        tracing::warn!("{warning}");
    }

    let selected = input(device::select(args.device))?;
    let started = Instant::now();
    let (ckpt, ckpt_name) = match &args.checkpoint {
        Some(path) => (
            input(checkpoint::load(path, &selected.device))?,
            path.display().to_string(),
        ),
        None => (
            input(checkpoint::load_demo(&selected.device))?,
            "the bundled demo checkpoint".to_string(),
        ),
    };
    tracing::info!(
        "loaded {ckpt_name} ({} parameters) in {:.1} s",
        ckpt.network.num_params(),
        started.elapsed().as_secs_f64()
    );
    let space = &ckpt.config.network.space;
    let code: ArchCode = match (&args.arch, &args.preset) {
        (Some(path), _) => input(arch::read_arch_json(path))?,
        (None, Some(name)) => input(arch::preset(name, space))?,
        (None, None) => match ckpt.config.default_arch() {
            Some(code) => {
                code.map_err(|e| Failure::Input(format!("{ckpt_name}: stored architecture: {e}")))?
            }
            None => input(arch::preset("all-conv", space))?,
        },
    };
    if let Err(e) = code.validate(space) {
        let which = args
            .arch
            .as_ref()
            .map_or_else(|| "architecture".to_string(), |p| p.display().to_string());
        return Err(Failure::Input(format!("{which}: {e}")));
    }
    let mode = match &args.mode {
        Some(text) => WeightMode::parse(text).ok_or_else(|| {
            Failure::Input(format!("unknown mode '{text}' (known: man, fixed, plain)"))
        })?,
        None if ckpt.config.network.has_man() => WeightMode::Man,
        None => WeightMode::Plain,
    };
    let roi = match &args.roi {
        Some(values) => triple(values, "--roi")?,
        None => ckpt.config.roi,
    };

    tracing::info!(
        "volume {} : {:?} voxels at {:.2?} mm",
        args.volume.display(),
        vol.dims,
        vol.spacing
    );

    let options = WindowOptions {
        roi,
        overlap: args.overlap,
        blend: args.blend,
        batch: args.batch,
        mode,
    };
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} windows {pos}/{len} [{bar:30}] elapsed {elapsed} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut progress = |p: inference::Progress| {
        bar.set_length(p.total as u64);
        bar.set_position(p.done as u64);
        ControlFlow::Continue(())
    };
    let started = Instant::now();
    let result = inference::segment(
        &ckpt.network,
        &selected.device,
        &vol,
        &ckpt.config.preprocess,
        &code,
        &options,
        args.probabilities.is_some(),
        &mut progress,
    );
    bar.finish_and_clear();
    let seg = match result {
        Ok(seg) => seg,
        Err(e @ WindowError::Options(_)) => return Err(Failure::Input(e.to_string())),
        Err(e @ WindowError::Model(hypersegnas::model::ModelError::Mode(_))) => {
            return Err(Failure::Input(format!("{ckpt_name}: {e}")));
        }
        Err(e) => return internal(Err(e)),
    };
    tracing::info!("inference done in {:.1} s", started.elapsed().as_secs_f64());

    // Probabilities first: if either write fails, nothing of this run is left behind.
    if let (Some(path), Some(probs)) = (&args.probabilities, &seg.probabilities) {
        input(volume::write_float_channels(
            path,
            probs,
            ckpt.config.network.num_classes,
            &vol,
        ))?;
    }
    if let Err(e) = volume::write_label_map(&args.output, &seg.labels, &vol) {
        if let Some(path) = &args.probabilities {
            let _ = std::fs::remove_file(path);
        }
        return Err(Failure::Input(e.to_string()));
    }
    println!("wrote {}", args.output.display());
    for (name, count) in ckpt.config.class_names.iter().zip(&seg.counts) {
        println!("  {name:<20} {count} voxels");
    }
    Ok(())
}
