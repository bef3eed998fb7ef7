//! The next token from a row of logits: greedy (the largest logit) or, with a
//! temperature, drawn from softmax(logits / temperature) with a seeded generator, so a
//! run is reproducible either way.

pub struct Sampler {
    temperature: f32,
    state: u64,
}

impl Sampler {
    /// Greedy when `temperature` is 0 (or less); else seeded sampling.
    pub fn new(temperature: f32, seed: u64) -> Self {
        Sampler { temperature, state: seed ^ 0x5DEE_CE66_D1CE_4E5B }
    }

    pub fn describe(&self) -> String {
        if self.temperature > 0.0 {
            format!("sampling at temperature {}", self.temperature)
        } else {
            "greedy decoding".into()
        }
    }

    /// SplitMix64, uniform in [0, 1).
    fn uniform(&mut self) -> f64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// The token chosen from `logits` (one row, the vocabulary).
    pub fn next(&mut self, logits: &[f32]) -> u32 {
        let argmax = logits.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i);
        if self.temperature <= 0.0 || !logits[argmax].is_finite() {
            return argmax as u32;
        }
        let top = logits[argmax] as f64;
        let t = self.temperature as f64;
        let weights: Vec<f64> = logits.iter().map(|&l| ((l as f64 - top) / t).exp()).collect();
        let mut u = self.uniform() * weights.iter().sum::<f64>();
        for (i, w) in weights.iter().enumerate() {
            if u < *w {
                return i as u32;
            }
            u -= w;
        }
        argmax as u32
    }
}

#[cfg(test)]
mod tests {
    use super::Sampler;

    #[test]
    fn greedy_takes_the_largest_and_sampling_is_seeded() {
        assert_eq!(Sampler::new(0.0, 1).next(&[0.5, 3.0, -1.0, 2.9]), 1);
        let draw = |seed| {
            let mut s = Sampler::new(1.0, seed);
            (0..50).map(|_| s.next(&[0.0; 4])).collect::<Vec<_>>()
        };
        let (a, b) = (draw(3), draw(3));
        assert_eq!(a, b);
        assert!(a.iter().any(|&t| t != a[0]), "uniform logits must not always give one token");
        // A huge gap leaves no chance to the rest.
        assert_eq!(Sampler::new(0.7, 9).next(&[-1e4, 10.0, -1e4]), 1);
    }
}
