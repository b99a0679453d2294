//! GPU drawing of slices: a WGSL shader (`shaders/slice.wgsl`) run in egui_wgpu paint
//! callbacks.
//!
//! Each of the three views owns an intensity texture and two label textures holding its
//! current slice. They are written only when the slice (or a label map) changes; window,
//! level, colour map and overlay settings travel as a small uniform buffer every frame.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use eframe::egui_wgpu::{self, CallbackResources, CallbackTrait, ScreenDescriptor};
use egui::Rect;

/// Source of the shader, compiled into the binary.
pub const SLICE_SHADER: &str = include_str!("../../shaders/slice.wgsl");

static UPLOADS: AtomicUsize = AtomicUsize::new(0);

/// How many slice uploads (intensity and labels of one view) this process has made. Window,
/// level, colour map and overlay changes do not add to it.
pub fn upload_count() -> usize {
    UPLOADS.load(Ordering::Relaxed)
}

/// Number of class colours the shader knows; higher labels reuse the last colour.
pub const SHADER_CLASSES: usize = 256;

/// The uniform block of `slice.wgsl`, byte for byte.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct SliceUniforms {
    pub image_min: [f32; 2],
    pub image_size: [f32; 2],
    pub window_lo: f32,
    pub window_hi: f32,
    pub colormap: u32,
    pub overlay: u32,
    pub opacity: f32,
    pub outline: u32,
    pub _pad0: u32,
    pub _pad1: u32,
    pub background: [f32; 4],
    /// Bit k (word k / 32): class k is shown.
    pub class_mask: [u32; SHADER_CLASSES / 32],
    pub class_colors: [[f32; 4]; SHADER_CLASSES],
}

/// The pixels of one slice in display order (row-major, top row first).
pub struct SliceImages {
    /// Bumped whenever any of the arrays changes; the renderer re-uploads on a change.
    pub generation: u64,
    pub width: usize,
    pub height: usize,
    pub intensity: Vec<f32>,
    pub labels_a: Vec<u16>,
    pub labels_b: Vec<u16>,
}

struct ViewTextures {
    generation: u64,
    size: (usize, usize),
    uniforms: wgpu::Buffer,
    bind_group: wgpu::BindGroup,
    textures: [wgpu::Texture; 3],
}

/// The pipeline and per-view GPU resources, kept in egui_wgpu's callback resources.
pub struct SliceRenderer {
    pipeline: wgpu::RenderPipeline,
    layout: wgpu::BindGroupLayout,
    views: Vec<Option<ViewTextures>>,
}

