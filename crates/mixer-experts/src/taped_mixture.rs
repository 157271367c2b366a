//! A weighted sum of taped GEPS experts on the host: each expert acts on its own units (rows of
//! the state it reads and adds to), so that one field covers a top-1 group (one expert, every
//! row once) as well as a top-k or shared mixture (several experts per row).

use mixer_core::{HostField, TapedField};

use crate::geps_taped::{GepsTape, TapedGeps};
use crate::host_kernel::HostKernel;

/// One expert of a [`TapedMixture`]: its field on its units and the state row of each unit.
pub(crate) struct Part<'a, T> {
    /// The expert bound to its units' contexts and scales.
    pub(crate) field: TapedGeps<'a, T>,
    /// The row of each unit; `None`: unit `i` is row `i` and the part covers every row.
    pub(crate) rows: Option<Vec<usize>>,
    /// Scratch: the units' states, outputs and cotangents.
    x: Vec<T>,
    out: Vec<T>,
}

impl<'a, T: HostKernel> Part<'a, T> {
    /// `field` on the units whose rows are `rows` (`None`: all rows, in order).
    pub(crate) fn new(field: TapedGeps<'a, T>, rows: Option<Vec<usize>>) -> Self {
        let n = field.rows() * field.dim();
        let scratch = if rows.is_some() { n } else { 0 };
        Self { field, rows, x: vec![T::ZERO; scratch], out: vec![T::ZERO; scratch] }
    }
}

/// The tapes of every part of one evaluation.
#[derive(Clone, Debug, Default)]
pub(crate) struct MixtureTape<T> {
    parts: Vec<GepsTape<T>>,
}

/// `f(x)_r = sum over the units u of row r of f_{expert(u)}(x_r) * scale_u`: the parts'
/// outputs summed onto their rows, in part order.
pub(crate) struct TapedMixture<'a, T> {
    parts: Vec<Part<'a, T>>,
    rows: usize,
    dim: usize,
    /// The tape of untaped evaluations, reused.
    scratch: MixtureTape<T>,
}

impl<'a, T: HostKernel> TapedMixture<'a, T> {
    /// The mixture of `parts` over `rows` rows of states of size `dim`.
    pub(crate) fn new(parts: Vec<Part<'a, T>>, rows: usize, dim: usize) -> Self {
        Self { parts, rows, dim, scratch: MixtureTape::default() }
    }

    /// The same field, its pull-backs leaving the parameters' gradients out
    /// ([`TapedGeps::without_param_grads`]).
    pub(crate) fn without_param_grads(mut self) -> Self {
        self.parts = self.parts.into_iter().map(|p| Part { field: p.field.without_param_grads(), ..p }).collect();
        self
    }

    /// The parts, to take their gradients after a backward pass.
    pub(crate) fn into_parts(self) -> Vec<Part<'a, T>> {
        self.parts
    }
}

/// Copies the rows `rows` of `from` (`[.., d]`) into `to`, one after another.
fn gather<T: Copy>(from: &[T], rows: &[usize], d: usize, to: &mut [T]) {
    for (dst, &r) in to.chunks_exact_mut(d).zip(rows) {
        dst.copy_from_slice(&from[r * d..(r + 1) * d]);
    }
}

/// Adds the units' rows `from` onto rows `rows` of `to`.
fn scatter_add<T: HostKernel>(from: &[T], rows: &[usize], d: usize, to: &mut [T]) {
    for (src, &r) in from.chunks_exact(d).zip(rows) {
        for (acc, &v) in to[r * d..(r + 1) * d].iter_mut().zip(src) {
            *acc += v;
        }
    }
}

impl<T: HostKernel> HostField<T> for TapedMixture<'_, T> {
    fn dim(&self) -> usize {
        self.dim
    }

    fn rows(&self) -> usize {
        self.rows
    }

    fn eval(&mut self, t: f64, x: &[T], out: &mut [T]) {
        let mut tape = std::mem::take(&mut self.scratch);
        self.eval_taped(t, x, out, &mut tape);
        self.scratch = tape;
    }
}

impl<T: HostKernel> TapedField<T> for TapedMixture<'_, T> {
    type Tape = MixtureTape<T>;

    fn new_tape(&self) -> MixtureTape<T> {
        MixtureTape { parts: self.parts.iter().map(|p| p.field.new_tape()).collect() }
    }

    fn tape_len(&self) -> usize {
        self.parts.iter().map(|p| p.field.tape_len()).sum()
    }

    fn eval_taped(&mut self, t: f64, x: &[T], out: &mut [T], tape: &mut MixtureTape<T>) {
        let d = self.dim;
        tape.parts.resize(self.parts.len(), GepsTape::default());
        if let [Part { field, rows: None, .. }] = self.parts.as_mut_slice() {
            return field.eval_taped(t, x, out, &mut tape.parts[0]);
        }
        out.fill(T::ZERO);
        for (part, part_tape) in self.parts.iter_mut().zip(&mut tape.parts) {
            match &part.rows {
                None => {
                    part.out.resize(out.len(), T::ZERO);
                    part.field.eval_taped(t, x, &mut part.out, part_tape);
                    for (acc, &v) in out.iter_mut().zip(&part.out) {
                        *acc += v;
                    }
                }
                Some(rows) => {
                    gather(x, rows, d, &mut part.x);
                    part.field.eval_taped(t, &part.x, &mut part.out, part_tape);
                    scatter_add(&part.out, rows, d, out);
                }
            }
        }
    }

    fn pull_back(&mut self, tape: &MixtureTape<T>, g: &[T], x_bar: &mut [T]) {
        let d = self.dim;
        if let [Part { field, rows: None, .. }] = self.parts.as_mut_slice() {
            return field.pull_back(&tape.parts[0], g, x_bar);
        }
        x_bar.fill(T::ZERO);
        for (part, part_tape) in self.parts.iter_mut().zip(&tape.parts) {
            match &part.rows {
                None => {
                    part.x.resize(x_bar.len(), T::ZERO);
                    part.field.pull_back(part_tape, g, &mut part.x);
                    for (acc, &v) in x_bar.iter_mut().zip(&part.x) {
                        *acc += v;
                    }
                }
                Some(rows) => {
                    gather(g, rows, d, &mut part.out);
                    part.field.pull_back(part_tape, &part.out, &mut part.x);
                    scatter_add(&part.x, rows, d, x_bar);
                }
            }
        }
    }
}
