use super::*;
use crate::arch::{ArchOptions, ArchSpec};
use std::time::Instant;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{}/tests/fixtures/pth/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

/// tests/fixtures/pth/expected.json: name -> (shape, values), as PyTorch reads the files back.
fn expected() -> Vec<(String, Vec<usize>, Vec<f64>)> {
    let v: serde_json::Value = serde_json::from_slice(&fixture("expected.json")).unwrap();
    v.as_object()
        .unwrap()
        .iter()
        .map(|(k, t)| {
            let shape = t["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
            let vals = t["values"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
            (k.clone(), shape, vals)
        })
        .collect()
}

#[test]
fn zip_and_legacy_pth_read_as_pytorch_reads_them() {
    for file in ["zip.pth", "legacy.pth"] {
        let bytes = fixture(file);
        let mut sd = parse_state_dict(file, &bytes).unwrap();
        let want = expected();
        assert_eq!(sd.tensors.len(), want.len(), "{file}");
        for (name, shape, vals) in &want {
            let t = sd.get(name).unwrap_or_else(|| panic!("{file}: {name} missing"));
            assert_eq!(&t.shape, shape, "{file}: {name}");
            let got: Vec<f64> = t.data.iter().map(|&x| x as f64).collect();
            // every value is exact in f32 except the f64 tensor's 1e-3
            for (g, w) in got.iter().zip(vals) {
                assert!((g - w).abs() <= 1e-7 * w.abs().max(1.0), "{file}: {name}: {got:?} vs {vals:?}");
            }
        }
        // the transposed view was gathered through its strides
        assert_eq!(sd.get("module.t.weight").unwrap().data, vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
        assert_eq!(sd.strip_prefix(), "module.");
        assert!(sd.get("conv1.weight").is_some() && sd.get("bn.num_batches_tracked").is_some());
    }
}

#[test]
fn a_legacy_file_with_optimizer_state_reads() {
    // the optimizer's f64 / i64 storages sit among the state_dict's in the file
    let sd = parse_state_dict("legacy_optim.pth", &fixture("legacy_optim.pth")).unwrap();
    assert_eq!(sd.tensors.len(), expected().len());
    assert_eq!(sd.get("module.t.weight").unwrap().data, vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
}

#[test]
fn a_pickle_that_calls_os_system_is_refused_by_name_and_not_run() {
    let _ = std::fs::remove_file("/tmp/resnet-evil-ran");
    let e = parse_state_dict("evil.pth", &fixture("evil.pth")).unwrap_err().to_string();
    assert!(e.contains("refused global posix.system"), "{e}");
    assert!(e.starts_with("evil.pth:evil/data.pkl: byte "), "{e}");
    assert!(!Path::new("/tmp/resnet-evil-ran").exists());
}

#[test]
fn every_prefix_truncation_is_a_clear_error() {
    // the zip reader finds the central directory at the end: every cut loses it
    for file in ["zip.pth", "legacy.pth"] {
        let bytes = fixture(file);
        for len in 0..bytes.len() {
            let t = Instant::now();
            let r = parse_state_dict(file, &bytes[..len]);
            let e = r.expect_err(&format!("{file} cut at {len} parsed")).to_string();
            assert!(e.starts_with(file), "{file} at {len}: {e}");
            assert!(t.elapsed().as_secs_f64() < 1.0);
        }
    }
}

/// A safetensors file with the given header and `data` bytes.
fn st_file(header: &str, data: &[u8]) -> Vec<u8> {
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header.as_bytes());
    b.extend_from_slice(data);
    b
}

#[test]
fn hostile_safetensors_headers_are_refused_without_allocating() {
    let ok = st_file(r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, &[0; 8]);
    assert_eq!(parse_state_dict("ok", &ok).unwrap().get("a").unwrap().data, vec![0.0, 0.0]);
    let mut huge = (1u64 << 62).to_le_bytes().to_vec();
    huge.extend_from_slice(b"{\"a\":1}");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("header of 2^62 bytes", huge),
        ("data beyond the file", st_file(r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, &[0; 4])),
        (
            "offsets past the end",
            st_file(
                r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4611686018427387904,4611686018427387908]}}"#,
                &[0; 4],
            ),
        ),
        (
            "overlapping tensors",
            st_file(
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
                &[0; 12],
            ),
        ),
        ("shape and bytes disagree", st_file(r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#, &[0; 8])),
        (
            "huge shape",
            st_file(r#"{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}}"#, &[0; 8]),
        ),
        ("not JSON", st_file("{nope", &[])),
    ];
    for (what, bytes) in cases {
        let t = Instant::now();
        let e = parse_state_dict("f.safetensors", &bytes).expect_err(what).to_string();
        assert!(e.starts_with("f.safetensors: "), "{what}: {e}");
        assert!(t.elapsed().as_secs_f64() < 1.0, "{what}");
    }
    for len in 0..ok.len() {
        assert!(parse_state_dict("cut", &ok[..len]).is_err(), "cut at {len}");
    }
}

#[test]
fn half_precision_conversion() {
    assert_eq!(f16_to_f32(0x3c00), 1.0);
    assert_eq!(f16_to_f32(0xc000), -2.0);
    assert_eq!(f16_to_f32(0x7bff), 65504.0);
    assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
    assert_eq!(f16_to_f32(0x0200), 2f32.powi(-15));
    assert!(f16_to_f32(0x7e00).is_nan());
    assert_eq!(f16_to_f32(0xfc00), f32::NEG_INFINITY);
}

#[test]
fn loading_reports_every_mismatch_by_key() {
    let spec = ArchSpec::parse("resnet20", &ArchOptions::default()).unwrap();
    let src = Net::new(&spec, 1, 32, 32, false, 3).unwrap();
    let mut sd = StateDict::of_net(&src);
    let mut dst = Net::new(&spec, 1, 32, 32, false, 4).unwrap();
    // a clean load copies everything
    load_into(&mut dst, &sd).unwrap();
    assert_eq!(dst.params(), src.params());
    assert_eq!(dst.stats, src.stats);
    // drop one, add one, reshape one: all three reported, nothing copied
    sd.tensors.retain(|(n, _)| n != "layer2.1.bn1.bias");
    sd.tensors.push(("head.weight".into(), Tensor { shape: vec![1], data: vec![0.0] }));
    sd.tensors.push(("bn1.num_batches_tracked".into(), Tensor { shape: vec![], data: vec![5.0] }));
    let fc = sd.tensors.iter_mut().find(|(n, _)| n == "fc.weight").unwrap();
    fc.1 = Tensor { shape: vec![5, 64], data: vec![0.0; 320] };
    let mut fresh = Net::new(&spec, 1, 32, 32, false, 5).unwrap();
    let before = fresh.params().to_vec();
    let m = load_into(&mut fresh, &sd).unwrap_err();
    assert_eq!(m.missing, vec!["layer2.1.bn1.bias"]);
    assert_eq!(m.unexpected, vec!["head.weight"]);
    assert_eq!(m.wrong_shape, vec![("fc.weight".to_string(), vec![10, 64], vec![5, 64])]);
    assert_eq!(fresh.params(), &before[..]);
    let text = m.to_string();
    assert!(text.contains("layer2.1.bn1.bias") && text.contains("network [10, 64], file [5, 64]"), "{text}");
}

#[test]
fn safetensors_round_trip_and_prefixes() {
    let spec = ArchSpec::parse("resnet20", &ArchOptions::default()).unwrap();
    let net = Net::new(&spec, 1, 32, 32, false, 9).unwrap();
    let mut sd = StateDict::of_net(&net);
    for (n, _) in &mut sd.tensors {
        *n = format!("model.backbone.{n}");
    }
    let bytes = safetensors_bytes(&sd, None).unwrap();
    let mut back = parse_state_dict("x", &bytes).unwrap();
    assert_eq!(back.strip_prefix(), "model.backbone.");
    let mut want = StateDict::of_net(&net).tensors;
    want.sort_by(|a, b| a.0.cmp(&b.0));
    back.tensors.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(back.tensors == want, "tensors differ after a round trip");
}

#[test]
fn truncated_checkpoints_are_clear_errors() {
    use crate::data::augment::Preprocess;
    use crate::weights::checkpoint::{self, Meta};
    let spec =
        ArchSpec::parse("resnet8", &ArchOptions { classes: Some(2), in_channels: Some(1), ..Default::default() })
            .unwrap();
    let net = Net::new(&spec, 1, 8, 8, false, 0).unwrap();
    let pre = Preprocess { src: (8, 8, 1), size: 8, mean: vec![0.5; 64], crop_pad: 0, flip: false };
    let meta = Meta { iteration: 1, ..Meta::new(spec.clone(), vec!["a".into(), "b".into()], (8, 8, 1), 8) };
    let bytes = checkpoint::to_bytes(&net, Some(&vec![0.0; net.params().len()]), &pre, &meta).unwrap();
    let p = Path::new("ck.safetensors");
    checkpoint::parse(p, &bytes).unwrap();
    // every cut in the header and the first 4 KiB of data, at every tensor boundary (+-1) and every 61st
    // byte elsewhere: the readers check the header's total against the file length, so every cut in the
    // data fails the same way (checking all 600k lengths would take a minute)
    let header = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let base = bytes.as_ptr() as usize;
    let mut lens: Vec<usize> = (0..header + 4096).chain((0..bytes.len()).step_by(61)).collect();
    for (_, v) in st.tensors() {
        let start = v.data().as_ptr() as usize - base;
        lens.extend([start - 1, start, start + 1, start + v.data().len() - 1]);
    }
    lens.push(bytes.len() - 1);
    lens.retain(|&l| l < bytes.len());
    let t = Instant::now();
    for len in lens {
        let e = match checkpoint::parse(p, &bytes[..len]) {
            Ok(_) => panic!("a checkpoint cut at {len} of {} parsed", bytes.len()),
            Err(e) => e.to_string(),
        };
        assert!(e.starts_with("ck.safetensors: "), "cut at {len}: {e}");
        assert!(parse_state_dict("ck.safetensors", &bytes[..len]).is_err());
    }
    assert!(t.elapsed().as_secs_f64() < 60.0);
}

/// Pickle opcodes for an int (BININT or LONG1).
fn pk_int(v: u64) -> Vec<u8> {
    if v < (1 << 31) {
        let mut b = vec![b'J'];
        b.extend_from_slice(&(v as u32).to_le_bytes());
        b
    } else {
        let mut b = vec![0x8a, 8];
        b.extend_from_slice(&v.to_le_bytes());
        b
    }
}

fn pk_str(s: &str) -> Vec<u8> {
    let mut b = vec![b'X'];
    b.extend_from_slice(&(s.len() as u32).to_le_bytes());
    b.extend_from_slice(s.as_bytes());
    b
}

/// A state_dict pickle of 1-D tensors: (name, storage key, numel declared, size, dtype storage class).
fn state_dict_pickle(tensors: &[(&str, &str, u64, u64, &str)]) -> Vec<u8> {
    let mut p = b"\x80\x02ccollections\nOrderedDict\n)R(".to_vec();
    for &(name, key, numel, size, class) in tensors {
        p.extend(pk_str(name));
        p.extend_from_slice(b"ctorch._utils\n_rebuild_tensor_v2\n((");
        p.extend(pk_str("storage"));
        p.extend_from_slice(format!("ctorch\n{class}\n").as_bytes());
        p.extend(pk_str(key));
        p.extend(pk_str("cpu"));
        p.extend(pk_int(numel));
        p.extend_from_slice(b"tQ");
        p.extend(pk_int(0));
        p.push(b'(');
        p.extend(pk_int(size));
        p.extend_from_slice(b"t(");
        p.extend(pk_int(1));
        p.extend_from_slice(b"t\x89ccollections\nOrderedDict\n)RtR");
    }
    p.extend_from_slice(b"u.");
    p
}

/// A torch.save zip: archive/data.pkl, archive/byteorder and the storages.
fn pth_zip(pkl: &[u8], storages: &[(&str, &[u8])], method: zip::CompressionMethod) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let o = zip::write::SimpleFileOptions::default().compression_method(method);
    use std::io::Write;
    w.start_file("archive/data.pkl", o).unwrap();
    w.write_all(pkl).unwrap();
    w.start_file("archive/byteorder", o).unwrap();
    w.write_all(b"little").unwrap();
    for (k, b) in storages {
        w.start_file(format!("archive/data/{k}"), o).unwrap();
        w.write_all(b).unwrap();
    }
    w.finish().unwrap().into_inner()
}

#[test]
fn hostile_pth_sizes_are_refused_before_allocating() {
    let stored = zip::CompressionMethod::Stored;
    let four = [0u8; 16];
    // the well-formed file reads
    let ok = pth_zip(&state_dict_pickle(&[("a", "0", 4, 4, "FloatStorage")]), &[("0", &four)], stored);
    assert_eq!(parse_state_dict("ok.pth", &ok).unwrap().get("a").unwrap().data, vec![0.0; 4]);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "a storage declaring 2^40 elements",
            pth_zip(&state_dict_pickle(&[("a", "0", 1 << 40, 1 << 40, "FloatStorage")]), &[("0", &four)], stored),
            "holds 16 bytes",
        ),
        (
            "one key declared twice with different sizes",
            pth_zip(
                &state_dict_pickle(&[("a", "0", 4, 4, "FloatStorage"), ("b", "0", 1 << 40, 1 << 40, "FloatStorage")]),
                &[("0", &four)],
                stored,
            ),
            "declared again",
        ),
        (
            "a compressed member",
            pth_zip(
                &state_dict_pickle(&[("a", "0", 4, 4, "FloatStorage")]),
                &[("0", &four)],
                zip::CompressionMethod::Deflated,
            ),
            "compressed",
        ),
        (
            "a view beyond its storage",
            pth_zip(&state_dict_pickle(&[("a", "0", 4, 5, "FloatStorage")]), &[("0", &four)], stored),
            "reaches beyond its storage",
        ),
    ];
    for (what, bytes, want) in cases {
        let t = Instant::now();
        let e = format!("{:#}", parse_state_dict("h.pth", &bytes).expect_err(what));
        assert!(e.contains(want) && e.starts_with("h.pth"), "{what}: {e}");
        assert!(t.elapsed().as_secs_f64() < 1.0, "{what}");
    }
    // a repeated key keeps the last tensor, as Python does
    let two = pth_zip(
        &state_dict_pickle(&[("a", "0", 4, 4, "FloatStorage"), ("a", "1", 2, 2, "DoubleStorage")]),
        &[("0", &four), ("1", &[0u8; 16])],
        stored,
    );
    let sd = parse_state_dict("two.pth", &two).unwrap();
    assert_eq!((sd.tensors.len(), sd.get("a").unwrap().shape.clone()), (1, vec![2]));
}

