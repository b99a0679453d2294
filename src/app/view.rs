//! The tri-planar volume view: axial, coronal and sagittal slices of the RAS volume with a
//! linked crosshair, zoom and pan, window/level and the label overlay.
//!
//! Slices are shown in radiological convention: the patient's right on the screen's left in
//! axial and coronal views, anterior on the left in the sagittal view, superior at the top.

use std::sync::Arc;

use egui::{Color32, Pos2, Rect, Sense, Stroke, Vec2};

use crate::volume::RasVolume;

use super::render::{SHADER_CLASSES, SliceCallback, SliceImages, SliceUniforms};

/// Names of the three views.
pub const VIEW_NAMES: [&str; 3] = ["Axial", "Coronal", "Sagittal"];

/// Axes of view `view`: (fixed axis, axis along screen columns, axis along screen rows).
/// Both screen axes run against the RAS axis (R and A and S lie left and up).
pub fn view_axes(view: usize) -> (usize, usize, usize) {
    match view {
        0 => (2, 0, 1),
        1 => (1, 0, 2),
        _ => (0, 1, 2),
    }
}

/// Orientation letters at the left, right, top and bottom edges of a view.
fn edge_letters(view: usize) -> [&'static str; 4] {
    match view {
        0 => ["R", "L", "A", "P"],
        1 => ["R", "L", "S", "I"],
        _ => ["A", "P", "S", "I"],
    }
}

/// Named CT windows (centre, width in HU) and the automatic one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum WindowPreset {
    Abdomen,
    Liver,
    Bone,
    Lung,
    Brain,
    /// 0.5th to 99.5th intensity percentile.
    Auto,
}

impl WindowPreset {
    pub const ALL: [WindowPreset; 6] = [
        WindowPreset::Abdomen,
        WindowPreset::Liver,
        WindowPreset::Bone,
        WindowPreset::Lung,
        WindowPreset::Brain,
        WindowPreset::Auto,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Abdomen => "Abdomen (W400 L40)",
            Self::Liver => "Liver (W150 L30)",
            Self::Bone => "Bone (W1800 L400)",
            Self::Lung => "Lung (W1500 L-600)",
            Self::Brain => "Brain (W80 L40)",
            Self::Auto => "Auto (percentiles)",
        }
    }

    /// (centre, width) for a volume with the given 0.5/99.5 % percentiles.
    pub fn window(self, percentiles: (f32, f32)) -> (f32, f32) {
        match self {
            Self::Abdomen => (40.0, 400.0),
            Self::Liver => (30.0, 150.0),
            Self::Bone => (400.0, 1800.0),
            Self::Lung => (-600.0, 1500.0),
            Self::Brain => (40.0, 80.0),
            Self::Auto => {
                let (lo, hi) = percentiles;
                ((lo + hi) / 2.0, (hi - lo).max(1e-3))
            }
        }
    }
}

/// What the overlay shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum OverlaySource {
    None,
    Prediction,
    GroundTruth,
    /// Prediction filled, ground truth outlined.
    Both,
    /// Prediction against ground truth.
    DiffTruth,
    /// This prediction against the one before the last run (another architecture or mode).
    DiffPrevious,
}

impl OverlaySource {
    pub const ALL: [OverlaySource; 6] = [
        Self::None,
        Self::Prediction,
        Self::GroundTruth,
        Self::Both,
        Self::DiffTruth,
        Self::DiffPrevious,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::None => "None",
            Self::Prediction => "Prediction",
            Self::GroundTruth => "Ground truth",
            Self::Both => "Prediction + truth outline",
            Self::DiffTruth => "Diff: prediction vs truth",
            Self::DiffPrevious => "Diff: this run vs previous run",
        }
    }

    fn shader_code(self) -> u32 {
        match self {
            Self::None => 0,
            Self::Prediction | Self::GroundTruth => 1,
            Self::Both => 3,
            Self::DiffTruth | Self::DiffPrevious => 4,
        }
    }
}

