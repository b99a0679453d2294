//! The desktop explorer (eframe/egui with the wgpu renderer).
//!
//! The UI thread only draws and reacts; reading files, loading checkpoints, inference and
//! channel weights run on worker threads ([`worker`]). Slices are drawn by a WGSL shader
//! ([`render`]). The architecture grid is [`grid`], the Figure 7 panel's numbers and plot are
//! [`fig7`].

pub mod fig7;
pub mod grid;
pub mod render;
pub mod view;
pub mod worker;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use egui::{Color32, RichText, Vec2};

use crate::arch::{self, ArchCode};
use crate::device::DeviceChoice;
use crate::model::WeightMode;

use grid::ArchEditor;
use view::{DisplaySettings, OverlaySource, VolumeView, WindowPreset};
use worker::{
    LoadedLabel, LoadedVolume, ModelInfo, PatchKind, PatchSpec, PatchWeights, Region, Reply,
    Request, Worker,
};

/// The smallest window (points) in which the panels and the slice views fit.
pub const MIN_WINDOW: [f32; 2] = [1200.0, 720.0];

/// What to open at start-up.
#[derive(Clone, Debug, Default)]
pub struct StartOptions {
    pub volume: Option<PathBuf>,
    pub label: Option<PathBuf>,
    /// A checkpoint (ours, or a MONAI DiNTS state dict); the bundled demo super-net when
    /// `None`.
    pub checkpoint: Option<PathBuf>,
    /// An architecture file (our JSON or MONAI's .pth), needed with a MONAI instance.
    pub arch: Option<PathBuf>,
    /// After the files are loaded, the first inference and the Figure 7 patches are done,
    /// write one frame of the window to this PNG and exit.
    pub screenshot: Option<PathBuf>,
    pub device: Option<DeviceChoice>,
    /// Window size in points.
    pub window_size: Option<[f32; 2]>,
}

/// Settings kept between runs.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Settings {
    pub dark: bool,
    pub recent: Vec<(RecentKind, PathBuf)>,
    pub display: DisplaySettings,
    pub window_preset: Option<WindowPreset>,
    pub overlap: f32,
    pub patches_per_group: usize,
    pub layers: String,
    pub device: DeviceChoice,
    pub show_log: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            dark: true,
            recent: Vec::new(),
            display: DisplaySettings::default(),
            window_preset: None,
            overlap: 0.5,
            patches_per_group: 4,
            layers: "1, 4, 12".into(),
            device: DeviceChoice::Auto,
            show_log: false,
        }
    }
}

/// Kinds of files in the recent list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum RecentKind {
    Volume,
    Label,
    Checkpoint,
    Architecture,
}

const SETTINGS_KEY: &str = "hypersegnas-settings";
const MAX_RECENT: usize = 10;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Level {
    Info,
    Warn,
    Error,
}

struct LogLine {
    at: Instant,
    level: Level,
    text: String,
}

/// What a chosen path is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FileAction {
    /// Any supported file, by its kind.
    OpenAny,
    Open(RecentKind),
    SavePrediction,
    ExportArch {
        monai: bool,
    },
    ExportFigure7(&'static str),
}

impl FileAction {
    fn is_save(self) -> bool {
        matches!(
            self,
            Self::SavePrediction | Self::ExportArch { .. } | Self::ExportFigure7(_)
        )
    }

    fn title(self) -> &'static str {
        match self {
            Self::OpenAny => "Open a file",
            Self::Open(RecentKind::Volume) => "Open a volume",
            Self::Open(RecentKind::Label) => "Open ground-truth labels",
            Self::Open(RecentKind::Checkpoint) => "Open a checkpoint",
            Self::Open(RecentKind::Architecture) => "Import an architecture",
            Self::SavePrediction => "Save the prediction",
            Self::ExportArch { monai: false } => "Export the architecture (JSON)",
            Self::ExportArch { monai: true } => "Export the architecture (MONAI .pth)",
            Self::ExportFigure7(_) => "Export Figure 7",
        }
    }

    fn filter(self) -> (&'static str, &'static [&'static str]) {
        match self {
            Self::OpenAny => ("Supported", &[]),
            Self::Open(RecentKind::Volume | RecentKind::Label) | Self::SavePrediction => {
                ("NIfTI", &["nii", "gz", "hdr", "img"])
            }
            Self::Open(RecentKind::Checkpoint) => ("Checkpoint", &["safetensors", "pt", "pth"]),
            Self::Open(RecentKind::Architecture) => ("Architecture", &["json", "pth", "pt"]),
            Self::ExportArch { monai: false } => ("JSON", &["json"]),
            Self::ExportArch { monai: true } => ("MONAI architecture", &["pth"]),
            Self::ExportFigure7("png") => ("PNG", &["png"]),
            Self::ExportFigure7("svg") => ("SVG", &["svg"]),
            Self::ExportFigure7(_) => ("CSV", &["csv"]),
        }
    }

    /// A suggested file name, beside the volume for outputs.
    fn default_name(self, app: &ExplorerApp) -> Option<String> {
        let dir = app
            .volume
            .as_ref()
            .and_then(|v| v.path.canonicalize().ok())
            .and_then(|p| p.parent().map(Path::to_path_buf));
        let stem = app
            .volume
            .as_ref()
            .and_then(|v| v.path.file_name())
            .map(|n| {
                n.to_string_lossy()
                    .replace(".nii.gz", "")
                    .replace(".nii", "")
            });
        let name = match self {
            Self::SavePrediction => {
                format!("{}_prediction.nii.gz", stem.as_deref().unwrap_or("volume"))
            }
            Self::ExportArch { monai: false } => "arch.json".into(),
            Self::ExportArch { monai: true } => "arch_code.pth".into(),
            Self::ExportFigure7(what) => format!("figure7.{what}"),
            _ => return None,
        };
        Some(match dir {
            Some(d) if self.is_save() => d.join(name).display().to_string(),
            _ => name,
        })
    }
}

/// A typed-path request (when native dialogs are unavailable).
struct PathPrompt {
    action: FileAction,
    text: String,
}

/// Whether rfd can show native dialogs: on Linux and the BSDs it talks to the desktop portal
/// over the D-Bus session bus.
fn native_dialogs_available() -> bool {
    if cfg!(any(
        target_os = "linux",
        target_os = "freebsd",
        target_os = "openbsd",
        target_os = "netbsd"
    )) {
        std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some_and(|v| !v.is_empty())
    } else {
        true
    }
}

/// Where the start-up sequence is (for `--screenshot` and the first automatic run).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Startup {
    /// Waiting for the requested files.
    Loading,
    /// The first inference is running.
    Segmenting,
    /// Channel weights of the automatic Figure 7 patches are being computed.
    Weights,
    /// Letting a few frames draw the final state before the screenshot.
    Settling(u32),
    /// Screenshot requested.
    Capturing,
    Done,
}

/// The Figure 7 panel's state.
pub struct Fig7State {
    pub per_group: usize,
    pub from_truth: bool,
    pub layers_text: String,
    pub pick_mode: bool,
    pub patches: Vec<PatchSpec>,
    pub results: Vec<PatchWeights>,
    texture: Option<egui::TextureHandle>,
    texture_key: Option<([u32; 2], u64, bool)>,
    generation: u64,
    /// Lines in the plot as last drawn.
    pub plotted_lines: usize,
    summary: Option<fig7::Summary>,
    /// Architecture the results were computed with.
    results_arch: Option<ArchCode>,
}

impl Fig7State {
    /// Parses the layer list ("1, 4, 12"), 1-based, into 0-based indices below `layers`.
    pub fn parse_layers(text: &str, layers: usize) -> Result<Vec<usize>, String> {
        let mut out = Vec::new();
        for part in text.split([',', ' ']).filter(|s| !s.is_empty()) {
            let n: usize = part
                .parse()
                .map_err(|_| format!("'{part}' is not a layer number"))?;
            if n == 0 || n > layers {
                return Err(format!("layer {n} is outside 1..{layers}"));
            }
            if !out.contains(&(n - 1)) {
                out.push(n - 1);
            }
        }
        if out.is_empty() {
            return Err("name at least one layer".into());
        }
        Ok(out)
    }
}

/// The explorer.
pub struct ExplorerApp {
    worker: Worker,
    settings: Settings,
    volume: Option<LoadedVolume>,
    truth: Option<LoadedLabel>,
    prediction: Option<Arc<Vec<u16>>>,
    previous: Option<Arc<Vec<u16>>>,
    labels_generation: u64,
    last_run: Option<RunSummary>,
    /// Why the last inference stopped without a result (cancelled, failed).
    run_note: Option<String>,
    model: Option<ModelInfo>,
    editor: Option<ArchEditor>,
    checkpoint_arch: Option<ArchCode>,
    /// The last architecture file opened, offered to a MONAI instance loaded next.
    arch_file: Option<PathBuf>,
    mode: WeightMode,
    roi_run: bool,
    view: Option<VolumeView>,
    hovered: Option<[usize; 3]>,
    pub fig7: Fig7State,
    log: Vec<LogLine>,
    toasts: Vec<LogLine>,
    show_help: bool,
    has_renderer: bool,
    startup: Startup,
    start: StartOptions,
    /// Files still to arrive at start-up.
    awaiting: Vec<RecentKind>,
    exit_code: Arc<AtomicI32>,
    prompt: Option<PathPrompt>,
    warned_no_dialogs: bool,
    device_note: String,
    random_seed: u64,
}

struct RunSummary {
    elapsed: Duration,
    region: Region,
    /// The RAS voxel box that was predicted (start, size).
    bounds: ([usize; 3], [usize; 3]),
    changed: Option<usize>,
    dice: Option<Vec<f64>>,
    mode: WeightMode,
}

