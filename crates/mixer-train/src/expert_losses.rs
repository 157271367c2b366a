//! The expert-loss matrix of MixER's gate refit: every expert on every environment, no gradient.

use burn::tensor::{Tensor, backend::Backend};
use ndarray::Array2;

use mixer_core::{Dataset, Integrator};
use mixer_experts::{AnyExpert, MixtureOfExperts};

use crate::TrainError;
use crate::batch::{Batch, Window};
use crate::fused_losses::fused_expert_loss_matrix;

/// MSE of each expert on each training environment over full trajectories (`max_trajs` per
/// environment, all when `None`), `[envs, experts]`. An expert whose rollout fails (diverges)
/// gets an infinite loss on the environments of that rollout.
///
/// On an inference backend with one of mixer-ode's solvers and experts that have a frozen host
/// form (GEPS), this runs [`fused_expert_loss_matrix`] (host rollouts, one rayon task per
/// expert); otherwise [`generic_expert_loss_matrix`], the tensor path it is checked against.
pub fn expert_loss_matrix<B: Backend>(
    moe: &MixtureOfExperts<B, AnyExpert<B>>,
    integrator: &dyn Integrator<B>,
    contexts: Tensor<B, 2>,
    data: &Dataset,
    max_trajs: Option<usize>,
) -> Result<Array2<f64>, TrainError> {
    match fused_expert_loss_matrix(moe, integrator, contexts.clone(), data, max_trajs)? {
        Some(m) => Ok(m),
        None => generic_expert_loss_matrix(moe, integrator, contexts, data, max_trajs),
    }
}

