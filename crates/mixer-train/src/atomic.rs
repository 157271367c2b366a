//! JSON files written atomically ([`mixer_core::write_atomic`]) and read back.

use std::path::Path;

use mixer_core::Error;
pub use mixer_core::write_atomic;

/// Serialises `value` as pretty JSON and writes it atomically.
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<(), Error> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::io(path, std::io::Error::other(e)))?;
    write_atomic(path, text.as_bytes())
}

/// Reads JSON written by [`write_json`].
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::io(path, std::io::Error::new(std::io::ErrorKind::InvalidData, e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_no_temp_left() {
        let dir = std::env::temp_dir().join(format!("mixer-atomic-{}", std::process::id()));
        let path = dir.join("a.json");
        write_json(&path, &vec![1.5, 2.5]).unwrap();
        write_json(&path, &vec![3.5]).unwrap();
        let back: Vec<f64> = read_json(&path).unwrap();
        assert_eq!(back, vec![3.5]);
        let names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 1, "only the target remains: {names:?}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
