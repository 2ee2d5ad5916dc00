//! All pointer handling of the C boundary: turning owned Rust values into opaque handles and
//! back, borrowing what a C caller passes in (handles, buffers, strings, versioned structs) and
//! writing results through out-pointers. Every other `src/ffi` file works with references and
//! slices only; the null checks and the `unsafe` they need live here.
//!
//! Safety contract with C (stated in the header for every function): a non-NULL pointer points to
//! what its type says, for as long as the call lasts; buffers hold at least the length passed
//! with them; handles come from the matching `*_create` and are not yet destroyed. Nothing here
//! can check those promises, only NULL.

use std::ffi::{c_char, CStr};

use super::status::Failure;

/// Binds an opaque C type (a zero-sized marker) to the one Rust type its pointers really point
/// to. Handles are always created by [`into_raw`] from a `Box<Target>`.
pub(crate) trait Handle {
    /// The Rust value behind the handle.
    type Target;
    /// Name used in error messages (`edgellm_runtime`).
    const NAME: &'static str;
}

/// Moves `value` to the heap and returns it as a handle that C owns until the matching destroy.
pub(crate) fn into_raw<H: Handle>(value: H::Target) -> *mut H {
    Box::into_raw(Box::new(value)).cast::<H>()
}

/// Borrows the value behind a handle for the duration of one call.
pub(crate) fn borrow<'a, H: Handle>(ptr: *const H) -> Result<&'a H::Target, Failure> {
    // SAFETY: a non-NULL handle came from `into_raw::<H>` and is alive (header contract), so it
    // points to a valid `H::Target`; shared access is what the header allows concurrently.
    unsafe { ptr.cast::<H::Target>().as_ref() }.ok_or_else(|| Failure::null(H::NAME))
}

/// Borrows the value behind a handle mutably; the header forbids concurrent use of such handles.
pub(crate) fn borrow_mut<'a, H: Handle>(ptr: *mut H) -> Result<&'a mut H::Target, Failure> {
    // SAFETY: as in `borrow`; the caller promised exclusive use of this handle during the call.
    unsafe { ptr.cast::<H::Target>().as_mut() }.ok_or_else(|| Failure::null(H::NAME))
}

/// Frees a handle made by [`into_raw`]; NULL is ignored.
pub(crate) fn destroy<H: Handle>(ptr: *mut H) {
    if !ptr.is_null() {
        // SAFETY: the handle came from `Box::into_raw` in `into_raw` and C gives up ownership
        // here; the header says it must not be used again.
        drop(unsafe { Box::from_raw(ptr.cast::<H::Target>()) });
    }
}

/// Reads the input slice `ptr[0..len]`; an empty slice needs no pointer, a NULL with `len > 0`
/// is an error naming `what`.
pub(crate) fn slice<'a, T>(ptr: *const T, len: usize, what: &str) -> Result<&'a [T], Failure> {
    if len == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() {
        return Err(Failure::null(what));
    }
    // SAFETY: non-NULL, and the caller promised `len` readable, initialised elements.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// Output buffer `ptr[0..cap]`; a zero capacity (size query) needs no pointer.
pub(crate) fn slice_mut<'a, T>(ptr: *mut T, cap: usize, what: &str) -> Result<&'a mut [T], Failure> {
    if cap == 0 {
        return Ok(&mut []);
    }
    if ptr.is_null() {
        return Err(Failure::null(what));
    }
    // SAFETY: non-NULL, and the caller promised `cap` writable elements that nothing else uses
    // during the call.
    Ok(unsafe { std::slice::from_raw_parts_mut(ptr, cap) })
}

/// Text given as pointer + byte length, checked to be UTF-8.
pub(crate) fn str_with_len<'a>(ptr: *const c_char, len: usize, what: &str) -> Result<&'a str, Failure> {
    utf8(slice(ptr.cast::<u8>(), len, what)?, what)
}

/// A NUL-terminated string, checked to be UTF-8; NULL is an error naming `what`.
pub(crate) fn c_str<'a>(ptr: *const c_char, what: &str) -> Result<&'a str, Failure> {
    opt_c_str(ptr, what)?.ok_or_else(|| Failure::null(what))
}

/// A NUL-terminated string that may be NULL (meaning "not given").
pub(crate) fn opt_c_str<'a>(ptr: *const c_char, what: &str) -> Result<Option<&'a str>, Failure> {
    if ptr.is_null() {
        return Ok(None);
    }
    // SAFETY: non-NULL, and the caller promised a NUL-terminated string alive for the call.
    let bytes = unsafe { CStr::from_ptr(ptr) }.to_bytes();
    utf8(bytes, what).map(Some)
}

fn utf8<'a>(bytes: &'a [u8], what: &str) -> Result<&'a str, Failure> {
    std::str::from_utf8(bytes).map_err(|e| {
        Failure::from(crate::Error::InvalidUtf8(format!(
            "{what} is not valid UTF-8 (bad byte at offset {})",
            e.valid_up_to()
        )))
    })
}

/// Writes `value` through a required out-pointer.
pub(crate) fn write<T>(out: *mut T, value: T, what: &str) -> Result<(), Failure> {
    if out.is_null() {
        return Err(Failure::null(what));
    }
    // SAFETY: non-NULL and, per the header, points to writable storage for one `T`.
    unsafe { out.write(value) };
    Ok(())
}

