//! MoE-POT, the mixture-of-experts pre-training operator transformer (Wang et al., NeurIPS 2025,
//! built on DPOT, Hao et al., ICML 2024): one next-frame operator for many PDE families, whose
//! channel MLPs are sparse mixtures of experts routed once per sample in every block.
//!
//! For the last `T` frames `[B, T, C, H, W]` of a field the model
//!
//! 1. normalises every sample and channel by its mean and standard deviation over the `T` frames
//!    (so families of any scale share one model; the prediction is mapped back),
//! 2. embeds `p x p` patches of the stacked frames (`T C p^2 -> D`, GELU, `D -> D`, plus a
//!    learned position embedding) into tokens on the `H/p x W/p` patch grid,
//! 3. runs `depth` blocks `x += AFNO(GN(x)); x += MoE(GN(x))` (GN: group normalisation;
//!    AFNO: [`AfnoMixer`]),
//! 4. decodes every token back to its patch (`D -> D`, GELU, `D -> C p^2`) and adds the result to
//!    the last normalised frame.
//!
//! The channel mixer of a block ([`ChannelMixer`]) computes shared features
//! `F = GELU(W_f x + b_f)` of width `D_h` at every token, pools them over the tokens of each
//! sample, and asks a router of the registry ([`RouterConfig`], MoE-POT's `shared-routed` by
//! default: 16 routed experts top 4 plus 2 shared) for the sample's experts; expert `e` maps
//! `F` to `GELU(W_e F + b_e)` of width `D`, and the output is the routing-weighted sum. Only the
//! chosen experts run, each on the samples routed to it (gather, evaluate, scatter-add). The
//! dense baseline is the same block with one always-on expert ([`ChannelSettings::Dense`]);
//! [`PotSettings::dense_twin`] sizes it to the mixture's active or total parameters.
//!
//! Deviations from the published code, each for a stated reason: the input frames are stacked
//! as channels instead of DPOT's temporal aggregation layer (fewer parameters at small `T`); the
//! router is the registry's linear router on the pooled features instead of a conv-MLP with
//! batch normalisation (which couples the samples of a batch); the temperature schedule is
//! stepped by the trainer and checkpointed (see [`mixer_routers::SharedRouted`]).

use burn::module::{Module, Param};
use burn::tensor::{IndexingUpdateOp, Tensor, activation::gelu, backend::Backend};
use serde::{Deserialize, Serialize};

use mixer_core::{Mode, Rng, Router, RouterInput, host};
use mixer_routers::{Gate, Refit, RouterConfig, RouterShape, SharedRoutedSettings, host_tensor};

use crate::ExpertError;
use crate::afno::{AFNO_INIT_SCALE, AfnoMixer, AfnoSettings, standard_normal};
use crate::moe::index;

/// Variance floor of the per-sample normalisation and of the group norms.
pub const NORM_EPS: f64 = 1e-6;

/// Settings of the operator transformer (`kind = "pot"`); the defaults are a small model for
/// 32 x 32 grids (MoE-POT Tiny is width 512, depth 4, patch 8 on 128 x 128).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PotSettings {
    /// Input frames `T` (default 4).
    pub frames: usize,
    /// Patch side `p`; must divide both grid sides (default 4).
    pub patch: usize,
    /// Token width `D` (default 64).
    pub width: usize,
    /// Blocks (default 4).
    pub depth: usize,
    /// AFNO channel blocks; must divide `width` (default 8).
    pub afno_blocks: usize,
    /// AFNO soft-shrinkage threshold (default 0.01).
    pub sparsity_threshold: f64,
    /// Groups of the group normalisations; must divide `width` (default 8).
    pub norm_groups: usize,
    /// The channel mixer of every block.
    pub channel: ChannelSettings,
}

impl Default for PotSettings {
    fn default() -> Self {
        Self {
            frames: 4,
            patch: 4,
            width: 64,
            depth: 4,
            afno_blocks: 8,
            sparsity_threshold: 0.01,
            norm_groups: 8,
            channel: ChannelSettings::Moe(MoeMlpSettings::default()),
        }
    }
}

