//! The Figure 7 panel's numbers and plot: MAN channel weights of foreground and background
//! patches for chosen layers, ordered by resolution level, then edge, then channel, over a
//! background shaded by level in Figure 7's colours.
//!
//! Plotting uses plotters, into an RGB buffer for the panel and PNG export, and into SVG.

use std::fmt::Write as _;
use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::model::NetworkConfig;

use super::worker::{PatchKind, PatchWeights};

/// Figure 7's level colours as RGB (green 1/2, blue 1/4, yellow 1/8, red 1/16).
const LEVEL_RGB: [(u8, u8, u8); 4] = [(76, 175, 80), (66, 133, 244), (244, 196, 48), (229, 57, 53)];

const FOREGROUND: [RGBColor; 4] = [
    RGBColor(200, 30, 30),
    RGBColor(230, 110, 20),
    RGBColor(170, 20, 120),
    RGBColor(140, 60, 20),
];
const BACKGROUND: [RGBColor; 4] = [
    RGBColor(20, 60, 160),
    RGBColor(20, 130, 160),
    RGBColor(60, 60, 60),
    RGBColor(90, 40, 160),
];

/// One layer's slice of a channel-weight vector, with the level of every position.
pub struct LayerLayout {
    /// Start of the layer in the full weight vector.
    pub start: usize,
    /// Target level of each channel position, in plotting order.
    pub levels: Vec<usize>,
}

/// Where `layer`'s weights sit in the MAN output (edges are stored in DiNTS order, which is
/// already grouped by target level, so storage order is Figure 7's order).
pub fn layer_layout(cfg: &NetworkConfig, layer: usize) -> LayerLayout {
    let offsets = cfg.channel_weight_offsets();
    let edges = cfg.space.edges();
    let e_count = edges.len();
    let start = offsets[layer * e_count];
    let mut levels = Vec::new();
    for (edge, e) in edges.iter().enumerate() {
        let n = offsets[layer * e_count + edge + 1] - offsets[layer * e_count + edge];
        levels.extend(std::iter::repeat_n(e.target, n));
    }
    LayerLayout { start, levels }
}

/// Per-level mean weights of one patch group, and the distance between the groups.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    /// Mean weight per level over the chosen layers, foreground patches.
    pub foreground: Vec<f64>,
    /// Same for background patches.
    pub background: Vec<f64>,
    /// Root-mean-square difference between the mean foreground and the mean background
    /// weight vectors over the chosen layers' channels.
    pub distance: f64,
    pub foreground_patches: usize,
    pub background_patches: usize,
}

/// Summary numbers over `layers` (0-based).
pub fn summarize(cfg: &NetworkConfig, patches: &[PatchWeights], layers: &[usize]) -> Summary {
    let depths = cfg.space.num_depths;
    let mut sums = [vec![0.0; depths], vec![0.0; depths]];
    let mut counts = [vec![0usize; depths], vec![0usize; depths]];
    let mut mean_vec: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
    let mut n = [0usize; 2];
    for p in patches {
        let g = (p.spec.kind == PatchKind::Background) as usize;
        n[g] += 1;
        let mut flat = Vec::new();
        for &layer in layers {
            let layout = layer_layout(cfg, layer);
            for (i, &level) in layout.levels.iter().enumerate() {
                let w = f64::from(p.weights[layout.start + i]);
                sums[g][level] += w;
                counts[g][level] += 1;
                flat.push(w);
            }
        }
        if mean_vec[g].is_empty() {
            mean_vec[g] = vec![0.0; flat.len()];
        }
        for (m, w) in mean_vec[g].iter_mut().zip(&flat) {
            *m += w;
        }
    }
    let mean = |g: usize| -> Vec<f64> {
        (0..depths)
            .map(|d| {
                if counts[g][d] == 0 {
                    f64::NAN
                } else {
                    sums[g][d] / counts[g][d] as f64
                }
            })
            .collect()
    };
    let distance = if n[0] > 0 && n[1] > 0 {
        let len = mean_vec[0].len().max(1) as f64;
        (mean_vec[0]
            .iter()
            .zip(&mean_vec[1])
            .map(|(a, b)| (a / n[0] as f64 - b / n[1] as f64).powi(2))
            .sum::<f64>()
            / len)
            .sqrt()
    } else {
        f64::NAN
    };
    Summary {
        foreground: mean(0),
        background: mean(1),
        distance,
        foreground_patches: n[0],
        background_patches: n[1],
    }
}

