use super::*;
use crate::tests::{TestAutodiffBackend, TestBackend};
use burn::module::AutodiffModule;
use mixer_core::host::to_vec;

fn config(conditioning: Conditioning) -> TaskDynamicsConfig {
    TaskDynamicsConfig {
        state: 2,
        action: 1,
        hidden: vec![4],
        activation: Activation::Tanh,
        embedding: 3,
        conditioning,
    }
}

fn full() -> Conditioning {
    Conditioning::Hypernet { hidden: vec![], chunk_size: None, chunk_embedding: 1 }
}

/// A model of `conditioning` with three tasks whose embeddings are fixed numbers.
fn three_tasks<B: Backend>(conditioning: Conditioning) -> TaskDynamics<B> {
    let device = Default::default();
    let mut m = config(conditioning).init::<B>(&device).unwrap();
    for t in 0..3 {
        let e: Vec<f64> = (0..3).map(|j| 0.4 * t as f64 - 0.3 * j as f64 + 0.1).collect();
        m = m.with_task(&e, &device).unwrap();
    }
    // burn initialises parameters lazily, and a clone of an uninitialised one draws anew
    m.network(0).unwrap();
    m
}

#[test]
fn the_output_regulariser_matches_a_hand_computation() {
    let device = Default::default();
    let model = three_tasks::<TestBackend>(full());
    let p = model.layout.num_params();
    assert_eq!(p, (3 * 4 + 4) + (4 * 2 + 2));
    // the snapshot's last layer has every bias shifted by c: each generated weight moves by c
    let c = 0.25;
    let mut snapshot = model.clone();
    let hyper = snapshot.hypernet.as_mut().unwrap();
    let last = hyper.layers.last_mut().unwrap();
    let bias = last.bias.as_ref().unwrap().val();
    last.bias = Some(Param::from_tensor(bias + c));
    let past = [0, 1];
    let targets = snapshot.generate(snapshot.embedding_rows(&past, true).unwrap()).unwrap();
    let beta = 0.05;
    let reg = to_vec(model.output_regulariser(&past, targets.clone(), beta, false).unwrap())[0];
    // beta / (t - 1) * sum over 2 past tasks of P * c^2
    let hand = beta / 2.0 * 2.0 * p as f64 * c * c;
    assert!((reg - hand).abs() < 1e-12, "{reg} vs {hand}");
    // and against the generated vectors summed on the host
    let now = to_vec(model.generate(model.embedding_rows(&past, true).unwrap()).unwrap());
    let then = to_vec(targets);
    let host: f64 = now.iter().zip(&then).map(|(a, b)| (a - b) * (a - b)).sum::<f64>() * beta / 2.0;
    assert!((reg - host).abs() < 1e-12);
    let none = model.output_regulariser(&[], Tensor::zeros([0, p], &device), beta, false).unwrap();
    assert_eq!(to_vec(none), vec![0.0]);
    assert!(model.output_regulariser(&past, Tensor::zeros([1, p], &device), beta, false).is_err());
}

#[test]
fn frozen_past_embeddings_get_no_gradient_and_plastic_ones_do() {
    let model = three_tasks::<TestAutodiffBackend>(full());
    let snap = model.valid();
    let shifted = snap.generate(snap.embedding_rows(&[0, 1], true).unwrap()).unwrap() + 0.1;
    let target = Tensor::from_inner(shifted);
    for plastic in [false, true] {
        let reg = model.output_regulariser(&[0, 1], target.clone(), 1.0, plastic).unwrap();
        let grads = reg.backward();
        let emb = model.embeddings[0].grad(&grads);
        assert_eq!(emb.is_some(), plastic, "plastic = {plastic}");
        assert!(model.hypernet.as_ref().unwrap().layers[0].weight.grad(&grads).is_some());
    }
}

