//! The `floodgate` command line: thin argument parsing over the library and the load tool.

mod error;
mod groups;
mod inspect;
mod load;
mod plot;
mod repair;
mod serve;

use clap::{Parser, Subcommand};

/// `println!` for the command's output: when the reader has gone (`floodgate inspect --dump |
/// head`), the process ends quietly instead of panicking on the broken pipe.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::emit(format_args!($($arg)*))
    };
}
pub(crate) use outln;

/// Writes one line of output (see [`outln`]).
pub(crate) fn emit(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    if let Err(e) = writeln!(std::io::stdout().lock(), "{line}") {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("floodgate: writing the output: {e}");
        std::process::exit(1);
    }
}

#[derive(Parser)]
#[command(
    name = "floodgate",
    version,
    about = "A durable, high-throughput log store on io_uring",
    // An option given again overrides the earlier one (a config file's, for serve).
    args_override_self = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Drive the log with load and measure it.
    Load {
        #[command(subcommand)]
        scenario: load::Scenario,
    },
    /// Show what a data directory holds; verify or dump its segments (read-only).
    Inspect(inspect::InspectArgs),
    /// Say what repairing a damaged data directory drops, and (without --dry-run) do it.
    Repair(repair::RepairArgs),
    /// Serve a log over the Kafka protocol, so Kafka clients and tools can use it.
    Serve(serve::ServeArgs),
    /// Show each consumer group's committed offsets and lag (the log must not be served).
    Groups(groups::GroupsArgs),
}

fn main() {
    let args = match serve::expand_config(std::env::args_os().collect()) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("floodgate: {e}");
            std::process::exit(2);
        }
    };
    let cli = Cli::parse_from(args);
    let result = match cli.command {
        Command::Load { scenario } => load::run(scenario),
        Command::Inspect(args) => inspect::run(args),
        Command::Repair(args) => repair::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Groups(args) => groups::run(args),
    };
    if let Err(e) = result {
        eprintln!("floodgate: {e}");
        std::process::exit(1);
    }
}
