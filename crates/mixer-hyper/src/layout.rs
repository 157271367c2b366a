//! The flat parameter layout of an MLP whose weights come from a hypernetwork, and its
//! evaluation with one parameter vector per input row.

use burn::tensor::{Distribution, Tensor, activation, backend::Backend};
use serde::{Deserialize, Serialize};

use mixer_core::Error;

use crate::HyperError;

/// Nonlinearity between the layers of a generated MLP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// `tanh(x)`.
    Tanh,
    /// `max(x, 0)`.
    Relu,
    /// `x * sigmoid(x)`.
    Swish,
    /// `ln(1 + e^x)`.
    Softplus,
}

impl Activation {
    /// Applies the nonlinearity elementwise.
    pub fn apply<B: Backend, const D: usize>(self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self {
            Activation::Tanh => x.tanh(),
            Activation::Relu => activation::relu(x),
            Activation::Swish => x.clone() * sigmoid(x),
            Activation::Softplus => activation::relu(x.clone()) + x.abs().neg().exp().log1p(),
        }
    }
}

/// `1 / (1 + e^-x)` computed as `(1 + tanh(x / 2)) / 2`, which keeps the backend's float
/// precision (burn's default sigmoid goes through `f32`) and has finite gradients everywhere.
pub fn sigmoid<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    ((x * 0.5).tanh() + 1.0) * 0.5
}

/// An MLP `sizes[0] -> sizes[1] -> ... -> sizes[L]` stored as one flat vector: for each layer,
/// its weight `[out, in]` row-major, then its bias `[out]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MlpLayout {
    /// Layer widths, input first (at least two entries, all positive).
    pub sizes: Vec<usize>,
    /// Nonlinearity after every layer but the last.
    pub activation: Activation,
}

impl MlpLayout {
    /// Checks that there are at least two sizes and that all are positive.
    pub fn validate(&self) -> Result<(), HyperError> {
        if self.sizes.len() < 2 {
            return Err(
                Error::config("layout.sizes", format!("need input and output sizes, got {:?}", self.sizes)).into()
            );
        }
        if let Some(i) = self.sizes.iter().position(|&s| s == 0) {
            return Err(Error::config("layout.sizes", format!("entry {i} is 0; every width must be at least 1")).into());
        }
        Ok(())
    }

    /// Total number of parameters `P`.
    pub fn num_params(&self) -> usize {
        self.sizes.windows(2).map(|w| w[1] * w[0] + w[1]).sum()
    }

    /// Input width.
    pub fn input(&self) -> usize {
        self.sizes[0]
    }

    /// Output width.
    pub fn output(&self) -> usize {
        *self.sizes.last().unwrap_or(&0)
    }

    /// A root parameter vector `[P]` with every weight and bias Uniform(±1/sqrt(fan_in)).
    pub fn init_params<B: Backend>(&self, device: &B::Device) -> Tensor<B, 1> {
        let parts = self
            .sizes
            .windows(2)
            .map(|w| {
                let bound = 1.0 / (w[0] as f64).sqrt();
                Tensor::<B, 1>::random([w[1] * w[0] + w[1]], Distribution::Uniform(-bound, bound), device)
            })
            .collect();
        Tensor::cat(parts, 0)
    }

    /// Evaluates the MLP with one parameter vector per row: `params: [N, P]`, `x: [N, in]` →
    /// `[N, out]`. Shapes are the caller's responsibility (checked by the hypernetworks).
    pub fn forward<B: Backend>(&self, params: Tensor<B, 2>, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let [n, _] = params.dims();
        let layers = self.sizes.len() - 1;
        let mut offset = 0;
        let mut h = x;
        for (l, w) in self.sizes.windows(2).enumerate() {
            let (i, o) = (w[0], w[1]);
            let weight: Tensor<B, 3> = params.clone().slice([0..n, offset..offset + o * i]).reshape([n, o, i]);
            offset += o * i;
            let bias = params.clone().slice([0..n, offset..offset + o]);
            offset += o;
            let y: Tensor<B, 2> = weight.matmul(h.unsqueeze_dim::<3>(2)).reshape([n, o]) + bias;
            h = if l + 1 < layers { self.activation.apply(y) } else { y };
        }
        h
    }

    /// Splits one parameter vector `params: [P]` into each layer's weight `[out, in]` and bias
    /// `[1, out]`, so that a network used for many batches is sliced once.
    pub fn unpack<B: Backend>(&self, params: Tensor<B, 1>) -> Vec<(Tensor<B, 2>, Tensor<B, 2>)> {
        let mut offset = 0;
        self.sizes
            .windows(2)
            .map(|w| {
                let (i, o) = (w[0], w[1]);
                let weight = params.clone().narrow(0, offset, o * i).reshape([o, i]);
                let bias = params.clone().narrow(0, offset + o * i, o).reshape([1, o]);
                offset += o * i + o;
                (weight, bias)
            })
            .collect()
    }

