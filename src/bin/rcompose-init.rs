//! `rcompose-init`: the PID 1 that stays in every container once its command runs.
//!
//! The Rust init (`rcompose __init`, see `runtime::init`) builds the container, starts the
//! command, reports it, and then replaces itself with this program, passing the command's
//! pid. It is `no_std` and statically linked without libc (about 2 KiB), so each container
//! costs a few pages of memory instead of a whole Rust and glibc process image.
//!
//! Its whole job: wait for signals (the mask is inherited, already blocking SIGCHLD and the
//! forwarded signals), forward each to the command, reap every child (orphans are
//! re-parented to PID 1), and exit with the command's status (128 + n after signal n).
//! Linux x86_64 only; elsewhere the Rust init stays PID 1 itself.

// Built as a test target (clippy --all-targets), it is an empty std program instead.
#![cfg_attr(not(test), no_std)]
#![cfg_attr(not(test), no_main)]

#[cfg(all(not(test), target_os = "linux", target_arch = "x86_64"))]
mod linux {
    use core::arch::{asm, global_asm};

    const SYS_KILL: usize = 62;
    const SYS_WAIT4: usize = 61;
    const SYS_RT_SIGTIMEDWAIT: usize = 128;
    const SYS_EXIT_GROUP: usize = 231;
    const SYS_RT_SIGPROCMASK: usize = 14;
    const SIG_BLOCK: usize = 0;
    const SIGCHLD: usize = 17;
    const WNOHANG: usize = 1;
    /// SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH, SIGCONT, SIGALRM and
    /// SIGCHLD: the set the Rust init blocks (keep in sync with `runtime::init::FORWARDED`).
    const WAITED: [usize; 10] = [15, 2, 1, 3, 10, 12, 28, 18, 14, SIGCHLD];
    /// [`WAITED`] as a kernel sigset (bit n-1 for signal n), computed at compile time so no
    /// runtime code needs `memcpy` (there is no libc to provide it).
    const WAITED_SET: u64 = {
        let mut set = 0u64;
        let mut i = 0;
        while i < WAITED.len() {
            set |= 1 << (WAITED[i] - 1);
            i += 1;
        }
        set
    };

    // The process entry point: hand the initial stack pointer (argc, argv...) to `entry`.
    global_asm!(
        ".globl _start",
        "_start:",
        "xor rbp, rbp",
        "mov rdi, rsp",
        "and rsp, -16",
        "call {entry}",
        "ud2",
        entry = sym entry,
    );

    /// A raw system call with up to four arguments.
    ///
    /// # Safety
    /// The caller passes arguments valid for system call `n`.
    unsafe fn syscall(n: usize, a: usize, b: usize, c: usize, d: usize) -> isize {
        let ret: isize;
        // SAFETY: the x86_64 Linux system call ABI: number in rax, arguments in rdi, rsi,
        // rdx, r10; the kernel clobbers rcx and r11. The caller vouches for the arguments.
        unsafe {
            asm!(
                "syscall",
                inlateout("rax") n as isize => ret,
                in("rdi") a,
                in("rsi") b,
                in("rdx") c,
                in("r10") d,
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack),
            );
        }
        ret
    }

    pub(crate) fn exit(code: usize) -> ! {
        loop {
            // SAFETY: exit_group takes a plain integer and does not return.
            unsafe {
                syscall(SYS_EXIT_GROUP, code, 0, 0, 0);
            }
        }
    }

    /// The decimal number in a NUL-terminated string, if it is one.
    fn parse_pid(mut p: *const u8) -> Option<usize> {
        let mut n: usize = 0;
        let mut digits = 0;
        loop {
            // SAFETY: `p` walks a NUL-terminated argv string provided by the kernel.
            let c = unsafe { *p };
            if c == 0 {
                break;
            }
            if !c.is_ascii_digit() || digits > 9 {
                return None;
            }
            n = n * 10 + usize::from(c - b'0');
            digits += 1;
            // SAFETY: still inside the string: its NUL has not been reached.
            p = unsafe { p.add(1) };
        }
        (digits > 0 && n > 0).then_some(n)
    }

    /// The command's exit status as an exit code: its code, or 128 + the signal.
    fn exit_code(status: u32) -> usize {
        let sig = status & 0x7f;
        if sig == 0 {
            ((status >> 8) & 0xff) as usize
        } else {
            128 + sig as usize
        }
    }

    extern "C" fn entry(sp: *const usize) -> ! {
        // SAFETY: at _start the stack holds argc, then argv pointers (System V ABI).
        let argc = unsafe { *sp };
        if argc < 2 {
            exit(125);
        }
        // SAFETY: argc >= 2, so argv[1] is a valid pointer to a NUL-terminated string.
        let Some(child) = parse_pid(unsafe { *sp.add(2) } as *const u8) else {
            exit(125)
        };
        let set: u64 = WAITED_SET;
        // The Rust init hands over with these blocked already; block them anyway, then reap
        // once, so a child that ended before the block is not missed.
        // SAFETY: `set` is a valid 8-byte sigset; the old mask is not asked for.
        unsafe {
            syscall(
                SYS_RT_SIGPROCMASK,
                SIG_BLOCK,
                (&raw const set) as usize,
                0,
                8,
            );
        }
        reap(child);
        loop {
            // SAFETY: `set` is a valid 8-byte sigset; info and timeout may be NULL.
            let sig = unsafe { syscall(SYS_RT_SIGTIMEDWAIT, (&raw const set) as usize, 0, 0, 8) };
            if sig < 0 {
                continue;
            }
            let sig = sig.unsigned_abs();
            if sig != SIGCHLD {
                // SAFETY: kill takes a pid and a signal number.
                unsafe {
                    syscall(SYS_KILL, child, sig, 0, 0);
                }
                continue;
            }
            reap(child);
        }
    }

    /// Reaps every child that has exited; exits with the command's status once it is one.
    fn reap(child: usize) {
        loop {
            let mut status: u32 = 0;
            // SAFETY: wait4(-1, &status, WNOHANG, NULL) writes only `status`.
            let pid = unsafe {
                syscall(
                    SYS_WAIT4,
                    usize::MAX,
                    (&raw mut status) as usize,
                    WNOHANG,
                    0,
                )
            };
            if pid <= 0 {
                return;
            }
            if pid.unsigned_abs() == child {
                exit(exit_code(status));
            }
        }
    }
}

#[cfg(all(not(test), not(all(target_os = "linux", target_arch = "x86_64"))))]
mod linux {
    pub(crate) fn exit(_code: usize) -> ! {
        loop {}
    }
    #[unsafe(no_mangle)]
    extern "C" fn _start() -> ! {
        exit(125)
    }
}

/// The precompiled `core` carries unwind tables that name this symbol; nothing here ever
/// unwinds (panics abort), so it is never called.
#[cfg(not(test))]
#[unsafe(no_mangle)]
extern "C" fn rust_eh_personality() {}

#[cfg(not(test))]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    linux::exit(125)
}

#[cfg(test)]
fn main() {}
