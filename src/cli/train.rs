//! `hypersegnas train` and `hypersegnas finetune`.

use std::ops::ControlFlow;
use std::path::PathBuf;

use hypersegnas::arch::{self, ArchCode};
use hypersegnas::checkpoint;
use hypersegnas::train::{self, Event, RunKind, TrainConfig, TrainError};

use super::{CliResult, Failure, input};

#[derive(clap::Args)]
pub struct TrainArgs {
    /// Training configuration (TOML; see the README).
    #[arg(long)]
    config: PathBuf,
    /// Continue the run in the configuration's output folder from its last checkpoint.
    #[arg(long)]
    resume: bool,
}

#[derive(clap::Args)]
pub struct FinetuneArgs {
    /// Training configuration (data, pre-processing, patches; its schedule's
    /// `finetune_iters` and `finetune_lr` apply).
    #[arg(long)]
    config: PathBuf,
    /// The trained super-net to start from.
    #[arg(long)]
    checkpoint: PathBuf,
    /// Architecture JSON file.
    #[arg(long, conflicts_with = "preset")]
    arch: Option<PathBuf>,
    /// Built-in architecture (all-conv, dints-paper, unet, random-SEED).
    #[arg(long)]
    preset: Option<String>,
    /// Iterations (default: the configuration's `finetune_iters`, 5000 in the paper).
    #[arg(long)]
    iters: Option<usize>,
    /// Output folder (default: the configuration's output_dir with `-finetune` appended).
    #[arg(long)]
    output_dir: Option<PathBuf>,
    /// Continue an interrupted fine-tuning run.
    #[arg(long)]
    resume: bool,
}

fn map_error(e: TrainError) -> Failure {
    match e {
        TrainError::Input(m) => Failure::Input(m),
        TrainError::Internal(m) => Failure::Internal(m),
    }
}

pub fn run_train(args: TrainArgs) -> CliResult {
    let config = TrainConfig::read(&args.config).map_err(map_error)?;
    run(&config, &RunKind::Search, args.resume)
}

pub fn run_finetune(args: FinetuneArgs) -> CliResult {
    let mut config = TrainConfig::read(&args.config).map_err(map_error)?;
    let ckpt_config = input(checkpoint::read_config(&args.checkpoint))?;
    let space = &ckpt_config.network.space;
    let code: ArchCode = match (&args.arch, &args.preset) {
        (Some(path), _) => input(arch::read_arch_json(path))?,
        (None, Some(name)) => input(arch::preset(name, space))?,
        (None, None) => {
            return Err(Failure::Input(
                "finetune needs an architecture: --arch FILE or --preset NAME".into(),
            ));
        }
    };
    if let Some(iters) = args.iters {
        config.schedule.finetune_iters = iters;
    }
    config.output_dir = match args.output_dir {
        Some(dir) => std::env::current_dir()
            .map_err(|e| Failure::Internal(e.to_string()))?
            .join(dir),
        None => {
            let mut name = config.output_dir.as_os_str().to_owned();
            name.push("-finetune");
            PathBuf::from(name)
        }
    };
    let kind = RunKind::Finetune {
        checkpoint: args.checkpoint,
        arch: code,
    };
    run(&config, &kind, args.resume)
}

fn run(config: &TrainConfig, kind: &RunKind, resume: bool) -> CliResult {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {pos}/{len} [{bar:30}] {elapsed} eta {eta} {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut on_event = |event: &Event| {
        match event {
            Event::Started { start, total } => {
                bar.set_length(*total as u64);
                bar.set_position(*start as u64);
                bar.reset_eta();
            }
            Event::Step(s) => {
                bar.set_position((s.iteration + 1) as u64);
                bar.set_message(format!(
                    "{:?} loss {:.4} (dice {:.4} ce {:.4}) lr {:.5}",
                    s.phase, s.loss, s.dice_loss, s.ce_loss, s.lr
                ));
            }
            Event::Validated(results) => {
                for r in results {
                    bar.println(format!(
                        "validation @{}: {} {} {}: Dice {:.4}",
                        r.iteration, r.arch, r.mode, r.class, r.dice
                    ));
                }
            }
            Event::Saved(path) => tracing::debug!("saved {}", path.display()),
            Event::Note(text) => bar.println(text),
        }
        ControlFlow::Continue(())
    };
    let outcome = train::train(config, kind, resume, &mut on_event).map_err(map_error)?;
    bar.finish_and_clear();
    println!(
        "finished at iteration {}; checkpoint {}",
        outcome.iteration,
        outcome.checkpoint.display()
    );
    for r in &outcome.validation {
        println!("  {} {} {}: Dice {:.4}", r.arch, r.mode, r.class, r.dice);
    }
    Ok(())
}
