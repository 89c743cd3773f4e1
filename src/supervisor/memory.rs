//! Giving back the memory the start of a stack leaves mapped in a supervisor that stays.
//!
//! Measured with `/proc/PID/smaps` (bench/memory.sh, one-container pods of `sleep`): once a
//! detached supervisor's stack was up, about 8.3 MB of its 10.9 MB RSS was its own
//! executable's code and read-only data (7.3 MB of the 8.8 MB text, all 1 MB of rodata),
//! another 1.6 MB libc, libm, libgcc and ld.so, and only 0.5 MB anonymous memory. Parsing
//! the manifest, planning, the store, the start of every container and the network (rtnetlink,
//! the netlink runtimes: +1 MB of text against `network_mode: none`) run code from all over
//! the binary, and each page fault maps the 64 KiB around the page (the kernel's fault
//! around), so almost the whole text stayed mapped although the supervisor then only waits
//! for signals, log lines and control requests.
//!
//! These pages are clean copies of files in the page cache: dropping them from the page
//! tables (`MADV_DONTNEED`) loses nothing, and the few the supervisor runs afterwards are
//! faulted back in (a minor fault each, from the page cache). Only the executable's private
//! mappings that are not writable and hold no anonymous page are dropped: a page copied on
//! write (the relocated RELRO data, for one) exists nowhere else, and a library's mapping
//! could be unmapped by a `dlclose` (and its addresses reused) between reading smaps and the
//! `madvise`, which the executable's never is.
//!
//! Must not depend on anything but std and libc.

use std::fs;

/// A mapping to drop: start address and length in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Range {
    pub(super) start: usize,
    pub(super) len: usize,
}

/// The mappings of `smaps` (the text of `/proc/PID/smaps`) of the file `file` whose pages
/// are clean file pages only: private, not writable, no anonymous page.
pub(super) fn clean_file_mappings(smaps: &str, file: &str) -> Vec<Range> {
    let mut out = Vec::new();
    // the current mapping, while it may still be dropped: its range
    let mut current: Option<Range> = None;
    for line in smaps.lines() {
        if let Some((range, droppable)) = header(line, file) {
            current = droppable.then_some(range);
        } else if let Some(rest) = line.strip_prefix("Anonymous:") {
            let anon = rest.trim().trim_end_matches("kB").trim();
            if let Some(r) = current.take()
                && anon == "0"
            {
                out.push(r);
            }
        }
    }
    out
}

/// A header line of smaps: the mapping's range and whether it may be dropped (a private,
/// read-only mapping of `file`); `None` for a field line.
fn header(line: &str, file: &str) -> Option<(Range, bool)> {
    // range, perms, offset, device, inode, then the name (absent for anonymous memory; it
    // may hold spaces: ` (deleted)`)
    let mut rest = line;
    let mut fields = [""; 5];
    for f in &mut fields {
        rest = rest.trim_start();
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        *f = &rest[..end];
        rest = &rest[end..];
    }
    let [range, perms, ..] = fields;
    let (start, end) = range.split_once('-')?;
    let start = usize::from_str_radix(start, 16).ok()?;
    let end = usize::from_str_radix(end, 16).ok()?;
    let name = rest.trim();
    let perms = perms.as_bytes();
    let droppable = perms.len() == 4
        && perms[1] != b'w'
        && perms[3] == b'p'
        && !file.is_empty()
        && name == file
        && end > start;
    Some((
        Range {
            start,
            len: end.saturating_sub(start),
        },
        droppable,
    ))
}

