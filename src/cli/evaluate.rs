//! `hypersegnas evaluate`: segment a volume and report Dice per class against a label map.

use std::ops::ControlFlow;
use std::path::PathBuf;

use hypersegnas::arch::{self, ArchCode};
use hypersegnas::checkpoint;
use hypersegnas::device::{self, DeviceChoice};
use hypersegnas::inference::{self, Blend, WindowOptions};
use hypersegnas::model::WeightMode;
use hypersegnas::train::data::read_pair;
use hypersegnas::train::{data::Pair, dice};

use super::{CliResult, Failure, input, internal};

#[derive(clap::Args)]
pub struct EvaluateArgs {
    /// Input volume.
    volume: PathBuf,
    /// Reference label map on the same grid; label value k is class k.
    #[arg(long)]
    label: PathBuf,
    /// Checkpoint; default: the bundled demo super-net.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Built-in architectures to evaluate (comma separated).
    #[arg(long, value_delimiter = ',', default_value = "dints-paper,all-conv")]
    presets: Vec<String>,
    /// Channel-weight modes to evaluate (comma separated: man, fixed, plain).
    #[arg(long, value_delimiter = ',', default_value = "man,fixed")]
    modes: Vec<String>,
    /// Window overlap.
    #[arg(long, default_value_t = 0.5)]
    overlap: f32,
    /// Where to run.
    #[arg(long, value_enum, default_value = "auto")]
    device: DeviceChoice,
}

pub fn run(args: EvaluateArgs) -> CliResult {
    let pair = Pair {
        image: args.volume.clone(),
        label: args.label.clone(),
    };
    let (image, label) = input(read_pair(&pair))?;
    let selected = input(device::select(args.device))?;
    let ckpt = match &args.checkpoint {
        Some(path) => input(checkpoint::load(path, &selected.device))?,
        None => input(checkpoint::load_demo(&selected.device))?,
    };
    let truth: Vec<u8> = label
        .data
        .iter()
        .map(|v| {
            if v.is_finite() && *v >= 0.0 {
                v.round().min(255.0) as u8
            } else {
                0
            }
        })
        .collect();
    println!("arch          mode   class                Dice");
    for name in &args.presets {
        let code: ArchCode = input(arch::preset(name, &ckpt.config.network.space))?;
        for mode_name in &args.modes {
            let mode = WeightMode::parse(mode_name).ok_or_else(|| {
                Failure::Input(format!(
                    "unknown mode '{mode_name}' (known: man, fixed, plain)"
                ))
            })?;
            let options = WindowOptions {
                roi: ckpt.config.roi,
                overlap: args.overlap,
                blend: Blend::Gaussian,
                batch: 1,
                mode,
            };
            let seg = internal(inference::segment(
                &ckpt.network,
                &selected.device,
                &image,
                &ckpt.config.preprocess,
                &code,
                &options,
                false,
                &mut |_| ControlFlow::Continue(()),
            ))?;
            for (k, class) in ckpt.config.class_names.iter().enumerate().skip(1) {
                let d = dice(&seg.labels, &truth, k as u16);
                println!("{name:<13} {mode_name:<6} {class:<20} {d:.4}");
            }
        }
    }
    Ok(())
}
