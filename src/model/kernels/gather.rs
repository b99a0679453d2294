//! Convolution by gathered columns (im2col one tile at a time), for any stride: each tile
//! of output positions gathers its `[c_in * taps, tile]` input matrix (zeros where a tap
//! falls in the padding, ReLU applied) and multiplies it once by the weights as PyTorch
//! stores them, `[c_out, c_in * taps]`.
//!
//! It serves the convolutions that the padded-grid kernels do not: strided ones (DiNTS's
//! down-sampling stems), the deepest levels' small volumes with many channels, where a
//! tile per output plane would leave too little work per product, and 1x1x1 kernels, where
//! the gather is only the ReLU copy (or nothing: without ReLU the input is the matrix).

use rayon::prelude::*;

use super::{ConvShape, SharedPtr, matmul};

/// Target size, in floats, of one tile's gathered matrix: 1 MiB, in this core's cache.
const COLUMN_FLOATS: usize = 256 * 1024;

/// Output volumes up to this many positions are gathered whole and multiplied once, the
/// product split over the threads by `gemm` (tiles alone would leave threads idle).
const WHOLE_POSITIONS: usize = 4096;

/// Output side of a convolution with "same" padding (`kernel / 2`) and `stride`.
pub fn output_side(side: usize, stride: usize) -> usize {
    if side == 0 {
        0
    } else {
        (side - 1) / stride + 1
    }
}

/// `conv(relu(input))` (or `conv(input)`) with "same" padding and `stride`.
///
/// # Shapes
/// - input: `[c_in, shape.size]`
/// - weight: `[c_out, c_in, kernel]`
/// - output: `[c_out, out]` with `out` = [`output_side`] of each input side
///
/// # Panics
/// If `stride` is 0 or a slice length disagrees with `shape`.
pub fn conv3d_gather(
    input: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    shape: ConvShape,
    stride: usize,
    relu_input: bool,
) -> Vec<f32> {
    assert!(stride > 0, "stride 0");
    shape.check(input, weight, bias);
    let ConvShape {
        c_in,
        c_out,
        size,
        kernel,
    } = shape;
    let taps: usize = kernel.iter().product();
    let depth = c_in * taps;
    let out_size = size.map(|s| output_side(s, stride));
    let positions: usize = out_size.iter().product();
    let len = c_out * positions;
    // With a bias the products add onto it; without one they overwrite the output, which is
    // then not zeroed first (its length is set after the products).
    let mut out: Vec<f32> = match bias {
        Some(bias) => bias
            .iter()
            .flat_map(|&b| std::iter::repeat_n(b, positions))
            .collect(),
        None if depth == 0 => vec![0.0; len],
        None => Vec::with_capacity(len),
    };
    if len == 0 || depth == 0 {
        return out;
    }
    let geometry = Geometry {
        size,
        kernel,
        stride,
        out_size,
        relu: relu_input,
    };
    let input_volume = shape.volume();
    let in_place = taps == 1 && stride == 1 && !relu_input;

    if positions <= WHOLE_POSITIONS && !in_place {
        let mut columns = vec![0f32; depth * positions];
        columns
            .par_chunks_mut(taps * positions)
            .zip(input.par_chunks(input_volume))
            .for_each(|(rows, channel)| {
                for (tap, row) in rows.chunks_mut(positions).enumerate() {
                    geometry.gather(channel, tap, 0, row);
                }
            });
        // SAFETY: out is `c_out x positions`, weight `c_out x depth`, columns
        // `depth x positions`, all row-major and inside their buffers.
        unsafe {
            matmul(
                [c_out, positions, depth],
                (out.as_mut_ptr(), positions),
                (weight.as_ptr(), depth),
                (columns.as_ptr(), positions),
                bias.is_some(),
                true,
            );
            // SAFETY: the product wrote all `len` floats (or added onto the bias values);
            // `len` is within the capacity.
            out.set_len(len);
        }
        return out;
    }

    let tile = (COLUMN_FLOATS / depth)
        .clamp(16, positions.max(16))
        .next_multiple_of(16);
    let tiles = positions.div_ceil(tile);
    let dst = SharedPtr(out.as_mut_ptr());
    (0..tiles)
        .into_par_iter()
        .for_each_init(Vec::new, |columns: &mut Vec<f32>, t| {
            let q0 = t * tile;
            let n = tile.min(positions - q0);
            // A 1x1x1 kernel at stride 1 without ReLU multiplies the input in place.
            let (rows, row_stride) = if in_place {
                (&input[q0..], input_volume)
            } else {
                columns.resize(depth * n, 0.0);
                for (ci, channel) in input.chunks(input_volume).enumerate() {
                    for tap in 0..taps {
                        let row = &mut columns[(ci * taps + tap) * n..][..n];
                        geometry.gather(channel, tap, q0, row);
                    }
                }
                (&columns[..], n)
            };
            // SAFETY: this task writes columns q0..q0 + n of the `c_out x positions`
            // output only; weight is `c_out x depth`; rows is `depth x n` at row stride
            // row_stride (the input's channels, or the gathered columns).
            unsafe {
                matmul(
                    [c_out, n, depth],
                    (dst.get().add(q0), positions),
                    (weight.as_ptr(), depth),
                    (rows.as_ptr(), row_stride),
                    bias.is_some(),
                    false,
                );
            }
        });
    // SAFETY: the tiles cover all positions of every output channel and each product
    // wrote its columns (or added onto the bias values); `len` is within the capacity.
    unsafe { out.set_len(len) };
    out
}

