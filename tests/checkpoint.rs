//! The safetensors reader and writer: values and layout against hand-made files, dtype
//! conversion, and a typed error naming the tensor for every kind of broken file.

use flashscan::checkpoint::{Checkpoint, CheckpointWriter, StoredDType};
use flashscan::{DType, Error, bf16, f16};
use ndarray::{ArrayD, IxDyn, arr1, arr2};

mod io_common;
use io_common::{TempDir, err_of, pattern};

/// A safetensors file from a header written by hand and the data bytes.
fn raw_file(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

fn assert_checkpoint_error(e: &Error, tensor: Option<&str>, mentions: &str) {
    match e {
        Error::Checkpoint { tensor: t, what, .. } => {
            assert_eq!(t.as_deref(), tensor, "{e}");
            assert!(what.contains(mentions), "`{mentions}` not in: {e}");
        }
        other => panic!("expected a checkpoint error, got {other:?}"),
    }
    if let Some(t) = tensor {
        assert!(e.to_string().contains(t), "the message names the tensor: {e}");
    }
}

#[test]
fn reads_a_hand_made_file() {
    let header = r#"{"__metadata__":{"format":"pt"},
        "a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},
        "b":{"dtype":"BF16","shape":[1,2],"data_offsets":[8,12]},
        "c":{"dtype":"F16","shape":[],"data_offsets":[12,14]}}"#;
    let mut data = Vec::new();
    data.extend_from_slice(&1.5f32.to_le_bytes());
    data.extend_from_slice(&(-2.0f32).to_le_bytes());
    data.extend_from_slice(&[0x80, 0x3F, 0x40, 0xC0]); // bf16 1.0, -3.0
    data.extend_from_slice(&[0x00, 0x3C]); // f16 1.0
    let ckpt = Checkpoint::from_bytes(raw_file(header, &data), "hand-made").unwrap();

    assert_eq!(ckpt.names().collect::<Vec<_>>(), ["a", "b", "c"]);
    assert_eq!(ckpt.metadata().get("format").map(String::as_str), Some("pt"));
    assert_eq!(ckpt.get("a").unwrap(), arr1(&[1.5f32, -2.0]).into_dyn());
    assert_eq!(ckpt.get("b").unwrap(), arr2(&[[1.0f32, -3.0]]).into_dyn());
    assert_eq!(ckpt.get("c").unwrap(), ArrayD::from_elem(IxDyn(&[]), 1.0f32));
    let info = ckpt.info("b").unwrap();
    assert_eq!((info.dtype.clone(), info.shape.clone(), info.data_offsets), (StoredDType::BF16, vec![1, 2], (8, 12)));
}

#[test]
fn writer_layout_is_the_format() {
    let mut w = CheckpointWriter::new();
    w.add("x", &arr1(&[1.0f32, 2.0]), DType::F32).unwrap();
    w.add("y", &arr1(&[-3.0f32]), DType::BF16).unwrap();
    let bytes = w.to_bytes();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    assert_eq!(n % 8, 0, "the header is padded so the data starts 8-byte aligned");
    let json: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    assert_eq!(json["x"]["dtype"], "F32");
    assert_eq!(json["x"]["data_offsets"], serde_json::json!([0, 8]));
    assert_eq!(json["y"]["dtype"], "BF16");
    assert_eq!(json["y"]["shape"], serde_json::json!([1]));
    assert_eq!(json["y"]["data_offsets"], serde_json::json!([8, 10]));
    let mut data = 1.0f32.to_le_bytes().to_vec();
    data.extend_from_slice(&2.0f32.to_le_bytes());
    data.extend_from_slice(&[0x40, 0xC0]);
    assert_eq!(&bytes[8 + n..], &data[..]);
}

