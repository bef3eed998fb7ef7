//! CPU path of the attention forward: the GPU kernel's tiled algorithm.