#[test]
fn generated_networks_match_per_row_evaluation() {
    let device = Default::default();
    let x = mixer_core::host::tensor2::<TestBackend>(&[0.3, -0.2, 0.5, 1.0, 0.4, -0.7], [2, 3], &device);
    let chunked = Conditioning::Hypernet { hidden: vec![5], chunk_size: Some(7), chunk_embedding: 2 };
    for conditioning in [full(), chunked] {
        let model = three_tasks::<TestBackend>(conditioning);
        let params = model.generate(model.embedding_rows(&[2], false).unwrap()).unwrap();
        let rows = to_vec(model.layout.forward(params.repeat_dim(0, 2), x.clone()));
        let shared = to_vec(model.network(2).unwrap().forward(x.clone()));
        for (a, b) in rows.iter().zip(&shared) {
            assert!((a - b).abs() < 1e-12);
        }
        assert_eq!(model.parameters(), model.hypernet.as_ref().unwrap().num_params() + 9);
    }
    let multi = three_tasks::<TestBackend>(Conditioning::EmbeddingInput);
    assert_eq!(multi.layout.input(), 6);
    let with_emb = Tensor::cat(vec![x.clone(), multi.embedding_rows(&[1], false).unwrap().repeat_dim(0, 2)], 1);
    let direct = to_vec(multi.layout.forward_shared(multi.shared.as_ref().unwrap().val(), with_emb));
    assert_eq!(direct, to_vec(multi.network(1).unwrap().forward(x.clone())));
    let plain = three_tasks::<TestBackend>(Conditioning::Shared);
    assert_eq!(plain.parameters(), plain.layout.num_params(), "unused embeddings are not counted");
    assert_eq!(to_vec(plain.network(0).unwrap().forward(x.clone())), to_vec(plain.network(2).unwrap().forward(x)));
    assert!(plain.network(3).is_err());
}

#[test]
fn bad_sizes_are_refused() {
    let device = Default::default();
    let ok = config(full());
    assert!(ok.validate().is_ok());
    for bad in [
        TaskDynamicsConfig { state: 0, ..ok.clone() },
        TaskDynamicsConfig { action: 0, ..ok.clone() },
        TaskDynamicsConfig { embedding: 0, ..ok.clone() },
        TaskDynamicsConfig { hidden: vec![0], ..ok.clone() },
        TaskDynamicsConfig {
            conditioning: Conditioning::Hypernet { hidden: vec![], chunk_size: Some(0), chunk_embedding: 1 },
            ..ok.clone()
        },
    ] {
        assert!(bad.validate().is_err(), "{bad:?}");
    }
    let m = ok.init::<TestBackend>(&device).unwrap();
    assert!(m.clone().with_task(&[1.0, 2.0], &device).is_err());
    assert!(m.with_task(&[1.0, f64::NAN, 0.0], &device).is_err());
}

#[test]
fn the_normaliser_standardises_and_inverts() {
    let device = Default::default();
    let inputs = [1.0, 5.0, 3.0, 5.0];
    let deltas = [0.5, -0.5];
    let n = DeltaNormaliser::fit(&inputs, 2, &deltas, 1).unwrap();
    assert_eq!((n.input_mean.clone(), n.input_std.clone()), (vec![2.0, 5.0], vec![1.0, 1.0]));
    assert_eq!((n.output_mean.clone(), n.output_std.clone()), (vec![0.0], vec![0.5]));
    let t = n.on::<TestBackend>(&device);
    let x = mixer_core::host::tensor2::<TestBackend>(&inputs, [2, 2], &device);
    assert_eq!(to_vec(t.inputs(x)), vec![-1.0, 0.0, 1.0, 0.0]);
    let d = mixer_core::host::tensor2::<TestBackend>(&deltas, [2, 1], &device);
    assert_eq!(to_vec(t.targets(d.clone())), vec![1.0, -1.0]);
    assert_eq!(to_vec(t.deltas(t.targets(d))), deltas.to_vec());
    assert!(DeltaNormaliser::fit(&inputs, 2, &deltas[..1], 1).is_err());
    assert!(DeltaNormaliser::fit(&[], 2, &[], 1).is_err());
}
