//! A domain: the directory that holds flows, its options, listing, liveness and cleanup.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use uuid::Uuid;

use super::cursor::{self, ReaderCursor, ReaderStatus};
use super::error::FlowError;
use super::files::{self, flow_dir, Shape, FLOW_DIR_SUFFIX, TMP_PREFIX};
use super::layout::*;
use super::reader::{GrainReader, ReaderOptions, SamplesReader};
use super::writer::{GrainWriter, SamplesWriter, WriterOptions};
use super::Result;
use crate::format::FlowDef;
use crate::time::{current_index, Rational};

/// Key of the history length in `options.json`, in ns (MXL).
pub const HISTORY_DURATION_KEY: &str = "urn:x-mxl:option:history_duration/v1.0";
/// Default history: 200 ms (MXL).
pub const DEFAULT_HISTORY_NS: u64 = 200_000_000;
/// A `.mxl-tmp-*` directory whose writer is gone is collected after this age.
const STALE_TMP_AGE: Duration = Duration::from_secs(10);
/// Largest ring a writer may ask for explicitly.
const MAX_RING: u32 = 1 << 16;

/// Options of a domain (`options.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DomainOptions {
    /// How much media a ring holds, in ns: `grainCount = floor(history * rate)`.
    pub history_ns: u64,
}

impl Default for DomainOptions {
    fn default() -> Self {
        Self {
            history_ns: DEFAULT_HISTORY_NS,
        }
    }
}

/// A directory of flows, normally on tmpfs (default [`Domain::DEFAULT_PATH`]).
#[derive(Debug, Clone)]
pub struct Domain {
    path: PathBuf,
    options: DomainOptions,
}

/// What `mcm info` shows about a flow.
#[derive(Debug, Clone)]
pub struct FlowStatus {
    pub id: Uuid,
    pub label: Option<String>,
    pub media_type: Option<String>,
    pub version: u32,
    pub format: u32,
    pub rate: Rational,
    pub commit_batch_hint: u32,
    pub sync_batch_hint: u32,
    /// Discrete flows: `(grainCount, sliceSizes)`.
    pub grains: Option<(u32, [u32; 4])>,
    /// Continuous flows: `(channelCount, bufferLength)`.
    pub samples: Option<(u32, u32)>,
    pub head_index: u64,
    pub last_write_time: u64,
    pub last_read_time: u64,
    /// Current index minus head index: how far the writer is behind now, in grains/samples.
    pub latency: i128,
    pub active: bool,
    pub end_of_stream: bool,
    pub readers: Vec<ReaderStatus>,
}

/// What garbage collection removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    pub removed_flows: Vec<Uuid>,
    pub removed_tmp_dirs: usize,
    pub active_flows: usize,
    /// Cursor files of dead reliable readers, and cursor directories of vanished flows.
    pub removed_cursors: usize,
}

impl Domain {
    pub const DEFAULT_PATH: &'static str = "/dev/shm/mcm";