#[test]
fn round_trips_every_dtype_through_a_file() {
    let dir = TempDir::new("ckpt-roundtrip");
    let path = dir.join("t.safetensors");
    let a = pattern(&[3, 4, 5], 1);
    // Values that f16 / bf16 must round: the reader returns exactly the rounded value.
    let odd = ArrayD::from_shape_vec(IxDyn(&[4]), vec![0.1f32, -1.0e-3, 3.3, 60000.0]).unwrap();
    let transposed = a.t().to_owned(); // written from a non-standard layout view below
    let mut w = CheckpointWriter::new();
    w.metadata("note", "test");
    w.add("f32", &a, DType::F32).unwrap();
    w.add("bf16", &odd, DType::BF16).unwrap();
    w.add("f16", &odd, DType::F16).unwrap();
    w.add("view", &a.t(), DType::F32).unwrap();
    w.add("empty", &ArrayD::<f32>::zeros(IxDyn(&[0, 3])), DType::F32).unwrap();
    w.write(&path).unwrap();

    let ckpt = Checkpoint::open(&path).unwrap();
    assert_eq!(ckpt.len(), 5);
    assert_eq!(ckpt.metadata().get("note").map(String::as_str), Some("test"));
    assert_eq!(ckpt.get("f32").unwrap(), a);
    assert_eq!(ckpt.get("view").unwrap(), transposed);
    assert_eq!(ckpt.get("bf16").unwrap(), odd.mapv(|x| bf16::from_f32(x).to_f32()));
    assert_eq!(ckpt.get("f16").unwrap(), odd.mapv(|x| f16::from_f32(x).to_f32()));
    assert_ne!(ckpt.get("bf16").unwrap(), odd, "bf16 really rounds");
    assert_eq!(ckpt.get("empty").unwrap().shape(), &[0, 3]);
    assert_eq!(ckpt.info("bf16").unwrap().dtype, StoredDType::BF16);
    assert_eq!(ckpt.expect_shape("f32", &[3, 4, 5]).unwrap(), a);
}

#[test]
fn wrong_shape_names_tensor_and_both_shapes() {
    let mut w = CheckpointWriter::new();
    w.add("h.0.w", &pattern(&[4, 6], 0), DType::F32).unwrap();
    let ckpt = Checkpoint::from_bytes(w.to_bytes(), "mem").unwrap();
    let e = err_of(ckpt.expect_shape("h.0.w", &[4, 5]));
    assert!(
        matches!(&e, Error::TensorShape { tensor, got, expected, .. }
            if tensor == "h.0.w" && got == &vec![4, 6] && expected == "[4, 5]"),
        "{e:?}"
    );
    let msg = e.to_string();
    assert!(msg.contains("`h.0.w`") && msg.contains("[4, 6]") && msg.contains("[4, 5]"), "{msg}");
}

#[test]
fn missing_tensor_is_named() {
    let mut w = CheckpointWriter::new();
    w.add("present", &pattern(&[2], 0), DType::F32).unwrap();
    let ckpt = Checkpoint::from_bytes(w.to_bytes(), "mem").unwrap();
    assert_checkpoint_error(&err_of(ckpt.get("absent")), Some("absent"), "not in the file");
    assert_checkpoint_error(&err_of(ckpt.expect_shape("absent", &[2])), Some("absent"), "not in the file");
    assert_checkpoint_error(&err_of(ckpt.shape("absent")), Some("absent"), "not in the file");
}

#[test]
fn truncated_file_names_the_first_tensor_cut_off() {
    let dir = TempDir::new("ckpt-truncated");
    let path = dir.join("t.safetensors");
    let mut w = CheckpointWriter::new();
    // Sorted names differ from file order: the error follows the file order.
    w.add("z_first", &pattern(&[16], 0), DType::F32).unwrap();
    w.add("a_second", &pattern(&[16], 1), DType::F32).unwrap();
    w.add("m_third", &pattern(&[16], 2), DType::F32).unwrap();
    let bytes = w.to_bytes();
    // Cut into the second tensor's bytes.
    std::fs::write(&path, &bytes[..bytes.len() - 64 - 10]).unwrap();
    let e = err_of(Checkpoint::open(&path));
    assert_checkpoint_error(&e, Some("a_second"), "truncated");
    assert!(e.to_string().contains(&path.display().to_string()), "the message names the file: {e}");

    // Cut inside the header: no tensor to name, but the reason is given.
    let e = err_of(Checkpoint::from_bytes(bytes[..20].to_vec(), "short"));
    assert_checkpoint_error(&e, None, "truncated");
    let e = err_of(Checkpoint::from_bytes(bytes[..5].to_vec(), "tiny"));
    assert_checkpoint_error(&e, None, "too short");
}

