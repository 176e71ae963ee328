//! Creating, publishing and opening the files of one flow, with validation of every header.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use rustix::fs::{FallocateFlags, FlockOperation, RenameFlags};
use uuid::Uuid;

use super::error::FlowError;
use super::layout::*;
use super::shm::Mapping;
use super::Result;
use crate::format::FlowDef;
use crate::time::now_tai_ns;

pub(crate) const FLOW_DIR_SUFFIX: &str = ".mxl-flow";
pub(crate) const TMP_PREFIX: &str = ".mxl-tmp-";
/// Largest ring accepted when opening a flow (a guard against corrupt headers).
const MAX_GRAIN_COUNT: u32 = 1 << 20;
const MAX_CHANNELS: u32 = 1024;

/// Geometry a writer asks for; compared against an existing flow it opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    Discrete {
        slice_sizes: [u32; 4],
        total_slices: u16,
        grain_count: u32,
        /// Bytes of mcm metadata after the payload (0: a plain MXL grain file).
        metadata_capacity: u32,
    },
    Continuous {
        channels: u32,
        buffer_length: u32,
        word_size: u32,
    },
}

/// Everything a flow's writer or reader maps.
pub(crate) struct FlowFiles {
    pub dir: PathBuf,
    pub id: Uuid,
    /// Inode of `data` when opened; a different inode at the path means the flow was recreated.
    pub inode: u64,
    pub data_file: File,
    pub data: Mapping,
    pub shape: Shape,
    /// Discrete flows: one (file, mapping) per ring slot.
    pub grains: Vec<(File, Mapping)>,
    /// Continuous flows: the channel rings.
    pub channels: Option<(File, Mapping)>,
}

impl FlowFiles {
    pub fn header(&self) -> &FlowData {
        self.data
            .header::<FlowData>(0)
            .expect("data mapping size and alignment checked at open")
    }

    pub fn grain_info(&self, slot: usize) -> &GrainInfo {
        self.grains[slot]
            .1
            .header::<GrainInfo>(0)
            .expect("grain mapping size and alignment checked at open")
    }

    pub fn data_path(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// True when `data` at the flow's path is gone or is another file than the one mapped.
    pub fn is_replaced(&self) -> bool {
        match fs::metadata(self.data_path()) {
            Ok(m) => m.ino() != self.inode,
            Err(_) => true,
        }
    }
}

pub(crate) fn flow_dir(domain: &Path, id: Uuid) -> PathBuf {
    domain.join(format!("{}{FLOW_DIR_SUFFIX}", id.as_hyphenated()))
}

fn create_file(path: &Path, len: u64) -> Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o664)
        .open(path)
        .map_err(|e| FlowError::io(path, e))?;
    // posix_fallocate makes tmpfs reserve the pages now rather than SIGBUS later.
    if rustix::fs::fallocate(&file, FallocateFlags::empty(), 0, len).is_err() {
        file.set_len(len).map_err(|e| FlowError::io(path, e))?;
    }
    Ok(file)
}

fn lock_shared(file: &File, path: &Path) -> Result<()> {
    rustix::fs::flock(file, FlockOperation::NonBlockingLockShared).map_err(|e| {
        FlowError::io(
            path,
            io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("cannot take the writer's shared lock (flow being removed?): {e}"),
            ),
        )
    })
}

fn map(file: &File, path: &Path, writable: bool) -> Result<Mapping> {
    Mapping::map(file, writable).map_err(|e| FlowError::io(path, e))
}

