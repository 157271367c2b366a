//! Pieces shared by the softmax routers: reduced-scale initialisation, input jitter, expert
//! capacity with dropping, and the Switch balance and router z-losses.

use burn::module::Param;
use burn::tensor::{Int, Tensor, TensorData, backend::Backend};
use rand::Rng as _;
use rand_distr::StandardNormal;

use mixer_core::{AuxKind, AuxLoss, Mode, Rng, RouterInput, host};

use crate::RouterShape;

/// `W: [d, E]` from a normal of standard deviation `sqrt(scale / d)` truncated at two standard
/// deviations, drawn row-major from `rng` (Switch's reduced initialisation uses `scale = 0.1`).
pub(crate) fn reduced_init<B: Backend>(
    d: usize,
    e: usize,
    scale: f64,
    rng: &mut Rng,
    device: &B::Device,
) -> Param<Tensor<B, 2>> {
    let std = (scale / d as f64).sqrt();
    let mut draw = || loop {
        let z: f64 = rng.sample(StandardNormal);
        if z.abs() <= 2.0 {
            return std * z;
        }
    };
    let w: Vec<f64> = (0..d * e).map(|_| draw()).collect();
    Param::from_tensor(host::tensor2(&w, [d, e], device))
}

/// Logits `x W` of a router's input `x: [N, d]` after checking `d` against `W: [d, E]`; in
/// training `x` is first jittered by `U(1 - eps, 1 + eps)` drawn from `rng` (`eps = 0`: no draw).
pub(crate) fn linear_logits<B: Backend>(
    w: &Param<Tensor<B, 2>>,
    input: &RouterInput<B>,
    eps: f64,
    rng: &mut Rng,
) -> mixer_core::Result<Tensor<B, 2>> {
    let [features, experts] = w.dims();
    RouterShape { experts, features }.check_features(input.features.dims())?;
    let x = input.features.clone();
    let x = if input.mode == Mode::Train { jitter(x, eps, rng) } else { x };
    Ok(x.matmul(w.val()))
}

/// `x` multiplied entrywise by `U(1 - eps, 1 + eps)` noise drawn row-major from `rng` (Switch's
/// input jitter); `x` unchanged when `eps = 0`.
pub(crate) fn jitter<B: Backend>(x: Tensor<B, 2>, eps: f64, rng: &mut Rng) -> Tensor<B, 2> {
    if eps == 0.0 {
        return x;
    }
    let [n, d] = x.dims();
    let u: Vec<f64> = (0..n * d).map(|_| 1.0 + eps * (2.0 * rng.random::<f64>() - 1.0)).collect();
    let device = x.device();
    x * host::tensor2(&u, [n, d], &device)
}

/// Units each expert can take: `ceil(n * factor / E)`, at least 1 (Switch, GShard).
pub(crate) fn capacity(n: usize, factor: f64, experts: usize) -> usize {
    ((n as f64 * factor / experts as f64).ceil() as usize).max(1)
}

/// Drops choices beyond each expert's capacity. `choices` lists `(flat slot, expert)` in
/// priority order; the returned mask (indexed by flat slot, length `slots`) says which are kept.
pub(crate) fn keep_within_capacity(
    choices: impl IntoIterator<Item = (usize, usize)>,
    slots: usize,
    experts: usize,
    capacity: usize,
) -> Vec<bool> {
    let mut taken = vec![0; experts];
    let mut keep = vec![false; slots];
    for (slot, expert) in choices {
        if taken[expert] < capacity {
            taken[expert] += 1;
            keep[slot] = true;
        }
    }
    keep
}

/// Integer tensor `[n, k]` of `values`.
pub(crate) fn int_tensor<B: Backend>(values: &[usize], shape: [usize; 2], device: &B::Device) -> Tensor<B, 2, Int> {
    let v: Vec<i64> = values.iter().map(|&i| i as i64).collect();
    Tensor::from_data(TensorData::new(v, shape), device)
}

