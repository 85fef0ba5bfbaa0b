//! Everything the writer writes, the reader reads back unchanged.

use worker_gguf::{Array, GgmlType, GgufFile, GgufWriter, Value};

/// A deterministic byte pattern of length `n` (tests need no RNG crate).
fn pattern(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn every_value() -> Vec<(&'static str, Value)> {
    vec![
        ("t.u8", Value::U8(250)),
        ("t.i8", Value::I8(-7)),
        ("t.u16", Value::U16(65_000)),
        ("t.i16", Value::I16(-30_000)),
        ("t.u32", Value::U32(4_000_000_000)),
        ("t.i32", Value::I32(-2_000_000_000)),
        ("t.f32", Value::F32(-1.5e-7)),
        ("t.bool.true", Value::Bool(true)),
        ("t.bool.false", Value::Bool(false)),
        ("t.string", Value::from("héllo ▁wörld 🦀")),
        ("t.string.empty", Value::from("")),
        ("t.u64", Value::U64(u64::MAX)),
        ("t.i64", Value::I64(i64::MIN)),
        ("t.f64", Value::F64(std::f64::consts::PI)),
        ("t.array.u8", Value::from(vec![1u8, 2, 255])),
        ("t.array.i8", Value::from(vec![-1i8, 0, 127])),
        ("t.array.u16", Value::from(vec![1u16, 65_535])),
        ("t.array.i16", Value::from(vec![-1i16, 7])),
        ("t.array.u32", Value::from(vec![0u32, u32::MAX])),
        ("t.array.i32", Value::from(vec![-3i32, 3])),
        (
            "t.array.f32",
            Value::from(vec![0.5f32, -0.0, f32::INFINITY]),
        ),
        ("t.array.bool", Value::from(vec![true, false, true])),
        (
            "t.array.string",
            Value::from(vec!["a".to_string(), String::new(), "<0x0A>".to_string()]),
        ),
        ("t.array.u64", Value::from(vec![u64::MAX, 0])),
        ("t.array.i64", Value::from(vec![i64::MIN, i64::MAX])),
        ("t.array.f64", Value::from(vec![1e300f64, -2.5])),
        ("t.array.empty", Value::Array(Array::U32(Vec::new()))),
        (
            "t.array.nested",
            Value::Array(Array::Array(vec![
                Array::I32(vec![1, 2]),
                Array::String(vec!["x".to_string()]),
                Array::Array(vec![Array::F32(vec![1.0])]),
            ])),
        ),
    ]
}

#[test]
fn every_value_type_round_trips() {
    let mut w = GgufWriter::new();
    for (key, value) in every_value() {
        w.add(key, value).expect("add");
    }
    let file = GgufFile::from_bytes(w.to_bytes()).expect("read back");
    assert_eq!(file.version(), 3);
    let read: Vec<(String, Value)> = file
        .metadata()
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    let want: Vec<(String, Value)> = every_value()
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    assert_eq!(read, want);
    assert!(file.tensor_infos().is_empty());
}

#[test]
fn every_tensor_type_round_trips() {
    let mut w = GgufWriter::new();
    w.add("general.architecture", "test").expect("add");
    let mut expected = Vec::new();
    for (i, ty) in GgmlType::all().enumerate() {
        let row = ty.block_size() as u64 * 2;
        let dims: Vec<u64> = match i % 4 {
            0 => vec![row],
            1 => vec![row, 3],
            2 => vec![row, 2, 3],
            _ => vec![row, 1, 2, 2],
        };
        let n: u64 = dims.iter().product();
        let bytes = ty.bytes_for(n).expect("whole blocks") as usize;
        let data = pattern(bytes, i as u64 + 1);
        w.add_tensor(format!("t.{}", ty.name()), &dims, ty, data.clone())
            .expect("add tensor");
        expected.push((format!("t.{}", ty.name()), dims, ty, data));
    }
    let bytes = w.to_bytes();
    let file = GgufFile::from_bytes(bytes).expect("read back");
    assert_eq!(file.tensor_infos().len(), expected.len());
    for (info, (name, dims, ty, data)) in file.tensor_infos().iter().zip(&expected) {
        assert_eq!(&info.name, name);
        assert_eq!(&info.dims, dims);
        assert_eq!(info.ty, *ty);
        assert_eq!(info.offset % 32, 0, "{name} is aligned");
        assert_eq!(file.tensor(name).expect("tensor").data, &data[..], "{name}");
    }
}

#[test]
fn custom_alignment_is_recorded_and_honoured() {
    let mut w = GgufWriter::new();
    w.set_alignment(256).expect("alignment");
    w.add_f32("a", &[3], &[1.0, 2.0, 3.0]).expect("add");
    w.add_f32("b", &[5], &[4.0; 5]).expect("add");
    let file = GgufFile::from_bytes(w.to_bytes()).expect("read back");
    assert_eq!(file.header().alignment, 256);
    assert_eq!(file.header().data_offset % 256, 0);
    for t in file.tensor_infos() {
        assert_eq!(t.offset % 256, 0);
    }
    assert_eq!(file.dequantize("a").expect("a"), vec![1.0, 2.0, 3.0]);
    assert_eq!(file.dequantize("b").expect("b"), vec![4.0; 5]);
    assert!(w.set_alignment(48).is_err());
}

#[test]
fn writer_rejects_inconsistent_tensors() {
    let mut w = GgufWriter::new();
    assert!(
        w.add_tensor("x", &[32], GgmlType::Q4_0, vec![0; 17])
            .is_err()
    );
    assert!(
        w.add_tensor("x", &[33], GgmlType::Q4_0, vec![0; 18])
            .is_err()
    );
    assert!(w.add_tensor("x", &[], GgmlType::F32, vec![]).is_err());
    w.add_tensor("x", &[32], GgmlType::Q4_0, vec![0; 18])
        .expect("valid");
    assert!(
        w.add_tensor("x", &[32], GgmlType::Q4_0, vec![0; 18])
            .is_err()
    );
    assert!(w.add("k", 1u32).is_ok());
    assert!(w.add("k", 2u32).is_err());
}

#[test]
fn files_round_trip_through_disk() {
    let dir = std::env::temp_dir().join(format!("llorch-gguf-rt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let path = dir.join("m.gguf");
    let mut w = GgufWriter::new();
    w.add("general.architecture", "llama").expect("add");
    w.add_f32("w", &[4, 2], &[1., 2., 3., 4., 5., 6., 7., 8.])
        .expect("add");
    w.write_file(&path).expect("write");
    let file = GgufFile::open(&path).expect("open");
    assert_eq!(file.metadata().architecture().expect("arch"), "llama");
    assert_eq!(file.tensor("w").expect("w").info.n_rows(), 2);
    assert_eq!(std::fs::read(&path).expect("read"), w.to_bytes());
    std::fs::remove_dir_all(&dir).expect("cleanup");
}
