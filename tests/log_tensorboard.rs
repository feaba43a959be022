//! Event files written by `ldm_run::log` as TensorBoard itself reads them.
//!
//! Writes two runs (one interrupted and resumed), then runs `tests/read_events.py`, which
//! loads the folder with TensorBoard's Python reader, data provider and HParams plugin and
//! prints what it saw as JSON. Needs `python3` with `pip install tensorboard`; without them
//! this test fails (it does not skip).

mod common;

use common::read_with_tensorboard;
use ldm_run::log::{EventWriter, GridImage, HParamValue, SessionStatus, grid};
use serde_json::Value;

/// `[[step, value], ...]` as Rust pairs.
fn points(v: &Value) -> Vec<(u64, f64)> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|p| (p[0].as_u64().unwrap(), p[1].as_f64().unwrap()))
        .collect()
}

fn loss_a(step: u64) -> f64 {
    1.0 / (step as f64 + 1.0)
}

/// Values the interrupted writer logged at steps >= 5, which must disappear after the resume.
fn stale(step: u64) -> f64 {
    100.0 + step as f64
}

fn assert_close(got: f64, want: f64, what: &str) {
    assert!(
        (got - want).abs() <= 1e-6 * want.abs().max(1.0),
        "{what}: got {got}, want {want}"
    );
}

