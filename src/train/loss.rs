//! The training loss of Algorithm 1: Dice plus cross-entropy with equal weights.

use burn::tensor::Tensor;
use burn::tensor::activation::log_softmax;

/// Smoothing of the Dice ratio (numerator and denominator), as MONAI's `DiceCELoss`.
const SMOOTH: f64 = 1e-5;

/// `dice + ce` for logits and one-hot targets, with the parts.
///
/// Dice: `1 - mean over samples and classes of (2 |p y| + s) / (|p| + |y| + s)`, background
/// included (MONAI's default). Cross-entropy: mean over voxels of `-sum_c y log p`.
///
/// # Shapes
/// - logits, one_hot: `[batch, classes, x, y, z]`
/// - returns: `(total, dice, ce)`, each `[1]`
pub fn dice_ce(logits: Tensor<5>, one_hot: Tensor<5>) -> (Tensor<1>, Tensor<1>, Tensor<1>) {
    let [batch, classes, sx, sy, sz] = logits.dims();
    let voxels = sx * sy * sz;
    let log_p = log_softmax(logits, 1);
    let p = log_p.clone().exp();

    let ce = (one_hot.clone() * log_p)
        .sum_dim(1)
        .mean()
        .neg()
        .reshape([1]);

    let p = p.reshape([batch, classes, voxels]);
    let y = one_hot.reshape([batch, classes, voxels]);
    let intersection = (p.clone() * y.clone()).sum_dim(2);
    let denominator = p.sum_dim(2) + y.sum_dim(2);
    let ratio = (intersection * 2.0 + SMOOTH) / (denominator + SMOOTH);
    let dice = ratio.mean().neg().add_scalar(1.0).reshape([1]);

    (dice.clone() + ce.clone(), dice, ce)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Device, TensorData};

    fn t(values: Vec<f32>, shape: [usize; 5]) -> Tensor<5> {
        Tensor::from_data(TensorData::new(values, shape), &Device::flex())
    }

    #[test]
    fn matches_a_hand_computation() {
        // Two voxels, two classes. Logits (0, ln 3) and (ln 3, 0): p = (0.25, 0.75) and
        // (0.75, 0.25). Targets class 1 then class 0.
        let l3 = 3f32.ln();
        let logits = t(vec![0.0, l3, l3, 0.0], [1, 2, 2, 1, 1]);
        let one_hot = t(vec![0.0, 1.0, 1.0, 0.0], [1, 2, 2, 1, 1]);
        let (total, dice, ce) = dice_ce(logits, one_hot);
        let get = |x: Tensor<1>| x.into_data().try_to_vec::<f32>().unwrap()[0];
        // CE = -ln 0.75 for both voxels.
        let ce_expected = -(0.75f32).ln();
        // Class 0: p = (0.25, 0.75), y = (0, 1): 2 * 0.75 / (1 + 1) = 0.75; class 1 the same.
        let dice_expected = 1.0 - 0.75;
        assert!((get(ce) - ce_expected).abs() < 1e-5);
        assert!((get(dice) - dice_expected).abs() < 1e-5);
        assert!((get(total) - ce_expected - dice_expected).abs() < 1e-5);
    }
}