impl ExplorerApp {
    /// Builds the app inside eframe (or egui_kittest's eframe harness).
    pub fn new(
        cc: &eframe::CreationContext<'_>,
        start: StartOptions,
        exit_code: Arc<AtomicI32>,
    ) -> Self {
        let has_renderer = if let Some(rs) = cc.wgpu_render_state.as_ref() {
            render::SliceRenderer::install(rs);
            true
        } else {
            false
        };
        let mut settings: Settings = cc
            .storage
            .and_then(|s| eframe::get_value(s, SETTINGS_KEY))
            .unwrap_or_default();
        if start.screenshot.is_some() {
            // Reproducible screenshots: ignore the user's saved look.
            settings = Settings::default();
        }
        cc.egui_ctx.set_visuals(if settings.dark {
            egui::Visuals::dark()
        } else {
            egui::Visuals::light()
        });
        let ctx = cc.egui_ctx.clone();
        let choice = start.device.unwrap_or(settings.device);
        let worker = Worker::start(choice, Arc::new(move || ctx.request_repaint()));
        let mut app = Self {
            worker,
            volume: None,
            truth: None,
            prediction: None,
            previous: None,
            labels_generation: 0,
            last_run: None,
            run_note: None,
            model: None,
            editor: None,
            checkpoint_arch: None,
            arch_file: start.arch.clone(),
            mode: WeightMode::Man,
            roi_run: false,
            view: None,
            hovered: None,
            fig7: Fig7State {
                per_group: settings.patches_per_group.clamp(1, 32),
                from_truth: true,
                layers_text: settings.layers.clone(),
                pick_mode: false,
                patches: Vec::new(),
                results: Vec::new(),
                texture: None,
                texture_key: None,
                generation: 0,
                plotted_lines: 0,
                summary: None,
                results_arch: None,
            },
            settings,
            log: Vec::new(),
            toasts: Vec::new(),
            show_help: false,
            has_renderer,
            startup: Startup::Loading,
            start: start.clone(),
            awaiting: Vec::new(),
            exit_code,
            prompt: None,
            warned_no_dialogs: false,
            device_note: String::new(),
            random_seed: 1,
        };
        app.awaiting.push(RecentKind::Checkpoint);
        app.worker.send(Request::LoadCheckpoint {
            path: start.checkpoint.clone(),
            arch: start.arch.clone(),
        });
        if let Some(path) = &start.volume {
            app.awaiting.push(RecentKind::Volume);
            app.open_volume(path.clone());
        }
        if let Some(label) = &start.label {
            if start.volume.is_some() {
                app.awaiting.push(RecentKind::Label);
            } else {
                app.start.label = None;
                app.fail_load(format!(
                    "{}: a label map needs a volume to lie on; open the volume first",
                    label.display()
                ));
            }
        }
        if !has_renderer {
            app.notify(
                Level::Warn,
                "the wgpu renderer is not active: slices cannot be drawn".into(),
            );
        }
        app
    }

    /// The current architecture code, if a checkpoint is loaded.
    pub fn arch(&self) -> Option<&ArchCode> {
        self.editor.as_ref().map(|e| e.code())
    }

    /// The settings (display look, overlap, recent files), for scripted use and tests.
    pub fn settings_mut(&mut self) -> &mut Settings {
        &mut self.settings
    }

    /// Replaces the architecture code (one undoable step), as choosing a preset does.
    pub fn set_arch(&mut self, code: ArchCode) {
        if let Some(e) = self.editor.as_mut() {
            e.replace(code);
            self.arch_changed();
        }
    }

    /// Whether the Run buttons are enabled, and why not.
    pub fn run_blocker(&self) -> Option<String> {
        if self.model.is_none() {
            return Some("load a checkpoint".into());
        }
        if self.volume.is_none() {
            return Some("open a volume".into());
        }
        if let Some(editor) = &self.editor {
            let problems = editor.problems();
            if !problems.is_empty() {
                return Some(format!("invalid architecture: {}", problems.join("; ")));
            }
            if let Some(reason) = self
                .model
                .as_ref()
                .and_then(|m| instance_mismatch(m, editor.code()))
            {
                return Some(reason);
            }
        }
        None
    }

    /// Whether work is queued or running on the model thread.
    pub fn busy(&self) -> bool {
        self.worker.pending > 0
    }

    /// Lines in the Figure 7 plot as last drawn.
    pub fn plotted_lines(&self) -> usize {
        self.fig7.plotted_lines
    }

    /// Number of Figure 7 patches with computed weights.
    pub fn weights_ready(&self) -> usize {
        self.fig7.results.len()
    }

    /// The loaded checkpoint's description.
    pub fn model_info(&self) -> Option<&ModelInfo> {
        self.model.as_ref()
    }

    /// The volume's RAS dims, if loaded.
    pub fn volume_dims(&self) -> Option<[usize; 3]> {
        self.volume.as_ref().map(|v| v.ras.dims)
    }

    /// The current prediction on the RAS grid, if any.
    pub fn prediction(&self) -> Option<&[u16]> {
        self.prediction.as_deref().map(|p| p.as_slice())
    }

    /// Sets the crosshair (RAS voxel), for scripted use and tests.
    pub fn set_crosshair(&mut self, voxel: [usize; 3]) {
        if let (Some(view), Some(v)) = (self.view.as_mut(), self.volume.as_ref()) {
            view.crosshair = [0, 1, 2].map(|a| voxel[a].min(v.ras.dims[a] - 1));
        }
    }

    /// Adds a Figure 7 patch centred at a RAS voxel and recomputes the weights.
    pub fn add_patch(&mut self, center: [usize; 3], kind: PatchKind) {
        self.fig7.patches.push(PatchSpec { center, kind });
        self.request_weights();
    }

    fn notify(&mut self, level: Level, text: String) {
        match level {
            Level::Error => tracing::error!("{text}"),
            Level::Warn => tracing::warn!("{text}"),
            Level::Info => tracing::info!("{text}"),
        }
        let line = || LogLine {
            at: Instant::now(),
            level,
            text: text.clone(),
        };
        if level != Level::Info {
            self.toasts.push(line());
        }
        self.log.push(line());
        if self.log.len() > 2000 {
            self.log.drain(..500);
        }
    }

    fn remember(&mut self, kind: RecentKind, path: &Path) {
        // Absolute, so the entry works from any working directory.
        let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        self.settings
            .recent
            .retain(|(k, p)| !(*k == kind && *p == path));
        self.settings.recent.insert(0, (kind, path));
        self.settings.recent.truncate(MAX_RECENT);
    }

    fn open_volume(&mut self, path: PathBuf) {
        self.notify(Level::Info, format!("reading {}", path.display()));
        self.worker.load_volume(path);
    }

    fn open_label(&mut self, path: PathBuf) {
        match self.volume.as_ref().map(|v| v.ras.clone()) {
            Some(ras) => {
                self.notify(Level::Info, format!("reading labels {}", path.display()));
                self.worker.load_label(path, ras);
            }
            None => self.notify(
                Level::Error,
                format!("{}: open a volume before its label map", path.display()),
            ),
        }
    }

    fn open_checkpoint(&mut self, path: Option<PathBuf>) {
        if self.busy() {
            self.worker.cancel();
        }
        // A MONAI instance needs its architecture file; ours store theirs.
        let arch = path
            .as_ref()
            .filter(|p| !crate::monai::open::is_native(p))
            .and(self.arch_file.clone());
        self.worker.send(Request::LoadCheckpoint { path, arch });
    }

    fn open_arch(&mut self, path: &Path) {
        self.arch_file = Some(path.to_path_buf());
        let Some(space) = self.editor.as_ref().map(|e| e.space.clone()) else {
            self.notify(
                Level::Info,
                format!(
                    "{}: kept for the next checkpoint (load a checkpoint to edit it)",
                    path.display()
                ),
            );
            return;
        };
        match crate::monai::open::read_arch_file(path) {
            Ok(code) => {
                if code.num_layers() != space.num_layers || code.num_depths() != space.num_depths {
                    self.notify(
                        Level::Error,
                        format!(
                            "{}: a {} x {} code does not fit this network ({} layers, {} levels)",
                            path.display(),
                            code.num_layers(),
                            code.num_depths(),
                            space.num_layers,
                            space.num_depths
                        ),
                    );
                    return;
                }
                if let Some(editor) = self.editor.as_mut() {
                    editor.replace(code);
                }
                self.remember(RecentKind::Architecture, path);
                self.notify(Level::Info, format!("architecture from {}", path.display()));
                self.arch_changed();
            }
            Err(e) => self.notify(Level::Error, e),
        }
    }

