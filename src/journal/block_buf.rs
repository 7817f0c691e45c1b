//! A chunk's bytes in memory aligned to [`BLOCK`], so that the journal
//! thread can hand them to a segment opened for direct I/O as they are:
//! the disk reads them from the worker's memory, where a buffered write
//! copied every journaled byte into the page cache first (an eighth of the
//! collector's CPU at a million rows a second) and left it for the kernel
//! to write back again.
//!
//! A `Vec<u8>` cannot be asked for this alignment (the allocator gives 16
//! bytes), hence this small owner of one aligned allocation.

use std::alloc::{self, Layout};
use std::ptr::NonNull;

/// The alignment of the memory, and the unit a direct write's length and
/// offset come in: the largest logical block size of common disks (512 on
/// this machine's virtio disk, 4096 on many NVMe and cloud volumes).
pub const BLOCK: usize = 4096;

/// The layout of an allocation of `bytes` (a multiple of [`BLOCK`]).
fn layout_of(bytes: usize) -> Layout {
    Layout::from_size_align(bytes, BLOCK).expect("a chunk's size fits a layout")
}

/// A growable byte buffer whose memory starts on a [`BLOCK`] boundary.
pub struct BlockBuf {
    ptr: NonNull<u8>,
    len: usize,
    /// Bytes allocated: 0 (nothing allocated yet) or a multiple of `BLOCK`.
    cap: usize,
}

// SAFETY: a `BlockBuf` owns its allocation exclusively, as a `Vec<u8>`
// does; nothing else points into it.
unsafe impl Send for BlockBuf {}

impl BlockBuf {
    pub fn new() -> BlockBuf {
        BlockBuf {
            ptr: NonNull::dangling(),
            len: 0,
            cap: 0,
        }
    }

    /// An empty buffer with room for `bytes` without growing.
    pub fn with_capacity(bytes: usize) -> BlockBuf {
        let mut b = BlockBuf::new();
        b.reserve(bytes);
        b
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.cap
    }

    pub fn clear(&mut self) {
        self.len = 0;
    }

    #[inline]
    pub fn push(&mut self, byte: u8) {
        self.extend_from_slice(&[byte]);
    }

    #[inline]
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        self.reserve(bytes.len());
        // SAFETY: `reserve` made `cap - len >= bytes.len()`, so the
        // destination lies inside the allocation, and `bytes` cannot
        // overlap it (`&mut self` is exclusive).
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.ptr.as_ptr().add(self.len),
                bytes.len(),
            );
        }
        self.len += bytes.len();
    }

    /// Fills up to the next multiple of [`BLOCK`] with `fill`, so that the
    /// whole buffer is one direct write.
    pub fn pad_to_block(&mut self, fill: u8) {
        let pad = self.len.next_multiple_of(BLOCK) - self.len;
        self.reserve(pad);
        // SAFETY: as in `extend_from_slice`, the `pad` bytes from `len` on
        // are inside the allocation.
        unsafe { std::ptr::write_bytes(self.ptr.as_ptr().add(self.len), fill, pad) };
        self.len += pad;
    }

    /// Makes room for `more` bytes beyond `len`: a comparison, inlined
    /// into each push of a datagram's line, and rarely a growth.
    #[inline]
    fn reserve(&mut self, more: usize) {
        if self.cap - self.len < more {
            self.grow(more);
        }
    }

    /// At least doubles the allocation, to hold `more` bytes beyond `len`.
    #[cold]
    fn grow(&mut self, more: usize) {
        let need = self
            .len
            .checked_add(more)
            .expect("a journal chunk of 2^64 bytes");
        let cap = need.max(self.cap * 2).next_multiple_of(BLOCK);
        let layout = layout_of(cap);
        let ptr = if self.cap == 0 {
            // SAFETY: `layout` has a non-zero size (`cap >= need > 0`, as
            // `grow` is called only when `more` does not fit).
            unsafe { alloc::alloc(layout) }
        } else {
            // SAFETY: `ptr` was allocated by this allocator with the
            // layout of `self.cap`, which is non-zero; the new block keeps
            // that layout's alignment.
            unsafe { alloc::realloc(self.ptr.as_ptr(), layout_of(self.cap), cap) }
        };
        self.ptr = NonNull::new(ptr).unwrap_or_else(|| alloc::handle_alloc_error(layout));
        self.cap = cap;
    }
}

/// For `write!` of what has no faster formatting (an IPv6 address).
impl std::io::Write for BlockBuf {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl std::ops::Deref for BlockBuf {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: the first `len` bytes were written (`extend_from_slice`,
        // `pad_to_block`), and a dangling pointer is valid for `len == 0`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for BlockBuf {
    fn drop(&mut self) {
        if self.cap > 0 {
            // SAFETY: allocated by this allocator with this layout.
            unsafe { alloc::dealloc(self.ptr.as_ptr(), layout_of(self.cap)) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_stay_aligned_and_whole_as_the_buffer_grows() {
        let mut b = BlockBuf::new();
        assert!(b.is_empty() && b[..].is_empty());
        let mut want = Vec::new();
        for i in 0..20_000u32 {
            let line = format!("{i} row\n");
            b.extend_from_slice(line.as_bytes());
            want.extend_from_slice(line.as_bytes());
            assert_eq!(b.as_ptr() as usize % BLOCK, 0);
        }
        b.push(b'x');
        want.push(b'x');
        assert_eq!(&b[..], &want[..]);
        b.pad_to_block(b'\n');
        assert_eq!(b.len() % BLOCK, 0);
        assert_eq!(&b[..want.len()], &want[..]);
        assert!(b[want.len()..].iter().all(|c| *c == b'\n'));
        // Padding a full block adds nothing; a cleared buffer keeps its room.
        let len = b.len();
        b.pad_to_block(b'\n');
        assert_eq!(b.len(), len);
        let cap = b.capacity();
        b.clear();
        b.extend_from_slice(b"again");
        assert_eq!((&b[..], b.capacity()), (&b"again"[..], cap));
        assert_eq!(BlockBuf::with_capacity(1).capacity(), BLOCK);
    }
}
