//! A safetensors file read front to back in pieces of any size (network or cache chunks),
//! each tensor uploaded as its bytes arrive: the browser never holds a whole file.

use super::safetensors::{SafetensorsHeader, TensorEntry};
use super::{PendingTensor, TensorStore, WeightError};

/// Maps a file's tensor name to ours; None skips the tensor.
pub type Rename<'a> = Box<dyn Fn(&str) -> Option<String> + 'a>;

/// Where a stream's tensors go: GPU buffers ([`TensorStore`]) or a converter
/// ([`super::quantize_model::QuantizeStream`]).
pub trait TensorSink {
    type Pending;
    /// Sees every entry (our name or None when skipped), sorted by offset, before any data.
    fn header(&mut self, _entries: &[(Option<String>, TensorEntry)]) -> Result<(), WeightError> {
        Ok(())
    }
    fn begin(&mut self, name: &str, entry: &TensorEntry) -> Self::Pending;
    fn push(&mut self, pending: &mut Self::Pending, bytes: &[u8]);
    fn finish(&mut self, pending: Self::Pending);
}

impl TensorSink for TensorStore {
    type Pending = PendingTensor;
    /// A LoRA that misfits the file's weights is refused before their bytes are read.
    fn header(&mut self, entries: &[(Option<String>, TensorEntry)]) -> Result<(), WeightError> {
        self.check_lora_shapes(entries.iter().filter_map(|(name, entry)| {
            let shape = match (entry.quant, &entry.shape[..]) {
                (Some(_), [rows, blocks, _]) => vec![*rows, blocks * super::quant::BLOCK],
                _ => entry.shape.clone(),
            };
            Some((name.as_deref()?, shape))
        }))
    }
    fn begin(&mut self, name: &str, entry: &TensorEntry) -> PendingTensor {
        self.begin_tensor(name, entry.dtype, &entry.shape, entry.quant)
    }
    fn push(&mut self, pending: &mut PendingTensor, bytes: &[u8]) {
        self.push_tensor_bytes(pending, bytes)
    }
    fn finish(&mut self, pending: PendingTensor) {
        self.finish_tensor(pending)
    }
}

/// Parses the header, then routes each byte range to its tensor in file order.
pub struct SafetensorsStream<'a, P = PendingTensor> {
    file: String,
    file_size: u64,
    /// Bytes consumed so far (absolute file offset).
    position: u64,
    header_bytes: Vec<u8>,
    header_needed: usize,
    /// After the header: (our name or None to skip, entry), sorted by offset.
    entries: Vec<(Option<String>, TensorEntry)>,
    data_start: u64,
    next: usize,
    current: Option<P>,
    rename: Rename<'a>,
    header_done: bool,
}

impl<'a, P> SafetensorsStream<'a, P> {
    /// `file_size` is the size the file is known to have (from the cache or Content-Length);
    /// `rename` maps file names to ours, None skips a tensor.
    pub fn new(file: impl Into<String>, file_size: u64, rename: Rename<'a>) -> Self {
        Self {
            file: file.into(),
            file_size,
            position: 0,
            header_bytes: Vec::new(),
            header_needed: 8,
            entries: Vec::new(),
            data_start: 0,
            next: 0,
            current: None,
            rename,
            header_done: false,
        }
    }

    pub fn bytes_received(&self) -> u64 {
        self.position
    }

    /// Feeds the next bytes of the file.
    pub fn push<S: TensorSink<Pending = P>>(
        &mut self,
        store: &mut S,
        mut bytes: &[u8],
    ) -> Result<(), WeightError> {
        if self.position + bytes.len() as u64 > self.file_size {
            return Err(self.malformed(format!(
                "received more than the expected {} bytes",
                self.file_size
            )));
        }
        while !bytes.is_empty() {
            let used = if self.header_done {
                self.push_data(store, bytes)
            } else {
                self.push_header(store, bytes)?
            };
            self.position += used as u64;
            bytes = &bytes[used..];
        }
        // Zero-byte tensors right after the header or another tensor complete without data.
        if self.header_done {
            self.push_data(store, &[]);
        }
        Ok(())
    }

