//! Malformed files: every one is a typed error, none a panic.

use worker_gguf::{GgmlType, GgufError, GgufFile, GgufWriter, parse_header};

/// Builds raw header bytes field by field, so a test can write exactly the
/// malformation it is about (the real writer refuses to).
#[derive(Default)]
struct Raw(Vec<u8>);

impl Raw {
    fn header(version: u32, n_tensors: u64, n_kv: u64) -> Raw {
        Raw::default()
            .bytes(b"GGUF")
            .u32(version)
            .u64(n_tensors)
            .u64(n_kv)
    }
    fn bytes(mut self, b: &[u8]) -> Raw {
        self.0.extend_from_slice(b);
        self
    }
    fn u32(self, v: u32) -> Raw {
        self.bytes(&v.to_le_bytes())
    }
    fn u64(self, v: u64) -> Raw {
        self.bytes(&v.to_le_bytes())
    }
    fn string(self, s: &[u8]) -> Raw {
        self.u64(s.len() as u64).bytes(s)
    }
    /// A key with a u32 value.
    fn kv_u32(self, key: &str, v: u32) -> Raw {
        self.string(key.as_bytes()).u32(4).u32(v)
    }
    fn tensor(self, name: &str, dims: &[u64], type_id: u32, offset: u64) -> Raw {
        let mut r = self.string(name.as_bytes()).u32(dims.len() as u32);
        for &d in dims {
            r = r.u64(d);
        }
        r.u32(type_id).u64(offset)
    }
    /// Pads to 32 and appends `n` data bytes.
    fn data(mut self, n: usize) -> Raw {
        while !self.0.len().is_multiple_of(32) {
            self.0.push(0);
        }
        self.0.extend(std::iter::repeat_n(0xAB, n));
        self
    }
    fn parse(&self) -> Result<(), GgufError> {
        parse_header(&self.0).map(|_| ())
    }
}

fn err(raw: Raw) -> GgufError {
    match raw.parse() {
        Ok(()) => panic!("a malformed file was accepted"),
        Err(e) => {
            // Every error renders to a message that says something.
            assert!(e.to_string().len() > 10, "{e:?}");
            e
        }
    }
}

#[test]
fn wrong_magic() {
    let e = err(Raw::default().bytes(b"GGML").u32(3).u64(0).u64(0));
    assert!(matches!(e, GgufError::BadMagic { found } if &found == b"GGML"));
}

#[test]
fn unsupported_versions() {
    assert!(matches!(
        err(Raw::header(1, 0, 0)),
        GgufError::UnsupportedVersion { version: 1 }
    ));
    assert!(matches!(
        err(Raw::header(4, 0, 0)),
        GgufError::UnsupportedVersion { version: 4 }
    ));
    assert!(matches!(
        err(Raw::header(3u32.swap_bytes(), 0, 0)),
        GgufError::BigEndian
    ));
    assert!(Raw::header(2, 0, 0).parse().is_ok());
    assert!(Raw::header(3, 0, 0).parse().is_ok());
}

#[test]
fn counts_beyond_the_file_allocate_nothing() {
    assert!(matches!(
        err(Raw::header(3, u64::MAX, 0)),
        GgufError::CountBeyondFile { .. }
    ));
    assert!(matches!(
        err(Raw::header(3, 0, 1 << 40)),
        GgufError::CountBeyondFile { .. }
    ));
    // An array of 2^60 u32 in a file of a few bytes.
    let raw = Raw::header(3, 0, 1).string(b"k").u32(9).u32(4).u64(1 << 60);
    assert!(matches!(err(raw), GgufError::CountBeyondFile { .. }));
    // An array of strings whose count times the 8-byte length prefix overflows.
    let raw = Raw::header(3, 0, 1)
        .string(b"k")
        .u32(9)
        .u32(8)
        .u64(u64::MAX / 4);
    assert!(matches!(err(raw), GgufError::CountBeyondFile { .. }));
}

