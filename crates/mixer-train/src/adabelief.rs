//! AdaBelief (Zhuang et al., 2020) as a burn optimizer.
//!
//! With gradient `g`, first moment `m = b1 m + (1 - b1) g`, "belief" second moment
//! `s = b2 s + (1 - b2) (g - m)^2 + eps`, bias corrections `m^ = m / (1 - b1^t)`,
//! `s^ = s / (1 - b2^t)`, the update is `p <- p - lr m^ / (sqrt(s^) + eps)`.

use burn::grad_clipping::GradientClipping;
use burn::module::AutodiffModule;
use burn::optim::{LearningRate, SimpleOptimizer, adaptor::OptimizerAdaptor};
use burn::record::Record;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::TrainError;

/// AdaBelief hyperparameters (the MixER paper uses b1 0.9, b2 0.999, eps 1e-16).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdaBeliefConfig {
    /// Decay of the first moment.
    pub beta_1: f64,
    /// Decay of the belief (centred second) moment.
    pub beta_2: f64,
    /// Added to the belief moment and to its square root.
    pub epsilon: f64,
    /// Rescale each parameter tensor's gradient to at most this L2 norm (none as published).
    #[serde(default)]
    pub clip_norm: Option<f64>,
}

impl AdaBeliefConfig {
    /// The published setting: b1 0.9, b2 0.999, eps 1e-16.
    pub fn paper() -> Self {
        Self { beta_1: 0.9, beta_2: 0.999, epsilon: 1e-16, clip_norm: None }
    }

    /// Checks the decays lie in [0, 1) and eps is non-negative.
    pub fn validate(&self) -> Result<(), TrainError> {
        for (field, v) in [("beta_1", self.beta_1), ("beta_2", self.beta_2)] {
            if !(0.0..1.0).contains(&v) {
                return Err(mixer_core::Error::config(field, format!("must be in [0, 1), got {v}")).into());
            }
        }
        if let Some(c) = self.clip_norm
            && !(c > 0.0 && c.is_finite())
        {
            return Err(mixer_core::Error::config("clip_norm", format!("must be > 0 when given, got {c}")).into());
        }
        if self.epsilon.is_nan() || self.epsilon < 0.0 {
            return Err(mixer_core::Error::config("epsilon", format!("must be >= 0, got {}", self.epsilon)).into());
        }
        Ok(())
    }

    /// Builds the optimizer for a module (after validation).
    pub fn init<B: AutodiffBackend, M: AutodiffModule<B>>(
        &self,
    ) -> Result<OptimizerAdaptor<AdaBelief, M, B>, TrainError> {
        self.validate()?;
        let optimizer = OptimizerAdaptor::from(AdaBelief { config: *self });
        Ok(match self.clip_norm {
            Some(c) => optimizer.with_grad_clipping(GradientClipping::Norm(c as f32)),
            None => optimizer,
        })
    }
}

/// The AdaBelief update rule.
#[derive(Clone, Debug)]
pub struct AdaBelief {
    config: AdaBeliefConfig,
}

/// Per-parameter AdaBelief state.
#[derive(Record, Clone)]
pub struct AdaBeliefState<B: Backend, const D: usize> {
    /// Steps taken.
    pub time: usize,
    /// First moment `m`.
    pub moment_1: Tensor<B, D>,
    /// Belief moment `s`.
    pub belief: Tensor<B, D>,
}