/// The channel mixer of a block: a mixture of experts or one dense MLP of the same form.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ChannelSettings {
    /// MoE-POT's mixture: shared features, a router, routed and shared experts.
    Moe(MoeMlpSettings),
    /// One always-on expert: `GELU(W_2 GELU(W_1 x + b_1) + b_2)` with `hidden` units.
    Dense {
        /// Hidden units.
        hidden: usize,
    },
}

/// Settings of a block's mixture of experts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MoeMlpSettings {
    /// Width `D_h` of the shared features over the token width (default 1).
    pub mlp_ratio: usize,
    /// Experts picked by the router (routed plus shared, default 18 = 16 + 2).
    pub experts: usize,
    /// The router (default MoE-POT's: `shared-routed`, top 4 of 16 plus 2 shared, temperature
    /// 2 -> 0.5, balance 0.1).
    pub router: RouterConfig,
}

impl Default for MoeMlpSettings {
    fn default() -> Self {
        Self { mlp_ratio: 1, experts: 18, router: RouterConfig::SharedRouted(SharedRoutedSettings::default()) }
    }
}

/// Which parameter count a dense twin matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Matching {
    /// The parameters one sample uses (shared features, the chosen and the shared experts).
    Active,
    /// Every parameter.
    Total,
}

impl MoeMlpSettings {
    /// Experts each sample uses (the router's top-k plus its shared experts) and the router's
    /// parameters, read off a router built on features of width `hidden`.
    fn probe(&self, hidden: usize) -> (usize, usize) {
        type Probe = burn::backend::Flex;
        let shape = RouterShape { experts: self.experts, features: hidden };
        let mut rng = mixer_core::Seeds::new(0).stream("probe");
        let device = Default::default();
        let Ok(gate) = self.router.build::<Probe>(shape, &mut rng, &device) else {
            return (self.experts, 0);
        };
        let input = RouterInput { features: Tensor::<Probe, 2>::zeros([1, hidden], &device), mode: Mode::Eval };
        let active = gate.route(&input, &mut rng).map_or(self.experts, |r| r.k + r.shared.len());
        (active, gate.num_params())
    }
}

impl PotSettings {
    /// Width `D_h` of a mixture's shared features (the hidden units of a dense mixer).
    pub fn hidden(&self) -> usize {
        match &self.channel {
            ChannelSettings::Moe(m) => self.width * m.mlp_ratio,
            ChannelSettings::Dense { hidden } => *hidden,
        }
    }

    /// Parameters of one block's channel mixer: all of them, and those one sample uses.
    pub fn channel_parameters(&self) -> (usize, usize) {
        let (d, h) = (self.width, self.hidden());
        let features = d * h + h;
        let expert = h * d + d;
        match &self.channel {
            ChannelSettings::Dense { .. } => (features + expert, features + expert),
            ChannelSettings::Moe(m) => {
                let (active, router) = m.probe(h);
                let total = features + m.experts * expert + router;
                (total, features + active * expert + router)
            }
        }
    }

    /// The dense model of these settings whose channel mixer has (as nearly as whole hidden
    /// units allow) the mixture's active or total parameters.
    pub fn dense_twin(&self, matching: Matching) -> PotSettings {
        let (total, active) = self.channel_parameters();
        let target = if matching == Matching::Active { active } else { total };
        let d = self.width;
        // A dense mixer has h (2 d + 1) + d parameters.
        let hidden = ((target.saturating_sub(d)) as f64 / (2 * d + 1) as f64).round().max(1.0) as usize;
        PotSettings { channel: ChannelSettings::Dense { hidden }, ..self.clone() }
    }

    /// Checks the settings for fields of `channels` channels on a `height x width` grid.
    pub fn check(&self, channels: usize, [height, width]: [usize; 2]) -> Result<(), ExpertError> {
        let bad = |field: &str, reason: String| Err(mixer_core::Error::config(field, reason).into());
        for (field, value) in [("frames", self.frames), ("patch", self.patch), ("width", self.width)] {
            if value == 0 {
                return bad(field, "must be at least 1".into());
            }
        }
        if self.depth == 0 {
            return bad("depth", "at least one block".into());
        }
        if channels == 0 {
            return bad("channels", "the fields have no channel".into());
        }
        if !height.is_multiple_of(self.patch) || !width.is_multiple_of(self.patch) {
            let msg = format!("a {height} x {width} grid does not divide into {0} x {0} patches", self.patch);
            return bad("patch", msg);
        }
        if self.norm_groups == 0 || !self.width.is_multiple_of(self.norm_groups) {
            return bad("norm_groups", format!("{} groups do not split width {}", self.norm_groups, self.width));
        }
        self.afno().check([height / self.patch, width / self.patch])?;
        match &self.channel {
            ChannelSettings::Dense { hidden: 0 } => bad("channel.hidden", "at least one hidden unit".into()),
            ChannelSettings::Dense { .. } => Ok(()),
            ChannelSettings::Moe(m) => {
                if m.mlp_ratio == 0 {
                    return bad("channel.mlp_ratio", "at least 1".into());
                }
                let shape = RouterShape { experts: m.experts, features: self.hidden() };
                m.router.check(shape).map_err(|e| mixer_core::Error::config("channel.router", e.to_string()).into())
            }
        }
    }