#[test]
fn checkpoints_with_inconsistent_metadata_are_refused() {
    use crate::data::augment::Preprocess;
    use crate::weights::checkpoint::{self, Meta};
    let spec =
        ArchSpec::parse("resnet8", &ArchOptions { classes: Some(2), in_channels: Some(1), ..Default::default() })
            .unwrap();
    let net = Net::new(&spec, 1, 8, 8, false, 0).unwrap();
    let pre = Preprocess { src: (8, 8, 1), size: 8, mean: vec![0.0; 64], crop_pad: 0, flip: false };
    let good = Meta::new(spec.clone(), vec![], (8, 8, 1), 8);
    checkpoint::parse(Path::new("g"), &checkpoint::to_bytes(&net, None, &pre, &good).unwrap()).unwrap();
    let mut zero_stride = good.clone();
    zero_stride.arch.stages[1].stride = 0;
    let mut channels = good.clone();
    channels.image.2 = 3;
    let mut big = good.clone();
    big.image = (40, 40, 1);
    let mut deep = good.clone();
    deep.arch.stages[0].blocks = 1 << 40;
    for (what, m) in
        [("stride 0", zero_stride), ("channels", channels), ("image larger than input", big), ("blocks", deep)]
    {
        let b = checkpoint::to_bytes(&net, None, &pre, &m).unwrap();
        let e = format!("{:#}", checkpoint::parse(Path::new("bad.safetensors"), &b).err().expect(what));
        assert!(e.contains("bad.safetensors: inconsistent metadata"), "{what}: {e}");
    }
}

