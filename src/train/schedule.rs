//! The learning-rate schedule of Algorithm 1 (supplement, section A).
//!
//! Super-net training: warm-up over the first 1000 iterations rising linearly from 0.025 to
//! 0.2, then halved at 20 %, 40 %, 60 % and 80 % of N1. Annealing and fine-tuning: a fixed
//! 0.0016.

use serde::{Deserialize, Serialize};

/// The schedule's numbers; the defaults are the paper's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Schedule {
    /// Super-net iterations N1.
    pub supernet_iters: usize,
    /// Annealing iterations N2.
    pub anneal_iters: usize,
    /// Warm-up iterations at the start of super-net training.
    pub warmup_iters: usize,
    /// Learning rate at the first warm-up iteration.
    pub warmup_start_lr: f64,
    /// Learning rate at the end of warm-up.
    pub peak_lr: f64,
    /// Learning rate of annealing.
    pub anneal_lr: f64,
    /// Learning rate of fine-tuning.
    pub finetune_lr: f64,
    /// Fine-tuning iterations.
    pub finetune_iters: usize,
}

impl Default for Schedule {
    fn default() -> Self {
        Self {
            supernet_iters: 160_000,
            anneal_iters: 20_000,
            warmup_iters: 1000,
            warmup_start_lr: 0.025,
            peak_lr: 0.2,
            anneal_lr: 0.0016,
            finetune_lr: 0.0016,
            finetune_iters: 5000,
        }
    }
}

/// Which part of Algorithm 1 an iteration belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Super-net training with MAN-generated channel weights.
    Supernet,
    /// Annealing from the MAN's weights to `w_fixed`.
    Anneal,
    /// Fine-tuning one architecture with `w_fixed`.
    Finetune,
}

impl Schedule {
    /// Iterations of super-net training plus annealing.
    pub fn total(&self) -> usize {
        self.supernet_iters + self.anneal_iters
    }

    /// Phase of iteration `i` (0-based) of a search run.
    pub fn phase(&self, i: usize) -> Phase {
        if i < self.supernet_iters {
            Phase::Supernet
        } else {
            Phase::Anneal
        }
    }

    /// Learning rate of iteration `i` (0-based) of a search run.
    pub fn lr(&self, i: usize) -> f64 {
        if i >= self.supernet_iters {
            return self.anneal_lr;
        }
        if i < self.warmup_iters {
            let t = i as f64 / self.warmup_iters as f64;
            return self.warmup_start_lr + (self.peak_lr - self.warmup_start_lr) * t;
        }
        let n1 = self.supernet_iters as f64;
        let halvings = [0.2, 0.4, 0.6, 0.8]
            .iter()
            .filter(|f| i as f64 >= *f * n1)
            .count();
        self.peak_lr * 0.5f64.powi(halvings as i32)
    }

    /// Annealing weight `lambda = i / N2` for iteration `i` of a search run, where the
    /// annealing iterations count from 1 so the last one reaches `lambda = 1`.
    pub fn lambda(&self, i: usize) -> f64 {
        if i < self.supernet_iters || self.anneal_iters == 0 {
            return 0.0;
        }
        ((i - self.supernet_iters + 1) as f64 / self.anneal_iters as f64).min(1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn paper_schedule_at_its_break_points() {
        let s = Schedule::default();
        assert!(close(s.lr(0), 0.025));
        assert!(close(s.lr(500), 0.025 + 0.175 * 0.5));
        assert!(close(s.lr(999), 0.025 + 0.175 * 0.999));
        assert!(close(s.lr(1000), 0.2));
        assert!(close(s.lr(31_999), 0.2));
        assert!(close(s.lr(32_000), 0.1));
        assert!(close(s.lr(63_999), 0.1));
        assert!(close(s.lr(64_000), 0.05));
        assert!(close(s.lr(96_000), 0.025));
        assert!(close(s.lr(127_999), 0.025));
        assert!(close(s.lr(128_000), 0.0125));
        assert!(close(s.lr(159_999), 0.0125));
        assert!(close(s.lr(160_000), 0.0016));
        assert!(close(s.lr(179_999), 0.0016));
        assert_eq!(s.phase(159_999), Phase::Supernet);
        assert_eq!(s.phase(160_000), Phase::Anneal);
    }

    #[test]
    fn lambda_runs_from_one_over_n2_to_one() {
        let s = Schedule {
            supernet_iters: 10,
            anneal_iters: 4,
            ..Schedule::default()
        };
        assert_eq!(s.lambda(9), 0.0);
        assert_eq!(s.lambda(10), 0.25);
        assert_eq!(s.lambda(11), 0.5);
        assert_eq!(s.lambda(13), 1.0);
    }

    #[test]
    fn short_runs_scale_the_break_points() {
        let s = Schedule {
            supernet_iters: 100,
            anneal_iters: 10,
            warmup_iters: 10,
            ..Schedule::default()
        };
        assert!(close(s.lr(5), 0.025 + 0.175 * 0.5));
        assert!(close(s.lr(19), 0.2));
        assert!(close(s.lr(20), 0.1));
        assert!(close(s.lr(80), 0.0125));
        assert!(close(s.lr(100), 0.0016));
    }
}