/// Draws the plot onto any plotters backend: one subplot per layer, one line per patch in
/// each. Returns the number of lines in each subplot.
pub fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    cfg: &NetworkConfig,
    patches: &[PatchWeights],
    layers: &[usize],
    dark: bool,
) -> Result<usize, String> {
    crate::train::plot::register_font();
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| format!("drawing the plot: {e}");
    let (bg, fg_text) = if dark {
        (RGBColor(27, 27, 27), RGBColor(220, 220, 220))
    } else {
        (WHITE, BLACK)
    };
    root.fill(&bg).map_err(err)?;
    if layers.is_empty() || patches.is_empty() {
        return Ok(0);
    }
    let areas = root.split_evenly((layers.len(), 1));
    let mut lines = 0;
    for (area, &layer) in areas.iter().zip(layers) {
        let layout = layer_layout(cfg, layer);
        let len = layout.levels.len();
        let values = patches
            .iter()
            .flat_map(|p| p.weights[layout.start..layout.start + len].iter().copied());
        let (lo, hi) = values.fold((f32::MAX, f32::MIN), |(a, b), v| (a.min(v), b.max(v)));
        let pad = ((hi - lo) * 0.05).max(1e-3);
        let (lo, hi) = (lo - pad, hi + pad);
        let mut chart = ChartBuilder::on(area)
            .caption(
                format!("Layer {}", layer + 1),
                ("sans-serif", 14).into_font().color(&fg_text),
            )
            .margin(6)
            .x_label_area_size(34)
            .y_label_area_size(40)
            .build_cartesian_2d(0f32..len as f32, lo..hi)
            .map_err(err)?;
        // Shade the level ranges first.
        let mut start = 0;
        while start < len {
            let level = layout.levels[start];
            let mut end = start;
            while end < len && layout.levels[end] == level {
                end += 1;
            }
            let (r, g, b) = LEVEL_RGB[level % LEVEL_RGB.len()];
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(start as f32, lo), (end as f32, hi)],
                    RGBColor(r, g, b).mix(0.22).filled(),
                )))
                .map_err(err)?;
            start = end;
        }
        chart
            .configure_mesh()
            .disable_mesh()
            .axis_style(fg_text)
            .label_style(("sans-serif", 10).into_font().color(&fg_text))
            .x_desc("channel (by level, edge, channel)")
            .draw()
            .map_err(err)?;
        let (mut nf, mut nb) = (0, 0);
        for p in patches {
            let ys = &p.weights[layout.start..layout.start + len];
            let points = ys.iter().enumerate().map(|(i, &v)| (i as f32 + 0.5, v));
            match p.spec.kind {
                PatchKind::Foreground => {
                    let color = FOREGROUND[nf % FOREGROUND.len()];
                    nf += 1;
                    chart
                        .draw_series(LineSeries::new(points, color.stroke_width(1)))
                        .map_err(err)?;
                }
                PatchKind::Background => {
                    let color = BACKGROUND[nb % BACKGROUND.len()];
                    nb += 1;
                    chart
                        .draw_series(DashedLineSeries::new(points, 4, 3, color.stroke_width(1)))
                        .map_err(err)?;
                }
            }
            lines += 1;
        }
    }
    root.present().map_err(err)?;
    Ok(lines / layers.len())
}

/// Renders the plot to RGB pixels.
pub fn render_rgb(
    size: (u32, u32),
    cfg: &NetworkConfig,
    patches: &[PatchWeights],
    layers: &[usize],
    dark: bool,
) -> Result<(Vec<u8>, usize), String> {
    let mut buffer = vec![0u8; size.0 as usize * size.1 as usize * 3];
    let lines = {
        let root = BitMapBackend::with_buffer(&mut buffer, size).into_drawing_area();
        draw(&root, cfg, patches, layers, dark)?
    };
    Ok((buffer, lines))
}

/// Writes the plot as PNG (atomically).
pub fn export_png(
    path: &Path,
    cfg: &NetworkConfig,
    patches: &[PatchWeights],
    layers: &[usize],
) -> Result<(), String> {
    let size = (1200u32, 320 * layers.len().max(1) as u32);
    let (rgb, _) = render_rgb(size, cfg, patches, layers, false)?;
    let png = crate::train::plot::encode_png(size.0, size.1, &rgb, png::ColorType::Rgb)
        .map_err(|e| format!("{}: encoding PNG: {e}", path.display()))?;
    crate::fsutil::write_atomic(path, &png).map_err(|e| format!("{}: {e}", path.display()))
}