#[test]
fn non_finite_values_are_refused_by_every_reader_naming_the_tensor() {
    use crate::data::augment::Preprocess;
    use crate::weights::checkpoint::{self, Meta};
    let stored = zip::CompressionMethod::Stored;
    // .pth: a NaN in an f32 storage; an f64 beyond f32's range (infinite as f32)
    let nan: Vec<u8> = [1.0f32, f32::NAN, 2.0, 3.0].iter().flat_map(|v| v.to_le_bytes()).collect();
    let pth = pth_zip(&state_dict_pickle(&[("conv.weight", "0", 4, 4, "FloatStorage")]), &[("0", &nan)], stored);
    let e = format!("{:#}", parse_state_dict("n.pth", &pth).unwrap_err());
    assert!(e.starts_with("n.pth: tensor conv.weight holds 1 non-finite value (NaN or infinite) of 4"), "{e}");
    assert!(e.contains("at flat index 1"), "{e}");
    let big: Vec<u8> = [1e300f64, -1e300].iter().flat_map(|v| v.to_le_bytes()).collect();
    let pth = pth_zip(&state_dict_pickle(&[("bn.running_var", "0", 2, 2, "DoubleStorage")]), &[("0", &big)], stored);
    let e = format!("{:#}", parse_state_dict("b.pth", &pth).unwrap_err());
    assert!(e.contains("bn.running_var holds 2 non-finite values"), "{e}");
    // safetensors
    let spec =
        ArchSpec::parse("resnet8", &ArchOptions { classes: Some(2), in_channels: Some(1), ..Default::default() })
            .unwrap();
    let mut net = Net::new(&spec, 1, 8, 8, false, 0).unwrap();
    let mut sd = StateDict::of_net(&net);
    sd.tensors[3].1.data[0] = f32::INFINITY;
    let name = sd.tensors[3].0.clone();
    let e = format!("{:#}", parse_state_dict("s.safetensors", &safetensors_bytes(&sd, None).unwrap()).unwrap_err());
    assert!(e.contains(&format!("s.safetensors: tensor {name} holds 1 non-finite value")), "{e}");
    // our checkpoints: parameters, BN statistics, the momentum buffer, the mean image
    let pre = Preprocess { src: (8, 8, 1), size: 8, mean: vec![0.0; 64], crop_pad: 0, flip: false };
    let meta = Meta::new(spec.clone(), vec![], (8, 8, 1), 8);
    let path = Path::new("ck.safetensors");
    let velocity = vec![0.0f32; net.params().len()];
    checkpoint::parse(path, &checkpoint::to_bytes(&net, Some(&velocity), &pre, &meta).unwrap()).unwrap();
    let mut bad_velocity = velocity.clone();
    bad_velocity[17] = f32::NAN;
    let e = format!(
        "{:#}",
        checkpoint::parse(path, &checkpoint::to_bytes(&net, Some(&bad_velocity), &pre, &meta).unwrap()).err().unwrap()
    );
    assert!(e.contains("ck.safetensors: tensor optimizer.velocity holds 1 non-finite value"), "{e}");
    let mut bad_mean = pre.clone();
    bad_mean.mean[5] = f32::NEG_INFINITY;
    let e = format!(
        "{:#}",
        checkpoint::parse(path, &checkpoint::to_bytes(&net, None, &bad_mean, &meta).unwrap()).err().unwrap()
    );
    assert!(e.contains("preprocess.mean_image"), "{e}");
    for t in ["bn1.running_mean", "conv1.weight", "fc.bias"] {
        let mut data = net.get_torch(t).unwrap();
        let shape = net.tensor_info(t).unwrap().0.shape.clone();
        data[0] = f32::NAN;
        net.set_torch(t, &shape, &data).unwrap();
        let e = format!(
            "{:#}",
            checkpoint::parse(path, &checkpoint::to_bytes(&net, None, &pre, &meta).unwrap()).err().unwrap()
        );
        assert!(e.contains(&format!("tensor {t} holds 1 non-finite")), "{t}: {e}");
        data[0] = 0.0;
        net.set_torch(t, &shape, &data).unwrap();
    }
}