impl<B: Backend> SimpleOptimizer<B> for AdaBelief {
    type State<const D: usize> = AdaBeliefState<B, D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<B, D>,
        grad: Tensor<B, D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<B, D>, Option<Self::State<D>>) {
        let AdaBeliefConfig { beta_1: b1, beta_2: b2, epsilon: eps, .. } = self.config;
        let (m_prev, s_prev, time) = match state {
            Some(s) => (s.moment_1, s.belief, s.time),
            None => (grad.zeros_like(), grad.zeros_like(), 0),
        };
        let time = time + 1;
        let m = m_prev.mul_scalar(b1).add(grad.clone().mul_scalar(1.0 - b1));
        let s = s_prev.mul_scalar(b2).add((grad - m.clone()).square().mul_scalar(1.0 - b2)).add_scalar(eps);
        let m_hat = m.clone().div_scalar(1.0 - b1.powi(time as i32));
        let s_hat = s.clone().div_scalar(1.0 - b2.powi(time as i32));
        let update = m_hat.div(s_hat.sqrt().add_scalar(eps)).mul_scalar(lr);
        (tensor - update, Some(AdaBeliefState { time, moment_1: m, belief: s }))
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &Device<B>) -> Self::State<D> {
        AdaBeliefState {
            time: state.time,
            moment_1: state.moment_1.to_device(device),
            belief: state.belief.to_device(device),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::TestBackend;
    use burn::tensor::TensorData;

    /// Reference AdaBelief on scalars, written from the formulas.
    fn reference(grads: &[f64], lr: f64, c: AdaBeliefConfig) -> f64 {
        let (mut p, mut m, mut s) = (1.0f64, 0.0f64, 0.0f64);
        for (i, g) in grads.iter().enumerate() {
            let t = (i + 1) as i32;
            m = c.beta_1 * m + (1.0 - c.beta_1) * g;
            s = c.beta_2 * s + (1.0 - c.beta_2) * (g - m).powi(2) + c.epsilon;
            let mh = m / (1.0 - c.beta_1.powi(t));
            let sh = s / (1.0 - c.beta_2.powi(t));
            p -= lr * mh / (sh.sqrt() + c.epsilon);
        }
        p
    }

    #[test]
    fn matches_scalar_reference() {
        let c = AdaBeliefConfig { beta_1: 0.9, beta_2: 0.999, epsilon: 1e-8, clip_norm: None };
        let opt = AdaBelief { config: c };
        let device = Default::default();
        let grads = [0.5, -0.2, 0.3, 0.9, -1.1];
        let mut p = Tensor::<TestBackend, 1>::from_data(TensorData::from([1.0f64]), &device);
        let mut state = None;
        for g in grads {
            let g = Tensor::<TestBackend, 1>::from_data(TensorData::from([g]), &device);
            let (np, ns) = opt.step(1e-2, p, g, state);
            p = np;
            state = ns;
        }
        let got = p.into_scalar();
        let want = reference(&grads, 1e-2, c);
        assert!((got - want).abs() < 1e-12, "got {got}, want {want}");
    }

    /// One trainable scalar, to run the optimizer through burn's adaptor.
    #[derive(burn::module::Module, Debug)]
    struct Scalar<B: Backend> {
        p: burn::module::Param<Tensor<B, 1>>,
    }

    #[test]
    fn clip_norm_rescales_large_gradients_before_the_update() {
        use crate::tests::TestAutodiffBackend as AD;
        use burn::optim::{GradientsParams, Optimizer};
        let c = AdaBeliefConfig { beta_1: 0.9, beta_2: 0.999, epsilon: 1e-8, clip_norm: Some(1.0) };
        let device = Default::default();
        let mut module = Scalar::<AD> { p: burn::module::Param::from_tensor(Tensor::from_data([1.0f64], &device)) };
        let mut opt = c.init::<AD, Scalar<AD>>().unwrap();
        let grads = [5.0, -0.3, -2.0];
        for g in grads {
            let loss = module.p.val().mul_scalar(g).sum();
            let gp = GradientsParams::from_grads(loss.backward(), &module);
            module = opt.step(1e-2, module, gp);
        }
        let got = module.p.val().into_scalar();
        // the optimizer saw |g| clipped to 1: 5 -> 1, -2 -> -1, -0.3 unchanged
        let want = reference(&[1.0, -0.3, -1.0], 1e-2, c);
        assert!((got - want).abs() < 1e-12, "got {got}, want {want}");
        assert!((got - reference(&grads, 1e-2, c)).abs() > 1e-4, "clipping must change the trajectory");
    }

    #[test]
    fn rejects_bad_decays() {
        let mut c = AdaBeliefConfig::paper();
        c.beta_1 = 1.0;
        assert!(c.validate().is_err());
        let mut c = AdaBeliefConfig::paper();
        c.beta_2 = -0.1;
        assert!(c.validate().is_err());
        let mut c = AdaBeliefConfig::paper();
        c.epsilon = f64::NAN;
        assert!(c.validate().is_err());
        for bad in [0.0, -1.0, f64::INFINITY] {
            let c = AdaBeliefConfig { clip_norm: Some(bad), ..AdaBeliefConfig::paper() };
            assert!(c.validate().is_err(), "clip_norm {bad}");
        }
        assert!(AdaBeliefConfig { clip_norm: Some(1.0), ..AdaBeliefConfig::paper() }.validate().is_ok());
    }
}
