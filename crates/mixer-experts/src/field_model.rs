//! One-step operators on gridded fields `[B, C, H, W] -> [B, C, H, W]`: the spatial mixture of
//! experts and the plain baselines it is judged against (a dense CNN, the same CNN with
//! coordinate channels, and a locally connected layer with its own kernel at every location).

use burn::module::{Module, Param};
use burn::tensor::{Tensor, activation, backend::Backend};
use ndarray::Array2;
use serde::{Deserialize, Serialize};

use mixer_core::{Rng, host};
use mixer_routers::{check_grid, conv_same, conv_weight, host_tensor, with_coordinates};

use crate::ExpertError;
use crate::smoe::{SmoeSettings, SpatialMoe, restart_plan};

/// A field model named in a config: `kind = "smoe" | "cnn" | "coord-conv" | "lcn"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum FieldModelConfig {
    /// The spatial mixture of experts.
    Smoe(SmoeSettings),
    /// A dense CNN: `layers` same-padded convolutions with ReLU between them.
    Cnn(CnnSettings),
    /// The dense CNN with two coordinate channels appended to its input (CoordConv).
    CoordConv(CnnSettings),
    /// A locally connected layer: a `kernel x kernel` stencil of its own at every location.
    Lcn(LcnSettings),
}

/// Settings of the CNN baselines.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CnnSettings {
    /// Hidden channels (default 36: about the parameters of a 3-expert SMoE on 64 x 64).
    pub hidden: usize,
    /// Convolution layers, at least 1 (default 3).
    pub layers: usize,
    /// Kernel size (odd, default 3).
    pub kernel: usize,
}

impl Default for CnnSettings {
    fn default() -> Self {
        Self { hidden: 36, layers: 3, kernel: 3 }
    }
}

/// Settings of the locally connected baseline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LcnSettings {
    /// Kernel size (odd, default 3).
    pub kernel: usize,
}

impl Default for LcnSettings {
    fn default() -> Self {
        Self { kernel: 3 }
    }
}

impl FieldModelConfig {
    /// The config's kind, as written after `kind =`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Smoe(_) => "smoe",
            Self::Cnn(_) => "cnn",
            Self::CoordConv(_) => "coord-conv",
            Self::Lcn(_) => "lcn",
        }
    }

    /// Checks the settings, then builds the model for fields of `channels` channels on a
    /// `height x width` grid; every random draw comes from `rng`.
    pub fn init<B: Backend>(
        &self,
        channels: usize,
        [height, width]: [usize; 2],
        rng: &mut Rng,
        device: &B::Device,
    ) -> Result<FieldModel<B>, ExpertError> {
        let grid_ok = |kernel| check_grid(height, width, kernel).map_err(mixer_core::Error::from);
        Ok(match self {
            Self::Smoe(s) => FieldModel::Smoe(s.init(channels, height, width, rng, device)?),
            Self::Cnn(s) | Self::CoordConv(s) => {
                grid_ok(s.kernel)?;
                if s.layers == 0 || s.hidden == 0 {
                    return Err(mixer_core::Error::config(
                        "layers",
                        "a CNN needs at least one layer and one hidden channel",
                    )
                    .into());
                }
                let coord = matches!(self, Self::CoordConv(_));
                let mut widths = vec![channels + if coord { 2 } else { 0 }];
                widths.extend(std::iter::repeat_n(s.hidden, s.layers - 1));
                widths.push(channels);
                let weights = widths.windows(2).map(|io| conv_weight(io[0], io[1], s.kernel, rng, device)).collect();
                let biases = widths[1..].iter().map(|&o| Param::from_tensor(Tensor::zeros([o], device))).collect();
                FieldModel::Cnn(Cnn { weights, biases, coord })
            }
            Self::Lcn(s) => {
                grid_ok(s.kernel)?;
                let taps = channels * s.kernel * s.kernel;
                let bound = 1.0 / (taps as f64).sqrt();
                let n = channels * taps * height * width;
                let values: Vec<f64> = (0..n).map(|_| bound * (2.0 * rand::Rng::random::<f64>(rng) - 1.0)).collect();
                let weight = Param::from_tensor(host_tensor(&values, [channels, taps, height, width], device));
                let bias = Param::from_tensor(Tensor::zeros([channels, height, width], device));
                FieldModel::Lcn(Lcn { weight, bias, kernel: s.kernel })
            }
        })
    }
}

