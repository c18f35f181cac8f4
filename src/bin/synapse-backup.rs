//! The `synapse-backup` operator CLI (placeholder until the CLI lands).

fn main() {
    eprintln!("synapse-backup: the command-line interface is not built yet");
    std::process::exit(2);
}
