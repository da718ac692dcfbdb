use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = zebra_cim::cli::Cli::parse();
    match zebra_cim::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
