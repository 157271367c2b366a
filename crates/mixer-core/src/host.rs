//! Moving data between burn tensors and host `f64` arrays.

use burn::tensor::{Tensor, TensorData, backend::Backend};
use ndarray::Array2;

/// A `[rows, cols]` tensor from row-major `f64` values (converted to the backend's float type).
pub fn tensor2<B: Backend>(values: &[f64], shape: [usize; 2], device: &B::Device) -> Tensor<B, 2> {
    Tensor::from_data(TensorData::new(values.to_vec(), shape), device)
}

/// Tensor values as `f64`, row-major.
pub fn to_vec<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f64> {
    t.into_data().convert::<f64>().to_vec::<f64>().expect("float tensor converts to f64")
}

/// A 2-D tensor as an `ndarray` matrix.
pub fn to_array2<B: Backend>(t: Tensor<B, 2>) -> Array2<f64> {
    let [r, c] = t.dims();
    Array2::from_shape_vec((r, c), to_vec(t)).expect("tensor shape matches its data")
}

/// An `ndarray` matrix as a 2-D tensor.
pub fn from_array2<B: Backend>(a: &Array2<f64>, device: &B::Device) -> Tensor<B, 2> {
    let (r, c) = a.dim();
    let values: Vec<f64> = a.iter().copied().collect();
    tensor2(&values, [r, c], device)
}