/// Drops this process's clean file pages from its page tables (see the module docs). Best
/// effort: a failure leaves the pages mapped, which costs memory and nothing else.
///
/// Reads the kernel's `/proc/self/smaps`, not one under the supervisor's proc root: the
/// ranges advised must be this process's own mappings, which a fake tree's are not.
pub(super) fn drop_clean_file_pages() {
    let Ok(smaps) = fs::read_to_string("/proc/self/smaps") else {
        return;
    };
    // as smaps names it (` (deleted)` after the binary was replaced)
    let Ok(exe) = fs::read_link("/proc/self/exe") else {
        return;
    };
    for r in clean_file_mappings(&smaps, &exe.to_string_lossy()) {
        // SAFETY: the range is a whole mapping of this process, as smaps listed it: a
        // private, read-only mapping of a file with no page copied on write (nothing can
        // write it but a debugger through ptrace). MADV_DONTNEED only removes its pages
        // from the page tables; the next access reads the same bytes back from the file's
        // page cache, so no Rust value or code there changes. The range cannot have been
        // unmapped and reused for other memory since smaps was read: it is a mapping of the
        // process's own executable, which is never unmapped (libraries are left alone: a
        // `dlclose` could unmap one meanwhile).
        unsafe {
            libc::madvise(r.start as *mut libc::c_void, r.len, libc::MADV_DONTNEED);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Range, clean_file_mappings};

    const SMAPS: &str = "\
55c684be9000-55c684de3000 r--p 00000000 fe:00 10035506                   /usr/bin/rcompose
Rss:                1024 kB
Anonymous:             0 kB
55c684de3000-55c68567f000 r-xp 001f9000 fe:00 10035506                   /usr/bin/rcompose
Rss:                7308 kB
Anonymous:             0 kB
55c68567f000-55c6856b7000 r--p 00a94000 fe:00 10035506                   /usr/bin/rcompose
Rss:                 224 kB
Anonymous:           224 kB
55c6856b7000-55c6856b9000 rw-p 00acb000 fe:00 10035506                   /usr/bin/rcompose
Rss:                   8 kB
Anonymous:             8 kB
55c6b4064000-55c6b4085000 rw-p 00000000 00:00 0                          [heap]
Anonymous:            96 kB
7ff3e4633000-7ff3e4833000 rw-p 00000000 00:00 0 
Anonymous:            12 kB
7ff3e48b1000-7ff3e4a07000 r-xp 00026000 fe:00 1234                       /usr/lib/x86_64-linux-gnu/libc.so.6
Anonymous:             0 kB
7ff3e4a10000-7ff3e4a20000 r--s 00000000 00:05 99                         /dev/shm/x
Anonymous:             0 kB
7ff3e4b7e000-7ff3e4b80000 r-xp 00000000 00:00 0                          [vdso]
Anonymous:             0 kB
";

    #[test]
    fn drops_only_clean_private_read_only_mappings_of_the_executable() {
        assert_eq!(
            clean_file_mappings(SMAPS, "/usr/bin/rcompose"),
            vec![
                Range {
                    start: 0x55c6_84be_9000,
                    len: 0x1fa000,
                },
                Range {
                    start: 0x55c6_84de_3000,
                    len: 0x89c000,
                },
            ]
        );
    }

    #[test]
    fn keeps_a_mapping_whose_anonymous_field_is_missing() {
        let smaps = "55c684be9000-55c684de3000 r--p 00000000 fe:00 1 /x\nRss: 4 kB\n\
                     7ff3e4b7e000-7ff3e4b80000 r-xp 00000000 00:00 0 [vdso]\nAnonymous: 0 kB\n";
        assert_eq!(clean_file_mappings(smaps, "/x"), vec![]);
    }

    #[test]
    fn a_replaced_executable_is_found_by_its_deleted_name() {
        let smaps = "55c684be9000-55c684de3000 r-xp 00000000 fe:00 1  /usr/bin/rc (deleted)\n\
                     Anonymous: 0 kB\n\
                     55c684de3000-55c684de4000 r-xp 00000000 fe:00 2  /usr/bin/rc\n\
                     Anonymous: 0 kB\n";
        assert_eq!(
            clean_file_mappings(smaps, "/usr/bin/rc (deleted)"),
            vec![Range {
                start: 0x55c6_84be_9000,
                len: 0x1fa000,
            }]
        );
    }
}
