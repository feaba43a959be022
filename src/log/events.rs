//! TensorBoard event files, written synchronously and without panics.
//!
//! `tensorboard-rs`'s own writers are avoided on purpose: they truncate a file another writer
//! opened in the same second, write from a background thread, reach the disk only on drop,
//! panic on I/O errors and swap height and width of non-square images. This module keeps only
//! its TFRecord framing ([`RecordWriter`]) and builds the `tensorboard-proto` messages itself.
//!
//! One [`EventWriter`] per run folder; TensorBoard shows the folder as one run.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, ErrorKind};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use protobuf::{Message, RepeatedField, well_known_types};
use tensorboard_proto::api::{
    DataType as HParamType, Experiment, HParamInfo, MetricInfo, MetricName, Status,
};
use tensorboard_proto::event::{Event, SessionLog, SessionLog_SessionStatus};
use tensorboard_proto::plugin_hparams::{HParamsPluginData, SessionEndInfo, SessionStartInfo};
use tensorboard_proto::plugin_text::TextPluginData;
use tensorboard_proto::summary::{
    Summary, Summary_Image, Summary_Value, SummaryMetadata, SummaryMetadata_PluginData,
};
use tensorboard_proto::tensor::TensorProto;
use tensorboard_proto::tensor_shape::{TensorShapeProto, TensorShapeProto_Dim};
use tensorboard_proto::types::DataType;
use tensorboard_rs::record_writer::RecordWriter;

use super::grid::{GridImage, encode_png};
use super::{LogError, Result};

/// Prefix every TensorBoard reader looks for.
pub const FILE_PREFIX: &str = "events.out.tfevents.";

const EXPERIMENT_TAG: &str = "_hparams_/experiment";
const SESSION_START_TAG: &str = "_hparams_/session_start_info";
const SESSION_END_TAG: &str = "_hparams_/session_end_info";

/// One hyperparameter value, as the HParams dashboard understands them: scalars only.
/// Lists and tables should be given as strings (e.g. `"[64, 128]"`).
#[derive(Debug, Clone, PartialEq)]
pub enum HParamValue {
    Number(f64),
    Text(String),
    Bool(bool),
}

macro_rules! number_from {
    ($($t:ty),*) => {$(
        impl From<$t> for HParamValue {
            fn from(v: $t) -> Self {
                HParamValue::Number(v as f64)
            }
        }
    )*};
}
number_from!(f64, f32, i64, i32, u64, u32, usize);

impl From<bool> for HParamValue {
    fn from(v: bool) -> Self {
        HParamValue::Bool(v)
    }
}
impl From<&str> for HParamValue {
    fn from(v: &str) -> Self {
        HParamValue::Text(v.to_string())
    }
}
impl From<String> for HParamValue {
    fn from(v: String) -> Self {
        HParamValue::Text(v)
    }
}

/// How a run ended, for the HParams table's "Session status" column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionStatus {
    Success,
    Failure,
    Running,
    Unknown,
}

impl SessionStatus {
    fn proto(self) -> Status {
        match self {
            SessionStatus::Success => Status::STATUS_SUCCESS,
            SessionStatus::Failure => Status::STATUS_FAILURE,
            SessionStatus::Running => Status::STATUS_RUNNING,
            SessionStatus::Unknown => Status::STATUS_UNKNOWN,
        }
    }
}

/// Writes one TensorBoard event file in a run folder, synchronously.
///
/// Records go through a `BufWriter`; [`EventWriter::flush`] makes them durable (flush +
/// `fsync`), dropping the writer flushes best-effort. Every method returns a [`LogError`] that
/// names the file instead of panicking. After a failed write the file may end in a partial
/// record, so later calls fail too rather than append after it.
pub struct EventWriter {
    path: PathBuf,
    records: RecordWriter<BufWriter<File>>,
    /// Second handle on the same open file, for `sync_data` (the record writer owns the first).
    sync_handle: File,
    broken: bool,
}

