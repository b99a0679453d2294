//! Work that must not run on the UI thread.
//!
//! One model thread owns the Burn device and the loaded network and serves requests in
//! order (load a checkpoint, segment, compute channel weights). File reading runs on
//! short-lived threads of its own so that opening a volume never waits for an inference.
//! Every result comes back through one channel and wakes the UI.

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use burn::tensor::{Tensor, TensorData};

use crate::arch::ArchCode;
use crate::checkpoint::{self, CheckpointConfig};
use crate::device::{self, DeviceChoice};
use crate::inference::{self, Blend, Progress, WindowError, WindowOptions};
use crate::model::{Network, WeightMode};
use crate::volume::{self, RasVolume, Volume};

/// A volume as the app holds it: reoriented to RAS for display, plus what is needed to
/// write results on the stored grid.
pub struct LoadedVolume {
    /// The file it came from.
    pub path: PathBuf,
    /// Voxels in RAS order.
    pub ras: Arc<RasVolume>,
    /// The stored volume's header and geometry, without voxel data (for saving masks).
    pub template: Volume,
    /// How stored voxels map to RAS.
    pub orientation: volume::Orientation,
    /// 0.5th and 99.5th intensity percentiles (auto window).
    pub percentiles: (f32, f32),
    /// Smallest and largest intensity.
    pub range: (f32, f32),
    /// Reader warnings.
    pub warnings: Vec<String>,
}

/// A label map on the RAS grid of a loaded volume.
pub struct LoadedLabel {
    pub path: PathBuf,
    /// The image it was checked against.
    pub image: Arc<RasVolume>,
    pub labels: Arc<Vec<u16>>,
    /// Largest label value present.
    pub max_label: u16,
    /// The label values present, ascending (background included when present).
    pub present: Vec<u16>,
    /// Names by label value, from the file's label table (a Caret XML `LabelTable` header
    /// extension, as TotalSegmentator writes), when it has one.
    pub names: std::collections::BTreeMap<u16, String>,
}

/// What the model thread knows about the loaded checkpoint.
#[derive(Clone)]
pub struct ModelInfo {
    /// Where it came from (or "bundled demo").
    pub source: String,
    /// The file, when it came from one.
    pub path: Option<PathBuf>,
    /// The architecture it opened with (its own, a decoded search result, the given file,
    /// or `all-conv`).
    pub arch: ArchCode,
    /// Whether `arch` is the checkpoint's own (stored, decoded or given with it).
    pub own_arch: bool,
    /// For a MONAI state dict: its key layout; `None` for our checkpoints.
    pub monai: Option<String>,
    pub config: CheckpointConfig,
    pub num_params: usize,
    pub device: String,
}

/// Which part of the volume to segment.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Region {
    /// The whole volume (sliding window).
    Whole,
    /// One ROI centred on a RAS voxel.
    Roi([usize; 3]),
}

/// A finished segmentation, on the RAS grid.
pub struct SegmentOutcome {
    /// The volume this was computed for (replies for a volume since replaced are dropped).
    pub ras: Arc<RasVolume>,
    /// The full label map: the new prediction inside `region`, the previous one outside.
    pub labels: Vec<u16>,
    /// Voxels inside `region` whose label changed against the previous prediction.
    pub changed: Option<usize>,
    /// Dice per class (background first) inside `region`, when ground truth was given;
    /// NaN for a class absent from both.
    pub dice: Option<Vec<f64>>,
    /// RAS voxel box that was predicted: start and size.
    pub region: ([usize; 3], [usize; 3]),
    pub elapsed: Duration,
    pub arch: ArchCode,
    pub mode: WeightMode,
}

/// Foreground or background patch (Figure 7's two groups), or one picked by hand.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum PatchKind {
    Foreground,
    Background,
}

/// A patch for the Figure 7 panel: centred on a RAS voxel.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PatchSpec {
    pub center: [usize; 3],
    pub kind: PatchKind,
}

/// The MAN's channel weights of one patch.
#[derive(Clone, Debug)]
pub struct PatchWeights {
    pub spec: PatchSpec,
    /// All channel weights, ordered layer, edge, channel.
    pub weights: Vec<f32>,
}