#[test]
fn string_lengths_beyond_the_file() {
    let raw = Raw::header(3, 0, 1)
        .u64(u64::MAX)
        .bytes(b"abcdefghijklmnop");
    assert!(matches!(err(raw), GgufError::Truncated { .. }));
    let raw = Raw::header(3, 0, 1)
        .string(b"k")
        .u32(8)
        .u64(1000)
        .bytes(b"short");
    assert!(matches!(err(raw), GgufError::Truncated { .. }));
}

#[test]
fn bad_values() {
    let raw = Raw::header(3, 0, 1).string(b"k").u32(13).u32(0);
    assert!(matches!(
        err(raw),
        GgufError::UnknownValueType { type_id: 13, .. }
    ));
    let raw = Raw::header(3, 0, 1).string(b"k").u32(9).u32(77).u64(0);
    assert!(matches!(
        err(raw),
        GgufError::UnknownValueType { type_id: 77, .. }
    ));
    let raw = Raw::header(3, 0, 1).string(b"k").u32(7).bytes(&[2]);
    assert!(matches!(err(raw), GgufError::InvalidBool { byte: 2, .. }));
    let raw = Raw::header(3, 0, 1)
        .string(&[b'k', 0xFF, 0xFE])
        .u32(4)
        .u32(1);
    assert!(matches!(err(raw), GgufError::InvalidUtf8 { .. }));
    let raw = Raw::header(3, 0, 1).string(b"k").u32(8).string(&[0xC3]);
    assert!(matches!(err(raw), GgufError::InvalidUtf8 { .. }));
    let raw = Raw::header(3, 0, 2).kv_u32("k", 1).kv_u32("k", 2);
    assert!(matches!(err(raw), GgufError::DuplicateKey { .. }));
}

#[test]
fn nesting_is_bounded() {
    // Nested arrays, each holding one array, deeper than the limit.
    let mut raw = Raw::header(3, 0, 1).string(b"deep").u32(9);
    for _ in 0..64 {
        raw = raw.u32(9).u64(1);
    }
    let raw = raw.u32(4).u64(0);
    assert!(matches!(err(raw), GgufError::NestingTooDeep { .. }));
}

#[test]
fn bad_alignment() {
    for a in [0u32, 3, 48] {
        let raw = Raw::header(3, 0, 1).kv_u32("general.alignment", a);
        assert!(matches!(err(raw), GgufError::BadAlignment { .. }), "{a}");
    }
    let raw = Raw::header(3, 0, 1)
        .string(b"general.alignment")
        .u32(8)
        .string(b"32");
    assert!(matches!(err(raw), GgufError::BadAlignment { .. }));
    assert!(
        Raw::header(3, 0, 1)
            .kv_u32("general.alignment", 64)
            .parse()
            .is_ok()
    );
}

#[test]
fn bad_shapes() {
    let one = |dims: &[u64], ty: u32| Raw::header(3, 1, 0).tensor("t", dims, ty, 0).data(4096);
    assert!(matches!(
        err(one(&[1, 1, 1, 1, 1], 0)),
        GgufError::TooManyDims { n_dims: 5, .. }
    ));
    assert!(matches!(err(one(&[4, 0], 0)), GgufError::EmptyShape { .. }));
    assert!(matches!(err(one(&[], 0)), GgufError::EmptyShape { .. }));
    assert!(matches!(
        err(one(&[1 << 40, 1 << 40], 0)),
        GgufError::ShapeOverflow { .. }
    ));
    assert!(matches!(
        err(one(&[u64::MAX], 0)),
        GgufError::ShapeOverflow { .. }
    ));
    assert!(matches!(
        err(one(&[8], 99)),
        GgufError::UnknownTensorType { type_id: 99, .. }
    ));
    assert!(matches!(
        err(one(&[33, 2], GgmlType::Q4_0.id())),
        GgufError::NotBlockMultiple {
            ne0: 33,
            block: 32,
            ..
        }
    ));
    // A huge dimension count would be checked before any dims are read.
    let raw = Raw::header(3, 1, 0).string(b"t").u32(u32::MAX).data(64);
    assert!(matches!(err(raw), GgufError::TooManyDims { .. }));
    assert!(one(&[32, 2], GgmlType::Q4_0.id()).parse().is_ok());
}

