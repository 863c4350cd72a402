//! BPF_MAP_UPDATE_BATCH for array maps (kernel >= 5.6): one syscall writes a whole Maglev ring,
//! where per-element updates cost one syscall per slot (65537 for a default ring).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// `enum bpf_cmd`: BPF_MAP_UPDATE_BATCH.
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;

/// The `batch` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Writes `values[i]` at index `first + i` of the u32 array map `fd`. On an error, returns it
/// with the number of elements the kernel had written (they stay written).
pub fn update_u32_array(
    fd: BorrowedFd<'_>,
    first: u32,
    values: &[u32],
) -> Result<(), (io::Error, u32)> {
    let len = u32::try_from(values.len())
        .map_err(|_| (io::Error::from(io::ErrorKind::InvalidInput), 0))?;
    let keys: Vec<u32> = (0..len).map(|i| first + i).collect();
    let mut attr = BatchAttr {
        keys: keys.as_ptr() as u64,
        values: values.as_ptr() as u64,
        count: len,
        map_fd: fd.as_raw_fd() as u32,
        ..Default::default()
    };
    // SAFETY: `attr` is a valid bpf_attr prefix (the kernel zero-fills the rest); `keys` and
    // `values` hold `count` u32s each and outlive the call; the kernel writes only `attr.count`.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_UPDATE_BATCH,
            &mut attr as *mut BatchAttr,
            std::mem::size_of::<BatchAttr>() as libc::c_uint,
        )
    };
    if rc < 0 {
        return Err((io::Error::last_os_error(), attr.count));
    }
    Ok(())
}
