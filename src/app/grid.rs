//! The architecture editor: the L x E grid of cells, undo/redo, the topology drawing and the
//! live cost estimate.

use egui::{Color32, Pos2, Rect, Sense, Stroke, Vec2};

use crate::arch::{ArchCode, EdgeKind, Op, SearchSpace};
use crate::model::NetworkConfig;

/// Figure 7's colours for target levels 1/2, 1/4, 1/8 and 1/16 (green, blue, yellow, red);
/// deeper levels reuse them.
pub const LEVEL_COLORS: [Color32; 4] = [
    Color32::from_rgb(76, 175, 80),
    Color32::from_rgb(66, 133, 244),
    Color32::from_rgb(244, 196, 48),
    Color32::from_rgb(229, 57, 53),
];

/// The colour of level `level`.
pub fn level_color(level: usize) -> Color32 {
    LEVEL_COLORS[level % LEVEL_COLORS.len()]
}

/// An architecture code under edit, with its history.
#[derive(Clone, Debug)]
pub struct ArchEditor {
    pub space: SearchSpace,
    code: ArchCode,
    undo: Vec<ArchCode>,
    redo: Vec<ArchCode>,
}

impl ArchEditor {
    pub fn new(space: SearchSpace, code: ArchCode) -> Self {
        Self {
            space,
            code,
            undo: Vec::new(),
            redo: Vec::new(),
        }
    }

    pub fn code(&self) -> &ArchCode {
        &self.code
    }

    /// Replaces the whole code (a preset or an imported file), as one undoable step.
    pub fn replace(&mut self, code: ArchCode) {
        if code != self.code {
            self.undo.push(std::mem::replace(&mut self.code, code));
            self.redo.clear();
        }
    }

    /// Sets one cell, as one undoable step.
    pub fn set(&mut self, layer: usize, edge: usize, op: Option<Op>) {
        if self.code.get(layer, edge) != op {
            let mut next = self.code.clone();
            next.set(layer, edge, op);
            self.replace(next);
        }
    }

    /// The next state of a cell when clicked: off, then every op of the space in order, then
    /// off again.
    pub fn next_op(&self, current: Option<Op>) -> Option<Op> {
        match current {
            None => self.space.ops.first().copied(),
            Some(op) => {
                let at = self.space.op_slot(op).map_or(0, |i| i + 1);
                self.space.ops.get(at).copied()
            }
        }
    }

    /// Cycles a cell (a click).
    pub fn cycle(&mut self, layer: usize, edge: usize) {
        let next = self.next_op(self.code.get(layer, edge));
        self.set(layer, edge, next);
    }

    pub fn can_undo(&self) -> bool {
        !self.undo.is_empty()
    }

    pub fn can_redo(&self) -> bool {
        !self.redo.is_empty()
    }

    pub fn undo(&mut self) {
        if let Some(prev) = self.undo.pop() {
            self.redo.push(std::mem::replace(&mut self.code, prev));
        }
    }

    pub fn redo(&mut self) {
        if let Some(next) = self.redo.pop() {
            self.undo.push(std::mem::replace(&mut self.code, next));
        }
    }

    /// Why the code cannot run (empty when it is valid).
    pub fn problems(&self) -> Vec<String> {
        self.code.problems(&self.space)
    }
}

/// Cost of running one architecture on one ROI.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Cost {
    /// Parameters of the searched instance (stems, head, active cells).
    pub params: usize,
    /// Multiply-adds of all convolutions for one ROI.
    pub macs: f64,
    /// Bytes of activations kept for one ROI at fp32 during inference (each active edge's
    /// ReLU, convolution and norm outputs, and every level's node tensor).
    pub activation_bytes: f64,
}

