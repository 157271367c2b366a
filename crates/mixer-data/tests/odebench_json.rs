//! Checks every shipped ODEBench system against `../shared/data/odebench/*.json` when present:
//! same parameters, reference states and horizon, same right-hand-side values at random points.

use std::path::PathBuf;

use mixer_data::builtin_system;
use mixer_ode::OdeSystem;
use rand::Rng;

/// Translates the JSON's Python lambda body to exmex text over `y0, y1, ...` (independently of
/// the shipped files, which name states x, y, ...).
fn translate(body: &str) -> Vec<String> {
    let mut s = body.replace("np.log(", "ln(").replace("np.", "").replace("**", "^");
    for i in 0..4 {
        s = s.replace(&format!("y[{i}]"), &format!("(y{i})"));
    }
    let (mut parts, mut depth, mut cur) = (Vec::new(), 0, String::new());
    for ch in s.chars() {
        match ch {
            '(' => depth += 1,
            ')' => depth -= 1,
            _ => {}
        }
        if ch == ',' && depth == 0 {
            parts.push(std::mem::take(&mut cur));
        } else {
            cur.push(ch);
        }
    }
    parts.push(cur);
    // A leading unary minus binds tighter than `^` in exmex: evaluate `0 - ...` instead.
    parts
        .into_iter()
        .map(|p| format!("0 + ({})", p.trim().replacen('-', "0-", usize::from(p.trim().starts_with('-')))))
        .collect()
}

#[test]
fn shipped_odebench_systems_match_the_json_definitions() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/odebench");
    if !dir.is_dir() {
        eprintln!("skipping: {} not found", dir.display());
        return;
    }
    let mut rng = mixer_core::Seeds::new(1).stream("odebench-check");
    let mut checked = 0;
    for d in ["1D", "2D", "3D", "4D"] {
        let text = std::fs::read_to_string(dir.join(format!("ode_definitions_{d}.json"))).unwrap();
        let json: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&text).unwrap();
        for (id, def) in json {
            let sys = builtin_system(&format!("odebench-{id}")).unwrap();
            let spec = sys.spec();
            let params = def["parameters"].as_object().unwrap();
            let names: Vec<String> = params.keys().cloned().collect();
            assert_eq!(spec.parameter_names(), names, "{id}");
            let values: Vec<f64> = params.values().map(|v| v.as_f64().unwrap()).collect();
            assert_eq!(spec.reference_values(), values, "{id}");
            assert_eq!(spec.horizon, def["time_horizon"].as_f64().unwrap(), "{id}");
            let ics: Vec<Vec<f64>> = serde_json::from_value(def["initial_values"].clone()).unwrap();
            assert_eq!(spec.initial, mixer_data::InitialRule::ReferenceBox { reference: ics }, "{id}");
            let func = def["function"].as_str().unwrap();
            let body = &func[func.find(": [").unwrap() + 3..func.len() - 1];
            let exprs: Vec<_> = translate(body).iter().map(|e| exmex::parse::<f64>(e).unwrap()).collect();
            let inst = sys.instance(&values).unwrap();
            let n = inst.dim();
            for _ in 0..5 {
                let y: Vec<f64> = (0..n).map(|_| rng.random_range(0.2..0.9)).collect();
                let mut ours = vec![0.0; n];
                inst.rhs(0.0, &y, &mut ours);
                for (i, e) in exprs.iter().enumerate() {
                    use exmex::Express;
                    let vars: Vec<f64> = e
                        .var_names()
                        .iter()
                        .map(|v| match v.strip_prefix('y') {
                            Some(k) if !k.is_empty() => y[k.parse::<usize>().unwrap()],
                            _ => values[names.iter().position(|p| p == v).unwrap()],
                        })
                        .collect();
                    let theirs = e.eval(&vars).unwrap();
                    assert!(
                        (ours[i].is_nan() && theirs.is_nan())
                            || (ours[i] - theirs).abs() <= 1e-12 * (1.0 + theirs.abs()),
                        "{id} eq {i}: {} vs {theirs}",
                        ours[i]
                    );
                }
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 38);
}
