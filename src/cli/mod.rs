//! Command-line parsing, dispatch and error reporting.

mod evaluate;
mod forward;
mod info;
mod segment;
mod train;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use hypersegnas::arch::{self, ArchCode, SearchSpace};
use hypersegnas::checkpoint::{self, CheckpointConfig, Intensity, Preprocess};
use hypersegnas::device::DeviceChoice;
use hypersegnas::model::{Network, NetworkConfig};

/// A failure, classified for the exit code.
pub enum Failure {
    /// Bad input or usage: exit code 2.
    Input(String),
    /// Something went wrong inside: exit code 1.
    Internal(String),
}

/// Shorthand for results of commands.
pub type CliResult<T = ()> = Result<T, Failure>;

/// Maps any error to a bad-input failure.
pub fn input<T, E: std::fmt::Display>(result: Result<T, E>) -> CliResult<T> {
    result.map_err(|e| Failure::Input(e.to_string()))
}

/// Maps any error to an internal failure.
pub fn internal<T, E: std::fmt::Display>(result: Result<T, E>) -> CliResult<T> {
    result.map_err(|e| Failure::Internal(e.to_string()))
}

#[derive(Parser)]
#[command(
    name = "hypersegnas",
    version,
    about = "HyperSegNAS Explorer: segment, inspect and build HyperSegNAS / DiNTS super-nets",
    long_about = "HyperSegNAS Explorer: one-shot NAS super-nets for 3D medical segmentation \
                  (Peng et al., CVPR 2022), compatible with MONAI's DiNTS.\n\n\
                  Volumes: .nii, .nii.gz and .hdr/.img pairs (plain or gzipped), any scalar \
                  type. 4-D volumes: the first volume is used and a warning is printed. RGB, \
                  complex, NIfTI-2 and Analyze files without the NIfTI magic are refused.\n\n\
                  Exit codes: 0 success, 2 bad input or usage, 1 internal failure."
)]
struct Cli {
    /// Log detail: error, warn, info, debug, trace.
    #[arg(long, global = true, default_value = "info")]
    log: String,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Open the explorer window (the default when no command is given).
    Gui(GuiArgs),
    /// Segment a volume with a checkpoint and an architecture.
    Segment(segment::SegmentArgs),
    /// One forward pass on a raw .npy patch (ours or a MONAI DiNTS checkpoint), logits out.
    Forward(forward::ForwardArgs),
    /// Summarise a volume, checkpoint or architecture file.
    Info {
        /// The file.
        file: PathBuf,
        /// For a checkpoint: also load every tensor into the network on the CPU, which
        /// reports any missing, unexpected or wrongly shaped tensor.
        #[arg(long)]
        verify: bool,
        /// For a MONAI checkpoint: the architecture to verify it with (its arch file, a
        /// preset or `checkpoint`); a searched instance needs one.
        #[arg(long, requires = "verify")]
        arch: Option<String>,
    },
    /// Create a freshly initialised checkpoint.
    Init(InitArgs),
    /// Write a built-in architecture code as JSON (and print its grid).
    Arch(ArchArgs),
    /// Segment a volume with several architectures and modes and report Dice against a
    /// reference label map.
    Evaluate(evaluate::EvaluateArgs),
    /// Train a super-net with Algorithm 1 (super-net training, then annealing).
    Train(train::TrainArgs),
    /// Fine-tune one architecture from a trained super-net.
    Finetune(train::FinetuneArgs),
}