/// `weights` with the entries of dropped slots (`keep[i] = false`, row-major) set to zero.
pub(crate) fn zero_dropped<B: Backend>(weights: Tensor<B, 2>, keep: &[bool]) -> Tensor<B, 2> {
    let mask: Vec<f64> = keep.iter().map(|&k| if k { 1.0 } else { 0.0 }).collect();
    let device = weights.device();
    let dims = weights.dims();
    weights * host::tensor2(&mask, dims, &device)
}

/// Switch balance loss `E * sum_i f_i P_i`: `f_i` the share of units whose first choice is `i`
/// (no gradient), `P_i` the mean probability of `i` over units (`probs: [N, E]`). It is 1 at
/// uniform routing.
pub(crate) fn switch_balance<B: Backend>(probs: Tensor<B, 2>, first: &[usize]) -> Tensor<B, 1> {
    let [n, e] = probs.dims();
    let mut f = vec![0.0; e];
    for &i in first {
        f[i] += 1.0 / n as f64;
    }
    let device = probs.device();
    let f = Tensor::<B, 1>::from_data(TensorData::new(f, [e]), &device);
    (probs.mean_dim(0).reshape([e]) * f).sum().mul_scalar(e as f64)
}

/// The training losses of Switch and GShard: the balance loss with coefficient `balance`
/// (`first`: first choices) and, when `z` is set, the z-loss of `logits` with that coefficient.
pub(crate) fn balance_and_z_losses<B: Backend>(
    probs: Tensor<B, 2>,
    first: &[usize],
    balance: f64,
    logits: Tensor<B, 2>,
    z: Option<f64>,
) -> Vec<AuxLoss<B>> {
    let mut losses =
        vec![AuxLoss { kind: AuxKind::SwitchBalance, value: switch_balance(probs, first), coefficient: balance }];
    if let Some(coefficient) = z {
        losses.push(AuxLoss { kind: AuxKind::ZLoss, value: z_loss(logits), coefficient });
    }
    losses
}

/// Router z-loss `mean_n (logsumexp_i h_{n,i})^2` of `logits: [N, E]` (Zoph et al. 2022), `[1]`.
pub(crate) fn z_loss<B: Backend>(logits: Tensor<B, 2>) -> Tensor<B, 1> {
    let [n, e] = logits.dims();
    let m = logits.clone().max_dim(1).detach();
    let lse = (logits - m.clone().expand([n, e])).exp().sum_dim(1).log() + m;
    lse.powi_scalar(2).mean().reshape([1])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TestBackend;
    use mixer_core::Seeds;

    #[test]
    fn capacity_keeps_the_first_choices_in_priority_order() {
        assert_eq!(capacity(10, 1.25, 4), 4);
        assert_eq!(capacity(1, 0.5, 8), 1);
        // Three units want expert 1, capacity 2: the third in priority order is dropped.
        let keep = keep_within_capacity([(0, 1), (1, 1), (2, 0), (3, 1)], 4, 2, 2);
        assert_eq!(keep, vec![true, true, true, false]);
    }

    #[test]
    fn balance_is_one_at_uniform_routing_and_z_loss_matches_hand_value() {
        let device = Default::default();
        let p = Tensor::<TestBackend, 2>::full([4, 2], 0.5, &device);
        assert!((host::to_vec(switch_balance(p, &[0, 1, 0, 1]))[0] - 1.0).abs() < 1e-12);
        // logsumexp(0, ln 3) = ln 4.
        let h = host::tensor2::<TestBackend>(&[0.0, 3f64.ln()], [1, 2], &device);
        assert!((host::to_vec(z_loss(h))[0] - 4f64.ln().powi(2)).abs() < 1e-12);
    }

    #[test]
    fn reduced_init_is_truncated_and_scaled() {
        let w = reduced_init::<TestBackend>(10, 50, 0.1, &mut Seeds::new(0).stream("w"), &Default::default());
        let v = host::to_vec(w.val());
        let std = (0.1f64 / 10.0).sqrt();
        assert!(v.iter().all(|x| x.abs() <= 2.0 * std));
        let sd = (v.iter().map(|x| x * x).sum::<f64>() / v.len() as f64).sqrt();
        // A normal truncated at 2 sigma has standard deviation 0.88 sigma.
        assert!((sd / std - 0.88).abs() < 0.08, "{}", sd / std);
    }
}
