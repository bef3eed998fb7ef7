//! Attention reference in f64 (materialises the full score matrix).
