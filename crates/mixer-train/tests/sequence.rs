//! The sequence trainer: gradients of the forced-prediction loss against finite differences, and
//! MixER's routing of a two-class set of series (hier-shPLRNN experts, gate refit by K-means +
//! least squares).

use burn::backend::{Autodiff, NdArray};
use burn::tensor::{Tensor, backend::Backend};
use ndarray::Array4;

use mixer_core::host::{tensor2, to_array2, to_vec};
use mixer_core::{ContextModel, Dataset, Seeds, TimeGrid};
use mixer_experts::{Forcing, HierShPlrnnConfig};
use mixer_train::metrics::nmi;
use mixer_train::{
    AdaBeliefConfig, ForcingSchedule, LinearSvm, RouterConfig, SequenceAdaptSettings, SequenceModelConfig,
    SequenceRunConfig, SequenceTrainSettings, SequenceTrainer, adapt_sequence_contexts, classification_accuracy,
    context_clusters, context_matrix, sequence_assignment, sequence_env_losses, series_tensor,
};

type B = NdArray<f64>;
type A = Autodiff<B>;

static AUTODIFF: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Backward passes of concurrent tests share burn-autodiff state; run them one at a time.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    AUTODIFF.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn context_and_weight_gradients_match_finite_differences() {
    let _serial = serial();
    let device = Default::default();
    A::seed(&device, 4);
    let (envs, steps, c) = (3, 6, 2);
    let cfg = HierShPlrnnConfig { dim: 1, hidden: 3, context: c, tf_alpha_min: 0.0 };
    let experts = vec![cfg.init::<A>(&device).unwrap(), cfg.init::<A>(&device).unwrap()];
    let expert_of = [0, 1, 0];
    let x = Array4::from_shape_fn((envs, 1, steps, 1), |(e, _, k, _)| (0.7 * e as f64 + 0.4 * k as f64).sin());
    let data = Dataset::new(x, TimeGrid::Shared((0..steps).map(|k| k as f64).collect()), None).unwrap();
    let series = series_tensor::<A>(&data, &device);
    let forcing = Forcing { interval: 2, weight: 0.6 };
    let ctx_values = [0.3, -0.8, 1.1, 0.2, -0.5, 0.9];
    let envs_list = [2, 0, 1];
    let loss_at = |ctx: &[f64], experts: &[mixer_experts::HierShPlrnn<A>]| -> Tensor<A, 1> {
        let contexts = tensor2::<A>(ctx, [envs, c], &device).require_grad();
        sequence_env_losses(experts, &expert_of, contexts, &series, 1, &envs_list, &forcing).unwrap().sum()
    };
    // autodiff gradient with respect to the contexts
    let contexts = tensor2::<A>(&ctx_values, [envs, c], &device).require_grad();
    let loss =
        sequence_env_losses(&experts, &expert_of, contexts.clone(), &series, 1, &envs_list, &forcing).unwrap().sum();
    let grads = loss.backward();
    let g_ctx = to_vec(contexts.grad(&grads).unwrap());
    let g_hyper = to_vec(experts[1].hyper.val().grad(&grads).unwrap());
    let h = 1e-6;
    for i in 0..ctx_values.len() {
        let (mut up, mut down) = (ctx_values, ctx_values);
        up[i] += h;
        down[i] -= h;
        let fd = (to_vec(loss_at(&up, &experts))[0] - to_vec(loss_at(&down, &experts))[0]) / (2.0 * h);
        assert!((fd - g_ctx[i]).abs() < 1e-6 * (1.0 + fd.abs()), "context {i}: fd {fd} vs autodiff {}", g_ctx[i]);
    }
    // and with respect to entries of the second expert's hypernetwork
    let hyper = to_vec(experts[1].hyper.val());
    let p = cfg.num_params();
    for i in [0, 3, p, 2 * p - 1] {
        let shifted = |delta: f64| {
            let mut values = hyper.clone();
            values[i] += delta;
            let mut e = experts.clone();
            e[1].hyper = burn::module::Param::from_tensor(tensor2::<A>(&values, [p, c], &device));
            to_vec(loss_at(&ctx_values, &e))[0]
        };
        let fd = (shifted(h) - shifted(-h)) / (2.0 * h);
        assert!((fd - g_hyper[i]).abs() < 1e-6 * (1.0 + fd.abs()), "hyper {i}: fd {fd} vs autodiff {}", g_hyper[i]);
    }
}

