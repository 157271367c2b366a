//! The MoE-POT experiment (`kind = "pde-pretrain"`; Wang et al., NeurIPS 2025): one operator
//! pre-trained on a mix of PDE families, scored zero-shot on every family, fine-tuned on each, and
//! fine-tuned on a family held out of a second pre-training (against training on it from
//! scratch for the same steps); the mixture against dense models of its active and of its
//! total parameters.

use std::path::{Path, PathBuf};

use burn::module::AutodiffModule;
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};
use tracing::info;

use mixer_core::Error;
use mixer_data::{FIELD_MANIFEST_FILE, FieldDir, FieldManifest, PdeSpec, load_field_dir};
use mixer_experts::{Matching, OperatorTransformer, PotSettings};
use mixer_train::{
    FamilyScore, PotFamily, PotMetrics, PotMix, PotRunConfig, PotTrainSettings, Stage, evaluate_pot, load_pot_model,
    read_json, train_pot, write_json,
};

use crate::experiment::{declares_kind, merge, parse_file, parse_shipped, split_profile};
use crate::plot::{Panel, Series, Stroke, panel_grid, routing_heatmaps};
use crate::{AutodiffBackend, BackendJob, ExperimentError, Profile};

/// The operator pre-training experiments shipped in `experiments/`, by name.
pub const BUILTIN_PDE_EXPERIMENTS: [(&str, &str); 1] =
    [("pde-pretrain", include_str!("../../../experiments/pde_pretrain.toml"))];

/// A model of the comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PotVariant {
    /// The configured mixture of experts.
    MoePot,
    /// The dense model with the mixture's active parameters.
    DenseActive,
    /// The dense model with the mixture's total parameters.
    DenseTotal,
}

impl PotVariant {
    /// Folder and table name.
    pub fn name(self) -> &'static str {
        match self {
            Self::MoePot => "moe-pot",
            Self::DenseActive => "dense-active",
            Self::DenseTotal => "dense-total",
        }
    }

    /// The variant's model, from the configured mixture.
    pub fn settings(self, moe: &PotSettings) -> PotSettings {
        match self {
            Self::MoePot => moe.clone(),
            Self::DenseActive => moe.dense_twin(Matching::Active),
            Self::DenseTotal => moe.dense_twin(Matching::Total),
        }
    }
}

/// The `[run]` tables of the experiment file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PotRunTables {
    /// The mixture (the dense variants are sized from it).
    pub model: PotSettings,
    /// Pre-training.
    pub train: PotTrainSettings,
    /// Fine-tuning (and the from-scratch reference on the held-out family).
    pub finetune: PotTrainSettings,
}

/// An operator pre-training experiment, resolved for a profile.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PdeExperiment {
    /// Short name (folder and table name).
    pub name: String,
    /// One line on what it shows.
    pub description: String,
    /// Training seed (data use the plan's seed).
    pub seed: u64,
    /// The PDE families of the mix.
    pub families: Vec<String>,
    /// The family held out of a second pre-training and fine-tuned on.
    pub held_out: Option<String>,
    /// The models compared.
    pub variants: Vec<PotVariant>,
    /// Steps of the scored rollouts.
    pub rollout_steps: usize,
    /// Training windows per family that fit the router analysis's centroids.
    pub fit_windows: usize,
    /// Model and training under the profile.
    pub run: PotRunTables,
    /// The profile (sets the data sizes).
    pub profile: Profile,
}

impl PdeExperiment {
    /// True when experiment TOML `text` declares an operator pre-training (`kind = "pde-pretrain"`).
    pub fn is_pde_text(text: &str) -> bool {
        declares_kind(text, "pde-pretrain")
    }

    /// A shipped experiment under `profile`.
    pub fn builtin(name: &str, profile: Profile) -> Result<Self, ExperimentError> {
        parse_shipped(&BUILTIN_PDE_EXPERIMENTS, name, profile, Self::parse)
    }