/// Writes the plot as SVG (atomically).
pub fn export_svg(
    path: &Path,
    cfg: &NetworkConfig,
    patches: &[PatchWeights],
    layers: &[usize],
) -> Result<(), String> {
    let size = (1200u32, 320 * layers.len().max(1) as u32);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        draw(&root, cfg, patches, layers, false)?;
    }
    crate::fsutil::write_atomic(path, svg.as_bytes())
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// The numbers as CSV: one row per patch, layer and channel, then the summary.
pub fn to_csv(cfg: &NetworkConfig, patches: &[PatchWeights], layers: &[usize]) -> String {
    let mut out =
        String::from("patch,kind,center_x,center_y,center_z,layer,position,level,weight\n");
    for (i, p) in patches.iter().enumerate() {
        let kind = match p.spec.kind {
            PatchKind::Foreground => "foreground",
            PatchKind::Background => "background",
        };
        for &layer in layers {
            let layout = layer_layout(cfg, layer);
            for (pos, &level) in layout.levels.iter().enumerate() {
                let [x, y, z] = p.spec.center;
                let _ = writeln!(
                    out,
                    "{i},{kind},{x},{y},{z},{},{pos},{level},{}",
                    layer + 1,
                    p.weights[layout.start + pos]
                );
            }
        }
    }
    let s = summarize(cfg, patches, layers);
    out.push_str("\nsummary,level,foreground_mean,background_mean\n");
    for d in 0..s.foreground.len() {
        let _ = writeln!(out, "summary,{d},{},{}", s.foreground[d], s.background[d]);
    }
    let _ = writeln!(out, "summary,fg_bg_rms_distance,{},", s.distance);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::worker::PatchSpec;

    fn patch(kind: PatchKind, value: f32, len: usize) -> PatchWeights {
        PatchWeights {
            spec: PatchSpec {
                center: [0; 3],
                kind,
            },
            weights: vec![value; len],
        }
    }

    #[test]
    fn layout_is_grouped_by_level() {
        let cfg = NetworkConfig::demo(1, 2);
        let layout = layer_layout(&cfg, 3);
        let mut sorted = layout.levels.clone();
        sorted.sort();
        assert_eq!(layout.levels, sorted, "levels appear in increasing order");
        let expected: usize = cfg
            .space
            .edges()
            .iter()
            .map(|e| cfg.level_channels(e.target))
            .sum();
        assert_eq!(layout.levels.len(), expected);
        assert_eq!(layout.start, 3 * expected);
    }

    #[test]
    fn summary_separates_groups() {
        let cfg = NetworkConfig::demo(1, 2);
        let len = cfg.man_output_len();
        let patches = vec![
            patch(PatchKind::Foreground, 1.0, len),
            patch(PatchKind::Foreground, 3.0, len),
            patch(PatchKind::Background, 0.5, len),
        ];
        let s = summarize(&cfg, &patches, &[0, 11]);
        assert!(s.foreground.iter().all(|&m| (m - 2.0).abs() < 1e-9));
        assert!(s.background.iter().all(|&m| (m - 0.5).abs() < 1e-9));
        assert!((s.distance - 1.5).abs() < 1e-9);
        assert_eq!((s.foreground_patches, s.background_patches), (2, 1));
    }

    #[test]
    fn plot_draws_one_line_per_patch_and_layer() {
        let cfg = NetworkConfig::demo(1, 2);
        let len = cfg.man_output_len();
        let patches: Vec<_> = (0..5)
            .map(|i| {
                patch(
                    if i < 3 {
                        PatchKind::Foreground
                    } else {
                        PatchKind::Background
                    },
                    i as f32,
                    len,
                )
            })
            .collect();
        let (rgb, lines) = render_rgb((400, 300), &cfg, &patches, &[0, 3], false).unwrap();
        assert_eq!(lines, 5);
        assert!(rgb.chunks(3).any(|p| p != [255, 255, 255]));
        let csv = to_csv(&cfg, &patches, &[0]);
        assert_eq!(
            csv.lines()
                .filter(|l| l.starts_with("4,background"))
                .count(),
            layer_layout(&cfg, 0).levels.len()
        );
    }
}