#[test]
fn bad_header_json_is_a_clear_error() {
    let e = err_of(Checkpoint::from_bytes(raw_file(r#"{"a": {"dtype": "F32", "#, &[]), "bad.json"));
    assert_checkpoint_error(&e, None, "not valid JSON");
    assert!(e.to_string().starts_with("checkpoint bad.json: "), "{e}");

    let e = err_of(Checkpoint::from_bytes(raw_file("[1, 2]", &[]), "list"));
    assert_checkpoint_error(&e, None, "not an object");

    let e = err_of(Checkpoint::from_bytes(raw_file(r#"{"__metadata__": 3}"#, &[]), "meta"));
    assert_checkpoint_error(&e, None, "__metadata__");

    // A length prefix that is not one (say, another format's magic bytes).
    let mut bytes = u64::MAX.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{}");
    assert_checkpoint_error(&err_of(Checkpoint::from_bytes(bytes, "huge")), None, "limit of 100 MB");
}

#[test]
fn malformed_entries_name_the_tensor() {
    let cases = [
        (r#"{"w": {"shape": [1], "data_offsets": [0, 4]}}"#, "`dtype`"),
        (r#"{"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}"#, "`shape`"),
        (r#"{"w": {"dtype": "F32", "shape": [1], "data_offsets": [0]}}"#, "`data_offsets`"),
        (r#"{"w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}}"#, "begin is after its end"),
        (r#"{"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}"#, "needs 8 bytes"),
        (r#"{"w": 5}"#, "not an object"),
    ];
    for (header, mentions) in cases {
        let e = err_of(Checkpoint::from_bytes(raw_file(header, &[0; 8]), "mem"));
        assert_checkpoint_error(&e, Some("w"), mentions);
    }
}

#[test]
fn unsupported_dtype_is_reported_when_read() {
    let header = r#"{"ids": {"dtype": "I64", "shape": [2], "data_offsets": [0, 16]},
                     "w": {"dtype": "F32", "shape": [1], "data_offsets": [16, 20]}}"#;
    let mut data = vec![0u8; 16];
    data.extend_from_slice(&7.0f32.to_le_bytes());
    let ckpt = Checkpoint::from_bytes(raw_file(header, &data), "mem").unwrap();
    assert_eq!(ckpt.get("w").unwrap(), arr1(&[7.0f32]).into_dyn(), "the other tensors still read");
    assert_eq!(ckpt.info("ids").unwrap().dtype, StoredDType::Other("I64".into()));
    let e = err_of(ckpt.get("ids"));
    assert_checkpoint_error(&e, Some("ids"), "not supported");
    assert!(e.to_string().contains("I64"), "{e}");

    // The size of a known non-float dtype is still checked.
    let header = r#"{"ids": {"dtype": "I64", "shape": [2], "data_offsets": [0, 8]}}"#;
    assert_checkpoint_error(&err_of(Checkpoint::from_bytes(raw_file(header, &[0; 8]), "m")), Some("ids"), "needs 16");
}

#[test]
fn missing_file_and_bad_writer_names() {
    let dir = TempDir::new("ckpt-missing");
    let e = err_of(Checkpoint::open(dir.join("nope.safetensors")));
    assert_checkpoint_error(&e, None, "cannot be read");

    let mut w = CheckpointWriter::new();
    w.add("x", &arr1(&[1.0f32]), DType::F32).unwrap();
    assert!(matches!(err_of(w.add("x", &arr1(&[1.0f32]), DType::F32)), Error::Value { arg: "name", .. }));
    assert!(matches!(err_of(w.add("__metadata__", &arr1(&[1.0f32]), DType::F32)), Error::Value { arg: "name", .. }));
    let e = err_of(w.write(dir.join("no-such-dir").join("x.safetensors")));
    assert_checkpoint_error(&e, None, "cannot be written");
}