/// Colour maps of the shader.
pub const COLORMAPS: [&str; 4] = ["Grey", "Inverted grey", "Hot", "Viridis-like"];

/// How slices look. Changing any of this only changes the shader's uniforms.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct DisplaySettings {
    pub center: f32,
    pub width: f32,
    pub colormap: u32,
    pub overlay: OverlaySource,
    pub opacity: f32,
    pub outline: bool,
    /// Visibility per class (index = label).
    pub class_visible: Vec<bool>,
}

impl Default for DisplaySettings {
    fn default() -> Self {
        Self {
            center: 40.0,
            width: 400.0,
            colormap: 0,
            overlay: OverlaySource::Prediction,
            opacity: 0.45,
            outline: false,
            class_visible: vec![true; SHADER_CLASSES],
        }
    }
}

/// Colours of classes 1, 2, ... (class 0, background, is never drawn).
pub fn class_color(label: usize) -> Color32 {
    const PALETTE: [Color32; 10] = [
        Color32::from_rgb(255, 64, 64),
        Color32::from_rgb(64, 200, 64),
        Color32::from_rgb(64, 128, 255),
        Color32::from_rgb(255, 200, 0),
        Color32::from_rgb(200, 64, 255),
        Color32::from_rgb(0, 210, 210),
        Color32::from_rgb(255, 128, 0),
        Color32::from_rgb(160, 255, 100),
        Color32::from_rgb(255, 100, 180),
        Color32::from_rgb(150, 110, 60),
    ];
    if label == 0 {
        Color32::TRANSPARENT
    } else if label <= PALETTE.len() {
        PALETTE[label - 1]
    } else {
        // Golden-angle hues keep neighbouring labels apart.
        let hue = (label as f32 * 0.618_034).fract();
        egui::ecolor::Hsva::new(hue, 0.75, 0.95, 1.0).into()
    }
}

/// Zoom and pan of one view, and its cached slice.
#[derive(Default)]
pub struct ViewState {
    pub zoom: f32,
    pub pan: Vec2,
    images: Option<Arc<SliceImages>>,
    key: Option<(usize, u64, OverlaySource)>,
}

/// The three views and the crosshair they share.
pub struct VolumeView {
    /// RAS voxel under the crosshair.
    pub crosshair: [usize; 3],
    pub views: [ViewState; 3],
    generation: u64,
}

/// The label maps the overlay may draw (RAS grid).
#[derive(Clone, Copy, Default)]
pub struct Labels<'a> {
    pub prediction: Option<&'a [u16]>,
    pub truth: Option<&'a [u16]>,
    pub previous: Option<&'a [u16]>,
    /// Changes whenever any of the three changes.
    pub generation: u64,
}

/// What happened in a view this frame.
#[derive(Default)]
pub struct ViewOutput {
    pub hovered: Option<[usize; 3]>,
    /// A plain click (no drag) at a voxel.
    pub clicked: Option<[usize; 3]>,
}

impl VolumeView {
    pub fn new(dims: [usize; 3]) -> Self {
        let mut views: [ViewState; 3] = Default::default();
        for v in &mut views {
            v.zoom = 1.0;
        }
        Self {
            crosshair: dims.map(|n| n / 2),
            views,
            generation: 0,
        }
    }

    pub fn reset_zoom(&mut self) {
        for v in &mut self.views {
            v.zoom = 1.0;
            v.pan = Vec2::ZERO;
        }
    }

    /// Moves the crosshair along a RAS axis, clamped to the volume.
    pub fn step(&mut self, axis: usize, delta: isize, dims: [usize; 3]) {
        let v = self.crosshair[axis] as isize + delta;
        self.crosshair[axis] = v.clamp(0, dims[axis] as isize - 1) as usize;
    }