/// Checks that a required out-pointer is non-NULL before any work is done, so that a failure
/// leaves nothing half-done.
pub(crate) fn require_out<T>(out: *mut T, what: &str) -> Result<(), Failure> {
    if out.is_null() {
        Err(Failure::null(what))
    } else {
        Ok(())
    }
}

/// Writes `value` through an optional out-pointer (NULL means the caller does not want it).
pub(crate) fn write_opt<T>(out: *mut T, value: T) {
    if !out.is_null() {
        // SAFETY: non-NULL and, per the header, points to writable storage for one `T`.
        unsafe { out.write(value) };
    }
}

/// A `#[repr(C)]` parameter struct whose first field is `uint32_t struct_size`, so that fields
/// can be appended in later versions without breaking callers built against an older header.
pub(crate) trait Versioned: Copy + Default {
    /// Smallest `struct_size` accepted: the size of the first published version.
    const MIN_SIZE: usize;
    /// Name used in error messages.
    const NAME: &'static str;
}

/// Reads a versioned struct: NULL gives the defaults; a struct from an older header (smaller
/// `struct_size`) is read up to its size and the newer fields keep their defaults.
pub(crate) fn read_versioned<T: Versioned>(ptr: *const T) -> Result<T, Failure> {
    let mut value = T::default();
    if ptr.is_null() {
        return Ok(value);
    }
    // SAFETY: non-NULL and the header says the struct starts with `uint32_t struct_size`.
    let size = unsafe { ptr.cast::<u32>().read_unaligned() } as usize;
    if size < T::MIN_SIZE || size > std::mem::size_of::<T>() {
        return Err(Failure::from(crate::Error::InvalidArgument(format!(
            "{}.struct_size is {size}; this library accepts {} to {} (fill the struct with the \
             matching *_default_params() function)",
            T::NAME,
            T::MIN_SIZE,
            std::mem::size_of::<T>()
        ))));
    }
    // SAFETY: the caller's struct holds `size` readable bytes, `size` fits in `value`, and every
    // field type of a `Versioned` struct (integers, floats) is valid for any bit pattern.
    unsafe {
        std::ptr::copy_nonoverlapping(ptr.cast::<u8>(), (&mut value as *mut T).cast::<u8>(), size);
    }
    Ok(value)
}

/// Writes a versioned output struct: only the first `struct_size` bytes the caller declared
/// (a caller built against an older header gets the fields it knows; `struct_size` is kept).
pub(crate) fn write_versioned<T: Versioned + Copy>(out: *mut T, value: T) -> Result<(), Failure> {
    require_out(out, T::NAME)?;
    // SAFETY: non-NULL (checked) and the header says the struct starts with `uint32_t struct_size`.
    let size = unsafe { out.cast::<u32>().read_unaligned() } as usize;
    if size < T::MIN_SIZE || size > std::mem::size_of::<T>() {
        return Err(Failure::from(crate::Error::InvalidArgument(format!(
            "{}.struct_size is {size}; set it to sizeof({}) (this library accepts {} to {})",
            T::NAME,
            T::NAME,
            T::MIN_SIZE,
            std::mem::size_of::<T>()
        ))));
    }
    let bytes = std::ptr::addr_of!(value).cast::<u8>();
    // SAFETY: `out` points to at least `size` writable bytes (the caller's struct of that size),
    // `value` is a plain `repr(C)` struct of at least `size` bytes, and the two do not overlap.
    // The first 4 bytes (struct_size) are left as the caller set them.
    unsafe { std::ptr::copy_nonoverlapping(bytes.add(4), out.cast::<u8>().add(4), size - 4) };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq)]
    struct V2 {
        struct_size: u32,
        a: u32,
        b: u64, // appended in "version 2"
    }

    impl Versioned for V2 {
        const MIN_SIZE: usize = 8; // version 1 had only struct_size and a
        const NAME: &'static str = "V2";
    }

    #[test]
    fn versioned_struct_from_older_caller_keeps_new_defaults() {
        let mut old = V2 {
            struct_size: 8,
            a: 5,
            b: 99,
        }; // b lies beyond what an old caller owns
        let read = read_versioned(&old as *const V2).unwrap();
        assert_eq!(
            read,
            V2 {
                struct_size: 8,
                a: 5,
                b: 0
            }
        );
        old.struct_size = 16;
        assert_eq!(read_versioned(&old as *const V2).unwrap().b, 99);
        old.struct_size = 4;
        assert!(read_versioned(&old as *const V2).is_err());
        old.struct_size = 24;
        assert!(read_versioned(&old as *const V2).is_err());
        assert_eq!(read_versioned::<V2>(std::ptr::null()).unwrap(), V2::default());
    }

    #[test]
    fn invalid_utf8_is_its_own_error() {
        let bytes = [b'o', b'k', 0xff];
        let err = str_with_len(bytes.as_ptr().cast(), bytes.len(), "text").unwrap_err();
        assert_eq!(
            err.status,
            super::super::status::edgellm_status::EDGELLM_ERR_INVALID_UTF8
        );
        assert!(err.message.contains("offset 2"), "{}", err.message);
        assert!(str_with_len(std::ptr::null(), 0, "text").unwrap().is_empty());
        assert_eq!(str_with_len(std::ptr::null(), 1, "text").unwrap_err().status as u32, 2);
    }
}