/// [`expert_loss_matrix`] on burn tensors ([`MixtureOfExperts::expert_losses`] on each group
/// of rows that share a time grid): any backend, solver and expert type; the reference for the
/// fused host path. An environment without rows keeps +inf.
pub fn generic_expert_loss_matrix<B: Backend>(
    moe: &MixtureOfExperts<B, AnyExpert<B>>,
    integrator: &dyn Integrator<B>,
    contexts: Tensor<B, 2>,
    data: &Dataset,
    max_trajs: Option<usize>,
) -> Result<Array2<f64>, TrainError> {
    let device = contexts.device();
    let envs: Vec<usize> = (0..data.num_envs()).collect();
    let batch = Batch::<B>::new(data, &envs, Window::full(data.num_steps()), max_trajs, &device);
    let experts = moe.num_experts();
    let mut out = Array2::from_elem((envs.len(), experts), f64::INFINITY);
    for g in &batch.groups {
        let losses = moe.expert_losses(integrator, contexts.clone(), batch.rows(g), g.target.clone())?;
        let values = mixer_core::host::to_vec(losses);
        for (e, row) in values.chunks_exact(experts).enumerate() {
            // NaN: the environment has no rows in this group
            for (k, &v) in row.iter().enumerate().filter(|(_, v)| !v.is_nan()) {
                out[[e, k]] = if v.is_finite() { v } else { f64::INFINITY };
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::TestBackend;
    use burn::module::Param;
    use mixer_core::TimeGrid;
    use mixer_core::host::{tensor2, to_vec};
    use mixer_experts::ExpertConfig;
    use mixer_ode::{Interpolation, Rk4, Tsit5};
    use ndarray::Array4;

    /// Three environments on grids that form two normalised groups, two trajectories each.
    fn data() -> Dataset {
        let x = Array4::from_shape_fn((3, 2, 4, 2), |(e, j, k, i)| {
            (0.3 * e as f64 - 0.2 * j as f64 + 0.1 * i as f64 + 0.5) * (1.0 - 0.15 * k as f64)
        });
        let t = TimeGrid::PerEnv(vec![vec![0.0, 0.1, 0.2, 0.3], vec![0.0, 0.2, 0.4, 0.7], vec![0.0, 0.05, 0.1, 0.15]]);
        Dataset::new(x, t, None).unwrap()
    }

    #[test]
    fn matrix_is_each_experts_mse_on_each_environment() {
        let device = Default::default();
        let data = data();
        let rk4 = Rk4 { substeps: 2 };
        let geps = ExpertConfig::Geps { width: 8, depth: 3 };
        let coda = ExpertConfig::Coda { width: 8, depth: 3 };
        // both expert types must give the MSEs
        for config in [geps, coda] {
            TestBackend::seed(&device, 5);
            let mut moe =
                MixtureOfExperts::<TestBackend, AnyExpert<TestBackend>>::init(&config, 2, 2, 3, &device).unwrap();
            // distinct experts: re-initialise all but the first
            for k in 1..3 {
                moe.experts[k] = config.init::<TestBackend>(2, 2, &device).unwrap();
            }
            let ctx: Vec<f64> = (0..18).map(|i| 0.1 * (i as f64 * 0.7).sin()).collect();
            let contexts = tensor2::<TestBackend>(&ctx, [3, 6], &device);
            for max_trajs in [None, Some(1)] {
                let got = expert_loss_matrix(&moe, &rk4, contexts.clone(), &data, max_trajs).unwrap();
                let trajs = max_trajs.unwrap_or(2);
                assert!((got[[0, 0]] - got[[0, 1]]).abs() > 1e-9, "experts must differ for the check to bite");
                for e in 0..3 {
                    let times = data.t.for_env(e).to_vec();
                    for k in 0..3 {
                        let routing = mixer_core::Routing::<TestBackend>::constant(3, k, &device);
                        let mut sum = 0.0;
                        for j in 0..trajs {
                            let x0 = tensor2(&[data.x[[e, j, 0, 0]], data.x[[e, j, 0, 1]]], [1, 2], &device);
                            let pred = to_vec(moe.rollout(&rk4, &routing, contexts.clone(), &[e], x0, &times).unwrap());
                            let target: Vec<f64> =
                                (0..4).flat_map(|s| [data.x[[e, j, s, 0]], data.x[[e, j, s, 1]]]).collect();
                            sum += pred.iter().zip(&target).map(|(p, t)| (p - t).powi(2)).sum::<f64>() / 8.0;
                        }
                        let want = sum / trajs as f64;
                        let have = got[[e, k]];
                        assert!(
                            (have - want).abs() < 1e-12 * want.max(1e-3),
                            "{config:?} env {e} expert {k}: {have} vs {want}"
                        );
                    }
                }
            }
        }
    }

    /// A GEPS mixture of three distinct experts with non-zero context shifts, and contexts for
    /// the three environments of [`data`], split by expert.
    fn geps_moe<B: Backend>(
        config: &ExpertConfig,
        device: &B::Device,
    ) -> (MixtureOfExperts<B, AnyExpert<B>>, Tensor<B, 2>) {
        B::seed(device, 11);
        let experts = (0..3)
            .map(|k| {
                let mut e = config.init::<B>(2, 2, device).unwrap();
                if let AnyExpert::Geps(g) = &mut e {
                    g.context_shift = Some(Param::from_tensor(Tensor::from_data([0.1 + 0.2 * k as f64], device)));
                }
                e
            })
            .collect();
        let ctx: Vec<f64> = (0..18).map(|i| 0.4 * (i as f64 * 0.9).sin()).collect();
        (MixtureOfExperts::new(experts), tensor2::<B>(&ctx, [3, 6], device))
    }

    fn max_rel_diff(a: &Array2<f64>, b: &Array2<f64>) -> f64 {
        a.iter().zip(b).map(|(x, y)| if x == y { 0.0 } else { (x - y).abs() / y.abs() }).fold(0.0, f64::max)
    }

    #[test]
    fn fused_matrix_equals_the_generic_one() {
        let device = Default::default();
        let data = data();
        let mut hermite = Tsit5::new(1e-6, 1e-8);
        hermite.interpolation = Interpolation::CubicHermite;
        let solvers: Vec<Box<dyn Integrator<TestBackend>>> =
            vec![Box::new(Rk4 { substeps: 2 }), Box::new(Tsit5::new(1e-7, 1e-9)), Box::new(hermite)];
        for config in [ExpertConfig::Geps { width: 8, depth: 3 }, ExpertConfig::GepsMip { width: 8, depth: 4 }] {
            let (moe, contexts) = geps_moe::<TestBackend>(&config, &device);
            for solver in &solvers {
                for max_trajs in [None, Some(1)] {
                    let fused = fused_expert_loss_matrix(&moe, solver.as_ref(), contexts.clone(), &data, max_trajs)
                        .unwrap()
                        .expect("GEPS experts on an inference backend take the fused path");
                    let generic =
                        generic_expert_loss_matrix(&moe, solver.as_ref(), contexts.clone(), &data, max_trajs).unwrap();
                    assert!(fused.iter().all(|v| v.is_finite() && *v > 0.0));
                    let d = max_rel_diff(&fused, &generic);
                    assert!(d <= 1e-10, "{config:?}, {:?}: fused and generic differ by {d:e}", solver.order());
                }
            }
        }
    }

    #[test]
    fn fused_matrix_does_not_depend_on_the_number_of_threads() {
        type F = burn::backend::Flex;
        let device = Default::default();
        let data = data();
        let (moe, contexts) = geps_moe::<F>(&ExpertConfig::Geps { width: 16, depth: 3 }, &device);
        let rk4 = Rk4 { substeps: 1 };
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| fused_expert_loss_matrix(&moe, &rk4, contexts.clone(), &data, None).unwrap().unwrap())
        };
        let (one, two) = (run(1), run(2));
        assert!(one.iter().zip(&two).all(|(a, b)| a.to_bits() == b.to_bits()), "{one} vs {two}");
        // f32 host arithmetic against the f32 tensor path
        let generic = generic_expert_loss_matrix(&moe, &rk4, contexts, &data, None).unwrap();
        let d = max_rel_diff(&one, &generic);
        assert!(d <= 1e-4, "f32 fused and generic differ by {d:e}");
    }

    #[test]
    fn diverging_experts_get_infinite_losses_on_both_paths() {
        let device = Default::default();
        let data = data();
        let (mut moe, contexts) = geps_moe::<TestBackend>(&ExpertConfig::Geps { width: 8, depth: 3 }, &device);
        // expert 1 turns the state into NaN (a solver error), expert 2 overflows the squared error
        for (k, value) in [(1, f64::NAN), (2, 1e300)] {
            if let AnyExpert::Geps(g) = &mut moe.experts[k] {
                g.layers[2].bias = Param::from_tensor(Tensor::full([2], value, &device));
            }
        }
        let rk4 = Rk4 { substeps: 1 };
        let fused = fused_expert_loss_matrix(&moe, &rk4, contexts.clone(), &data, None).unwrap().unwrap();
        let generic = generic_expert_loss_matrix(&moe, &rk4, contexts, &data, None).unwrap();
        for e in 0..3 {
            assert!(fused[[e, 0]].is_finite());
            assert!((fused[[e, 0]] - generic[[e, 0]]).abs() <= 1e-10 * generic[[e, 0]]);
            for k in [1, 2] {
                assert_eq!(fused[[e, k]], f64::INFINITY, "env {e}, expert {k}");
                assert_eq!(generic[[e, k]], f64::INFINITY, "env {e}, expert {k}");
            }
        }
    }

    #[test]
    fn experts_without_a_host_form_and_autodiff_backends_take_the_generic_path() {
        let device = Default::default();
        let data = data();
        let rk4 = Rk4 { substeps: 1 };
        let coda = MixtureOfExperts::<TestBackend, AnyExpert<TestBackend>>::init(
            &ExpertConfig::Coda { width: 8, depth: 3 },
            2,
            2,
            3,
            &device,
        )
        .unwrap();
        let contexts = tensor2::<TestBackend>(&[0.1; 18], [3, 6], &device);
        assert!(fused_expert_loss_matrix(&coda, &rk4, contexts, &data, None).unwrap().is_none());
        type A = crate::tests::TestAutodiffBackend;
        let (geps, contexts) = geps_moe::<A>(&ExpertConfig::Geps { width: 8, depth: 3 }, &device);
        assert!(fused_expert_loss_matrix(&geps, &rk4, contexts, &data, None).unwrap().is_none());
    }
}
