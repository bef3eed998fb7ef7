//! Flash-Decoding's argument validation: each bad argument gives a typed error naming it,
//! and a failed call leaves the cache unchanged.

use flashscan::attention::{AttentionOptions, DecodeOptions, KvCache, decode};
use flashscan::ops::{RotaryStyle, rotary_tables};
use flashscan::{Device, Error, Tensor, bf16};
use ndarray::{ArrayD, IxDyn};

fn t(shape: &[usize]) -> Tensor<bf16> {
    Tensor::Cpu(ArrayD::from_elem(IxDyn(shape), bf16::from_f32(0.5)))
}

fn arg_of(e: Error) -> &'static str {
    match e {
        Error::Shape { arg, .. }
        | Error::Value { arg, .. }
        | Error::DType { arg, .. }
        | Error::DeviceMismatch { arg, .. } => arg,
        other => panic!("unexpected error {other}"),
    }
}

#[test]
fn cache_construction_errors_name_the_argument() {
    let cpu = Device::Cpu;
    assert_eq!(arg_of(KvCache::<bf16>::contiguous(0, 8, 1, 64, cpu).err().unwrap()), "shape");
    // head_dim not a multiple of 8.
    assert_eq!(arg_of(KvCache::<bf16>::contiguous(1, 8, 1, 60, cpu).err().unwrap()), "k");
    // Page size not a multiple of 64.
    assert_eq!(arg_of(KvCache::<bf16>::paged(4, 32, 1, 64, &[vec![0]], cpu).err().unwrap()), "k");
    // Page out of range, page used twice, sequence without pages.
    assert_eq!(arg_of(KvCache::<bf16>::paged(2, 64, 1, 64, &[vec![2]], cpu).err().unwrap()), "block_table");
    assert_eq!(arg_of(KvCache::<bf16>::paged(2, 64, 1, 64, &[vec![0], vec![0]], cpu).err().unwrap()), "block_table");
    assert_eq!(arg_of(KvCache::<bf16>::paged(2, 64, 1, 64, &[vec![]], cpu).err().unwrap()), "block_table");
    // Lengths over capacity, or of the wrong count.
    assert_eq!(arg_of(KvCache::from_contiguous(t(&[1, 8, 1, 64]), t(&[1, 8, 1, 64]), &[9]).err().unwrap()), "seqlens");
    assert_eq!(
        arg_of(KvCache::from_contiguous(t(&[1, 8, 1, 64]), t(&[1, 8, 1, 64]), &[1, 1]).err().unwrap()),
        "seqlens"
    );
    assert_eq!(arg_of(KvCache::from_contiguous(t(&[1, 8, 1, 64]), t(&[1, 9, 1, 64]), &[1]).err().unwrap()), "v");
    let f32_k = Tensor::Cpu(ArrayD::<f32>::zeros(IxDyn(&[1, 8, 1, 64])));
    let f32_v = Tensor::Cpu(ArrayD::<f32>::zeros(IxDyn(&[1, 8, 1, 64])));
    assert_eq!(arg_of(KvCache::from_contiguous(f32_k, f32_v, &[1]).err().unwrap()), "k");
}

#[test]
fn decode_errors_name_the_argument_and_leave_the_cache_alone() {
    let mut cache = KvCache::from_contiguous(t(&[2, 8, 2, 64]), t(&[2, 8, 2, 64]), &[6, 7]).unwrap();
    let opts = DecodeOptions::default();
    let q = t(&[2, 1, 4, 64]);
    // q: wrong batch, heads not a multiple of heads_kv, wrong head dim.
    for bad in [t(&[1, 1, 4, 64]), t(&[2, 1, 3, 64]), t(&[2, 1, 4, 32]), t(&[2, 0, 4, 64])] {
        assert_eq!(arg_of(decode(&bad, &mut cache, None, None, &opts).err().unwrap()), "q");
    }
    // New tokens: wrong shape; v unlike k; overflow of sequence 1 (7 + 2 > 8).
    let (k1, v1) = (t(&[2, 1, 2, 64]), t(&[2, 1, 2, 64]));
    assert_eq!(arg_of(decode(&q, &mut cache, Some((&t(&[2, 1, 1, 64]), &v1)), None, &opts).err().unwrap()), "k_new");
    assert_eq!(arg_of(decode(&q, &mut cache, Some((&k1, &t(&[2, 2, 2, 64]))), None, &opts).err().unwrap()), "v_new");
    let (k2, v2) = (t(&[2, 2, 2, 64]), t(&[2, 2, 2, 64]));
    assert_eq!(arg_of(decode(&q, &mut cache, Some((&k2, &v2)), None, &opts).err().unwrap()), "k_new");
    // Options.
    let bad = |a: AttentionOptions, n: Option<usize>| DecodeOptions { attention: a, num_splits: n };
    let o1 = bad(AttentionOptions { softmax_scale: Some(-1.0), ..Default::default() }, None);
    assert_eq!(arg_of(decode(&q, &mut cache, None, None, &o1).err().unwrap()), "softmax_scale");
    let o2 = bad(AttentionOptions { softcap: Some(f32::NAN), ..Default::default() }, None);
    assert_eq!(arg_of(decode(&q, &mut cache, None, None, &o2).err().unwrap()), "softcap");
    for n in [0, 129] {
        assert_eq!(
            arg_of(decode(&q, &mut cache, None, None, &bad(AttentionOptions::default(), Some(n))).err().unwrap()),
            "num_splits"
        );
    }
    // Rotary: tables too short for the positions, rot_dim over head_dim, more queries than tokens.
    let short = rotary_tables(4, 32, 10000.0, Device::Cpu).unwrap();
    let rot = Some(flashscan::attention::Rotary { tables: &short, style: RotaryStyle::NeoX });
    assert_eq!(arg_of(decode(&q, &mut cache, Some((&k1, &v1)), rot, &opts).err().unwrap()), "rotary.tables");
    let wide = rotary_tables(64, 128, 10000.0, Device::Cpu).unwrap();
    let rot = Some(flashscan::attention::Rotary { tables: &wide, style: RotaryStyle::NeoX });
    assert_eq!(arg_of(decode(&q, &mut cache, Some((&k1, &v1)), rot, &opts).err().unwrap()), "rotary.tables.cos");
    let ok = rotary_tables(64, 32, 10000.0, Device::Cpu).unwrap();
    let rot = Some(flashscan::attention::Rotary { tables: &ok, style: RotaryStyle::NeoX });
    assert_eq!(arg_of(decode(&t(&[2, 8, 4, 64]), &mut cache, Some((&k1, &v1)), rot, &opts).err().unwrap()), "q");
    // Nothing changed; a valid call then appends.
    assert_eq!(cache.seqlens(), &[6, 7]);
    decode(&q, &mut cache, Some((&k1, &v1)), rot, &opts).unwrap();
    assert_eq!(cache.seqlens(), &[7, 8]);
    // Full now: append refuses.
    assert_eq!(arg_of(cache.append(&k1, &v1, None).err().unwrap()), "k_new");
}
