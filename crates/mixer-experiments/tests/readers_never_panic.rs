//! Experiment files never panic their reader: seeded mutations of every shipped experiment file
//! (values of another type, zero, negative, huge or non-finite, removed keys, duplicated array
//! items, flipped bits) parse or fail with an error. `MIXER_FUZZ_CASES` sets the cases per file
//! (default 60); a failure names the file and the case's seed.

use std::panic::{AssertUnwindSafe, catch_unwind};

use mixer_data::mutate::mutate_toml;
use mixer_experiments::{
    BUILTIN_CONTINUAL_EXPERIMENTS, BUILTIN_EXPERIMENTS, BUILTIN_FIELD_EXPERIMENTS, BUILTIN_PDE_EXPERIMENTS,
    BUILTIN_SEQUENCE_EXPERIMENTS, ContinualExperiment, Experiment, ExperimentError, FieldExperiment, PdeExperiment,
    Profile, SequenceExperiment,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

type Parse = fn(&str, Profile) -> Result<(), ExperimentError>;

#[test]
fn experiment_files_never_panic() {
    let cases: u64 = std::env::var("MIXER_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(60);
    let kinds: [(&[(&str, &str)], Parse); 5] = [
        (&BUILTIN_EXPERIMENTS, |t, p| Experiment::parse(t, p).map(drop)),
        (&BUILTIN_FIELD_EXPERIMENTS, |t, p| FieldExperiment::parse(t, p).map(drop)),
        (&BUILTIN_PDE_EXPERIMENTS, |t, p| PdeExperiment::parse(t, p).map(drop)),
        (&BUILTIN_CONTINUAL_EXPERIMENTS, |t, p| ContinualExperiment::parse(t, p).map(drop)),
        (&BUILTIN_SEQUENCE_EXPERIMENTS, |t, p| SequenceExperiment::parse(t, p).map(drop)),
    ];
    for (table, parse) in kinds {
        for (name, text) in table {
            let profile = Profile::Quick;
            parse(text, profile).unwrap_or_else(|e| panic!("shipped {name} parses: {e}"));
            let mut rejected = 0;
            for seed in 0..cases {
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                let mutated = mutate_toml(text, &mut rng);
                let outcome = catch_unwind(AssertUnwindSafe(|| parse(&mutated, profile)));
                match outcome {
                    Ok(r) => rejected += usize::from(r.is_err_and(|e| !e.to_string().is_empty())),
                    Err(_) => panic!("{name}: mutated case {seed} panicked the reader (replay with this seed)"),
                }
            }
            // Most mutations break a file; a fuzzer whose inputs all parse would test nothing.
            assert!(rejected * 4 >= cases as usize, "{name}: only {rejected} of {cases} mutated files were rejected");
        }
    }
}
