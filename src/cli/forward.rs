//! `hypersegnas forward`: one forward pass on a raw patch, logits out. Works with our
//! checkpoints and MONAI's DiNTS state dicts alike, for parity checks against PyTorch.

use std::path::PathBuf;
use std::time::Instant;

use burn::tensor::{Tensor, TensorData};

use hypersegnas::device::{self, DeviceChoice};
use hypersegnas::fsutil::same_file;
use hypersegnas::model::WeightMode;
use hypersegnas::monai::npy;
use hypersegnas::monai::open::{self, ArchSpec, Origin};

use super::{CliResult, Failure, input, internal};

#[derive(clap::Args)]
pub struct ForwardArgs {
    /// Checkpoint: ours (.safetensors) or MONAI's DiNTS state dict (.pt, .pth, .safetensors).
    #[arg(long)]
    checkpoint: PathBuf,
    /// Architecture: a file (MONAI's arch .pth or our JSON), `checkpoint` (the stored or
    /// decoded one), or a preset (all-conv, dints-paper, unet, random-SEED). Default: the
    /// checkpoint's own.
    #[arg(long)]
    arch: Option<String>,
    /// Input patch: .npy float32 [C, D, H, W] (or [1, C, D, H, W]), little-endian, C order.
    #[arg(long)]
    input: PathBuf,
    /// Output logits: .npy float32 [classes, D, H, W].
    #[arg(long, short)]
    output: PathBuf,
    /// Channel weights for our super-nets: man, fixed or plain. MONAI networks run plain.
    #[arg(long)]
    mode: Option<String>,
    /// Where to run: auto (a hardware GPU if present, else CPU), gpu, cpu.
    #[arg(long, value_enum, default_value = "auto")]
    device: DeviceChoice,
    /// Replace an existing output file.
    #[arg(long)]
    force: bool,
    /// Run the forward pass this many times and report each time (for benchmarks); the
    /// logits of the last run are written.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
}