#[test]
fn tensorboard_reads_scalars_images_text_hparams_and_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let logdir = tmp.path().join("runs");
    let run_a = logdir.join("run_a");
    let run_b = logdir.join("run_b");
    let metrics = ["eval/accuracy", "train/loss"];

    // A grey grid wider than high: 3 tiles of 4x6 (h x w), one row, pad 1 -> 22 x 6.
    let tiles: Vec<f32> = (0..3 * 4 * 6).map(|i| (i % 7) as f32 / 3.0 - 1.0).collect();
    let grey = grid(&tiles, 3, 1, 4, 6, 3, 1);
    assert_eq!((grey.width, grey.height), (22, 6));
    // An RGB picture higher than wide: 5 x 9.
    let rgb = GridImage {
        width: 5,
        height: 9,
        channels: 3,
        pixels: (0..5 * 9 * 3).map(|i| (i * 5 % 256) as u8).collect(),
    };

    // run_a, first process: logs 0..=10, then "dies" without a session end.
    {
        let mut w = EventWriter::create(&run_a).unwrap();
        w.hparams(
            &[
                ("lr", HParamValue::from(1e-3)),
                ("arch", "unet".into()),
                ("ema", true.into()),
                ("channels", "[32, 64]".into()),
            ],
            &metrics,
        )
        .unwrap();
        w.text("config", "# run_a\n\n`lr = 0.001`", 0).unwrap();
        for s in 0..=10u64 {
            let v = if s < 5 { loss_a(s) } else { stale(s) };
            w.scalar("train/loss", v, s).unwrap();
            if s % 2 == 0 {
                w.scalar("train/lr", 1e-3 * (s + 1) as f64, s).unwrap();
            }
        }
        w.scalar("eval/accuracy", 0.5, 4).unwrap();
        w.scalar("eval/accuracy", 0.1, 8).unwrap(); // stale
        w.image("samples/grey", &grey, 4).unwrap();
        w.image("samples/grey", &GridImage::filled(3, 3, 1, 0), 8)
            .unwrap(); // stale
        w.flush().unwrap();
    }
    // run_a, second process: resumes from the checkpoint at step 5, in the same folder and
    // (most likely) the same second.
    {
        let mut w = EventWriter::create(&run_a).unwrap();
        w.resume_at(5).unwrap();
        w.hparams(
            &[
                ("lr", HParamValue::from(1e-3)),
                ("arch", "unet".into()),
                ("ema", true.into()),
                ("channels", "[32, 64]".into()),
            ],
            &metrics,
        )
        .unwrap();
        for s in 5..=10u64 {
            w.scalar("train/loss", loss_a(s), s).unwrap();
            if s % 2 == 0 {
                w.scalar("train/lr", 1e-3 * (s + 1) as f64, s).unwrap();
            }
        }
        w.scalar("eval/accuracy", 0.75, 8).unwrap();
        w.scalar("eval/accuracy", 0.875, 10).unwrap();
        w.image("samples/rgb", &rgb, 10).unwrap();
        w.text("notes", "resumed at **5**", 10).unwrap();
        w.session_end(SessionStatus::Success).unwrap();
        w.flush().unwrap();
    }
    // run_b: another configuration, failed.
    {
        let mut w = EventWriter::create(&run_b).unwrap();
        w.hparams(
            &[
                ("lr", HParamValue::from(5e-4)),
                ("arch", "unet-small".into()),
                ("ema", false.into()),
                ("channels", "[16, 32]".into()),
            ],
            &metrics,
        )
        .unwrap();
        w.scalars(&[("train/loss", 2.0), ("eval/accuracy", 0.25)], 3)
            .unwrap();
        w.session_end(SessionStatus::Failure).unwrap();
        w.flush().unwrap();
    }
    let files = std::fs::read_dir(&run_a).unwrap().count();
    assert_eq!(files, 2, "two event files in run_a, none truncated");

    let tb = read_with_tensorboard(&logdir);

    // --- Scalars, with the restart purge, in both readers.
    let want_loss: Vec<(u64, f64)> = (0..=10).map(|s| (s, loss_a(s))).collect();
    let want_lr: Vec<(u64, f64)> = (0..=10)
        .step_by(2)
        .map(|s| (s, 1e-3 * (s + 1) as f64))
        .collect();
    for reader in ["ea", "provider"] {
        let a = &tb[reader]["run_a"]["scalars"];
        for (tag, want) in [
            ("train/loss", &want_loss),
            ("train/lr", &want_lr),
            ("eval/accuracy", &vec![(4, 0.5), (8, 0.75), (10, 0.875)]),
        ] {
            let got = points(&a[tag]);
            let steps: Vec<u64> = got.iter().map(|p| p.0).collect();
            let want_steps: Vec<u64> = want.iter().map(|p| p.0).collect();
            assert_eq!(steps, want_steps, "{reader} run_a {tag}: each step once");
            for ((s, g), (_, w)) in got.iter().zip(want.iter()) {
                assert_close(*g, *w, &format!("{reader} run_a {tag} step {s}"));
            }
        }
        let b = &tb[reader]["run_b"]["scalars"];
        assert_eq!(points(&b["train/loss"]), vec![(3, 2.0)], "{reader} run_b");
        assert_eq!(
            points(&b["eval/accuracy"]),
            vec![(3, 0.25)],
            "{reader} run_b"
        );
    }

    // --- Images: true width/height (not swapped), PNG header agrees, stale one purged.
    let ea_grey = &tb["ea"]["run_a"]["images"]["samples/grey"];
    assert_eq!(ea_grey.as_array().unwrap().len(), 1, "{ea_grey}");
    assert_eq!(ea_grey[0]["step"], 4);
    assert_eq!(
        (ea_grey[0]["width"].as_u64(), ea_grey[0]["height"].as_u64()),
        (Some(22), Some(6))
    );
    assert_eq!(
        ea_grey[0]["png"],
        serde_json::json!([22, 6, 0]),
        "grey PNG 22x6"
    );
    let ea_rgb = &tb["ea"]["run_a"]["images"]["samples/rgb"][0];
    assert_eq!(
        (ea_rgb["width"].as_u64(), ea_rgb["height"].as_u64()),
        (Some(5), Some(9))
    );
    assert_eq!(ea_rgb["png"], serde_json::json!([5, 9, 2]), "RGB PNG 5x9");
    let pv_grey = &tb["provider"]["run_a"]["images"]["samples/grey"];
    assert_eq!(pv_grey.as_array().unwrap().len(), 1, "{pv_grey}");
    assert_eq!(
        (pv_grey[0]["width"].as_u64(), pv_grey[0]["height"].as_u64()),
        (Some(22), Some(6))
    );
    assert_eq!(pv_grey[0]["png"], serde_json::json!([[22, 6, 0]]));
    let pv_rgb = &tb["provider"]["run_a"]["images"]["samples/rgb"][0];
    assert_eq!(
        (pv_rgb["width"].as_u64(), pv_rgb["height"].as_u64()),
        (Some(5), Some(9))
    );
    assert_eq!(pv_rgb["step"], 10);

    // --- Text.
    let text = &tb["provider"]["run_a"]["text"];
    assert_eq!(text["config"][0]["text"], "# run_a\n\n`lr = 0.001`");
    assert_eq!(text["config"][0]["step"], 0);
    assert_eq!(text["notes"][0]["text"], "resumed at **5**");
    assert_eq!(text["notes"][0]["step"], 10);
    assert_eq!(text["notes"].as_array().unwrap().len(), 1);

    // --- HParams: the experiment's columns, then one row per run.
    let exp = &tb["hparams"]["experiment"];
    let mut names: Vec<(String, String)> = exp["hparams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["name"].as_str().unwrap().into(),
                h["type"].as_str().unwrap().into(),
            )
        })
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            ("arch", "DATA_TYPE_STRING"),
            ("channels", "DATA_TYPE_STRING"),
            ("ema", "DATA_TYPE_BOOL"),
            ("lr", "DATA_TYPE_FLOAT64"),
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    assert_eq!(
        exp["metrics"],
        serde_json::json!([["", "eval/accuracy"], ["", "train/loss"]])
    );
    let groups = tb["hparams"]["session_groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2, "{groups:?}");
    let group = |run: &str| {
        groups
            .iter()
            .find(|g| g["sessions"][0]["name"] == run)
            .unwrap_or_else(|| panic!("no session group for {run}: {groups:?}"))
    };
    let a = group("run_a");
    assert_eq!(a["hparams"]["arch"], "unet");
    assert_eq!(a["hparams"]["channels"], "[32, 64]");
    assert_eq!(a["hparams"]["ema"], true);
    assert_close(a["hparams"]["lr"].as_f64().unwrap(), 1e-3, "run_a lr");
    assert_eq!(a["sessions"][0]["status"], "STATUS_SUCCESS");
    assert_close(
        a["metrics"]["eval/accuracy"]["value"].as_f64().unwrap(),
        0.875,
        "run_a acc",
    );
    assert_eq!(a["metrics"]["eval/accuracy"]["step"], 10);
    assert_close(
        a["metrics"]["train/loss"]["value"].as_f64().unwrap(),
        loss_a(10),
        "run_a loss",
    );
    let b = group("run_b");
    assert_eq!(b["hparams"]["arch"], "unet-small");
    assert_eq!(b["hparams"]["ema"], false);
    assert_close(b["hparams"]["lr"].as_f64().unwrap(), 5e-4, "run_b lr");
    assert_eq!(b["sessions"][0]["status"], "STATUS_FAILURE");
    assert_close(
        b["metrics"]["eval/accuracy"]["value"].as_f64().unwrap(),
        0.25,
        "run_b acc",
    );
}