/// Requests to the model thread.
pub enum Request {
    /// Load a checkpoint (ours or a MONAI DiNTS state dict), or the bundled demo when the
    /// path is `None`; `arch` is an architecture file for MONAI instances.
    LoadCheckpoint {
        path: Option<PathBuf>,
        arch: Option<PathBuf>,
    },
    /// Segment part of a volume.
    Segment {
        ras: Arc<RasVolume>,
        job: SegmentJob,
    },
    /// MAN channel weights of patches under an architecture.
    ChannelWeights {
        ras: Arc<RasVolume>,
        arch: ArchCode,
        patches: Vec<PatchSpec>,
    },
}

/// Results, delivered to the UI thread.
pub enum Reply {
    Volume(Result<LoadedVolume, String>),
    Label(Result<LoadedLabel, String>),
    Checkpoint(Result<ModelInfo, String>),
    Segmented(Result<SegmentOutcome, String>),
    /// Channel weights, for the volume given.
    Weights(
        Arc<RasVolume>,
        Result<(ArchCode, Vec<PatchWeights>), String>,
    ),
    /// The device the model thread chose, or why it fell back.
    DeviceNote(String),
    /// A model-thread request that failed unexpectedly (an internal error, not bad input).
    Failed(String),
    /// A file written (the message) or why writing failed.
    Saved(Result<String, String>),
}

/// The running task, for the progress bar.
#[derive(Clone, Debug)]
pub struct Task {
    pub what: String,
    pub done: usize,
    pub total: usize,
    pub started: Instant,
}

impl Task {
    /// Estimated time left, once some progress exists.
    pub fn eta(&self) -> Option<Duration> {
        if self.done == 0 || self.total == 0 {
            return None;
        }
        let per = self.started.elapsed().as_secs_f64() / self.done as f64;
        Some(Duration::from_secs_f64(
            per * (self.total - self.done.min(self.total)) as f64,
        ))
    }
}

/// State shared with the worker threads.
#[derive(Default)]
pub struct Shared {
    pub task: Mutex<Option<Task>>,
    pub cancel: AtomicBool,
}

/// The UI side of the worker threads.
pub struct Worker {
    requests: Sender<Request>,
    replies: Receiver<Reply>,
    reply_sender: Sender<Reply>,
    pub shared: Arc<Shared>,
    waker: Arc<dyn Fn() + Send + Sync>,
    /// Requests sent to the model thread and not yet answered.
    pub pending: usize,
}

impl Worker {
    /// Starts the model thread on `choice`'s device. `waker` is called after every reply
    /// (the UI passes `ctx.request_repaint`).
    pub fn start(choice: DeviceChoice, waker: Arc<dyn Fn() + Send + Sync>) -> Self {
        let (requests, request_rx) = mpsc::channel::<Request>();
        let (reply_sender, replies) = mpsc::channel::<Reply>();
        let shared = Arc::new(Shared::default());
        let thread_shared = shared.clone();
        let thread_replies = reply_sender.clone();
        let thread_waker = waker.clone();
        std::thread::Builder::new()
            .name("hypersegnas-model".into())
            .spawn(move || {
                model_thread(
                    choice,
                    request_rx,
                    thread_replies,
                    thread_shared,
                    thread_waker,
                )
            })
            .expect("spawning the model thread");
        Self {
            requests,
            replies,
            reply_sender,
            shared,
            waker,
            pending: 0,
        }
    }

    /// Queues a request for the model thread.
    pub fn send(&mut self, request: Request) {
        self.shared.cancel.store(false, Ordering::SeqCst);
        if self.requests.send(request).is_ok() {
            self.pending += 1;
        } else {
            let _ = self.reply_sender.send(Reply::DeviceNote(
                "the model thread has stopped; restart the app".into(),
            ));
        }
    }

    /// Asks the running task to stop.
    pub fn cancel(&self) {
        self.shared.cancel.store(true, Ordering::SeqCst);
    }

    /// Reads a volume on a thread of its own.
    pub fn load_volume(&self, path: PathBuf) {
        let replies = self.reply_sender.clone();
        let waker = self.waker.clone();
        std::thread::spawn(move || {
            let _ = replies.send(Reply::Volume(read_volume(&path)));
            waker();
        });
    }

    /// Reads a label map for `image` on a thread of its own.
    pub fn load_label(&self, path: PathBuf, image: Arc<RasVolume>) {
        let replies = self.reply_sender.clone();
        let waker = self.waker.clone();
        std::thread::spawn(move || {
            let _ = replies.send(Reply::Label(read_label(&path, image)));
            waker();
        });
    }