/// Six series relaxing to +2 (`x' = 0.5 x + 1`) and six alternating in sign (`x' = -0.8 x`).
fn two_classes() -> (Dataset, Vec<usize>) {
    let steps = 10;
    let x = Array4::from_shape_fn((12, 1, steps, 1), |(e, _, k, _)| {
        let start = 0.25 * (e % 6) as f64 - 0.5;
        let mut v = if e < 6 { start } else { 1.0 + start };
        for _ in 0..k {
            v = if e < 6 { 0.5 * v + 1.0 } else { -0.8 * v };
        }
        v
    });
    let t = TimeGrid::Shared((0..steps).map(|k| k as f64).collect());
    let labels: Vec<usize> = (0..12).map(|e| e / 6).collect();
    (Dataset::new(x, t, Some(labels.clone())).unwrap(), labels)
}

fn run_config(experts: usize, outer_steps: usize) -> SequenceRunConfig {
    let router: RouterConfig = toml::from_str(
        r#"kind = "kmeans-ls"
max_kmeans = 20
tol = 1e-4
init = "KMeansPlusPlus"
empty = "Reseed"
clusters = "Experts"
matching = "Greedy"
ls_noise = 1e-4
"#,
    )
    .unwrap();
    SequenceRunConfig {
        model: SequenceModelConfig { experts, context_dim: 2, hidden: 4, tf_alpha_min: 0.0 },
        router,
        adapt: Default::default(),
        train: SequenceTrainSettings {
            outer_steps,
            context_steps: 3,
            model_steps: 3,
            lr_model: 2e-2,
            lr_context: 2e-2,
            lr_drop_factor: 1.0,
            lr_drop_at: vec![],
            proximal_beta: 10.0,
            subset_size: 12,
            self_reweight: false,
            gate_update_every: 1,
            forcing: ForcingSchedule { interval: 1, start: 1.0, end: 1.0 },
            optimizer: AdaBeliefConfig::paper(),
        },
    }
}

#[test]
fn two_classes_get_two_experts_and_two_context_clusters() {
    let _serial = serial();
    let device = Default::default();
    let (data, labels) = two_classes();
    let mut trainer = SequenceTrainer::<A>::new(run_config(2, 40), &data, Seeds::new(3), &device).unwrap();
    let mut losses = Vec::new();
    trainer.run(|r| losses.push(r.model_loss)).unwrap();
    let model = trainer.valid();
    let routing = sequence_assignment(&model.theta, model.contexts.contexts()).unwrap();
    let clusters = context_clusters(&context_matrix(&model), 2, &mut Seeds::new(0).stream("kmeans")).unwrap();
    let first = losses[0];
    let last = *losses.last().unwrap();
    assert!(last < 0.2 * first, "loss {first} -> {last}");
    assert_eq!(nmi(&labels, &clusters), 1.0, "clusters {clusters:?}");
    assert_eq!(nmi(&labels, &routing), 1.0, "routing {routing:?}; gate refits {}", trainer.state.gate_updates);
    // the same series as new ones: contexts fitted from zero with the model frozen land with
    // their class, whole or in chunks, and an SVM on the training contexts classifies them
    let mut config = run_config(2, 40);
    config.adapt = SequenceAdaptSettings { steps: 60, lr: 5e-2, chunk: 1024 };
    let whole = to_array2(adapt_sequence_contexts(trainer.theta(), &config, &data, &device).unwrap());
    config.adapt.chunk = 5;
    let chunked = to_array2(adapt_sequence_contexts(trainer.theta(), &config, &data, &device).unwrap());
    let gap = whole.iter().zip(&chunked).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
    assert!(gap < 1e-6, "chunked fit differs by {gap}");
    let svm = LinearSvm::fit(&context_matrix(&model), &labels, 1.0).unwrap();
    assert_eq!(classification_accuracy(&labels, &svm.predict(&whole)), 1.0, "adapted contexts {whole:?}");
    let adapted_routing = sequence_assignment(&model.theta, tensor2(whole.as_slice().unwrap(), [12, 2], &device));
    assert_eq!(nmi(&labels, &adapted_routing.unwrap()), 1.0);
}

#[test]
fn bad_configs_are_rejected() {
    let (data, _) = two_classes();
    let device = Default::default();
    let too_many = run_config(13, 1);
    let err = SequenceTrainer::<A>::new(too_many, &data, Seeds::new(0), &device).err().unwrap().to_string();
    assert!(err.contains("model.experts"), "{err}");
    let mut bad = run_config(2, 1);
    bad.train.forcing.end = 1.5;
    assert!(bad.validate().unwrap_err().to_string().contains("train.forcing.end"));
    let mut bad = run_config(2, 1);
    bad.model.hidden = 0;
    assert!(bad.validate().is_err());
    // the forcing schedule anneals geometrically from start to end
    let s = ForcingSchedule { interval: 2, start: 0.8, end: 0.2 };
    assert!((s.at(0, 5).weight - 0.8).abs() < 1e-12 && (s.at(4, 5).weight - 0.2).abs() < 1e-12);
    assert!((s.at(2, 5).weight - 0.4).abs() < 1e-12);
    assert_eq!(s.at(2, 5).interval, 2);
}