/// Estimates the cost of `code` on one `roi` with the network `cfg`.
pub fn estimate_cost(cfg: &NetworkConfig, code: &ArchCode, roi: [usize; 3]) -> Cost {
    let params = crate::model::supernet::instance_params(cfg, code);
    let f = cfg.filters();
    let voxels_at = |stride: usize| -> f64 {
        roi.iter()
            .map(|&s| (s / stride.max(1)).max(1) as f64)
            .product()
    };
    let level_voxels = |level: usize| voxels_at(cfg.level_stride(level));
    let mut macs = 0.0;
    let mut act = 0.0;
    // Stems: input to every level, and the head back up.
    for level in 0..cfg.space.num_depths {
        macs += 27.0 * (cfg.in_channels * f[level]) as f64 * voxels_at(1 << level);
        if cfg.use_downsample {
            macs += 27.0 * (f[level] * f[level + 1]) as f64 * voxels_at(2 << level);
        }
        let c = cfg.level_channels(level) as f64;
        macs += 27.0 * c * c * level_voxels(level);
        act += c * level_voxels(level) * 4.0;
    }
    for layer in 0..code.num_layers() {
        for edge in 0..code.num_edges() {
            let Some(op) = code.get(layer, edge) else {
                continue;
            };
            let e = cfg.space.edge(edge);
            let c = cfg.level_channels(e.target) as f64;
            let c_in = cfg.level_channels(e.source) as f64;
            let v = level_voxels(e.target);
            if e.kind != EdgeKind::Same {
                macs += c_in * c * v;
                act += c * v * 4.0;
            }
            macs += match op {
                Op::Skip => 0.0,
                Op::Conv3x3x3 => 27.0 * c * c * v,
                Op::Conv3x3x1 | Op::Conv3x1x3 | Op::Conv1x3x3 => 12.0 * c * c * v,
            };
            if op != Op::Skip {
                act += 3.0 * c * v * 4.0;
            }
        }
    }
    Cost {
        params,
        macs,
        activation_bytes: act,
    }
}

/// What a user did in the grid this frame.
#[derive(Default)]
pub struct GridResponse {
    pub changed: bool,
}

fn op_fill(op: Option<Op>, dark: bool) -> Color32 {
    match op {
        None => {
            if dark {
                Color32::from_gray(40)
            } else {
                Color32::from_gray(225)
            }
        }
        Some(Op::Skip) => Color32::from_rgb(150, 150, 160),
        Some(Op::Conv3x3x3) => Color32::from_rgb(30, 110, 200),
        Some(_) => Color32::from_rgb(140, 80, 200),
    }
}