    /// Opens a file by its kind: checkpoints, architecture files, and NIfTI volumes (a label
    /// map when it has an integer type and the loaded volume's grid).
    pub fn open_any(&mut self, path: PathBuf) {
        let name = path.to_string_lossy().to_ascii_lowercase();
        if name.ends_with(".safetensors") {
            self.open_checkpoint(Some(path));
        } else if name.ends_with(".json") {
            self.open_arch(&path);
        } else if name.ends_with(".pt") || name.ends_with(".pth") {
            // MONAI's architecture files and state dicts share the extensions.
            if crate::monai::import::read_arch_pth(&path).is_ok() {
                self.open_arch(&path);
            } else {
                self.open_checkpoint(Some(path));
            }
        } else if name.ends_with(".nii")
            || name.ends_with(".nii.gz")
            || name.ends_with(".hdr")
            || name.ends_with(".hdr.gz")
            || name.ends_with(".img")
            || name.ends_with(".img.gz")
        {
            // A label map: the loaded volume's grid size and an unsigned integer type, or
            // any integer type with a name that says so (CTs are often int16 too).
            let named_label = ["seg", "label", "mask"].iter().any(|w| name.contains(w));
            let is_label = self.volume.as_ref().is_some_and(|v| {
                crate::volume::read_header(&path).is_ok_and(|h| {
                    use crate::volume::DataType as D;
                    let dims = [
                        h.dim[1].max(1) as usize,
                        h.dim[2].max(1) as usize,
                        h.dim[3].max(1) as usize,
                    ];
                    let same_size =
                        dims.iter().product::<usize>() == v.ras.dims.iter().product::<usize>();
                    let label_type = match D::from_code(h.datatype) {
                        Some(D::U8 | D::U16 | D::U32) => true,
                        Some(D::I8 | D::I16 | D::I32 | D::I64 | D::U64) => named_label,
                        _ => false,
                    };
                    same_size && label_type
                })
            });
            if is_label {
                self.open_label(path);
            } else {
                self.open_volume(path);
            }
        } else {
            self.notify(
                Level::Error,
                format!(
                    "{}: unknown file type (open .nii/.nii.gz/.hdr volumes, .safetensors/.pt/.pth checkpoints or .json/.pth architectures)",
                    path.display()
                ),
            );
        }
    }

    fn arch_changed(&mut self) {
        if !self.fig7.patches.is_empty() && self.run_blocker().is_none() {
            self.request_weights();
        }
    }

    fn run(&mut self, roi: bool) {
        if let Some(reason) = self.run_blocker() {
            self.notify(Level::Error, format!("cannot run: {reason}"));
            return;
        }
        let (Some(v), Some(editor), Some(view)) = (&self.volume, &self.editor, &self.view) else {
            return;
        };
        let region = if roi {
            Region::Roi(view.crosshair)
        } else {
            Region::Whole
        };
        let request = Request::Segment {
            ras: v.ras.clone(),
            job: worker::SegmentJob {
                arch: editor.code().clone(),
                mode: self.mode,
                region,
                overlap: self.settings.overlap,
                previous: self.prediction.clone(),
                truth: self.truth.as_ref().map(|t| t.labels.clone()),
            },
        };
        self.worker.send(request);
    }

    fn request_weights(&mut self) {
        let (Some(v), Some(editor)) = (&self.volume, &self.editor) else {
            return;
        };
        if self.fig7.patches.is_empty() {
            return;
        }
        if !editor.problems().is_empty() {
            return;
        }
        let request = Request::ChannelWeights {
            ras: v.ras.clone(),
            arch: editor.code().clone(),
            patches: self.fig7.patches.clone(),
        };
        self.worker.send(request);
    }

    /// Picks N foreground and N background patch centres from the ground truth (or the
    /// prediction), spread over the candidates with a fixed seed.
    fn sample_patches(&mut self) {
        let Some(v) = &self.volume else {
            self.notify(Level::Error, "open a volume first".into());
            return;
        };
        let labels = if self.fig7.from_truth {
            self.truth
                .as_ref()
                .map(|t| t.labels.clone())
                .or(self.prediction.clone())
        } else {
            self.prediction
                .clone()
                .or(self.truth.as_ref().map(|t| t.labels.clone()))
        };
        let Some(labels) = labels else {
            self.notify(
                Level::Error,
                "sampling patches needs a prediction or a ground-truth label map".into(),
            );
            return;
        };
        let n = self.fig7.per_group;
        // Foreground means the checkpoint's classes: a multi-organ label map (TotalSegmentator's
        // 117 labels, say) counts only the labels the network predicts (1 .. classes - 1).
        let classes = self
            .model
            .as_ref()
            .map_or(u16::MAX as usize, |m| m.config.network.num_classes);
        let fg_max = (classes.saturating_sub(1)).clamp(1, u16::MAX as usize) as u16;
        let (lo, _) = v.percentiles;
        let inside_body = lo + 0.15 * (v.percentiles.1 - lo);
        let step = (labels.len() / 400_000).max(1);
        let mut fg = Vec::new();
        let mut bg = Vec::new();
        for i in (0..labels.len()).step_by(step) {
            if labels[i] != 0 && labels[i] <= fg_max {
                fg.push(i);
            } else if v.ras.data[i] > inside_body {
                bg.push(i);
            }
        }
        let pick = |cands: &[usize], n: usize| -> Vec<usize> {
            use rand::SeedableRng;
            use rand::seq::SliceRandom;
            let mut rng = rand::rngs::StdRng::seed_from_u64(7);
            let mut c = cands.to_vec();
            c.shuffle(&mut rng);
            c.truncate(n);
            c
        };
        let dims = v.ras.dims;
        let voxel = |i: usize| {
            [
                i % dims[0],
                (i / dims[0]) % dims[1],
                i / (dims[0] * dims[1]),
            ]
        };
        self.fig7.patches = pick(&fg, n)
            .into_iter()
            .map(|i| PatchSpec {
                center: voxel(i),
                kind: PatchKind::Foreground,
            })
            .chain(pick(&bg, n).into_iter().map(|i| PatchSpec {
                center: voxel(i),
                kind: PatchKind::Background,
            }))
            .collect();
        if fg.is_empty() {
            self.notify(
                Level::Warn,
                "no foreground voxels to sample: only background patches".into(),
            );
        }
        if bg.is_empty() {
            self.notify(
                Level::Warn,
                "no background voxels inside the body to sample: only foreground patches".into(),
            );
        }
        self.request_weights();
    }

    fn handle_replies(&mut self, ctx: &egui::Context) {
        for reply in self.worker.poll() {
            match reply {
                Reply::Volume(result) => {
                    self.awaiting.retain(|k| *k != RecentKind::Volume);
                    match result {
                        Ok(v) => {
                            for w in &v.warnings {
                                self.notify(Level::Warn, w.clone());
                            }
                            self.notify(
                                Level::Info,
                                format!(
                                    "{}: {} x {} x {} voxels, spacing {:.2} x {:.2} x {:.2} mm (RAS)",
                                    v.path.display(),
                                    v.ras.dims[0],
                                    v.ras.dims[1],
                                    v.ras.dims[2],
                                    v.ras.spacing[0],
                                    v.ras.spacing[1],
                                    v.ras.spacing[2]
                                ),
                            );
                            let p = v.path.clone();
                            self.remember(RecentKind::Volume, &p);
                            self.view = Some(VolumeView::new(v.ras.dims));
                            // Each volume starts from its own data: a CT window for
                            // Hounsfield-like ranges, else percentiles.
                            let preset = if v.range.0 < -500.0 && v.range.1 > 200.0 {
                                WindowPreset::Abdomen
                            } else {
                                WindowPreset::Auto
                            };
                            self.settings.window_preset = None;
                            self.settings.display.class_visible =
                                vec![true; render::SHADER_CLASSES];
                            let (c, w) = preset.window(v.percentiles);
                            self.settings.display.center = c;
                            self.settings.display.width = w;
                            self.volume = Some(v);
                            self.truth = None;
                            self.prediction = None;
                            self.previous = None;
                            self.last_run = None;
                            self.fig7.patches.clear();
                            self.fig7.results.clear();
                            self.labels_generation += 1;
                            if let Some(label) = self.start.label.take() {
                                self.open_label(label);
                            }
                            if self.startup == Startup::Done && self.model.is_some() {
                                // A newly opened volume gets a first whole-volume run.
                                self.run(false);
                            }
                        }
                        Err(e) => {
                            // A start-up label map has nothing to attach to now.
                            if self.start.label.take().is_some() {
                                self.awaiting.retain(|k| *k != RecentKind::Label);
                            }
                            self.fail_load(e);
                        }
                    }
                }
                Reply::Label(result) => {
                    self.awaiting.retain(|k| *k != RecentKind::Label);
                    match result {
                        Ok(l) if !self.is_current(&l.image) => {
                            self.notify(
                                Level::Warn,
                                format!(
                                    "{}: ignored, another volume was opened meanwhile",
                                    l.path.display()
                                ),
                            );
                        }
                        Ok(l) => {
                            self.notify(
                                Level::Info,
                                format!("labels {} (max label {})", l.path.display(), l.max_label),
                            );
                            let p = l.path.clone();
                            self.remember(RecentKind::Label, &p);
                            self.truth = Some(l);
                            self.settings.display.class_visible =
                                vec![true; render::SHADER_CLASSES];
                            self.labels_generation += 1;
                            if self.prediction.is_none() {
                                self.settings.display.overlay = OverlaySource::GroundTruth;
                            }
                        }
                        Err(e) => self.fail_load(e),
                    }
                }
                Reply::Checkpoint(result) => {
                    self.awaiting.retain(|k| *k != RecentKind::Checkpoint);
                    match result {
                        Ok(info) => {
                            let space = info.config.network.space.clone();
                            self.checkpoint_arch = info.own_arch.then(|| info.arch.clone());
                            self.editor = Some(ArchEditor::new(space, info.arch.clone()));
                            if let Some(kind) = &info.monai {
                                self.notify(Level::Info, format!("MONAI DiNTS state dict: {kind}"));
                            }
                            self.mode = if info.config.network.has_man() {
                                WeightMode::Man
                            } else {
                                WeightMode::Plain
                            };
                            self.notify(
                                Level::Info,
                                format!(
                                    "checkpoint {}: {} classes ({}), {:.1} M parameters",
                                    info.source,
                                    info.config.network.num_classes,
                                    info.config.class_names.join(", "),
                                    info.num_params as f64 / 1e6
                                ),
                            );
                            if let Some(p) = info.path.as_ref().and_then(|p| p.canonicalize().ok())
                            {
                                self.remember(RecentKind::Checkpoint, &p);
                            }
                            self.model = Some(info);
                            self.fig7.results.clear();
                        }
                        Err(e) => self.fail_load(e),
                    }
                }
                Reply::Segmented(Ok(out)) if !self.is_current(&out.ras) => {
                    self.notify(
                        Level::Info,
                        "dropped a result computed for the previous volume".into(),
                    );
                }
                Reply::Segmented(result) => match result {
                    Ok(out) => {
                        self.run_note = None;
                        self.previous = self.prediction.take();
                        self.prediction = Some(Arc::new(out.labels));
                        self.labels_generation += 1;
                        if matches!(
                            self.settings.display.overlay,
                            OverlaySource::None | OverlaySource::GroundTruth
                        ) {
                            self.settings.display.overlay = OverlaySource::Prediction;
                        }
                        let whole_region = self
                            .volume
                            .as_ref()
                            .is_some_and(|v| out.region.1 == v.ras.dims);
                        let whole = whole_region;
                        if whole && self.roi_run {
                            self.notify(
                                Level::Info,
                                "the ROI is as large as the volume: the whole volume was segmented"
                                    .into(),
                            );
                        }
                        let what = if whole {
                            "whole volume".to_string()
                        } else {
                            format!("ROI of {:?} voxels at {:?}", out.region.1, out.region.0)
                        };
                        let _ = out.arch;
                        let mut msg =
                            format!("segmented the {what} in {:.1} s", out.elapsed.as_secs_f64());
                        if let Some(c) = out.changed {
                            msg.push_str(&format!("; {c} voxels changed"));
                        }
                        self.notify(Level::Info, msg);
                        self.last_run = Some(RunSummary {
                            bounds: out.region,
                            elapsed: out.elapsed,
                            region: if whole {
                                Region::Whole
                            } else {
                                Region::Roi(out.region.0)
                            },
                            changed: out.changed,
                            dice: out.dice,
                            mode: out.mode,
                        });
                    }
                    Err(e) => {
                        self.run_note = Some(if e == "cancelled" {
                            "The last run was cancelled.".to_string()
                        } else {
                            format!("The last run failed: {e}")
                        });
                        if e == "cancelled" {
                            self.notify(Level::Info, "cancelled".into());
                        } else {
                            self.notify(Level::Error, format!("inference failed: {e}"));
                        }
                        if self.startup == Startup::Segmenting {
                            self.startup = Startup::Settling(0);
                        }
                    }
                },
                Reply::Weights(ras, _) if !self.is_current(&ras) => {}
                Reply::Weights(_, result) => match result {
                    Ok((arch, weights)) => {
                        self.fig7.results = weights;
                        self.fig7.results_arch = Some(arch);
                        self.fig7.generation += 1;
                    }
                    Err(e) => {
                        self.notify(Level::Error, format!("channel weights: {e}"));
                    }
                },
                Reply::DeviceNote(note) => {
                    if note.contains("error")
                        || note.contains("using the CPU")
                        || note.contains("stopped")
                    {
                        self.notify(Level::Warn, note.clone());
                    } else {
                        self.notify(Level::Info, note.clone());
                    }
                    if note.starts_with("inference device") {
                        self.device_note =
                            note.trim_start_matches("inference device: ").to_string();
                    }
                }
                Reply::Failed(e) => {
                    self.notify(Level::Error, e);
                    if matches!(self.startup, Startup::Segmenting | Startup::Weights) {
                        self.startup = Startup::Settling(0);
                    }
                }
                Reply::Saved(result) => match result {
                    Ok(msg) => self.notify(Level::Info, msg),
                    Err(e) => self.notify(Level::Error, e),
                },
            }
        }
        self.advance_startup(ctx);
    }

