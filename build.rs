//! Link flags for the server binary.
//!
//! Packed relative relocations (`-z pack-relative-relocs`, DT_RELR): the
//! binary is position-independent (ASLR), and its 23,000 relative
//! relocations took 558 KB as classic `.rela.dyn` entries, which the loader
//! reads once at start and which then stay resident (0.8 MiB of peak RSS
//! under load, with what they pull in around them). Packed, they take 7 KB.
//! Needs GNU ld 2.38+ or lld 15+ to link and glibc 2.36+ to run (the
//! binary names `GLIBC_ABI_DT_RELR` among the versions it needs, so an
//! older glibc refuses to start it with a message rather than crashing).
//!
//! The code that runs, together (`link/symbol-order.txt`, release builds
//! linked by rustc's own lld, the default on x86_64 Linux): the kernel maps
//! a binary's code 64 KiB around every page that faults, so the ~3 MiB of
//! functions the server runs, spread over 10 MiB, kept 7.8 MiB of code
//! resident; placed first, they keep about a third of that (peak RSS under
//! the mix 16.2 -> 13.2 MiB). The file lists symbol names; the linker skips
//! those the build no longer has, so a stale file costs memory, never
//! correctness. `node bench/link-order.mjs` rewrites it;
//! `TODO_API_LINK_ORDER=off` leaves it out (for a linker without
//! `--symbol-ordering-file`, e.g. GNU ld or gold).

use std::path::Path;

const ORDER_FILE: &str = "link/symbol-order.txt";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={ORDER_FILE}");
    println!("cargo:rerun-if-env-changed=TODO_API_LINK_ORDER");
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    if var("CARGO_CFG_TARGET_OS") == "linux" && var("CARGO_CFG_TARGET_ENV") == "gnu" {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    // Symbol names differ between debug and release builds: only release
    // builds (and profiles inheriting from it) have a list to follow.
    let links_with_rust_lld = var("TARGET") == "x86_64-unknown-linux-gnu"
        && std::env::var_os("RUSTC_LINKER").is_none()
        && !var("CARGO_ENCODED_RUSTFLAGS").contains("linker");
    let order = Path::new(&var("CARGO_MANIFEST_DIR")).join(ORDER_FILE);
    if var("PROFILE") == "release"
        && links_with_rust_lld
        && var("TODO_API_LINK_ORDER") != "off"
        && order.is_file()
    {
        println!(
            "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
}
