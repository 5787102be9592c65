fn main() -> std::process::ExitCode {
    ucoder_flow::cli::main()
}
