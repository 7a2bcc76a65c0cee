//! The device handle behind [`super::GpuDevice`] and the plumbing every operation shares: pooled
//! buffers, recording dispatches, reading results back, and turning wgpu errors into [`Error::Gpu`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use wgpu::util::DeviceExt;

use super::device::AdapterSummary;
use super::kernels::{Kernel, Kernels, Params};
use crate::error::{Error, Result};

/// How long one submission may run before the device is treated as hung.
const POLL_TIMEOUT: Duration = Duration::from_secs(600);

/// The smallest buffer the pool hands out (a binding of zero bytes is not allowed).
const MIN_BUFFER: u64 = 16;

/// A device, its queue, and what went wrong on it outside an error scope.
pub(super) struct Core {
    pub(super) device: wgpu::Device,
    pub(super) queue: wgpu::Queue,
    pub(super) info: AdapterSummary,
    /// The largest storage binding the device accepts, in bytes.
    pub(super) max_binding: u64,
    pub(super) lost: Arc<AtomicBool>,
    /// The last error no scope caught (the default handler would panic; ours records it).
    pub(super) uncaptured: Arc<Mutex<Option<String>>>,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core").field("adapter", &self.info.name).field("lost", &self.lost.load(Ordering::Relaxed)).finish()
    }
}

impl Core {
    /// Wraps a device, installing handlers so that a lost device or an uncaught error is recorded
    /// and logged instead of panicking.
    pub(super) fn new(device: wgpu::Device, queue: wgpu::Queue, info: AdapterSummary) -> Core {
        let lost = Arc::new(AtomicBool::new(false));
        let uncaptured = Arc::new(Mutex::new(None));
        let flag = Arc::clone(&lost);
        let name = info.name.clone();
        device.set_device_lost_callback(move |reason, msg| {
            flag.store(true, Ordering::SeqCst);
            log::warn!("GPU device {name} lost ({reason:?}): {msg}");
        });
        let sink = Arc::clone(&uncaptured);
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            log::warn!("uncaught GPU error: {e}");
            if let Ok(mut s) = sink.lock() {
                *s = Some(e.to_string());
            }
        }));
        let max_binding = device.limits().max_storage_buffer_binding_size;
        Core { device, queue, info, max_binding, lost, uncaptured }
    }

    fn check_alive(&self) -> Result<()> {
        if self.lost.load(Ordering::SeqCst) {
            return Err(Error::Gpu(format!("device {} was lost", self.info.name)));
        }
        if let Some(msg) = self.uncaptured.lock().ok().and_then(|mut s| s.take()) {
            return Err(Error::Gpu(msg));
        }
        Ok(())
    }

    /// Runs `f` inside error scopes: any validation, out-of-memory or internal error, and a lost
    /// device, comes back as [`Error::Gpu`].
    pub(super) fn guarded<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        self.check_alive()?;
        let internal = self.device.push_error_scope(wgpu::ErrorFilter::Internal);
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let out = f();
        let errors = [validation.pop(), oom.pop(), internal.pop()].map(pollster::block_on);
        if let Some(e) = errors.into_iter().flatten().next() {
            return Err(Error::Gpu(e.to_string()));
        }
        self.check_alive()?;
        out
    }

    /// Copies `data` into `buffer` at byte `offset`.
    pub(super) fn upload(&self, buffer: &wgpu::Buffer, offset: u64, data: &[u8]) {
        if !data.is_empty() {
            self.queue.write_buffer(buffer, offset, data);
        }
    }

    /// A command recorder for this device.
    pub(super) fn work<'a>(&'a self, kernels: &'a Kernels) -> Work<'a> {
        let enc = self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("attune") });
        Work { core: self, kernels, enc }
    }
}

/// Buffers kept between calls, by role and index, grown when a call needs more.
#[derive(Debug, Default)]
pub(super) struct Pool {
    bufs: HashMap<(&'static str, usize), wgpu::Buffer>,
}

impl Pool {
    /// A storage buffer of at least `bytes` bytes for `role` (contents unspecified).
    pub(super) fn get(&mut self, core: &Core, role: &'static str, index: usize, bytes: u64) -> Result<wgpu::Buffer> {
        let bytes = bytes.max(MIN_BUFFER).next_multiple_of(4);
        if bytes > core.max_binding {
            return Err(Error::Gpu(format!("{role} needs {bytes} bytes, above the device's binding limit of {}", core.max_binding)));
        }
        if let Some(b) = self.bufs.get(&(role, index)) {
            if b.size() >= bytes {
                return Ok(b.clone());
            }
        }
        // Grow by a quarter beyond the request so that slowly growing sizes do not reallocate each call.
        let size = (bytes + bytes / 4).next_multiple_of(256).min(core.max_binding.max(bytes));
        let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC;
        let b = core.device.create_buffer(&wgpu::BufferDescriptor { label: Some(role), size, usage, mapped_at_creation: false });
        self.bufs.insert((role, index), b.clone());
        Ok(b)
    }

    /// A mappable buffer of at least `bytes` bytes for reading results back.
    fn readback(&mut self, core: &Core, bytes: u64) -> Result<wgpu::Buffer> {
        let bytes = bytes.max(MIN_BUFFER).next_multiple_of(4);
        let limit = core.device.limits().max_buffer_size;
        if bytes > limit {
            return Err(Error::Gpu(format!("reading back {bytes} bytes, above the device's buffer limit of {limit}")));
        }
        if let Some(b) = self.bufs.get(&("readback", 0)) {
            if b.size() >= bytes {
                return Ok(b.clone());
            }
        }
        let usage = wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST;
        let size = (bytes + bytes / 4).next_multiple_of(256).min(limit);
        let b = core.device.create_buffer(&wgpu::BufferDescriptor { label: Some("readback"), size, usage, mapped_at_creation: false });
        self.bufs.insert(("readback", 0), b.clone());
        Ok(b)
    }
}

/// One buffer range to read back as f32 values (`words` values from byte `offset`).
pub(super) struct Read<'a> {
    pub(super) buffer: &'a wgpu::Buffer,
    pub(super) offset: u64,
    pub(super) words: usize,
}

