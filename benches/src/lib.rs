//! Benchmark helpers; the benchmarks are in `benches/`.
