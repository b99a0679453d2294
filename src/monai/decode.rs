//! Decoding a DiNTS search-space checkpoint's architecture parameters into a code, as
//! MONAI's `TopologySearch.decode` does (DiNTS, He et al., CVPR 2021, section 3.4).
//!
//! Per layer, a "child" is a non-empty on/off pattern of the `E` edges; its probability is
//! `prod_e (p_e if on else 1 - p_e) / (1 - prod_e (1 - p_e))` with `p = sigmoid(log_alpha_a)`.
//! Consecutive children connect when the levels the later one reads are exactly the levels
//! the earlier one writes. The decoded topology is the path through the layers with the
//! least total cost `-ln(prob + 1e-5) + 0.001` (MONAI runs Dijkstra on this layered graph;
//! on a layered DAG that is the dynamic programme below). Each active edge takes the op
//! with the largest `log_alpha_c`.

use crate::arch::{ArchCode, Op, num_edges};

/// Decodes `log_alpha_a` (`layers x E`, row-major) and `log_alpha_c` (`layers x E x ops`)
/// over the first `ops` DiNTS ops. Returns `None` when the sizes do not fit.
pub fn decode(
    log_alpha_a: &[f64],
    log_alpha_c: &[f64],
    layers: usize,
    depths: usize,
    ops: usize,
) -> Option<ArchCode> {
    let edges = num_edges(depths);
    if layers == 0
        || edges == 0
        || edges > 24
        || ops == 0
        || ops > Op::ALL.len()
        || log_alpha_a.len() != layers * edges
        || log_alpha_c.len() != layers * edges * ops
    {
        return None;
    }
    let children = (1usize << edges) - 1;
    // Child k (MONAI's `child_list[k]`) is the pattern of the integer k + 1 with edge 0 as
    // the most significant bit (the order of MONAI's `_dfs`).
    let on = |k: usize, e: usize| ((k + 1) >> (edges - 1 - e)) & 1 == 1;
    let edge_levels: Vec<(usize, usize)> = (0..edges)
        .map(|e| {
            let s = e + 1;
            let target = s / 3;
            (target + s % 3 - 1, target)
        })
        .collect();
    let mask = |k: usize, pick_source: bool| -> usize {
        (0..edges)
            .filter(|&e| on(k, e))
            .map(|e| {
                let (source, target) = edge_levels[e];
                1usize << if pick_source { source } else { target }
            })
            .fold(0, |m, b| m | b)
    };
    let reads: Vec<usize> = (0..children).map(|k| mask(k, true)).collect();
    let writes: Vec<usize> = (0..children).map(|k| mask(k, false)).collect();

    let cost = |layer: usize| -> Vec<f64> {
        let p: Vec<f64> = (0..edges)
            .map(|e| 1.0 / (1.0 + (-log_alpha_a[layer * edges + e]).exp()))
            .collect();
        let norm = 1.0 - p.iter().map(|p| 1.0 - p).product::<f64>();
        (0..children)
            .map(|k| {
                let prob: f64 = (0..edges)
                    .map(|e| if on(k, e) { p[e] } else { 1.0 - p[e] })
                    .product::<f64>()
                    / norm;
                -(prob + 1e-5).ln() + 0.001
            })
            .collect()
    };

    // Dynamic programme over layers; `back[l][k]` is the best child of layer l - 1.
    let mut dist = cost(0);
    let mut back: Vec<Vec<usize>> = Vec::with_capacity(layers);
    back.push(vec![usize::MAX; children]);
    let levels = 1usize << depths;
    for layer in 1..layers {
        let mut best = vec![(f64::INFINITY, usize::MAX); levels];
        for (i, &d) in dist.iter().enumerate() {
            if d < best[writes[i]].0 {
                best[writes[i]] = (d, i);
            }
        }
        let w = cost(layer);
        let mut next = vec![f64::INFINITY; children];
        let mut from = vec![usize::MAX; children];
        for j in 0..children {
            let (d, i) = best[reads[j]];
            if i != usize::MAX {
                next[j] = d + w[j];
                from[j] = i;
            }
        }
        dist = next;
        back.push(from);
    }

    let mut k = (0..children)
        .filter(|&k| dist[k].is_finite())
        .min_by(|&a, &b| dist[a].total_cmp(&dist[b]))?;
    let mut code = ArchCode::empty(layers, depths);
    for layer in (0..layers).rev() {
        for e in 0..edges {
            if on(k, e) {
                let row = &log_alpha_c[(layer * edges + e) * ops..(layer * edges + e + 1) * ops];
                let best = (0..ops).fold(0, |b, o| if row[o] > row[b] { o } else { b });
                code.set(layer, e, Op::from_dints_index(best));
            }
        }
        if layer > 0 {
            k = back[layer][k];
        }
    }
    Some(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strong_preferences_decode_to_that_topology() {
        // Two levels (E = 4), two layers. Layer 0 strongly wants edges 0 and 2 (0->0, 0->1);
        // layer 1 wants edges 1 and 3 (1->0, 1->1) but reading level 1 alone is not
        // allowed after a layer that writes both levels, so the likelier of the two edges
        // out of level 0 (edge 0, 0->0) joins in.
        let big = 8.0;
        let a = vec![
            big, -big, big, -big, //
            -4.0, big, -big, big,
        ];
        let mut c = vec![0.0; 2 * 4 * 5];
        c[(4 + 3) * 5 + 4] = 1.0; // layer 1 (offset 4 edges) edge 3: conv_1x3x3
        let code = decode(&a, &c, 2, 2, 5).unwrap();
        let on: Vec<Vec<bool>> = (0..2)
            .map(|l| (0..4).map(|e| code.get(l, e).is_some()).collect())
            .collect();
        assert_eq!(on[0], vec![true, false, true, false]);
        assert_eq!(on[1], vec![true, true, false, true]);
        assert_eq!(code.get(1, 3), Some(Op::Conv1x3x3));
        assert_eq!(code.get(0, 0), Some(Op::Skip));
    }

    #[test]
    fn wrong_sizes_are_refused() {
        assert!(decode(&[0.0; 3], &[0.0; 20], 1, 2, 5).is_none());
    }
}