    /// Evaluates the MLP with one set of unpacked layers ([`MlpLayout::unpack`]) shared by every
    /// row: `x: [N, in]` → `[N, out]`, one matmul per layer.
    pub fn forward_unpacked<B: Backend>(
        &self,
        layers: &[(Tensor<B, 2>, Tensor<B, 2>)],
        x: Tensor<B, 2>,
    ) -> Tensor<B, 2> {
        let last = layers.len().saturating_sub(1);
        layers.iter().enumerate().fold(x, |h, (l, (w, b))| {
            let y = h.matmul(w.clone().transpose()) + b.clone();
            if l < last { self.activation.apply(y) } else { y }
        })
    }

    /// Evaluates the MLP with one parameter vector `params: [P]` shared by every row:
    /// `x: [N, in]` → `[N, out]`.
    pub fn forward_shared<B: Backend>(&self, params: Tensor<B, 1>, x: Tensor<B, 2>) -> Tensor<B, 2> {
        self.forward_unpacked(&self.unpack(params), x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::TestBackend;
    use mixer_core::host::{tensor2, to_vec};

    #[test]
    fn per_row_parameters_match_a_hand_computation() {
        let device = Default::default();
        let layout = MlpLayout { sizes: vec![2, 3, 1], activation: Activation::Tanh };
        assert_eq!(layout.num_params(), 2 * 3 + 3 + 3 + 1);
        let p: Vec<f64> = (0..26).map(|i| ((i * 7 % 11) as f64 - 5.0) / 7.0).collect();
        let x = [0.3, -0.8, 1.1, 0.4];
        let got = to_vec(layout.forward(tensor2::<TestBackend>(&p, [2, 13], &device), tensor2(&x, [2, 2], &device)));
        for r in 0..2 {
            let q = &p[r * 13..(r + 1) * 13];
            let h: Vec<f64> =
                (0..3).map(|o| (q[o * 2] * x[r * 2] + q[o * 2 + 1] * x[r * 2 + 1] + q[6 + o]).tanh()).collect();
            let y = q[9] * h[0] + q[10] * h[1] + q[11] * h[2] + q[12];
            assert!((got[r] - y).abs() < 1e-12, "row {r}: {} vs {y}", got[r]);
        }
    }

    #[test]
    fn one_shared_parameter_vector_matches_per_row_copies() {
        let device = Default::default();
        let layout = MlpLayout { sizes: vec![2, 3, 2], activation: Activation::Swish };
        let p: Vec<f64> = (0..layout.num_params()).map(|i| ((i * 5 % 13) as f64 - 6.0) / 9.0).collect();
        let x = [0.3, -0.8, 1.1, 0.4, -2.0, 0.7];
        let shared = to_vec(layout.forward_shared(
            Tensor::<TestBackend, 1>::from_data(burn::tensor::TensorData::new(p.clone(), [p.len()]), &device),
            tensor2(&x, [3, 2], &device),
        ));
        let rows: Vec<f64> = (0..3).flat_map(|_| p.iter().copied()).collect();
        let per_row =
            to_vec(layout.forward(tensor2::<TestBackend>(&rows, [3, p.len()], &device), tensor2(&x, [3, 2], &device)));
        for (a, b) in shared.iter().zip(&per_row) {
            assert!((a - b).abs() < 1e-12, "{a} vs {b}");
        }
    }

    #[test]
    fn activations_keep_f64_precision_and_stay_finite() {
        let device = Default::default();
        let xs = [-800.0, -3.0, -0.25, 0.0, 0.7, 40.0];
        let x = tensor2::<TestBackend>(&xs, [1, 6], &device);
        let sig = to_vec(sigmoid(x.clone()));
        let swish = to_vec(Activation::Swish.apply(x.clone()));
        let soft = to_vec(Activation::Softplus.apply(x));
        for (i, &v) in xs.iter().enumerate() {
            let s = 1.0 / (1.0 + (-v).exp());
            assert!((sig[i] - s).abs() < 1e-15, "sigmoid({v}): {} vs {s}", sig[i]);
            assert!((swish[i] - v * s).abs() < 1e-13);
            let sp = v.max(0.0) + (-v.abs()).exp().ln_1p();
            assert!((soft[i] - sp).abs() < 1e-13 && soft[i].is_finite());
        }
    }

    #[test]
    fn invalid_layouts_are_rejected() {
        assert!(MlpLayout { sizes: vec![3], activation: Activation::Relu }.validate().is_err());
        assert!(MlpLayout { sizes: vec![3, 0, 2], activation: Activation::Relu }.validate().is_err());
        assert!(MlpLayout { sizes: vec![3, 4, 2], activation: Activation::Relu }.validate().is_ok());
    }
}