    /// Writes a RAS label map onto the stored grid of `template`, on a thread of its own.
    /// The writer refuses to replace the volume the template was read from.
    pub fn save_labels(
        &self,
        path: PathBuf,
        labels: Arc<Vec<u16>>,
        template: Volume,
        orientation: volume::Orientation,
    ) {
        let replies = self.reply_sender.clone();
        let waker = self.waker.clone();
        std::thread::spawn(move || {
            let stored = orientation.from_ras(&labels, template.dims);
            let result = volume::write_label_map(&path, &stored, &template)
                .map(|()| format!("saved the prediction to {}", path.display()))
                .map_err(|e| e.to_string());
            let _ = replies.send(Reply::Saved(result));
            waker();
        });
    }

    /// Replies that have arrived.
    pub fn poll(&mut self) -> Vec<Reply> {
        let replies: Vec<Reply> = self.replies.try_iter().collect();
        for r in &replies {
            if matches!(
                r,
                Reply::Checkpoint(_) | Reply::Segmented(_) | Reply::Weights(..) | Reply::Failed(_)
            ) {
                self.pending = self.pending.saturating_sub(1);
            }
        }
        replies
    }

    /// The running model-thread task, if any.
    pub fn task(&self) -> Option<Task> {
        self.shared.task.lock().ok().and_then(|t| t.clone())
    }
}

fn read_volume(path: &std::path::Path) -> Result<LoadedVolume, String> {
    let mut volume = volume::read_volume(path).map_err(|e| e.to_string())?;
    let (ras, orientation) = volume.to_ras();
    let (percentiles, range) = intensity_stats(&ras.data);
    let warnings = std::mem::take(&mut volume.warnings);
    volume.data = Vec::new();
    Ok(LoadedVolume {
        path: path.to_path_buf(),
        ras: Arc::new(ras),
        template: volume,
        orientation,
        percentiles,
        range,
        warnings,
    })
}