/// Creates and publishes a flow, or opens it read-write if it already exists.
/// Returns the files and whether this call created the flow.
pub(crate) fn create_or_open(
    domain: &Path,
    def: &FlowDef,
    shape: Shape,
    batch_hints: (u32, u32),
) -> Result<(FlowFiles, bool)> {
    let final_dir = flow_dir(domain, def.id);
    // A flow can vanish between looking and locking (its last writer or GC removing it):
    // retry a few times rather than join a deleted flow.
    for _ in 0..20 {
        if final_dir.exists() {
            match open_existing_for_writer(&final_dir, def.id, shape) {
                Ok(files) if !files.is_replaced() => return Ok((files, false)),
                Ok(_) | Err(FlowError::NotFound { .. }) => {}
                Err(FlowError::Io { source, .. }) if source.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                Err(e) => return Err(e),
            }
            continue;
        }
        if let Some(created) = try_create(domain, &final_dir, def, shape, batch_hints)? {
            return Ok((created, true));
        }
    }
    Err(FlowError::Conflict {
        id: def.id,
        reason: "the flow kept being removed and recreated while joining it".into(),
    })
}

/// Creates and publishes the flow; `None` if another writer published it first.
fn try_create(
    domain: &Path,
    final_dir: &Path,
    def: &FlowDef,
    shape: Shape,
    batch_hints: (u32, u32),
) -> Result<Option<FlowFiles>> {
    let tmp = tempfile::Builder::new()
        .prefix(TMP_PREFIX)
        .rand_bytes(16)
        .tempdir_in(domain)
        .map_err(|e| FlowError::io(domain, e))?;
    let files = populate(tmp.path(), def, shape, batch_hints)?;
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755))
        .map_err(|e| FlowError::io(tmp.path(), e))?;
    let tmp_name = tmp.path().file_name().unwrap_or(OsStr::new("")).to_owned();
    let domain_dir = File::open(domain).map_err(|e| FlowError::io(domain, e))?;
    let final_name = final_dir.file_name().unwrap_or(OsStr::new(""));
    match rustix::fs::renameat_with(
        &domain_dir,
        &tmp_name,
        &domain_dir,
        final_name,
        RenameFlags::NOREPLACE,
    ) {
        Ok(()) => {
            let _ = tmp.keep();
            let mut files = files;
            files.dir = final_dir.to_owned();
            Ok(Some(files))
        }
        // Another writer published first: ours is discarded (the TempDir removes it).
        Err(rustix::io::Errno::EXIST | rustix::io::Errno::NOTEMPTY) => Ok(None),
        Err(e) => Err(FlowError::io(final_dir, e)),
    }
}

fn populate(dir: &Path, def: &FlowDef, shape: Shape, hints: (u32, u32)) -> Result<FlowFiles> {
    let def_path = dir.join("flow_def.json");
    let mut f = File::create(&def_path).map_err(|e| FlowError::io(&def_path, e))?;
    f.write_all(def.to_json_string().as_bytes())
        .map_err(|e| FlowError::io(&def_path, e))?;
    if matches!(shape, Shape::Discrete { .. }) {
        let access = dir.join("access");
        File::create(&access).map_err(|e| FlowError::io(&access, e))?;
    }

    let data_path = dir.join("data");
    let data_file = create_file(&data_path, FLOW_DATA_SIZE as u64)?;
    lock_shared(&data_file, &data_path)?;
    let mut data = map(&data_file, &data_path, true)?;
    let inode = data_file
        .metadata()
        .map_err(|e| FlowError::io(&data_path, e))?
        .ino();
    init_flow_data(&mut data, def, shape, hints, inode)?;

    let mut grains = Vec::new();
    let mut channels = None;
    match shape {
        Shape::Discrete {
            slice_sizes,
            total_slices,
            grain_count,
            metadata_capacity,
        } => {
            let grain_dir = dir.join("grains");
            fs::create_dir(&grain_dir).map_err(|e| FlowError::io(&grain_dir, e))?;
            let grain_size: u64 =
                slice_sizes.iter().map(|&s| u64::from(s)).sum::<u64>() * u64::from(total_slices);
            for slot in 0..grain_count {
                let path = grain_dir.join(format!("data.{slot}"));
                let meta = match metadata_capacity {
                    0 => 0,
                    cap => 8 + u64::from(cap).div_ceil(8) * 8,
                };
                let file = create_file(&path, GRAIN_PAYLOAD_OFFSET as u64 + grain_size + meta)?;
                lock_shared(&file, &path)?;
                let mut m = map(&file, &path, true)?;
                let mut head = [0u8; 0x1C];
                head[0x00..0x04].copy_from_slice(&GRAIN_INFO_VERSION.to_ne_bytes());
                head[0x04..0x08].copy_from_slice(&4096u32.to_ne_bytes());
                // No grain has this index: a slot never written is never read as grain 0.
                head[0x08..0x10].copy_from_slice(&u64::MAX.to_ne_bytes());
                head[0x14..0x18].copy_from_slice(&(grain_size as u32).to_ne_bytes());
                head[0x18..0x1A].copy_from_slice(&total_slices.to_ne_bytes());
                m.bytes_mut(0, head.len()).copy_from_slice(&head);
                grains.push((file, m));
            }
        }
        Shape::Continuous {
            channels: ch,
            buffer_length,
            word_size,
        } => {
            let path = dir.join("channels");
            let len = u64::from(ch) * u64::from(buffer_length) * u64::from(word_size);
            let file = create_file(&path, len)?;
            lock_shared(&file, &path)?;
            let m = map(&file, &path, true)?;
            channels = Some((file, m));
        }
    }

    Ok(FlowFiles {
        dir: dir.to_owned(),
        id: def.id,
        inode,
        data_file,
        data,
        shape,
        grains,
        channels,
    })
}