/// Where the taps of a convolution read.
struct Geometry {
    size: [usize; 3],
    kernel: [usize; 3],
    stride: usize,
    out_size: [usize; 3],
    relu: bool,
}

impl Geometry {
    /// Input index along one axis for output `o` and kernel offset `k` (padding `pad`),
    /// if inside the volume.
    fn source(&self, axis: usize, o: usize, k: usize) -> Option<usize> {
        let pad = self.kernel[axis] / 2;
        (o * self.stride + k)
            .checked_sub(pad)
            .filter(|&i| i < self.size[axis])
    }

    /// Fills `row` with tap `tap` of `channel` for the output positions `q0..q0 + len`.
    fn gather(&self, channel: &[f32], tap: usize, q0: usize, row: &mut [f32]) {
        let [_, k1, k2] = self.kernel;
        let (a, b, c) = (tap / (k1 * k2), tap / k2 % k1, tap % k2);
        let [_, oh, ow] = self.out_size;
        let [_, h, w] = self.size;
        let s = self.stride;
        let pad = k2 / 2;
        // Output columns x whose tap lands inside the row: x * s + c - pad in 0..w.
        let lo = pad.saturating_sub(c).div_ceil(s).min(ow);
        let hi = if w + pad > c {
            ((w + pad - c - 1) / s + 1).min(ow)
        } else {
            0
        }
        .max(lo);
        let mut q = q0;
        let mut done = 0;
        while done < row.len() {
            let (oz, rest) = (q / (oh * ow), q % (oh * ow));
            let (oy, ox0) = (rest / ow, rest % ow);
            let run = (ow - ox0).min(row.len() - done);
            let dst = &mut row[done..done + run];
            let line = match (self.source(0, oz, a), self.source(1, oy, b)) {
                (Some(z), Some(y)) => Some(&channel[(z * h + y) * w..][..w]),
                _ => None,
            };
            match line {
                None => dst.fill(0.0),
                Some(line) => {
                    // Columns ox0..ox0 + run: zeros before lo and from hi on.
                    let from = lo.clamp(ox0, ox0 + run) - ox0;
                    let to = hi.clamp(ox0, ox0 + run) - ox0;
                    dst[..from].fill(0.0);
                    dst[to..].fill(0.0);
                    if from < to {
                        let first = (ox0 + from) * s + c - pad;
                        let src = line[first..].iter().step_by(s);
                        let relu = self.relu;
                        for (d, &v) in dst[from..to].iter_mut().zip(src) {
                            // Not `max`: NaN stays NaN, as in PyTorch.
                            *d = if relu && v < 0.0 { 0.0 } else { v };
                        }
                    }
                }
            }
            done += run;
            q += run;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{assert_close, operands, reference};
    use super::*;

    /// The reference at stride 1, subsampled: a "same"-padded convolution at stride s is
    /// the stride-1 one at every s-th position.
    fn strided_reference(
        input: &[f32],
        weight: &[f32],
        bias: Option<&[f32]>,
        shape: ConvShape,
        stride: usize,
        relu: bool,
    ) -> Vec<f32> {
        let full = reference(input, weight, bias, shape, relu);
        let [d, h, w] = shape.size;
        let mut out = Vec::new();
        for co in 0..shape.c_out {
            for z in (0..d).step_by(stride) {
                for y in (0..h).step_by(stride) {
                    for x in (0..w).step_by(stride) {
                        out.push(full[((co * d + z) * h + y) * w + x]);
                    }
                }
            }
        }
        out
    }

    #[test]
    fn gathered_convolution_matches_a_direct_loop() {
        let cases = [
            ([3, 3, 3], [5, 4, 6], 3, 4, 1, true, false),
            ([3, 3, 3], [6, 7, 5], 2, 3, 2, true, true),
            ([3, 3, 3], [1, 2, 3], 2, 2, 2, false, false),
            ([1, 1, 1], [4, 6, 8], 5, 3, 1, true, true),
            ([1, 1, 1], [4, 6, 8], 3, 2, 2, false, false),
            ([1, 1, 1], [4, 6, 8], 3, 4, 1, false, true),
            ([3, 1, 3], [5, 3, 4], 3, 2, 1, false, true),
            ([1, 3, 3], [7, 6, 9], 2, 5, 3, true, false),
        ];
        for (i, (kernel, size, c_in, c_out, stride, relu, with_bias)) in
            cases.into_iter().enumerate()
        {
            let shape = ConvShape {
                c_in,
                c_out,
                size,
                kernel,
            };
            let (input, weight, bias) = operands(shape, 40 + 3 * i as u32, with_bias);
            let ours = conv3d_gather(&input, &weight, bias.as_deref(), shape, stride, relu);
            let want = strided_reference(&input, &weight, bias.as_deref(), shape, stride, relu);
            assert_close(&ours, &want, 1e-5, &format!("case {i} ({kernel:?})"));
        }
    }

    #[test]
    fn tiled_path_matches_a_direct_loop() {
        // More positions than WHOLE_POSITIONS, so the product runs tile by tile.
        let shape = ConvShape {
            c_in: 2,
            c_out: 3,
            size: [18, 17, 16],
            kernel: [3, 3, 3],
        };
        assert!(shape.volume() > WHOLE_POSITIONS);
        let (input, weight, _) = operands(shape, 61, false);
        let ours = conv3d_gather(&input, &weight, None, shape, 1, true);
        let want = reference(&input, &weight, None, shape, true);
        assert_close(&ours, &want, 1e-5, "tiled");
    }

    #[test]
    fn fewer_positions_than_one_tile() {
        // A 1x1x1 kernel without ReLU runs in place, tile by tile, even on 2 x 2 x 3.
        for size in [[2, 2, 2], [2, 2, 3], [1, 1, 1]] {
            let shape = ConvShape {
                c_in: 4,
                c_out: 2,
                size,
                kernel: [1, 1, 1],
            };
            for with_bias in [true, false] {
                let (input, weight, bias) = operands(shape, 5, with_bias);
                let ours = conv3d_gather(&input, &weight, bias.as_deref(), shape, 1, false);
                let want = reference(&input, &weight, bias.as_deref(), shape, false);
                assert_close(&ours, &want, 1e-5, "small");
            }
        }
    }
}