    /// Whether `ras` is the volume on screen (results for a replaced volume are dropped).
    fn is_current(&self, ras: &Arc<crate::volume::RasVolume>) -> bool {
        self.volume
            .as_ref()
            .is_some_and(|v| Arc::ptr_eq(&v.ras, ras))
    }

    fn fail_load(&mut self, e: String) {
        self.notify(Level::Error, e);
        if self.start.screenshot.is_some() {
            self.exit_code.store(2, Ordering::SeqCst);
        }
    }

    fn advance_startup(&mut self, ctx: &egui::Context) {
        match self.startup {
            Startup::Loading => {
                if !self.awaiting.is_empty() {
                    return;
                }
                if self.volume.is_some() && self.model.is_some() && self.run_blocker().is_none() {
                    self.run(false);
                    self.startup = Startup::Segmenting;
                } else {
                    self.startup = Startup::Settling(0);
                }
            }
            Startup::Segmenting => {
                if !self.busy() {
                    let has_man = self
                        .model
                        .as_ref()
                        .is_some_and(|m| m.config.network.has_man());
                    if has_man && (self.prediction.is_some() || self.truth.is_some()) {
                        self.sample_patches();
                        self.startup = Startup::Weights;
                    } else {
                        self.startup = Startup::Settling(0);
                    }
                }
            }
            Startup::Weights => {
                if !self.busy() {
                    self.startup = Startup::Settling(0);
                }
            }
            Startup::Settling(n) => {
                if self.start.screenshot.is_none() {
                    self.startup = Startup::Done;
                } else if n >= 4 {
                    self.capture(ctx);
                } else {
                    self.startup = Startup::Settling(n + 1);
                    ctx.request_repaint();
                }
            }
            Startup::Capturing | Startup::Done => {}
        }
    }

    fn capture(&mut self, ctx: &egui::Context) {
        let Some(path) = self.start.screenshot.clone() else {
            return;
        };
        self.startup = Startup::Capturing;
        let exit_code = self.exit_code.clone();
        let ctx2 = ctx.clone();
        ctx.request_screenshot(move |image| {
            let [w, h] = image.size;
            let rgba: Vec<u8> = image.pixels.iter().flat_map(|c| c.to_array()).collect();
            let result =
                crate::train::plot::encode_png(w as u32, h as u32, &rgba, png::ColorType::Rgba)
                    .map_err(|e| e.to_string())
                    .and_then(|bytes| {
                        crate::fsutil::write_atomic(&path, &bytes).map_err(|e| e.to_string())
                    });
            match result {
                Ok(()) => eprintln!("hypersegnas: wrote {} ({w} x {h})", path.display()),
                Err(e) => {
                    eprintln!("hypersegnas: {}: {e}", path.display());
                    exit_code.store(1, Ordering::SeqCst);
                }
            }
            ctx2.send_viewport_cmd(egui::ViewportCommand::Close);
            ctx2.request_repaint();
        });
        ctx.request_repaint();
    }

    fn handle_shortcuts(&mut self, ctx: &egui::Context) {
        // A discarded pass repeats the frame's input: act on it once.
        if ctx.current_pass_index() > 0 {
            return;
        }
        let typing = ctx.memory(|m| m.focused().is_some());
        let (undo, redo, open, save, run, run_roi, cancel, help, home) = ctx.input(|i| {
            let cmd = i.modifiers.command;
            (
                cmd && !i.modifiers.shift && i.key_pressed(egui::Key::Z),
                cmd && ((i.modifiers.shift && i.key_pressed(egui::Key::Z))
                    || i.key_pressed(egui::Key::Y)),
                cmd && i.key_pressed(egui::Key::O),
                cmd && i.key_pressed(egui::Key::S),
                cmd && i.key_pressed(egui::Key::R),
                cmd && i.key_pressed(egui::Key::E),
                i.key_pressed(egui::Key::Escape),
                i.key_pressed(egui::Key::F1),
                i.key_pressed(egui::Key::Home),
            )
        });
        if !typing {
            if undo {
                self.undo();
            }
            if redo {
                self.redo();
            }
            if home && let Some(v) = self.view.as_mut() {
                v.reset_zoom();
            }
        }
        if open {
            self.ask_path(FileAction::Open(RecentKind::Volume));
        }
        if save {
            self.ask_path(FileAction::SavePrediction);
        }
        if run {
            self.run(false);
        }
        if run_roi {
            self.run(true);
        }
        if cancel && self.busy() {
            self.worker.cancel();
        }
        if help {
            self.show_help = !self.show_help;
        }
        let dropped: Vec<PathBuf> = ctx.input(|i| {
            i.raw
                .dropped_files
                .iter()
                .map(|f| f.path().to_path_buf())
                .filter(|p| !p.as_os_str().is_empty())
                .collect()
        });
        for p in dropped {
            self.open_any(p);
        }
    }

    /// Undoes the last architecture edit.
    pub fn undo(&mut self) {
        if let Some(e) = self.editor.as_mut()
            && e.can_undo()
        {
            e.undo();
            self.arch_changed();
        }
    }

    /// Redoes an undone architecture edit.
    pub fn redo(&mut self) {
        if let Some(e) = self.editor.as_mut()
            && e.can_redo()
        {
            e.redo();
            self.arch_changed();
        }
    }