/// A whole network's state_dict loads into its C4 prefix and suffix by name; a part whose tensors
/// are missing or misshapen is refused with every key named, nothing copied.
#[test]
fn a_state_dict_loads_into_network_parts_by_name() {
    use crate::net::Freeze;
    use crate::net::part::{Capacity, Part, Stages};
    let s = ArchSpec::parse("resnet8", &ArchOptions::default()).unwrap();
    let net = Net::new(&s, 1, 16, 16, false, 3).unwrap();
    let sd = StateDict::of_net(&net);
    let cap = Capacity { n: 1, h: 16, w: 16 };
    for stages in [Stages::c4_prefix(&s), Stages::c4_suffix(&s)] {
        let mut part = Part::zeroed(&s, stages, cap, Freeze::NONE, false).unwrap();
        load_part(&mut part, &sd).unwrap();
        for (name, _) in part.tensors() {
            assert_eq!(part.get_torch(&name), net.get_torch(&name), "{name}");
        }
    }
    let mut wrong = sd.clone();
    wrong.tensors.retain(|(n, _)| n != "layer3.0.conv1.weight");
    wrong.tensors.iter_mut().filter(|(n, _)| n == "layer3.0.bn1.bias").for_each(|(_, t)| t.shape = vec![2, 32]);
    let mut suffix = Part::zeroed(&s, Stages::c4_suffix(&s), cap, Freeze::NONE, false).unwrap();
    let m = load_part(&mut suffix, &wrong).unwrap_err();
    assert_eq!(m.missing, vec!["layer3.0.conv1.weight".to_string()]);
    assert_eq!(m.wrong_shape.len(), 1);
    assert!(suffix.params().iter().all(|v| *v == 0.0), "nothing copied");
}

