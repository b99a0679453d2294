// One slice of a volume with its label overlays, drawn into the rectangle egui gives a paint
// callback. The slice's voxels are uploaded once per slice change; window/level, colour map,
// overlay source, opacity, outline and class visibility are uniforms, so changing them never
// re-uploads voxels.

struct Slice {
    // Where the slice image lies, in framebuffer pixels (it may extend past the viewport
    // when zoomed in).
    image_min: vec2<f32>,
    image_size: vec2<f32>,
    // Window: intensities at lo map to black, at hi to white.
    window_lo: f32,
    window_hi: f32,
    // 0 grey, 1 inverted grey, 2 hot, 3 viridis-like.
    colormap: u32,
    // 0 none, 1 labels_a, 2 labels_b, 3 both (b as outline over a), 4 difference a vs b.
    overlay: u32,
    opacity: f32,
    // 1: draw only the boundary of each label region.
    outline: u32,
    _pad0: u32,
    _pad1: u32,
    background: vec4<f32>,
    // Bit k of the 256-bit mask set: class k is shown (classes 256 and above always are).
    class_mask: array<vec4<u32>, 2>,
    class_colors: array<vec4<f32>, 256>,
};

@group(0) @binding(0) var<uniform> slice: Slice;
@group(0) @binding(1) var intensity: texture_2d<f32>;
@group(0) @binding(2) var labels_a: texture_2d<u32>;
@group(0) @binding(3) var labels_b: texture_2d<u32>;

struct VertexOut {
    @builtin(position) position: vec4<f32>,
};

// A single triangle that covers the whole viewport.
@vertex
fn vs_main(@builtin(vertex_index) index: u32) -> VertexOut {
    let uv = vec2<f32>(f32((index << 1u) & 2u), f32(index & 2u));
    var out: VertexOut;
    out.position = vec4<f32>(uv * 2.0 - 1.0, 0.0, 1.0);
    return out;
}

fn colormap(t: f32) -> vec3<f32> {
    switch slice.colormap {
        case 1u: {
            return vec3<f32>(1.0 - t);
        }
        case 2u: {
            return clamp(vec3<f32>(3.0 * t, 3.0 * t - 1.0, 3.0 * t - 2.0), vec3<f32>(0.0), vec3<f32>(1.0));
        }
        case 3u: {
            // A smooth dark-blue -> teal -> yellow ramp.
            let c0 = vec3<f32>(0.267, 0.005, 0.329);
            let c1 = vec3<f32>(0.128, 0.567, 0.551);
            let c2 = vec3<f32>(0.993, 0.906, 0.144);
            if t < 0.5 {
                return mix(c0, c1, t * 2.0);
            }
            return mix(c1, c2, t * 2.0 - 1.0);
        }
        default: {
            return vec3<f32>(t);
        }
    }
}

fn visible(label: u32) -> bool {
    if label == 0u {
        return false;
    }
    if label >= 256u {
        return true;
    }
    let word = slice.class_mask[label / 128u][(label / 32u) % 4u];
    return ((word >> (label % 32u)) & 1u) == 1u;
}

fn class_color(label: u32) -> vec3<f32> {
    return slice.class_colors[min(label, 255u)].rgb;
}

fn load_label(which: u32, p: vec2<i32>, size: vec2<i32>) -> u32 {
    let q = clamp(p, vec2<i32>(0), size - vec2<i32>(1));
    if which == 0u {
        return textureLoad(labels_a, q, 0).r;
    }
    return textureLoad(labels_b, q, 0).r;
}

// True when `p` lies on the border of its label region (a 4-neighbour differs).
fn on_border(which: u32, p: vec2<i32>, size: vec2<i32>, label: u32) -> bool {
    return load_label(which, p + vec2<i32>(1, 0), size) != label
        || load_label(which, p - vec2<i32>(1, 0), size) != label
        || load_label(which, p + vec2<i32>(0, 1), size) != label
        || load_label(which, p - vec2<i32>(0, 1), size) != label;
}

fn blend_label(base: vec3<f32>, which: u32, p: vec2<i32>, size: vec2<i32>, outline: bool) -> vec3<f32> {
    let label = load_label(which, p, size);
    if !visible(label) {
        return base;
    }
    if outline {
        if on_border(which, p, size, label) {
            return class_color(label);
        }
        return base;
    }
    return mix(base, class_color(label), slice.opacity);
}

@fragment
fn fs_main(in: VertexOut) -> @location(0) vec4<f32> {
    let uv = (in.position.xy - slice.image_min) / slice.image_size;
    if any(uv < vec2<f32>(0.0)) || any(uv >= vec2<f32>(1.0)) {
        return slice.background;
    }
    let size = vec2<i32>(textureDimensions(intensity));
    let p = min(vec2<i32>(uv * vec2<f32>(size)), size - vec2<i32>(1));
    let value = textureLoad(intensity, p, 0).r;
    let width = max(slice.window_hi - slice.window_lo, 1e-6);
    var rgb = colormap(clamp((value - slice.window_lo) / width, 0.0, 1.0));

    let outline = slice.outline == 1u;
    switch slice.overlay {
        case 1u: {
            rgb = blend_label(rgb, 0u, p, size, outline);
        }
        case 2u: {
            rgb = blend_label(rgb, 1u, p, size, outline);
        }
        case 3u: {
            rgb = blend_label(rgb, 0u, p, size, outline);
            rgb = blend_label(rgb, 1u, p, size, true);
        }
        case 4u: {
            // Difference: red where only A labels the voxel (or labels it another class),
            // blue where only B does; agreement is left unshaded.
            let a = load_label(0u, p, size);
            let b = load_label(1u, p, size);
            if a != b && (visible(a) || visible(b)) {
                var c = vec3<f32>(0.15, 0.45, 1.0);
                if a != 0u && b != 0u {
                    c = vec3<f32>(1.0, 0.85, 0.1);
                } else if a != 0u {
                    c = vec3<f32>(1.0, 0.2, 0.15);
                }
                rgb = mix(rgb, c, max(slice.opacity, 0.5));
            }
        }
        default: {}
    }
    return vec4<f32>(rgb, 1.0);
}