    /// Asks for a path for `action`: the native dialog where a desktop portal can show one,
    /// else a typed path (a Linux session without D-Bus, such as a remote shell or Xvfb, has
    /// no portal, and the native dialog would silently show nothing).
    fn ask_path(&mut self, action: FileAction) {
        if !native_dialogs_available() {
            if !self.warned_no_dialogs {
                self.warned_no_dialogs = true;
                self.notify(
                    Level::Warn,
                    "no desktop portal for native file dialogs (no D-Bus session bus): type \
                     paths instead"
                        .into(),
                );
            }
            self.prompt = Some(PathPrompt {
                action,
                text: action.default_name(self).unwrap_or_default(),
            });
            return;
        }
        let mut dialog = rfd::FileDialog::new();
        let (label, exts) = action.filter();
        if !exts.is_empty() {
            dialog = dialog.add_filter(label, exts);
        }
        let path = if action.is_save() {
            if let Some(name) = action.default_name(self) {
                dialog = dialog.set_file_name(name);
            }
            dialog.save_file()
        } else {
            dialog.pick_file()
        };
        if let Some(path) = path {
            self.complete(action, path);
        }
    }

    /// Does `action` with the chosen path.
    fn complete(&mut self, action: FileAction, path: PathBuf) {
        match action {
            FileAction::OpenAny => self.open_any(path),
            FileAction::Open(RecentKind::Volume) => self.open_volume(path),
            FileAction::Open(RecentKind::Label) => self.open_label(path),
            FileAction::Open(RecentKind::Checkpoint) => self.open_checkpoint(Some(path)),
            FileAction::Open(RecentKind::Architecture) => self.open_arch(&path),
            FileAction::SavePrediction => self.save_prediction(path),
            FileAction::ExportArch { monai } => self.export_arch(path, monai),
            FileAction::ExportFigure7(what) => self.fig7_export(what, path),
        }
    }

    /// Writes the prediction to `path` on the volume's stored grid, in the background (what
    /// File > Save prediction does once a path is chosen). Never replaces an input.
    pub fn save_prediction(&mut self, path: PathBuf) {
        let (Some(v), Some(pred)) = (&self.volume, &self.prediction) else {
            self.notify(Level::Error, "nothing to save: run inference first".into());
            return;
        };
        if self
            .truth
            .as_ref()
            .is_some_and(|t| crate::fsutil::same_file(&t.path, &path))
        {
            self.notify(
                Level::Error,
                format!(
                    "{}: is the loaded ground truth; choose another name",
                    path.display()
                ),
            );
            return;
        }
        self.worker
            .save_labels(path, pred.clone(), v.template.clone(), v.orientation);
    }

    fn export_arch(&mut self, path: PathBuf, monai: bool) {
        let Some(editor) = &self.editor else {
            return;
        };
        let code = editor.code().clone();
        let result = if monai {
            crate::monai::export::write_arch_pth(&path, &code)
                .map_err(|e| format!("{}: {e}", path.display()))
        } else {
            arch::write_arch_json(&path, &code).map_err(|e| e.to_string())
        };
        match result {
            Ok(()) => self.notify(Level::Info, format!("wrote {}", path.display())),
            Err(e) => self.notify(Level::Error, e),
        }
    }

    fn fig7_export(&mut self, what: &str, path: PathBuf) {
        let Some(m) = &self.model else { return };
        let cfg = m.config.network.clone();
        let layers = match Fig7State::parse_layers(&self.fig7.layers_text, cfg.space.num_layers) {
            Ok(l) => l,
            Err(e) => {
                self.notify(Level::Error, e);
                return;
            }
        };
        let result = match what {
            "png" => fig7::export_png(&path, &cfg, &self.fig7.results, &layers),
            "svg" => fig7::export_svg(&path, &cfg, &self.fig7.results, &layers),
            _ => crate::fsutil::write_atomic(
                &path,
                fig7::to_csv(&cfg, &self.fig7.results, &layers).as_bytes(),
            )
            .map_err(|e| format!("{}: {e}", path.display())),
        };
        match result {
            Ok(()) => self.notify(Level::Info, format!("wrote {}", path.display())),
            Err(e) => self.notify(Level::Error, e),
        }
    }

    fn prompt_window(&mut self, ctx: &egui::Context) {
        let Some(prompt) = self.prompt.as_mut() else {
            return;
        };
        let mut done = None;
        let mut open = true;
        egui::Window::new(prompt.action.title())
            .open(&mut open)
            .collapsible(false)
            .resizable(false)
            .anchor(egui::Align2::CENTER_CENTER, Vec2::ZERO)
            .show(ctx, |ui| {
                let label =
                    ui.label("Path (absolute, or relative to the folder the app was started in):");
                let edit = ui
                    .add(
                        egui::TextEdit::singleline(&mut prompt.text)
                            .desired_width(520.0)
                            .hint_text("/path/to/file"),
                    )
                    .labelled_by(label.id);
                edit.request_focus();
                let enter = edit.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
                ui.horizontal(|ui| {
                    if ui.button("OK").clicked() || enter {
                        done = Some(true);
                    }
                    if ui.button("Cancel").clicked() {
                        done = Some(false);
                    }
                });
            });
        if !open {
            done = Some(false);
        }
        match done {
            Some(true) => {
                if let Some(p) = self.prompt.take() {
                    let text = p.text.trim();
                    if text.is_empty() {
                        self.notify(Level::Error, "no path given".into());
                    } else {
                        self.complete(p.action, PathBuf::from(text));
                    }
                }
            }
            Some(false) => self.prompt = None,
            None => {}
        }
    }

    fn menu_bar(&mut self, ui: &mut egui::Ui) {
        egui::MenuBar::new().ui(ui, |ui| {
            ui.menu_button("File", |ui| {
                if ui.button("Open any file…  (by its kind)").clicked() {
                    ui.close();
                    self.ask_path(FileAction::OpenAny);
                }
                if ui.button("Open volume…  (Ctrl+O)").clicked() {
                    ui.close();
                    self.ask_path(FileAction::Open(RecentKind::Volume));
                }
                if ui
                    .add_enabled(
                        self.volume.is_some(),
                        egui::Button::new("Open ground-truth labels…"),
                    )
                    .clicked()
                {
                    ui.close();
                    self.ask_path(FileAction::Open(RecentKind::Label));
                }
                if ui.button("Open checkpoint…").clicked() {
                    ui.close();
                    self.ask_path(FileAction::Open(RecentKind::Checkpoint));
                }
                if ui.button("Use the bundled demo super-net").clicked() {
                    ui.close();
                    self.open_checkpoint(None);
                }
                ui.menu_button("Open recent", |ui| {
                    if self.settings.recent.is_empty() {
                        ui.label("(none yet)");
                    }
                    for (kind, path) in self.settings.recent.clone() {
                        if ui.button(format!("{kind:?}: {}", path.display())).clicked() {
                            ui.close();
                            match kind {
                                RecentKind::Volume => self.open_volume(path),
                                RecentKind::Label => self.open_label(path),
                                RecentKind::Checkpoint => self.open_checkpoint(Some(path)),
                                RecentKind::Architecture => self.open_arch(&path),
                            }
                        }
                    }
                });
                ui.separator();
                if ui
                    .add_enabled(
                        self.prediction.is_some(),
                        egui::Button::new("Save prediction…  (Ctrl+S)"),
                    )
                    .clicked()
                {
                    ui.close();
                    self.ask_path(FileAction::SavePrediction);
                }
                if ui
                    .button("Import architecture (JSON or MONAI .pth)…")
                    .clicked()
                {
                    ui.close();
                    self.ask_path(FileAction::Open(RecentKind::Architecture));
                }
                if ui
                    .add_enabled(
                        self.editor.is_some(),
                        egui::Button::new("Export architecture (JSON)…"),
                    )
                    .clicked()
                {
                    ui.close();
                    self.ask_path(FileAction::ExportArch { monai: false });
                }
                if ui
                    .add_enabled(
                        self.editor.is_some(),
                        egui::Button::new("Export architecture (MONAI .pth)…"),
                    )
                    .clicked()
                {
                    ui.close();
                    self.ask_path(FileAction::ExportArch { monai: true });
                }
                ui.separator();
                if ui.button("Quit").clicked() {
                    ui.ctx().send_viewport_cmd(egui::ViewportCommand::Close);
                }
            });
            ui.menu_button("View", |ui| {
                if ui.checkbox(&mut self.settings.dark, "Dark theme").changed() {
                    ui.ctx().set_visuals(if self.settings.dark {
                        egui::Visuals::dark()
                    } else {
                        egui::Visuals::light()
                    });
                    self.fig7.texture_key = None;
                }
                ui.checkbox(&mut self.settings.show_log, "Log panel");
                if ui.button("Reset zoom and pan  (Home)").clicked() {
                    if let Some(v) = self.view.as_mut() {
                        v.reset_zoom();
                    }
                    ui.close();
                }
            });
            ui.menu_button("Help", |ui| {
                if ui.button("Keyboard and mouse  (F1)").clicked() {
                    self.show_help = true;
                    ui.close();
                }
            });
            ui.separator();
            let model = self
                .model
                .as_ref()
                .map_or("no checkpoint".to_string(), |m| m.source.clone());
            let volume = self.volume.as_ref().map_or("no volume".to_string(), |v| {
                v.path
                    .file_name()
                    .map_or(String::new(), |n| n.to_string_lossy().into_owned())
            });
            ui.label(
                RichText::new(format!("{volume}  ·  {model}  ·  {}", self.device_note)).weak(),
            );
        });
    }

