//! Uniform sampling of valid architecture codes.
//!
//! A code is valid when every active edge leaves an active node and the last layer writes
//! at least one level (see [`ArchCode::problems`]). Whether layer `l` can be filled in a
//! certain way depends only on the set of levels that layer `l - 1` wrote, so the number of
//! valid completions from any layer and input set is a small dynamic programme over the
//! `2^D` level sets. Drawing the next output set with probability proportional to
//! (ways to reach it) x (completions after it), then the edges given both sets, yields
//! every valid code with exactly equal probability.

use rand::{Rng, SeedableRng, rngs::StdRng};

use super::{ArchCode, SearchSpace};

/// Number of ways one layer can turn input level set `inputs` into exactly output level set
/// `outputs`: every target in `outputs` needs at least one active edge from an input level
/// (each active edge picks one of the `ops` ops), every other target none.
fn transitions(space: &SearchSpace, inputs: usize, outputs: usize) -> f64 {
    let choices = (space.ops.len() + 1) as f64;
    let mut ways = 1.0;
    for target in 0..space.num_depths {
        let feeding = space
            .edges()
            .iter()
            .filter(|e| e.target == target && inputs & (1 << e.source) != 0)
            .count();
        if outputs & (1 << target) != 0 {
            if feeding == 0 {
                return 0.0;
            }
            ways *= choices.powi(feeding as i32) - 1.0;
        }
    }
    ways
}

/// `completions[l][s]`: valid ways to fill layers `l..L` when layer `l` may read the levels
/// in set `s`. Layer 0 may read every level (all input stems exist).
fn completions(space: &SearchSpace) -> Vec<Vec<f64>> {
    let sets = 1usize << space.num_depths;
    let layers = space.num_layers;
    let mut table = vec![vec![0.0; sets]; layers + 1];
    for (set, value) in table[layers].iter_mut().enumerate() {
        *value = if set != 0 { 1.0 } else { 0.0 };
    }
    for layer in (0..layers).rev() {
        for inputs in 0..sets {
            table[layer][inputs] = (0..sets)
                .map(|outputs| transitions(space, inputs, outputs) * table[layer + 1][outputs])
                .sum();
        }
    }
    table
}

/// The number of valid codes of a search space (as f64: it is about 1e57 for the paper's).
pub fn count_valid(space: &SearchSpace) -> f64 {
    let all = (1usize << space.num_depths) - 1;
    completions(space)[0][all]
}

/// Draws a valid architecture code uniformly at random over all valid codes of `space`,
/// reproducibly for a given `seed`.
pub fn sample_uniform(space: &SearchSpace, seed: u64) -> ArchCode {
    let mut rng = StdRng::seed_from_u64(seed);
    sample_with(space, &mut rng)
}

/// As [`sample_uniform`], drawing from a caller's random number generator.
pub fn sample_with<R: Rng>(space: &SearchSpace, rng: &mut R) -> ArchCode {
    let table = completions(space);
    let sets = 1usize << space.num_depths;
    let edges = space.edges();
    let mut code = ArchCode::empty(space.num_layers, space.num_depths);
    let mut inputs = sets - 1;
    for layer in 0..space.num_layers {
        // Pick this layer's output set.
        let weights: Vec<f64> = (0..sets)
            .map(|o| transitions(space, inputs, o) * table[layer + 1][o])
            .collect();
        let total: f64 = weights.iter().sum();
        let mut pick = rng.random::<f64>() * total;
        let mut outputs = sets - 1;
        for (o, w) in weights.iter().enumerate() {
            if *w > 0.0 {
                outputs = o;
                if pick < *w {
                    break;
                }
                pick -= w;
            }
        }

        // Pick the edges into each output level: uniform over the non-empty assignments.
        for target in 0..space.num_depths {
            if outputs & (1 << target) == 0 {
                continue;
            }
            let feeding: Vec<usize> = (0..edges.len())
                .filter(|&i| edges[i].target == target && inputs & (1 << edges[i].source) != 0)
                .collect();
            loop {
                let draw: Vec<usize> = feeding
                    .iter()
                    .map(|_| rng.random_range(0..=space.ops.len()))
                    .collect();
                if draw.iter().any(|&d| d > 0) {
                    for (&edge, &d) in feeding.iter().zip(&draw) {
                        let op = (d > 0).then(|| space.ops[d - 1]);
                        code.set(layer, edge, op);
                    }
                    break;
                }
            }
        }
        inputs = outputs;
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Brute force over every code of a tiny space: the count must match, and the sampler
    /// must hit each valid code about equally often.
    #[test]
    fn uniform_over_valid_codes_of_a_tiny_space() {
        let space = SearchSpace::hypersegnas(2, 2); // 2 layers x 4 edges x (off, skip, conv)
        let cells = 2 * 4;
        let mut valid = 0usize;
        for n in 0..3usize.pow(cells as u32) {
            let mut code = ArchCode::empty(2, 2);
            let mut rest = n;
            for i in 0..cells {
                let d = rest % 3;
                rest /= 3;
                code.set(i / 4, i % 4, (d > 0).then(|| space.ops[d - 1]));
            }
            if code.problems(&space).is_empty() {
                valid += 1;
            }
        }
        assert_eq!(count_valid(&space), valid as f64);

        let draws = 100 * valid;
        let mut rng = StdRng::seed_from_u64(3);
        let mut hits: HashMap<ArchCode, usize> = HashMap::new();
        for _ in 0..draws {
            let code = sample_with(&space, &mut rng);
            assert!(code.problems(&space).is_empty());
            *hits.entry(code).or_default() += 1;
        }
        assert_eq!(hits.len(), valid, "every valid code must be reachable");
        // Expected 100 per code; a 5-sigma band of the binomial is about +-50.
        for (code, n) in &hits {
            assert!(
                (50..=150).contains(n),
                "{n} hits for\n{}",
                code.to_grid_string()
            );
        }
    }

    #[test]
    fn same_seed_same_code() {
        let space = SearchSpace::hypersegnas(12, 4);
        assert_eq!(sample_uniform(&space, 11), sample_uniform(&space, 11));
        assert_ne!(sample_uniform(&space, 11), sample_uniform(&space, 12));
    }

    #[test]
    fn paper_space_rates_are_plausible() {
        // With three choices per edge and most nodes active, an edge is active about two
        // thirds of the time and skip and conv are equally likely.
        let space = SearchSpace::hypersegnas(12, 4);
        let mut rng = StdRng::seed_from_u64(5);
        let (mut active, mut conv, mut total) = (0usize, 0usize, 0usize);
        for _ in 0..2000 {
            let code = sample_with(&space, &mut rng);
            for l in 0..12 {
                for e in 0..10 {
                    total += 1;
                    if let Some(op) = code.get(l, e) {
                        active += 1;
                        conv += (op == crate::arch::Op::Conv3x3x3) as usize;
                    }
                }
            }
        }
        let rate = active as f64 / total as f64;
        let conv_share = conv as f64 / active as f64;
        assert!((0.6..0.72).contains(&rate), "edge activation rate {rate}");
        assert!(
            (0.48..0.52).contains(&conv_share),
            "conv share {conv_share}"
        );
    }
}