#[derive(clap::Args, Default)]
struct GuiArgs {
    /// A CT or MR volume to open (.nii, .nii.gz, .hdr/.img).
    volume: Option<PathBuf>,
    /// A checkpoint: ours (.safetensors) or a MONAI DiNTS state dict (.pt, .pth,
    /// .safetensors); the bundled demo super-net when omitted.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// An architecture file (our .json or MONAI's .pth), needed with a MONAI searched
    /// instance.
    #[arg(long)]
    arch: Option<PathBuf>,
    /// A ground-truth label map on the volume's grid.
    #[arg(long)]
    label: Option<PathBuf>,
    /// After loading, the first inference and the Figure 7 patches, write one frame of the
    /// window to this PNG and exit.
    #[arg(long)]
    screenshot: Option<PathBuf>,
    /// Inference device (the window itself always draws with wgpu).
    #[arg(long, value_enum)]
    device: Option<DeviceChoice>,
    /// Window size in points, WIDTHxHEIGHT.
    #[arg(long, value_parser = parse_size)]
    window_size: Option<[f32; 2]>,
}

fn parse_size(text: &str) -> Result<[f32; 2], String> {
    let (w, h) = text
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("'{text}' is not WIDTHxHEIGHT"))?;
    let parse = |s: &str| {
        s.trim()
            .parse::<f32>()
            .ok()
            .filter(|v| (100.0..=10000.0).contains(v))
            .ok_or_else(|| format!("'{s}' is not a size in points"))
    };
    let size = [parse(w)?, parse(h)?];
    let [min_w, min_h] = hypersegnas::app::MIN_WINDOW;
    if size[0] < min_w || size[1] < min_h {
        return Err(format!(
            "{text}: the window needs at least {min_w}x{min_h} points for its panels"
        ));
    }
    Ok(size)
}

fn gui(args: GuiArgs) -> CliResult {
    if let Some(path) = &args.screenshot {
        let name = path.to_string_lossy().to_ascii_lowercase();
        if !name.ends_with(".png") {
            return Err(Failure::Input(format!(
                "{}: screenshots are written as .png",
                path.display()
            )));
        }
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => std::path::Path::new("."),
        };
        if !parent.is_dir() {
            return Err(Failure::Input(format!(
                "{}: the folder {} does not exist",
                path.display(),
                parent.display()
            )));
        }
        for input in [&args.volume, &args.label, &args.checkpoint, &args.arch]
            .into_iter()
            .flatten()
        {
            if hypersegnas::fsutil::same_file(input, path) {
                return Err(Failure::Input(format!(
                    "{}: is an input; choose another screenshot path",
                    path.display()
                )));
            }
        }
    }
    let start = hypersegnas::app::StartOptions {
        volume: args.volume,
        label: args.label,
        checkpoint: args.checkpoint,
        arch: args.arch,
        screenshot: args.screenshot,
        device: args.device,
        window_size: args.window_size,
    };
    match hypersegnas::app::run_native(start) {
        Ok(0) => Ok(()),
        Ok(2) => Err(Failure::Input(
            "a file given on the command line could not be loaded (see the messages above)".into(),
        )),
        Ok(_) => Err(Failure::Internal(
            "the screenshot could not be written".into(),
        )),
        Err(e) => Err(Failure::Internal(e)),
    }
}

#[derive(clap::Args)]
struct InitArgs {
    /// Network preset: `demo` (CPU-sized) or `paper` (Tables 4 and 5; about 2.5 GB).
    #[arg(long, default_value = "demo")]
    network: String,
    /// Class names, background first, comma separated.
    #[arg(long, default_value = "background,foreground", value_delimiter = ',')]
    classes: Vec<String>,
    /// Intensity normalisation: `ct` (window [-175, 250] HU) or `mr` (z-score).
    #[arg(long, default_value = "ct")]
    intensity: String,
    /// Target spacing in mm, one value or x,y,z.
    #[arg(long, value_delimiter = ',', default_value = "1.5")]
    spacing: Vec<f64>,
    /// Sliding-window ROI, one value or x,y,z.
    #[arg(long, value_delimiter = ',', default_value = "96")]
    roi: Vec<usize>,
    /// Random seed of the initial weights.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output checkpoint (.safetensors).
    #[arg(long, short)]
    output: PathBuf,
    /// Replace an existing file at the output path.
    #[arg(long)]
    force: bool,
}

