//! Shared pieces of the benches and timing examples: the workload of the integrator bench and the
//! operator-transformer variants.

use burn::tensor::{Distribution, Tensor, backend::Backend};
use mixer_core::{Expert, Integrator, VectorField};
use mixer_experts::{AnyExpert, ExpertConfig};
use mixer_ode::{anchor_module, anchor_tensor};

/// A 2-D GEPS expert field (width 64, 3 layers, context 4) evaluated with one context per row.
#[derive(Clone)]
pub struct BenchField<B: Backend> {
    /// The expert.
    pub expert: AnyExpert<B>,
    /// Contexts, `[batch, 4]`.
    pub ctx: Tensor<B, 2>,
}

impl<B: Backend> BenchField<B> {
    /// The field a rollout should read: parameters and contexts as
    /// [`mixer_ode::anchor`] views (same values and gradients), as the mixture layer does.
    pub fn rollout_view(&self) -> Self {
        Self { expert: anchor_module(self.expert.clone()), ctx: anchor_tensor(self.ctx.clone()) }
    }
}

impl<B: Backend> VectorField<B> for BenchField<B> {
    fn dim(&self) -> usize {
        2
    }

    fn eval(&self, _t: f64, x: Tensor<B, 2>) -> Tensor<B, 2> {
        self.expert.forward(x, self.ctx.clone())
    }
}

/// Builds the bench field and initial states for a batch.
pub fn workload<B: Backend>(batch: usize, device: &B::Device) -> (BenchField<B>, Tensor<B, 2>) {
    B::seed(device, 0);
    let expert = ExpertConfig::Geps { width: 64, depth: 3 }.init::<B>(2, 4, device).expect("valid config");
    let ctx = Tensor::random([batch, 4], Distribution::Uniform(-0.1, 0.1), device);
    let y0 = Tensor::random([batch, 2], Distribution::Uniform(-1.0, 1.0), device);
    (BenchField { expert, ctx }, y0)
}

/// One forward and backward pass of the squared rollout over `times`, reading the field's
/// rollout view; returns the sum of the context gradient.
pub fn forward_backward<B: burn::tensor::backend::AutodiffBackend>(
    field: &BenchField<B>,
    y0: Tensor<B, 2>,
    integrator: &dyn Integrator<B>,
    times: &[f64],
) -> f64 {
    forward_backward_of(field, &field.rollout_view(), y0, integrator, times)
}

/// [`forward_backward`] reading `view` directly (pass `field` itself to time a rollout that
/// reads the parameter leaves at every evaluation).
pub fn forward_backward_of<B: burn::tensor::backend::AutodiffBackend>(
    field: &BenchField<B>,
    view: &BenchField<B>,
    y0: Tensor<B, 2>,
    integrator: &dyn Integrator<B>,
    times: &[f64],
) -> f64 {
    let y = integrator.integrate(view, y0, times).expect("bench rollout succeeds");
    let loss = y.square().mean();
    let grads = loss.backward();
    let g = field.ctx.grad(&grads).map(|g| g.sum().into_scalar());
    use burn::tensor::ElementConversion;
    g.map_or(0.0, |v| v.elem::<f64>())
}

/// Median seconds of `reps` runs of `f` after one warm-up run, and the last run's result.
pub fn median_seconds_with<R>(reps: usize, mut f: impl FnMut() -> R) -> (f64, R) {
    let mut last = f();
    let mut v: Vec<f64> = (0..reps.max(1))
        .map(|_| {
            let s = std::time::Instant::now();
            last = f();
            s.elapsed().as_secs_f64()
        })
        .collect();
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], last)
}

/// Median seconds of `reps` runs of `f` after one warm-up run.
pub fn median_seconds(reps: usize, f: impl FnMut()) -> f64 {
    median_seconds_with(reps, f).0
}

/// MoE-POT at `width` (16 routed experts top 4 plus 2 shared, `mlp_ratio` 2) and its dense twins
/// of equal active and equal total parameters, named as in the `pde-pretrain` experiment.
pub fn pot_variants(width: usize) -> [(&'static str, mixer_experts::PotSettings); 3] {
    use mixer_experts::{ChannelSettings, Matching, MoeMlpSettings, PotSettings};
    let moe = PotSettings {
        width,
        channel: ChannelSettings::Moe(MoeMlpSettings { mlp_ratio: 2, ..Default::default() }),
        ..PotSettings::default()
    };
    let (active, total) = (moe.dense_twin(Matching::Active), moe.dense_twin(Matching::Total));
    [("moe-pot", moe), ("dense-active", active), ("dense-total", total)]
}