    /// Reads an experiment file under `profile`.
    pub fn load(path: &Path, profile: Profile) -> Result<Self, ExperimentError> {
        parse_file(path, profile, Self::parse)
    }

    /// Parses experiment TOML and applies the overrides of `profile` (`[profile.NAME.run]`).
    pub fn parse(text: &str, profile: Profile) -> Result<Self, ExperimentError> {
        let bad = |message: String| ExperimentError::Toml { path: "<text>".into(), message };
        let mut doc: toml::Table = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        let (mut run, over) = split_profile(&mut doc, profile).map_err(bad)?;
        if let Some(over) = over {
            merge(&mut run, over);
        }
        let run: PotRunTables = run.try_into().map_err(|e: toml::de::Error| bad(format!("[run]: {e}")))?;
        run.train.validate()?;
        run.finetune.validate()?;
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Head {
            kind: String,
            name: String,
            description: String,
            seed: u64,
            families: Vec<String>,
            held_out: Option<String>,
            variants: Vec<PotVariant>,
            rollout_steps: usize,
            fit_windows: usize,
        }
        let head: Head = toml::Value::Table(doc).try_into().map_err(|e: toml::de::Error| bad(e.to_string()))?;
        if head.kind != "pde-pretrain" {
            return Err(bad(format!("kind = `{}`: this experiment says kind = \"pde-pretrain\"", head.kind)));
        }
        for f in &head.families {
            PdeSpec::new(f, profile.name())?;
        }
        if let Some(h) = head.held_out.as_ref().filter(|h| !head.families.contains(h)) {
            let reason = format!("`{h}` is not one of the families ({})", head.families.join(", "));
            return Err(Error::config("held_out", reason).into());
        }
        if head.families.len() < 2 && head.held_out.is_some() {
            return Err(Error::config("held_out", "holding a family out needs at least two").into());
        }
        Ok(Self {
            name: head.name,
            description: head.description,
            seed: head.seed,
            families: head.families,
            held_out: head.held_out,
            variants: head.variants,
            rollout_steps: head.rollout_steps,
            fit_windows: head.fit_windows,
            run,
            profile,
        })
    }

    /// Generates every family's data into `data_dir/<family>` with `seed` (or reads what is there
    /// when it was made with the same seed and sizes) and returns the mix.
    pub fn mix(
        &self,
        data_dir: &Path,
        seed: u64,
        progress: &dyn Fn(&str) -> ProgressBar,
    ) -> Result<PotMix, ExperimentError> {
        let families = self
            .families
            .iter()
            .map(|name| {
                let spec = PdeSpec::new(name, self.profile.name())?;
                let data = pde_dataset(&data_dir.join(name), &spec, seed, &progress(name))?;
                Ok(PotFamily { name: name.clone(), data })
            })
            .collect::<Result<Vec<_>, ExperimentError>>()?;
        Ok(PotMix::new(families)?)
    }
}

/// The dataset of `spec` in `dir`: read when its manifest has `seed` and the spec's sizes,
/// generated and written otherwise.
fn pde_dataset(dir: &Path, spec: &PdeSpec, seed: u64, progress: &ProgressBar) -> Result<FieldDir, ExperimentError> {
    let mut sizes = spec.clone();
    let (size, runs, frames) = sizes.sizes_mut();
    let (size, runs, frames) = (*size, runs.map(|r| *r), *frames);
    let same = FieldManifest::read(&dir.join(FIELD_MANIFEST_FILE)).ok().is_some_and(|m| {
        m.seed == seed
            && m.grid == [size, size]
            && m.frames == frames
            && [m.runs.train, m.runs.val, m.runs.test] == runs
    });
    if same {
        info!(dir = %dir.display(), "PDE dataset found on disk");
        return Ok(load_field_dir(dir)?);
    }
    let start = std::time::Instant::now();
    let data = spec.generate(seed, progress)?;
    progress.finish_and_clear();
    info!(family = spec.name(), seconds = start.elapsed().as_secs_f64(), "PDE dataset generated");
    data.write(dir)?;
    Ok(data)
}