    fn arch_panel(&mut self, ui: &mut egui::Ui) {
        ui.heading("Architecture");
        let Some(model) = self.model.clone() else {
            ui.label("Load a checkpoint to edit its architecture.");
            return;
        };
        let space = model.config.network.space.clone();
        let mut changed = false;
        ui.horizontal(|ui| {
            let editor = self.editor.as_mut().expect("editor exists with a model");
            if ui
                .add_enabled(editor.can_undo(), egui::Button::new("Undo"))
                .on_hover_text("Ctrl+Z")
                .clicked()
            {
                editor.undo();
                changed = true;
            }
            if ui
                .add_enabled(editor.can_redo(), egui::Button::new("Redo"))
                .on_hover_text("Ctrl+Shift+Z")
                .clicked()
            {
                editor.redo();
                changed = true;
            }
            egui::ComboBox::from_label("Preset")
                .selected_text("choose…")
                .show_ui(ui, |ui| {
                    let mut names: Vec<String> = ["all-conv", "dints-paper", "unet"]
                        .iter()
                        .map(|s| s.to_string())
                        .collect();
                    names.push("random".into());
                    if self.checkpoint_arch.is_some() {
                        names.push("checkpoint's own".into());
                    }
                    for name in names {
                        if ui.selectable_label(false, &name).clicked() {
                            let code = if name == "checkpoint's own" {
                                self.checkpoint_arch
                                    .clone()
                                    .ok_or_else(|| "none".to_string())
                            } else if name == "random" {
                                self.random_seed += 1;
                                arch::preset(&format!("random-{}", self.random_seed), &space)
                                    .map_err(|e| e.to_string())
                            } else {
                                arch::preset(&name, &space).map_err(|e| e.to_string())
                            };
                            match code {
                                Ok(c) => {
                                    editor.replace(c);
                                    changed = true;
                                }
                                Err(e) => self.log.push(LogLine {
                                    at: Instant::now(),
                                    level: Level::Error,
                                    text: e,
                                }),
                            }
                        }
                    }
                });
        });
        let editor = self.editor.as_mut().expect("editor exists with a model");
        let response = grid::grid_ui(ui, editor);
        changed |= response.changed;
        let problems = editor.problems();
        if problems.is_empty() {
            ui.label(
                RichText::new(format!(
                    "Valid: {} active edges",
                    editor.code().active_edges()
                ))
                .color(Color32::from_rgb(90, 190, 90)),
            );
        } else {
            for p in &problems {
                ui.label(
                    RichText::new(format!("Invalid: {p}")).color(Color32::from_rgb(235, 80, 70)),
                );
            }
        }
        ui.add_space(4.0);
        grid::topology_ui(ui, editor.code(), &space, 90.0);
        let cost = grid::estimate_cost(&model.config.network, editor.code(), model.config.roi);
        ui.label(format!(
            "Instance: {:.2} M parameters · {:.1} G multiply-adds per {}³ ROI · ≈{:.0} MB activations",
            cost.params as f64 / 1e6,
            cost.macs / 1e9,
            model.config.roi[0],
            cost.activation_bytes / 1e6
        ))
        .on_hover_text("Parameters of the searched instance (stems, head, active cells). Multiply-adds of every convolution for one ROI. Activation memory: fp32 outputs of each active edge's ReLU, convolution and norm plus each level's node, batch 1, inference.");
        if changed {
            self.arch_changed();
        }

        ui.separator();
        ui.heading("Inference");
        ui.horizontal(|ui| {
            ui.label("Weights:");
            let has_man = model.config.network.has_man();
            ui.add_enabled_ui(has_man, |ui| {
                ui.radio_value(&mut self.mode, WeightMode::Man, "MAN-assisted");
                ui.radio_value(&mut self.mode, WeightMode::Fixed, "fixed (w_fixed)");
            });
            if !has_man {
                ui.radio_value(&mut self.mode, WeightMode::Plain, "plain DiNTS");
            }
        });
        ui.horizontal(|ui| {
            ui.radio_value(&mut self.roi_run, false, "whole volume");
            ui.radio_value(&mut self.roi_run, true, "ROI at crosshair");
            ui.add(egui::Slider::new(&mut self.settings.overlap, 0.0..=0.9).text("overlap"));
        });
        let blocker = self.run_blocker();
        ui.horizontal(|ui| {
            let run = ui
                .add_enabled(
                    blocker.is_none() && !self.busy(),
                    egui::Button::new(RichText::new("Run").strong()),
                )
                .on_hover_text("Ctrl+R whole volume, Ctrl+E ROI at the crosshair");
            if run.clicked() {
                let roi = self.roi_run;
                self.run(roi);
            }
            if self.busy() && ui.button("Cancel").clicked() {
                self.worker.cancel();
            }
        });
        if let Some(reason) = &blocker {
            ui.label(
                RichText::new(format!("Run disabled: {reason}"))
                    .color(Color32::from_rgb(235, 80, 70)),
            );
        }
        if let Some(task) = self.worker.task() {
            let frac = if task.total > 0 {
                task.done as f32 / task.total as f32
            } else {
                0.0
            };
            let eta = task.eta().map_or(String::new(), |d| {
                format!(", about {:.0} s left", d.as_secs_f64())
            });
            ui.add(
                egui::ProgressBar::new(frac)
                    .text(format!("{} {}/{}{eta}", task.what, task.done, task.total)),
            );
            ui.ctx().request_repaint_after(Duration::from_millis(100));
        } else if self.busy() {
            ui.add(egui::ProgressBar::new(0.0).text("queued"));
        }
        if let Some(note) = &self.run_note {
            ui.label(RichText::new(note).color(Color32::from_rgb(230, 170, 40)));
        }
        if let Some(run) = &self.last_run {
            let region = match run.region {
                Region::Whole => "whole volume",
                Region::Roi(_) => "ROI",
            };
            let mode = match run.mode {
                WeightMode::Man => "MAN",
                WeightMode::Fixed => "fixed",
                WeightMode::Plain => "plain",
                WeightMode::Blend(_) => "blended",
            };
            ui.label(format!(
                "Last run: {region}, {mode} weights, {:.2} s",
                run.elapsed.as_secs_f64()
            ));
            if let Some(c) = run.changed {
                ui.horizontal(|ui| {
                    ui.label(format!(
                        "{c} voxels changed against the previous prediction"
                    ));
                    let diff = self.settings.display.overlay == OverlaySource::DiffPrevious;
                    let text = if diff { "Show mask" } else { "Show changes" };
                    if ui.small_button(text).clicked() {
                        self.settings.display.overlay = if diff {
                            OverlaySource::Prediction
                        } else {
                            OverlaySource::DiffPrevious
                        };
                    }
                });
            }
            if let Some(dice) = &run.dice {
                let names = &model.config.class_names;
                let truth_names = self.truth.as_ref().map(|t| &t.names);
                let text: Vec<String> = dice
                    .iter()
                    .enumerate()
                    .skip(1)
                    .map(|(k, d)| {
                        let mut name = names.get(k).cloned().unwrap_or(format!("class {k}"));
                        // Dice pairs classes by index; say so when the names disagree.
                        if let Some(t) = truth_names.and_then(|n| n.get(&(k as u16)))
                            && !t.eq_ignore_ascii_case(&name)
                        {
                            name = format!("{name} (vs truth label {k} '{t}')");
                        }
                        format!(
                            "{} {}",
                            name,
                            if d.is_nan() {
                                "n/a".into()
                            } else {
                                format!("{d:.3}")
                            }
                        )
                    })
                    .collect();
                ui.label(format!("Dice ({region}): {}", text.join(", ")));
            }
        }
    }