    fn slice_images(
        &mut self,
        view: usize,
        ras: &RasVolume,
        labels: &Labels<'_>,
        overlay: OverlaySource,
    ) -> Arc<SliceImages> {
        let (fixed, _, _) = view_axes(view);
        let key = (self.crosshair[fixed], labels.generation, overlay);
        let state = &mut self.views[view];
        if let (Some(images), Some(k)) = (&state.images, state.key)
            && k == key
        {
            return images.clone();
        }
        let (a, b) = match overlay {
            OverlaySource::None => (None, None),
            OverlaySource::Prediction => (labels.prediction, None),
            OverlaySource::GroundTruth => (labels.truth, None),
            OverlaySource::Both | OverlaySource::DiffTruth => (labels.prediction, labels.truth),
            OverlaySource::DiffPrevious => (labels.prediction, labels.previous),
        };
        self.generation += 1;
        let images = Arc::new(extract_slice(
            ras,
            view,
            self.crosshair[fixed],
            a,
            b,
            self.generation,
        ));
        state.images = Some(images.clone());
        state.key = Some(key);
        images
    }
}

/// The pixels of one slice in display order.
pub fn extract_slice(
    ras: &RasVolume,
    view: usize,
    index: usize,
    a: Option<&[u16]>,
    b: Option<&[u16]>,
    generation: u64,
) -> SliceImages {
    let (fixed, col, row) = view_axes(view);
    let dims = ras.dims;
    let (w, h) = (dims[col], dims[row]);
    let stride = [1, dims[0], dims[0] * dims[1]];
    let base = index.min(dims[fixed].saturating_sub(1)) * stride[fixed];
    let mut intensity = Vec::with_capacity(w * h);
    let mut la = vec![0u16; if a.is_some() { w * h } else { 1 }];
    let mut lb = vec![0u16; if b.is_some() { w * h } else { 1 }];
    for r in 0..h {
        let vr = h - 1 - r;
        for c in 0..w {
            let vc = w - 1 - c;
            let i = base + vr * stride[row] + vc * stride[col];
            intensity.push(ras.data[i]);
            let p = r * w + c;
            if let Some(a) = a {
                la[p] = a[i];
            }
            if let Some(b) = b {
                lb[p] = b[i];
            }
        }
    }
    if a.is_none() {
        la = vec![0; w * h];
    }
    if b.is_none() {
        lb = vec![0; w * h];
    }
    SliceImages {
        generation,
        width: w,
        height: h,
        intensity,
        labels_a: la,
        labels_b: lb,
    }
}

/// Everything a view needs from the app to draw.
pub struct ViewInputs<'a> {
    pub ras: &'a RasVolume,
    pub labels: Labels<'a>,
    pub display: &'a mut DisplaySettings,
    pub has_renderer: bool,
    /// The RAS voxel box of the last ROI run (start, size), outlined where the slice cuts it.
    pub roi_box: Option<([usize; 3], [usize; 3])>,
}

