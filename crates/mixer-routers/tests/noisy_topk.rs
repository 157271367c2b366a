//! Noisy top-k: zero init, noise only in training, survivor softmax, losses against hand computations.

use burn::backend::{Autodiff, NdArray};
use burn::module::{Module, Param};
use burn::tensor::{Tensor, backend::Backend};
use mixer_core::{AuxKind, Mode, Router, RouterInput, Routing, Seeds, host};
use mixer_routers::{NoisyTopK, NoisyTopKConfig, RouterError, softmax_row, topk_lowest};
use rand::Rng as _;
use rand_distr::StandardNormal;

type B = NdArray<f64>;
const N: usize = 5;
const D: usize = 2;
const E: usize = 4;
const X: [f64; N * D] = [1.0, 0.0, 0.0, 1.0, -1.0, 0.5, 0.3, -0.8, 0.7, 0.7];
const WG: [f64; D * E] = [0.5, -0.3, 0.2, 0.0, 0.1, 0.4, -0.6, 0.3];
const WN: [f64; D * E] = [0.2, 0.1, -0.3, 0.5, -0.4, 0.0, 0.6, 0.1];

fn router<Bk: Backend>(config: NoisyTopKConfig, device: &Bk::Device) -> NoisyTopK<Bk> {
    let mut r = config.init::<Bk>(device).unwrap();
    r.w_gate = Param::from_tensor(host::tensor2(&WG, [D, E], device));
    r.w_noise = Param::from_tensor(host::tensor2(&WN, [D, E], device));
    r
}

fn route<Bk: Backend>(r: &NoisyTopK<Bk>, mode: Mode, seed: u64, device: &Bk::Device) -> Routing<Bk> {
    let input = RouterInput { features: host::tensor2(&X, [N, D], device), mode };
    r.route(&input, &mut Seeds::new(seed).stream("noise")).unwrap()
}

fn matvec(w: &[f64], x: &[f64]) -> Vec<f64> {
    (0..E).map(|j| (0..D).map(|i| x[i] * w[i * E + j]).sum()).collect()
}