    fn fig7_panel(&mut self, ui: &mut egui::Ui) {
        ui.heading("Channel weights (Figure 7)");
        let Some(model) = self.model.clone() else {
            ui.label("Load a checkpoint.");
            return;
        };
        if !model.config.network.has_man() {
            ui.label("This checkpoint has no MAN: it generates no channel weights.");
            return;
        }
        let cfg = &model.config.network;
        ui.horizontal(|ui| {
            let l = ui.label("Patches per group:");
            ui.add(egui::DragValue::new(&mut self.fig7.per_group).range(1..=32))
                .labelled_by(l.id);
            // Without a truth the patches come from the prediction: show the box unticked
            // then, and keep the choice for when a truth is loaded.
            let has_truth = self.truth.is_some();
            let mut from_truth = self.fig7.from_truth && has_truth;
            ui.add_enabled(
                has_truth,
                egui::Checkbox::new(&mut from_truth, "from ground truth"),
            )
            .on_disabled_hover_text("load a ground-truth label map to sample from it");
            if has_truth {
                self.fig7.from_truth = from_truth;
            }
        });
        ui.horizontal(|ui| {
            if ui
                .add_enabled(
                    self.volume.is_some(),
                    egui::Button::new("Sample foreground/background"),
                )
                .clicked()
            {
                self.sample_patches();
            }
            ui.toggle_value(&mut self.fig7.pick_mode, "Pick by clicking")
                .on_hover_text(
                    "Click a slice to add a patch centred there (Shift+click: background)",
                );
            if ui.button("Clear").clicked() {
                self.fig7.patches.clear();
                self.fig7.results.clear();
                self.fig7.generation += 1;
            }
        });
        ui.horizontal(|ui| {
            let l = ui.label("Layers:");
            ui.add(egui::TextEdit::singleline(&mut self.fig7.layers_text).desired_width(90.0))
                .labelled_by(l.id);
        });
        let layers = match Fig7State::parse_layers(&self.fig7.layers_text, cfg.space.num_layers) {
            Ok(l) => l,
            Err(e) => {
                ui.label(RichText::new(e).color(Color32::from_rgb(235, 80, 70)));
                return;
            }
        };
        let stale = self.fig7.results_arch.as_ref() != self.arch() && !self.fig7.results.is_empty();
        if stale {
            let valid = self
                .editor
                .as_ref()
                .is_some_and(|e| e.problems().is_empty());
            let note = if valid {
                "(recomputing the weights for the edited architecture)"
            } else {
                "(the plot shows the last valid architecture; the edited one is invalid)"
            };
            ui.label(RichText::new(note).color(Color32::from_rgb(230, 170, 40)));
        }
        let fg = self
            .fig7
            .results
            .iter()
            .filter(|p| p.spec.kind == PatchKind::Foreground)
            .count();
        ui.label(format!(
            "{} patches ({} foreground, solid warm lines; {} background, dashed cool lines)",
            self.fig7.results.len(),
            fg,
            self.fig7.results.len() - fg
        ));
        // Plot.
        let width = ui.available_width().max(200.0);
        let height = (ui.available_height() - 110.0).clamp(180.0, 200.0 * layers.len() as f32);
        let ppp = ui.ctx().pixels_per_point();
        let px = [(width * ppp) as u32, (height * ppp) as u32];
        let dark = ui.visuals().dark_mode;
        let key = (px, self.fig7.generation ^ hash_layers(&layers), dark);
        if self.fig7.texture_key != Some(key) {
            match fig7::render_rgb((px[0], px[1]), cfg, &self.fig7.results, &layers, dark) {
                Ok((rgb, lines)) => {
                    let image = egui::ColorImage::from_rgb([px[0] as usize, px[1] as usize], &rgb);
                    self.fig7.texture = Some(ui.ctx().load_texture(
                        "figure7",
                        image,
                        egui::TextureOptions::LINEAR,
                    ));
                    self.fig7.plotted_lines = lines;
                    self.fig7.summary = Some(fig7::summarize(cfg, &self.fig7.results, &layers));
                }
                Err(e) => self.notify(Level::Error, e),
            }
            self.fig7.texture_key = Some(key);
        }
        if let Some(t) = &self.fig7.texture {
            ui.add(egui::Image::new(t).fit_to_exact_size(Vec2::new(width, height)))
                .widget_info(|| {
                    egui::WidgetInfo::labeled(
                        egui::Role::Image,
                        true,
                        format!("Figure 7 plot: {} lines", self.fig7.plotted_lines),
                    )
                });
        }
        if let Some(s) = &self.fig7.summary
            && !self.fig7.results.is_empty()
        {
            egui::Grid::new("fig7-summary")
                .striped(true)
                .show(ui, |ui| {
                    ui.label("level");
                    ui.label("fg mean");
                    ui.label("bg mean");
                    ui.end_row();
                    for d in 0..s.foreground.len() {
                        ui.label(
                            RichText::new(format!("1/{}", 1usize << (d + 1)))
                                .color(grid::level_color(d)),
                        );
                        ui.label(fmt_num(s.foreground[d]));
                        ui.label(fmt_num(s.background[d]));
                        ui.end_row();
                    }
                });
            ui.label(format!(
                "fg–bg distance (RMS over the layers' channels): {}",
                fmt_num(s.distance)
            ));
        }
        ui.horizontal(|ui| {
            let any = !self.fig7.results.is_empty();
            for what in ["png", "svg", "csv"] {
                if ui
                    .add_enabled(
                        any,
                        egui::Button::new(format!("Export {}", what.to_uppercase())),
                    )
                    .clicked()
                {
                    self.ask_path(FileAction::ExportFigure7(what));
                }
            }
        });
    }

    fn display_controls(&mut self, ui: &mut egui::Ui) {
        let d = &mut self.settings.display;
        ui.heading("Display");
        ui.horizontal_wrapped(|ui| {
            for preset in WindowPreset::ALL {
                if ui
                    .small_button(preset.name().split(' ').next().unwrap_or(""))
                    .on_hover_text(preset.name())
                    .clicked()
                {
                    let p = self.volume.as_ref().map_or((0.0, 1.0), |v| v.percentiles);
                    let (c, w) = preset.window(p);
                    d.center = c;
                    d.width = w;
                    self.settings.window_preset = Some(preset);
                }
            }
        });
        ui.horizontal(|ui| {
            let l = ui.label("Level");
            ui.add(
                egui::DragValue::new(&mut d.center)
                    .speed(2.0)
                    .range(-1e7..=1e7),
            )
            .labelled_by(l.id);
            let l = ui.label("Width");
            ui.add(
                egui::DragValue::new(&mut d.width)
                    .speed(2.0)
                    .range(0.001..=1e7),
            )
            .labelled_by(l.id);
        });
        egui::ComboBox::from_label("Colour map")
            .selected_text(view::COLORMAPS[d.colormap as usize % view::COLORMAPS.len()])
            .show_ui(ui, |ui| {
                for (i, name) in view::COLORMAPS.iter().enumerate() {
                    ui.selectable_value(&mut d.colormap, i as u32, *name);
                }
            });
        egui::ComboBox::from_label("Overlay")
            .selected_text(d.overlay.name())
            .show_ui(ui, |ui| {
                for o in OverlaySource::ALL {
                    ui.selectable_value(&mut d.overlay, o, o.name());
                }
            });
        ui.add(egui::Slider::new(&mut d.opacity, 0.0..=1.0).text("opacity"));
        ui.checkbox(&mut d.outline, "Outline only");
        let names: Vec<String> = self
            .model
            .as_ref()
            .map_or(Vec::new(), |m| m.config.class_names.clone());
        let truth_names = self
            .truth
            .as_ref()
            .map(|t| t.names.clone())
            .unwrap_or_default();
        // Prediction classes take the checkpoint's names; other labels the label file's.
        // Where both name one index differently (Dice compares by index), both are shown.
        let class_name = |k: usize| -> String {
            match (names.get(k), truth_names.get(&(k as u16))) {
                (Some(a), Some(b)) if !a.eq_ignore_ascii_case(b) => format!("{a} | truth: {b}"),
                (Some(a), _) => a.clone(),
                (None, Some(b)) => b.clone(),
                (None, None) => format!("label {k}"),
            }
        };
        // The checkpoint's classes and the labels present in the ground truth.
        let mut listed: Vec<usize> = (1..names.len()).collect();
        if let Some(t) = &self.truth {
            listed.extend(t.present.iter().map(|&l| l as usize).filter(|&l| l > 0));
        }
        listed.sort_unstable();
        listed.dedup();
        listed.retain(|&k| k < render::SHADER_CLASSES);
        ui.horizontal_wrapped(|ui| {
            for k in listed {
                let name = class_name(k);
                let c = view::class_color(k);
                ui.horizontal(|ui| {
                    let (rect, _) = ui.allocate_exact_size(Vec2::splat(10.0), egui::Sense::hover());
                    ui.painter().rect_filled(rect, 2.0, c);
                    ui.checkbox(&mut d.class_visible[k], name);
                });
            }
        });
        if matches!(
            d.overlay,
            OverlaySource::DiffTruth | OverlaySource::DiffPrevious
        ) {
            let other = if d.overlay == OverlaySource::DiffTruth {
                "truth"
            } else {
                "previous run"
            };
            ui.label(
                RichText::new(format!(
                    "red: only this prediction labels the voxel · blue: only the {other} does · \
                     yellow: both, as different classes"
                ))
                .small(),
            );
        }
        // Cursor readout.
        ui.separator();
        if let (Some(v), Some(p)) = (
            &self.volume,
            self.hovered.or(self.view.as_ref().map(|v| v.crosshair)),
        ) {
            let i = p[0] + v.ras.dims[0] * (p[1] + v.ras.dims[1] * p[2]);
            let w = crate::volume::affine_apply(
                &v.ras.world_from_voxel,
                [p[0] as f64, p[1] as f64, p[2] as f64],
            );
            let label_name = |l: u16| class_name(l as usize);
            let truth_name = |l: u16| {
                truth_names
                    .get(&l)
                    .cloned()
                    .unwrap_or_else(|| class_name(l as usize))
            };
            ui.label(format!("voxel (RAS) {} {} {}", p[0], p[1], p[2]));
            ui.label(format!("world {:.1} {:.1} {:.1} mm", w[0], w[1], w[2]));
            ui.label(format!("intensity {}", v.ras.data[i]));
            if let Some(pred) = &self.prediction {
                ui.label(format!("predicted: {}", label_name(pred[i])));
            }
            if let Some(t) = &self.truth {
                ui.label(format!("truth: {}", truth_name(t.labels[i])));
            }
        }
    }

    fn central(&mut self, ui: &mut egui::Ui) {
        let Some(v) = &self.volume else {
            ui.centered_and_justified(|ui| {
                ui.label(RichText::new("Open a CT or MR volume (File > Open volume, Ctrl+O, or drop a .nii.gz here)").size(16.0));
            });
            return;
        };
        let rect = ui.available_rect_before_wrap();
        let half = rect.size() / 2.0;
        let cells = [
            egui::Rect::from_min_size(rect.min, half),
            egui::Rect::from_min_size(rect.min + Vec2::new(half.x, 0.0), half),
            egui::Rect::from_min_size(rect.min + Vec2::new(0.0, half.y), half),
        ];
        let ras = v.ras.clone();
        let labels = view::Labels {
            prediction: self.prediction.as_deref().map(|p| p.as_slice()),
            truth: self.truth.as_ref().map(|t| t.labels.as_slice()),
            previous: self.previous.as_deref().map(|p| p.as_slice()),
            generation: self.labels_generation,
        };
        let roi_box = self
            .last_run
            .as_ref()
            .filter(|r| matches!(r.region, Region::Roi(_)))
            .map(|r| r.bounds);
        let mut hovered = None;
        let mut picked = None;
        let Some(state) = self.view.as_mut() else {
            return;
        };
        for (i, cell) in cells.iter().enumerate() {
            let out = view::view_ui(
                ui,
                cell.shrink(2.0),
                state,
                i,
                view::ViewInputs {
                    ras: &ras,
                    labels,
                    display: &mut self.settings.display,
                    has_renderer: self.has_renderer,
                    roi_box,
                },
            );
            hovered = hovered.or(out.hovered);
            picked = picked.or(out.clicked);
        }
        self.hovered = hovered;
        let controls = egui::Rect::from_min_size(rect.min + half, half).shrink(6.0);
        let mut child = ui.new_child(egui::UiBuilder::new().max_rect(controls));
        egui::ScrollArea::vertical()
            .id_salt("display-controls")
            .show(&mut child, |ui| self.display_controls(ui));
        if self.fig7.pick_mode
            && let Some(p) = picked
        {
            let kind = if ui.input(|i| i.modifiers.shift) {
                PatchKind::Background
            } else {
                PatchKind::Foreground
            };
            self.add_patch(p, kind);
        }
        ui.allocate_rect(rect, egui::Sense::hover());
    }