#[derive(clap::Args)]
struct ArchArgs {
    /// Preset: all-conv, dints-paper, unet, random-SEED.
    #[arg(long, required_unless_present = "from", conflicts_with = "from")]
    preset: Option<String>,
    /// Read the code from a file instead (our JSON or MONAI's arch .pth).
    #[arg(long)]
    from: Option<PathBuf>,
    /// Search space: `hypersegnas` (skip, conv) or `dints` (five ops).
    #[arg(long, default_value = "hypersegnas")]
    space: String,
    /// Layers.
    #[arg(long, default_value_t = 12)]
    layers: usize,
    /// Resolution levels.
    #[arg(long, default_value_t = 4)]
    depths: usize,
    /// Output file: `.json` (ours) or `.pth` (MONAI's architecture file: numpy arrays in a
    /// torch zip, for `torch.load(..., weights_only=False)`). Without it the grid is only
    /// printed.
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Also write MONAI's architecture file (a torch.save'd dict of numpy arrays node_a,
    /// arch_code_a, arch_code_c; load with torch.load(path, weights_only=False)).
    #[arg(long)]
    export_monai: Option<PathBuf>,
    /// Replace existing files at the output paths.
    #[arg(long)]
    force: bool,
}

/// Parses the command line, runs the command and turns failures into exit codes.
pub fn run() -> ExitCode {
    // The Vulkan loader complains on stderr when XDG_RUNTIME_DIR is unset (common on
    // servers); give it a private folder before any thread exists.
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        let dir = std::env::temp_dir().join("hypersegnas-runtime");
        if std::fs::create_dir_all(&dir).is_ok() {
            // SAFETY: called first thing in main, while the process has a single thread.
            unsafe { std::env::set_var("XDG_RUNTIME_DIR", &dir) };
        }
    }
    let cli = Cli::parse();
    let filter = match tracing_subscriber::EnvFilter::try_new(&cli.log) {
        Ok(filter) => filter,
        Err(e) => {
            eprintln!("hypersegnas: --log {}: {e}", cli.log);
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .without_time()
        .init();

    let result = match cli.command.unwrap_or(Command::Gui(GuiArgs::default())) {
        Command::Gui(args) => gui(args),
        Command::Segment(args) => segment::run(args),
        Command::Forward(args) => forward::run(args),
        Command::Info { file, verify, arch } => info::run(&file, verify, arch.as_deref()),
        Command::Init(args) => init(args),
        Command::Arch(args) => arch_command(args),
        Command::Evaluate(args) => evaluate::run(args),
        Command::Train(args) => train::run_train(args),
        Command::Finetune(args) => train::run_finetune(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Input(message)) => {
            eprintln!("hypersegnas: {message}");
            ExitCode::from(2)
        }
        Err(Failure::Internal(message)) => {
            eprintln!("hypersegnas: internal error: {message}");
            ExitCode::from(1)
        }
    }
}

/// Expands `[v]` to `[v, v, v]`; takes `[x, y, z]` as is.
pub fn triple<T: Copy>(values: &[T], what: &str) -> CliResult<[T; 3]> {
    match values {
        [v] => Ok([*v; 3]),
        [x, y, z] => Ok([*x, *y, *z]),
        _ => Err(Failure::Input(format!(
            "{what} takes one value or three (x,y,z), got {}",
            values.len()
        ))),
    }
}

fn init(args: InitArgs) -> CliResult {
    let name = args.output.to_string_lossy().to_ascii_lowercase();
    if !name.ends_with(".safetensors") {
        return Err(Failure::Input(format!(
            "{}: checkpoints are .safetensors files",
            args.output.display()
        )));
    }
    if hypersegnas::fsutil::occupied(&args.output) && !args.force {
        return Err(Failure::Input(format!(
            "{}: exists; pass --force to replace it",
            args.output.display()
        )));
    }
    let classes = args.classes.len();
    let network = NetworkConfig::preset(&args.network, 1, classes).ok_or_else(|| {
        Failure::Input(format!(
            "unknown network preset '{}' (known: demo, paper)",
            args.network
        ))
    })?;
    let intensity = match args.intensity.as_str() {
        "ct" => Intensity::CtWindow {
            a_min: -175.0,
            a_max: 250.0,
            clip: true,
        },
        "mr" => Intensity::ZScore { nonzero: true },
        other => {
            return Err(Failure::Input(format!(
                "unknown intensity '{other}' (known: ct, mr)"
            )));
        }
    };
    let mut config = CheckpointConfig::new(network.clone(), args.classes.clone());
    config.preprocess = Preprocess {
        orientation: "RAS".into(),
        spacing: Some(triple(&args.spacing, "--spacing")?),
        intensity,
        grid: Default::default(),
    };
    config.roi = triple(&args.roi, "--roi")?;
    input(config.validate())?;
    let selected = input(hypersegnas::device::select(DeviceChoice::Cpu))?;
    let net = input(Network::fresh(&network, &selected.device, args.seed))?;
    input(checkpoint::save(&args.output, &net, &config))?;
    println!(
        "wrote {} ({} network, {} parameters, classes: {})",
        args.output.display(),
        args.network,
        net.num_params(),
        args.classes.join(", ")
    );
    Ok(())
}

fn arch_command(args: ArchArgs) -> CliResult {
    let space = match args.space.as_str() {
        "hypersegnas" => SearchSpace::hypersegnas(args.layers, args.depths),
        "dints" => SearchSpace::dints(args.layers, args.depths),
        other => {
            return Err(Failure::Input(format!(
                "unknown search space '{other}' (known: hypersegnas, dints)"
            )));
        }
    };
    let code: ArchCode = match (&args.preset, &args.from) {
        (Some(name), _) => input(arch::preset(name, &space))?,
        (None, Some(path)) => input(hypersegnas::monai::open::read_arch_file(path))?,
        (None, None) => return Err(Failure::Input("pass --preset or --from".into())),
    };
    print!("{}", code.to_grid_string());
    let sources: Vec<&PathBuf> = args.from.iter().collect();
    for out in args.output.iter().chain(&args.export_monai) {
        if sources
            .iter()
            .any(|s| hypersegnas::fsutil::same_file(out, s))
        {
            return Err(Failure::Input(format!(
                "{}: refusing to overwrite an input file",
                out.display()
            )));
        }
        if hypersegnas::fsutil::occupied(out) && !args.force {
            return Err(Failure::Input(format!(
                "{}: exists; pass --force to replace it",
                out.display()
            )));
        }
    }
    if let (Some(a), Some(b)) = (&args.output, &args.export_monai)
        && hypersegnas::fsutil::same_file(a, b)
    {
        return Err(Failure::Input(
            "--output and --export-monai name the same file".into(),
        ));
    }
    if let Some(path) = args.output {
        let name = path.to_string_lossy().to_ascii_lowercase();
        if name.ends_with(".pth") || name.ends_with(".pt") {
            let written = hypersegnas::monai::export::write_arch_pth(&path, &code);
            input(written.map_err(|e| format!("{}: {e}", path.display())))?;
        } else if name.ends_with(".json") {
            input(arch::write_arch_json(&path, &code))?;
        } else {
            return Err(Failure::Input(format!(
                "{}: write .json (ours) or .pth (MONAI's architecture file)",
                path.display()
            )));
        }
        println!("wrote {}", path.display());
    }
    if let Some(path) = args.export_monai {
        let written = hypersegnas::monai::export::write_arch_pth(&path, &code);
        input(written.map_err(|e| format!("{}: {e}", path.display())))?;
        println!("wrote {} (MONAI architecture file)", path.display());
    }
    Ok(())
}
