//! The spatial router's promises, for every gate kind: shapes and index ranges, ties to the
//! lowest index, determinism for a seed, no noise in evaluation, per-location (row-local)
//! routing, auxiliary losses only in training, their gradients against finite differences, a
//! checkpoint round trip, and clear errors for bad settings and field shapes.

use burn::backend::{Autodiff, NdArray};
use burn::module::Module;
use burn::record::{FullPrecisionSettings, Recorder};
use burn::tensor::Tensor;
use mixer_core::{Mode, Seeds, host};
use mixer_routers::{SpatialGateKind, SpatialRouter, SpatialSettings, SpatialShape, host_tensor};
use rand::Rng as _;

type B = NdArray<f64>;
type Ad = Autodiff<B>;

const SHAPE: SpatialShape = SpatialShape { experts: 4, in_channels: 2, height: 5, width: 6 };
const GATES: [SpatialGateKind; 3] = [SpatialGateKind::Latent, SpatialGateKind::Conv, SpatialGateKind::CoordConv];

fn field<Bk: burn::tensor::backend::Backend>(seed: u64, b: usize) -> Tensor<Bk, 4> {
    let mut rng = Seeds::new(seed).stream("field");
    let n = b * SHAPE.in_channels * SHAPE.height * SHAPE.width;
    let values: Vec<f64> = (0..n).map(|_| rng.random::<f64>()).collect();
    host_tensor(&values, [b, SHAPE.in_channels, SHAPE.height, SHAPE.width], &Default::default())
}

fn build<Bk: burn::tensor::backend::Backend>(settings: &SpatialSettings, seed: u64) -> SpatialRouter<Bk> {
    settings.build(SHAPE, &mut Seeds::new(seed).stream("gate"), &Default::default()).unwrap()
}

fn noisy(gate: SpatialGateKind) -> SpatialSettings {
    SpatialSettings {
        gate,
        top_k: 2,
        noise: 1.0,
        importance_coef: 0.1,
        load_coef: 0.1,
        agreement_coef: 0.1,
        ..Default::default()
    }
}

#[test]
fn routing_is_well_formed_deterministic_and_noise_free_in_evaluation() {
    for gate in GATES {
        let s = noisy(gate);
        let router = build::<B>(&s, 1);
        let x = field::<B>(2, 3);
        let eval = router.route(x.clone(), Mode::Eval, &mut Seeds::new(5).stream("r")).unwrap();
        assert_eq!(eval.indices.dims(), [3, 2, 5, 6]);
        assert!(eval.aux_losses.is_empty(), "{gate:?}: no losses in evaluation");
        assert!(eval.host_indices.iter().all(|&i| i < SHAPE.experts));
        // Best first, two distinct experts per location, equal to the top-2 of the clean scores.
        let scores = host::to_vec(router.scores(x.clone()).unwrap());
        for (s_i, p) in (0..3).flat_map(|s| (0..30).map(move |p| (s, p))) {
            let (first, second) = (eval.host_indices[(s_i * 2) * 30 + p], eval.host_indices[(s_i * 2 + 1) * 30 + p]);
            let at = |e: usize| scores[(s_i * 4 + e) * 30 + p];
            assert!(first != second && at(first) >= at(second), "{gate:?}");
            assert!((0..4).filter(|&e| e != first && e != second).all(|e| at(e) <= at(second)));
        }
        let again = router.route(x.clone(), Mode::Eval, &mut Seeds::new(99).stream("other")).unwrap();
        assert_eq!(eval.host_indices, again.host_indices, "{gate:?}: evaluation draws no noise");
        let t1 = router.route(x.clone(), Mode::Train, &mut Seeds::new(7).stream("r")).unwrap();
        let t2 = build::<B>(&s, 1).route(x.clone(), Mode::Train, &mut Seeds::new(7).stream("r")).unwrap();
        assert_eq!(t1.host_indices, t2.host_indices, "{gate:?}: same seeds, same routing");
        assert_eq!(t1.aux_losses.len(), 3, "{gate:?}");
        // Per location: routing one sample alone gives that sample's rows of the batch routing.
        let alone = router.route(x.clone().narrow(0, 1, 1), Mode::Eval, &mut Seeds::new(5).stream("r")).unwrap();
        assert_eq!(alone.host_indices[..], eval.host_indices[60..120], "{gate:?}");
    }
}

#[test]
fn auxiliary_losses_differentiate_like_finite_differences() {
    for gate in GATES {
        // Without noise the selection cannot move under a small step; importance and agreement only.
        let s = SpatialSettings { gate, importance_coef: 1.0, agreement_coef: 1.0, ..Default::default() };
        let router = build::<Ad>(&s, 3);
        let x = field::<Ad>(4, 2);
        let loss = |r: &SpatialRouter<Ad>| {
            let out = r.route(x.clone(), Mode::Train, &mut Seeds::new(0).stream("r")).unwrap();
            out.aux_losses.into_iter().map(|a| a.value.mul_scalar(a.coefficient)).reduce(|a, b| a + b).unwrap()
        };
        let grads = loss(&router).backward();
        let mut checked = 0;
        router.visit(&mut FiniteDifferences { router: &router, grads: &grads, loss: &loss, checked: &mut checked });
        assert!(checked > 0, "{gate:?}");
    }
}