    /// The settings of every block's token mixer.
    fn afno(&self) -> AfnoSettings {
        AfnoSettings {
            width: self.width,
            num_blocks: self.afno_blocks,
            hidden_factor: 1,
            sparsity_threshold: self.sparsity_threshold,
            kept_modes: 1.0,
        }
    }

    /// Checks, then builds the model for fields of `channels` channels on a `[height, width]`
    /// grid; every random draw comes from `rng`.
    pub fn init<B: Backend>(
        &self,
        channels: usize,
        grid: [usize; 2],
        rng: &mut Rng,
        device: &B::Device,
    ) -> Result<OperatorTransformer<B>, ExpertError> {
        self.check(channels, grid)?;
        let (p, d) = (self.patch, self.width);
        let tokens = (grid[0] / p) * (grid[1] / p);
        let patch_in = self.frames * channels * p * p;
        let (embed_in, embed_out) = (Linear::new(patch_in, d, rng, device), Linear::new(d, d, rng, device));
        let position = Param::from_tensor(normal(&[tokens, d], rng, device));
        let blocks = (0..self.depth)
            .map(|_| -> Result<PotBlock<B>, ExpertError> {
                Ok(PotBlock {
                    norm1: GroupNorm::new(d, device),
                    afno: self.afno().init([grid[0] / p, grid[1] / p], rng, device)?,
                    norm2: GroupNorm::new(d, device),
                    channel: ChannelMixer::new(self, rng, device)?,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let head_in = Linear::new(d, d, rng, device);
        // A zero last layer: the untrained model persists the last frame, the bar it must clear.
        let head_out = Linear::new(d, channels * p * p, rng, device).zeroed();
        Ok(OperatorTransformer {
            embed_in,
            embed_out,
            position,
            blocks,
            head_in,
            head_out,
            settings: self.clone(),
            channels,
            grid,
        })
    }
}

/// A `shape` tensor of draws from `N(0, 0.02^2)` (DPOT's and AFNO's initialisation).
fn normal<B: Backend, const D: usize>(shape: &[usize; D], rng: &mut Rng, device: &B::Device) -> Tensor<B, D> {
    let values: Vec<f64> = (0..shape.iter().product()).map(|_| AFNO_INIT_SCALE * standard_normal(rng)).collect();
    host_tensor(&values, *shape, device)
}

/// An affine map on the last axis, `x W + b`, with `W: [in, out]` from `N(0, 0.02^2)`, `b = 0`.
#[derive(Module, Debug)]
pub struct Linear<B: Backend> {
    /// Weight `[in, out]`.
    weight: Param<Tensor<B, 2>>,
    /// Bias `[out]`.
    bias: Param<Tensor<B, 1>>,
}

impl<B: Backend> Linear<B> {
    fn new(input: usize, output: usize, rng: &mut Rng, device: &B::Device) -> Self {
        Self {
            weight: Param::from_tensor(normal(&[input, output], rng, device)),
            bias: Param::from_tensor(Tensor::zeros([output], device)),
        }
    }

    /// The same map with weight and bias zero.
    fn zeroed(self) -> Self {
        Self { weight: Param::from_tensor(self.weight.val().zeros_like()), bias: self.bias }
    }

    /// `x W + b` for `x: [..., in]`, flattened to rows and back.
    fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let mut dims = x.dims();
        let input = dims[D - 1];
        let rows = dims.iter().take(D - 1).product::<usize>();
        let y = x.reshape([rows, input]).matmul(self.weight.val()) + self.bias.val().unsqueeze_dim(0);
        dims[D - 1] = self.bias.dims()[0];
        y.reshape(dims)
    }
}

/// Group normalisation over `[B, N, D]` tokens: every sample's channels in `groups` groups,
/// each normalised over its channels and all tokens, then a per-channel affine map.
#[derive(Module, Debug)]
pub struct GroupNorm<B: Backend> {
    /// Scale `[D]` (initially 1).
    gamma: Param<Tensor<B, 1>>,
    /// Shift `[D]` (initially 0).
    beta: Param<Tensor<B, 1>>,
}

impl<B: Backend> GroupNorm<B> {
    fn new(width: usize, device: &B::Device) -> Self {
        Self {
            gamma: Param::from_tensor(Tensor::ones([width], device)),
            beta: Param::from_tensor(Tensor::zeros([width], device)),
        }
    }

    fn forward(&self, x: Tensor<B, 3>, groups: usize) -> Tensor<B, 3> {
        let [b, n, d] = x.dims();
        // Statistics over a group's channels (axis 3) and the tokens (axis 1), repeated over the
        // tokens so that they broadcast along the last axis only: the tokens are never transposed.
        let per_token = |t: Tensor<B, 4>| t.mean_dim(3).mean_dim(1).repeat_dim(1, n);
        let g = x.reshape([b, n, groups, d / groups]);
        let centred = g.clone() - per_token(g);
        let std = per_token(centred.clone().powi_scalar(2)).add_scalar(NORM_EPS).sqrt();
        let normed = (centred / std).reshape([b, n, d]);
        normed * self.gamma.val().reshape([1, 1, d]) + self.beta.val().reshape([1, 1, d])
    }
}

/// One block's channel mixer (see the module doc).
#[derive(Module, Debug)]
pub struct ChannelMixer<B: Backend> {
    /// Shared features `D -> D_h`.
    features: Linear<B>,
    /// Expert weights `[E, D_h, D]`.
    expert_weight: Param<Tensor<B, 3>>,
    /// Expert biases `[E, D]`.
    expert_bias: Param<Tensor<B, 2>>,
    /// The router (`None`: one always-on expert).
    gate: Option<Gate<B>>,
}

/// How one block routed a batch: each sample's weight on each expert (zero where not chosen)
/// and each expert's load.
#[derive(Clone, Debug, PartialEq)]
pub struct BlockRoute {
    /// Routing weights `[B * E]`, row-major; the shared experts' fixed weights included.
    pub weights: Vec<f64>,
    /// Samples routed to each expert (shared experts: every sample).
    pub load: Vec<usize>,
}

/// What a block's channel mixer hands back besides its output.
struct MixerOutput<B: Backend> {
    y: Tensor<B, 3>,
    aux: Option<Tensor<B, 1>>,
    route: Option<BlockRoute>,
}

impl<B: Backend> ChannelMixer<B> {
    fn new(settings: &PotSettings, rng: &mut Rng, device: &B::Device) -> Result<Self, ExpertError> {
        let (d, h) = (settings.width, settings.hidden());
        let features = Linear::new(d, h, rng, device);
        let experts = match &settings.channel {
            ChannelSettings::Moe(m) => m.experts,
            ChannelSettings::Dense { .. } => 1,
        };
        // Every expert starts from its own draw.
        let expert_weight = Param::from_tensor(normal(&[experts, h, d], rng, device));
        let expert_bias = Param::from_tensor(Tensor::zeros([experts, d], device));
        let gate = match &settings.channel {
            ChannelSettings::Moe(m) => Some(
                m.router
                    .build(RouterShape { experts, features: h }, rng, device)
                    .map_err(|e| mixer_core::Error::config("channel.router", e.to_string()))?,
            ),
            ChannelSettings::Dense { .. } => None,
        };
        Ok(Self { features, expert_weight, expert_bias, gate })
    }

    /// Experts of the mixer.
    fn num_experts(&self) -> usize {
        self.expert_weight.dims()[0]
    }

    /// Expert `e` on features `[n, N, D_h]`.
    fn expert(&self, e: usize, f: Tensor<B, 3>) -> Tensor<B, 3> {
        let [_, h, d] = self.expert_weight.dims();
        let [n, tokens, _] = f.dims();
        let w = self.expert_weight.val().slice(e..e + 1).reshape([h, d]);
        let b = self.expert_bias.val().slice(e..e + 1);
        gelu((f.reshape([n * tokens, h]).matmul(w) + b).reshape([n, tokens, d]))
    }

    /// The mixed tokens `[B, N, D]` of `x: [B, N, D]`; `dense` evaluates every expert on every
    /// sample with weight zero where it is not chosen (the reference the sparse path is tested
    /// against).
    fn forward(&self, x: Tensor<B, 3>, mode: Mode, dense: bool, rng: &mut Rng) -> mixer_core::Result<MixerOutput<B>> {
        let f = gelu(self.features.forward(x));
        let [b, _, h] = f.dims();
        let Some(gate) = &self.gate else {
            return Ok(MixerOutput { y: self.expert(0, f), aux: None, route: None });
        };
        let pooled = f.clone().mean_dim(1).reshape([b, h]);
        let routing = gate.route(&RouterInput { features: pooled, mode }, rng)?;
        let (e_count, k) = (self.num_experts(), routing.k);
        let aux = routing.aux_losses.iter().map(|a| a.value.clone().mul_scalar(a.coefficient)).reduce(|a, c| a + c);
        let groups = routing.groups(e_count);
        let mut load: Vec<usize> = groups.iter().map(|g| g.units.len()).collect();
        let slot_weights = host::to_vec(routing.weights.clone());
        let mut weights = vec![0.0; b * e_count];
        for (e, g) in groups.iter().enumerate() {
            for (&u, &s) in g.units.iter().zip(&g.slots) {
                weights[u * e_count + e] += slot_weights[u * k + s];
            }
        }
        for &(e, w) in &routing.shared {
            load[e] = b;
            (0..b).for_each(|u| weights[u * e_count + e] += w);
        }
        let device = f.device();
        let y = if dense {
            let w = host_tensor::<B, 2>(&weights, [b, e_count], &device);
            (0..e_count)
                .map(|e| self.expert(e, f.clone()) * w.clone().slice([0..b, e..e + 1]).unsqueeze_dim::<3>(2))
                .reduce(|a, c| a + c)
                .expect("at least one expert")
        } else {
            let flat = routing.weights.clone().reshape([b * k]);
            let mut y = routing
                .shared
                .iter()
                .map(|&(e, w)| self.expert(e, f.clone()).mul_scalar(w))
                .reduce(|a, c| a + c)
                .unwrap_or_else(|| Tensor::zeros([b, f.dims()[1], self.expert_weight.dims()[2]], &device));
            for (e, g) in groups.iter().enumerate().filter(|(_, g)| !g.units.is_empty()) {
                let units = index::<B>(&g.units, &device);
                let slots: Vec<usize> = g.units.iter().zip(&g.slots).map(|(&u, &s)| u * k + s).collect();
                let w = flat.clone().select(0, index::<B>(&slots, &device)).reshape([g.units.len(), 1, 1]);
                let out = self.expert(e, f.clone().select(0, units.clone())) * w;
                y = y.select_assign(0, units, out, IndexingUpdateOp::Add);
            }
            y
        };
        Ok(MixerOutput { y, aux, route: Some(BlockRoute { weights, load }) })
    }
}

/// One transformer block.
#[derive(Module, Debug)]
pub struct PotBlock<B: Backend> {
    norm1: GroupNorm<B>,
    afno: AfnoMixer<B>,
    norm2: GroupNorm<B>,
    channel: ChannelMixer<B>,
}

/// The operator transformer (see the module doc).
#[derive(Module, Debug)]
pub struct OperatorTransformer<B: Backend> {
    /// Patch embedding, first layer: `T C p^2 -> D`.
    embed_in: Linear<B>,
    /// Patch embedding, second layer (after a GELU): `D -> D`.
    embed_out: Linear<B>,
    /// Position embedding `[N, D]`.
    position: Param<Tensor<B, 2>>,
    /// The blocks.
    blocks: Vec<PotBlock<B>>,
    /// Patch decoding, first layer: `D -> D`.
    head_in: Linear<B>,
    /// Patch decoding, second layer (after a GELU): `D -> C p^2`.
    head_out: Linear<B>,
    #[module(skip)]
    settings: PotSettings,
    /// Field channels.
    #[module(skip)]
    channels: usize,
    /// Grid `[H, W]`.
    #[module(skip)]
    grid: [usize; 2],
}

/// One forward pass: the prediction, the normalisation scale it was mapped back with, the
/// routers' auxiliary loss and how every block routed.
#[derive(Clone, Debug)]
pub struct PotOutput<B: Backend> {
    /// The next field `[B, C, H, W]`.
    pub prediction: Tensor<B, 4>,
    /// Per-sample, per-channel standard deviation of the input frames `[B, C]` (for a
    /// scale-free loss: divide the error by it).
    pub scale: Tensor<B, 2>,
    /// Summed weighted auxiliary losses of the routers (`None` for a dense model).
    pub aux_loss: Option<Tensor<B, 1>>,
    /// Each block's routing (empty for a dense model).
    pub routes: Vec<BlockRoute>,
}

impl<B: Backend> OperatorTransformer<B> {
    /// The settings the model was built with.
    pub fn settings(&self) -> &PotSettings {
        &self.settings
    }

    /// Field channels and grid `[H, W]` the model was built for.
    pub fn field_shape(&self) -> (usize, [usize; 2]) {
        (self.channels, self.grid)
    }

    /// Trainable parameters.
    pub fn parameter_count(&self) -> usize {
        self.num_params()
    }

    /// Parameters one sample uses (all of them for a dense model).
    pub fn active_parameter_count(&self) -> usize {
        let (total, active) = self.settings.channel_parameters();
        self.num_params() - self.settings.depth * (total - active)
    }

    /// The next field `[B, C, H, W]` of the last `T` frames `[B, T, C, H, W]`, with the routing of
    /// every block; `mode` is the routers' (train adds their balance losses).
    pub fn forward(&self, frames: Tensor<B, 5>, mode: Mode, rng: &mut Rng) -> Result<PotOutput<B>, ExpertError> {
        self.run(frames, mode, false, rng)
    }

    /// As [`OperatorTransformer::forward`], with every expert evaluated on every sample (the
    /// dense reference of the sparse dispatch).
    pub fn forward_dense(&self, frames: Tensor<B, 5>, mode: Mode, rng: &mut Rng) -> Result<PotOutput<B>, ExpertError> {
        self.run(frames, mode, true, rng)
    }

    fn run(&self, frames: Tensor<B, 5>, mode: Mode, dense: bool, rng: &mut Rng) -> Result<PotOutput<B>, ExpertError> {
        let [b, t, c, h, w] = frames.dims();
        if [t, c] != [self.settings.frames, self.channels] || [h, w] != self.grid {
            return Err(mixer_core::Error::shape(
                "input frames",
                [b, self.settings.frames, self.channels, self.grid[0], self.grid[1]],
                [b, t, c, h, w],
            )
            .into());
        }
        let (p, d) = (self.settings.patch, self.settings.width);
        let (gh, gw) = (h / p, w / p);
        // Per sample and channel: mean and standard deviation over the frames.
        let per_channel = frames.clone().swap_dims(1, 2).reshape([b, c, t * h * w]);
        let mean = per_channel.clone().mean_dim(2);
        let scale = (per_channel - mean.clone()).powi_scalar(2).mean_dim(2).add_scalar(NORM_EPS).sqrt();
        let (mean5, scale5) = (mean.clone().reshape([b, 1, c, 1, 1]), scale.clone().reshape([b, 1, c, 1, 1]));
        let normed = (frames - mean5) / scale5;
        let last = normed.clone().slice([0..b, t - 1..t]).reshape([b, c, h, w]);
        // Patches: [B, T, C, gh, p, gw, p] -> [B, gh, gw, T, C, p, p] -> tokens [B, N, T C p^2].
        let patches =
            normed.reshape([b, t * c, gh, p, gw, p]).permute([0, 2, 4, 1, 3, 5]).reshape([b, gh * gw, t * c * p * p]);
        let mut x = self.embed_out.forward(gelu(self.embed_in.forward(patches))) + self.position.val().unsqueeze_dim(0);
        let groups = self.settings.norm_groups;
        let mut aux_loss: Option<Tensor<B, 1>> = None;
        let mut routes = vec![];
        for block in &self.blocks {
            // Tokens [B, N, D] are the channels-last patch grid [B, gh, gw, D]: no copy.
            let mixed = block.afno.forward(block.norm1.forward(x.clone(), groups).reshape([b, gh, gw, d]));
            x = x + mixed.reshape([b, gh * gw, d]);
            let out = block.channel.forward(block.norm2.forward(x.clone(), groups), mode, dense, rng)?;
            x = x + out.y;
            aux_loss = match (aux_loss, out.aux) {
                (Some(a), Some(c)) => Some(a + c),
                (a, c) => a.or(c),
            };
            routes.extend(out.route);
        }
        // Decode: [B, N, C p^2] -> [B, gh, gw, C, p, p] -> [B, C, gh, p, gw, p].
        let decoded = self.head_out.forward(gelu(self.head_in.forward(x)));
        let delta = decoded.reshape([b, gh, gw, c, p, p]).permute([0, 3, 1, 4, 2, 5]).reshape([b, c, h, w]);
        let prediction = (last + delta) * scale.clone().reshape([b, c, 1, 1]) + mean.reshape([b, c, 1, 1]);
        Ok(PotOutput { prediction, scale: scale.reshape([b, c]), aux_loss, routes })
    }

    /// After an optimiser step: every router's non-gradient update (the temperature schedule),
    /// with the loads of the step's `routes`.
    pub fn after_step(&mut self, routes: &[BlockRoute]) {
        for (block, route) in self.blocks.iter_mut().zip(routes) {
            if let Some(gate) = &mut block.channel.gate {
                gate.after_step(&route.load);
            }
        }
    }

    /// Every router's state (the temperature), block by block, for checkpoints.
    pub fn router_states(&self) -> Vec<Option<serde_json::Value>> {
        self.blocks.iter().map(|b| b.channel.gate.as_ref().and_then(|g| g.refit_state())).collect()
    }

    /// Restores what [`OperatorTransformer::router_states`] saved.
    pub fn load_router_states(&mut self, states: &[Option<serde_json::Value>]) -> Result<(), ExpertError> {
        for (block, state) in self.blocks.iter_mut().zip(states) {
            if let Some(gate) = &mut block.channel.gate {
                gate.load_refit_state(state.as_ref())
                    .map_err(|e| mixer_core::Error::config("router state", e.to_string()))?;
            }
        }
        Ok(())
    }

    /// Every parameter of the routers and shared feature maps (what fine-tuning freezes),
    /// flattened, block by block.
    pub fn router_weights(&self) -> Vec<Tensor<B, 1>> {
        struct Collect<B: Backend>(Vec<Tensor<B, 1>>);
        impl<B: Backend> burn::module::ModuleVisitor<B> for Collect<B> {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
                self.0.push(param.val().flatten(0, D - 1));
            }
        }
        let mut visitor = Collect(vec![]);
        for block in &self.blocks {
            block.channel.features.visit(&mut visitor);
            block.channel.gate.visit(&mut visitor);
        }
        visitor.0
    }

    /// The model with its routers and shared feature maps frozen (MoE-POT's fine-tuning:
    /// only the experts, token mixers, norms, embeddings and head keep training).
    pub fn freeze_routing(mut self) -> Self {
        for block in &mut self.blocks {
            let channel = &mut block.channel;
            channel.gate = channel.gate.take().map(|g| g.no_grad());
            channel.features = channel.features.clone().no_grad();
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::TestBackend;
    use mixer_core::Seeds;
    use rand::Rng as _;

    type T = TestBackend;

    fn small() -> PotSettings {
        let router = RouterConfig::SharedRouted(SharedRoutedSettings { top_k: 2, shared: 1, ..Default::default() });
        PotSettings {
            frames: 2,
            patch: 2,
            width: 8,
            depth: 2,
            afno_blocks: 2,
            norm_groups: 2,
            channel: ChannelSettings::Moe(MoeMlpSettings { mlp_ratio: 2, experts: 5, router }),
            ..PotSettings::default()
        }
    }

    fn frames(b: usize, s: &PotSettings, c: usize, grid: [usize; 2], scale: f64) -> Tensor<T, 5> {
        let mut rng = Seeds::new(3).stream("x");
        let n = b * s.frames * c * grid[0] * grid[1];
        let v: Vec<f64> = (0..n).map(|_| scale * (rng.random::<f64>() - 0.3)).collect();
        host_tensor(&v, [b, s.frames, c, grid[0], grid[1]], &Default::default())
    }

    #[test]
    fn sparse_dispatch_equals_the_dense_reference_and_counts_parameters() {
        let s = small();
        let m = s.init::<T>(2, [4, 6], &mut Seeds::new(0).stream("init"), &Default::default()).unwrap();
        let x = frames(5, &s, 2, [4, 6], 1.0);
        let sparse = m.forward(x.clone(), Mode::Eval, &mut Seeds::new(1).stream("r")).unwrap();
        let dense = m.forward_dense(x, Mode::Eval, &mut Seeds::new(1).stream("r")).unwrap();
        assert_eq!(sparse.prediction.dims(), [5, 2, 4, 6]);
        let (a, b) = (host::to_vec(sparse.prediction), host::to_vec(dense.prediction));
        assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-12), "sparse and dense differ");
        assert_eq!(sparse.routes.len(), 2);
        for route in &sparse.routes {
            // Two routed experts plus the shared one (weight 1) per sample: weights sum to 2.
            for row in route.weights.chunks(5) {
                assert_eq!(row.iter().filter(|w| **w > 0.0).count(), 3, "{row:?}");
                assert!((row.iter().sum::<f64>() - 2.0).abs() < 1e-12);
            }
            assert_eq!(route.load[4], 5);
            assert_eq!(route.load.iter().sum::<usize>(), 5 * 3);
        }
        // Channel mixer per block: features 8*16+16, 5 experts of 16*8+8, router 16*4;
        // active: 3 experts.
        let (total, active) = s.channel_parameters();
        assert_eq!((total, active), (144 + 5 * 136 + 64, 144 + 3 * 136 + 64));
        assert_eq!(m.parameter_count() - m.active_parameter_count(), 2 * 2 * 136);
    }

    #[test]
    fn dense_twins_match_the_mixture_parameters_and_the_model_is_scale_equivariant() {
        let s = small();
        for (matching, target) in
            [(Matching::Active, s.channel_parameters().1), (Matching::Total, s.channel_parameters().0)]
        {
            let twin = s.dense_twin(matching);
            let (count, _) = twin.channel_parameters();
            assert!(count.abs_diff(target) <= 2 * twin.width + 1, "{count} vs {target}");
            let m = twin.init::<T>(1, [4, 4], &mut Seeds::new(0).stream("init"), &Default::default()).unwrap();
            assert_eq!(m.parameter_count(), m.active_parameter_count());
        }
        // The per-sample normalisation makes the model equivariant to a shift and (up to the
        // variance floor) a scale of its input.
        let m = s.init::<T>(1, [4, 4], &mut Seeds::new(0).stream("init"), &Default::default()).unwrap();
        let run = |scale: f64, shift: f64| {
            let x = frames(3, &s, 1, [4, 4], scale).add_scalar(shift);
            host::to_vec(m.forward(x, Mode::Eval, &mut Seeds::new(1).stream("r")).unwrap().prediction)
        };
        let (one, ten, shifted) = (run(1.0, 0.0), run(10.0, 0.0), run(1.0, 5.0));
        assert!(one.iter().zip(&ten).all(|(a, b)| (10.0 * a - b).abs() < 1e-4 * b.abs().max(1.0)));
        assert!(one.iter().zip(&shifted).all(|(a, b)| (a + 5.0 - b).abs() < 1e-9));
    }

    #[test]
    fn bad_shapes_name_their_field() {
        let s = small();
        let err = s.check(1, [6, 5]).unwrap_err().to_string();
        assert!(err.contains("patch") && err.contains("6 x 5"), "{err}");
        let err = PotSettings { norm_groups: 3, ..small() }.check(1, [4, 4]).unwrap_err().to_string();
        assert!(err.contains("norm_groups"), "{err}");
        let m = s.init::<T>(1, [4, 4], &mut Seeds::new(0).stream("init"), &Default::default()).unwrap();
        let err = m.forward(frames(1, &s, 2, [4, 4], 1.0), Mode::Eval, &mut Seeds::new(1).stream("r")).unwrap_err();
        assert!(err.to_string().contains("input frames"), "{err}");
    }
}