/// The grid widget: one row per layer, one column per edge, columns grouped and tinted by
/// target level. Click cycles a cell; right-click offers every state.
pub fn grid_ui(ui: &mut egui::Ui, editor: &mut ArchEditor) -> GridResponse {
    let mut out = GridResponse::default();
    let space = editor.space.clone();
    let edges = space.edges();
    let node_a = editor.code().node_a();
    let cell = Vec2::new(34.0, 18.0);
    let gap_between_levels = 6.0;
    let label_w = 34.0;
    let dark = ui.visuals().dark_mode;
    let text_color = ui.visuals().text_color();

    // Header: level groups.
    let header_h = 30.0;
    let total_w = label_w
        + edges.len() as f32 * cell.x
        + (space.num_depths.saturating_sub(1)) as f32 * gap_between_levels;
    let (header, _) = ui.allocate_exact_size(Vec2::new(total_w, header_h), Sense::hover());
    let painter = ui.painter_at(header.expand(2.0));
    let col_x = |edge: usize| -> f32 {
        header.min.x
            + label_w
            + edge as f32 * cell.x
            + edges[edge].target as f32 * gap_between_levels
    };
    for level in 0..space.num_depths {
        let cols: Vec<usize> = (0..edges.len())
            .filter(|&e| edges[e].target == level)
            .collect();
        let (Some(&first), Some(&last)) = (cols.first(), cols.last()) else {
            continue;
        };
        let r = Rect::from_min_max(
            Pos2::new(col_x(first), header.min.y),
            Pos2::new(col_x(last) + cell.x, header.min.y + 14.0),
        );
        painter.rect_filled(r, 2.0, level_color(level));
        painter.text(
            r.center(),
            egui::Align2::CENTER_CENTER,
            format!("1/{}", 1usize << (level + 1)),
            egui::FontId::proportional(10.0),
            Color32::BLACK,
        );
        for &e in &cols {
            // Source level, prefixed s(ame), u(p from a coarser level), d(own from a finer one).
            let arrow = match edges[e].kind {
                EdgeKind::Same => "s",
                EdgeKind::Up => "u",
                EdgeKind::Down => "d",
            };
            painter.text(
                Pos2::new(col_x(e) + cell.x / 2.0, header.min.y + 22.0),
                egui::Align2::CENTER_CENTER,
                format!("{arrow}{}", edges[e].source),
                egui::FontId::proportional(10.0),
                text_color,
            );
        }
    }

    for (layer, inputs) in node_a.iter().enumerate().take(space.num_layers) {
        let (row, _) = ui.allocate_exact_size(Vec2::new(total_w, cell.y + 2.0), Sense::hover());
        ui.painter().text(
            Pos2::new(row.min.x + 2.0, row.center().y),
            egui::Align2::LEFT_CENTER,
            format!("L{}", layer + 1),
            egui::FontId::monospace(11.0),
            text_color,
        );
        for (edge, e) in edges.iter().enumerate() {
            let x = col_x(edge);
            let rect =
                Rect::from_min_size(Pos2::new(x + 1.0, row.min.y + 1.0), cell - Vec2::splat(2.0));
            let id = ui.scope_id().with(("arch-cell", layer, edge));
            let response = ui.interact(rect, id, Sense::click());
            let op = editor.code().get(layer, edge);
            let label = format!("layer {} edge {}", layer + 1, edge + 1);
            let value = op.map_or("off", Op::short);
            response.widget_info(|| {
                let mut info = egui::WidgetInfo::labeled(egui::Role::Button, true, &label);
                info.current_text_value = Some(value.to_string());
                info
            });
            // A cell whose source node is inactive cannot carry an op.
            let source_active = layer == 0 || inputs[e.source];
            let invalid = op.is_some() && !source_active;
            let mut fill = if invalid {
                Color32::from_rgb(170, 30, 30)
            } else {
                op_fill(op, dark)
            };
            if response.hovered() {
                fill = fill.gamma_multiply(1.3);
            }
            let painter = ui.painter();
            painter.rect_filled(rect, 2.0, fill);
            let border = if invalid {
                Stroke::new(2.0, Color32::RED)
            } else {
                Stroke::new(1.0, level_color(e.target).gamma_multiply(0.8))
            };
            painter.rect_stroke(rect, 2.0, border, egui::StrokeKind::Inside);
            let text = match op {
                None => "·".to_string(),
                Some(Op::Skip) => "skip".into(),
                Some(Op::Conv3x3x3) => "conv".into(),
                Some(o) => o.short().into(),
            };
            painter.text(
                rect.center(),
                egui::Align2::CENTER_CENTER,
                text,
                egui::FontId::proportional(10.0),
                if op.is_some() {
                    Color32::WHITE
                } else {
                    text_color
                },
            );
            let response = response.on_hover_text(format!(
                "Layer {}, edge {}: level {} to level {} ({})\nClick: cycle off, {}, off. \
                 Right-click: choose.",
                layer + 1,
                edge + 1,
                e.source,
                e.target,
                op.map_or("off", Op::name),
                space
                    .ops
                    .iter()
                    .map(|o| o.short())
                    .collect::<Vec<_>>()
                    .join(", "),
            ));
            if response.clicked() {
                editor.cycle(layer, edge);
                out.changed = true;
            }
            response.context_menu(|ui| {
                if ui.selectable_label(op.is_none(), "off").clicked() {
                    editor.set(layer, edge, None);
                    out.changed = true;
                    ui.close();
                }
                for &o in &space.ops {
                    if ui.selectable_label(op == Some(o), o.name()).clicked() {
                        editor.set(layer, edge, Some(o));
                        out.changed = true;
                        ui.close();
                    }
                }
            });
        }
    }
    out
}