#[test]
fn bad_data_placement() {
    let t = |off: u64| Raw::header(3, 1, 0).tensor("t", &[8], 0, off).data(64);
    assert!(matches!(err(t(4)), GgufError::Misaligned { offset: 4, .. }));
    assert!(matches!(err(t(64)), GgufError::DataOutOfBounds { .. }));
    assert!(matches!(
        err(t(u64::MAX - 31)),
        GgufError::DataOutOfBounds { .. }
    ));
    assert!(t(32).parse().is_ok());

    let overlapping = Raw::header(3, 2, 0)
        .tensor("a", &[16], 0, 0)
        .tensor("b", &[8], 0, 32)
        .data(128);
    assert!(matches!(
        err(overlapping),
        GgufError::OverlappingData { .. }
    ));
    let duplicate = Raw::header(3, 2, 0)
        .tensor("a", &[8], 0, 0)
        .tensor("a", &[8], 0, 32)
        .data(128);
    assert!(matches!(err(duplicate), GgufError::DuplicateTensor { .. }));
}

/// A small valid file with metadata of several types and three tensors.
fn small_file() -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.add("general.architecture", "llama").expect("add");
    w.add("llama.block_count", 2u32).expect("add");
    w.add(
        "tokenizer.ggml.tokens",
        vec!["a".to_string(), "bc".to_string()],
    )
    .expect("add");
    w.add("k.f32s", vec![1.0f32, 2.0]).expect("add");
    w.add("k.flag", true).expect("add");
    w.add_f32("a", &[4], &[1.0, 2.0, 3.0, 4.0]).expect("add");
    w.add_tensor("q", &[32, 2], GgmlType::Q4_0, vec![7; 36])
        .expect("add");
    w.add_f32("b", &[3], &[5.0, 6.0, 7.0]).expect("add");
    w.to_bytes()
}

#[test]
fn truncated_at_every_byte_is_an_error() {
    let full = small_file();
    let header = parse_header(&full).expect("the full file is valid");
    let data_end = header.data_end() as usize;
    assert!(data_end <= full.len());
    for cut in 0..data_end {
        match parse_header(&full[..cut]) {
            Ok(_) => panic!("a file cut at {cut} of {data_end} bytes was accepted"),
            Err(e) => assert!(
                matches!(
                    e,
                    GgufError::Truncated { .. }
                        | GgufError::CountBeyondFile { .. }
                        | GgufError::DataOutOfBounds { .. }
                ),
                "cut at {cut}: unexpected {e:?}"
            ),
        }
    }
    // Only the padding after the last tensor may be missing.
    for cut in data_end..=full.len() {
        assert!(parse_header(&full[..cut]).is_ok(), "cut at {cut}");
    }
}

#[test]
fn every_single_byte_corruption_is_handled() {
    // Flipping any byte of the header either still parses or gives an error;
    // this is a cheap, deterministic complement to the fuzz target.
    let full = small_file();
    let header_len = parse_header(&full).expect("valid").data_offset as usize;
    for i in 0..header_len {
        for flip in [0x01u8, 0x80, 0xFF] {
            let mut bad = full.clone();
            bad[i] ^= flip;
            if let Ok(file) = GgufFile::from_bytes(bad) {
                for t in file.tensors() {
                    assert_eq!(t.data.len() as u64, t.info.n_bytes);
                }
            }
        }
    }
}

#[test]
fn open_reports_missing_and_empty_files() {
    let dir = std::env::temp_dir().join(format!("llorch-gguf-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let missing = dir.join("missing.gguf");
    assert!(matches!(
        GgufFile::open(&missing),
        Err(GgufError::Io { .. })
    ));
    let empty = dir.join("empty.gguf");
    std::fs::write(&empty, b"").expect("write");
    assert!(matches!(
        GgufFile::open(&empty),
        Err(GgufError::Truncated { .. })
    ));
    std::fs::remove_dir_all(&dir).expect("cleanup");
}