/// Percentiles (0.5 %, 99.5 %) and range of finite values, from a strided sample.
pub fn intensity_stats(data: &[f32]) -> ((f32, f32), (f32, f32)) {
    let step = (data.len() / 200_000).max(1);
    let mut sample: Vec<f32> = data
        .iter()
        .step_by(step)
        .copied()
        .filter(|v| v.is_finite())
        .collect();
    if sample.is_empty() {
        return ((0.0, 1.0), (0.0, 1.0));
    }
    sample.sort_by(f32::total_cmp);
    let at = |q: f64| sample[((sample.len() - 1) as f64 * q).round() as usize];
    let (min, max) = data
        .iter()
        .filter(|v| v.is_finite())
        .fold((f32::MAX, f32::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    ((at(0.005), at(0.995)), (min, max))
}

fn read_label(path: &std::path::Path, image: Arc<RasVolume>) -> Result<LoadedLabel, String> {
    let label = volume::read_volume(path).map_err(|e| e.to_string())?;
    let (ras, _) = label.to_ras();
    if ras.dims != image.dims {
        return Err(format!(
            "{}: label grid {:?} does not match the image's RAS grid {:?}",
            path.display(),
            ras.dims,
            image.dims
        ));
    }
    let max_diff = (0..3)
        .flat_map(|r| (0..4).map(move |c| (r, c)))
        .map(|(r, c)| (ras.world_from_voxel[r][c] - image.world_from_voxel[r][c]).abs())
        .fold(0.0, f64::max);
    if max_diff > 1e-2 {
        return Err(format!(
            "{}: label geometry differs from the image's (affines differ by up to {max_diff:.3} mm)",
            path.display()
        ));
    }
    let mut max_label = 0u16;
    let mut labels = Vec::with_capacity(ras.data.len());
    for &v in &ras.data {
        if !(v.is_finite() && v >= 0.0 && v <= u16::MAX as f32 && v.fract() == 0.0) {
            return Err(format!(
                "{}: holds the value {v}, which is not a class label (labels are whole numbers 0..65535)",
                path.display()
            ));
        }
        let l = v as u16;
        max_label = max_label.max(l);
        labels.push(l);
    }
    let mut seen = vec![false; max_label as usize + 1];
    for &l in &labels {
        seen[l as usize] = true;
    }
    let present = (0..=max_label).filter(|&l| seen[l as usize]).collect();
    Ok(LoadedLabel {
        present,
        image,
        path: path.to_path_buf(),
        labels: Arc::new(labels),
        max_label,
        names: label_table(path, &label.header),
    })
}

/// Label names from a NIfTI header extension holding a Caret XML `LabelTable`
/// (`<Label Key="1" ...><![CDATA[spleen]]></Label>`). Empty when there is none or it cannot
/// be read; names are a convenience, never a reason to refuse the file.
pub fn label_table(
    path: &std::path::Path,
    header: &nifti::NiftiHeader,
) -> std::collections::BTreeMap<u16, String> {
    use std::io::Read;
    let names = std::collections::BTreeMap::new();
    let end = header.vox_offset as usize;
    if !(353..=16 << 20).contains(&end) {
        return names;
    }
    let Ok(file) = std::fs::File::open(path) else {
        return names;
    };
    let gz = path.to_string_lossy().to_ascii_lowercase().ends_with(".gz");
    let mut bytes = Vec::with_capacity(end);
    let reader: Box<dyn Read> = if gz {
        Box::new(flate2::read::GzDecoder::new(file))
    } else {
        Box::new(file)
    };
    if reader.take(end as u64).read_to_end(&mut bytes).is_err() || bytes.len() < end {
        return names;
    }
    parse_label_table(&String::from_utf8_lossy(&bytes[352..]))
}

/// The `Key` -> name pairs of a Caret XML label table.
pub fn parse_label_table(xml: &str) -> std::collections::BTreeMap<u16, String> {
    let mut names = std::collections::BTreeMap::new();
    for part in xml.split("<Label ").skip(1) {
        let Some(key) = part
            .split_once("Key=\"")
            .and_then(|(_, rest)| rest.split_once('"'))
            .and_then(|(k, _)| k.trim().parse::<u16>().ok())
        else {
            continue;
        };
        let Some((_, body)) = part.split_once('>') else {
            continue;
        };
        let Some((text, _)) = body.split_once("</Label>") else {
            continue;
        };
        let text = text
            .trim()
            .trim_start_matches("<![CDATA[")
            .trim_end_matches("]]>")
            .trim();
        if !text.is_empty() && text.len() < 200 {
            names.insert(key, text.to_string());
        }
    }
    names
}

struct Model {
    network: Network,
    config: CheckpointConfig,
}

fn model_thread(
    choice: DeviceChoice,
    requests: Receiver<Request>,
    replies: Sender<Reply>,
    shared: Arc<Shared>,
    waker: Arc<dyn Fn() + Send + Sync>,
) {
    let selected = match device::select(choice) {
        Ok(s) => s,
        Err(e) => {
            let _ = replies.send(Reply::DeviceNote(format!("{e}; using the CPU backend")));
            device::select(DeviceChoice::Cpu).expect("the CPU backend is always available")
        }
    };
    let device = selected.device.clone();
    let _ = replies.send(Reply::DeviceNote(format!(
        "inference device: {}",
        selected.description
    )));
    waker();
    let mut model: Option<Model> = None;
    for request in requests {
        let reply = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            serve(request, &mut model, &device, &selected.description, &shared)
        }))
        .unwrap_or_else(|payload| {
            let message = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            Reply::Failed(format!("internal error in the model thread: {message}"))
        });
        if let Ok(mut task) = shared.task.lock() {
            *task = None;
        }
        let _ = replies.send(reply);
        waker();
    }
}

fn set_task(shared: &Shared, what: &str, done: usize, total: usize) {
    if let Ok(mut task) = shared.task.lock() {
        match task.as_mut() {
            Some(t) if t.what == what => {
                t.done = done;
                t.total = total;
            }
            _ => {
                *task = Some(Task {
                    what: what.into(),
                    done,
                    total,
                    started: Instant::now(),
                })
            }
        }
    }
}

