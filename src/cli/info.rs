//! `hypersegnas info FILE`: a summary of a volume, checkpoint or architecture file.

use std::path::Path;

use hypersegnas::arch::{self, ArchCode, SearchSpace};
use hypersegnas::checkpoint;
use hypersegnas::model::TensorSource;
use hypersegnas::monai::open::{self, ArchSpec};
use hypersegnas::monai::{KeyScheme, StateDict, infer, read_arch_pth};
use hypersegnas::volume;

use super::{CliResult, Failure, input};

/// Prints what `path` holds. `arch` (with `verify`) is the architecture to check a MONAI
/// checkpoint with.
pub fn run(path: &Path, verify: bool, arch: Option<&str>) -> CliResult {
    let name = path.to_string_lossy().to_ascii_lowercase();
    let is_torch = [".pt", ".pth", ".bin", ".ckpt"]
        .iter()
        .any(|e| name.ends_with(e));
    let arch = arch.map(ArchSpec::parse);
    let monai = name.ends_with(".safetensors") && !open::is_native(path)
        || is_torch && read_arch_pth(path).is_err();
    if arch.is_some() && !monai {
        return Err(Failure::Input(format!(
            "{}: --arch applies to MONAI checkpoints only",
            path.display()
        )));
    }
    if monai {
        monai_info(path, verify, arch.as_ref())
    } else if name.ends_with(".safetensors") {
        checkpoint_info(path, verify)
    } else if is_torch {
        let code = input(read_arch_pth(path))?;
        print_arch(path, &code, "MONAI architecture file")
    } else if name.ends_with(".json") {
        arch_info(path)
    } else {
        volume_info(path)
    }
}

fn volume_info(path: &Path) -> CliResult {
    let v = input(volume::read_volume(path))?;
    let (ras, orientation) = v.to_ras();
    let (mut min, mut max, mut nan) = (f32::INFINITY, f32::NEG_INFINITY, 0usize);
    for &x in &v.data {
        if x.is_nan() {
            nan += 1;
        } else {
            min = min.min(x);
            max = max.max(x);
        }
    }
    println!("volume      {}", path.display());
    println!("dims        {} x {} x {}", v.dims[0], v.dims[1], v.dims[2]);
    println!(
        "spacing     {:.4} x {:.4} x {:.4} mm",
        v.spacing[0], v.spacing[1], v.spacing[2]
    );
    println!(
        "orientation {} (RAS grid {:?})",
        orientation.code(),
        ras.dims
    );
    println!("datatype    {:?}", v.header.datatype);
    println!(
        "scaling     slope {} inter {}",
        v.header.scl_slope, v.header.scl_inter
    );
    println!(
        "codes       sform {} qform {}",
        v.header.sform_code, v.header.qform_code
    );
    let range = if min <= max {
        format!("{min} .. {max}")
    } else {
        "none but NaN".to_string()
    };
    let nan = if nan > 0 {
        format!(" ({nan} NaN)")
    } else {
        String::new()
    };
    println!("values      {range}{nan}");
    println!("world_from_voxel");
    for row in &v.world_from_voxel[..3] {
        println!(
            "            [{:>10.4} {:>10.4} {:>10.4} {:>10.4}]",
            row[0], row[1], row[2], row[3]
        );
    }
    for w in &v.warnings {
        println!("warning     {w}");
    }
    Ok(())
}