/// Draws view `view` in `rect` and handles its mouse and keyboard input.
pub fn view_ui(
    ui: &mut egui::Ui,
    rect: Rect,
    state: &mut VolumeView,
    view: usize,
    inputs: ViewInputs<'_>,
) -> ViewOutput {
    let mut out = ViewOutput::default();
    let ras = inputs.ras;
    let (fixed, col, row) = view_axes(view);
    let dims = ras.dims;
    let id = ui.scope_id().with(("slice-view", view));
    let response = ui.interact(rect, id, Sense::click_and_drag());
    response.widget_info(|| {
        egui::WidgetInfo::labeled(
            egui::Role::Canvas,
            true,
            format!("{} view", VIEW_NAMES[view]),
        )
    });

    // Image placement: fit the physical slice into the rect, then zoom and pan.
    let phys = Vec2::new(
        (dims[col] as f64 * ras.spacing[col]) as f32,
        (dims[row] as f64 * ras.spacing[row]) as f32,
    );
    let title_h = 16.0;
    let area = Rect::from_min_max(rect.min + Vec2::new(0.0, title_h), rect.max);
    let fit = (area.width() / phys.x)
        .min(area.height() / phys.y)
        .max(1e-6);
    let vs = &state.views[view];
    let size = phys * fit * vs.zoom.max(0.05);
    let image_rect = Rect::from_center_size(area.center() + vs.pan, size);

    let to_voxel = |p: Pos2| -> Option<[usize; 3]> {
        let u = (p.x - image_rect.min.x) / image_rect.width();
        let v = (p.y - image_rect.min.y) / image_rect.height();
        if !(0.0..1.0).contains(&u) || !(0.0..1.0).contains(&v) {
            return None;
        }
        let c = ((u * dims[col] as f32) as usize).min(dims[col] - 1);
        let r = ((v * dims[row] as f32) as usize).min(dims[row] - 1);
        let mut voxel = state.crosshair;
        voxel[col] = dims[col] - 1 - c;
        voxel[row] = dims[row] - 1 - r;
        voxel[fixed] = state.crosshair[fixed];
        Some(voxel)
    };

    // Input.
    if let Some(p) = response.hover_pos() {
        out.hovered = to_voxel(p);
    }
    if response.clicked_by(egui::PointerButton::Primary)
        && let Some(p) = response.interact_pointer_pos()
    {
        out.clicked = to_voxel(p);
        if let Some(v) = out.clicked {
            state.crosshair = v;
        }
    } else if response.dragged_by(egui::PointerButton::Primary)
        && let Some(v) = response.interact_pointer_pos().and_then(to_voxel)
    {
        state.crosshair = v;
    }
    if response.dragged_by(egui::PointerButton::Secondary) {
        let d = response.drag_delta();
        inputs.display.width = (inputs.display.width * (d.x * 0.01).exp()).clamp(1e-3, 1e6);
        inputs.display.center -= d.y * inputs.display.width * 0.005;
    }
    if response.dragged_by(egui::PointerButton::Middle) {
        state.views[view].pan += response.drag_delta();
    }
    // Wheel and keys act once per frame: egui may run a frame's ui twice (a discarded pass)
    // with the same input.
    let first_pass = ui.ctx().current_pass_index() == 0;
    if response.hovered() && first_pass {
        // Wheel: one slice per notch; with Ctrl (Cmd), zoom.
        let wheel: Vec<(f32, bool)> = ui.input(|i| {
            i.raw
                .events
                .iter()
                .filter_map(|e| match e {
                    egui::Event::MouseWheel {
                        delta, modifiers, ..
                    } => Some((delta.y, modifiers.command)),
                    _ => None,
                })
                .collect()
        });
        // Some X servers report one notch as two events; at most one slice per frame keeps
        // every slice reachable.
        let (zoom_dy, slice_dy) =
            wheel.iter().fold(
                (0.0, 0.0),
                |(z, s), &(dy, zoom)| {
                    if zoom { (z + dy, s) } else { (z, s + dy) }
                },
            );
        if zoom_dy != 0.0 {
            let v = &mut state.views[view];
            v.zoom = (v.zoom * (zoom_dy.clamp(-3.0, 3.0) * 0.15).exp()).clamp(0.2, 40.0);
        }
        if slice_dy != 0.0 {
            state.step(fixed, slice_dy.signum() as isize, dims);
        }
        let keys = ui.input(|i| {
            [
                i.key_pressed(egui::Key::PageUp),
                i.key_pressed(egui::Key::PageDown),
                i.key_pressed(egui::Key::ArrowLeft),
                i.key_pressed(egui::Key::ArrowRight),
                i.key_pressed(egui::Key::ArrowUp),
                i.key_pressed(egui::Key::ArrowDown),
            ]
        });
        let nothing_focused = ui.memory(|m| m.focused().is_none());
        if nothing_focused {
            if keys[0] {
                state.step(fixed, 1, dims);
            }
            if keys[1] {
                state.step(fixed, -1, dims);
            }
            // Screen axes run against RAS axes.
            if keys[2] {
                state.step(col, 1, dims);
            }
            if keys[3] {
                state.step(col, -1, dims);
            }
            if keys[4] {
                state.step(row, 1, dims);
            }
            if keys[5] {
                state.step(row, -1, dims);
            }
        }
    }

    // Drawing.
    let painter = ui.painter_at(rect);
    // Images read best on black whatever the theme.
    let bg = Color32::from_gray(12);
    painter.rect_filled(rect, 0.0, bg);
    let overlay = inputs.display.overlay;
    let images = state.slice_images(view, ras, &inputs.labels, overlay);
    if inputs.has_renderer {
        let d = &*inputs.display;
        let mut class_colors = [[0.0f32; 4]; SHADER_CLASSES];
        let mut class_mask = [0u32; SHADER_CLASSES / 32];
        for (k, c) in class_colors.iter_mut().enumerate() {
            let color = class_color(k);
            *c = [
                color.r() as f32 / 255.0,
                color.g() as f32 / 255.0,
                color.b() as f32 / 255.0,
                1.0,
            ];
            if d.class_visible.get(k).copied().unwrap_or(true) {
                class_mask[k / 32] |= 1 << (k % 32);
            }
        }
        let background = bg.to_normalized_gamma_f32();
        let uniforms = SliceUniforms {
            image_min: [0.0; 2],
            image_size: [1.0; 2],
            window_lo: d.center - d.width / 2.0,
            window_hi: d.center + d.width / 2.0,
            colormap: d.colormap,
            overlay: {
                let missing_prediction = inputs.labels.prediction.is_none()
                    && matches!(
                        overlay,
                        OverlaySource::Prediction
                            | OverlaySource::Both
                            | OverlaySource::DiffPrevious
                    );
                let missing_truth =
                    overlay == OverlaySource::GroundTruth && inputs.labels.truth.is_none();
                if missing_prediction || missing_truth {
                    0
                } else {
                    overlay.shader_code()
                }
            },
            opacity: d.opacity,
            outline: d.outline as u32,
            class_mask,
            _pad0: 0,
            _pad1: 0,
            background,
            class_colors,
        };
        painter.add(eframe::egui_wgpu::Callback::new_paint_callback(
            area,
            SliceCallback {
                view,
                images,
                uniforms,
                image_rect,
            },
        ));
    } else {
        painter.text(
            area.center(),
            egui::Align2::CENTER_CENTER,
            "Slices are drawn by the wgpu renderer,\nwhich is not active here.",
            egui::FontId::proportional(12.0),
            ui.visuals().weak_text_color(),
        );
    }

    // Crosshair.
    let cross = Pos2::new(
        image_rect.min.x
            + (dims[col] - 1 - state.crosshair[col]) as f32 * image_rect.width() / dims[col] as f32
            + image_rect.width() / dims[col] as f32 / 2.0,
        image_rect.min.y
            + (dims[row] - 1 - state.crosshair[row]) as f32 * image_rect.height()
                / dims[row] as f32
            + image_rect.height() / dims[row] as f32 / 2.0,
    );
    let stroke = Stroke::new(1.0, Color32::from_rgba_unmultiplied(255, 220, 0, 150));
    let clip = painter.with_clip_rect(area);
    clip.line_segment(
        [
            Pos2::new(area.min.x, cross.y),
            Pos2::new(area.max.x, cross.y),
        ],
        stroke,
    );
    clip.line_segment(
        [
            Pos2::new(cross.x, area.min.y),
            Pos2::new(cross.x, area.max.y),
        ],
        stroke,
    );

    // The last ROI run's box, where this slice cuts it.
    if let Some((start, size)) = inputs.roi_box
        && (start[fixed]..start[fixed] + size[fixed]).contains(&state.crosshair[fixed])
    {
        let px = |axis: usize, v: usize, extent: f32, origin: f32| {
            origin + (dims[axis] - v) as f32 * extent / dims[axis] as f32
        };
        let x0 = px(
            col,
            start[col] + size[col],
            image_rect.width(),
            image_rect.min.x,
        );
        let x1 = px(col, start[col], image_rect.width(), image_rect.min.x);
        let y0 = px(
            row,
            start[row] + size[row],
            image_rect.height(),
            image_rect.min.y,
        );
        let y1 = px(row, start[row], image_rect.height(), image_rect.min.y);
        clip.rect_stroke(
            Rect::from_min_max(Pos2::new(x0, y0), Pos2::new(x1, y1)),
            0.0,
            Stroke::new(1.5, Color32::from_rgb(0, 220, 255)),
            egui::StrokeKind::Middle,
        );
    }

    // Title and orientation letters.
    let text = Color32::from_gray(220);
    painter.text(
        rect.min + Vec2::new(4.0, 1.0),
        egui::Align2::LEFT_TOP,
        format!(
            "{}  {} = {} (0..{})",
            VIEW_NAMES[view],
            ["x", "y", "z"][fixed],
            state.crosshair[fixed],
            dims[fixed] - 1
        ),
        egui::FontId::proportional(12.0),
        text,
    );
    let letters = edge_letters(view);
    let font = egui::FontId::proportional(12.0);
    let orange = Color32::from_rgb(255, 170, 60);
    painter.text(
        Pos2::new(area.min.x + 3.0, area.center().y),
        egui::Align2::LEFT_CENTER,
        letters[0],
        font.clone(),
        orange,
    );
    painter.text(
        Pos2::new(area.max.x - 3.0, area.center().y),
        egui::Align2::RIGHT_CENTER,
        letters[1],
        font.clone(),
        orange,
    );
    painter.text(
        Pos2::new(area.center().x, area.min.y + 2.0),
        egui::Align2::CENTER_TOP,
        letters[2],
        font.clone(),
        orange,
    );
    painter.text(
        Pos2::new(area.center().x, area.max.y - 2.0),
        egui::Align2::CENTER_BOTTOM,
        letters[3],
        font,
        orange,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ras(dims: [usize; 3]) -> RasVolume {
        let n: usize = dims.iter().product();
        RasVolume {
            data: (0..n).map(|i| i as f32).collect(),
            dims,
            spacing: [1.0; 3],
            world_from_voxel: crate::volume::IDENTITY_AFFINE,
        }
    }

    #[test]
    fn axial_slice_puts_right_on_the_left_and_anterior_on_top() {
        let v = ras([4, 3, 2]);
        let s = extract_slice(&v, 0, 1, None, None, 1);
        assert_eq!((s.width, s.height), (4, 3));
        // Top-left pixel: largest x (right) and largest y (anterior) at z = 1.
        assert_eq!(s.intensity[0], (3 + 4 * (2 + 3)) as f32);
        // Bottom-right pixel: x = 0, y = 0, z = 1.
        assert_eq!(s.intensity[11], 12.0);
    }

    #[test]
    fn sagittal_and_coronal_slices_have_superior_on_top() {
        let v = ras([4, 3, 2]);
        let s = extract_slice(&v, 2, 0, None, None, 1);
        assert_eq!((s.width, s.height), (3, 2));
        assert_eq!(s.intensity[0], (4 * (2 + 3)) as f32); // x=0, y=2 (anterior), z=1
        let c = extract_slice(&v, 1, 2, None, None, 1);
        assert_eq!((c.width, c.height), (4, 2));
        assert_eq!(c.intensity[0], (3 + 4 * (2 + 3)) as f32); // x=3, y=2, z=1
    }

    #[test]
    fn labels_follow_the_same_layout() {
        let v = ras([4, 3, 2]);
        let labels: Vec<u16> = (0..24).map(|i| (i % 5) as u16).collect();
        let s = extract_slice(&v, 0, 1, Some(&labels), None, 1);
        for (p, &l) in s.labels_a.iter().enumerate() {
            assert_eq!(l, (s.intensity[p] as usize % 5) as u16);
        }
        assert!(s.labels_b.iter().all(|&l| l == 0));
    }
}