fn init_flow_data(
    data: &mut Mapping,
    def: &FlowDef,
    shape: Shape,
    (commit_hint, sync_hint): (u32, u32),
    inode: u64,
) -> Result<()> {
    // The file is fresh and not yet published, so the header is written as one byte image.
    let mut bytes = [0u8; FLOW_DATA_SIZE];
    let put32 =
        |b: &mut [u8], off: usize, v: u32| b[off..off + 4].copy_from_slice(&v.to_ne_bytes());
    let put64 =
        |b: &mut [u8], off: usize, v: u64| b[off..off + 8].copy_from_slice(&v.to_ne_bytes());
    put32(&mut bytes, 0x000, FLOW_INFO_VERSION);
    put32(&mut bytes, 0x004, 2048);
    bytes[0x008..0x018].copy_from_slice(def.id.as_bytes());
    put32(&mut bytes, 0x018, def.data_format());
    let rate = def.index_rate();
    put64(&mut bytes, 0x020, rate.numerator as u64);
    put64(&mut bytes, 0x028, rate.denominator as u64);
    put32(&mut bytes, 0x030, commit_hint);
    put32(&mut bytes, 0x034, sync_hint);
    put32(&mut bytes, 0x038, 0); // payload in host memory
    put32(&mut bytes, 0x03C, u32::MAX); // deviceIndex -1
    match shape {
        Shape::Discrete {
            slice_sizes,
            grain_count,
            ..
        } => {
            for (i, s) in slice_sizes.iter().enumerate() {
                put32(&mut bytes, 0x088 + 4 * i, *s);
            }
            put32(&mut bytes, 0x098, grain_count);
        }
        Shape::Continuous {
            channels,
            buffer_length,
            ..
        } => {
            put32(&mut bytes, 0x088, channels);
            put32(&mut bytes, 0x08C, buffer_length);
        }
    }
    let now = now_tai_ns();
    put64(&mut bytes, 0x0D0, now);
    put64(&mut bytes, 0x0D8, now);
    put32(&mut bytes, 0x0E0, MCM_EXT_MAGIC);
    put64(&mut bytes, 0x800, inode);
    data.bytes_mut(0, FLOW_DATA_SIZE).copy_from_slice(&bytes);
    Ok(())
}

