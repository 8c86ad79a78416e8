//! The `floodgate` command line: thin argument parsing over the library and the load tool.

mod inspect;
mod load;
mod plot;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "floodgate",
    version,
    about = "A durable, high-throughput log store on io_uring"
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
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Load { scenario } => load::run(scenario),
        Command::Inspect(args) => inspect::run(args),
    };
    if let Err(e) = result {
        eprintln!("floodgate: {e}");
        std::process::exit(1);
    }
}
