use quant::{Error, Registry, CATALOG, EXTRA};

/// The names a build registers are exactly the catalog names of its enabled features,
/// plus the always-on basic methods and the linked example backend.
#[test]
fn registry_matches_enabled_features() {
    let reg = Registry::global().unwrap();
    for c in CATALOG.iter().chain(EXTRA) {
        let enabled = match c.feature {
            "" => true,
            "bnb" => cfg!(feature = "bnb"),
            "gguf" => cfg!(feature = "gguf"),
            "quanto" => cfg!(feature = "quanto"),
            "float8" => cfg!(feature = "float8"),
            other => panic!("unknown feature {other}"),
        };
        assert_eq!(reg.get(c.name).is_some(), enabled, "{}", c.name);
    }
    // Names beyond the catalog and its extras: only the example backend's (a GGUF
    // method missing from `EXTRA` would be unknown with the gguf feature off).
    let extra: Vec<_> = reg
        .entries()
        .filter(|e| quant::catalog::lookup(e.name).is_none())
        .map(|e| (e.name, e.backend))
        .collect();
    assert!(extra.contains(&("example_ternary", "quant-example-backend")));
    for (name, backend) in extra {
        assert_eq!(
            backend, "quant-example-backend",
            "{name} is not in the catalog"
        );
    }
    assert_eq!(
        reg.get("gguf_config_iq4_xs").is_some(),
        cfg!(feature = "gguf"),
        "GGUF extras come with the gguf feature"
    );
}

/// A third-party crate's method is seen by the registry when linked, and works end to end.
#[test]
fn third_party_backend_is_registered() {
    use quant_example_backend as _;
    let reg = Registry::global().unwrap();
    let e = reg
        .get("example_ternary")
        .expect("linked backend registers");
    assert_eq!(e.backend, "quant-example-backend");
    let w = quant::HostTensor::from_f32(
        "l.weight",
        quant::DType::F32,
        vec![2, 2],
        &[0.5, -0.5, 0.0, 0.01],
    )
    .unwrap();
    let m = quant::ModelQuantizer::new("example_ternary")
        .quantize_sources(&[&w])
        .unwrap();
    let d = m.dequantize("l.weight").unwrap();
    assert_eq!(d[0], -d[1]);
    assert_eq!(d[2], 0.0);
}

#[test]
fn compiled_out_resolves_to_fallback_or_fails_strict() {
    let reg = Registry::global().unwrap();
    for c in CATALOG
        .iter()
        .chain(EXTRA)
        .filter(|c| reg.get(c.name).is_none())
    {
        let r = reg.resolve(c.name, false).unwrap();
        assert_eq!(r.effective, c.fallback);
        assert!(r.fallback_reason.as_deref().unwrap().contains(c.feature));
        match reg.resolve(c.name, true) {
            Err(Error::MethodNotCompiled { feature, .. }) => assert_eq!(feature, c.feature),
            other => panic!("{}: {other:?}", c.name),
        }
    }
}

#[test]
fn unknown_method_lists_close_matches() {
    let reg = Registry::global().unwrap();
    match reg.resolve("basic_int9", false) {
        Err(Error::UnknownMethod {
            close, available, ..
        }) => {
            assert!(close.contains(&"basic_int8".to_string()), "{close:?}");
            assert!(available.contains(&"basic_fp16".to_string()));
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        reg.resolve("zzz", false),
        Err(Error::UnknownMethod { .. })
    ));
}

#[test]
fn bad_params_are_typed_errors() {
    let reg = Registry::global().unwrap();
    let mut p = quant::Params::new();
    p.insert("blocksize".into(), 64.into());
    assert!(matches!(
        reg.create("basic_int8", &p),
        Err(Error::BadParam { .. })
    ));
}

/// The methods that refuse to quantize without an importance matrix are exactly
/// `common::NEEDS_IMATRIX` (with the gguf feature; none without), each naming `--imatrix`.
#[test]
fn methods_needing_an_imatrix_are_these() {
    let reg = Registry::global().unwrap();
    let meta = quant::TensorMeta::new("l.weight", quant::DType::F32, vec![2, 256]);
    let values: Vec<f32> = (0..512)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
        .collect();
    let mut refusing: Vec<&str> = Vec::new();
    for e in reg.entries() {
        let m = (e.create)(&quant::Params::new()).unwrap();
        if let Err(err) = m.quantize(&meta, &values) {
            if matches!(&err, Error::NeedsImatrix { reason, .. } if reason.contains("--imatrix")) {
                refusing.push(e.name);
            }
        }
    }
    refusing.sort_unstable();
    let mut want: Vec<&str> = if cfg!(feature = "gguf") {
        crate::common::NEEDS_IMATRIX.to_vec()
    } else {
        Vec::new()
    };
    want.sort_unstable();
    assert_eq!(refusing, want);
}