fn open_existing_for_writer(dir: &Path, id: Uuid, want: Shape) -> Result<FlowFiles> {
    let files = open(dir, id, true)?;
    let same = match (files.shape, want) {
        (
            Shape::Discrete {
                slice_sizes: a,
                total_slices: ta,
                ..
            },
            Shape::Discrete {
                slice_sizes: b,
                total_slices: tb,
                ..
            },
        ) => a == b && ta == tb,
        (a @ Shape::Continuous { .. }, b @ Shape::Continuous { .. }) => {
            let strip = |s: Shape| match s {
                Shape::Continuous {
                    channels,
                    word_size,
                    ..
                } => (channels, word_size),
                _ => (0, 0),
            };
            strip(a) == strip(b)
        }
        _ => false,
    };
    if !same {
        return Err(FlowError::Conflict {
            id,
            reason: format!("existing {:?}, requested {:?}", files.shape, want),
        });
    }
    Ok(files)
}

/// Opens an existing flow: read-only for readers, read-write with shared locks for writers.
pub(crate) fn open(dir: &Path, id: Uuid, writable: bool) -> Result<FlowFiles> {
    let data_path = dir.join("data");
    let data_file = match OpenOptions::new()
        .read(true)
        .write(writable)
        .open(&data_path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(FlowError::NotFound { id }),
        Err(e) => return Err(FlowError::io(&data_path, e)),
    };
    let meta = data_file
        .metadata()
        .map_err(|e| FlowError::io(&data_path, e))?;
    if (meta.len() as usize) < FLOW_DATA_SIZE {
        return Err(FlowError::corrupt(
            &data_path,
            format!("{} bytes, a flow header needs {FLOW_DATA_SIZE}", meta.len()),
        ));
    }
    if writable {
        lock_shared(&data_file, &data_path)?;
    }
    let data = map(&data_file, &data_path, writable)?;
    let header = data
        .header::<FlowData>(0)
        .ok_or_else(|| FlowError::corrupt(&data_path, "header does not fit the mapping"))?;
    let info = &header.info;
    if info.version != FLOW_INFO_VERSION {
        return Err(FlowError::Version {
            file: data_path,
            what: "flow header",
            found: info.version,
            expected: FLOW_INFO_VERSION,
        });
    }
    if info.size != 2048 {
        return Err(FlowError::corrupt(
            &data_path,
            format!("info size {} != 2048", info.size),
        ));
    }
    if info.common.id != *id.as_bytes() {
        return Err(FlowError::corrupt(
            &data_path,
            "flow id in header does not match its directory",
        ));
    }
    let rate = info.common.grain_rate;
    if rate.numerator <= 0 || rate.denominator <= 0 {
        return Err(FlowError::corrupt(
            &data_path,
            format!("grain rate {}/{}", rate.numerator, rate.denominator),
        ));
    }
    let format = info.common.format;
    let (shape, grains, channels) = if format == DATA_FORMAT_AUDIO {
        let c = info.continuous();
        open_continuous(dir, c, writable)?
    } else if format <= DATA_FORMAT_DATA {
        let d = info.discrete();
        open_discrete(dir, d, writable)?
    } else {
        return Err(FlowError::corrupt(
            &data_path,
            format!("unknown data format {format}"),
        ));
    };
    Ok(FlowFiles {
        dir: dir.to_owned(),
        id,
        inode: meta.ino(),
        data_file,
        data,
        shape,
        grains,
        channels,
    })
}

type Opened = (Shape, Vec<(File, Mapping)>, Option<(File, Mapping)>);