fn checkpoint_info(path: &Path, verify: bool) -> CliResult {
    let config = input(checkpoint::read_config(path))?;
    let file = input(checkpoint::SafetensorsFile::open(path))?;
    let tensors = input(file.tensors())?;
    let n: usize = tensors
        .tensors()
        .iter()
        .map(|(_, v)| v.shape().iter().product::<usize>())
        .sum();
    let net = &config.network;
    println!("checkpoint  {}", path.display());
    println!(
        "space       {} layers x {} levels x {} edges, ops: {}",
        net.space.num_layers,
        net.space.num_depths,
        net.space.num_edges(),
        net.space
            .ops
            .iter()
            .map(|o| o.name())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "channels    channel_mul {} -> levels {:?}",
        net.channel_mul,
        (0..net.space.num_depths)
            .map(|d| net.level_channels(d))
            .collect::<Vec<_>>()
    );
    println!("classes     {}", config.class_names.join(", "));
    if net.has_man() {
        println!(
            "MAN         {} -> {:?} -> {} ({} parameters)",
            net.man_input_len(),
            net.man_hidden,
            net.man_output_len(),
            net.man_params()
        );
    } else {
        println!("MAN         none (plain DiNTS)");
    }
    println!("tensors     {} ({} parameters)", tensors.len(), n);
    let pre = &config.preprocess;
    let spacing = pre.spacing.map_or("kept".to_string(), |s| {
        format!("{} x {} x {} mm", s[0], s[1], s[2])
    });
    let intensity = match &pre.intensity {
        checkpoint::Intensity::CtWindow { a_min, a_max, clip } => {
            format!(
                "CT window [{a_min}, {a_max}] HU{}",
                if *clip { ", clipped" } else { "" }
            )
        }
        checkpoint::Intensity::ZScore { nonzero } => {
            format!(
                "z-score{}",
                if *nonzero {
                    " over non-zero voxels"
                } else {
                    ""
                }
            )
        }
        checkpoint::Intensity::None => "none".to_string(),
    };
    println!(
        "preprocess  {}, spacing {spacing}, {intensity}",
        pre.orientation
    );
    println!("roi         {:?}", config.roi);
    if let Some(arch) = config.default_arch() {
        match arch {
            Ok(code) => println!(
                "arch        {} active edges (the checkpoint's own)",
                code.active_edges()
            ),
            Err(e) => println!("arch        unreadable: {e}"),
        }
    }
    if let Some(training) = &config.training {
        println!("training    {training}");
    }
    if verify {
        let started = std::time::Instant::now();
        finite_weights(path, &file)?;
        let loaded = input(checkpoint::load(path, &burn::tensor::Device::flex()))?;
        println!(
            "verified    every tensor loads ({} parameters, {:.1} s)",
            loaded.network.num_params(),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

fn arch_info(path: &Path) -> CliResult {
    let code = input(arch::read_arch_json(path))?;
    print_arch(path, &code, "architecture JSON")
}

fn monai_info(path: &Path, verify: bool, arch: Option<&ArchSpec>) -> CliResult {
    let sd = input(StateDict::open(path))?;
    let inferred = input(infer(&sd))?;
    let net = &inferred.config;
    println!("checkpoint  {} (MONAI DiNTS state dict)", path.display());
    println!("layout      {}", inferred.scheme.describe());
    println!(
        "network     {} levels, use_downsample {}, channel_mul {} (filters {:?}), {} input \
         channel(s), {} classes",
        net.space.num_depths,
        net.use_downsample,
        net.channel_mul,
        net.filters(),
        net.in_channels,
        net.num_classes
    );
    println!("tensors     {}", sd.len());
    match &inferred.decoded {
        Some(code) => {
            println!(
                "arch        decoded from log_alpha_a / log_alpha_c ({} active edges; use \
                 --arch checkpoint):",
                code.active_edges()
            );
            print!("{}", code.to_grid_string());
        }
        None if arch.is_some() => println!("arch        given with --arch"),
        None if inferred.scheme == KeyScheme::SearchSpace => {
            println!("arch        none stored: pass --arch (file or preset)")
        }
        None => println!("arch        a searched instance: pass its arch file with --arch"),
    }
    if verify {
        let with = match (arch, &inferred.decoded) {
            (Some(ArchSpec::File(file)), _) => file.display().to_string(),
            (Some(ArchSpec::Preset(name)), _) => format!("the {name} preset"),
            (Some(ArchSpec::Checkpoint), _) => "the checkpoint's own architecture".to_string(),
            (None, Some(_)) => "the decoded architecture".to_string(),
            (None, None) => {
                return Err(Failure::Input(format!(
                    "{}: --verify needs the architecture of this checkpoint (--arch FILE)",
                    path.display()
                )));
            }
        };
        finite_weights(path, &sd)?;
        input(open::open(path, arch, &burn::tensor::Device::flex()))?;
        println!("verified    every tensor loads with {with}");
    }
    Ok(())
}

/// Refuses a checkpoint holding NaN or infinite values (a diverged training run saves
/// such weights, and every logit of the network is then NaN).
fn finite_weights(path: &Path, source: &impl TensorSource) -> CliResult {
    let mut keys = source.keys();
    keys.sort();
    let (mut bad, mut tensors, mut first) = (0usize, 0usize, None);
    for key in &keys {
        let Some(values) = source.values(key) else {
            continue;
        };
        let n = values.iter().filter(|v| !v.is_finite()).count();
        if n > 0 {
            bad += n;
            tensors += 1;
            first.get_or_insert(key);
        }
    }
    match first {
        None => Ok(()),
        Some(key) => Err(Failure::Input(format!(
            "{}: {bad} weight values in {tensors} tensor(s) are NaN or infinite (the first \
             in '{key}')",
            path.display()
        ))),
    }
}

fn print_arch(path: &Path, code: &ArchCode, kind: &str) -> CliResult {
    println!("architecture {} ({kind})", path.display());
    println!(
        "shape        {} layers x {} levels, {} active edges",
        code.num_layers(),
        code.num_depths(),
        code.active_edges()
    );
    print!("{}", code.to_grid_string());
    let node_a: Vec<String> = code
        .node_a()
        .iter()
        .map(|r| r.iter().map(|&a| if a { '1' } else { '0' }).collect())
        .collect();
    println!("node_a       {}", node_a.join(" "));
    for space in [
        SearchSpace::hypersegnas(code.num_layers(), code.num_depths()),
        SearchSpace::dints(code.num_layers(), code.num_depths()),
    ] {
        let label = if space.ops.len() == 2 {
            "hypersegnas"
        } else {
            "dints"
        };
        match code.validate(&space) {
            Ok(()) => println!("valid in     {label} space"),
            Err(e) => println!("not valid in {label} space: {e}"),
        }
    }
    Ok(())
}
