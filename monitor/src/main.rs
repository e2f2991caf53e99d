fn main() -> std::process::ExitCode {
    monitor::host::pin_mmap_threshold();
    monitor::cli::main()
}
