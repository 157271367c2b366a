//! Subnormal floats flushed to zero on the CPU threads of a process. Saturated swish units of
//! an expert field (a state in the thousands, as ODEBench's growth laws reach) and their
//! gradients produce `f32` values below `f32::MIN_POSITIVE` (1.2e-38), which x86 CPUs handle in
//! microcode at many times the cost of a normal operation: a MixER step on such data ran 3×
//! slower (docs/benchmarks.md, "Subnormal floats"). With flush-to-zero only those values change
//! (to zero), far below any tolerance of the project; runs stay deterministic.
//! `MIXER_KEEP_SUBNORMALS=1` keeps IEEE gradual underflow.

/// Environment variable that keeps subnormals (any non-empty value).
pub const KEEP_SUBNORMALS: &str = "MIXER_KEEP_SUBNORMALS";

/// Flushes subnormal results and operands to zero on the calling thread (x86-64: the FTZ and
/// DAZ bits of MXCSR); returns false on CPUs where the project does not set such a mode.
pub fn flush_subnormals_on_this_thread() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        let mut csr: u32 = 0;
        // SAFETY: `stmxcsr` stores this thread's SSE control register into `csr` and `ldmxcsr`
        // loads it back with FTZ (bit 15) and DAZ (bit 6) set; both touch only that 4-byte local
        // and the register, which Rust code does not otherwise rely on.
        unsafe {
            std::arch::asm!("stmxcsr [{0}]", in(reg) &mut csr as *mut u32, options(nostack, preserves_flags));
            csr |= (1 << 15) | (1 << 6);
            std::arch::asm!("ldmxcsr [{0}]", in(reg) &csr as *const u32, options(nostack, preserves_flags, readonly));
        }
        true
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Flushes subnormals on the calling thread and on every thread of rayon's global pool (where
/// the fused rollouts, the gate refits and burn-flex's kernels run), unless
/// [`KEEP_SUBNORMALS`] is set; returns whether it did. Call it first in a binary's `main`.
pub fn flush_subnormals_in_process() -> bool {
    if std::env::var_os(KEEP_SUBNORMALS).is_some_and(|v| !v.is_empty()) {
        return false;
    }
    let here = flush_subnormals_on_this_thread();
    let pool = rayon::broadcast(|_| flush_subnormals_on_this_thread());
    here && pool.into_iter().all(|b| b)
}

/// Whether a product that underflows to a subnormal comes out as zero on this thread.
pub fn subnormals_flushed() -> bool {
    std::hint::black_box(f32::MIN_POSITIVE) / std::hint::black_box(4.0f32) == 0.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn a_thread_flushes_only_after_asking() {
        let before_after = std::thread::spawn(|| {
            let before = subnormals_flushed();
            assert!(flush_subnormals_on_this_thread());
            (before, subnormals_flushed(), std::hint::black_box(1e-30f32) * std::hint::black_box(1e-10f32))
        })
        .join()
        .unwrap();
        assert_eq!(before_after, (false, true, 0.0));
        // normal values are untouched
        assert_eq!(std::hint::black_box(3.0f32) * std::hint::black_box(0.5f32), 1.5);
    }
}