pub fn run(args: ForwardArgs) -> CliResult {
    let spec = args.arch.as_deref().map(ArchSpec::parse);
    let arch_file = spec.as_ref().and_then(ArchSpec::file);
    let clobbers = same_file(&args.output, &args.input)
        || same_file(&args.output, &args.checkpoint)
        || arch_file.is_some_and(|a| same_file(&args.output, a));
    if clobbers {
        return Err(Failure::Input(format!(
            "{}: refusing to overwrite an input file",
            args.output.display()
        )));
    }
    if !args
        .output
        .to_string_lossy()
        .to_ascii_lowercase()
        .ends_with(".npy")
    {
        return Err(Failure::Input(format!(
            "{}: the output must be a .npy file",
            args.output.display()
        )));
    }
    let folder = match args.output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => std::path::Path::new("."),
    };
    if !folder.is_dir() {
        return Err(Failure::Input(format!(
            "{}: the folder {} does not exist",
            args.output.display(),
            folder.display()
        )));
    }
    if hypersegnas::fsutil::occupied(&args.output) && !args.force {
        return Err(Failure::Input(format!(
            "{}: exists; pass --force to replace it",
            args.output.display()
        )));
    }

    // Read the patch first: a bad input fails before any model work.
    let patch = input(npy::read_npy(&args.input))?;
    let shape: [usize; 4] = match patch.shape[..] {
        [c, d, h, w] => [c, d, h, w],
        [1, c, d, h, w] => [c, d, h, w],
        _ => {
            return Err(Failure::Input(format!(
                "{}: shape {:?}, expected [C, D, H, W] (or [1, C, D, H, W])",
                args.input.display(),
                patch.shape
            )));
        }
    };
    let bad = patch.values.iter().filter(|v| !v.is_finite()).count();
    if bad > 0 {
        // Kept as given: the logits then hold NaN where PyTorch's would.
        tracing::warn!(
            "{}: {bad} of {} values are NaN or infinite; the logits will not be finite either",
            args.input.display(),
            patch.values.len()
        );
    }

    let selected = input(device::select(args.device))?;
    let started = Instant::now();
    let opened =
        open::open(&args.checkpoint, spec.as_ref(), &selected.device).map_err(Failure::Input)?;
    let what = match &opened.origin {
        Origin::Native => "HyperSegNAS checkpoint".to_string(),
        Origin::Monai(inferred) => format!("MONAI DiNTS {}", inferred.scheme.describe()),
    };
    tracing::info!(
        "loaded {} ({what}, {} parameters) in {:.2} s",
        args.checkpoint.display(),
        opened.network.num_params(),
        started.elapsed().as_secs_f64()
    );
    let mode = match &args.mode {
        Some(text) => WeightMode::parse(text).ok_or_else(|| {
            Failure::Input(format!("unknown mode '{text}' (known: man, fixed, plain)"))
        })?,
        None => opened.mode,
    };

    let config = &opened.network.config;
    let [c, d, h, w] = shape;
    if c != config.in_channels {
        return Err(Failure::Input(format!(
            "{}: {c} channels, the network expects {}",
            args.input.display(),
            config.in_channels
        )));
    }
    if let Some(problem) = config.input_size_problem_for([d, h, w], &opened.arch) {
        return Err(Failure::Input(format!(
            "{}: spatial size {:?} {problem}",
            args.input.display(),
            [d, h, w]
        )));
    }

    if args.repeat == 0 {
        return Err(Failure::Input("--repeat must be at least 1".into()));
    }
    let mut values = Vec::new();
    let mut times = Vec::with_capacity(args.repeat);
    for _ in 0..args.repeat {
        // Timed from the upload of the patch to the logits back on the host.
        let started = Instant::now();
        let x = Tensor::<5>::from_data(
            TensorData::new(patch.values.clone(), [1, c, d, h, w]),
            &selected.device,
        );
        let logits = match opened.network.forward(x, &opened.arch, mode) {
            Ok(logits) => logits,
            Err(e @ hypersegnas::model::ModelError::Mode(_)) => {
                let name = args.checkpoint.display();
                return Err(Failure::Input(format!("{name}: {e}")));
            }
            Err(e) => return internal(Err(e)),
        };
        values = internal(
            logits
                .into_data()
                .convert::<f32>()
                .try_to_vec::<f32>()
                .map_err(|e| format!("reading the logits failed: {e:?}")),
        )?;
        let seconds = started.elapsed().as_secs_f64();
        times.push(seconds);
        tracing::info!(
            "forward pass done in {seconds:.3} s on {}",
            selected.description
        );
    }
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    let seconds = if sorted.len() % 2 == 0 {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    };
    if args.repeat > 1 {
        let all: Vec<String> = times.iter().map(|t| format!("{t:.3}")).collect();
        println!(
            "forward times (s): {} (median {seconds:.3}, min {:.3})",
            all.join(" "),
            sorted[0]
        );
    }
    let classes = config.num_classes;
    let overflowed = values.iter().filter(|v| !v.is_finite()).count();
    if overflowed > 0 && bad == 0 {
        // Most likely NaN or infinite weights (a diverged run); say so rather than hand
        // back NaN in silence.
        tracing::warn!(
            "{}: {overflowed} of {} logits are NaN or infinite although every input value is \
             finite (largest |input| {:e}); check the weights with `hypersegnas info {} \
             --verify`",
            args.output.display(),
            values.len(),
            patch.values.iter().fold(0f32, |m, v| m.max(v.abs())),
            args.checkpoint.display()
        );
    }
    input(npy::write_npy(&args.output, &[classes, d, h, w], &values))?;
    println!(
        "wrote {} ([{classes}, {d}, {h}, {w}] logits, forward {seconds:.3} s median)",
        args.output.display()
    );
    Ok(())
}