/// Scores on the held-out family: fine-tuned from the pre-training without it, and trained on it
/// alone from scratch for the same steps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeldOutScores {
    /// The family.
    pub family: String,
    /// Zero-shot, by the model pre-trained without it.
    pub zero_shot: FamilyScore,
    /// After fine-tuning that model on it.
    pub finetuned: FamilyScore,
    /// Trained on it alone from scratch.
    pub scratch: FamilyScore,
}

/// One model's results.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PotVariantRecord {
    /// The model.
    pub variant: PotVariant,
    /// Its folder.
    pub dir: PathBuf,
    /// Zero-shot scores of the pre-trained model on every family.
    pub zero_shot: PotMetrics,
    /// Pre-training milliseconds per step.
    pub ms_per_step: f64,
    /// After fine-tuning on each family, that family's scores.
    pub finetuned: Vec<FamilyScore>,
    /// The held-out family, when configured.
    pub held_out: Option<HeldOutScores>,
}

/// The runs of one operator pre-training experiment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PdeExperimentRecord {
    /// Experiment name.
    pub name: String,
    /// One line on what it shows.
    pub description: String,
    /// The families, in order.
    pub families: Vec<String>,
    /// One record per model.
    pub runs: Vec<PotVariantRecord>,
    /// Rollout error against steps, per family and model.
    pub rollout_figure: PathBuf,
}

/// Runs every variant of an operator experiment on `mix`, runs under `runs_dir`.
pub struct PdeJob<'a> {
    /// The experiment.
    pub experiment: &'a PdeExperiment,
    /// Its data.
    pub mix: &'a PotMix,
    /// Folder of its runs (one sub-folder per variant).
    pub runs_dir: PathBuf,
    /// Show progress bars.
    pub progress: bool,
}

/// What one training stage of a variant is.
struct StagePlan<'a> {
    dir: PathBuf,
    model: &'a PotSettings,
    train: &'a PotTrainSettings,
    stage: Stage,
    mix: PotMix,
}

impl BackendJob for PdeJob<'_> {
    type Output = Result<PdeExperimentRecord, ExperimentError>;

    fn run<B: AutodiffBackend>(self, device: B::Device, _label: &str) -> Self::Output {
        let e = self.experiment;
        let mut runs = vec![];
        for &variant in &e.variants {
            info!(experiment = %e.name, variant = variant.name(), "operator pre-training");
            runs.push(self.variant::<B>(variant, &device)?);
        }
        let rollout_figure = rollout_figure(&self.runs_dir.join("rollout.png"), &e.families, &runs)?;
        Ok(PdeExperimentRecord {
            name: e.name.clone(),
            description: e.description.clone(),
            families: e.families.clone(),
            runs,
            rollout_figure,
        })
    }
}