impl SliceRenderer {
    /// Builds the pipeline for a render target of `format`.
    pub fn new(device: &wgpu::Device, format: wgpu::TextureFormat) -> Self {
        let shader = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("hypersegnas slice shader"),
            source: wgpu::ShaderSource::Wgsl(SLICE_SHADER.into()),
        });
        let texture_entry = |binding: u32, sample_type| wgpu::BindGroupLayoutEntry {
            binding,
            visibility: wgpu::ShaderStages::FRAGMENT,
            ty: wgpu::BindingType::Texture {
                sample_type,
                view_dimension: wgpu::TextureViewDimension::D2,
                multisampled: false,
            },
            count: None,
        };
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("hypersegnas slice bindings"),
            entries: &[
                wgpu::BindGroupLayoutEntry {
                    binding: 0,
                    visibility: wgpu::ShaderStages::FRAGMENT,
                    ty: wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Uniform,
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                    count: None,
                },
                texture_entry(1, wgpu::TextureSampleType::Float { filterable: false }),
                texture_entry(2, wgpu::TextureSampleType::Uint),
                texture_entry(3, wgpu::TextureSampleType::Uint),
            ],
        });
        let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some("hypersegnas slice pipeline layout"),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let pipeline = device.create_render_pipeline(&wgpu::RenderPipelineDescriptor {
            label: Some("hypersegnas slice pipeline"),
            layout: Some(&pipeline_layout),
            vertex: wgpu::VertexState {
                module: &shader,
                entry_point: Some("vs_main"),
                buffers: &[],
                compilation_options: Default::default(),
            },
            fragment: Some(wgpu::FragmentState {
                module: &shader,
                entry_point: Some("fs_main"),
                targets: &[Some(wgpu::ColorTargetState {
                    format,
                    blend: None,
                    write_mask: wgpu::ColorWrites::ALL,
                })],
                compilation_options: Default::default(),
            }),
            primitive: wgpu::PrimitiveState::default(),
            depth_stencil: None,
            multisample: wgpu::MultisampleState::default(),
            multiview_mask: None,
            cache: None,
        });
        Self {
            pipeline,
            layout,
            views: Vec::new(),
        }
    }

    /// Registers a renderer with egui_wgpu so that [`SliceCallback`]s can draw.
    pub fn install(render_state: &egui_wgpu::RenderState) {
        let renderer = Self::new(&render_state.device, render_state.target_format);
        render_state
            .renderer
            .write()
            .callback_resources
            .insert(renderer);
    }

    fn upload(
        &mut self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        view: usize,
        images: &SliceImages,
    ) {
        if self.views.len() <= view {
            self.views.resize_with(view + 1, || None);
        }
        let size = (images.width.max(1), images.height.max(1));
        let reuse = matches!(&self.views[view], Some(v) if v.size == size);
        if !reuse {
            self.views[view] = Some(self.create_view(device, size));
        }
        let Some(target) = self.views[view].as_mut() else {
            return;
        };
        if target.generation == images.generation && reuse {
            return;
        }
        let extent = wgpu::Extent3d {
            width: size.0 as u32,
            height: size.1 as u32,
            depth_or_array_layers: 1,
        };
        let write = |texture: &wgpu::Texture, bytes: &[u8], bytes_per_texel: usize| {
            queue.write_texture(
                wgpu::TexelCopyTextureInfo {
                    texture,
                    mip_level: 0,
                    origin: wgpu::Origin3d::ZERO,
                    aspect: wgpu::TextureAspect::All,
                },
                bytes,
                wgpu::TexelCopyBufferLayout {
                    offset: 0,
                    bytes_per_row: Some((size.0 * bytes_per_texel) as u32),
                    rows_per_image: Some(size.1 as u32),
                },
                extent,
            );
        };
        let pixels = size.0 * size.1;
        let fit_f32 = |v: &[f32]| -> Vec<f32> {
            let mut out = v.to_vec();
            out.resize(pixels, 0.0);
            out
        };
        let fit_u16 = |v: &[u16]| -> Vec<u16> {
            let mut out = v.to_vec();
            out.resize(pixels, 0);
            out
        };
        write(
            &target.textures[0],
            bytemuck::cast_slice(&fit_f32(&images.intensity)),
            4,
        );
        write(
            &target.textures[1],
            bytemuck::cast_slice(&fit_u16(&images.labels_a)),
            2,
        );
        write(
            &target.textures[2],
            bytemuck::cast_slice(&fit_u16(&images.labels_b)),
            2,
        );
        target.generation = images.generation;
        UPLOADS.fetch_add(1, Ordering::Relaxed);
    }

    fn create_view(&self, device: &wgpu::Device, size: (usize, usize)) -> ViewTextures {
        let texture = |format, label| {
            device.create_texture(&wgpu::TextureDescriptor {
                label: Some(label),
                size: wgpu::Extent3d {
                    width: size.0 as u32,
                    height: size.1 as u32,
                    depth_or_array_layers: 1,
                },
                mip_level_count: 1,
                sample_count: 1,
                dimension: wgpu::TextureDimension::D2,
                format,
                usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST,
                view_formats: &[],
            })
        };
        let textures = [
            texture(wgpu::TextureFormat::R32Float, "slice intensity"),
            texture(wgpu::TextureFormat::R16Uint, "slice labels a"),
            texture(wgpu::TextureFormat::R16Uint, "slice labels b"),
        ];
        let uniforms = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("slice uniforms"),
            size: std::mem::size_of::<SliceUniforms>() as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let views: Vec<wgpu::TextureView> = textures
            .iter()
            .map(|t| t.create_view(&wgpu::TextureViewDescriptor::default()))
            .collect();
        let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("slice bind group"),
            layout: &self.layout,
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: uniforms.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 1,
                    resource: wgpu::BindingResource::TextureView(&views[0]),
                },
                wgpu::BindGroupEntry {
                    binding: 2,
                    resource: wgpu::BindingResource::TextureView(&views[1]),
                },
                wgpu::BindGroupEntry {
                    binding: 3,
                    resource: wgpu::BindingResource::TextureView(&views[2]),
                },
            ],
        });
        ViewTextures {
            generation: u64::MAX,
            size,
            uniforms,
            bind_group,
            textures,
        }
    }
}

/// Draws view `view` with `images` and `uniforms` (image placement in points; converted to
/// pixels in `prepare`).
pub struct SliceCallback {
    pub view: usize,
    pub images: Arc<SliceImages>,
    pub uniforms: SliceUniforms,
    /// Where the image lies, in points.
    pub image_rect: Rect,
}

impl CallbackTrait for SliceCallback {
    fn prepare(
        &self,
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        screen: &ScreenDescriptor,
        _encoder: &mut wgpu::CommandEncoder,
        resources: &mut CallbackResources,
    ) -> Vec<wgpu::CommandBuffer> {
        let Some(renderer) = resources.get_mut::<SliceRenderer>() else {
            return Vec::new();
        };
        renderer.upload(device, queue, self.view, &self.images);
        if let Some(Some(target)) = renderer.views.get(self.view) {
            let ppp = screen.pixels_per_point;
            let mut uniforms = self.uniforms;
            uniforms.image_min = [self.image_rect.min.x * ppp, self.image_rect.min.y * ppp];
            uniforms.image_size = [
                (self.image_rect.width() * ppp).max(1.0),
                (self.image_rect.height() * ppp).max(1.0),
            ];
            queue.write_buffer(&target.uniforms, 0, bytemuck::bytes_of(&uniforms));
        }
        Vec::new()
    }

    fn paint(
        &self,
        _info: egui::PaintCallbackInfo,
        render_pass: &mut wgpu::RenderPass<'static>,
        resources: &CallbackResources,
    ) {
        let Some(renderer) = resources.get::<SliceRenderer>() else {
            return;
        };
        let Some(Some(target)) = renderer.views.get(self.view) else {
            return;
        };
        render_pass.set_pipeline(&renderer.pipeline);
        render_pass.set_bind_group(0, &target.bind_group, &[]);
        render_pass.draw(0..3, 0..1);
    }
}
