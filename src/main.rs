fn main() -> std::process::ExitCode {
    ucoder_flow::commands::main()
}