/// Draws the topology of `code`: levels as rows, the nodes between layers as columns, active
/// edges as lines (solid for convolutions, thin for skips).
pub fn topology_ui(ui: &mut egui::Ui, code: &ArchCode, space: &SearchSpace, height: f32) {
    let width = ui.available_width().max(200.0);
    let (rect, _) = ui.allocate_exact_size(Vec2::new(width, height), Sense::hover());
    let painter = ui.painter_at(rect);
    let layers = code.num_layers();
    let depths = code.num_depths();
    let node_a = code.node_a();
    let margin = 14.0;
    let x = |i: usize| {
        rect.min.x + margin + i as f32 * (rect.width() - 2.0 * margin) / layers.max(1) as f32
    };
    let y = |d: usize| {
        rect.min.y + margin + d as f32 * (rect.height() - 2.0 * margin) / (depths.max(2) - 1) as f32
    };
    for d in 0..depths {
        painter.line_segment(
            [Pos2::new(x(0), y(d)), Pos2::new(x(layers), y(d))],
            Stroke::new(6.0, level_color(d).gamma_multiply(0.15)),
        );
    }
    for layer in 0..layers {
        for (edge, e) in space.edges().iter().enumerate() {
            if let Some(op) = code.get(layer, edge) {
                let stroke = match op {
                    Op::Skip => Stroke::new(1.0, Color32::GRAY),
                    _ => Stroke::new(2.0, level_color(e.target)),
                };
                painter.line_segment(
                    [
                        Pos2::new(x(layer), y(e.source)),
                        Pos2::new(x(layer + 1), y(e.target)),
                    ],
                    stroke,
                );
            }
        }
    }
    let text_color = ui.visuals().text_color();
    for (i, row) in node_a.iter().enumerate().take(layers + 1) {
        for (d, &active) in row.iter().enumerate() {
            let p = Pos2::new(x(i), y(d));
            if active {
                painter.circle_filled(p, 3.5, level_color(d));
            } else {
                painter.circle_stroke(p, 3.0, Stroke::new(1.0, Color32::from_gray(120)));
            }
        }
    }
    for d in 0..depths {
        painter.text(
            Pos2::new(rect.min.x + 1.0, y(d)),
            egui::Align2::LEFT_CENTER,
            format!("{d}"),
            egui::FontId::proportional(9.0),
            text_color,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::preset;

    #[test]
    fn clicks_cycle_through_the_op_set_and_undo_restores() {
        let space = SearchSpace::hypersegnas(12, 4);
        let code = preset("all-conv", &space).unwrap();
        let mut editor = ArchEditor::new(space, code.clone());
        editor.cycle(0, 0);
        assert_eq!(editor.code().get(0, 0), None, "conv -> off");
        editor.cycle(0, 0);
        assert_eq!(editor.code().get(0, 0), Some(Op::Skip), "off -> skip");
        editor.cycle(0, 0);
        assert_eq!(editor.code().get(0, 0), Some(Op::Conv3x3x3), "skip -> conv");
        editor.undo();
        editor.undo();
        editor.undo();
        assert_eq!(editor.code(), &code);
        assert!(!editor.can_undo());
        editor.redo();
        assert_eq!(editor.code().get(0, 0), None);
    }

    #[test]
    fn dints_space_cycles_through_all_five_ops() {
        let space = SearchSpace::dints(12, 4);
        let editor = ArchEditor::new(space.clone(), ArchCode::empty(12, 4));
        let mut seen = Vec::new();
        let mut state = None;
        for _ in 0..6 {
            state = editor.next_op(state);
            seen.push(state);
        }
        assert_eq!(seen[..5], Op::ALL.map(Some));
        assert_eq!(seen[5], None);
    }

    #[test]
    fn cost_grows_with_active_convolutions() {
        let cfg = NetworkConfig::demo(1, 2);
        let all = preset("all-conv", &cfg.space).unwrap();
        let unet = preset("unet", &cfg.space).unwrap();
        let a = estimate_cost(&cfg, &all, [64; 3]);
        let b = estimate_cost(&cfg, &unet, [64; 3]);
        assert!(a.params > b.params);
        assert!(a.macs > b.macs);
        assert!(a.activation_bytes > b.activation_bytes);
        // Edge 0 is the same-level edge of level 0; as a 3x3x3 conv on 64^3 it costs
        // 27 * c * c * (64 / stride)^3 multiply-adds more than as a skip.
        assert_eq!(cfg.space.edge(0).kind, EdgeKind::Same);
        let mut skip = all.clone();
        skip.set(5, 0, Some(Op::Skip));
        let diff = a.macs - estimate_cost(&cfg, &skip, [64; 3]).macs;
        let c = cfg.level_channels(0) as f64;
        let v = (64 / cfg.level_stride(0)) as f64;
        assert_eq!(diff, 27.0 * c * c * v * v * v);
    }
}
