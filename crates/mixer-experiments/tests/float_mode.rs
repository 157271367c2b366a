//! The process-wide flush-to-zero reaches every thread of rayon's global pool (a binary of its
//! own: it changes the floating-point mode of the pool).

#[test]
#[cfg(target_arch = "x86_64")]
fn every_pool_thread_flushes_subnormals() {
    assert!(rayon::broadcast(|_| !mixer_experiments::subnormals_flushed()).into_iter().all(|b| b));
    assert!(mixer_experiments::flush_subnormals_in_process());
    assert!(mixer_experiments::subnormals_flushed());
    assert!(rayon::broadcast(|_| mixer_experiments::subnormals_flushed()).into_iter().all(|b| b));
}
