//! Guarded reading of `.npy` arrays and `.npz` archives: the size an array's header declares is
//! checked against the bytes that follow it before anything is allocated, so a corrupt or
//! hostile header (`shape: (9999999999,)`) is an error instead of an allocation that aborts the
//! process. Decoding itself is ndarray-npy's.

use std::io::Read;
use std::path::Path;

use ndarray::ArrayD;
use ndarray_npy::{ReadNpyError, ReadNpyExt, ReadableElement};

use crate::DataError;

/// Why an array could not be read: its dtype is not the one asked for, or anything else.
#[derive(Debug)]
pub(crate) enum NpyError {
    /// The array holds another element type.
    WrongType,
    /// The bytes are not a readable array (the message says why).
    Bad(String),
}

impl std::fmt::Display for NpyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NpyError::WrongType => f.write_str("unexpected element type"),
            NpyError::Bad(reason) => f.write_str(reason),
        }
    }
}

/// Reads a `.npy` byte string as an array of `T`, after checking that it holds as many data bytes
/// as its header declares.
pub(crate) fn array_from_npy<T: ReadableElement>(bytes: &[u8]) -> Result<ArrayD<T>, NpyError> {
    check_declared_size(bytes).map_err(NpyError::Bad)?;
    match ArrayD::<T>::read_npy(bytes) {
        Ok(a) => Ok(a),
        Err(ReadNpyError::WrongDescriptor(_)) => Err(NpyError::WrongType),
        Err(e) => Err(NpyError::Bad(e.to_string())),
    }
}

/// Checks the header of a `.npy` byte string: its shape times its item size must fit in the
/// bytes after the header. Headers this check cannot read are left to the decoder.
fn check_declared_size(bytes: &[u8]) -> Result<(), String> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err("not a .npy array (no NUMPY preamble)".into());
    }
    let (len, start): (usize, usize) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize, 12),
        v => return Err(format!("unsupported .npy version {v}")),
    };
    let header = bytes.get(start..start.saturating_add(len)).ok_or("the header runs past the end of the array")?;
    let header = String::from_utf8_lossy(header);
    let Some(shape) = field(&header, "'shape':").and_then(|s| s.split_once(')')).map(|(s, _)| s) else {
        return Ok(());
    };
    let item = field(&header, "'descr':")
        .and_then(|d| d.trim_start().strip_prefix('\''))
        .and_then(|d| d.split_once('\''))
        .and_then(|(d, _)| d.trim_start_matches(['<', '>', '|', '=']).get(1..)?.parse::<usize>().ok())
        .unwrap_or(1);
    let mut count: usize = 1;
    for dim in shape.trim_start().trim_start_matches('(').split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let dim: usize = dim.parse().map_err(|_| format!("shape entry `{dim}` is not a size"))?;
        count = count.checked_mul(dim).ok_or("the declared shape overflows")?;
    }
    let need = count.checked_mul(item).ok_or("the declared shape overflows")?;
    let have = bytes.len() - (start + len);
    if need > have {
        return Err(format!(
            "the header declares {need} data bytes (shape ({shape}), item size {item}) but {have} follow"
        ));
    }
    Ok(())
}

/// The text of `header` after `key`.
fn field<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    header.find(key).map(|i| &header[i + key.len()..])
}

/// The members of a `.npz` archive, read into memory (each at most as large as its stored data).
pub(crate) struct Npz {
    members: Vec<(String, Vec<u8>)>,
}

impl Npz {
    /// Reads every member of the archive at `path`.
    pub(crate) fn open(path: &Path) -> Result<Self, DataError> {
        let err = |e: &dyn std::fmt::Display| DataError::Npz {
            path: path.to_path_buf(),
            key: "*".into(),
            reason: e.to_string(),
        };
        let file = std::fs::File::open(path).map_err(|e| mixer_core::Error::io(path, e))?;
        let mut archive = zip::ZipArchive::new(std::io::BufReader::new(file)).map_err(|e| err(&e))?;
        let mut members = Vec::with_capacity(archive.len());
        for i in 0..archive.len() {
            let mut member = archive.by_index(i).map_err(|e| err(&e))?;
            let name = member.name().trim_end_matches(".npy").to_string();
            let mut bytes = Vec::new();
            member.read_to_end(&mut bytes).map_err(|e| err(&e))?;
            members.push((name, bytes));
        }
        Ok(Self { members })
    }

    /// The array `key` as `T`, or as `U` converted by `convert` when it holds `U` instead; a
    /// missing array or any other element type is an error naming `path` and `key`.
    pub(crate) fn array<T: ReadableElement, U: ReadableElement + Clone>(
        &self,
        path: &Path,
        key: &str,
        convert: impl Fn(U) -> T,
        expected: &str,
    ) -> Result<ArrayD<T>, DataError> {
        let Some((_, bytes)) = self.members.iter().find(|(n, _)| n == key) else {
            return Err(DataError::MissingKey { path: path.to_path_buf(), key: key.to_string() });
        };
        let read = match array_from_npy::<T>(bytes) {
            Err(NpyError::WrongType) => array_from_npy::<U>(bytes).map(|a| a.mapv(&convert)),
            other => other,
        };
        read.map_err(|e| {
            let reason = match e {
                NpyError::WrongType => format!("expected {expected} values"),
                NpyError::Bad(reason) => reason,
            };
            DataError::Npz { path: path.to_path_buf(), key: key.to_string(), reason }
        })
    }
}

#[cfg(test)]
mod tests {
    use ndarray::Array2;
    use ndarray_npy::WriteNpyExt;

    use super::*;

    fn npy(a: &Array2<f64>) -> Vec<u8> {
        let mut bytes = Vec::new();
        a.write_npy(&mut bytes).unwrap();
        bytes
    }

    /// `npy` with its header's shape `(3, 4)` replaced by `shape` (header length updated).
    fn with_shape(npy: &[u8], shape: &str) -> Vec<u8> {
        let len = u16::from_le_bytes([npy[8], npy[9]]) as usize;
        let header = std::str::from_utf8(&npy[10..10 + len]).unwrap().replace("(3, 4)", shape);
        let mut out = npy[..8].to_vec();
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(&npy[10 + len..]);
        out
    }

    #[test]
    fn reads_what_it_declares_and_refuses_oversized_headers() {
        let a = Array2::from_shape_fn((3, 4), |(i, j)| (i * 4 + j) as f64);
        let bytes = npy(&a);
        let back: ArrayD<f64> = array_from_npy(&bytes).unwrap();
        assert_eq!(back.into_dimensionality::<ndarray::Ix2>().unwrap(), a);
        assert!(matches!(array_from_npy::<i64>(&bytes), Err(NpyError::WrongType)));
        let err = array_from_npy::<f64>(&with_shape(&bytes, "(9999999999, 4)")).unwrap_err().to_string();
        assert!(err.contains("declares 319999999968 data bytes") && err.contains("but 96 follow"), "{err}");
        let err = array_from_npy::<f64>(&with_shape(&bytes, "(18446744073709551615, 2)")).unwrap_err();
        assert_eq!(err.to_string(), "the declared shape overflows");
        assert!(array_from_npy::<f64>(&bytes[..bytes.len() - 8]).unwrap_err().to_string().contains("but 88 follow"));
    }
}