fn phi(x: f64) -> f64 {
    // Abramowitz–Stegun 7.1.26 is too coarse; integrate the density with Simpson's rule instead.
    let (a, m) = (-10.0_f64, 20_000);
    let h = (x - a) / m as f64;
    let f = |t: f64| (-0.5 * t * t).exp() / (2.0 * std::f64::consts::PI).sqrt();
    let mut s = f(a) + f(x);
    for i in 1..m {
        s += f(a + i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
    }
    s * h / 3.0
}

fn cv2(v: &[f64]) -> f64 {
    let mu = v.iter().sum::<f64>() / v.len() as f64;
    v.iter().map(|x| (x - mu).powi(2)).sum::<f64>() / v.len() as f64 / (mu * mu + 1e-10)
}

#[test]
fn gate_and_noise_weights_are_distinct_zero_initialised_parameters() {
    let device = Default::default();
    let r = NoisyTopKConfig::new(D, E, 2).init::<B>(&device).unwrap();
    assert_eq!(r.num_params(), 2 * D * E);
    assert_ne!(r.w_gate.id, r.w_noise.id);
    assert!(host::to_vec(r.w_gate.val()).iter().chain(&host::to_vec(r.w_noise.val())).all(|v| *v == 0.0));
    // Eval at zero init: equal logits, top-k are the lowest indices, each weight 1/k.
    let out = route(&r, Mode::Eval, 0, &device);
    assert_eq!(&out.indices[..2], &[Some(0), Some(1)]);
    assert!(host::to_vec(out.weights).iter().all(|w| (w - 0.5).abs() < 1e-12));
    assert!(out.aux_losses.is_empty());
}

#[test]
fn eval_is_noise_free_and_keeps_softmax_over_survivors() {
    let device = Default::default();
    let r = router::<B>(NoisyTopKConfig::new(D, E, 2), &device);
    let a = route(&r, Mode::Eval, 1, &device);
    let b = route(&r, Mode::Eval, 2, &device);
    assert_eq!(a.indices, b.indices);
    let (wa, probs) = (host::to_vec(a.weights), host::to_vec(a.probs.unwrap()));
    assert_eq!(wa, host::to_vec(b.weights));
    for (n, x) in X.chunks(D).enumerate() {
        let logits = matvec(&WG, x);
        let top = topk_lowest(&logits, 2);
        let hand = softmax_row(&[logits[top[0]], logits[top[1]]]);
        assert_eq!(a.indices[2 * n..2 * n + 2], [Some(top[0]), Some(top[1])]);
        assert!((wa[2 * n] - hand[0]).abs() < 1e-12 && (wa[2 * n + 1] - hand[1]).abs() < 1e-12);
        let row = &probs[n * E..(n + 1) * E];
        assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert_eq!(row.iter().filter(|p| **p == 0.0).count(), E - 2);
    }
}

#[test]
fn training_losses_match_hand_computation() {
    let device = Default::default();
    let config =
        NoisyTopKConfig { switch_balance_coef: Some(1e-2), z_loss_coef: Some(1e-3), ..NoisyTopKConfig::new(D, E, 2) };
    let r = router::<B>(config, &device);
    let out = route(&r, Mode::Train, 7, &device);
    // Redraw the same noise: row-major [N, E] from the same stream.
    let mut rng = Seeds::new(7).stream("noise");
    let (k, mut importance, mut load, mut f, mut p_mean, mut z_loss) =
        (2, vec![0.0; E], vec![0.0; E], vec![0.0; E], vec![0.0; E], 0.0);
    for (n, x) in X.chunks(D).enumerate() {
        let clean = matvec(&WG, x);
        let sigma: Vec<f64> = matvec(&WN, x).iter().map(|v| (1.0 + v.exp()).ln() + 1e-2).collect();
        let noisy: Vec<f64> = (0..E).map(|j| clean[j] + sigma[j] * rng.sample::<f64, _>(StandardNormal)).collect();
        let top = topk_lowest(&noisy, k + 1);
        assert_eq!(out.indices[k * n..k * n + k], [Some(top[0]), Some(top[1])]);
        let g = softmax_row(&[noisy[top[0]], noisy[top[1]]]);
        importance[top[0]] += g[0];
        importance[top[1]] += g[1];
        for j in 0..E {
            let threshold = if top[..k].contains(&j) { noisy[top[k]] } else { noisy[top[k - 1]] };
            load[j] += phi((clean[j] - threshold) / sigma[j]);
        }
        f[top[0]] += 1.0 / N as f64;
        for (j, p) in softmax_row(&noisy).iter().enumerate() {
            p_mean[j] += p / N as f64;
        }
        let m = clean.iter().fold(f64::NEG_INFINITY, |a, b| a.max(*b));
        let lse = m + clean.iter().map(|c| (c - m).exp()).sum::<f64>().ln();
        z_loss += lse * lse / N as f64;
    }
    let switch = E as f64 * f.iter().zip(&p_mean).map(|(a, b)| a * b).sum::<f64>();
    let want = [
        (AuxKind::Importance, cv2(&importance), 0.1),
        (AuxKind::Load, cv2(&load), 0.1),
        (AuxKind::SwitchBalance, switch, 1e-2),
        (AuxKind::ZLoss, z_loss, 1e-3),
    ];
    assert_eq!(out.aux_losses.len(), 4);
    for (aux, (kind, value, coef)) in out.aux_losses.iter().zip(want) {
        let got = host::to_vec(aux.value.clone())[0];
        assert_eq!((aux.kind, aux.coefficient), (kind, coef));
        assert!((got - value).abs() < 1e-7 * value.abs().max(1.0), "{kind:?}: {got} vs {value}");
    }
    // Eval: no load loss (sigma = 0 there) and no other auxiliary term.
    assert!(route(&r, Mode::Eval, 7, &device).aux_losses.is_empty());
}

#[test]
fn gradients_reach_both_weight_matrices() {
    let device = Default::default();
    let r = router::<Autodiff<B>>(NoisyTopKConfig::new(D, E, 2), &device);
    let out = route(&r, Mode::Train, 3, &device);
    let c = host::tensor2(&[1.0, -0.5, 2.0, 0.3, -1.0, 0.7, 0.2, 0.9, -0.4, 1.1], [N, 2], &device);
    let mut loss: Tensor<Autodiff<B>, 1> = (out.weights * c).sum();
    for aux in out.aux_losses {
        loss = loss + aux.value * aux.coefficient;
    }
    let grads = loss.backward();
    let gg = host::to_vec(r.w_gate.grad(&grads).unwrap());
    let gn = host::to_vec(r.w_noise.grad(&grads).unwrap());
    assert!(gg.iter().all(|v| v.is_finite()) && gn.iter().all(|v| v.is_finite()));
    assert!(gg.iter().any(|v| v.abs() > 1e-4) && gn.iter().any(|v| v.abs() > 1e-4), "{gg:?} {gn:?}");
}

#[test]
fn shared_experts_pass_through() {
    let device = Default::default();
    let config = NoisyTopKConfig { shared: vec![(3, 1.0), (0, 0.5)], ..NoisyTopKConfig::new(D, E, 1) };
    assert_eq!(route(&router::<B>(config, &device), Mode::Eval, 0, &device).shared, vec![(3, 1.0), (0, 0.5)]);
}

#[test]
fn invalid_fields_are_rejected() {
    let ok = NoisyTopKConfig::new(D, E, 2);
    let check = |c: NoisyTopKConfig| c.validate().unwrap_err();
    assert!(matches!(check(NoisyTopKConfig { num_experts: 0, ..ok.clone() }), RouterError::ZeroExperts));
    assert!(matches!(check(NoisyTopKConfig { input_dim: 0, ..ok.clone() }), RouterError::ZeroContextDim));
    assert!(matches!(check(NoisyTopKConfig { top_k: 0, ..ok.clone() }), RouterError::InvalidTopK { .. }));
    // The load loss needs a (k+1)-th logit: k = E is rejected with noise, allowed without the load loss.
    assert!(matches!(check(NoisyTopKConfig { top_k: E, ..ok.clone() }), RouterError::InvalidTopK { max: 3, .. }));
    assert!(NoisyTopKConfig { top_k: E, load_coef: 0.0, ..ok.clone() }.validate().is_ok());
    assert!(matches!(
        check(NoisyTopKConfig { noise_floor: -1.0, ..ok.clone() }),
        RouterError::InvalidNoiseFloor { .. }
    ));
    let bad = check(NoisyTopKConfig { z_loss_coef: Some(f64::NAN), ..ok.clone() });
    assert!(matches!(bad, RouterError::InvalidCoefficient { field: "z_loss_coef", .. }));
    let bad = check(NoisyTopKConfig { importance_coef: -1.0, ..ok.clone() });
    assert!(matches!(bad, RouterError::InvalidCoefficient { field: "importance_coef", .. }));
    let bad = check(NoisyTopKConfig { shared: vec![(1, 1.0), (1, 1.0)], ..ok.clone() });
    assert!(matches!(bad, RouterError::InvalidSharedExpert { index: 1, .. }));
    let bad = check(NoisyTopKConfig { shared: vec![(4, 1.0)], ..ok.clone() });
    assert!(matches!(bad, RouterError::InvalidSharedExpert { index: 4, .. }));
    let bad = check(NoisyTopKConfig { shared: vec![(0, f64::INFINITY)], ..ok });
    assert!(matches!(bad, RouterError::InvalidSharedWeight { index: 0, .. }));
}