impl std::fmt::Debug for EventWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventWriter")
            .field("path", &self.path)
            .field("broken", &self.broken)
            .finish()
    }
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Host name for event file names: `/proc/sys/kernel/hostname`, `$HOSTNAME`, or "localhost";
/// anything but `[A-Za-z0-9._-]` becomes `_` so the name stays one path component.
fn host_name() -> String {
    let raw = fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| {
            std::env::var("HOSTNAME")
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| "localhost".to_string());
    raw.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn plugin_metadata(name: &str, content: Vec<u8>) -> SummaryMetadata {
    let mut pd = SummaryMetadata_PluginData::new();
    pd.set_plugin_name(name.to_string());
    pd.set_content(content);
    let mut md = SummaryMetadata::new();
    md.set_plugin_data(pd);
    md
}

/// The empty float tensor TensorBoard's own HParams summaries carry as their value.
fn null_tensor() -> TensorProto {
    let mut dim = TensorShapeProto_Dim::new();
    dim.set_size(0);
    let mut shape = TensorShapeProto::new();
    shape.set_dim(RepeatedField::from_vec(vec![dim]));
    let mut t = TensorProto::new();
    t.set_dtype(DataType::DT_FLOAT);
    t.set_tensor_shape(shape);
    t
}

impl EventWriter {
    /// Creates `dir` if needed and a new event file
    /// `events.out.tfevents.{secs:010}.{host}.{pid}.{n}` in it, with the first free `n`.
    ///
    /// The file is opened with `create_new`, so an existing event file (another writer in the
    /// same second, an earlier process) is never truncated. The `brain.Event:2` file-version
    /// record is written and flushed to disk before this returns.
    pub fn create(dir: &Path) -> Result<Self> {
        fs::create_dir_all(dir).map_err(|e| LogError::io("create log folder", dir, e))?;
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let stem = format!(
            "{FILE_PREFIX}{secs:010}.{}.{}",
            host_name(),
            std::process::id()
        );
        let mut n = 0u32;
        let (path, file) = loop {
            let path = dir.join(format!("{stem}.{n}"));
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(f) => break (path, f),
                Err(e) if e.kind() == ErrorKind::AlreadyExists && n < 10_000 => n += 1,
                Err(e) => return Err(LogError::io("create event file", path, e)),
            }
        };
        let sync_handle = file
            .try_clone()
            .map_err(|e| LogError::io("open a second handle on event file", &path, e))?;
        let mut w = EventWriter {
            path,
            records: RecordWriter::new(BufWriter::new(file)),
            sync_handle,
            broken: false,
        };
        let mut ev = Event::new();
        ev.set_wall_time(now_secs());
        ev.set_file_version("brain.Event:2".to_string());
        w.write_event(&ev)?;
        w.flush()?;
        Ok(w)
    }

    /// The event file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn broken_error(&self) -> LogError {
        LogError::io(
            "write event file",
            &self.path,
            io::Error::other("an earlier write to this file failed; it takes no more records"),
        )
    }

    fn write_event(&mut self, ev: &Event) -> Result<()> {
        if self.broken {
            return Err(self.broken_error());
        }
        let bytes = ev.write_to_bytes().map_err(|e| LogError::Encode {
            what: "event",
            path: self.path.clone(),
            message: e.to_string(),
        })?;
        self.records.write(&bytes).map_err(|e| {
            self.broken = true;
            LogError::io("write event file", &self.path, e)
        })
    }

    fn write_summary(&mut self, step: u64, values: Vec<Summary_Value>) -> Result<()> {
        let mut summary = Summary::new();
        summary.set_value(RepeatedField::from_vec(values));
        let mut ev = Event::new();
        ev.set_wall_time(now_secs());
        ev.set_step(step as i64);
        ev.set_summary(summary);
        self.write_event(&ev)
    }

    fn encode<M: Message>(&self, what: &'static str, m: &M) -> Result<Vec<u8>> {
        m.write_to_bytes().map_err(|e| LogError::Encode {
            what,
            path: self.path.clone(),
            message: e.to_string(),
        })
    }

    /// One scalar point. TensorBoard stores scalars as `f32`.
    pub fn scalar(&mut self, tag: &str, value: f64, step: u64) -> Result<()> {
        self.scalars(&[(tag, value)], step)
    }

    /// Several scalars at the same step, in one event.
    pub fn scalars(&mut self, values: &[(&str, f64)], step: u64) -> Result<()> {
        let values = values
            .iter()
            .map(|&(tag, v)| {
                let mut sv = Summary_Value::new();
                sv.set_tag(tag.to_string());
                sv.set_simple_value(v as f32);
                sv
            })
            .collect();
        self.write_summary(step, values)
    }

    /// A picture (1-channel grey or 3-channel RGB, any aspect ratio), stored as PNG with its
    /// true height and width.
    pub fn image(&mut self, tag: &str, img: &GridImage, step: u64) -> Result<()> {
        let png = encode_png(img)?;
        let dim = |v: usize| {
            i32::try_from(v).map_err(|_| {
                LogError::InvalidImage(format!("{}x{} is too large", img.width, img.height))
            })
        };
        let mut im = Summary_Image::new();
        im.set_height(dim(img.height)?);
        im.set_width(dim(img.width)?);
        im.set_colorspace(img.channels as i32); // 1 = grey, 3 = RGB
        im.set_encoded_image_string(png);
        let mut sv = Summary_Value::new();
        sv.set_tag(tag.to_string());
        sv.set_image(im);
        self.write_summary(step, vec![sv])
    }

    /// Markdown text for the Text dashboard (plugin "text", a scalar string tensor).
    pub fn text(&mut self, tag: &str, markdown: &str, step: u64) -> Result<()> {
        let mut t = TensorProto::new();
        t.set_dtype(DataType::DT_STRING);
        t.set_tensor_shape(TensorShapeProto::new()); // rank 0
        t.mut_string_val().push(markdown.as_bytes().to_vec());
        let content = self.encode("text plugin data", &TextPluginData::new())?;
        let mut sv = Summary_Value::new();
        sv.set_tag(tag.to_string());
        sv.set_metadata(plugin_metadata("text", content));
        sv.set_tensor(t);
        self.write_summary(step, vec![sv])
    }

    fn hparams_summary(&mut self, tag: &str, mut data: HParamsPluginData) -> Result<()> {
        data.set_version(0);
        let content = self.encode("HParams plugin data", &data)?;
        let mut sv = Summary_Value::new();
        sv.set_tag(tag.to_string());
        sv.set_metadata(plugin_metadata("hparams", content));
        sv.set_tensor(null_tensor());
        self.write_summary(0, vec![sv])
    }

    /// Records this run's hyperparameters for the HParams dashboard (session-start info), and,
    /// when `metrics` is not empty, the experiment: the hparam columns and the scalar tags
    /// (e.g. `eval/accuracy`, written with [`EventWriter::scalar`] in this same run) whose last
    /// values the table shows. Call once per run, before training.
    ///
    /// TensorBoard builds its table from ONE experiment summary (an arbitrary one if several
    /// runs of the log folder wrote it), so runs meant to be compared should declare the same
    /// hparam names and metrics. With `metrics` empty no experiment is written and TensorBoard
    /// infers the columns from all runs: the union of their hparams, and every scalar tag.
    ///
    /// TensorBoard keeps the first hparams summary it reads in a run, so a resumed run's
    /// second call is harmless but cannot change the values.
    pub fn hparams<K: AsRef<str>>(
        &mut self,
        values: &[(K, HParamValue)],
        metrics: &[&str],
    ) -> Result<()> {
        let now = now_secs();
        if !metrics.is_empty() {
            let mut exp = Experiment::new();
            exp.set_time_created_secs(now);
            for (name, v) in values {
                let mut info = HParamInfo::new();
                info.set_name(name.as_ref().to_string());
                info.set_field_type(match v {
                    HParamValue::Number(_) => HParamType::DATA_TYPE_FLOAT64,
                    HParamValue::Text(_) => HParamType::DATA_TYPE_STRING,
                    HParamValue::Bool(_) => HParamType::DATA_TYPE_BOOL,
                });
                exp.mut_hparam_infos().push(info);
            }
            for tag in metrics {
                let mut name = MetricName::new();
                name.set_tag(tag.to_string());
                let mut info = MetricInfo::new();
                info.set_name(name);
                exp.mut_metric_infos().push(info);
            }
            let mut data = HParamsPluginData::new();
            data.set_experiment(exp);
            self.hparams_summary(EXPERIMENT_TAG, data)?;
        }
        let mut start = SessionStartInfo::new();
        start.set_start_time_secs(now);
        for (name, v) in values {
            let mut pv = well_known_types::Value::new();
            match v {
                HParamValue::Number(x) => pv.set_number_value(*x),
                HParamValue::Text(s) => pv.set_string_value(s.clone()),
                HParamValue::Bool(b) => pv.set_bool_value(*b),
            }
            start.mut_hparams().insert(name.as_ref().to_string(), pv);
        }
        let mut data = HParamsPluginData::new();
        data.set_session_start_info(start);
        self.hparams_summary(SESSION_START_TAG, data)
    }

    /// Marks the run finished for the HParams table. TensorBoard keeps the first session end it
    /// reads in a run, so call this only when the run will not be resumed (it completed, or
    /// failed for good), not when it is merely interrupted.
    pub fn session_end(&mut self, status: SessionStatus) -> Result<()> {
        let mut end = SessionEndInfo::new();
        end.set_status(status.proto());
        end.set_end_time_secs(now_secs());
        let mut data = HParamsPluginData::new();
        data.set_session_end_info(end);
        self.hparams_summary(SESSION_END_TAG, data)
    }

    /// Call right after [`EventWriter::create`] when a run resumes from a checkpoint at `step`
    /// in a folder where an earlier, interrupted writer may have logged steps at or after
    /// `step`: it writes a `SessionLog { status: START }` record at `step`, which makes
    /// TensorBoard discard every point of this run at `step` or later that it read before this
    /// record. The steps written next therefore appear once, not twice with a zigzag.
    ///
    /// TensorBoard's Python loader treats the first START it sees in a run as the beginning of
    /// the session rather than a restart, and the earlier writer may not have written one, so
    /// the marker is written twice (purging twice is harmless). TensorBoard's fast Rust loader
    /// ignores the marker but drops, per tag, earlier points at or after any step that comes
    /// again, to the same effect for every tag the resumed run writes again.
    pub fn resume_at(&mut self, step: u64) -> Result<()> {
        for _ in 0..2 {
            let mut log = SessionLog::new();
            log.set_status(SessionLog_SessionStatus::START);
            let mut ev = Event::new();
            ev.set_wall_time(now_secs());
            ev.set_step(step as i64);
            ev.set_session_log(log);
            self.write_event(&ev)?;
        }
        Ok(())
    }

    /// Writes buffered records and `fsync`s the file: when this returns Ok, the data is on disk.
    pub fn flush(&mut self) -> Result<()> {
        if self.broken {
            return Err(self.broken_error());
        }
        self.records.flush().map_err(|e| {
            self.broken = true;
            LogError::io("write event file", &self.path, e)
        })?;
        self.sync_handle
            .sync_data()
            .map_err(|e| LogError::io("sync event file", &self.path, e))
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        if !self.broken {
            let _ = self.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads back the TFRecord framing: (length, payload) per record, checking both CRCs.
    fn records(path: &Path) -> Vec<Vec<u8>> {
        let data = fs::read(path).unwrap();
        let mut out = Vec::new();
        let mut i = 0;
        while i < data.len() {
            let len = u64::from_le_bytes(data[i..i + 8].try_into().unwrap()) as usize;
            let len_crc = u32::from_le_bytes(data[i + 8..i + 12].try_into().unwrap());
            assert_eq!(len_crc, masked_crc(&data[i..i + 8]), "length crc");
            let payload = data[i + 12..i + 12 + len].to_vec();
            let crc = u32::from_le_bytes(data[i + 12 + len..i + 16 + len].try_into().unwrap());
            assert_eq!(crc, masked_crc(&payload), "data crc");
            out.push(payload);
            i += 16 + len;
        }
        assert_eq!(i, data.len(), "trailing bytes");
        out
    }

    /// Independent CRC32C (Castagnoli, reflected) + TFRecord masking.
    fn masked_crc(data: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in data {
            crc ^= b as u32;
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0x82F6_3B78
                } else {
                    crc >> 1
                };
            }
        }
        let crc = !crc;
        crc.rotate_right(15).wrapping_add(0xa282_ead8)
    }

    fn events(path: &Path) -> Vec<Event> {
        records(path)
            .iter()
            .map(|r| Event::parse_from_bytes(r).unwrap())
            .collect()
    }

    fn event_files(dir: &Path) -> Vec<PathBuf> {
        let mut v: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(FILE_PREFIX)
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn crc_matches_known_vector() {
        // CRC32C("123456789") = 0xE3069283; masked per TFRecord.
        let plain = 0xE306_9283u32;
        assert_eq!(
            masked_crc(b"123456789"),
            plain.rotate_right(15).wrapping_add(0xa282_ead8)
        );
    }

    #[test]
    fn file_name_has_the_tensorflow_shape() {
        let dir = tempfile::tempdir().unwrap();
        let w = EventWriter::create(&dir.path().join("a/b")).unwrap();
        let name = w.path().file_name().unwrap().to_string_lossy().into_owned();
        let rest = name.strip_prefix(FILE_PREFIX).unwrap();
        let parts: Vec<&str> = rest.split('.').collect();
        assert!(parts.len() >= 4, "{name}");
        assert_eq!(parts[0].len(), 10);
        let secs: u64 = parts[0].parse().unwrap();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(now >= secs && now - secs < 60);
        assert_eq!(parts[parts.len() - 2], std::process::id().to_string());
        assert_eq!(parts[parts.len() - 1], "0");
        assert!(!parts[1].is_empty());
        // Written and flushed right away: the file-version record is on disk.
        let evs = events(w.path());
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0].get_file_version(), "brain.Event:2");
        assert!(evs[0].get_wall_time() > 1.6e9);
    }

    #[test]
    fn two_writers_in_the_same_second_get_two_intact_files() {
        let dir = tempfile::tempdir().unwrap();
        let (p1, p2);
        {
            let mut a = EventWriter::create(dir.path()).unwrap();
            a.scalar("loss", 1.5, 1).unwrap();
            a.flush().unwrap();
            let mut b = EventWriter::create(dir.path()).unwrap();
            b.scalar("loss", 2.5, 2).unwrap();
            a.scalar("loss", 0.5, 3).unwrap();
            p1 = a.path().to_path_buf();
            p2 = b.path().to_path_buf();
        } // both dropped: flushed
        assert_ne!(p1, p2);
        let files = event_files(dir.path());
        assert_eq!(files.len(), 2, "{files:?}");
        let a = events(&p1);
        let b = events(&p2);
        let vals = |evs: &[Event]| -> Vec<(i64, f32)> {
            evs.iter()
                .filter(|e| e.has_summary())
                .map(|e| {
                    (
                        e.get_step(),
                        e.get_summary().get_value()[0].get_simple_value(),
                    )
                })
                .collect()
        };
        assert_eq!(vals(&a), vec![(1, 1.5), (3, 0.5)]);
        assert_eq!(vals(&b), vec![(2, 2.5)]);
        assert_eq!(a[0].get_file_version(), "brain.Event:2");
        assert_eq!(b[0].get_file_version(), "brain.Event:2");
    }

    #[test]
    fn existing_file_with_the_next_name_is_skipped_not_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let w = EventWriter::create(dir.path()).unwrap();
        let name = w.path().file_name().unwrap().to_string_lossy().into_owned();
        drop(w);
        // Squat on .1 and .2 with foreign content; a new writer in this second must skip them.
        let stem = name.strip_suffix(".0").unwrap();
        for n in 1..=2 {
            fs::write(dir.path().join(format!("{stem}.{n}")), b"keep me").unwrap();
        }
        let w2 = EventWriter::create(dir.path()).unwrap();
        let n2 = w2
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if n2.starts_with(stem) {
            assert!(n2.ends_with(".3"), "{n2}");
        } // else the clock moved to the next second: a fresh stem, also fine
        for n in 1..=2 {
            assert_eq!(
                fs::read(dir.path().join(format!("{stem}.{n}"))).unwrap(),
                b"keep me"
            );
        }
    }

    #[test]
    fn scalar_text_image_and_hparams_records() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = EventWriter::create(dir.path()).unwrap();
        w.scalars(&[("a", 0.25), ("b", -3.0)], 7).unwrap();
        w.text("notes", "# hi", 2).unwrap();
        let img = GridImage::filled(5, 2, 1, 9);
        w.image("img", &img, 4).unwrap();
        w.hparams(
            &[("lr", HParamValue::from(1e-3)), ("arch", "unet".into())],
            &["eval/acc"],
        )
        .unwrap();
        w.session_end(SessionStatus::Success).unwrap();
        w.resume_at(3).unwrap();
        w.flush().unwrap();
        let evs = events(w.path());
        assert_eq!(evs.len(), 1 + 1 + 1 + 1 + 2 + 1 + 2);
        let s = evs[1].get_summary().get_value();
        assert_eq!(evs[1].get_step(), 7);
        assert_eq!((s[0].get_tag(), s[0].get_simple_value()), ("a", 0.25));
        assert_eq!((s[1].get_tag(), s[1].get_simple_value()), ("b", -3.0));

        let t = &evs[2].get_summary().get_value()[0];
        assert_eq!(t.get_metadata().get_plugin_data().get_plugin_name(), "text");
        assert_eq!(t.get_tensor().get_dtype(), DataType::DT_STRING);
        assert_eq!(t.get_tensor().get_string_val(), &[b"# hi".to_vec()]);

        let i = evs[3].get_summary().get_value()[0].get_image();
        assert_eq!(
            (i.get_width(), i.get_height(), i.get_colorspace()),
            (5, 2, 1)
        );
        let png = image::load_from_memory(i.get_encoded_image_string()).unwrap();
        assert_eq!((png.width(), png.height()), (5, 2));

        let v = &evs[4].get_summary().get_value()[0];
        assert_eq!(v.get_tag(), EXPERIMENT_TAG);
        let d =
            HParamsPluginData::parse_from_bytes(v.get_metadata().get_plugin_data().get_content())
                .unwrap();
        let exp = d.get_experiment();
        assert_eq!(exp.get_hparam_infos().len(), 2);
        assert_eq!(
            exp.get_hparam_infos()[1].get_field_type(),
            HParamType::DATA_TYPE_STRING
        );
        assert_eq!(exp.get_metric_infos()[0].get_name().get_tag(), "eval/acc");
        let v = &evs[5].get_summary().get_value()[0];
        assert_eq!(v.get_tag(), SESSION_START_TAG);
        let d =
            HParamsPluginData::parse_from_bytes(v.get_metadata().get_plugin_data().get_content())
                .unwrap();
        let hp = d.get_session_start_info().get_hparams();
        assert_eq!(hp["lr"].get_number_value(), 1e-3);
        assert_eq!(hp["arch"].get_string_value(), "unet");
        let d = HParamsPluginData::parse_from_bytes(
            evs[6].get_summary().get_value()[0]
                .get_metadata()
                .get_plugin_data()
                .get_content(),
        )
        .unwrap();
        assert_eq!(
            d.get_session_end_info().get_status(),
            Status::STATUS_SUCCESS
        );
        for e in &evs[7..9] {
            assert_eq!(e.get_step(), 3);
            assert_eq!(
                e.get_session_log().get_status(),
                SessionLog_SessionStatus::START
            );
        }
    }

    #[test]
    fn hparams_without_metrics_writes_no_experiment() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = EventWriter::create(dir.path()).unwrap();
        w.hparams(&[("flag".to_string(), HParamValue::Bool(true))], &[])
            .unwrap();
        w.flush().unwrap();
        let evs = events(w.path());
        assert_eq!(evs.len(), 2);
        assert_eq!(
            evs[1].get_summary().get_value()[0].get_tag(),
            SESSION_START_TAG
        );
    }

    #[test]
    fn bad_image_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = EventWriter::create(dir.path()).unwrap();
        let bad = GridImage {
            width: 2,
            height: 2,
            channels: 2,
            pixels: vec![0; 8],
        };
        assert!(matches!(
            w.image("x", &bad, 0),
            Err(LogError::InvalidImage(_))
        ));
        // the writer is still usable
        w.scalar("ok", 1.0, 0).unwrap();
    }

    #[test]
    fn create_error_names_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        fs::write(&file, b"").unwrap();
        let e = EventWriter::create(&file.join("run"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("create log folder"), "{e}");
        assert!(e.contains(&file.display().to_string()), "{e}");
        assert!(e.contains("os error"), "{e}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn write_errors_are_returned_and_poison_the_writer() {
        // /dev/full accepts the open and fails every write with ENOSPC.
        let file = match OpenOptions::new().write(true).open("/dev/full") {
            Ok(f) => f,
            Err(_) => return,
        };
        let mut w = EventWriter {
            path: PathBuf::from("/dev/full"),
            sync_handle: file.try_clone().unwrap(),
            records: RecordWriter::new(BufWriter::new(file)),
            broken: false,
        };
        w.scalar("x", 1.0, 0).unwrap(); // buffered
        let e = w.flush().unwrap_err().to_string();
        assert!(e.contains("/dev/full") && e.contains("os error 28"), "{e}");
        let e = w.scalar("x", 2.0, 1).unwrap_err().to_string();
        assert!(e.contains("earlier write"), "{e}");
    }
}
