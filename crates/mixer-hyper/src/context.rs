//! The learned context table: one vector per environment, and how new environments start.

use burn::module::{Module, Param};
use burn::tensor::{Int, Tensor, TensorData, backend::Backend};
use serde::{Deserialize, Serialize};

use mixer_core::ContextModel;

use crate::HyperError;

/// How the contexts of new environments are initialised.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContextInit {
    /// All zeros (MixER, CoDA, NCF).
    Zeros,
    /// The mean of the trained contexts (GEPS adaptation).
    Mean,
}

/// Per-environment contexts `[envs, d_xi]`, a trainable parameter (zero at the start of training).
#[derive(Module, Debug)]
pub struct ContextTable<B: Backend> {
    /// The contexts, `[envs, d_xi]`.
    pub table: Param<Tensor<B, 2>>,
}

impl<B: Backend> ContextTable<B> {
    /// `envs` contexts of size `dim`, all zero (MixER, Nzoyem et al. 2025).
    pub fn zeros(envs: usize, dim: usize, device: &B::Device) -> Self {
        Self::from_tensor(Tensor::zeros([envs, dim], device))
    }

    /// A table holding the given values `[envs, d_xi]`.
    pub fn from_tensor(values: Tensor<B, 2>) -> Self {
        Self { table: Param::from_tensor(values) }
    }

    /// A table for `envs` new environments of size `dim`, initialised by `init`; `Mean` averages
    /// the rows of `trained` (which must then be given, non-empty and of width `dim`).
    pub fn fresh(
        envs: usize,
        dim: usize,
        init: ContextInit,
        trained: Option<&ContextTable<B>>,
        device: &B::Device,
    ) -> Result<Self, HyperError> {
        match init {
            ContextInit::Zeros => Ok(Self::zeros(envs, dim, device)),
            ContextInit::Mean => {
                let trained = trained.ok_or(HyperError::NoTrainedContexts { envs: 0 })?;
                let [n, d] = trained.table.dims();
                if n == 0 {
                    return Err(HyperError::NoTrainedContexts { envs: n });
                }
                if d != dim {
                    return Err(mixer_core::Error::shape("trained context width", dim, d).into());
                }
                let mean = trained.table.val().detach().mean_dim(0).to_device(device);
                Ok(Self::from_tensor(mean.repeat_dim(0, envs)))
            }
        }
    }

    /// This table with `new` environments appended (rows `envs..envs + new`), initialised by
    /// `init` from the current rows; the existing rows keep their values.
    pub fn extended_for_new(&self, new: usize, init: ContextInit) -> Result<Self, HyperError> {
        let [_, dim] = self.table.dims();
        let device = self.table.device();
        let extra = Self::fresh(new, dim, init, Some(self), &device)?;
        Ok(Self::from_tensor(Tensor::cat(vec![self.table.val(), extra.table.val()], 0)))
    }

    /// Contexts of the listed environments, `[ids.len(), d_xi]` (differentiable gather).
    pub fn rows(&self, ids: &[usize]) -> Result<Tensor<B, 2>, HyperError> {
        let envs = self.table.dims()[0];
        if let Some(&env) = ids.iter().find(|&&i| i >= envs) {
            return Err(HyperError::UnknownEnvironment { env, envs });
        }
        let device = self.table.device();
        let idx = Tensor::<B, 1, Int>::from_data(
            TensorData::new(ids.iter().map(|&i| i as i64).collect::<Vec<_>>(), [ids.len()]),
            &device,
        );
        Ok(self.table.val().select(0, idx))
    }
}

impl<B: Backend> ContextModel<B> for ContextTable<B> {
    fn num_envs(&self) -> usize {
        self.table.dims()[0]
    }

    fn context_dim(&self) -> usize {
        self.table.dims()[1]
    }

    fn contexts(&self) -> Tensor<B, 2> {
        self.table.val()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::TestBackend;
    use mixer_core::host::{tensor2, to_vec};

    #[test]
    fn zeros_then_mean_extension_and_gather() {
        let device = Default::default();
        let zero = ContextTable::<TestBackend>::zeros(3, 2, &device);
        assert_eq!(to_vec(zero.contexts()), vec![0.0; 6]);
        let trained = ContextTable::<TestBackend>::from_tensor(tensor2(&[1.0, 2.0, 3.0, -4.0], [2, 2], &device));
        let ext = trained.extended_for_new(2, ContextInit::Mean).unwrap();
        assert_eq!(ext.num_envs(), 4);
        assert_eq!(to_vec(ext.contexts()), vec![1.0, 2.0, 3.0, -4.0, 2.0, -1.0, 2.0, -1.0]);
        let zeros = trained.extended_for_new(1, ContextInit::Zeros).unwrap();
        assert_eq!(to_vec(zeros.contexts()), vec![1.0, 2.0, 3.0, -4.0, 0.0, 0.0]);
        assert_eq!(to_vec(ext.rows(&[3, 0, 1]).unwrap()), vec![2.0, -1.0, 1.0, 2.0, 3.0, -4.0]);
        let fresh = ContextTable::fresh(1, 2, ContextInit::Mean, Some(&trained), &device).unwrap();
        assert_eq!(to_vec(fresh.contexts()), vec![2.0, -1.0]);
    }

    #[test]
    fn bad_requests_are_errors() {
        let device = Default::default();
        let t = ContextTable::<TestBackend>::zeros(2, 3, &device);
        assert!(matches!(t.rows(&[0, 2]), Err(HyperError::UnknownEnvironment { env: 2, envs: 2 })));
        assert!(matches!(
            ContextTable::<TestBackend>::fresh(2, 3, ContextInit::Mean, None, &device),
            Err(HyperError::NoTrainedContexts { .. })
        ));
        let empty = ContextTable::<TestBackend>::zeros(0, 3, &device);
        assert!(empty.extended_for_new(1, ContextInit::Mean).is_err());
        assert!(ContextTable::fresh(1, 2, ContextInit::Mean, Some(&t), &device).is_err());
    }
}
