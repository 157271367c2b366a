//! Reader of the `.ts` time-series classification format of the UCR/UEA archive (Bagnall et al.,
//! 2018; e.g. Epilepsy2): `@` header lines, then `@data` and one series per line, dimensions
//! separated by `:`, values by `,`, the integer class label last.

use std::path::{Path, PathBuf};

use mixer_core::{Dataset, TimeGrid};
use ndarray::Array3;

use crate::DataError;

/// Labelled series of equal length, `[series, steps, dims]`.
#[derive(Clone, Debug, PartialEq)]
pub struct LabelledSeries {
    /// Problem name (`@problemName`), empty when the file has none.
    pub name: String,
    /// Values, `[series, steps, dims]`.
    pub values: Array3<f64>,
    /// Class label of each series.
    pub labels: Vec<i64>,
}

impl LabelledSeries {
    /// Number of series.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when there is no series.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The distinct labels, sorted.
    pub fn classes(&self) -> Vec<i64> {
        let mut c = self.labels.clone();
        c.sort_unstable();
        c.dedup();
        c
    }

    /// The series as a dataset of one trajectory per environment on times `0, 1, ...`, the
    /// family of each environment being the position of its label in `classes` (the training
    /// file's [`LabelledSeries::classes`], so that a test file is numbered the same way). A
    /// label not in `classes` is an error.
    pub fn to_dataset(&self, classes: &[i64]) -> Result<Dataset, DataError> {
        let families = self
            .labels
            .iter()
            .enumerate()
            .map(|(i, l)| {
                classes.iter().position(|c| c == l).ok_or_else(|| {
                    let known = format!("{classes:?}");
                    mixer_core::Error::config(
                        format!("{} series {i}", self.name),
                        format!("class label {l} is not among the training classes {known}"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let (n, steps, dims) = self.values.dim();
        let x = self.values.clone().into_shape_with_order((n, 1, steps, dims)).map_err(|e| {
            mixer_core::Error::shape(format!("{} series", self.name), (n, 1, steps, dims), e.to_string())
        })?;
        let t = TimeGrid::Shared((0..steps).map(|k| k as f64).collect());
        Ok(Dataset::new(x, t, Some(families))?)
    }
}

/// A malformed `.ts` file: the file, the 1-based line and what is wrong.
fn bad(path: &Path, line: usize, reason: impl Into<String>) -> DataError {
    DataError::TimeSeries { path: path.to_path_buf(), line, reason: reason.into() }
}

/// Reads a `.ts` file of labelled, equal-length series without missing values.
pub fn read_ts(path: &Path) -> Result<LabelledSeries, DataError> {
    let text = std::fs::read_to_string(path).map_err(|e| mixer_core::Error::io(path, e))?;
    parse_ts(&text, path)
}

/// Parses `.ts` text (`path` names the source in errors).
pub fn parse_ts(text: &str, path: &Path) -> Result<LabelledSeries, DataError> {
    let path: PathBuf = path.to_path_buf();
    let mut name = String::new();
    let mut labelled = false;
    let mut data_at = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some(tag) = line.strip_prefix('@') else {
            return Err(bad(&path, i + 1, "a value line before `@data`"));
        };
        let mut words = tag.split_whitespace();
        match words.next().map(str::to_ascii_lowercase).as_deref() {
            Some("problemname") => name = words.collect::<Vec<_>>().join(" "),
            Some("classlabel") => labelled = words.next().is_some_and(|w| w.eq_ignore_ascii_case("true")),
            Some("timestamps") if words.next().is_some_and(|w| w.eq_ignore_ascii_case("true")) => {
                return Err(bad(&path, i + 1, "series with time stamps are not supported"));
            }
            Some("data") => {
                data_at = Some(i + 1);
                break;
            }
            _ => {}
        }
    }
    let start = data_at.ok_or_else(|| bad(&path, text.lines().count(), "no `@data` line"))?;
    if !labelled {
        return Err(bad(&path, start, "the file declares no class labels (`@classLabel true ...`)"));
    }
    let mut rows: Vec<Vec<Vec<f64>>> = Vec::new();
    let mut labels = Vec::new();
    for (i, raw) in text.lines().enumerate().skip(start) {
        let line_no = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut fields: Vec<&str> = line.split(':').collect();
        let label = fields.pop().unwrap_or_default().trim();
        let label: i64 =
            label.parse().map_err(|_| bad(&path, line_no, format!("class label `{label}` is not an integer")))?;
        if fields.is_empty() {
            return Err(bad(&path, line_no, "a class label without values"));
        }
        let dims = fields
            .iter()
            .enumerate()
            .map(|(d, f)| parse_values(f).map_err(|reason| bad(&path, line_no, format!("dimension {d}: {reason}"))))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(first) = rows.first() {
            let (want, got) = ((first.len(), first[0].len()), (dims.len(), dims[0].len()));
            if want.0 != got.0 {
                return Err(bad(&path, line_no, format!("{} dimensions, the first series has {}", got.0, want.0)));
            }
            if let Some((d, v)) = dims.iter().enumerate().find(|(_, v)| v.len() != want.1) {
                return Err(bad(
                    &path,
                    line_no,
                    format!("dimension {d} has {} values, the first series has {} (unequal lengths)", v.len(), want.1),
                ));
            }
        } else if let Some((d, v)) = dims.iter().enumerate().find(|(_, v)| v.len() != dims[0].len()) {
            return Err(bad(
                &path,
                line_no,
                format!("dimension {d} has {} values, dimension 0 has {}", v.len(), dims[0].len()),
            ));
        }
        rows.push(dims);
        labels.push(label);
    }
    let Some(first) = rows.first() else {
        return Err(bad(&path, start, "no series after `@data`"));
    };
    let (dims, steps) = (first.len(), first[0].len());
    let values = Array3::from_shape_fn((rows.len(), steps, dims), |(n, k, d)| rows[n][d][k]);
    Ok(LabelledSeries { name, values, labels })
}

/// The comma-separated finite values of one dimension.
fn parse_values(field: &str) -> Result<Vec<f64>, String> {
    let values = field
        .split(',')
        .map(|v| {
            let v = v.trim();
            match v.parse::<f64>() {
                Ok(x) if x.is_finite() => Ok(x),
                _ if v == "?" || v.eq_ignore_ascii_case("nan") => Err("missing values are not supported".to_string()),
                _ => Err(format!("`{v}` is not a number")),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    if values.is_empty() { Err("no values".into()) } else { Ok(values) }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: &str = "# two classes\n@problemName Tiny\n@timeStamps false\n@univariate false\n@equalLength true\n\
                         @seriesLength 3\n@classLabel true 0 1\n@data\n1,2,3:0.5,0.5,0.5:1\n4,5,6:1,2,3:0\n";

    fn parse(text: &str) -> Result<LabelledSeries, DataError> {
        parse_ts(text, Path::new("tiny.ts"))
    }

    #[test]
    fn reads_a_small_multivariate_file() {
        let s = parse(SMALL).unwrap();
        assert_eq!(
            (s.name.as_str(), s.values.dim(), s.labels.clone(), s.classes()),
            ("Tiny", (2, 3, 2), vec![1, 0], vec![0, 1])
        );
        assert_eq!(s.values[[0, 2, 0]], 3.0);
        assert_eq!(s.values[[1, 1, 1]], 2.0);
    }

    #[test]
    fn read_from_disk_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tiny.ts");
        std::fs::write(&path, SMALL).unwrap();
        assert_eq!(read_ts(&path).unwrap(), parse(SMALL).unwrap());
        let err = read_ts(&dir.path().join("absent.ts")).unwrap_err().to_string();
        assert!(err.contains("absent.ts"), "{err}");
    }

    #[test]
    fn series_become_environments_numbered_by_the_training_classes() {
        let s = parse(SMALL).unwrap();
        let d = s.to_dataset(&s.classes()).unwrap();
        assert_eq!((d.x.dim(), d.families.clone()), ((2, 1, 3, 2), Some(vec![1, 0])));
        assert_eq!((d.x[[0, 0, 2, 0]], d.x[[1, 0, 1, 1]]), (3.0, 2.0));
        let err = s.to_dataset(&[1, 7]).unwrap_err().to_string();
        assert!(err.contains("class label 0 is not among the training classes [1, 7]"), "{err}");
    }

    #[test]
    fn malformed_files_are_clear_errors() {
        let cases = [
            (SMALL.replace("4,5,6:1,2,3:0", "4,5:1,2:0"), "line 10: dimension 0 has 2 values, the first series has 3"),
            (SMALL.replace("3:0.5,0.5,0.5:1", "3:0.5,0.5,0.5:one"), "line 9: class label `one` is not an integer"),
            (SMALL.replace(":1\n", ":1.5\n"), "class label `1.5` is not an integer"),
            (SMALL.replace("4,5,6", "4,x,6"), "line 10: dimension 0: `x` is not a number"),
            (SMALL.replace("4,5,6", "4,?,6"), "missing values are not supported"),
            (SMALL.replace("@data\n", ""), "a value line before `@data`"),
            (SMALL.replace("@classLabel true 0 1", "@classLabel false"), "declares no class labels"),
            (SMALL.replace("1,2,3:0.5,0.5,0.5:1\n4,5,6:1,2,3:0\n", ""), "no series after `@data`"),
            (SMALL.replace("4,5,6:1,2,3:0", "4,5,6:0"), "line 10: 1 dimensions, the first series has 2"),
            (SMALL.replace("0.5,0.5,0.5", "0.5,0.5"), "line 9: dimension 1 has 2 values, dimension 0 has 3"),
        ];
        for (text, want) in cases {
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.contains("tiny.ts") && err.contains(want), "{err} should say {want}");
        }
    }
}
