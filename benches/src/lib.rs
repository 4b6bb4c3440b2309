//! Benchmark helpers; the benchmarks are in `benches/`.
//!
//! Figures are reported as ratios against a baseline measured in the same run, never
//! asserted: only the results (e.g. identical choices) are.

pub mod cluster;