/// Regression: the same state with the same metadata is the same bytes, whatever order the
/// metadata's `HashMap` iterates in (a resumed run's checkpoint equals the uninterrupted run's),
/// and the file reads back with every entry.
#[test]
fn safetensors_bytes_do_not_depend_on_the_metadata_maps_order() {
    let sd = StateDict {
        tensors: vec![
            ("b.weight".into(), Tensor { shape: vec![2, 3], data: vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0] }),
            ("a.bias".into(), Tensor { shape: vec![2], data: vec![-1.0, 0.5] }),
        ],
    };
    let files: Vec<Vec<u8>> = (0..16)
        .map(|_| {
            let md: HashMap<String, String> = (0..8).map(|i| (format!("key{i}"), format!("value \"{i}\""))).collect();
            safetensors_bytes(&sd, Some(md)).unwrap()
        })
        .collect();
    assert!(files.iter().all(|f| *f == files[0]), "the bytes differ between writes");
    let (_, header) = safetensors::SafeTensors::read_metadata(&files[0]).unwrap();
    let md = header.metadata().clone().unwrap();
    assert_eq!(md.len(), 8);
    assert_eq!(md["key3"], "value \"3\"");
    let st = safetensors::SafeTensors::deserialize(&files[0]).unwrap();
    assert_eq!(st.tensor("a.bias").unwrap().data(), [(-1.0f32).to_le_bytes(), 0.5f32.to_le_bytes()].concat());
}
