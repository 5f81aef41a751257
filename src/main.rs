//! The `prodcat` command line.

mod cli;

use std::process::ExitCode;

use clap::Parser;

/// mimalloc reuses freed memory across threads instead of returning it to the kernel: tensor
/// buffers of the same sizes are allocated every batch, and the default allocator turned that into
/// page faults (a quarter of training time went to the kernel).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // candle's element-wise thread pool spins at a barrier and serialises concurrent callers;
    // prodcat parallelises training itself (data-parallel shards), so keep candle's ops inline.
    // Set before any thread starts, as the variable is read once when candle's pool is created.
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // SAFETY: no other thread exists yet, so nothing can read the environment concurrently.
        #[allow(unsafe_code)]
        unsafe {
            std::env::set_var("CANDLE_NUM_THREADS", "1")
        };
    }
    let args = cli::Cli::parse();
    let json = args.log_format == cli::LogFormat::Json;
    cli::init_logging(&args.log, args.log_format);
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // One readable line with the whole cause chain; never a backtrace (a JSON line when
            // logs are JSON, so shippers see it too).
            if json {
                tracing::error!(error = %format!("{err:#}"), "prodcat failed");
            } else {
                eprintln!("error: {err:#}");
            }
            ExitCode::FAILURE
        }
    }
}
