//! Built-in architecture codes.

use super::{ArchCode, ArchError, EdgeKind, Op, SearchSpace, sample_uniform};

/// Names accepted by [`preset`]. `random-N` (any integer seed N) is accepted too.
pub const PRESET_NAMES: [&str; 4] = ["all-conv", "dints-paper", "unet", "random-<seed>"];

/// The DiNTS paper's searched code (MONAI's `arch_code_cvpr.pth`): `arch_code_a`.
const DINTS_PAPER_A: [[u8; 10]; 12] = [
    [1, 0, 1, 1, 1, 1, 1, 0, 1, 0],
    [1, 1, 1, 1, 0, 1, 1, 0, 1, 1],
    [1, 1, 1, 1, 1, 1, 1, 0, 1, 1],
    [1, 0, 1, 1, 1, 1, 1, 1, 1, 0],
    [1, 1, 1, 1, 0, 1, 1, 1, 1, 1],
    [1, 0, 1, 1, 1, 1, 1, 1, 1, 1],
    [1, 1, 1, 1, 0, 1, 0, 1, 1, 1],
    [1, 1, 1, 1, 1, 1, 0, 0, 1, 1],
    [1, 1, 1, 1, 0, 1, 1, 1, 1, 1],
    [1, 1, 1, 1, 0, 1, 1, 1, 1, 1],
    [1, 1, 1, 0, 0, 1, 1, 1, 1, 1],
    [1, 1, 0, 0, 0, 0, 0, 1, 1, 1],
];

/// The DiNTS paper's searched code: `arch_code_c` (DiNTS op indices).
const DINTS_PAPER_C: [[u8; 10]; 12] = [
    [1, 3, 1, 3, 2, 1, 2, 0, 1, 1],
    [1, 0, 3, 1, 0, 2, 1, 2, 4, 3],
    [3, 0, 0, 2, 1, 0, 1, 2, 1, 0],
    [4, 2, 2, 1, 2, 1, 1, 0, 1, 3],
    [1, 1, 4, 0, 0, 4, 1, 1, 1, 1],
    [2, 0, 0, 0, 4, 4, 4, 1, 1, 1],
    [4, 3, 0, 0, 2, 4, 0, 1, 0, 3],
    [1, 1, 0, 0, 3, 4, 0, 4, 1, 3],
    [1, 0, 0, 2, 0, 0, 0, 0, 1, 1],
    [1, 4, 2, 3, 4, 4, 3, 0, 3, 1],
    [2, 0, 2, 3, 0, 2, 0, 0, 3, 2],
    [4, 4, 0, 0, 1, 4, 3, 0, 2, 1],
];

/// A built-in architecture code for `space`.
///
/// - `all-conv`: every edge runs the first convolution of the op set (the full super-net).
/// - `dints-paper`: the DiNTS paper's searched code (12 layers, 4 levels). In a space
///   without its pseudo-3D ops (HyperSegNAS's skip/conv space), every convolution becomes
///   the space's first convolution op.
/// - `unet`: a single path that goes down one level per layer to the deepest level, stays
///   there, and comes back up so that the last layer ends at level 0.
/// - `random-N`: a uniformly drawn valid code (see [`sample_uniform`]) with seed N.
pub fn preset(name: &str, space: &SearchSpace) -> Result<ArchCode, ArchError> {
    space.validate()?;
    let conv = space
        .ops
        .iter()
        .copied()
        .find(|&op| op != Op::Skip)
        .unwrap_or(Op::Skip);
    let code = match name {
        "all-conv" => {
            let mut code = ArchCode::empty(space.num_layers, space.num_depths);
            for layer in 0..space.num_layers {
                for edge in 0..space.num_edges() {
                    code.set(layer, edge, Some(conv));
                }
            }
            code
        }
        "dints-paper" => dints_paper(space, conv)?,
        "unet" => unet(space, conv)?,
        other => match other.strip_prefix("random-").map(str::parse::<u64>) {
            Some(Ok(seed)) => sample_uniform(space, seed),
            _ => return Err(ArchError::UnknownPreset(name.to_string())),
        },
    };
    code.validate(space)?;
    Ok(code)
}

fn dints_paper(space: &SearchSpace, conv: Op) -> Result<ArchCode, ArchError> {
    if space.num_layers != 12 || space.num_depths != 4 {
        return Err(ArchError::ShapeMismatch {
            layers: space.num_layers,
            depths: space.num_depths,
            found_layers: 12,
            found_depths: 4,
        });
    }
    let a: Vec<Vec<u8>> = DINTS_PAPER_A.iter().map(|r| r.to_vec()).collect();
    let c: Vec<Vec<u8>> = DINTS_PAPER_C.iter().map(|r| r.to_vec()).collect();
    let mut code = ArchCode::from_dints_matrices(&a, &c, 4)?;
    for layer in 0..12 {
        for edge in 0..10 {
            if let Some(op) = code.get(layer, edge)
                && space.op_slot(op).is_none()
            {
                code.set(layer, edge, Some(conv));
            }
        }
    }
    Ok(code)
}

/// A single-path U-Net-like code: down one level per layer, then up so the path ends at
/// level 0 after the last layer; layers to spare stay at the deepest level reached.
fn unet(space: &SearchSpace, conv: Op) -> Result<ArchCode, ArchError> {
    let layers = space.num_layers;
    let max_depth = (space.num_depths - 1).min(layers / 2);
    let mut code = ArchCode::empty(layers, space.num_depths);
    let mut level = 0usize;
    for layer in 0..layers {
        let remaining = layers - layer;
        let (target, kind) = if layer < max_depth {
            (level + 1, EdgeKind::Down)
        } else if remaining <= level {
            (level - 1, EdgeKind::Up)
        } else {
            (level, EdgeKind::Same)
        };
        let edge = space
            .edges()
            .iter()
            .position(|e| e.source == level && e.target == target && e.kind == kind)
            .ok_or_else(|| ArchError::Invalid(vec!["no edge for the U-Net path".into()]))?;
        code.set(layer, edge, Some(conv));
        level = target;
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dints_paper_matches_published_node_a() {
        let code = preset("dints-paper", &SearchSpace::dints(12, 4)).unwrap();
        let node_a = code.node_a();
        assert_eq!(node_a[0], vec![true, true, true, false]);
        for row in &node_a[1..12] {
            assert_eq!(row, &vec![true, true, true, true]);
        }
        assert_eq!(node_a[12], vec![true, false, true, true]);
    }

    #[test]
    fn every_preset_is_valid_in_both_spaces() {
        for space in [SearchSpace::hypersegnas(12, 4), SearchSpace::dints(12, 4)] {
            for name in ["all-conv", "dints-paper", "unet", "random-7"] {
                let code = preset(name, &space).unwrap();
                code.validate(&space).unwrap();
            }
        }
    }

    #[test]
    fn unet_ends_at_level_zero_for_small_spaces() {
        for (layers, depths) in [(1, 1), (2, 3), (5, 3), (12, 4), (3, 4)] {
            let space = SearchSpace::hypersegnas(layers, depths);
            let code = preset("unet", &space).unwrap();
            assert_eq!(code.active_edges(), layers);
            assert!(code.node_a()[layers][0]);
        }
    }

    #[test]
    fn unknown_preset_names_the_known_ones() {
        let err = preset("resnet", &SearchSpace::hypersegnas(12, 4)).unwrap_err();
        assert!(err.to_string().contains("dints-paper"));
    }
}
