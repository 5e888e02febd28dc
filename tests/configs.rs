use quant::{ConfigFile, Error, RuleAction, Rules};

fn configs_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs")
}

/// Every example in configs/ parses, and the three keep-norms files say the same thing.
#[test]
fn example_configs_parse() {
    let mut n = 0;
    for e in std::fs::read_dir(configs_dir()).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            continue;
        }
        if p.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("pipeline-")
        {
            quant::PipelineRecipe::load(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            continue;
        }
        let cfg = ConfigFile::load(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert!(!cfg.rules.is_empty(), "{}", p.display());
        n += 1;
    }
    assert!(n >= 4);
    let texts: Vec<Vec<(String, String)>> = ["json", "toml", "yaml"]
        .iter()
        .map(|ext| {
            ConfigFile::load(configs_dir().join(format!("keep-norms.{ext}")))
                .unwrap()
                .rules
                .iter()
                .map(|r| (r.pattern.clone(), r.action.as_text()))
                .collect()
        })
        .collect();
    assert_eq!(texts[0], texts[1]);
    assert_eq!(texts[0], texts[2]);
    let cfg = ConfigFile::load(configs_dir().join("gguf-q4_k.yaml")).unwrap();
    assert_eq!(cfg.method.as_deref(), Some("gguf_config_q4_k"));
    assert_eq!(
        cfg.rules.iter().next().unwrap().action,
        RuleAction::Method("gguf_config_q6_k".into())
    );
}

#[test]
fn bad_files_name_file_and_entry() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.json");
    std::fs::write(&p, r#"{"ok": "float16", "([": "float32"}"#).unwrap();
    match ConfigFile::load(&p) {
        Err(Error::Config {
            source_name, entry, ..
        }) => {
            assert!(source_name.ends_with("bad.json"));
            assert!(entry.contains("(["));
        }
        other => panic!("{other:?}"),
    }
    let p = dir.path().join("bad.yaml");
    std::fs::write(&p, "- [x, not_a_method]\n").unwrap();
    assert!(matches!(ConfigFile::load(&p), Err(Error::Config { .. })));
    let p = dir.path().join("bad.toml");
    std::fs::write(&p, "x = = 1").unwrap();
    assert!(matches!(ConfigFile::load(&p), Err(Error::Config { .. })));
    assert!(matches!(
        ConfigFile::load(dir.path().join("missing.json")),
        Err(Error::Io { .. })
    ));
    assert!(matches!(
        Rules::from_arg("bfloat16")
            .unwrap()
            .iter()
            .next()
            .unwrap()
            .action,
        RuleAction::Dtype(quant::DType::BF16)
    ));
}

/// The cluster recipes run `--shard I/N` workers over the whole index range, then merge.
#[test]
fn cluster_recipes_shard_and_merge() {
    let dir = configs_dir().join("cluster");
    let job: serde_json::Value = serde_norway::from_str(
        &std::fs::read_to_string(dir.join("k8s-quantize-job.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(job["kind"], "Job");
    assert_eq!(job["spec"]["completionMode"], "Indexed");
    let n = job["spec"]["completions"].as_u64().unwrap();
    let args = job["spec"]["template"]["spec"]["containers"][0]["args"][0]
        .as_str()
        .unwrap();
    assert!(
        args.contains(&format!("--shard \"$JOB_COMPLETION_INDEX/{n}\"")),
        "{args}"
    );
    let slurm = std::fs::read_to_string(dir.join("slurm-quantize.sh")).unwrap();
    // The worker count: the array's, or given (a rerun task's array has one task).
    assert!(slurm.contains("WORKERS=${4:-${SLURM_ARRAY_TASK_COUNT}}"));
    assert!(slurm.contains("--shard \"${SLURM_ARRAY_TASK_ID}/${WORKERS}\""));
    assert!(slurm.contains("--kill-on-invalid-dep=yes"));
    assert!(slurm.contains("quant merge"));
}