fn serve(
    request: Request,
    model: &mut Option<Model>,
    device: &burn::tensor::Device,
    device_name: &str,
    shared: &Shared,
) -> Reply {
    match request {
        Request::LoadCheckpoint { path, arch } => {
            set_task(shared, "loading checkpoint", 0, 1);
            let Some(path) = path else {
                return Reply::Checkpoint(match checkpoint::load_demo(device) {
                    Ok(ckpt) => {
                        let space = &ckpt.config.network.space;
                        let own = ckpt.config.default_arch().and_then(|r| r.ok());
                        let code = own
                            .clone()
                            // The same default as `segment`: the super-net's own code, else
                            // every edge on.
                            .or_else(|| crate::arch::preset("all-conv", space).ok())
                            .unwrap_or_else(|| ArchCode::empty(space.num_layers, space.num_depths));
                        let info = ModelInfo {
                            source: "bundled demo super-net".into(),
                            path: None,
                            arch: code,
                            own_arch: own.is_some(),
                            monai: None,
                            config: ckpt.config.clone(),
                            num_params: ckpt.network.num_params(),
                            device: device_name.to_string(),
                        };
                        *model = Some(Model {
                            network: ckpt.network,
                            config: ckpt.config,
                        });
                        Ok(info)
                    }
                    Err(e) => Err(e.to_string()),
                });
            };
            let spec = arch.map(crate::monai::open::ArchSpec::File);
            Reply::Checkpoint(
                match crate::monai::open::open(&path, spec.as_ref(), device) {
                    Ok(opened) => {
                        let monai = match &opened.origin {
                            crate::monai::open::Origin::Native => None,
                            crate::monai::open::Origin::Monai(inferred) => {
                                Some(inferred.scheme.describe().to_string())
                            }
                        };
                        let own_arch = spec.is_some()
                            || opened.config.arch.is_some()
                            || matches!(&opened.origin, crate::monai::open::Origin::Monai(i) if i.decoded.is_some());
                        let info = ModelInfo {
                            source: path.display().to_string(),
                            path: Some(path.clone()),
                            arch: opened.arch,
                            own_arch,
                            monai,
                            config: opened.config.clone(),
                            num_params: opened.network.num_params(),
                            device: device_name.to_string(),
                        };
                        *model = Some(Model {
                            network: opened.network,
                            config: opened.config,
                        });
                        Ok(info)
                    }
                    Err(e) => Err(e),
                },
            )
        }
        Request::Segment { ras, job } => {
            let Some(m) = model.as_ref() else {
                return Reply::Segmented(Err("no checkpoint is loaded".into()));
            };
            Reply::Segmented(run_segment(m, device, ras, job, shared))
        }
        Request::ChannelWeights { ras, arch, patches } => {
            let Some(m) = model.as_ref() else {
                return Reply::Weights(ras, Err("no checkpoint is loaded".into()));
            };
            let result = run_weights(m, device, &ras, &arch, &patches, shared).map(|w| (arch, w));
            Reply::Weights(ras, result)
        }
    }
}

/// The box of RAS voxels covering one ROI of the processing grid around `center`.
pub fn roi_box(
    ras: &RasVolume,
    config: &CheckpointConfig,
    center: [usize; 3],
) -> ([usize; 3], [usize; 3]) {
    let mut start = [0; 3];
    let mut size = [0; 3];
    for a in 0..3 {
        let target = config.preprocess.spacing.map_or(ras.spacing[a], |s| s[a]);
        let want = ((config.roi[a] as f64 * target / ras.spacing[a]).ceil() as usize).max(1);
        let n = want.min(ras.dims[a]);
        let c = center[a].min(ras.dims[a] - 1);
        let s = c.saturating_sub(n / 2).min(ras.dims[a] - n);
        start[a] = s;
        size[a] = n;
    }
    (start, size)
}

/// Copies a box of a RAS volume into a volume of its own (with the matching affine).
fn crop(ras: &RasVolume, start: [usize; 3], size: [usize; 3]) -> Volume {
    let [nx, ny, _] = ras.dims;
    let mut data = Vec::with_capacity(size.iter().product());
    for z in start[2]..start[2] + size[2] {
        for y in start[1]..start[1] + size[1] {
            let row = (z * ny + y) * nx;
            data.extend_from_slice(&ras.data[row + start[0]..row + start[0] + size[0]]);
        }
    }
    let mut affine = ras.world_from_voxel;
    for (r, row) in affine.iter_mut().enumerate().take(3) {
        row[3] = ras.world_from_voxel[r][3]
            + (0..3)
                .map(|c| ras.world_from_voxel[r][c] * start[c] as f64)
                .sum::<f64>();
    }
    Volume::from_array(data, size, affine)
}

