//! Context tables and the hypernetworks of mixer-hyper on a toy problem (CPU, instant).
//!
//! Run with `cargo run -p mixer-hyper --example hypernets`.

use burn::backend::NdArray;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use mixer_core::ContextModel;
use mixer_core::host::{tensor2, to_vec};
use mixer_hyper::{
    Activation, ChunkedHypernetConfig, CodaHypernetConfig, ContextInit, ContextTable, HyperError, LowRankLinearConfig,
    MlpLayout,
};

type B = NdArray<f64>;

fn main() -> Result<(), HyperError> {
    let device = Default::default();
    B::seed(&device, 7);

    // four trained environments with 2-d contexts, then two new ones at the mean
    let trained = ContextTable::<B>::from_tensor(tensor2(&[0.5, -0.2, 0.1, 0.4, -0.3, 0.0, 0.9, 0.6], [4, 2], &device));
    let all = trained.extended_for_new(2, ContextInit::Mean)?;
    println!("contexts after adding 2 environments (mean init): {:?}", to_vec(all.contexts()));

    // a GEPS layer: one low-rank adapted weight per row without building it
    let layer = LowRankLinearConfig { input: 2, output: 3, context: 2 }.init::<B>(&device)?;
    let y = layer.forward(Tensor::ones([6, 2], &device), all.rows(&[0, 1, 2, 3, 4, 5])?);
    println!("GEPS layer output {:?}", y.dims());

    // CoDA on a flat 2 -> 16 -> 2 vector field, with MIP encoding
    let field = MlpLayout { sizes: vec![2, 16, 2], activation: Activation::Swish };
    let coda = CodaHypernetConfig { context: 2, layout: field.clone(), mip: true }.init::<B>(&device)?;
    let dx = coda.forward(Tensor::ones([6, 2], &device), all.contexts())?;
    println!("CoDA field: {} root parameters, output {:?}", field.num_params(), dx.dims());

    // HyperCRL chunked generator: all weights of the same field from 8-d task embeddings
    let cfg = ChunkedHypernetConfig {
        embedding: 8,
        chunk_embedding: 16,
        hidden: vec![32, 32],
        chunk_size: 20,
        target: field,
        residual: true,
        mip: false,
    };
    let hnet = cfg.init::<B>(&device)?;
    let emb = Tensor::<B, 2>::random([3, 8], burn::tensor::Distribution::Normal(0.0, 1.0), &device);
    let params = hnet.generate(emb)?;
    println!(
        "chunked hypernetwork: {} chunks of {} -> parameters {:?}",
        cfg.num_chunks(),
        cfg.chunk_size,
        params.dims()
    );
    Ok(())
}