/// The dense CNN (optionally CoordConv).
#[derive(Module, Debug)]
pub struct Cnn<B: Backend> {
    /// Kernels `[out, in, k, k]` of each layer.
    weights: Vec<Param<Tensor<B, 4>>>,
    /// Biases `[out]` of each layer.
    biases: Vec<Param<Tensor<B, 1>>>,
    /// Append coordinate channels to the input.
    #[module(skip)]
    coord: bool,
}

impl<B: Backend> Cnn<B> {
    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let mut h = if self.coord { with_coordinates(x) } else { x };
        let last = self.weights.len() - 1;
        for (i, (w, b)) in self.weights.iter().zip(&self.biases).enumerate() {
            h = conv_same(h, w.val(), Some(b.val()));
            if i < last {
                h = activation::relu(h);
            }
        }
        h
    }
}

/// The locally connected layer: `y[o, p] = b[o, p] + sum_t W[o, t, p] patch[t, p]`.
#[derive(Module, Debug)]
pub struct Lcn<B: Backend> {
    /// Per-location weights `[C, C k^2, H, W]`.
    weight: Param<Tensor<B, 4>>,
    /// Per-location bias `[C, H, W]`.
    bias: Param<Tensor<B, 3>>,
    /// Kernel size.
    #[module(skip)]
    kernel: usize,
}

/// `[C k^2, C, k, k]` one-hot kernels: output channel `c k^2 + t` copies tap `t` of channel `c`.
fn unfold_kernel<B: Backend>(channels: usize, kernel: usize, device: &B::Device) -> Tensor<B, 4> {
    let taps = kernel * kernel;
    let mut values = vec![0.0; channels * taps * channels * taps];
    for c in 0..channels {
        for t in 0..taps {
            values[((c * taps + t) * channels + c) * taps + t] = 1.0;
        }
    }
    host_tensor(&values, [channels * taps, channels, kernel, kernel], device)
}

impl<B: Backend> Lcn<B> {
    fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [b, c, h, w] = x.dims();
        let unfold = unfold_kernel(c, self.kernel, &x.device());
        let patches = conv_same(x, unfold, None); // [B, C k^2, H, W]
        let taps = c * self.kernel * self.kernel;
        let y = patches.reshape([b, 1, taps, h, w]) * self.weight.val().unsqueeze_dim::<5>(0);
        y.sum_dim(2).reshape([b, c, h, w]) + self.bias.val().unsqueeze_dim::<4>(0)
    }
}

/// Any field model.
// One model per run: boxing the larger variant would cost `derive(Module)` and save nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum FieldModel<B: Backend> {
    /// The spatial mixture of experts.
    Smoe(SpatialMoe<B>),
    /// A dense CNN or CoordConv.
    Cnn(Cnn<B>),
    /// A locally connected layer.
    Lcn(Lcn<B>),
}

/// One training evaluation: the loss to differentiate and its parts.
#[derive(Clone, Debug)]
pub struct FieldLoss<B: Backend> {
    /// Task MSE + RC loss + weighted auxiliary losses, `[1]`.
    pub loss: Tensor<B, 1>,
    /// The task MSE.
    pub mse: f64,
    /// The RC loss (0 when off or not a mixture).
    pub rc: f64,
    /// Share of selected positions whose expert gradient was damped.
    pub damped: f64,
    /// Locations routed to each expert over the batch (empty for a dense model).
    pub load: Vec<usize>,
    /// Summed squared output error at each expert's locations (empty for a dense model).
    pub error: Vec<f64>,
}

impl<B: Backend> FieldModel<B> {
    /// The prediction `[B, C, H, W]` of the next field.
    pub fn forward(&self, x: Tensor<B, 4>, rng: &mut Rng) -> Result<Tensor<B, 4>, ExpertError> {
        match self {
            Self::Smoe(m) => m.forward(x, rng),
            Self::Cnn(m) => Ok(m.forward(x)),
            Self::Lcn(m) => Ok(m.forward(x)),
        }
    }

    /// The training loss of predicting `target` from `x`.
    pub fn train_loss(
        &self,
        x: Tensor<B, 4>,
        target: Tensor<B, 4>,
        rng: &mut Rng,
    ) -> Result<FieldLoss<B>, ExpertError> {
        if let Self::Smoe(m) = self {
            return m.train_loss(x, target, rng);
        }
        let mse = (self.forward(x, rng)? - target).powi_scalar(2).mean();
        Ok(FieldLoss {
            mse: host::to_vec(mse.clone())[0],
            loss: mse,
            rc: 0.0,
            damped: 0.0,
            load: vec![],
            error: vec![],
        })
    }