    fn log_panel(&mut self, ui: &mut egui::Ui) {
        egui::ScrollArea::vertical()
            .stick_to_bottom(true)
            .show(ui, |ui| {
                let first = self.log.first().map(|l| l.at);
                for line in &self.log {
                    let color = match line.level {
                        Level::Info => ui.visuals().text_color(),
                        Level::Warn => Color32::from_rgb(230, 170, 40),
                        Level::Error => Color32::from_rgb(235, 80, 70),
                    };
                    let t = first.map_or(0.0, |f| line.at.duration_since(f).as_secs_f64());
                    ui.label(
                        RichText::new(format!("[{t:7.1}s] {}", line.text))
                            .color(color)
                            .monospace(),
                    );
                }
            });
    }

    fn toasts(&mut self, ctx: &egui::Context) {
        self.toasts
            .retain(|t| t.at.elapsed() < Duration::from_secs(8));
        if self.toasts.is_empty() {
            return;
        }
        egui::Area::new(egui::Id::unique("hypersegnas-toasts"))
            .anchor(egui::Align2::RIGHT_BOTTOM, Vec2::new(-12.0, -40.0))
            .show(ctx, |ui| {
                for t in &self.toasts {
                    egui::Frame::popup(ui.style()).show(ui, |ui| {
                        ui.set_max_width(420.0);
                        let color = if t.level == Level::Error {
                            Color32::from_rgb(235, 80, 70)
                        } else {
                            Color32::from_rgb(230, 170, 40)
                        };
                        ui.label(RichText::new(&t.text).color(color));
                    });
                }
            });
        ctx.request_repaint_after(Duration::from_millis(500));
    }

    fn help_window(&mut self, ctx: &egui::Context) {
        egui::Window::new("Keyboard and mouse")
            .open(&mut self.show_help)
            .resizable(false)
            .show(ctx, |ui| {
                egui::Grid::new("help").striped(true).show(ui, |ui| {
                    for (k, v) in HELP {
                        ui.label(RichText::new(*k).monospace());
                        ui.label(*v);
                        ui.end_row();
                    }
                });
            });
    }
}

const HELP: &[(&str, &str)] = &[
    ("Ctrl+O", "open a volume"),
    ("Ctrl+S", "save the prediction (never over an input)"),
    (
        "Ctrl+R / Ctrl+E",
        "run on the whole volume / on the ROI at the crosshair",
    ),
    ("Esc", "cancel the running task"),
    (
        "Ctrl+Z, Ctrl+Shift+Z (Ctrl+Y)",
        "undo, redo an architecture edit",
    ),
    (
        "click a grid cell",
        "cycle off, then each op of the checkpoint, then off",
    ),
    ("right-click a grid cell", "choose the cell's state"),
    ("mouse wheel, Page Up/Down", "change slice"),
    ("click or drag (left)", "move the crosshair"),
    (
        "arrow keys",
        "move the crosshair in the view under the mouse",
    ),
    ("drag (right)", "window (horizontal) and level (vertical)"),
    ("Ctrl+wheel, drag (middle)", "zoom, pan"),
    ("Home", "reset zoom and pan"),
    (
        "drop files",
        "volumes, label maps, checkpoints, architecture JSON",
    ),
    (
        "Figure 7: click a slice",
        "with Pick by clicking on: add a foreground patch there",
    ),
    ("Figure 7: Shift+click", "add a background patch there"),
    (
        "File > Open any file",
        "open by kind; a typed path where no native dialog exists",
    ),
    ("F1", "this window"),
];

/// A MONAI searched instance holds weights only for its own op on each of its edges: an
/// edited code may switch edges off but not turn one on or change its op.
fn instance_mismatch(model: &ModelInfo, code: &ArchCode) -> Option<String> {
    let scheme = model.monai.as_deref()?;
    if !scheme.starts_with("searched instance") {
        return None;
    }
    for layer in 0..code.num_layers() {
        for edge in 0..code.num_edges() {
            if let Some(op) = code.get(layer, edge)
                && model.arch.get(layer, edge) != Some(op)
            {
                return Some(format!(
                    "this MONAI searched instance has no weights for layer {} edge {} as {} \
                     (it may only switch its own edges off)",
                    layer + 1,
                    edge + 1,
                    op.name()
                ));
            }
        }
    }
    None
}

fn fmt_num(v: f64) -> String {
    if v.is_nan() {
        "n/a".into()
    } else {
        format!("{v:.4}")
    }
}

fn hash_layers(layers: &[usize]) -> u64 {
    layers.iter().fold(0xcbf29ce484222325u64, |h, &l| {
        (h ^ l as u64).wrapping_mul(0x100000001b3)
    }) << 20
}

impl eframe::App for ExplorerApp {
    fn raw_input_hook(&mut self, _ctx: &egui::Context, raw_input: &mut egui::RawInput) {
        // A screenshot shows the window as laid out, not hover effects of wherever the
        // (virtual) pointer happens to rest.
        if self.start.screenshot.is_some() {
            raw_input.events.retain(|e| {
                !matches!(
                    e,
                    egui::Event::PointerMoved(_)
                        | egui::Event::MouseMoved(_)
                        | egui::Event::PointerButton { .. }
                        | egui::Event::MouseWheel { .. }
                )
            });
            raw_input.events.push(egui::Event::PointerGone);
        }
    }

    fn logic(&mut self, ctx: &egui::Context, _frame: &mut eframe::Frame) {
        self.handle_replies(ctx);
    }

    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        let ctx = ui.ctx().clone();
        self.handle_shortcuts(&ctx);
        egui::Panel::top("menu").show(ui, |ui| self.menu_bar(ui));
        egui::Panel::bottom("status").show(ui, |ui| {
            ui.horizontal(|ui| {
                let errors = self.log.iter().filter(|l| l.level == Level::Error).count();
                if ui
                    .selectable_label(
                        self.settings.show_log,
                        format!("Log ({} lines, {errors} errors)", self.log.len()),
                    )
                    .clicked()
                {
                    self.settings.show_log = !self.settings.show_log;
                }
                if let Some(last) = self.log.last() {
                    ui.label(RichText::new(&last.text).weak());
                }
            });
        });
        if self.settings.show_log {
            egui::Panel::bottom("log")
                .resizable(true)
                .default_size(150.0)
                .show(ui, |ui| self.log_panel(ui));
        }
        egui::Panel::left("arch")
            .resizable(true)
            .default_size(430.0)
            .show(ui, |ui| {
                egui::ScrollArea::vertical()
                    .id_salt("arch-scroll")
                    .show(ui, |ui| self.arch_panel(ui));
            });
        egui::Panel::right("fig7")
            .resizable(true)
            .default_size(440.0)
            .show(ui, |ui| {
                egui::ScrollArea::vertical()
                    .id_salt("fig7-scroll")
                    .show(ui, |ui| self.fig7_panel(ui));
            });
        egui::CentralPanel::default().show(ui, |ui| self.central(ui));
        self.toasts(&ctx);
        self.help_window(&ctx);
        self.prompt_window(&ctx);
        // Poll while work runs so progress shows even between worker wake-ups.
        if self.busy() {
            ctx.request_repaint_after(Duration::from_millis(200));
        }
    }

    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        if self.start.screenshot.is_some() {
            return;
        }
        self.settings.patches_per_group = self.fig7.per_group;
        self.settings.layers = self.fig7.layers_text.clone();
        eframe::set_value(storage, SETTINGS_KEY, &self.settings);
    }
}

/// Opens the explorer window and runs until it closes. Returns the process exit code.
pub fn run_native(start: StartOptions) -> Result<i32, String> {
    let exit_code = Arc::new(AtomicI32::new(0));
    let size = start.window_size.unwrap_or([1600.0, 1000.0]);
    let options = eframe::NativeOptions {
        viewport: egui::ViewportBuilder::default()
            .with_title("HyperSegNAS Explorer")
            .with_inner_size(size)
            .with_min_inner_size(MIN_WINDOW)
            .with_drag_and_drop(true),
        // A size from the command line (or a screenshot) wins over the saved one.
        persist_window: start.screenshot.is_none() && start.window_size.is_none(),
        ..Default::default()
    };
    let code = exit_code.clone();
    eframe::run_native(
        "hypersegnas",
        options,
        Box::new(move |cc| Ok(Box::new(ExplorerApp::new(cc, start, code)))),
    )
    .map_err(|e| format!("could not open the window: {e} (a display and a wgpu adapter — Vulkan, Metal, DX12 or GL — are needed; Mesa's llvmpipe works without a GPU)"))?;
    Ok(exit_code.load(Ordering::SeqCst))
}
