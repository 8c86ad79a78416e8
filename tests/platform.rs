//! When the platform says no: io_uring blocked (a seccomp filter, as in containers) and a file
//! system without O_DIRECT (ramfs; tmpfs has O_DIRECT since Linux 6.6). Each gives an error saying which and naming the portable
//! backend, and the portable backend then works.

mod common;

use std::path::Path;

use floodgate::{Config, Error, IoBackend, Log, Record, TopicConfig};

fn produce_and_read(dir: &Path) {
    let log = Log::open(
        Config::new(dir)
            .io_backend(IoBackend::Portable)
            .segment_bytes(16 << 20),
    )
    .expect("the portable backend works");
    log.create_topic("t", TopicConfig::new(1)).unwrap();
    let mut producer = log.producer();
    let at = producer
        .send("t", Record::new(b"hello"))
        .unwrap()
        .wait()
        .unwrap();
    let records = log.read("t", 0, at.offset, 1024).unwrap();
    assert_eq!(records[0].value.as_deref(), Some(&b"hello"[..]));
}

/// A file system that refuses O_DIRECT. tmpfs accepts it since Linux 6.6, so the test mounts a
/// ramfs (which still refuses it) where it may; elsewhere it skips with the reason.
#[test]
fn a_file_system_without_o_direct_gives_a_clear_error() {
    let base = common::test_dir("ramfs");
    let Some(_mount) = common::mount("ramfs", None, base.path()) else {
        return;
    };
    let dir = base.path().join("data");
    match Log::open(Config::new(&dir)) {
        Err(e @ Error::DirectIoUnsupported { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains("O_DIRECT") && text.contains("IoBackend::Portable"),
                "{text}"
            );
        }
        other => panic!("expected DirectIoUnsupported, got {:?}", other.err()),
    }
    produce_and_read(&dir);
}

/// Installs a seccomp filter on the calling thread (and threads it starts) that fails
/// io_uring_setup with EPERM, as container runtimes' default profiles do.
fn block_io_uring_on_this_thread() -> bool {
    let filter = [
        // Load the syscall number.
        libc::sock_filter {
            code: 0x20,
            jt: 0,
            jf: 0,
            k: 0,
        },
        // If it is io_uring_setup, fall through to EPERM; otherwise skip to ALLOW.
        libc::sock_filter {
            code: 0x15,
            jt: 0,
            jf: 1,
            k: libc::SYS_io_uring_setup as u32,
        },
        libc::sock_filter {
            code: 0x06,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
        },
        libc::sock_filter {
            code: 0x06,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ALLOW,
        },
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr() as *mut _,
    };
    // SAFETY: prctl with plain integer arguments; changes only this thread's privileges.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return false;
    }
    // SAFETY: `prog` points to a valid filter that outlives the call (the kernel copies it).
    unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &prog as *const _,
        ) == 0
    }
}

#[test]
fn io_uring_blocked_by_seccomp_gives_a_clear_error() {
    let dir = common::test_dir("seccomp");
    let path = dir.path().to_owned();
    std::thread::spawn(move || {
        if !block_io_uring_on_this_thread() {
            eprintln!("skipped: cannot install a seccomp filter here");
            return;
        }
        match Log::open(Config::new(&path)) {
            Err(e @ Error::IoUringUnavailable { .. }) => {
                let text = e.to_string();
                assert!(
                    text.contains("EPERM") && text.contains("IoBackend::Portable"),
                    "{text}"
                );
            }
            other => panic!("expected IoUringUnavailable, got {:?}", other.err()),
        }
        produce_and_read(&path);
    })
    .join()
    .unwrap();
}