    /// A mixture with `restart_below` set, after a window with per-expert `load` and `error`
    /// (sums of [`FieldLoss`]'s): restarts its least used expert when due by splitting another
    /// (see [`SmoeSettings::restart_below`]); returns `(from, to)`.
    pub fn restart_idle(self, load: &[usize], error: &[f64], rng: &mut Rng) -> (Self, Option<(usize, usize)>) {
        match self {
            Self::Smoe(m) => match m.settings().restart_below.and_then(|below| restart_plan(load, error, below)) {
                Some((from, to)) => (Self::Smoe(m.split_expert(from, to, rng)), Some((from, to))),
                None => (Self::Smoe(m), None),
            },
            other => (other, None),
        }
    }

    /// The parameters a restart copies, `(id, rank, rows per expert)` (empty for dense models).
    pub fn expert_params(&self) -> Vec<(burn::module::ParamId, usize, usize)> {
        match self {
            Self::Smoe(m) => m.expert_params(),
            _ => vec![],
        }
    }

    /// Trainable parameters.
    pub fn parameter_count(&self) -> usize {
        self.num_params()
    }

    /// The learned expert map `[H, W]` of a latent-gated mixture (top-1 expert per location);
    /// for an input-dependent gate, the map of the first field of `x`; `None` for dense models.
    pub fn expert_map(&self, x: Tensor<B, 4>) -> Result<Option<Array2<usize>>, ExpertError> {
        match self {
            Self::Smoe(m) => {
                let maps = m.router().top1_maps(x).map_err(mixer_core::Error::from)?;
                Ok(maps.into_iter().next())
            }
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::TestBackend;
    use mixer_core::Seeds;

    #[test]
    fn baselines_have_the_documented_shapes_and_parameter_counts() {
        let device = Default::default();
        let mut rng = Seeds::new(0).stream("model");
        let x = Tensor::<TestBackend, 4>::ones([2, 1, 8, 8], &device);
        let count = |cfg: FieldModelConfig| {
            let m = cfg.init::<TestBackend>(1, [8, 8], &mut Seeds::new(0).stream("model"), &device).unwrap();
            assert_eq!(m.forward(x.clone(), &mut Seeds::new(0).stream("r")).unwrap().dims(), [2, 1, 8, 8]);
            m.parameter_count()
        };
        // 9 (36 + 36 * 36 + 36) weights + 36 + 36 + 1 biases.
        assert_eq!(count(FieldModelConfig::Cnn(CnnSettings::default())), 12_385);
        assert_eq!(count(FieldModelConfig::CoordConv(CnnSettings::default())), 12_385 + 2 * 9 * 36);
        assert_eq!(count(FieldModelConfig::Lcn(LcnSettings::default())), 9 * 64 + 64);
        // 3 experts x 9 taps + a latent gate [3, 8, 8].
        assert_eq!(count(FieldModelConfig::Smoe(SmoeSettings::default())), 27 + 192);
        let small = FieldModelConfig::Lcn(LcnSettings { kernel: 5 }).init::<TestBackend>(1, [4, 4], &mut rng, &device);
        assert!(small.unwrap_err().to_string().contains("4 x 4"));
    }

    #[test]
    fn a_locally_connected_layer_applies_its_own_stencil_at_every_location() {
        // Weights set to the heat stencil with diffusivity 0.1 give one explicit diffusion step.
        let device = Default::default();
        let mut rng = Seeds::new(0).stream("model");
        let FieldModel::Lcn(mut lcn) =
            FieldModelConfig::Lcn(LcnSettings::default()).init::<TestBackend>(1, [3, 3], &mut rng, &device).unwrap()
        else {
            unreachable!()
        };
        let d = 0.1;
        let stencil = [0.0, d, 0.0, d, 1.0 - 4.0 * d, d, 0.0, d, 0.0];
        let w: Vec<f64> = (0..9).flat_map(|t| std::iter::repeat_n(stencil[t], 9)).collect();
        lcn.weight = Param::from_tensor(host_tensor(&w, [1, 9, 3, 3], &device));
        let u: Vec<f64> = (0..9).map(|i| i as f64).collect();
        let y = host::to_vec(lcn.forward(host_tensor(&u, [1, 1, 3, 3], &device)));
        // Centre (value 4): neighbours 1, 3, 5, 7 -> 4 + 0.1 (16 - 16) = 4; corner (0): 1 + 3 -> 0.4.
        assert!((y[4] - 4.0).abs() < 1e-12 && (y[0] - 0.4).abs() < 1e-12, "{y:?}");
    }
}