fn open_discrete(dir: &Path, d: DiscreteFlowInfo, writable: bool) -> Result<Opened> {
    let data_path = dir.join("data");
    if d.grain_count == 0 || d.grain_count > MAX_GRAIN_COUNT {
        return Err(FlowError::corrupt(
            &data_path,
            format!("grain count {}", d.grain_count),
        ));
    }
    let per_slice: u64 = d.slice_sizes.iter().map(|&s| u64::from(s)).sum();
    if per_slice == 0 {
        return Err(FlowError::corrupt(&data_path, "all slice sizes are 0"));
    }
    let mut grains = Vec::with_capacity(d.grain_count as usize);
    let mut total_slices = 0u16;
    for slot in 0..d.grain_count {
        let path = dir.join("grains").join(format!("data.{slot}"));
        let file = OpenOptions::new()
            .read(true)
            .write(writable)
            .open(&path)
            .map_err(|e| FlowError::io(&path, e))?;
        let len = file.metadata().map_err(|e| FlowError::io(&path, e))?.len();
        if len < GRAIN_PAYLOAD_OFFSET as u64 {
            return Err(FlowError::corrupt(
                &path,
                format!("{len} bytes, shorter than the 8192-byte grain header"),
            ));
        }
        if writable {
            lock_shared(&file, &path)?;
        }
        let m = map(&file, &path, writable)?;
        let gi = m
            .header::<GrainInfo>(0)
            .ok_or_else(|| FlowError::corrupt(&path, "grain header does not fit"))?;
        if gi.version != GRAIN_INFO_VERSION {
            return Err(FlowError::Version {
                file: path,
                what: "grain header",
                found: gi.version,
                expected: GRAIN_INFO_VERSION,
            });
        }
        if gi.size != 4096 {
            return Err(FlowError::corrupt(
                &path,
                format!("grain info size {} != 4096", gi.size),
            ));
        }
        let total = gi.total_slices.load(Ordering::Relaxed);
        if total == 0 || (slot > 0 && total != total_slices) {
            return Err(FlowError::corrupt(&path, format!("total slices {total}")));
        }
        total_slices = total;
        let capacity = per_slice * u64::from(total);
        if len < GRAIN_PAYLOAD_OFFSET as u64 + capacity {
            return Err(FlowError::corrupt(
                &path,
                format!(
                    "{len} bytes, the grain needs {}",
                    GRAIN_PAYLOAD_OFFSET as u64 + capacity
                ),
            ));
        }
        grains.push((file, m));
    }
    Ok((
        Shape::Discrete {
            slice_sizes: d.slice_sizes,
            total_slices,
            grain_count: d.grain_count,
            metadata_capacity: 0,
        },
        grains,
        None,
    ))
}

fn open_continuous(dir: &Path, c: ContinuousFlowInfo, writable: bool) -> Result<Opened> {
    let path = dir.join("channels");
    if c.channel_count == 0 || c.channel_count > MAX_CHANNELS || c.buffer_length < 2 {
        return Err(FlowError::corrupt(
            dir.join("data"),
            format!(
                "{} channels of {} samples",
                c.channel_count, c.buffer_length
            ),
        ));
    }
    let file = OpenOptions::new()
        .read(true)
        .write(writable)
        .open(&path)
        .map_err(|e| FlowError::io(&path, e))?;
    let len = file.metadata().map_err(|e| FlowError::io(&path, e))?.len();
    let samples = u64::from(c.channel_count) * u64::from(c.buffer_length);
    let word_size = match len / samples {
        w @ (4 | 8) if len % samples == 0 => w as u32,
        _ => {
            return Err(FlowError::corrupt(
                &path,
                format!("{len} bytes is not {samples} samples of 4 or 8 bytes"),
            ))
        }
    };
    if writable {
        lock_shared(&file, &path)?;
    }
    let m = map(&file, &path, writable)?;
    Ok((
        Shape::Continuous {
            channels: c.channel_count,
            buffer_length: c.buffer_length,
            word_size,
        },
        Vec::new(),
        Some((file, m)),
    ))
}

/// Tries to upgrade a writer's shared lock on `data` to exclusive: true means no other
/// writer holds the flow (the caller is the last one). The lock stays held until unlocked
/// or the file is closed, so the caller can remove the flow before anyone joins it.
pub(crate) fn try_lock_exclusive(file: &File) -> bool {
    rustix::fs::flock(file, FlockOperation::NonBlockingLockExclusive).is_ok()
}

/// True while a writer holds the flow: an exclusive probe that is released at once.
pub(crate) fn probe_active(file: &File) -> bool {
    if try_lock_exclusive(file) {
        let _ = rustix::fs::flock(file, FlockOperation::Unlock);
        false
    } else {
        true
    }
}