impl PdeJob<'_> {
    /// Trains (or resumes) one stage; a stage with `metrics.json` is read back.
    fn stage<B: AutodiffBackend>(
        &self,
        plan: &StagePlan,
        start: Option<OperatorTransformer<B>>,
        device: &B::Device,
    ) -> Result<(OperatorTransformer<B>, PotMetrics, f64), ExperimentError> {
        let config = PotRunConfig {
            model: plan.model.clone(),
            train: plan.train.clone(),
            stage: plan.stage,
            families: plan.mix.names().iter().map(|s| s.to_string()).collect(),
        };
        let (model, state) =
            train_pot::<B>(&config, &plan.mix, &plan.dir, self.experiment.seed, start, self.progress, device)?;
        let metrics = self.scores(&model, plan, device)?;
        Ok((model, metrics, 1e3 * state.seconds / state.step.max(1) as f64))
    }

    /// Pre-training, zero-shot scores, fine-tuning per family and the held-out family.
    fn variant<B: AutodiffBackend>(
        &self,
        variant: PotVariant,
        device: &B::Device,
    ) -> Result<PotVariantRecord, ExperimentError> {
        let e = self.experiment;
        let dir = self.runs_dir.join(variant.name());
        let model = variant.settings(&e.run.model);
        let pretrain = |name: &str, mix: PotMix| StagePlan {
            dir: dir.join(name),
            model: &model,
            train: &e.run.train,
            stage: Stage::Pretrain,
            mix,
        };
        let finetune = |name: String, family: &str, stage: Stage| -> Result<StagePlan, ExperimentError> {
            let mix = self.mix.select(&[family.to_string()], None)?;
            Ok(StagePlan { dir: dir.join(name), model: &model, train: &e.run.finetune, stage, mix })
        };
        let (pre, zero_shot, ms_per_step) = self.stage::<B>(&pretrain("pretrain", self.mix.clone()), None, device)?;
        if variant == PotVariant::MoePot {
            routing_heatmaps(&dir.join("routing.png"), &zero_shot, &e.families)?;
        }
        let mut finetuned = vec![];
        for f in &e.families {
            let plan = finetune(format!("finetune-{f}"), f, Stage::Finetune)?;
            let (_, m, _) = self.stage::<B>(&plan, Some(pre.clone()), device)?;
            finetuned.extend(m.families.into_iter().next());
        }
        let held_out = match &e.held_out {
            Some(h) => {
                let without = pretrain(&format!("pretrain-without-{h}"), self.mix.select(&[], Some(h))?);
                let (base, _, _) = self.stage::<B>(&without, None, device)?;
                let first = |m: PotMetrics| m.families.into_iter().next().expect("one family");
                let zero = StagePlan {
                    dir: dir.join(format!("zero-shot-{h}")),
                    ..finetune(String::new(), h, Stage::Finetune)?
                };
                let zero_shot = first(self.scores(&base, &zero, device)?);
                let (_, tuned, _) =
                    self.stage::<B>(&finetune(format!("held-out-{h}"), h, Stage::Finetune)?, Some(base), device)?;
                let (_, scratch, _) =
                    self.stage::<B>(&finetune(format!("scratch-{h}"), h, Stage::Pretrain)?, None, device)?;
                Some(HeldOutScores { family: h.clone(), zero_shot, finetuned: first(tuned), scratch: first(scratch) })
            }
            None => None,
        };
        Ok(PotVariantRecord { variant, dir, zero_shot, ms_per_step, finetuned, held_out })
    }

    /// Scores `model` on the plan's mix, cached as `metrics.json` in the plan's folder.
    fn scores<B: AutodiffBackend>(
        &self,
        model: &OperatorTransformer<B>,
        plan: &StagePlan,
        device: &B::Device,
    ) -> Result<PotMetrics, ExperimentError> {
        let path = plan.dir.join("metrics.json");
        if let Ok(m) = read_json::<PotMetrics>(&path) {
            return Ok(m);
        }
        let e = self.experiment;
        let m = evaluate_pot(&model.valid(), &plan.mix, e.rollout_steps, e.fit_windows, plan.train.batch, device)?;
        std::fs::create_dir_all(&plan.dir).map_err(|err| Error::io(&plan.dir, err))?;
        write_json(&path, &m)?;
        Ok(m)
    }
}

/// Fine-tunes the finished operator run `from` on `family` (routers and shared features frozen)
/// in the run folder `out` (resumed when it exists), scores it on the family's test runs and
/// writes `metrics.json`; returns the metrics, steps and training seconds.
pub fn finetune_run<B: AutodiffBackend>(
    from: &Path,
    family: PotFamily,
    train: PotTrainSettings,
    out: &Path,
    seed: u64,
    rollout_steps: usize,
    device: &B::Device,
) -> Result<(PotMetrics, usize, f64), ExperimentError> {
    let (pre, model, state) = load_pot_model::<B>(from, device)?;
    let mix = PotMix::new(vec![family])?.with_channels(state.channels)?;
    if mix.grid() != state.grid {
        let what = format!("grid of `{}` against the model of {}", mix.names()[0], from.display());
        return Err(Error::shape(what, state.grid, mix.grid()).into());
    }
    let batch = train.batch;
    let config =
        PotRunConfig { model: pre.model, train, stage: Stage::Finetune, families: vec![mix.names()[0].into()] };
    let (tuned, done) = train_pot::<B>(&config, &mix, out, seed, Some(model), true, device)?;
    let metrics = evaluate_pot(&tuned.valid(), &mix, rollout_steps, 64, batch, device)?;
    write_json(&out.join("metrics.json"), &metrics)?;
    Ok((metrics, done.step, done.seconds))
}

