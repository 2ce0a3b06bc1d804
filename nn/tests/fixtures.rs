//! Reference parity of Unified Normalization and PowerNorm: every case of the fixture
//! manifest, replayed on the CPU in f64 (chained and step by step) and in f32 (step by
//! step), through `unigrad_nn::norm::replay`. The directory is `$UNIGRAD_FIXTURES_DIR`
//! when set, else the crate's copy in `tests/data/fixtures`.

use std::path::Path;
use unigrad_core::{DType, Device};
use unigrad_nn::norm::replay::{fixtures_dir, load_manifest, replay_all, replay_case, CaseReport, ReplayMode};

fn cpu() -> Device {
    unigrad_cpu::cpu()
}

fn check_all(dtype: DType, mode: ReplayMode) {
    let dir = fixtures_dir();
    let t0 = std::time::Instant::now();
    let reports = replay_all(&dir, &cpu(), dtype, mode).unwrap_or_else(|e| panic!("replay in {}: {e}", dir.display()));
    let manifest = load_manifest(&dir).expect("manifest");
    assert_eq!(reports.len(), manifest.len(), "every manifest case is replayed");
    for r in &reports {
        println!("{}", r.summary());
    }
    println!("{dtype} {mode:?}: {} cases in {:.2?}", reports.len(), t0.elapsed());
    let failed: Vec<&CaseReport> = reports.iter().filter(|r| !r.passed()).collect();
    assert!(
        failed.is_empty(),
        "cases out of tolerance:\n{}",
        failed.iter().map(|r| r.summary()).collect::<Vec<_>>().join("\n")
    );
    // The comparisons really ran: every case compared outputs, gradients and state at
    // every step, and the eval forward once.
    for (r, info) in reports.iter().zip(&manifest) {
        for kind in ["y", "gx", "gw", "gb", "ema_gz", "iters", "var"] {
            let n = r.kinds.get(kind).map_or(0, |k| k.tensors);
            assert_eq!(n, info.steps, "{}: {kind} compared {n} times", r.case);
        }
        assert_eq!(r.kinds["eval.y"].tensors, 1, "{}", r.case);
        let state: &[&str] = if info.module == "un" {
            &["running_var", "buffer_x2", "buffer_gz", "skip_counter", "skipped", "r"]
        } else {
            &["running_phi"]
        };
        for kind in state {
            assert_eq!(r.kinds[*kind].tensors, info.steps, "{}: {kind}", r.case);
        }
    }
}

#[test]
fn f64_chained_matches_reference() {
    check_all(DType::F64, ReplayMode::Chained);
}

#[test]
fn f64_stepwise_matches_reference() {
    check_all(DType::F64, ReplayMode::Stepwise);
}

#[test]
fn f32_stepwise_matches_reference() {
    check_all(DType::F32, ReplayMode::Stepwise);
}

#[test]
fn manifest_covers_both_modules_and_the_quirk_cases() {
    let cases = load_manifest(&fixtures_dir()).expect("manifest");
    let names: Vec<&str> = cases.iter().map(|c| c.name.as_str()).collect();
    for want in [
        "un_warmup_nomask",
        "un_warmup_mask",
        "un_smoothing",
        "un_outlier",
        "un_window_tuple",
        "un_input_2d",
        "un_early_filtration",
        "un_window1",
        "pn_basic",
        "pn_basic_mask",
        "pn_group",
    ] {
        assert!(
            names.contains(&want),
            "case {want} missing from the manifest: {names:?}"
        );
    }
    // Long cases pass iteration 1000, where r starts to differ from 1.
    assert!(cases.iter().any(|c| c.module == "un" && c.steps > 1000));
}

#[test]
fn single_case_entry_point_and_skip_record() {
    let r = replay_case(&fixtures_dir(), "un_early_filtration", &cpu(), DType::F64).expect("replay");
    assert!(r.passed(), "{}", r.summary());
    assert_eq!(r.mode, ReplayMode::Chained);
    assert_eq!(r.skips, vec![0, 1, 2, 3, 4, 5, 6, 11]);
    let e = replay_case(&fixtures_dir(), "no_such_case", &cpu(), DType::F64);
    assert!(e.is_err());
}

/// A copy of the manifest with one case's module (or constructor) changed.
fn doctored_dir(tag: &str, edit: impl Fn(&mut serde_json::Value)) -> std::path::PathBuf {
    let src = fixtures_dir();
    let dir = std::env::temp_dir().join(format!("unigrad-un-fixtures-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let text = std::fs::read_to_string(src.join("manifest.json")).expect("manifest");
    let mut v: serde_json::Value = serde_json::from_str(&text).expect("json");
    edit(&mut v);
    std::fs::write(dir.join("manifest.json"), v.to_string()).expect("write manifest");
    for f in ["un_window1.safetensors", "pn_group.safetensors"] {
        std::fs::copy(src.join(f), dir.join(f)).expect("copy fixture");
    }
    dir
}

fn keep_cases(v: &mut serde_json::Value, names: &[&str]) {
    let cases = v["cases"].as_array_mut().expect("cases");
    cases.retain(|c| names.contains(&c["name"].as_str().unwrap_or("")));
}

#[test]
fn unknown_module_fails_instead_of_skipping() {
    let dir = doctored_dir("module", |v| {
        keep_cases(v, &["un_window1", "pn_group"]);
        v["cases"][1]["module"] = "bn".into();
    });
    let e = replay_all(&dir, &cpu(), DType::F64, ReplayMode::Chained).expect_err("unknown module must fail");
    assert!(e.to_string().contains("`bn`"), "{e}");
    // The same directory with the known modules only passes.
    let ok = doctored_dir("module-ok", |v| keep_cases(v, &["un_window1", "pn_group"]));
    let reports = replay_all(&ok, &cpu(), DType::F64, ReplayMode::Chained).expect("replay");
    assert!(reports.iter().all(CaseReport::passed));
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&ok);
}

#[test]
fn unknown_constructor_argument_fails() {
    let dir = doctored_dir("ctor", |v| {
        keep_cases(v, &["un_window1"]);
        v["cases"][0]["ctor_kwargs"]["track_running_stats"] = true.into();
    });
    let e = replay_all(&dir, &cpu(), DType::F64, ReplayMode::Chained).expect_err("unknown argument must fail");
    assert!(e.to_string().contains("track_running_stats"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_wrong_layer_is_caught() {
    // The replay is only as good as its ability to fail: a changed hyperparameter (momentum
    // 0.8 instead of 0.9) must be reported as out of tolerance.
    let dir = doctored_dir("momentum", |v| {
        keep_cases(v, &["un_window1"]);
        v["cases"][0]["ctor_kwargs"]["momentum"] = 0.8.into();
    });
    let r = &replay_all(&dir, &cpu(), DType::F64, ReplayMode::Chained).expect("replay")[0];
    assert!(!r.passed());
    assert!(r.kinds["running_var"].failures > 0 && r.kinds["ema_gz"].failures > 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn fixture_dir_default_is_the_crate_copy() {
    if std::env::var_os("UNIGRAD_FIXTURES_DIR").is_none() {
        let want = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fixtures");
        assert_eq!(fixtures_dir(), want);
        assert!(want.join("manifest.json").is_file());
        assert!(want.join("ALGORITHMS.md").is_file());
    }
}