/// Commands being recorded for one submission.
pub(super) struct Work<'a> {
    core: &'a Core,
    kernels: &'a Kernels,
    enc: wgpu::CommandEncoder,
}

impl Work<'_> {
    /// Records one dispatch of `k` with `params` at binding 0 and `bufs` at bindings 1.. in order.
    pub(super) fn dispatch(&mut self, k: Kernel, params: &Params, bufs: &[&wgpu::Buffer], groups: (u32, u32)) {
        if groups.0 == 0 || groups.1 == 0 {
            return;
        }
        let (pipeline, layout) = self.kernels.get(k);
        let uniform = self.core.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(k.name()),
            contents: bytemuck::bytes_of(params),
            usage: wgpu::BufferUsages::UNIFORM,
        });
        let mut entries = vec![wgpu::BindGroupEntry { binding: 0, resource: uniform.as_entire_binding() }];
        entries.extend(bufs.iter().enumerate().map(|(i, b)| wgpu::BindGroupEntry { binding: i as u32 + 1, resource: b.as_entire_binding() }));
        let bind = self.core.device.create_bind_group(&wgpu::BindGroupDescriptor { label: Some(k.name()), layout, entries: &entries });
        let mut pass = self.enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some(k.name()), timestamp_writes: None });
        pass.set_pipeline(pipeline);
        pass.set_bind_group(0, &bind, &[]);
        pass.dispatch_workgroups(groups.0, groups.1, 1);
    }

    /// Zeroes the first `bytes` bytes of `buffer`.
    pub(super) fn clear(&mut self, buffer: &wgpu::Buffer, bytes: u64) {
        let bytes = bytes.next_multiple_of(4).min(buffer.size());
        if bytes > 0 {
            self.enc.clear_buffer(buffer, 0, Some(bytes));
        }
    }

    /// Copies `bytes` bytes between buffers.
    pub(super) fn copy(&mut self, src: &wgpu::Buffer, src_off: u64, dst: &wgpu::Buffer, dst_off: u64, bytes: u64) {
        if bytes > 0 {
            self.enc.copy_buffer_to_buffer(src, src_off, dst, dst_off, bytes);
        }
    }

    /// Submits the recorded work without waiting for it.
    pub(super) fn submit(self) {
        self.core.queue.submit([self.enc.finish()]);
    }

    /// Submits the recorded work, waits for it, and returns the requested ranges as f32 values.
    pub(super) fn read(mut self, pool: &mut Pool, reads: &[Read<'_>]) -> Result<Vec<Vec<f32>>> {
        let total: u64 = reads.iter().map(|r| 4 * r.words as u64).sum();
        if total == 0 {
            self.submit();
            return Ok(reads.iter().map(|_| Vec::new()).collect());
        }
        let staging = pool.readback(self.core, total)?;
        let mut at = 0;
        for r in reads {
            self.copy(r.buffer, r.offset, &staging, at, 4 * r.words as u64);
            at += 4 * r.words as u64;
        }
        let index = self.core.queue.submit([self.enc.finish()]);
        let (tx, rx) = mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, 0..total, move |res| {
            // The receiver only goes away when the wait below failed; nothing is left to tell then.
            let _ = tx.send(res);
        });
        // Another thread polling the same device may run the callback; wait for it either way.
        let deadline = std::time::Instant::now() + POLL_TIMEOUT;
        loop {
            let waited = self.core.device.poll(wgpu::PollType::Wait { submission_index: Some(index.clone()), timeout: Some(POLL_TIMEOUT) });
            if let Err(e) = waited {
                return Err(Error::Gpu(format!("waiting for the GPU: {e}")));
            }
            match rx.recv_timeout(Duration::from_millis(5)) {
                Ok(Ok(())) => break,
                Ok(Err(e)) => return Err(Error::Gpu(format!("mapping the results: {e}"))),
                Err(mpsc::RecvTimeoutError::Timeout) if std::time::Instant::now() < deadline => {}
                Err(_) => return Err(Error::Gpu("the GPU finished without mapping the results".into())),
            }
        }
        let out = {
            let view = staging.get_mapped_range(0..total).map_err(|e| Error::Gpu(format!("reading the results: {e}")))?;
            let mut out = Vec::with_capacity(reads.len());
            let mut at = 0usize;
            for r in reads {
                let bytes = &view[at..at + 4 * r.words];
                out.push(bytemuck::pod_collect_to_vec::<u8, f32>(bytes));
                at += 4 * r.words;
            }
            out
        };
        staging.unmap();
        Ok(out)
    }
}

/// Workgroup counts `(x, y)` covering `n` invocations of `size` each, folding into y past the
/// per-dimension limit (kernels rebuild the index from `num_workgroups`).
pub(super) fn groups_for(n: usize, size: u32) -> (u32, u32) {
    let groups = n.div_ceil(size as usize);
    if groups == 0 {
        return (0, 0);
    }
    let x = groups.min(65_535);
    (x as u32, groups.div_ceil(x) as u32)
}
