//! Atomic output under faults, with the real binary: a write failing midway
//! (`RLIMIT_FSIZE` through `ulimit -f`, with `SIGXFSZ` ignored so the write returns
//! `EFBIG`), the process killed by that limit, and the process killed with `SIGKILL`
//! during a large write. The destination never holds a partial file, the input is never
//! modified, an existing output survives a failed `--force` run, and leftover temporaries
//! are clearly named and removed by the next run.
#![cfg(unix)]
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use quant::{DType, Part, PartLayout};

const BIN: &str = env!("CARGO_BIN_EXE_quant");

/// A model folder (config.json + one safetensors file) of `tensors` f32 matrices of
/// `rows` x 1024.
fn model(dir: &Path, tensors: usize, rows: usize) -> PathBuf {
    let p = dir.join("in");
    std::fs::create_dir_all(&p).unwrap();
    let parts: Vec<Part> = (0..tensors)
        .map(|t| {
            let data = (0..rows * 1024)
                .flat_map(|i| (((i * 31 + t) % 251) as f32 / 100.0 - 1.25).to_le_bytes())
                .collect();
            Part::new(
                PartLayout::new(format!("layers.{t}.weight"), DType::F32, vec![rows, 1024]),
                data,
            )
            .unwrap()
        })
        .collect();
    quant::safetensors_io::write_safetensors(
        p.join("model.safetensors"),
        &parts,
        &Default::default(),
    )
    .unwrap();
    std::fs::write(p.join("config.json"), br#"{"model_type":"llama"}"#).unwrap();
    p
}

/// Every file under `dir`, relative, with its bytes (to prove the input is untouched).
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Runs the CLI under `ulimit -f 512` (at most 256 KiB or 512 KiB per file, depending on
/// the shell's block size); `ignore_xfsz` makes an oversized write fail with `EFBIG`
/// instead of killing the process.
fn quantize_limited(args: &[&str], ignore_xfsz: bool) -> Output {
    let trap = if ignore_xfsz { "trap '' XFSZ; " } else { "" };
    Command::new("sh")
        .arg("-c")
        .arg(format!("{trap}ulimit -f 512 && exec \"$0\" \"$@\""))
        .arg(BIN)
        .arg("quantize")
        .args(args)
        .output()
        .unwrap()
}

fn quantize(args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("quantize")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn write_failing_midway_leaves_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let input = model(dir.path(), 4, 512); // 8 MiB in, 4 MiB of fp16 out
    let before = snapshot(&input);
    let out_dir = dir.path().join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    let file = out_dir.join("model.safetensors");
    let folder = out_dir.join("model");
    let (i, f, d) = (
        input.join("model.safetensors"),
        file.display().to_string(),
        folder.display().to_string(),
    );
    let i = i.display().to_string();
    let input_s = input.display().to_string();
    for (src, dest) in [(&i, &f), (&input_s, &d)] {
        let o = quantize_limited(&[src, "-o", dest, "--method", "basic_fp16"], true);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(err.starts_with("error: "), "{err}");
        assert!(
            !Path::new(dest).exists(),
            "{dest}: a failed write left an output"
        );
        assert_eq!(names(&out_dir), Vec::<String>::new(), "temporaries removed");
    }
    // An existing output survives a failed --force run untouched.
    std::fs::write(&file, b"previous output").unwrap();
    let o = quantize_limited(&[&i, "-o", &f, "--method", "basic_fp16", "--force"], true);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(std::fs::read(&file).unwrap(), b"previous output");
    assert_eq!(names(&out_dir), vec!["model.safetensors"]);
    assert_eq!(snapshot(&input), before, "input modified");
}

/// The temporaries a run with process id `pid` leaves for `dest`.
fn temp_of(dest: &Path, pid: u32) -> PathBuf {
    let name = dest.file_name().unwrap().to_string_lossy();
    dest.with_file_name(format!(".{name}.quant-tmp-{pid}"))
}

#[test]
fn killed_by_file_size_limit_then_next_run_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let input = model(dir.path(), 4, 512);
    let before = snapshot(&input);
    let out_dir = dir.path().join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    let dest = out_dir.join("model.safetensors");
    let (i, d) = (
        input.join("model.safetensors").display().to_string(),
        dest.display().to_string(),
    );
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("ulimit -f 512 && exec \"$0\" \"$@\"")
        .args([BIN, "quantize", &i, "-o", &d, "--method", "basic_fp16"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id(); // `exec` keeps the shell's pid
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(25), "killed by SIGXFSZ: {status:?}");
    assert!(!dest.exists(), "a killed run left a destination file");
    // What remains is clearly named after the destination and the dead process.
    let tmp = temp_of(&dest, pid);
    assert_eq!(
        names(&out_dir),
        vec![tmp.file_name().unwrap().to_string_lossy().into_owned()]
    );
    // The next run replaces it with the finished file.
    let o = quantize(&[&i, "-o", &d, "--method", "basic_fp16"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        names(&out_dir),
        vec!["model.quantization_info.json", "model.safetensors"]
    );
    assert!(quant::ModelFiles::open(&dest).is_ok());
    assert_eq!(snapshot(&input), before, "input modified");
}

/// SIGKILL while the output folder is being written: no destination, the input intact, a
/// clearly named temporary folder that the next run removes.
#[test]
fn sigkill_during_a_large_write() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    let dest = out_dir.join("model");
    let d = dest.display().to_string();
    // Grow the input until the kill lands while the output is being written (the first
    // size is already seconds of work for a debug build).
    for rows in [512, 2048, 8192] {
        let _ = std::fs::remove_dir_all(dir.path().join("in"));
        let input = model(dir.path(), 8, rows);
        let before = snapshot(&input);
        let inp = input.display().to_string();
        let mut child = Command::new(BIN)
            .args(["quantize", &inp, "-o", &d, "--method", "basic_int8"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let shard = temp_of(&dest, child.id()).join("model.safetensors");
        let mut killed = false;
        while child.try_wait().unwrap().is_none() {
            let written = std::fs::metadata(&shard).map(|m| m.len()).unwrap_or(0);
            if written > 0 {
                child.kill().unwrap();
                killed = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let status = child.wait().unwrap();
        if !killed {
            // Finished before the temporary showed bytes: retry with more work.
            assert!(status.success());
            std::fs::remove_dir_all(&dest).unwrap();
            continue;
        }
        assert_eq!(status.signal(), Some(9));
        assert!(!dest.exists(), "a killed run left a destination folder");
        let tmp = temp_of(&dest, child.id());
        assert!(tmp.is_dir());
        assert_eq!(
            names(&out_dir),
            vec![tmp.file_name().unwrap().to_string_lossy().into_owned()]
        );
        assert_eq!(snapshot(&input), before, "input modified");
        // The next run (a small input, to keep the test quick) removes the leftover.
        let small = dir.path().join("small");
        std::fs::create_dir_all(&small).unwrap();
        let small_in = model(&small, 1, 4);
        let o = quantize(&[
            &small_in.display().to_string(),
            "-o",
            &d,
            "--method",
            "basic_int8",
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(names(&out_dir), vec!["model"]);
        assert!(quant::ModelFiles::open(&dest).is_ok());
        return;
    }
    panic!("the run always finished before it could be killed");
}