    /// Opens an existing domain directory and reads its `options.json`, if any.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        let meta = fs::metadata(&path).map_err(|e| FlowError::io(&path, e))?;
        if !meta.is_dir() {
            return Err(FlowError::io(
                &path,
                io::Error::new(io::ErrorKind::InvalidInput, "not a directory"),
            ));
        }
        let options = read_options(&path)?;
        Ok(Self { path, options })
    }

    /// Creates the domain directory (and parents) if needed, then opens it.
    pub fn create(path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        fs::create_dir_all(&path).map_err(|e| FlowError::io(&path, e))?;
        Self::open(path)
    }

    /// Opens a domain with explicit options, ignoring `options.json`.
    pub fn with_options(path: impl Into<PathBuf>, options: DomainOptions) -> Result<Self> {
        let mut d = Self::open(path)?;
        d.options = options;
        Ok(d)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn options(&self) -> DomainOptions {
        self.options
    }

    /// Ring length for a grain rate: `floor(history * num / (1e9 * den))` (MXL `Instance.cpp`).
    pub fn grain_count(&self, rate: Rational) -> Result<u32> {
        let count = (self.options.history_ns as u128 * rate.numerator.max(0) as u128)
            / (1_000_000_000u128 * rate.denominator.max(1) as u128);
        // A ring of one grain can never be read: the slot after the head is the writer's.
        match u32::try_from(count) {
            Ok(n @ 2..=MAX_RING) => Ok(n),
            _ => Err(FlowError::InvalidArgument(format!(
                "a history of {} ns holds {count} grains at {rate}; need 2 to {MAX_RING} \
                 (set urn:x-mxl:option:history_duration/v1.0 in options.json)",
                self.options.history_ns
            ))),
        }
    }

    /// Samples per channel ring: twice the history (half is readable), rounded up to a
    /// whole page of samples (MXL `Instance.cpp`).
    pub fn buffer_length(&self, rate: Rational, word_size: u32) -> Result<u32> {
        let raw = self.options.history_ns as u128 * rate.numerator.max(0) as u128
            / (500_000_000u128 * rate.denominator.max(1) as u128);
        let page = u128::from(4096 / word_size);
        let len = raw.div_ceil(page) * page;
        match u32::try_from(len) {
            Ok(0) | Err(_) => Err(FlowError::InvalidArgument(format!(
                "a history of {} ns gives a ring of {len} samples",
                self.options.history_ns
            ))),
            Ok(n) => Ok(n),
        }
    }

    pub fn flow_dir(&self, id: Uuid) -> PathBuf {
        flow_dir(&self.path, id)
    }

    fn shape_and_hints(&self, def: &FlowDef, o: &WriterOptions) -> Result<(Shape, (u32, u32))> {
        let (shape, default_commit) = match def.sample_geometry() {
            Some((channels, word_size)) => {
                let rate = def.index_rate();
                let shape = Shape::Continuous {
                    channels,
                    buffer_length: self.buffer_length(rate, word_size)?,
                    word_size,
                };
                // MXL: 10 ms of samples.
                let ten_ms = (rate.numerator / (100 * rate.denominator)).max(1) as u32;
                (shape, ten_ms)
            }
            None => {
                let g = def.grain_geometry()?;
                let shape = Shape::Discrete {
                    slice_sizes: g.slice_sizes,
                    total_slices: g.total_slices,
                    grain_count: match o.grain_count {
                        Some(n) if (2..=MAX_RING).contains(&n) => n,
                        Some(n) => {
                            return Err(FlowError::InvalidArgument(format!(
                                "grain count {n} not in 2..={MAX_RING}"
                            )))
                        }
                        None => self.grain_count(def.index_rate())?,
                    },
                    metadata_capacity: def.metadata_capacity(),
                };
                (shape, u32::from(g.total_slices))
            }
        };
        let commit = o.max_commit_batch_size_hint.unwrap_or(default_commit);
        let sync = o.max_sync_batch_size_hint.unwrap_or(commit);
        if commit == 0 || sync == 0 || !sync.is_multiple_of(commit) {
            return Err(FlowError::InvalidArgument(format!(
                "batch hints commit {commit}, sync {sync}: both >= 1, sync a multiple of commit"
            )));
        }
        Ok((shape, (commit, sync)))
    }

    /// Creates the flow described by `def`, or joins it if it exists with the same layout.
    pub fn create_grain_writer(
        &self,
        def: &FlowDef,
        options: &WriterOptions,
    ) -> Result<GrainWriter> {
        if !def.is_discrete() {
            return Err(FlowError::InvalidArgument(
                "continuous audio flows are written with create_samples_writer".into(),
            ));
        }
        let (shape, hints) = self.shape_and_hints(def, options)?;
        // Readers of any uid register reliable cursors under the domain's cursor root.
        if let Err(e) = cursor::ensure_shared_dir(&self.path.join(cursor::CURSOR_ROOT)) {
            tracing::debug!("cannot prepare {}: {e}", cursor::CURSOR_ROOT);
        }
        let (files, created) = files::create_or_open(&self.path, def, shape, hints)?;
        GrainWriter::new(files, def.clone(), created, options)
    }

    /// Creates (or joins) a continuous audio flow.
    pub fn create_samples_writer(
        &self,
        def: &FlowDef,
        options: &WriterOptions,
    ) -> Result<SamplesWriter> {
        if def.is_discrete() {
            return Err(FlowError::InvalidArgument(
                "discrete flows are written with create_grain_writer".into(),
            ));
        }
        let (shape, hints) = self.shape_and_hints(def, options)?;
        let (files, created) = files::create_or_open(&self.path, def, shape, hints)?;
        SamplesWriter::new(files, def.clone(), created)
    }

    pub fn open_grain_reader(&self, id: Uuid, options: &ReaderOptions) -> Result<GrainReader> {
        GrainReader::open(&self.flow_dir(id), id, options)
    }

    /// Registers a reliable reader's cursor for flow `id` before (or whether or not) the flow
    /// exists, so a back-pressure writer that starts later waits for it from its first grain.
    /// Keep it until the reader has opened the flow with `ReaderOptions { reliable: true }`.
    /// The reliable readers' cursors on flow `id`, also those registered before the flow
    /// exists (a receiver waiting for its sender).
    pub fn readers(&self, id: Uuid) -> Vec<ReaderStatus> {
        cursor::list(&self.flow_dir(id))
    }

    pub fn register_cursor(&self, id: Uuid, next_index: u64) -> Result<ReaderCursor> {
        ReaderCursor::register(&self.flow_dir(id), next_index)
    }

    pub fn open_samples_reader(&self, id: Uuid) -> Result<SamplesReader> {
        SamplesReader::open(&self.flow_dir(id), id)
    }

    /// The flow's `flow_def.json` text (MXL `mxlGetFlowDef`).
    pub fn flow_def(&self, id: Uuid) -> Result<String> {
        let path = self.flow_dir(id).join("flow_def.json");
        fs::read_to_string(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => FlowError::NotFound { id },
            _ => FlowError::io(&path, e),
        })
    }

    /// Ids of the published flows, sorted.
    pub fn flow_ids(&self) -> Result<Vec<Uuid>> {
        let mut ids: Vec<Uuid> = fs::read_dir(&self.path)
            .map_err(|e| FlowError::io(&self.path, e))?
            .flatten()
            .filter_map(|e| {
                let name = e.file_name();
                let name = name.to_str()?;
                Uuid::parse_str(name.strip_suffix(FLOW_DIR_SUFFIX)?).ok()
            })
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// True while at least one writer holds the flow (MXL `mxlIsFlowActive`: a writer's
    /// shared lock on `data` makes an exclusive probe fail).
    pub fn is_flow_active(&self, id: Uuid) -> Result<bool> {
        let path = self.flow_dir(id).join("data");
        let file = File::open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => FlowError::NotFound { id },
            _ => FlowError::io(&path, e),
        })?;
        Ok(files::probe_active(&file))
    }

    /// Removes flows with no live writer, and `.mxl-tmp-*` directories left by a writer that
    /// died while creating a flow (MXL `mxlGarbageCollectFlows`, plus the temp directories).
    pub fn collect_garbage(&self) -> Result<GcReport> {
        let mut report = GcReport::default();
        for id in self.flow_ids()? {
            let dir = self.flow_dir(id);
            match File::open(dir.join("data")) {
                // Removed while holding the exclusive lock: no writer can join in between.
                Ok(data) if files::try_lock_exclusive(&data) => {
                    if fs::remove_dir_all(&dir).is_ok() {
                        report.removed_flows.push(id);
                    }
                }
                Ok(_) => report.active_flows += 1,
                // A flow directory without `data` is a leftover of an interrupted removal.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    if fs::remove_dir_all(&dir).is_ok() {
                        report.removed_flows.push(id);
                    }
                }
                Err(e) => return Err(FlowError::io(dir.join("data"), e)),
            }
        }
        let entries = fs::read_dir(&self.path).map_err(|e| FlowError::io(&self.path, e))?;
        for e in entries.flatten() {
            let name = e.file_name();
            if !name.to_string_lossy().starts_with(TMP_PREFIX) {
                continue;
            }
            let dir = e.path();
            let locked = File::open(dir.join("data"))
                .map(|f| files::probe_active(&f))
                .unwrap_or(false);
            let age = e
                .metadata()
                .ok()
                .and_then(|m| m.modified().ok())
                .and_then(|t| SystemTime::now().duration_since(t).ok())
                .unwrap_or_default();
            if !locked && age >= STALE_TMP_AGE && fs::remove_dir_all(&dir).is_ok() {
                report.removed_tmp_dirs += 1;
            }
        }
        report.removed_cursors = cursor::collect_garbage(&self.path);
        Ok(report)
    }

    /// Header, liveness and readers of one flow.
    pub fn status(&self, id: Uuid) -> Result<FlowStatus> {
        let dir = self.flow_dir(id);
        let files = files::open(&dir, id, false)?;
        let info = &files.header().info;
        let raw_def: Option<serde_json::Value> = self
            .flow_def(id)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
        let label = raw_def
            .as_ref()
            .and_then(|j| j.get("label")?.as_str().map(str::to_owned));
        let media_type = raw_def
            .as_ref()
            .and_then(|j| j.get("media_type")?.as_str().map(str::to_owned));
        let rate = Rational::new(
            info.common.grain_rate.numerator,
            info.common.grain_rate.denominator,
        );
        let head = info.runtime.head_index.load(Ordering::Acquire);
        let (grains, samples) = match files.shape {
            Shape::Discrete {
                slice_sizes,
                grain_count,
                ..
            } => (Some((grain_count, slice_sizes)), None),
            Shape::Continuous {
                channels,
                buffer_length,
                ..
            } => (None, Some((channels, buffer_length))),
        };
        let rt = &info.runtime;
        let eos = rt.mcm_magic.load(Ordering::Relaxed) == MCM_EXT_MAGIC
            && rt.mcm_flags.load(Ordering::Acquire) & MCM_EXT_END_OF_STREAM != 0;
        Ok(FlowStatus {
            id,
            label,
            media_type,
            version: info.version,
            format: info.common.format,
            rate,
            commit_batch_hint: info.common.max_commit_batch_size_hint,
            sync_batch_hint: info.common.max_sync_batch_size_hint,
            grains,
            samples,
            head_index: head,
            last_write_time: rt.last_write_time.load(Ordering::Relaxed),
            last_read_time: rt.last_read_time.load(Ordering::Relaxed),
            latency: current_index(rate) as i128 - head as i128,
            active: files::probe_active(&files.data_file),
            end_of_stream: eos,
            readers: cursor::list(&dir),
        })
    }
}

fn read_options(domain: &Path) -> Result<DomainOptions> {
    let path = domain.join("options.json");
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(DomainOptions::default()),
        Err(e) => return Err(FlowError::io(&path, e)),
    };
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| FlowError::corrupt(&path, format!("not JSON: {e}")))?;
    let history_ns = match json.get(HISTORY_DURATION_KEY) {
        None => DEFAULT_HISTORY_NS,
        Some(v) => v
            .as_u64()
            .or_else(|| v.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
            .filter(|&ns| (1_000_000..=60_000_000_000).contains(&ns))
            .ok_or_else(|| {
                FlowError::corrupt(
                    &path,
                    format!("{HISTORY_DURATION_KEY} = {v}: need 1 ms to 60 s in ns"),
                )
            })?,
    };
    Ok(DomainOptions { history_ns })
}