/// Rollout relative L2 against steps: one panel per family, one line per model (zero-shot).
fn rollout_figure(path: &Path, families: &[String], runs: &[PotVariantRecord]) -> Result<PathBuf, ExperimentError> {
    let panels: Vec<Panel> = families
        .iter()
        .enumerate()
        .map(|(f, name)| Panel {
            title: format!("{name}: zero-shot rollout"),
            x_label: "step".into(),
            y_label: "relative L2".into(),
            series: runs
                .iter()
                .enumerate()
                .filter_map(|(i, r)| {
                    let score = r.zero_shot.families.get(f)?;
                    Some(Series {
                        label: r.variant.name().into(),
                        points: score.rollout.iter().enumerate().map(|(s, v)| ((s + 1) as f64, *v)).collect(),
                        color: i,
                        stroke: Stroke::Solid,
                    })
                })
                .collect(),
        })
        .collect();
    panel_grid(path, "operator rollouts on the test runs", &panels, panels.len().min(3), (420, 300))
}

/// Markdown section of an operator pre-training experiment.
pub fn pde_markdown(record: &PdeExperimentRecord, link: impl Fn(&Path) -> String) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(s, "### {}\n\n{}\n", record.name, record.description);
    let fam = &record.families;
    let cols: Vec<String> = fam.iter().map(|f| format!("{f} 1-step / rollout")).collect();
    let _ = writeln!(
        s,
        "Zero-shot relative L2 on the test runs (one step / after the last rollout step; persistence: the last input frame as the prediction).\n"
    );
    let _ = writeln!(
        s,
        "| model | parameters | active | {} | mean 1-step | mean rollout | router family accuracy by block | ms / train step | µs / sample (inference) |",
        cols.join(" | ")
    );
    let _ = writeln!(s, "|---|---|---|{}---|---|---|---|---|", "---|".repeat(fam.len()));
    let pair = |f: &FamilyScore| format!("{:.4} / {:.4}", f.one_step, f.rollout.last().copied().unwrap_or(f64::NAN));
    if let Some(first) = record.runs.first() {
        let persist: Vec<String> =
            first.zero_shot.families.iter().map(|f| format!("{:.4} / –", f.persistence)).collect();
        let mean = first.zero_shot.families.iter().map(|f| f.persistence).sum::<f64>() / fam.len().max(1) as f64;
        let _ = writeln!(s, "| persistence | 0 | 0 | {} | {mean:.4} | – | – | – | – |", persist.join(" | "));
    }
    for r in &record.runs {
        let z = &r.zero_shot;
        let acc: Vec<String> = z.router_accuracy.iter().map(|a| format!("{:.0} %", 100.0 * a)).collect();
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {:.4} | {:.4} | {} | {:.1} | {:.0} |",
            r.variant.name(),
            z.parameters,
            z.active_parameters,
            z.families.iter().map(pair).collect::<Vec<_>>().join(" | "),
            z.mean_one_step(),
            z.mean_rollout(),
            if acc.is_empty() { "–".into() } else { acc.join(", ") },
            r.ms_per_step,
            1e6 * z.seconds_per_sample,
        );
    }
    let _ = writeln!(s, "\nAfter fine-tuning on each family (that family's relative L2, one step / rollout):\n");
    let _ = writeln!(s, "| model | {} |", fam.join(" | "));
    let _ = writeln!(s, "|---|{}", "---|".repeat(fam.len()));
    for r in &record.runs {
        let _ =
            writeln!(s, "| {} | {} |", r.variant.name(), r.finetuned.iter().map(pair).collect::<Vec<_>>().join(" | "));
    }
    if let Some(h) = record.runs.first().and_then(|r| r.held_out.as_ref()) {
        let _ = writeln!(
            s,
            "\nHeld-out family `{}` (pre-trained without it; one step / rollout):\n\n| model | zero-shot | fine-tuned | from scratch, same steps |\n|---|---|---|---|",
            h.family
        );
        for r in &record.runs {
            if let Some(h) = &r.held_out {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} |",
                    r.variant.name(),
                    pair(&h.zero_shot),
                    pair(&h.finetuned),
                    pair(&h.scratch)
                );
            }
        }
    }
    let _ = writeln!(s, "\n![rollouts]({})", link(&record.rollout_figure));
    if let Some(r) = record.runs.iter().find(|r| r.variant == PotVariant::MoePot) {
        let _ = writeln!(s, "\n![routing]({})", link(&r.dir.join("routing.png")));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use mixer_experts::ChannelSettings;

    const TEXT: &str = BUILTIN_PDE_EXPERIMENTS[0].1;

    #[test]
    fn the_experiment_resolves_its_profiles_and_variants() {
        let quick = PdeExperiment::builtin("pde-pretrain", Profile::Quick).unwrap();
        assert_eq!(quick.families, ["navier-stokes", "diffusion-reaction", "burgers"]);
        assert_eq!(quick.variants, [PotVariant::MoePot, PotVariant::DenseActive, PotVariant::DenseTotal]);
        assert_eq!((quick.run.train.steps, quick.run.finetune.steps, quick.run.model.width), (400, 80, 48));
        let paper = PdeExperiment::builtin("pde-pretrain", Profile::Paper).unwrap();
        assert_eq!((paper.run.train.steps, paper.run.train.batch), (20000, 32));
        assert_eq!(PotSettings { width: 64, ..quick.run.model.clone() }, paper.run.model, "only the width differs");
        let ChannelSettings::Moe(moe) = &quick.run.model.channel else { panic!("a mixture") };
        assert_eq!(moe.experts, 18);
        let (total, active) = quick.run.model.channel_parameters();
        for (variant, target) in [(PotVariant::DenseActive, active), (PotVariant::DenseTotal, total)] {
            let (dense, _) = variant.settings(&quick.run.model).channel_parameters();
            assert!(dense.abs_diff(target) <= 2 * 48 + 1, "{}: {dense} against {target}", variant.name());
        }
        assert!(PdeExperiment::is_pde_text(TEXT));
        assert!(!PdeExperiment::is_pde_text(crate::BUILTIN_FIELD_EXPERIMENTS[0].1));
    }

    #[test]
    fn bad_experiments_are_clear_errors() {
        let err = |t: &str| PdeExperiment::parse(t, Profile::Quick).unwrap_err().to_string();
        let e = err(&TEXT.replace("held_out = \"burgers\"", "held_out = \"wave\""));
        assert!(e.contains("held_out") && e.contains("wave"), "{e}");
        let e = err(&TEXT.replace("\"burgers\"]", "\"kdv\"]"));
        assert!(e.contains("kdv") && e.contains("not a PDE family"), "{e}");
        let e = err(&TEXT.replace("\"dense-total\"]", "\"dense-half\"]"));
        assert!(e.contains("dense-half"), "{e}");
        assert!(err(&TEXT.replace("kind = \"pde-pretrain\"", "kind = \"field\"")).contains("pde-pretrain"));
        assert!(
            err(&TEXT.replace(
                "final_lr_ratio = 0.1\nbatch = 32\nsteps = 20000",
                "final_lr_ratio = 2.0\nbatch = 32\nsteps = 20000"
            ))
            .contains("final_lr_ratio")
        );
    }

    #[test]
    fn an_experiment_trains_scores_draws_and_is_read_back() {
        let _serial = crate::serial_training();
        let mut e = PdeExperiment::builtin("pde-pretrain", Profile::Quick).unwrap();
        e.families = vec!["diffusion-reaction".into(), "burgers".into()];
        e.held_out = Some("burgers".into());
        e.run.model = PotSettings { width: 16, depth: 2, afno_blocks: 2, norm_groups: 2, ..e.run.model.clone() };
        for t in [&mut e.run.train, &mut e.run.finetune] {
            (t.steps, t.eval_every, t.checkpoint_every, t.val_windows) = (4, 2, 2, 4);
        }
        e.rollout_steps = 2;
        e.fit_windows = 4;
        let dir = tempfile::tempdir().unwrap();
        // Tiny families: 32 x 32, one run per split, seven frames.
        let mut families = vec![];
        for name in &e.families {
            let mut spec = PdeSpec::new(name, "quick").unwrap();
            let (_, runs, frames) = spec.sizes_mut();
            runs.into_iter().for_each(|r| *r = 1);
            *frames = 7;
            families.push(PotFamily { name: name.clone(), data: spec.generate(1, &ProgressBar::hidden()).unwrap() });
        }
        let mix = PotMix::new(families).unwrap();
        type B = burn::backend::Autodiff<burn::backend::NdArray<f64>>;
        let job = || PdeJob { experiment: &e, mix: &mix, runs_dir: dir.path().to_path_buf(), progress: false };
        let record = job().run::<B>(Default::default(), "cpu").unwrap();
        assert_eq!(record.runs.len(), 3);
        for r in &record.runs {
            assert_eq!(r.zero_shot.families.len(), 2);
            assert_eq!(r.finetuned.len(), 2);
            let held = r.held_out.as_ref().unwrap();
            assert_eq!((held.family.as_str(), held.finetuned.rollout.len()), ("burgers", 2));
            assert!(r.zero_shot.mean_one_step().is_finite());
        }
        let moe = &record.runs[0];
        assert_eq!((moe.zero_shot.router_accuracy.len(), moe.zero_shot.family_expert[0].len()), (2, 2));
        assert!(record.runs[1].zero_shot.router_accuracy.is_empty(), "a dense model has no router");
        assert!(moe.zero_shot.active_parameters < moe.zero_shot.parameters);
        for f in [
            "moe-pot/routing.png",
            "moe-pot/pretrain/metrics.json",
            "dense-total/scratch-burgers/metrics.json",
            "rollout.png",
        ] {
            assert!(dir.path().join(f).is_file(), "{f}");
        }
        let again = job().run::<B>(Default::default(), "cpu").unwrap();
        assert_eq!(again, record, "finished stages are read back");
        // `mixer finetune --from RUN`: a pre-trained run fine-tuned on one family folder.
        let burgers = mix.families()[1].clone();
        let moe_run = dir.path().join("moe-pot/pretrain");
        let tune = |from: &Path, out: &str| {
            finetune_run::<B>(
                from,
                burgers.clone(),
                e.run.finetune.clone(),
                &dir.path().join(out),
                3,
                2,
                &Default::default(),
            )
        };
        let (tuned, steps, _) = tune(&moe_run, "cli").unwrap();
        assert_eq!((tuned.families[0].family.as_str(), steps), ("burgers", 4));
        let err = tune(dir.path(), "nothing").unwrap_err().to_string();
        assert!(err.contains("no operator run"), "{err}");
        // A checkpoint of another architecture under a run's config.
        let dense_run = dir.path().join("dense-total/pretrain");
        std::fs::copy(moe_run.join("model.bin"), dense_run.join("model.bin")).unwrap();
        let err = tune(&dense_run, "mismatch").unwrap_err().to_string();
        assert!(err.contains("another architecture"), "{err}");
        let md = pde_markdown(&record, |p| p.display().to_string());
        assert!(
            md.contains("| persistence | 0 | 0 |")
                && md.contains("| moe-pot |")
                && md.contains("Held-out family `burgers`"),
            "{md}"
        );
    }
}