    /// Checks that the whole file arrived and every tensor is stored.
    pub fn finish<S: TensorSink<Pending = P>>(mut self, store: &mut S) -> Result<(), WeightError> {
        if self.header_done {
            self.push_data(store, &[]);
        }
        if self.file_size == 0 {
            return Err(self.malformed("the file is empty (0 bytes)".into()));
        }
        if !self.header_done && self.position == self.file_size {
            return Err(self.malformed(format!(
                "the file ended after {} bytes, inside its header ({} bytes needed)",
                self.position, self.header_needed
            )));
        }
        if self.position < self.file_size || !self.header_done || self.next < self.entries.len() {
            return Err(self.malformed(format!(
                "file ended after {} of {} bytes (truncated download?)",
                self.position, self.file_size
            )));
        }
        Ok(())
    }

    fn malformed(&self, why: String) -> WeightError {
        WeightError::Malformed {
            file: self.file.clone(),
            why,
        }
    }

    fn push_header<S: TensorSink<Pending = P>>(
        &mut self,
        store: &mut S,
        bytes: &[u8],
    ) -> Result<usize, WeightError> {
        let take = (self.header_needed - self.header_bytes.len()).min(bytes.len());
        self.header_bytes.extend_from_slice(&bytes[..take]);
        if self.header_bytes.len() == self.header_needed {
            match SafetensorsHeader::parse(&self.header_bytes, self.file_size, &self.file) {
                Err(WeightError::NeedMoreBytes(n)) => self.header_needed = n,
                Err(e) => return Err(e),
                Ok(header) => {
                    let mut entries: Vec<(Option<String>, TensorEntry)> = header
                        .tensors
                        .into_iter()
                        .map(|(name, entry)| ((self.rename)(&name), entry))
                        .collect();
                    entries.sort_by_key(|(_, e)| e.begin);
                    store.header(&entries)?;
                    self.entries = entries;
                    self.data_start = header.data_start;
                    self.header_done = true;
                    self.header_bytes = Vec::new();
                }
            }
        }
        Ok(take)
    }

    /// Consumes data-section bytes; returns how many were used (all, unless tensors ran out,
    /// in which case trailing bytes are skipped too).
    fn push_data<S: TensorSink<Pending = P>>(&mut self, store: &mut S, bytes: &[u8]) -> usize {
        let mut used = 0usize;
        loop {
            let Some((name, entry)) = self.entries.get(self.next) else {
                return bytes.len();
            };
            if entry.begin == entry.end {
                // Empty: complete wherever its offset points (it may name a byte inside the
                // previous tensor, which the overlap check allows for empty ones).
                if let Some(n) = name {
                    let pending = store.begin(n, entry);
                    store.finish(pending);
                }
                self.next += 1;
                continue;
            }
            let begin = self.data_start + entry.begin;
            let end = self.data_start + entry.end;
            let at = self.position + used as u64;
            if at < begin {
                // A gap before this tensor (unusual, but allowed by the format): skip it.
                let skip = ((begin - at) as usize).min(bytes.len() - used);
                used += skip;
                if used == bytes.len() {
                    return used;
                }
                continue;
            }
            if self.current.is_none() {
                self.current = name.as_ref().map(|n| store.begin(n, entry));
            }
            let take = ((end - at) as usize).min(bytes.len() - used);
            if let Some(pending) = self.current.as_mut() {
                store.push(pending, &bytes[used..used + take]);
            }
            used += take;
            if at + take as u64 == end {
                if let Some(pending) = self.current.take() {
                    store.finish(pending);
                }
                self.next += 1;
                continue;
            }
            return used;
        }
    }
}
