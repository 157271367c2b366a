//! Seeded mutations of the files readers take (raw bytes, `.npy` headers inside `.npz` archives,
//! TOML values), for tests that every reader answers malformed input with an error, never a
//! panic. Each function draws from the caller's generator, so a failing case is replayed from its
//! seed.

use std::io::{Cursor, Read, Write};

use rand::Rng;
use rand::seq::IndexedRandom;

/// Flips 1 to 8 random bits of `bytes` (no-op on empty input).
pub fn flip_bits(bytes: &mut [u8], rng: &mut impl Rng) {
    if bytes.is_empty() {
        return;
    }
    for _ in 0..rng.random_range(1..=8) {
        let i = rng.random_range(0..bytes.len());
        bytes[i] ^= 1 << rng.random_range(0..8);
    }
}

/// Cuts `bytes` at a random length shorter than it.
pub fn truncate(bytes: &mut Vec<u8>, rng: &mut impl Rng) {
    let keep = rng.random_range(0..bytes.len().max(1));
    bytes.truncate(keep);
}

/// Descriptors a mutated `.npy` header may claim.
const DESCRIPTORS: [&str; 10] = ["<f8", "<f4", ">f8", "<i8", "<i4", "|u1", "|b1", "<c16", "<U3", "|O"];

/// Shapes a mutated `.npy` header may claim: empty, zero, negative, huge and high-rank ones.
const SHAPES: [&str; 10] = [
    "()",
    "(0,)",
    "(3,)",
    "(-1, 2)",
    "(2, 2, 2, 2)",
    "(1, 1, 1, 1, 1, 1, 1)",
    "(4294967296, 4294967296)",
    "(18446744073709551615,)",
    "(9999999999,)",
    "(1, 2, 3, 4, 5)",
];

/// Rewrites one random member of a `.npz` archive with a mutated `.npy` header: another dtype,
/// another shape, Fortran order, a wrong header length or garbled header text. The archive
/// itself stays valid (fresh checksums), so the mutation reaches the `.npy` decoder. Returns
/// `None` when `npz` is not a readable archive.
pub fn mutate_npz_header(npz: &[u8], rng: &mut impl Rng) -> Option<Vec<u8>> {
    let mut archive = zip::ZipArchive::new(Cursor::new(npz)).ok()?;
    let mut members = Vec::with_capacity(archive.len());
    for i in 0..archive.len() {
        let mut file = archive.by_index(i).ok()?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).ok()?;
        members.push((file.name().to_string(), bytes));
    }
    if members.is_empty() {
        return None;
    }
    let pick = rng.random_range(0..members.len());
    mutate_npy_header(&mut members[pick].1, rng);
    let mut out = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, bytes) in &members {
        out.start_file(name.as_str(), options).ok()?;
        out.write_all(bytes).ok()?;
    }
    Some(out.finish().ok()?.into_inner())
}

/// Mutates the header of one `.npy` file in place (see [`mutate_npz_header`]); input without
/// the `.npy` preamble gets its bits flipped instead.
pub fn mutate_npy_header(npy: &mut Vec<u8>, rng: &mut impl Rng) {
    const PREAMBLE: usize = 10;
    if npy.len() < PREAMBLE || &npy[..6] != b"\x93NUMPY" {
        flip_bits(npy, rng);
        return;
    }
    let len = u16::from_le_bytes([npy[8], npy[9]]) as usize;
    let end = (PREAMBLE + len).min(npy.len());
    let header = String::from_utf8_lossy(&npy[PREAMBLE..end]).into_owned();
    let new = match rng.random_range(0..5) {
        0 => replace_field(&header, "'descr': '", "'", DESCRIPTORS.choose(rng).copied().unwrap_or("<f8")),
        1 => replace_field(&header, "'shape': ", ")", SHAPES.choose(rng).copied().unwrap_or("()")),
        2 => header.replace("'fortran_order': False", "'fortran_order': True"),
        3 => {
            let wrong = rng.random_range(0..u16::MAX);
            npy[8..10].copy_from_slice(&wrong.to_le_bytes());
            return;
        }
        _ => {
            let mut bytes = header.into_bytes();
            flip_bits(&mut bytes, rng);
            String::from_utf8_lossy(&bytes).into_owned()
        }
    };
    let body = npy[end..].to_vec();
    let mut out = npy[..8].to_vec();
    out.extend_from_slice(&(new.len().min(u16::MAX as usize) as u16).to_le_bytes());
    out.extend_from_slice(new.as_bytes());
    out.extend_from_slice(&body);
    *npy = out;
}

/// `header` with the text between `start` and the next `stop` after it replaced by `value`
/// (the closing `)` of a shape is kept by `value` itself).
fn replace_field(header: &str, start: &str, stop: &str, value: &str) -> String {
    let Some(a) = header.find(start).map(|i| i + start.len()) else { return header.to_string() };
    let Some(b) = header[a..].find(stop).map(|i| a + i) else { return header.to_string() };
    let b = if stop == ")" { b + 1 } else { b };
    format!("{}{value}{}", &header[..a], &header[b..])
}

/// Values a mutated TOML leaf may take: wrong types, zero, negative, huge and non-finite numbers,
/// empty collections.
fn odd_value(rng: &mut impl Rng) -> toml::Value {
    use toml::Value;
    match rng.random_range(0..12) {
        0 => Value::Integer(0),
        1 => Value::Integer(-1),
        2 => Value::Integer(i64::MAX),
        3 => Value::Integer(rng.random_range(1..64)),
        4 => Value::Float(f64::NAN),
        5 => Value::Float(f64::INFINITY),
        6 => Value::Float(-1e300),
        7 => Value::Float(rng.random_range(-2.0..2.0)),
        8 => Value::String("?".into()),
        9 => Value::Boolean(true),
        10 => Value::Array(Vec::new()),
        _ => Value::Table(toml::Table::new()),
    }
}

/// Mutates a TOML document: replaces a random value (at any depth) with an odd one, removes a
/// key, or duplicates an array element. Text that does not parse gets its bits flipped instead.
pub fn mutate_toml(text: &str, rng: &mut impl Rng) -> String {
    let Ok(mut root) = text.parse::<toml::Table>() else {
        let mut bytes = text.as_bytes().to_vec();
        flip_bits(&mut bytes, rng);
        return String::from_utf8_lossy(&bytes).into_owned();
    };
    mutate_table(&mut root, rng);
    toml::to_string(&root).unwrap_or_default()
}

/// One mutation somewhere in `table` or below it.
fn mutate_table(table: &mut toml::Table, rng: &mut impl Rng) {
    let keys: Vec<String> = table.keys().cloned().collect();
    let Some(key) = keys.choose(rng) else { return };
    if rng.random_range(0..10) == 0 {
        table.remove(key);
        return;
    }
    let descend = rng.random_bool(0.6);
    match table.get_mut(key) {
        Some(toml::Value::Table(inner)) if descend => mutate_table(inner, rng),
        Some(toml::Value::Array(items)) if descend && !items.is_empty() => mutate_array(items, rng),
        Some(value) => *value = odd_value(rng),
        None => {}
    }
}

/// One mutation of a random element of a non-empty array: into it, replaced, or duplicated.
fn mutate_array(items: &mut Vec<toml::Value>, rng: &mut impl Rng) {
    let i = rng.random_range(0..items.len());
    match &mut items[i] {
        toml::Value::Table(inner) if rng.random_bool(0.8) => mutate_table(inner, rng),
        _ if rng.random_bool(0.2) => {
            let copy = items[i].clone();
            items.push(copy);
        }
        item => *item = odd_value(rng),
    }
}
