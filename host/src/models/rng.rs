//! A small seeded generator for random weights (SplitMix64; normals by Box-Muller), so
//! the examples run without checkpoint files and without a random-number dependency.

use ndarray::{Array, Dimension, ShapeBuilder};

pub(crate) struct Rng {
    state: u64,
    /// Box-Muller makes normals in pairs: the second one, for the next call.
    spare: Option<f64>,
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng { state: seed, spare: None }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1), 53 random bits.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [lo, hi).
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }

    /// Normal with mean 0 and standard deviation `std`.
    pub fn normal(&mut self, std: f64) -> f64 {
        if let Some(z) = self.spare.take() {
            return std * z;
        }
        // 1 - unit() is in (0, 1], so the log is finite.
        let r = (-2.0 * (1.0 - self.unit()).ln()).sqrt();
        let (sin, cos) = (std::f64::consts::TAU * self.unit()).sin_cos();
        self.spare = Some(r * sin);
        std * r * cos
    }

    /// An array of independent U(-bound, bound) values.
    pub fn uniform_array<D: Dimension, Sh: ShapeBuilder<Dim = D>>(&mut self, shape: Sh, bound: f64) -> Array<f32, D> {
        Array::from_shape_simple_fn(shape, || self.uniform(-bound, bound) as f32)
    }

    /// An array of independent N(0, std²) values.
    pub fn normal_array<D: Dimension, Sh: ShapeBuilder<Dim = D>>(&mut self, shape: Sh, std: f64) -> Array<f32, D> {
        Array::from_shape_simple_fn(shape, || self.normal(std) as f32)
    }
}
