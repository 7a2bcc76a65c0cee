//! A copy of one [`LoraHead`] kept on the GPU between calls.
//!
//! `LoraHead` carries no change counter, so each slot keeps a shadow of what it uploaded and, on
//! every use, compares the head with it: `A` and the value head as a whole, `B` row by row over the
//! active rows. Only what differs crosses the bus (changed rows through the `scatter` kernel, rows
//! that left the active set as zeros). After a GPU Adam step the moved values are written on the GPU
//! itself and the shadow is updated from the head, so nothing is uploaded again.

use super::exec::{groups_for, Core, Pool};
use super::kernels::{Kernel, Kernels, Params};
use crate::adapter::LoraHead;
use crate::error::{Error, Result};

/// Whether two f32 slices hold the same bits (so that NaN and -0 count as changes only when they
/// are).
fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

/// One head's parameters on the device: `A` (`r x d`), `B` (`V x r`, zero outside the active rows),
/// the active row ids, and the value head (`d` weights then the bias).
#[derive(Debug)]
pub(super) struct HeadSlot {
    pub(super) r: usize,
    pub(super) d: usize,
    pub(super) vocab: usize,
    pub(super) scale: f32,
    pub(super) a: wgpu::Buffer,
    pub(super) b: wgpu::Buffer,
    pub(super) val: wgpu::Buffer,
    pub(super) act: wgpu::Buffer,
    shadow_a: Vec<f32>,
    shadow_rows: Vec<u32>,
    shadow_b: Vec<f32>,
    shadow_val: Vec<f32>,
}

fn buffer(core: &Core, label: &str, bytes: u64) -> Result<wgpu::Buffer> {
    let bytes = bytes.max(16).next_multiple_of(4);
    if bytes > core.max_binding {
        return Err(Error::Gpu(format!("{label} needs {bytes} bytes, above the device's binding limit of {}", core.max_binding)));
    }
    let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST | wgpu::BufferUsages::COPY_SRC;
    Ok(core.device.create_buffer(&wgpu::BufferDescriptor { label: Some(label), size: bytes, usage, mapped_at_creation: false }))
}

impl HeadSlot {
    /// An empty slot shaped for `head` (all of `B` zero, as wgpu zero-fills new buffers).
    fn new(core: &Core, head: &LoraHead) -> Result<HeadSlot> {
        let (r, d, vocab) = (head.rank(), head.hidden_size(), head.vocab_size());
        Ok(HeadSlot {
            r,
            d,
            vocab,
            scale: head.scale(),
            a: buffer(core, "lora A", 4 * (r * d) as u64)?,
            b: buffer(core, "lora B", 4 * (vocab * r) as u64)?,
            val: buffer(core, "value head", 4 * (d + 1) as u64)?,
            act: buffer(core, "active rows", 4 * head.active_rows().len().max(1) as u64)?,
            shadow_a: Vec::new(),
            shadow_rows: Vec::new(),
            shadow_b: Vec::new(),
            shadow_val: Vec::new(),
        })
    }

    /// Makes `slot` hold `head`, creating or reshaping it as needed, and returns the bytes uploaded.
    pub(super) fn sync(slot: &mut Option<HeadSlot>, core: &Core, kernels: &Kernels, pool: &mut Pool, head: &LoraHead) -> Result<u64> {
        let fits = slot.as_ref().is_some_and(|s| s.r == head.rank() && s.d == head.hidden_size() && s.vocab == head.vocab_size());
        if !fits {
            *slot = Some(HeadSlot::new(core, head)?);
        }
        match slot {
            Some(s) => s.update(core, kernels, pool, head),
            None => Err(Error::Gpu("no head slot".into())),
        }
    }