/// Compares each parameter's gradient with central differences at its first three entries.
struct FiniteDifferences<'a, F: Fn(&SpatialRouter<Ad>) -> Tensor<Ad, 1>> {
    router: &'a SpatialRouter<Ad>,
    grads: &'a <Ad as burn::tensor::backend::AutodiffBackend>::Gradients,
    loss: &'a F,
    checked: &'a mut usize,
}

impl<F: Fn(&SpatialRouter<Ad>) -> Tensor<Ad, 1>> burn::module::ModuleVisitor<Ad> for FiniteDifferences<'_, F> {
    fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<Ad, D>>) {
        let Some(grad) = param.val().grad(self.grads) else { return };
        let grad = host::to_vec(grad);
        let base = host::to_vec(param.val());
        let id = param.id;
        for i in 0..base.len().min(3) {
            let at = |delta: f64| {
                let mut v = base.clone();
                v[i] += delta;
                let shifted = host_tensor::<Ad, D>(&v, param.val().dims(), &Default::default());
                let mut mapper = Replace { id, value: Some(shifted) };
                let r = self.router.clone().map(&mut mapper);
                host::to_vec((self.loss)(&r))[0]
            };
            let h = 1e-6;
            let fd = (at(h) - at(-h)) / (2.0 * h);
            assert!((grad[i] - fd).abs() <= 1e-6 * (1.0 + fd.abs()), "entry {i}: autodiff {} vs {fd}", grad[i]);
            *self.checked += 1;
        }
    }
}

/// Replaces the parameter `id` by `value`.
struct Replace<const E: usize> {
    id: burn::module::ParamId,
    value: Option<Tensor<Ad, E>>,
}

impl<const E: usize> burn::module::ModuleMapper<Ad> for Replace<E> {
    fn map_float<const D: usize>(
        &mut self,
        param: burn::module::Param<Tensor<Ad, D>>,
    ) -> burn::module::Param<Tensor<Ad, D>> {
        if param.id != self.id || D != E {
            return param;
        }
        let value = self.value.take().expect("one parameter with this id");
        let value: Tensor<Ad, D> = Tensor::from_data(value.into_data(), &Default::default());
        burn::module::Param::initialized(param.id, value.require_grad())
    }
}

#[test]
fn a_checkpoint_restores_the_routing_into_a_differently_seeded_router() {
    for gate in GATES {
        let s = SpatialSettings { gate, top_k: 2, ..Default::default() };
        let router = build::<B>(&s, 1);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gate");
        let recorder = burn::record::BinFileRecorder::<FullPrecisionSettings>::new();
        recorder.record(router.clone().into_record(), path.clone()).unwrap();
        let other = build::<B>(&s, 2);
        let x = field::<B>(8, 2);
        let before = other.route(x.clone(), Mode::Eval, &mut Seeds::new(0).stream("r")).unwrap().host_indices;
        let restored = other.load_record(recorder.load(path, &Default::default()).unwrap());
        let want = router.route(x.clone(), Mode::Eval, &mut Seeds::new(0).stream("r")).unwrap().host_indices;
        let got = restored.route(x, Mode::Eval, &mut Seeds::new(0).stream("r")).unwrap().host_indices;
        assert_eq!(got, want, "{gate:?}");
        assert_ne!(before, want, "{gate:?}: the seeds give different gates");
    }
}

#[test]
fn bad_settings_and_shapes_are_clear_errors() {
    let build = |s: SpatialSettings, shape: SpatialShape| {
        s.build::<B>(shape, &mut Seeds::new(0).stream("gate"), &Default::default()).map(|_| ()).unwrap_err().to_string()
    };
    assert!(build(SpatialSettings { top_k: 5, ..Default::default() }, SHAPE).contains("top_k = 5"));
    assert!(build(SpatialSettings { kernel: 7, ..Default::default() }, SHAPE).contains("5 x 6 with kernel 7"));
    assert!(build(SpatialSettings { noise: -1.0, ..Default::default() }, SHAPE).contains("noise"));
    assert!(build(SpatialSettings::default(), SpatialShape { experts: 0, ..SHAPE }).contains("num_experts = 0"));
    let router = build_ok();
    let wrong = Tensor::<B, 4>::zeros([1, 2, 6, 5], &Default::default());
    let err = router.route(wrong, Mode::Eval, &mut Seeds::new(0).stream("r")).unwrap_err().to_string();
    assert!(err.contains("[2, 6, 5]") && err.contains("[2, 5, 6]"), "{err}");
}

fn build_ok() -> SpatialRouter<B> {
    build(&SpatialSettings::default(), 0)
}
