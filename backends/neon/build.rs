//! Build script: lets the integration tests link this plugin together with
//! the Neon emulator, which links the native backend: both are plugins, so
//! both define the `#[no_mangle]` entry point `ogel_plugin_entry`. The
//! tests never load either as a plugin, so which definition the linker
//! keeps does not matter. Only test binaries get the flag; the plugin
//! library itself is linked as usual.

fn main() {
    println!("cargo:rustc-link-arg-tests=-Wl,--allow-multiple-definition");
}