    fn update(&mut self, core: &Core, kernels: &Kernels, pool: &mut Pool, head: &LoraHead) -> Result<u64> {
        let r = self.r;
        let mut sent = 0u64;
        self.scale = head.scale();
        let a = head.a().as_slice().ok_or_else(|| Error::Gpu("A is not contiguous".into()))?;
        if !same_bits(a, &self.shadow_a) {
            core.upload(&self.a, 0, bytemuck::cast_slice(a));
            self.shadow_a = a.to_vec();
            sent += 4 * a.len() as u64;
        }
        let mut val: Vec<f32> = head.value_w().to_vec();
        val.push(head.value_b());
        if !same_bits(&val, &self.shadow_val) {
            core.upload(&self.val, 0, bytemuck::cast_slice(&val));
            sent += 4 * val.len() as u64;
            self.shadow_val = val;
        }
        // Rows of B that differ from the shadow, including rows that left the active set (now zero).
        let (old, new) = (&self.shadow_rows, head.active_rows());
        let zeros = vec![0.0f32; r];
        let (mut ids, mut vals) = (Vec::new(), Vec::new());
        let (mut i, mut j) = (0, 0);
        while i < old.len() || j < new.len() {
            match (old.get(i), new.get(j)) {
                (Some(&o), Some(&n)) if o == n => {
                    let row = head.b().row(n as usize);
                    let row = row.as_slice().ok_or_else(|| Error::Gpu("B is not contiguous".into()))?;
                    if !same_bits(row, &self.shadow_b[i * r..(i + 1) * r]) {
                        ids.push(n);
                        vals.extend_from_slice(row);
                    }
                    i += 1;
                    j += 1;
                }
                (Some(&o), Some(&n)) if o < n => {
                    ids.push(o);
                    vals.extend_from_slice(&zeros);
                    i += 1;
                }
                (Some(&o), None) => {
                    ids.push(o);
                    vals.extend_from_slice(&zeros);
                    i += 1;
                }
                (_, Some(&n)) => {
                    ids.push(n);
                    vals.extend(head.b().row(n as usize).iter().copied());
                    j += 1;
                }
                (None, None) => break,
            }
        }
        let rows_changed = old.as_slice() != new;
        if !ids.is_empty() {
            let id_buf = pool.get(core, "sync ids", 0, 4 * ids.len() as u64)?;
            let val_buf = pool.get(core, "sync rows", 0, 4 * vals.len() as u64)?;
            core.upload(&id_buf, 0, bytemuck::cast_slice(&ids));
            core.upload(&val_buf, 0, bytemuck::cast_slice(&vals));
            sent += 4 * (ids.len() + vals.len()) as u64;
            let mut work = core.work(kernels);
            let p = Params { r: r as u32, n_rows: ids.len() as u32, ..Params::default() };
            work.dispatch(Kernel::Scatter, &p, &[&id_buf, &val_buf, &self.b], groups_for(vals.len(), 64));
            work.submit();
        }
        if rows_changed {
            sent += self.set_active(core, new)?;
        }
        if !ids.is_empty() || rows_changed {
            self.shadow_rows = new.to_vec();
            self.shadow_b.clear();
            for &v in new {
                self.shadow_b.extend(head.b().row(v as usize).iter().copied());
            }
        }
        Ok(sent)
    }

    /// Uploads the active row list, growing its buffer when needed.
    fn set_active(&mut self, core: &Core, rows: &[u32]) -> Result<u64> {
        let bytes = 4 * rows.len() as u64;
        if bytes > self.act.size() {
            self.act = buffer(core, "active rows", bytes + bytes / 4)?;
        }
        core.upload(&self.act, 0, bytemuck::cast_slice(rows));
        Ok(bytes)
    }

    /// Records that the device copy now equals `head` after an Adam step wrote the moved values on
    /// the device (only the active list may still need an upload).
    pub(super) fn stepped(&mut self, core: &Core, head: &LoraHead) -> Result<u64> {
        let mut sent = 0;
        if self.shadow_rows.as_slice() != head.active_rows() {
            sent = self.set_active(core, head.active_rows())?;
            self.shadow_rows = head.active_rows().to_vec();
        }
        self.shadow_b.clear();
        for &v in head.active_rows() {
            self.shadow_b.extend(head.b().row(v as usize).iter().copied());
        }
        self.shadow_a = head.a().iter().copied().collect();
        self.shadow_val = head.value_w().to_vec();
        self.shadow_val.push(head.value_b());
        Ok(sent)
    }
}