/// What to segment, and with what.
pub struct SegmentJob {
    pub arch: ArchCode,
    pub mode: WeightMode,
    pub region: Region,
    /// Sliding-window overlap.
    pub overlap: f32,
    /// The current prediction (kept outside an ROI; compared inside it).
    pub previous: Option<Arc<Vec<u16>>>,
    /// Ground truth for Dice.
    pub truth: Option<Arc<Vec<u16>>>,
}

fn run_segment(
    m: &Model,
    device: &burn::tensor::Device,
    ras: Arc<RasVolume>,
    job: SegmentJob,
    shared: &Shared,
) -> Result<SegmentOutcome, String> {
    let SegmentJob {
        arch,
        mode,
        region,
        overlap,
        previous,
        truth,
    } = job;
    let started = Instant::now();
    let (start, size) = match region {
        Region::Whole => ([0; 3], ras.dims),
        Region::Roi(center) => roi_box(&ras, &m.config, center),
    };
    let volume = crop(&ras, start, size);
    let what = match region {
        Region::Whole => "segmenting the volume",
        Region::Roi(_) => "segmenting the ROI",
    };
    let options = WindowOptions {
        roi: m.config.roi,
        overlap,
        blend: Blend::Gaussian,
        batch: 1,
        mode,
    };
    set_task(shared, what, 0, 1);
    let mut progress = |p: Progress| {
        set_task(shared, what, p.done, p.total);
        if shared.cancel.load(Ordering::SeqCst) {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    };
    let result = inference::segment(
        &m.network,
        device,
        &volume,
        &m.config.preprocess,
        &arch,
        &options,
        false,
        &mut progress,
    );
    let seg = match result {
        Ok(seg) => seg,
        Err(WindowError::Cancelled) => return Err("cancelled".into()),
        Err(e) => return Err(e.to_string()),
    };
    let total: usize = ras.dims.iter().product();
    let previous = previous.filter(|p| p.len() == total);
    let truth = truth.filter(|t| t.len() == total);
    let mut labels = previous
        .as_deref()
        .cloned()
        .unwrap_or_else(|| vec![0; total]);
    let classes = m.config.network.num_classes;
    let mut changed = 0usize;
    let mut inter = vec![0usize; classes];
    let mut pred_count = vec![0usize; classes];
    let mut true_count = vec![0usize; classes];
    let [nx, ny, _] = ras.dims;
    for z in 0..size[2] {
        for y in 0..size[1] {
            for x in 0..size[0] {
                let src = (z * size[1] + y) * size[0] + x;
                let dst = ((start[2] + z) * ny + start[1] + y) * nx + start[0] + x;
                let new = seg.labels[src];
                if labels[dst] != new {
                    changed += 1;
                }
                labels[dst] = new;
                if let Some(t) = &truth {
                    let t = t[dst] as usize;
                    let p = new as usize;
                    pred_count[p.min(classes - 1)] += 1;
                    if t < classes {
                        true_count[t] += 1;
                        if t == p {
                            inter[t] += 1;
                        }
                    }
                }
            }
        }
    }
    let dice = truth.as_ref().map(|_| {
        (0..classes)
            .map(|k| {
                let denom = pred_count[k] + true_count[k];
                if denom == 0 {
                    f64::NAN
                } else {
                    2.0 * inter[k] as f64 / denom as f64
                }
            })
            .collect()
    });
    Ok(SegmentOutcome {
        ras,
        labels,
        changed: previous.as_ref().map(|_| changed),
        dice,
        region: (start, size),
        elapsed: started.elapsed(),
        arch,
        mode,
    })
}

fn run_weights(
    m: &Model,
    device: &burn::tensor::Device,
    ras: &RasVolume,
    arch: &ArchCode,
    patches: &[PatchSpec],
    shared: &Shared,
) -> Result<Vec<PatchWeights>, String> {
    if !m.config.network.has_man() {
        return Err(
            "this checkpoint has no meta-assistant network (MAN), so it generates no \
                    channel weights"
                .into(),
        );
    }
    arch.validate(&m.config.network.space)
        .map_err(|e| e.to_string())?;
    let what = "computing channel weights";
    let roi = m.config.roi;
    let mut out = Vec::with_capacity(patches.len());
    for (i, spec) in patches.iter().enumerate() {
        set_task(shared, what, i, patches.len());
        if shared.cancel.load(Ordering::SeqCst) {
            return Err("cancelled".into());
        }
        let (start, size) = roi_box(ras, &m.config, spec.center);
        let prepared = inference::prepare(&crop(ras, start, size), &m.config.preprocess)
            .map_err(|e| e.to_string())?;
        let patch = fit_patch(&prepared.data, prepared.dims, roi);
        let input = Tensor::<5>::from_data(
            TensorData::new(patch, [1, 1, roi[0], roi[1], roi[2]]),
            device,
        );
        let weights = m
            .network
            .man_weights(input, arch)
            .map_err(|e| e.to_string())?
            .into_data()
            .try_to_vec::<f32>()
            .map_err(|e| format!("reading channel weights: {e:?}"))?;
        out.push(PatchWeights {
            spec: *spec,
            weights,
        });
    }
    Ok(out)
}

/// Centre-crops or zero-pads z-fastest data of `dims` to exactly `roi`.
fn fit_patch(data: &[f32], dims: [usize; 3], roi: [usize; 3]) -> Vec<f32> {
    let mut out = vec![0.0; roi.iter().product()];
    let offset: Vec<isize> = (0..3)
        .map(|a| (dims[a] as isize - roi[a] as isize) / 2)
        .collect();
    for x in 0..roi[0] {
        let sx = x as isize + offset[0];
        if sx < 0 || sx >= dims[0] as isize {
            continue;
        }
        for y in 0..roi[1] {
            let sy = y as isize + offset[1];
            if sy < 0 || sy >= dims[1] as isize {
                continue;
            }
            for z in 0..roi[2] {
                let sz = z as isize + offset[2];
                if sz < 0 || sz >= dims[2] as isize {
                    continue;
                }
                out[(x * roi[1] + y) * roi[2] + z] =
                    data[((sx as usize) * dims[1] + sy as usize) * dims[2] + sz as usize];
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caret_label_tables_give_names() {
        let xml = r#"<LabelTable>
<Label Key="1" Red="0.0" Green="1.0" Blue="0.0" Alpha="1"><![CDATA[spleen]]></Label>
<Label Key="5" Red="0.0">liver</Label>
<Label Key="x">bad key</Label>
</LabelTable>"#;
        let names = parse_label_table(xml);
        assert_eq!(names.len(), 2);
        assert_eq!(names[&1], "spleen");
        assert_eq!(names[&5], "liver");
    }

    #[test]
    fn fit_patch_centres_and_pads() {
        // 2x2x2 into 4x4x4: the data lands in the middle, zeros around it.
        let data: Vec<f32> = (1..=8).map(|v| v as f32).collect();
        let out = fit_patch(&data, [2, 2, 2], [4, 4, 4]);
        assert_eq!(out.iter().filter(|v| **v != 0.0).count(), 8);
        assert_eq!(out[(4 + 1) * 4 + 1], 1.0);
        // 4 -> 2 crops the centre.
        let big: Vec<f32> = (0..64).map(|v| v as f32).collect();
        let small = fit_patch(&big, [4, 4, 4], [2, 2, 2]);
        assert_eq!(small[0], big[(4 + 1) * 4 + 1]);
    }

    #[test]
    fn roi_box_stays_inside_the_volume() {
        let ras = RasVolume {
            data: vec![0.0; 10 * 20 * 30],
            dims: [10, 20, 30],
            spacing: [1.0, 1.0, 2.0],
            world_from_voxel: [
                [1.0, 0.0, 0.0, 0.0],
                [0.0, 1.0, 0.0, 0.0],
                [0.0, 0.0, 2.0, 0.0],
                [0.0, 0.0, 0.0, 1.0],
            ],
        };
        let mut config = CheckpointConfig::new(
            crate::model::NetworkConfig::demo(1, 2),
            vec!["a".into(), "b".into()],
        );
        config.roi = [8, 8, 8];
        config.preprocess.spacing = Some([1.0, 1.0, 1.0]);
        let (start, size) = roi_box(&ras, &config, [9, 0, 29]);
        assert_eq!(size, [8, 8, 4]);
        assert_eq!(start, [2, 0, 26]);
    }
}
